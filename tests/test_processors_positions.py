"""The worker's own positions in its source partitions (pure; the fetcher is a model)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from processors.positions import Admission, SourcePositions

TP = ("fixes.raw", 0)
LOG_END = 40

#: What a misbehaving fetcher may do next: deliver its next record, seek back by some
#: records (a rebalance's seek to the committed offset), jump ahead (records dropped), deliver
#: its next record while a rebalance is on (the worker defers it), or let the worker's reread
#: timer run.
moves = st.lists(
    st.one_of(
        st.just(("next", 0)),
        st.tuples(st.just("back"), st.integers(1, 10)),
        st.tuples(st.just("ahead"), st.integers(1, 10)),
        st.tuples(st.just("rebalancing"), st.integers(1, LOG_END)),
        st.just(("reread", 0)),
    ),
    max_size=200,
)


@given(moves, st.integers(0, 5))
def test_records_are_processed_once_each_and_in_order_whatever_the_fetcher_does(
    script: list[tuple[str, int]], committed: int
) -> None:
    positions = SourcePositions()
    fetch = committed  # the fetcher's next offset
    processed: list[int] = []

    def deliver(rebalancing: bool = False) -> None:
        nonlocal fetch
        if fetch >= LOG_END:
            return
        if rebalancing:
            positions.defer(TP, fetch)
            fetch += 1
            return
        if TP not in positions:  # the worker starts a partition at its first record
            positions.start(TP, committed)
        admission = positions.admit(TP, fetch)
        if admission is Admission.PROCESS:
            processed.append(fetch)
            positions.publish(TP, fetch)
        elif admission is Admission.HOLE:
            fetch = positions.next[TP]  # the worker seeks back to its position
            return
        fetch += 1

    def reread() -> None:
        nonlocal fetch
        fetch = positions.rereads({TP}).get(TP, fetch)

    for move, n in script:
        if move == "back":
            fetch = max(committed, fetch - n)
        elif move == "ahead":
            fetch += n
        if move == "rebalancing":
            for _ in range(n):
                deliver(rebalancing=True)
        elif move == "reread":
            reread()
        else:
            deliver()
    reread()  # then the timer runs, and the fetcher behaves
    while fetch < LOG_END:
        deliver()

    assert processed == list(range(committed, LOG_END))
    assert positions.committable({TP}, {TP: committed}) == {TP: LOG_END}


def test_deferred_records_are_read_again_also_before_their_partition_started() -> None:
    positions = SourcePositions()
    other = ("fixes.raw", 1)
    positions.defer(TP, 7)
    positions.defer(TP, 5)
    positions.defer(other, 3)
    # nothing of either processed since the assignment: back to the oldest deferred record
    assert positions.rereads({TP, other}) == {TP: 5, other: 3}
    assert positions.rereads({TP, other}) == {}  # each deferral is asked for once
    positions.start(TP, 2)
    assert positions.admit(TP, 2) is Admission.PROCESS
    positions.defer(TP, 9)
    positions.defer(other, 4)
    # started: back to where processing stands; a partition no longer assigned is left alone
    assert positions.rereads({TP}) == {TP: 3}
    positions.defer(TP, 12)
    positions.forget([TP])
    assert positions.rereads({TP}) == {}
    positions.defer(other, 5)  # a partition never started, then lost in a rebalance
    positions.keep({TP})
    assert positions.deferred == {}


def test_admission_of_each_kind() -> None:
    positions = SourcePositions()
    positions.start(TP, 10)
    assert positions.admit(TP, 9) is Admission.SEEN
    assert positions.admit(TP, 11) is Admission.HOLE
    assert positions.next[TP] == 10  # a hole does not move the position
    assert positions.admit(TP, 10) is Admission.PROCESS
    assert positions.next[TP] == 11
    positions.skip_to(TP, 5)  # never backwards
    assert positions.next[TP] == 11
    positions.skip_to(TP, 20)  # retention deleted 11..19
    assert positions.admit(TP, 20) is Admission.PROCESS


def test_committable_offsets_only_where_an_assigned_partition_moved_on() -> None:
    positions = SourcePositions()
    other = ("fixes.raw", 1)
    gone = ("fixes.raw", 2)
    for tp in (TP, other, gone):
        positions.start(tp, 0)
        positions.admit(tp, 0)
        positions.publish(tp, 0)
    assert positions.committable({TP, other}, {TP: None, other: 1}) == {TP: 1}
    positions.keep({TP})
    assert other not in positions
    assert gone not in positions
    positions.forget([TP])
    assert TP not in positions


def test_only_published_records_are_committable() -> None:
    positions = SourcePositions()
    positions.start(TP, 5)
    for offset in (5, 6, 7):
        assert positions.admit(TP, offset) is Admission.PROCESS
    # processed, outputs not yet in the transaction: a commit now must not cover them
    assert positions.committable({TP}, {TP: 5}) == {}
    positions.publish(TP, 5)
    positions.publish(TP, 6)
    assert positions.committable({TP}, {TP: 5}) == {TP: 7}
    positions.publish(TP, 9)  # never admitted: ignored
    positions.publish(TP, 4)  # before the start: ignored
    assert positions.committable({TP}, {TP: 5}) == {TP: 7}
    positions.publish(TP, 7)
    assert positions.committable({TP}, {TP: 7}) == {TP: 8}

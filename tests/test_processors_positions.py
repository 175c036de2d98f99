"""The worker's own positions in its source partitions (pure; the fetcher is a model)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from processors.positions import Admission, SourcePositions

TP = ("fixes.raw", 0)
LOG_END = 40

#: What a misbehaving fetcher may do next: deliver its next record, seek back by some
#: records (a rebalance's seek to the committed offset), or jump ahead (records dropped).
moves = st.lists(
    st.one_of(
        st.just(("next", 0)),
        st.tuples(st.just("back"), st.integers(1, 10)),
        st.tuples(st.just("ahead"), st.integers(1, 10)),
    ),
    max_size=200,
)


@given(moves, st.integers(0, 5))
def test_records_are_processed_once_each_and_in_order_whatever_the_fetcher_does(
    script: list[tuple[str, int]], committed: int
) -> None:
    positions = SourcePositions()
    positions.start(TP, committed)
    fetch = committed  # the fetcher's next offset
    processed: list[int] = []

    def deliver() -> None:
        nonlocal fetch
        if fetch >= LOG_END:
            return
        admission = positions.admit(TP, fetch)
        if admission is Admission.PROCESS:
            processed.append(fetch)
            positions.publish(TP, fetch)
        elif admission is Admission.HOLE:
            fetch = positions.next[TP]  # the worker seeks back to its position
            return
        fetch += 1

    for move, n in script:
        if move == "back":
            fetch = max(committed, fetch - n)
        elif move == "ahead":
            fetch += n
        deliver()
    while fetch < LOG_END:  # then the fetcher behaves
        deliver()

    assert processed == list(range(committed, LOG_END))
    assert positions.committable({TP}, {TP: committed}) == {TP: LOG_END}


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

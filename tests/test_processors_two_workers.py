"""Two workers share the partitions; when one dies the other takes over its couriers with state.

Two ``geostream worker`` processes run on the test's topic prefix (one faust app id, so one
consumer group, changelog and set of transactional ids) with separate data dirs. A steady
stream of fixes flows (couriers riding and stopping, event time 50x wall time); worker A is
SIGKILLed in the middle of it, with fixes processed but not yet committed, and the stream goes
on until worker B has taken over A's partitions, and a little longer. Whatever B did with A's
couriers must be exactly what one uninterrupted run of the pure :class:`CourierProcessor` makes
of the same input: the same clean fixes (trip, stop, odometer and all), stops, trips and
events, each exactly once on the read_committed outputs. B resuming a courier without A's
committed state, or from a state ahead of the committed offsets, changes ids or odometers;
A's uncommitted outputs leaking, or B skipping a fix, shows as a duplicate or a hole.

A second test moves partitions between live workers: a third worker joins (A and B lose
partitions while alive, their open transactions aborted by the newcomer) and leaves again
(they get partitions back, and must not trust what they had stored for them).

That the two share the partitions is checked on the broker (both members of the group hold
partitions of fixes.raw) and on each worker's metrics (both handle fixes before the kill).
faust's own ``BROKER_SESSION_TIMEOUT`` is lowered so the group notices the dead member in 10 s.
"""

from __future__ import annotations

import asyncio
import signal
import subprocess
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import pytest
from aiokafka import TopicPartition
from aiokafka.coordinator.protocol import ConsumerProtocolMemberAssignment
from aiokafka.partitioner import murmur2
from processors_helpers import (
    consume,
    drop_internal_topics,
    expected,
    fetched,
    raw_key,
    start_worker,
    stop_worker,
    topic_reader,
)

from config.settings import Settings
from geostream.kafka import admin_client, create_consumer, create_producer, topic_name
from geostream.stack.system import free_port
from processors.app import app_id
from processors.bench import courier_fixes, fixes_in
from processors.pipeline import Outputs
from schemas.records import IngestedFix
from schemas.wire import encode

pytestmark = pytest.mark.stack

COURIERS = 24  # keys bench/c0..c23 land on every one of the 6 partitions
ROUND_S = 0.1  # one fix of every courier per round: 240 fixes/s, 5 s of event time per round
MAX_ROUNDS = 900  # the stream's bound (90 s), reached only when the takeover never comes
AFTER_TAKEOVER_ROUNDS = 30  # fixes that reach the survivor as live traffic, not backlog
WINDOW_S = 3.0  # reorder window: the last fixes of a courier wait this long for the timer
PROCESSING = {"reorder_window_s": WINDOW_S, "trip_max_gap_s": 600.0}  # no timer-closed trips
#: For the kill test: faust's own commit interval, so that the kill lands between two commits,
#: 1 s after one (at the pipeline's 0.3 s the next commit often came first and the kill found
#: nothing in flight).
SLOW_COMMITS_S = 2.8
SESSION_TIMEOUT_S = 10  # faust's default (60 s) is how long the group waits for a dead member
OUTPUTS = ("fixes.clean", "fixes.rejected", "stops", "trips", "courier.events")
ID_FIELDS = {
    "fixes.clean": ("fix_id",),
    "fixes.rejected": ("fix_id", "reason"),  # none expected; a replay into newer state: some
    "stops": ("stop_id", "is_open"),
    "trips": ("trip_id",),
    "courier.events": ("event_id",),
}


def partition_of(key: bytes, partitions: int = 6) -> int:
    """The partition of ``key`` (the producers' default partitioner)."""
    return (murmur2(key) & 0x7FFFFFFF) % partitions


def traces(start: datetime, rounds: int) -> list[list[IngestedFix]]:
    """Per courier, the bench ride (2 min riding, 2 min stopped, 5 s period), each courier
    2 fixes further into it than the one before (24 couriers span the whole ride-and-stop),
    so that whenever the kill comes some of A's couriers are riding and some stopped."""
    out = []
    for c in range(COURIERS):
        shift = 2 * c
        out.append(courier_fixes(c, rounds + shift, start)[shift:])
    return out


@dataclass
class Worker:
    name: str
    proc: subprocess.Popen[bytes]
    metrics_port: int
    log: Path

    def fixes_in(self) -> float:
        """Fixes the worker has handled (0 until its metrics endpoint is up)."""
        return fixes_in(self.metrics_port, timeout_s=10) or 0.0

    def tail(self, lines: int = 12) -> str:
        """The start and end of the worker's log (the first error usually says why)."""
        text = self.log.read_text(errors="replace") if self.log.exists() else ""
        head = text.splitlines()
        shown = head if len(head) <= 2 * lines else [*head[:lines], "...", *head[-lines:]]
        return f"--- {self.name} log (exit {self.proc.poll()}):\n" + "\n".join(shown)


def launch(
    settings: Settings,
    tmp: Path,
    name: str,
    state_cache: int | None = None,
    commit_interval_s: float | None = None,
) -> Worker:
    port = free_port()
    extra = {f"GEOSTREAM_{k.upper()}": str(v) for k, v in PROCESSING.items()}
    if state_cache is not None:
        extra["GEOSTREAM_WORKER_STATE_CACHE"] = str(state_cache)
    if commit_interval_s is not None:
        extra["GEOSTREAM_WORKER_COMMIT_INTERVAL_S"] = str(commit_interval_s)
    extra["BROKER_CLIENT_ID"] = name  # names the group member, so its assignment is known
    extra["BROKER_SESSION_TIMEOUT"] = str(SESSION_TIMEOUT_S)
    log = tmp / f"{name}.log"
    proc = start_worker(settings, tmp / name, log, metrics_port=port, extra_env=extra)
    return Worker(name, proc, port, log)


async def assignments(settings: Settings) -> tuple[str, dict[str, set[int]]]:
    """The group's state and, per member (client id), its partitions of fixes.raw."""
    raw = topic_name(settings, "fixes.raw")
    admin = admin_client(settings)
    await admin.start()
    try:
        response = (await admin.describe_consumer_groups([app_id(settings)]))[0]
    finally:
        await admin.close()
    _error, _group, state, _ptype, _protocol, members = response.groups[0][:6]
    out: dict[str, set[int]] = {}
    for member in members:
        client_id, assignment = member[1], member[-1]
        parts: set[int] = set()
        if assignment:
            decoded = ConsumerProtocolMemberAssignment.decode(assignment)
            parts = {p for t, ps in decoded.assignment if t == raw for p in ps}
        out[client_id] = parts
    return state, out


async def wait_for_group(
    settings: Settings,
    ok: Callable[[dict[str, set[int]]], bool],
    workers: list[Worker],
    what: str,
    limit_s: float,
) -> dict[str, set[int]]:
    deadline = time.monotonic() + limit_s
    seen: tuple[str, dict[str, set[int]]] = ("", {})
    while time.monotonic() < deadline:
        for w in workers:
            assert w.proc.poll() is None, f"{w.name} exited while waiting for {what}\n{w.tail()}"
        seen = await assignments(settings)
        if seen[0] == "Stable" and ok(seen[1]):
            return seen[1]
        await asyncio.sleep(0.5)
    tails = "\n".join(w.tail() for w in workers)
    raise AssertionError(f"no {what} within {limit_s:.0f} s; group: {seen}\n{tails}")


async def committed(settings: Settings, partitions: set[int]) -> dict[int, int]:
    """The group's committed offsets of fixes.raw (0 where nothing is committed yet)."""
    raw = topic_name(settings, "fixes.raw")
    admin = admin_client(settings)
    await admin.start()
    try:
        offsets = await admin.list_consumer_group_offsets(
            app_id(settings), partitions=[TopicPartition(raw, p) for p in sorted(partitions)]
        )
    finally:
        await admin.close()
    by_partition = {tp.partition: max(0, meta.offset) for tp, meta in offsets.items()}
    return {p: by_partition.get(p, 0) for p in partitions}


async def read_to_end(
    settings: Settings, logical: str, limit_s: float = 60.0, isolation: str = "read_committed"
) -> list[dict]:
    """Every record of a topic up to its end (read_committed: its last stable offset)."""
    consumer = await topic_reader(settings, logical, isolation)
    records: list[dict] = []
    try:
        deadline = time.monotonic() + limit_s
        while not consumer.assignment():
            assert time.monotonic() < deadline, f"no partitions of {logical}"
            await asyncio.sleep(0.1)
        tps = sorted(consumer.assignment())
        end = await consumer.end_offsets(tps)
        while [tp for tp in tps if await consumer.position(tp) < end[tp]]:
            assert time.monotonic() < deadline, f"{logical}: not read to {end} in {limit_s} s"
            records += await fetched(consumer)
    finally:
        await consumer.stop()
    return records


class Stream:
    """Produces one fix per courier every ROUND_S, received_at = wall-clock time of sending."""

    def __init__(self, settings: Settings, fixes: list[list[IngestedFix]]) -> None:
        self.settings = settings
        self.fixes = fixes
        self.sent: list[IngestedFix] = []
        self.rounds = 0
        self.stop_after: int | None = None  # set once the takeover is seen

    async def run(self) -> None:
        producer = create_producer(self.settings)
        await producer.start()
        topic = topic_name(self.settings, "fixes.raw")
        try:
            began = time.monotonic()
            for n in range(MAX_ROUNDS):
                if self.stop_after is not None and n >= self.stop_after:
                    return
                now = datetime.now(UTC)
                for trace in self.fixes:
                    f = replace(trace[n], received_at=now)
                    await producer.send(topic, encode(f), key=raw_key(f))
                    self.sent.append(f)
                self.rounds = n + 1
                await asyncio.sleep(max(0.0, began + (n + 1) * ROUND_S - time.monotonic()))
        finally:
            await producer.flush()
            await producer.stop()


async def test_survivor_takes_over_killed_workers_couriers_with_their_state(settings, tmp_path):
    start = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=2)
    fixes = traces(start, MAX_ROUNDS)
    keys = {raw_key(t[0]) for t in fixes}
    assert {partition_of(k) for k in keys} == set(range(settings.worker_partitions))

    a = launch(settings, tmp_path, "worker-a", commit_interval_s=SLOW_COMMITS_S)
    b = launch(settings, tmp_path, "worker-b", commit_interval_s=SLOW_COMMITS_S)
    workers = [a, b]
    stream = Stream(settings, fixes)
    producing: asyncio.Task[None] | None = None
    try:
        # 1. Both join one group and share the partitions (each holds some of fixes.raw).
        shared = await wait_for_group(
            settings,
            lambda m: set(m) == {a.name, b.name} and all(m.values()),
            workers,
            "group of both workers sharing fixes.raw",
            120,
        )
        a_parts = shared[a.name]
        a_couriers = {k for k in keys if partition_of(k) in a_parts}
        assert a_couriers, shared
        producing = asyncio.create_task(stream.run())

        # 2. Both process their share: each has handled 20 rounds of its couriers, and A has
        # committed (offsets, outputs and state) on each of its partitions, so B will need
        # A's state. A commits every 2.8 s (SLOW_COMMITS_S): the kill comes 1 s after
        # a commit is seen, with a batch or ten processed since and the next commit far off.
        deadline = time.monotonic() + 90
        a_done = await committed(settings, a_parts)
        while True:
            assert not producing.done(), "the stream ended before both workers got going"
            assert a.proc.poll() is None, a.tail()
            assert b.proc.poll() is None, b.tail()
            before, a_done = a_done, await committed(settings, a_parts)
            a_in, b_in = a.fixes_in(), b.fixes_in()
            if (
                a_in >= 20 * len(a_couriers)
                and b_in >= 20 * (COURIERS - len(a_couriers))
                and all(a_done.values())
                and a_done != before
            ):
                break
            assert time.monotonic() < deadline, (
                f"both workers should process fixes and commit; a: {a_in}, committed "
                f"{a_done}, b: {b_in} after {stream.rounds} rounds\n{a.tail()}\n{b.tail()}"
            )
            await asyncio.sleep(0.2)
        await asyncio.sleep(1.0)
        a_in = a.fixes_in()

        # 3. Kill A hard, mid-stream: it has processed fixes it has not committed yet.
        a.proc.send_signal(signal.SIGKILL)
        a.proc.wait()
        killed_at = len(stream.sent)
        a_committed = await committed(settings, a_parts)
        assert a_in > sum(a_committed.values()), (
            f"the kill should land with work in flight: a processed {a_in:.0f} fixes, "
            f"committed {a_committed}"
        )

        # 4. B takes over every partition while the stream goes on, then a little more.
        await wait_for_group(
            settings,
            lambda m: set(m) == {b.name} and len(m[b.name]) == settings.worker_partitions,
            [b],
            "takeover of every partition by worker-b",
            SESSION_TIMEOUT_S + 90,
        )
        stream.stop_after = stream.rounds + AFTER_TAKEOVER_ROUNDS
        await producing
        sent = stream.sent
        assert killed_at < len(sent), "the stream should go on after the kill"

        # 5. Everything B ends with (the last window released by its timer), committed.
        want = expected_run(settings, sent)
        context = (
            f"worker-a had partitions {sorted(a_parts)} and committed {a_committed} at the kill "
            f"after handling {a_in:.0f} fixes; {killed_at} of {len(sent)} fixes sent before it"
        )
        got = await committed_outputs(settings, sent, want, [b], context)
    finally:
        await tear_down(settings, stream, producing, workers)

    # The kill cut through state that A had committed and B needed: A's couriers have trips
    # and stops that began before A's last commit and ended after the kill.
    crossing = crossing_records(sent, a_parts, a_committed, killed_at, want)
    assert crossing["trips"], crossing
    assert crossing["stops"], crossing
    assert_one_run_exactly_once(
        got,
        want,
        lambda fix_ids: (
            f"{context}; duplicated fixes by where they were in fixes.raw: "
            f"{locate(sent, a_parts, a_committed, killed_at, fix_ids)}"
        ),
    )


async def test_partitions_moving_between_live_workers_lose_and_repeat_nothing(settings, tmp_path):
    """A third worker joins and leaves again while the stream flows: A and B lose partitions
    while they are alive (their open transactions are aborted by the newcomer) and get them
    back when it leaves; the outputs are still one uninterrupted run's, exactly once."""
    start = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=2)
    fixes = traces(start, MAX_ROUNDS)
    # Two decoded states at most: nearly every fix reads its courier from the table's store,
    # which each rebalance rebuilds from the committed changelog.
    a = launch(settings, tmp_path, "worker-a", state_cache=2)
    b = launch(settings, tmp_path, "worker-b", state_cache=2)
    workers = [a, b]
    stream = Stream(settings, fixes)
    producing: asyncio.Task[None] | None = None
    history: list[dict[str, set[int]]] = []
    try:
        history.append(
            await wait_for_group(
                settings,
                lambda m: set(m) == {a.name, b.name} and all(m.values()),
                workers,
                "group of both workers sharing fixes.raw",
                120,
            )
        )
        producing = asyncio.create_task(stream.run())
        await processed_rounds(stream, workers, 20)

        c = launch(settings, tmp_path, "worker-c")
        workers.append(c)
        history.append(
            await wait_for_group(
                settings,
                lambda m: set(m) == {a.name, b.name, c.name} and all(m.values()),
                workers,
                "group of three workers",
                120,
            )
        )
        await processed_rounds(stream, workers, 20)

        stop_worker(c.proc)  # SIGTERM: it commits and leaves the group
        history.append(
            await wait_for_group(
                settings,
                lambda m: (
                    set(m) == {a.name, b.name}
                    and sum(map(len, m.values())) == settings.worker_partitions
                ),
                [a, b],
                "both workers holding every partition again",
                120,
            )
        )
        stream.stop_after = stream.rounds + AFTER_TAKEOVER_ROUNDS
        await producing
        sent = stream.sent
        want = expected_run(settings, sent)
        context = f"assignments of fixes.raw, in turn: {history}"
        got = await committed_outputs(settings, sent, want, [a, b], context)
    finally:
        await tear_down(settings, stream, producing, workers)

    # The newcomer took partitions from both live workers.
    first, with_c = history[0], history[1]
    assert with_c[a.name] < first[a.name], history
    assert with_c[b.name] < first[b.name], history
    assert_one_run_exactly_once(got, want, lambda fix_ids: context)


async def tear_down(
    settings: Settings,
    stream: Stream,
    producing: asyncio.Task[None] | None,
    workers: list[Worker],
) -> None:
    """Stop the stream and the workers, and drop the workers' internal topics."""
    stream.stop_after = 0
    if producing is not None:
        await asyncio.gather(producing, return_exceptions=True)
    for w in workers:
        stop_worker(w.proc)
    await drop_internal_topics(settings)


async def processed_rounds(stream: Stream, workers: list[Worker], rounds: int) -> None:
    """Wait until ``rounds`` more rounds were sent and every worker handled fixes meanwhile."""
    target = stream.rounds + rounds
    before = {w.name: w.fixes_in() for w in workers}
    deadline = time.monotonic() + 90
    while stream.rounds < target or any(w.fixes_in() <= before[w.name] for w in workers):
        for w in workers:
            assert w.proc.poll() is None, w.tail()
        assert time.monotonic() < deadline, "\n".join(w.tail() for w in workers)
        await asyncio.sleep(0.2)


def expected_run(settings: Settings, sent: list[IngestedFix]) -> Outputs:
    """One uninterrupted run over ``sent``, the last window released by the idle timer."""
    return expected(
        settings,
        sent,
        quiet_until=max(f.received_at for f in sent) + timedelta(seconds=2 * WINDOW_S),
        **PROCESSING,
    )


async def committed_outputs(
    settings: Settings,
    sent: list[IngestedFix],
    want: Outputs,
    survivors: list[Worker],
    context: str,
) -> dict[str, list[dict]]:
    """Every output topic's committed records, once the survivors have committed every fix
    sent and every wanted clean fix is there (or an error saying where the missing went)."""
    deadline = time.monotonic() + 60
    while True:
        done = await committed(settings, set(range(settings.worker_partitions)))
        if sum(done.values()) >= len(sent):
            break
        for w in survivors:
            assert w.proc.poll() is None, w.tail()
        assert time.monotonic() < deadline, (
            f"committed {done} of {len(sent)} fixes (per partition: "
            f"{dict(Counter(partition_of(raw_key(f)) for f in sent))}); {context}\n"
            + "\n".join(w.tail() for w in survivors)
        )
        await asyncio.sleep(0.5)
    want_ids = {f.fix_id for f in want.clean}
    clean = await consume(
        settings,
        "fixes.clean",
        lambda rs: {r["fix_id"] for r in rs} >= want_ids,
        45,
        survivors[0].proc,
    )
    missing = want_ids - {r["fix_id"] for r in clean}
    if missing:
        raise AssertionError(
            f"{len(missing)} fixes never reached fixes.clean: {sorted(missing)[:12]}\n"
            + await whereabouts(settings, missing)
            + f"\n{context}; {len(sent)} fixes sent\n"
            + "\n".join(w.tail() for w in survivors)
        )
    return {name: await read_to_end(settings, name) for name in OUTPUTS}


def assert_one_run_exactly_once(
    got: dict[str, list[dict]], want: Outputs, context: Callable[[set[str]], str]
) -> None:
    """Every output of the workers together is one uninterrupted run's, exactly once;
    ``context(fix_ids)`` explains duplicates."""
    wanted = {
        "fixes.clean": want.clean,
        "fixes.rejected": want.rejected,
        "stops": want.stops,
        "trips": want.trips,
        "courier.events": want.events,
    }
    for name in OUTPUTS:
        fields = ID_FIELDS[name]
        counts = Counter(tuple(r[f] for f in fields) for r in got[name])
        twice = {k: n for k, n in counts.items() if n > 1}
        assert not twice, (
            f"{name}: {len(twice)} records emitted more than once: {list(twice)[:5]}; "
            f"{context(twice_fix_ids(got[name], twice))}"
        )
        want_by_id = {tuple(r[f] for f in fields): r for r in map(as_json, wanted[name])}
        got_by_id = {tuple(r[f] for f in fields): r for r in got[name]}
        assert set(got_by_id) == set(want_by_id), (
            f"{name}: missing {sorted(set(want_by_id) - set(got_by_id))[:5]}, "
            f"unexpected {sorted(set(got_by_id) - set(want_by_id))[:5]}"
        )
        differ = [
            (k, {f: (got_by_id[k][f], v) for f, v in want_by_id[k].items() if got_by_id[k][f] != v})
            for k in want_by_id
            if got_by_id[k] != want_by_id[k]
        ]
        assert not differ, f"{name}: {len(differ)} records differ (got, want): {differ[:3]}"


async def whereabouts(settings: Settings, fix_ids: set[str]) -> str:
    """Where missing clean fixes went instead: rejected, or only in aborted transactions."""
    rejected = [r for r in await read_to_end(settings, "fixes.rejected") if r["fix_id"] in fix_ids]
    aborted = [
        r["fix_id"]
        for r in await read_to_end(settings, "fixes.clean", isolation="read_uncommitted")
        if r["fix_id"] in fix_ids
    ]
    reasons = sorted((r["fix_id"], r["reason"]) for r in rejected)
    return (
        f"rejected instead: {reasons[:12]}; on fixes.clean uncommitted: {sorted(aborted)[:12]}"
        f"\nfixes.clean partitions (last stable offset, end): {await stable_and_end(settings)}"
    )


async def stable_and_end(settings: Settings) -> dict[int, tuple[int, int]]:
    """Per partition of fixes.clean: the last stable offset (an open transaction holds it
    back) and the end offset."""
    offsets: dict[str, dict[TopicPartition, int]] = {}
    for isolation in ("read_committed", "read_uncommitted"):
        consumer = create_consumer(
            settings, topic_name(settings, "fixes.clean"), isolation_level=isolation, group_id=None
        )
        await consumer.start()
        try:
            deadline = time.monotonic() + 30
            while not consumer.assignment():
                assert time.monotonic() < deadline, "no partitions of fixes.clean"
                await asyncio.sleep(0.1)
            offsets[isolation] = await consumer.end_offsets(list(consumer.assignment()))
        finally:
            await consumer.stop()
    return {
        tp.partition: (stable, offsets["read_uncommitted"][tp])
        for tp, stable in sorted(offsets["read_committed"].items())
    }


def twice_fix_ids(records: list[dict], twice: dict[tuple, int]) -> set[str]:
    """The fixes behind records emitted twice (clean fixes: the fix; others: none)."""
    return {k[0] for k in twice} if records and "fix_id" in records[0] else set()


def locate(
    sent: list[IngestedFix],
    a_parts: set[int],
    a_committed: dict[int, int],
    killed_at: int,
    fix_ids: set[str],
) -> dict[str, int]:
    """How many of ``fix_ids`` were on B's partitions, or on A's: committed by A, sent before
    the kill but not committed, or sent after the kill."""
    seen: Counter[int] = Counter()
    where: Counter[str] = Counter()
    for n, f in enumerate(sent):
        p = partition_of(raw_key(f))
        offset = seen[p]
        seen[p] += 1
        if f.fix_id not in fix_ids:
            continue
        if p not in a_parts:
            where["b's partitions"] += 1
        elif offset < a_committed[p]:
            where["a's, committed by a"] += 1
        elif n < killed_at:
            where["a's, sent before the kill, not committed"] += 1
        else:
            where["a's, sent after the kill"] += 1
    return dict(where)


def as_json(record: object) -> dict:
    return orjson.loads(encode(record))  # type: ignore[arg-type]


def crossing_records(
    sent: list[IngestedFix],
    a_parts: set[int],
    a_committed: dict[int, int],
    killed_at: int,
    want: Outputs,
) -> dict[str, list[str]]:
    """Trips and stops of A's couriers that began at or before A's last committed fix of the
    courier and ended after the last fix sent before the kill."""
    seen: Counter[int] = Counter()
    last_committed: dict[str, datetime] = {}
    last_sent: dict[str, datetime] = {}
    for n, f in enumerate(sent):
        p = partition_of(raw_key(f))
        if p not in a_parts:
            continue
        if seen[p] < a_committed[p]:
            last_committed[f.courier_id] = f.ts
        seen[p] += 1
        if n < killed_at:
            last_sent[f.courier_id] = f.ts
    out: dict[str, list[str]] = {"trips": [], "stops": []}
    for kind, id_field in (("trips", "trip_id"), ("stops", "stop_id")):
        for r in getattr(want, kind):
            if getattr(r, "is_open", False) or r.courier_id not in last_committed:
                continue
            if r.start <= last_committed[r.courier_id] and r.end > last_sent[r.courier_id]:
                out[kind].append(getattr(r, id_field))
    return out

"""The sink end to end on the real broker and database: replays, poison, crashes, DB restart."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import uuid
from datetime import timedelta

import orjson
import psycopg
import pytest
from sink_support import NOW, count, event, fix, produce, read_all, running, stop, trip, wait_until

from config.retention import RetentionPolicy
from config.settings import Settings, get_settings
from geostream.kafka import create_producer, topic_name
from geostream.stack import Stack
from processors.erasure import TOMBSTONED_TOPICS
from schemas.records import Rejection
from schemas.wire import decode, encode
from sinks.erasure import erase_in_database
from sinks.sink import Sink

pytestmark = pytest.mark.stack


def sink_settings(settings: Settings, **extra: object) -> Settings:
    update: dict[str, object] = {
        "sink_group_id": f"sink-test-{uuid.uuid4().hex[:8]}",
        "sink_batch_max_wait_ms": 100,
        "sink_retention_interval_s": 0,
        "sink_aggregates_interval_s": 0,
        "sink_retry_initial_s": 0.2,
        "sink_retry_max_s": 1.0,
        "sink_metrics_port": 0,
    }
    update.update(extra)
    return settings.model_copy(update=update)


def mixed_records(n_fixes: int, couriers: int = 5) -> list[object]:
    fixes = [
        fix(courier=f"c{i % couriers}", ts=NOW - timedelta(seconds=n_fixes - i))
        for i in range(n_fixes)
    ]
    return [*fixes, stop(), trip(), event(), event(courier="c2")]


def landed(url: str, n_fixes: int) -> bool:
    return (
        count(url, "positions") >= n_fixes
        and count(url, "stops") >= 1
        and count(url, "trips") >= 1
        and count(url, "courier_events") >= 2
    )


def assert_exactly(url: str, n_fixes: int, couriers: int = 5) -> None:
    assert count(url, "positions") == n_fixes
    assert count(url, "latest_positions") == couriers
    assert count(url, "stops") == 1
    assert count(url, "trips") == 1
    assert count(url, "courier_events") == 2


async def test_replaying_topics_never_doubles_a_row(settings: Settings) -> None:
    records = mixed_records(300)
    await produce(settings, records)
    await produce(settings, records)  # the same records twice on the topics
    first = sink_settings(settings)
    sink = Sink(first)
    async with running(sink):
        await wait_until(lambda: landed(first.database_url, 300), "first pass")
        await wait_until(lambda: sink.batches_committed > 0, "a commit")
    assert_exactly(first.database_url, 300)
    rows = sink.metrics.rows_written.labels("positions")._value.get()
    assert rows == 300  # duplicates are consumed but not counted as written

    # A new consumer group reads everything again from the start: still exactly once.
    replay = sink_settings(settings)
    sink = Sink(replay)
    async with running(sink):
        await wait_until(
            lambda: sink.metrics.records.labels("fixes.clean")._value.get() >= 600, "replay"
        )
        await wait_until(lambda: sink.batches_committed > 0, "a commit")
    assert_exactly(first.database_url, 300)


async def test_poison_records_are_dead_lettered_and_neighbours_land(settings: Settings) -> None:
    good = mixed_records(50)
    backwards = stop(
        courier="c7", end=NOW - timedelta(hours=3), start=NOW - timedelta(hours=2)
    )  # passes the schema, breaks the stops_end_after_start constraint
    invalid = orjson.loads(encode(fix()))
    invalid["lat"] = 123.0
    await produce(
        settings,
        [*good[:25], backwards, *good[25:]],
        raw=[("fixes.clean", b"{not json"), ("fixes.clean", orjson.dumps(invalid))],
    )
    cfg = sink_settings(settings)
    sink = Sink(cfg)
    async with running(sink):
        await wait_until(lambda: landed(cfg.database_url, 50), "good records")
        await wait_until(lambda: _dead(sink) >= 3, "dead letters")
    assert_exactly(cfg.database_url, 50)
    letters = [decode(Rejection, v) for v in await read_all(settings, "sink.deadletter", 3)]
    reasons = sorted(r.reason for r in letters)
    assert reasons == ["db_check_violation", "invalid_less_than_equal", "malformed_json"]
    assert all(r.stage == "sink" for r in letters)
    check = next(r for r in letters if r.reason == "db_check_violation")
    assert check.record is not None
    assert check.record["stop_id"] == backwards.stop_id
    assert check.courier_id == "c7"
    assert "stops_end_after_start" in check.detail
    raw = next(r for r in letters if r.reason == "malformed_json")
    assert raw.record == {"raw": "{not json"}


def _dead(sink: Sink) -> float:
    return sum(
        s.value
        for metric in sink.metrics.dead_letters.collect()
        for s in metric.samples
        if s.name.endswith("_total")
    )


async def test_crash_between_copy_and_commit_loses_and_doubles_nothing(
    settings: Settings,
) -> None:
    records = mixed_records(400)
    await produce(settings, records)
    cfg = sink_settings(settings, sink_batch_max_records=150)
    reached = asyncio.Event()

    async def hang_before_commit() -> None:
        reached.set()
        await asyncio.Event().wait()  # "crash" here: rows COPYed and inserted, not committed

    crashing = Sink(cfg, before_commit=hang_before_commit)
    task = asyncio.create_task(crashing.run())
    await asyncio.wait_for(reached.wait(), 60)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert count(cfg.database_url, "positions") == 0  # the transaction never committed

    restarted = Sink(cfg)  # same group: resumes from the committed offsets (none)
    async with running(restarted):
        await wait_until(lambda: landed(cfg.database_url, 400), "everything after restart")
        await wait_until(
            lambda: restarted.metrics.records.labels("fixes.clean")._value.get() >= 400,
            "all consumed",
        )
    assert_exactly(cfg.database_url, 400)


async def test_killed_sink_process_resumes_exactly_once(settings: Settings, tmp_path) -> None:
    n = 20_000
    records = [fix(courier=f"c{i % 5}", ts=NOW - timedelta(seconds=n - i)) for i in range(n)]
    await produce(settings, records)
    cfg = sink_settings(settings, sink_batch_max_records=100)
    env = {
        **os.environ,
        "GEOSTREAM_TOPIC_PREFIX": cfg.topic_prefix,
        "GEOSTREAM_DATABASE_URL": cfg.database_url,
        "GEOSTREAM_SINK_GROUP_ID": cfg.sink_group_id,
        "GEOSTREAM_SINK_BATCH_MAX_RECORDS": "100",
        "GEOSTREAM_SINK_METRICS_PORT": "0",
        "GEOSTREAM_SINK_RETENTION_INTERVAL_S": "0",
        "GEOSTREAM_SINK_AGGREGATES_INTERVAL_S": "0",
    }
    command = [sys.executable, "-m", "geostream.cli", "sink"]
    log = (tmp_path / "sink.log").open("wb")
    first = await asyncio.create_subprocess_exec(*command, env=env, stderr=log)
    try:
        await wait_until(
            lambda: count(cfg.database_url, "positions") > 0, "first rows", 90, every=0.01
        )
    finally:
        first.send_signal(signal.SIGKILL)  # no clean shutdown: mid-stream, maybe mid-batch
        await first.wait()
    partial = count(cfg.database_url, "positions")
    second = await asyncio.create_subprocess_exec(*command, env=env, stderr=log)
    try:
        await wait_until(lambda: count(cfg.database_url, "positions") >= n, "all rows", 120)
    finally:
        second.terminate()
        assert await asyncio.wait_for(second.wait(), 30) == 0  # SIGTERM: a clean stop
    assert 0 < partial < n  # it was killed mid-stream
    assert count(cfg.database_url, "positions") == n
    assert count(cfg.database_url, "latest_positions") == 5


async def test_database_restart_stalls_then_drains(settings: Settings) -> None:
    cfg = sink_settings(settings)
    before, during = mixed_records(100), [fix(courier="c9") for _ in range(100)]
    sink = Sink(cfg)
    postgres = Stack(get_settings()).postgres
    async with running(sink):
        await produce(settings, before)
        await wait_until(lambda: landed(cfg.database_url, 100), "rows before the restart")
        try:
            postgres.stop()
            await produce(settings, during)
            await wait_until(
                lambda: sink.metrics.retries.labels("db")._value.get() >= 1,
                "a failed write while the database is down",
                30,
            )
        finally:
            postgres.start()
        await wait_until(lambda: count(cfg.database_url, "positions") >= 200, "drained", 90)
    assert count(cfg.database_url, "positions") == 200
    assert count(cfg.database_url, "latest_positions") == 6


async def committed_total(sink: Sink) -> int:
    """The sum of the group's committed offsets over the sink's partitions, from the broker."""
    assert sink.consumer is not None
    return sum([await sink.consumer.committed(tp) or 0 for tp in sink.consumer.assignment()])


async def next_batch_decoded(sink: Sink) -> None:
    """Wait (inside a batch's open transaction) until the collector has queued the next one."""
    await wait_until(lambda: sink._queue.qsize() > 0, "the next batch decoded", every=0.01)


async def test_offsets_never_run_ahead_of_the_database(settings: Settings) -> None:
    n = 1000
    records = [fix(courier=f"c{i % 5}", ts=NOW - timedelta(seconds=n - i)) for i in range(n)]
    await produce(settings, records)
    cfg = sink_settings(settings, sink_batch_max_records=200)
    checks: list[tuple[int, int]] = []  # (offsets committed, rows committed) inside a batch

    async def check() -> None:
        if not checks:  # the first batch waits until the next one is decoded meanwhile
            await next_batch_decoded(sink)
        checks.append((await committed_total(sink), count(cfg.database_url, "positions")))

    sink = Sink(cfg, before_commit=check)
    async with running(sink):
        await wait_until(lambda: count(cfg.database_url, "positions") >= n, "all rows")
        await wait_until(lambda: sink.batches_committed >= len(checks), "the last commit")
        assert await committed_total(sink) == n
    assert len(checks) >= 5  # one per batch of at most 200
    assert all(offsets <= rows for offsets, rows in checks), checks
    assert any(offsets > 0 for offsets, _ in checks)  # later batches saw earlier commits
    assert count(cfg.database_url, "positions") == n


async def test_db_error_while_the_next_batch_is_decoded_loses_nothing(
    settings: Settings,
) -> None:
    n = 1000
    records = [fix(courier=f"c{i % 5}", ts=NOW - timedelta(seconds=n - i)) for i in range(n)]
    await produce(settings, records)
    cfg = sink_settings(settings, sink_batch_max_records=200)
    failed: list[int] = []

    async def fail_first_commit() -> None:
        if not failed:
            await next_batch_decoded(sink)
            failed.append(await committed_total(sink))
            raise psycopg.OperationalError("connection lost (simulated)")

    sink = Sink(cfg, before_commit=fail_first_commit)
    async with running(sink):
        await wait_until(lambda: count(cfg.database_url, "positions") >= n, "all rows")
        await wait_until(lambda: sink.batches_committed >= n // 200, "the commits")
        assert await committed_total(sink) == n
    assert failed == [0]  # nothing was committed while the first batch failed
    assert sink.metrics.retries.labels("db")._value.get() == 1
    assert _dead(sink) == 0
    assert count(cfg.database_url, "positions") == n
    assert count(cfg.database_url, "latest_positions") == 5


def courier_rows(url: str, courier: str) -> dict[str, int]:
    tables = ("positions", "latest_positions", "stops", "trips", "courier_events")
    return {t: count(url, t, f"org_id = 'acme' AND courier_id = '{courier}'") for t in tables}


async def tombstones(settings: Settings, key: bytes) -> None:
    producer = create_producer(settings)
    await producer.start()
    try:
        for logical in TOMBSTONED_TOPICS:
            await producer.send_and_wait(topic_name(settings, logical), None, key=key)
    finally:
        await producer.stop()


async def test_an_erased_couriers_records_never_land_until_its_tombstones_pass(
    settings: Settings,
) -> None:
    """Records of an erased courier still in Kafka are dropped, on each topic, until the
    worker's tombstone for the courier passes there; what follows a tombstone is new data."""
    url = settings.database_url
    before = [fix(), fix(), stop(), trip(), event()]
    await produce(settings, [*before, fix(courier="c2"), stop(courier="c2")])
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        policy = RetentionPolicy.load(settings.retention_file)
        erased = await erase_in_database(conn, settings, policy, "acme", "c1", "t", as_api=False)
    config = sink_settings(settings)
    sink = Sink(config)
    async with running(sink):
        await wait_until(lambda: count(url, "stops", "courier_id = 'c2'") == 1, "c2's records")
        await wait_until(lambda: sink.batches_committed > 0, "a commit")
        assert set(courier_rows(url, "c1").values()) == {0}
        assert count(url, "positions", "courier_id = 'c2'") == 1

        # The worker's tombstones, then fixes of a device enrolled after the erasure.
        await tombstones(settings, b"acme/c1")
        after = [fix(device_id="new-phone"), stop(start=NOW - timedelta(minutes=3)), trip(),
                 event()]  # fmt: skip
        await produce(settings, after)
        await wait_until(lambda: courier_rows(url, "c1")["courier_events"] == 1, "c1's new data")
        await wait_until(lambda: courier_rows(url, "c1")["positions"] == 1, "c1's new fix")
    assert courier_rows(url, "c1") == {
        "positions": 1, "latest_positions": 1, "stops": 1, "trips": 1, "courier_events": 1
    }  # fmt: skip
    assert count(url, "positions", "device_id = 'new-phone'") == 1
    assert count(url, "privacy_erasure_progress", f"request_id = '{erased.request_id}'") == 4
    assert await read_all(config, "sink.deadletter", 1, timeout_s=3) == []

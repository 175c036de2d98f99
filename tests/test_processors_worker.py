"""The faust worker against the real broker: outputs, timer, crash and resume.

Each test runs ``geostream worker`` as a subprocess on its own topic prefix (so its own faust
app id, consumer group, changelog and state directory), produces IngestedFix records to the
test's fixes.raw and reads the outputs back with a read_committed consumer.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import urllib.request
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import pytest
from aiokafka import AIOKafkaConsumer
from processors_helpers import day_route, fix

from config.settings import Settings
from geostream.kafka import admin_client, create_producer, topic_name
from processors.config import ProcessorConfig
from processors.pipeline import CourierProcessor, Outputs
from processors.zones import Geofences
from schemas.records import IngestedFix
from schemas.wire import encode

pytestmark = pytest.mark.stack

GAP_S = 20.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        return response.read().decode()


def worker_env(
    settings: Settings, data_dir: Path, store: str, metrics_port: int = 0
) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        {
            "GEOSTREAM_TOPIC_PREFIX": settings.topic_prefix,
            "GEOSTREAM_WORKER_METRICS_PORT": str(metrics_port),
            "GEOSTREAM_WORKER_DATA_DIR": str(data_dir),
            "GEOSTREAM_WORKER_IDLE_INTERVAL_S": "1",
            "GEOSTREAM_TRIP_MAX_GAP_S": str(GAP_S),
            "GEOSTREAM_WORKER_STORE": store,
        }
    )
    return env


def start_worker(
    settings: Settings, data_dir: Path, log: Path, store: str = "rocksdb", metrics_port: int = 0
) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "geostream.cli", "worker", "--loglevel", "warning"],
        env=worker_env(settings, data_dir, store, metrics_port),
        stdout=log.open("ab"),
        stderr=subprocess.STDOUT,
    )


def stop_worker(proc: subprocess.Popen[bytes], sig: int = signal.SIGTERM) -> None:
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def shifted(fixes: list[IngestedFix], start: datetime, received: datetime | None = None):
    """The fixes moved to begin at ``start``, received 1 s after (or at ``received``)."""
    base = fixes[0].ts
    out = []
    for f in fixes:
        ts = start + (f.ts - base)
        out.append(replace(f, ts=ts, received_at=received or ts + timedelta(seconds=1)))
    return out


async def produce(settings: Settings, fixes: list[IngestedFix]) -> None:
    producer = create_producer(settings)
    await producer.start()
    try:
        topic = topic_name(settings, "fixes.raw")
        for f in fixes:
            await producer.send(topic, encode(f), key=f"{f.org_id}/{f.courier_id}".encode())
        await producer.flush()
    finally:
        await producer.stop()


async def consume(
    settings: Settings,
    logical: str,
    done: Callable[[list[dict]], bool],
    limit_s: float = 120.0,
    worker: subprocess.Popen[bytes] | None = None,
) -> list[dict]:
    """Committed records of a topic, from the start, until ``done(records)`` (or a limit)."""
    consumer = AIOKafkaConsumer(
        topic_name(settings, logical),
        bootstrap_servers=settings.kafka_bootstrap,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        isolation_level="read_committed",
        group_id=None,
    )
    await consumer.start()
    records: list[dict] = []
    try:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + limit_s
        while not done(records) and loop.time() < deadline:
            if worker is not None and worker.poll() is not None:
                raise AssertionError(f"worker exited with {worker.returncode}")
            batches = await consumer.getmany(timeout_ms=500)
            for batch in batches.values():
                records += [orjson.loads(m.value) for m in batch]
    finally:
        await consumer.stop()
    return records


async def drop_internal_topics(settings: Settings) -> None:
    admin = admin_client(settings)
    await admin.start()
    try:
        mine = [t for t in await admin.list_topics() if t.startswith(settings.topic_prefix)]
        internal = [t for t in mine if "geostream-processors" in t]
        if internal:
            await admin.delete_topics(internal)
    finally:
        await admin.close()


def expected(settings: Settings, fixes: list[IngestedFix]) -> Outputs:
    """What the pure processor makes of the same fixes with the worker's settings."""
    worker_settings = settings.model_copy(update={"trip_max_gap_s": GAP_S})
    config = ProcessorConfig.from_settings(worker_settings)
    proc = CourierProcessor(config, Geofences.load(settings.geofences_file, 20.0))
    out = Outputs()
    states = {}
    for f in fixes:
        key = (f.org_id, f.courier_id)
        state = states.setdefault(key, proc.new_state(*key))
        out.extend(proc.process(state, f))
    for state in states.values():
        out.extend(proc.close_idle(state, datetime.now(UTC) + timedelta(days=1)))
    return out


@pytest.fixture
def worker_dir(tmp_path: Path) -> Path:
    return tmp_path


async def test_worker_emits_stops_trips_rejections_and_latest(settings, worker_dir):
    start = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=2)
    route = shifted(day_route(), start)
    bad = [
        replace(route[5], fix_id="null-island", lat=0.0, lon=0.0),
        route[7],  # a retried fix: duplicate_fix_id
    ]
    fixes = route[:8] + bad + route[8:]
    want = expected(settings, fixes)
    assert len(want.trips) == 2
    assert want.stops
    port = free_port()
    proc = start_worker(
        settings, worker_dir / "state", worker_dir / "worker.log", metrics_port=port
    )
    try:
        await produce(settings, fixes)
        want_trip_ids = {t.trip_id for t in want.trips}
        trips = await consume(
            settings, "trips", lambda rs: {r["trip_id"] for r in rs} >= want_trip_ids, worker=proc
        )
        rejected = await consume(settings, "fixes.rejected", lambda rs: len(rs) >= 2)
        clean = await consume(settings, "fixes.clean", lambda rs: len(rs) >= len(route))
        stops = await consume(settings, "stops", lambda rs: len(rs) >= len(want.stops))
        latest = await consume(settings, "courier.latest", lambda rs: len(rs) >= 1)
        events = await consume(settings, "courier.events", lambda rs: len(rs) >= len(want.events))
        metrics = scrape(port)
    finally:
        stop_worker(proc)
        await drop_internal_topics(settings)
    assert [t["trip_id"] for t in trips] == [t.trip_id for t in want.trips]
    assert trips[0]["distance_m"] == pytest.approx(want.trips[0].distance_m)
    assert [r["closed_by"] for r in trips] == ["stop", "stop"]
    assert sorted(r["reason"] for r in rejected) == ["duplicate_fix_id", "null_island"]
    assert [c["fix_id"] for c in clean] == [c.fix_id for c in want.clean]
    assert {(s["stop_id"], s["is_open"]) for s in stops} == {
        (s.stop_id, s.is_open) for s in want.stops
    }
    assert latest[-1]["fix_id"] == route[-1].fix_id or latest[-1]["courier_id"] == "c1"
    assert {e["event_id"] for e in events} == {e.event_id for e in want.events}
    assert all("expires_at" in r and "retention_class" in r for r in [*trips, *stops, *clean])
    assert f"geostream_processor_fixes_in_total {float(len(fixes))}" in metrics
    assert 'geostream_processor_fixes_out_total{reason="null_island",result="rejected"} 1.0' in (
        metrics
    )
    assert 'geostream_processor_trips_total{closed_by="stop"} 2.0' in metrics
    assert "geostream_processor_latency_seconds_count" in metrics


async def test_timer_closes_trip_when_no_fix_arrives(settings, worker_dir):
    now = datetime.now(UTC)
    moving = [fix(i * 2.0, 0, i * 20, courier="idle-1") for i in range(10)]
    moving = shifted(moving, now - timedelta(seconds=20), received=now)
    proc = start_worker(settings, worker_dir / "state", worker_dir / "worker.log")
    try:
        await produce(settings, moving)
        trips = await consume(settings, "trips", lambda rs: len(rs) >= 1, GAP_S + 90, proc)
    finally:
        stop_worker(proc)
        await drop_internal_topics(settings)
    assert [t["closed_by"] for t in trips] == ["timer"]
    assert trips[0]["end"].startswith(moving[-1].ts.strftime("%Y-%m-%dT%H:%M:%S"))
    assert trips[0]["fix_count"] == 10


@pytest.mark.parametrize("store", ["rocksdb", "memory"])
async def test_killed_worker_resumes_and_emits_nothing_twice(settings, worker_dir, store):
    start = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=3)
    fixes: list[IngestedFix] = []
    for n in range(12):
        courier_route = [
            replace(f, courier_id=f"k{n}", fix_id=f"k{n}-{f.fix_id}") for f in day_route()
        ]
        fixes += shifted(courier_route, start + timedelta(seconds=n))
    fixes.sort(key=lambda f: f.ts)
    want = expected(settings, fixes)
    half = len(fixes) // 2
    log = worker_dir / "worker.log"
    proc = start_worker(settings, worker_dir / "state", log, store)
    try:
        await produce(settings, fixes[:half])
        # wait until the worker has committed part of the first half, then kill it hard
        await consume(settings, "fixes.clean", lambda rs: len(rs) >= half // 3, worker=proc)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        await produce(settings, fixes[half:])
        proc = start_worker(settings, worker_dir / "state", log, store)
        want_trip_ids = {t.trip_id for t in want.trips}
        trips = await consume(
            settings, "trips", lambda rs: {r["trip_id"] for r in rs} >= want_trip_ids, 180, proc
        )
        clean = await consume(
            settings, "fixes.clean", lambda rs: len({r["fix_id"] for r in rs}) >= len(want.clean)
        )
        stops = await consume(
            settings,
            "stops",
            lambda rs: len({(r["stop_id"], r["is_open"]) for r in rs}) >= len(want.stops),
        )
    finally:
        stop_worker(proc)
        await drop_internal_topics(settings)
    # Resumed with its state: every expected record is there, and anything the restart
    # emitted again is the very same record under the same id, so the sink's upsert absorbs it.
    assert_same_when_repeated(trips, "trip_id")
    assert {t["trip_id"] for t in trips} == {t.trip_id for t in want.trips}
    assert_same_when_repeated(clean, "fix_id")
    assert {c["fix_id"] for c in clean} == {c.fix_id for c in want.clean}
    assert_same_when_repeated(stops, "stop_id", "is_open")
    assert {(s["stop_id"], s["is_open"]) for s in stops} == {
        (s.stop_id, s.is_open) for s in want.stops
    }
    assert not [r for r in clean if r["is_late"]]  # the restart did not replay into late fixes


def assert_same_when_repeated(records: list[dict], *id_fields: str) -> None:
    seen: dict[tuple, dict] = {}
    for record in records:
        key = tuple(record[f] for f in id_fields)
        assert seen.setdefault(key, record) == record, key

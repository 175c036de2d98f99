"""Shared code of the processors' tests.

Pure builders (fixes, routes, configs, the in-process reference run) first; then what the
worker tests share: running ``geostream worker`` as a subprocess on a test's topic prefix,
producing to its fixes.raw and reading its outputs back with a read_committed consumer.
"""

from __future__ import annotations

import asyncio
import math
import os
import signal
import subprocess
import sys
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
from aiokafka import AIOKafkaConsumer, ConsumerRecord

from config.settings import Settings, get_settings
from geostream.kafka import admin_client, create_consumer, create_producer, topic_name
from processors.config import ProcessorConfig
from processors.pipeline import CourierProcessor, CourierState, Outputs
from processors.zones import Geofences
from schemas.records import IngestedFix
from schemas.wire import encode, encode_array

T0 = datetime(2026, 3, 2, 8, 0, tzinfo=UTC)
LAT0, LON0 = 45.7600, 4.8400
M_PER_DEG_LAT = 111_195.0


def offset(north_m: float, east_m: float) -> tuple[float, float]:
    """(lat, lon) this many metres north and east of (LAT0, LON0)."""
    return (
        LAT0 + north_m / M_PER_DEG_LAT,
        LON0 + east_m / (M_PER_DEG_LAT * math.cos(math.radians(LAT0))),
    )


def fix(
    seconds: float,
    north_m: float = 0.0,
    east_m: float = 0.0,
    *,
    fix_id: str | None = None,
    courier: str = "c1",
    org: str = "acme",
    accuracy_m: float | None = 5.0,
    received_delay_s: float = 1.0,
    lat: float | None = None,
    lon: float | None = None,
) -> IngestedFix:
    ts = T0 + timedelta(seconds=seconds)
    if lat is None or lon is None:
        lat, lon = offset(north_m, east_m)
    return IngestedFix(
        fix_id=fix_id or f"{courier}-{seconds:g}",
        ts=ts,
        lat=lat,
        lon=lon,
        accuracy_m=accuracy_m,
        org_id=org,
        courier_id=courier,
        device_id="d1",
        received_at=ts + timedelta(seconds=received_delay_s),
    )


def config(**overrides: object) -> ProcessorConfig:
    base: dict[str, object] = {
        "stop_max_diameter_m": 80.0,
        "stop_min_duration_s": 120.0,
        "trip_max_gap_s": 600.0,
        "reorder_window_s": 0.0,
        "zone_min_dwell_s": 0.0,
    }
    base.update(overrides)
    return ProcessorConfig.from_settings(get_settings(), **base)


def processor(geofences: Geofences | None = None, **overrides: object) -> CourierProcessor:
    return CourierProcessor(config(**overrides), geofences)


def run(
    proc: CourierProcessor, fixes: list[IngestedFix], state: CourierState | None = None
) -> tuple[CourierState, Outputs]:
    st = state or proc.new_state(fixes[0].org_id, fixes[0].courier_id)
    out = Outputs()
    for f in fixes:
        out.extend(proc.process(st, f))
    return st, out


def day_route() -> list[IngestedFix]:
    """Drive 10 min east at ~8 m/s, park 5 min (jitter), drive 10 min north, park 4 min."""
    fixes: list[IngestedFix] = []
    t = 0.0
    north = east = 0.0
    for _ in range(60):  # 10 s period, 80 m per fix
        fixes.append(fix(t, north, east))
        t += 10
        east += 80
    for i in range(30):
        jitter = ((i * 7) % 11 - 5) * 1.5
        fixes.append(fix(t, north + jitter, east - jitter))
        t += 10
    for _ in range(60):
        north += 80
        fixes.append(fix(t, north, east))
        t += 10
    for i in range(24):
        jitter = ((i * 5) % 9 - 4) * 2.0
        fixes.append(fix(t, north + jitter, east + jitter))
        t += 10
    return fixes


# The worker as a subprocess ---------------------------------------------------------------------

#: Trip gap of the worker tests (short, so the idle timer's close is seen within a test).
GAP_S = 20.0


def scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        return response.read().decode()


def worker_env(
    settings: Settings,
    data_dir: Path,
    store: str,
    metrics_port: int = 0,
    extra: Mapping[str, str] | None = None,
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
    env.update(extra or {})
    return env


def start_worker(
    settings: Settings,
    data_dir: Path,
    log: Path,
    store: str = "rocksdb",
    metrics_port: int = 0,
    extra_env: Mapping[str, str] | None = None,
) -> subprocess.Popen[bytes]:
    """``geostream worker`` on the test's topic prefix; ``extra_env`` overrides the defaults."""
    return subprocess.Popen(
        [sys.executable, "-m", "geostream.cli", "worker", "--loglevel", "warning"],
        env=worker_env(settings, data_dir, store, metrics_port, extra_env),
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


def shifted(
    fixes: list[IngestedFix], start: datetime, received: datetime | None = None
) -> list[IngestedFix]:
    """The fixes moved to begin at ``start``, received 1 s after (or at ``received``)."""
    base = fixes[0].ts
    out = []
    for f in fixes:
        ts = start + (f.ts - base)
        out.append(replace(f, ts=ts, received_at=received or ts + timedelta(seconds=1)))
    return out


def raw_key(f: IngestedFix) -> bytes:
    """The key of a fix on fixes.raw (as the gateway writes it)."""
    return f"{f.org_id}/{f.courier_id}".encode()


async def produce(settings: Settings, fixes: list[IngestedFix], per_record: int = 1) -> None:
    """Write ``fixes`` to fixes.raw, one per record, or ``per_record`` of a courier to an array
    record as the gateway writes an upload."""
    producer = create_producer(settings)
    await producer.start()
    try:
        topic = topic_name(settings, "fixes.raw")
        for at in range(0, len(fixes), per_record):
            group = fixes[at : at + per_record]
            encoded = [encode(f) for f in group]
            value = encoded[0] if per_record == 1 else encode_array(encoded)
            await producer.send(topic, value, key=raw_key(group[0]))
        await producer.flush()
    finally:
        await producer.stop()


async def topic_reader(
    settings: Settings, logical: str, isolation: str = "read_committed"
) -> AIOKafkaConsumer:
    """A started group-less consumer of a topic from its start (the caller stops it)."""
    consumer = create_consumer(
        settings, topic_name(settings, logical), isolation_level=isolation, group_id=None
    )
    await consumer.start()
    return consumer


async def consume(
    settings: Settings,
    logical: str,
    done: Callable[[list[dict]], bool],
    limit_s: float = 120.0,
    worker: subprocess.Popen[bytes] | None = None,
) -> list[dict]:
    """Committed records of a topic, from the start, until ``done(records)`` (or a limit)."""
    consumer = await topic_reader(settings, logical)
    records: list[dict] = []
    try:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + limit_s
        while not done(records) and loop.time() < deadline:
            if worker is not None and worker.poll() is not None:
                raise AssertionError(f"worker exited with {worker.returncode}")
            records += await fetched(consumer)
    finally:
        await consumer.stop()
    return records


async def fetched(consumer: AIOKafkaConsumer) -> list[dict]:
    """The JSON records of one fetch (up to half a second's wait); tombstones are left out."""
    batches = await consumer.getmany(timeout_ms=500)
    return [orjson.loads(m.value) for batch in batches.values() for m in batch if m.value]


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


def expected(
    settings: Settings,
    fixes: list[IngestedFix],
    quiet_until: datetime | None = None,
    **overrides: object,
) -> Outputs:
    """What the pure processor makes of the same fixes with the worker's settings.

    Then the idle timer's work at ``quiet_until`` (default: a day from now, which releases
    every held fix and closes every open trip). ``overrides`` are the worker's settings
    (default: ``trip_max_gap_s=GAP_S``, as :func:`worker_env` gives it).
    """
    worker_settings = settings.model_copy(update={"trip_max_gap_s": GAP_S, **overrides})
    config = ProcessorConfig.from_settings(worker_settings)
    proc = CourierProcessor(
        config, Geofences.load(settings.geofences_file, config.zone_hysteresis_m)
    )
    out = Outputs()
    states = {}
    for f in fixes:
        key = (f.org_id, f.courier_id)
        state = states.setdefault(key, proc.new_state(*key))
        out.extend(proc.process(state, f))
    now = quiet_until or datetime.now(UTC) + timedelta(days=1)
    for state in states.values():
        out.extend(proc.close_idle(state, now))
    return out


async def records_until(
    settings: Settings,
    topic: str,
    done: Callable[[list[ConsumerRecord[bytes, bytes]]], bool],
    limit_s: float = 60.0,
) -> list[ConsumerRecord[bytes, bytes]]:
    """Committed records of a topic (its full name), tombstones included, from the start,
    until ``done(records)`` (or a limit)."""
    consumer = create_consumer(settings, topic, group_id=None)
    await consumer.start()
    records: list[ConsumerRecord[bytes, bytes]] = []
    try:
        deadline = asyncio.get_running_loop().time() + limit_s
        while not done(records) and asyncio.get_running_loop().time() < deadline:
            batches = await consumer.getmany(timeout_ms=500)
            records += [m for batch in batches.values() for m in batch]
    finally:
        await consumer.stop()
    return records

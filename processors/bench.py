"""``geostream bench processors``: the worker's throughput beside its limits, and state size.

In one run, over the same records: the pure pipeline in a plain loop (decode, process, encode
outputs and state: everything the worker does except Kafka), a raw aiokafka consume of the
topic (the transport's limit), and one ``geostream worker`` process end to end. Then the state
of 100,000 couriers: serialised bytes and Python heap per courier.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import tracemalloc
import urllib.request
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, NamedTuple

import orjson

from config.settings import Settings, get_settings
from geostream.bench import BenchResult, process_cpu_s
from geostream.bench_kafka import raw_consume
from geostream.garbage import tune_gc
from geostream.kafka import admin_client, create_consumer, create_topics, topic_name
from geostream.stack.system import free_port
from processors import state as state_codec
from processors.config import WORKER_BATCH_MAX, ProcessorConfig
from processors.pipeline import CourierProcessor, CourierState
from processors.zones import Geofences
from schemas.records import IngestedFix
from schemas.wire import WireError, decode_many, encode, encode_array, record_key


def courier_fixes(courier: int, count: int, start: datetime) -> list[IngestedFix]:
    """A courier riding at ~6 m/s with a 2-minute stop every 2 minutes of riding (5 s period)."""
    out = []
    lat0 = 43.2 + (courier % 100) * 0.01
    lon0 = 76.9 + (courier // 100 % 100) * 0.01
    north = east = 0.0
    heading = (courier * 37) % 360
    for i in range(count):
        if (i // 24) % 2 == 1:  # stopped: jitter of a few metres
            jn, je = ((i * 7) % 9 - 4) * 1.5, ((i * 5) % 7 - 3) * 1.5
        else:
            north += 30 * math.cos(math.radians(heading))
            east += 30 * math.sin(math.radians(heading))
            jn = je = 0.0
            if i % 24 == 0:
                heading = (heading + 70) % 360
        ts = start + timedelta(seconds=5 * i)
        out.append(
            IngestedFix(
                fix_id=f"{courier}-{i}",
                ts=ts,
                lat=lat0 + (north + jn) / 111_195.0,
                lon=lon0 + (east + je) / (111_195.0 * math.cos(math.radians(lat0))),
                accuracy_m=8.0,
                speed_mps=6.0,
                provider="gps",
                org_id="bench",
                courier_id=f"c{courier}",
                device_id=f"d{courier}",
                received_at=ts + timedelta(seconds=2),
            )
        )
    return out


def _square(lat: float, lon: float, half_m: float) -> list[list[float]]:
    dlat = half_m / 111_195.0
    dlon = half_m / (111_195.0 * math.cos(math.radians(lat)))
    ring = [(lon - dlon, lat - dlat), (lon + dlon, lat - dlat), (lon + dlon, lat + dlat)]
    ring += [(lon - dlon, lat + dlat), (lon - dlon, lat - dlat)]
    return [[x, y] for x, y in ring]


def bench_geofences(couriers: int) -> dict[str, Any]:
    """GeoJSON zones of the "bench" organisation over the couriers' rides: a depot around
    where each courier starts and a delivery zone around its first stop, so fixes are looked
    up inside zone areas and zone events are emitted, as a real organisation's are."""
    start = datetime(2026, 3, 2, 8, tzinfo=UTC)
    features = []
    for courier in range(couriers):
        ride = courier_fixes(courier, 36, start)
        for kind, at, half_m in (("depot", ride[0], 150.0), ("delivery", ride[30], 60.0)):
            features.append(
                {
                    "type": "Feature",
                    "properties": {
                        "org_id": "bench",
                        "zone_id": f"bench-{kind}-{courier}",
                        "kind": kind,
                    },
                    "geometry": {
                        "type": "Polygon",
                        "coordinates": [_square(at.lat, at.lon, half_m)],
                    },
                }
            )
    return {"type": "FeatureCollection", "features": features}


def sample(couriers: int, per_courier: int) -> list[tuple[bytes, bytes]]:
    """Records interleaved across couriers in time order, as (key, value)."""
    return uploads(couriers, per_courier, 1)


def uploads(couriers: int, per_courier: int, per_record: int) -> list[tuple[bytes, bytes]]:
    """``fixes.raw`` records as the gateway writes them when each phone uploads
    ``per_record`` fixes at a time (a JSON array; one fix alone is a plain object),
    interleaved across couriers in time order, as (key, value)."""
    start = datetime.now(UTC).replace(microsecond=0) - timedelta(seconds=5 * per_courier + 60)
    streams = [courier_fixes(c, per_courier, start) for c in range(couriers)]
    records = []
    for i in range(0, per_courier, per_record):
        for stream in streams:
            chunk = stream[i : i + per_record]
            key = record_key(chunk[0].org_id, chunk[0].courier_id)
            values = [encode(f) for f in chunk]
            records.append((key, values[0] if per_record == 1 else encode_array(values)))
    return records


def in_process(
    records: list[tuple[bytes, bytes]], settings: Settings, geofences: Geofences | None = None
) -> float:
    """Fixes/s of decode -> process -> encode outputs and state, in a plain loop.

    As the worker does: records in batches of ``WORKER_BATCH_MAX``, a record's fixes
    processed in one call, each changed courier's state encoded once per batch.
    """
    proc = CourierProcessor(ProcessorConfig.from_settings(settings), geofences)
    states: dict[bytes, CourierState] = {}
    fixes = 0
    began = time.perf_counter()
    for at in range(0, len(records), WORKER_BATCH_MAX):
        changed: dict[bytes, CourierState] = {}
        for key, value in records[at : at + WORKER_BATCH_MAX]:
            items: list[IngestedFix] = []
            for item in decode_many(IngestedFix, value):
                if isinstance(item, WireError):
                    raise item
                items.append(item)
            st = states.get(key)
            if st is None:
                st = states[key] = proc.new_state(items[0].org_id, items[0].courier_id)
            out = proc.process_many(st, items)
            for rec in (*out.clean, *out.rejected, *out.events, *out.stops, *out.trips):
                encode(rec)
            changed[key] = st
            fixes += len(items)
        for st in changed.values():
            state_codec.dumps(st)
    return fixes / (time.perf_counter() - began)


def state_sizes(couriers: int, settings: Settings) -> tuple[float, float, float]:
    """(mean serialised bytes, max serialised bytes, heap bytes per courier).

    Twenty couriers are run through 40-59 fixes of the sample ride (mid-trip, fixes held in
    the reorder window, a full stop window); the 100,000 states are copies of those through
    bytes, as the worker holds them after reading its table.
    """
    proc = CourierProcessor(ProcessorConfig.from_settings(settings))
    start = datetime(2026, 3, 2, 8, tzinfo=UTC)
    blobs = []
    for variant in range(20):
        st = proc.new_state("bench", f"c{variant}")
        for f in courier_fixes(variant, 40 + variant, start):
            proc.process(st, f)
        blobs.append(state_codec.dumps(st))
    sizes = [len(blobs[c % 20]) for c in range(couriers)]
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    states = [state_codec.loads(blobs[c % 20]) for c in range(couriers)]
    heap = tracemalloc.get_traced_memory()[0] - base
    tracemalloc.stop()
    del states
    return statistics.fmean(sizes), max(sizes), heap / couriers


async def _produce(settings: Settings, records: list[tuple[bytes, bytes]]) -> None:
    from geostream.kafka import create_producer

    producer = create_producer(settings)
    await producer.start()
    try:
        topic = topic_name(settings, "fixes.raw")
        for key, value in records:
            await producer.send(topic, value, key=key)
        await producer.flush()
    finally:
        await producer.stop()


async def _wait_clean(settings: Settings, expected: int, limit_s: float) -> None:
    """Wait until ``expected`` clean fixes are committed on fixes.clean."""
    consumer = create_consumer(
        settings,
        topic_name(settings, "fixes.clean"),
        group_id=None,
        max_partition_fetch_bytes=4 * 1024 * 1024,
    )
    await consumer.start()
    try:
        seen = 0
        deadline = time.monotonic() + limit_s
        while seen < expected and time.monotonic() < deadline:
            batches = await consumer.getmany(timeout_ms=1000, max_records=10_000)
            seen += sum(len(b) for b in batches.values())
        if seen < expected:
            raise RuntimeError(f"worker produced {seen} of {expected} clean fixes")
    finally:
        await consumer.stop()


async def _drop_prefix(settings: Settings) -> None:
    admin = admin_client(settings)
    await admin.start()
    try:
        mine = [t for t in await admin.list_topics() if t.startswith(settings.topic_prefix)]
        if mine:
            await admin.delete_topics(mine)
    finally:
        await admin.close()


#: How often the run reads the worker's counter. Each read renders every metric in the worker's
#: process, on its CPU: at 20 reads/s that took 4 % of the worker's samples.
METRICS_POLL_S = 0.25


def fixes_in(port: int, timeout_s: float = 2.0) -> float | None:
    """The worker's ``geostream_processor_fixes_in_total``, or None while it cannot answer."""
    try:
        url = f"http://127.0.0.1:{port}/metrics"
        with urllib.request.urlopen(url, timeout=timeout_s) as answer:
            text = answer.read().decode()
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith("geostream_processor_fixes_in_total "):
            return float(line.split()[1])
    return None


class WorkerRate(NamedTuple):
    fixes_per_s: float
    fixes_per_cpu_s: float


def worker_rate(
    settings: Settings, fixes: int, data_dir: Path, geofences: dict[str, Any]
) -> WorkerRate:
    """Fixes/s of one ``geostream worker`` process, with ``geofences`` (GeoJSON), over the
    ``fixes`` already on fixes.raw, and fixes per second of the CPU time it used meanwhile.

    Read from the worker's own counter of fixes taken in, between 10 % and 90 % of them (its
    steady state: startup, table recovery and the tail are not counted). Outputs become
    visible only at each transaction commit (every few seconds), too coarse to time a run of
    seconds by; the run still waits for 90 % of the clean fixes to be committed. The CPU
    figure does not depend on what else the machine runs (the broker, here), the rate does.
    """
    port = free_port()
    zones_file = data_dir / "geofences.geojson"
    zones_file.write_bytes(orjson.dumps(geofences))
    env = dict(os.environ)
    env.update(
        {
            "GEOSTREAM_GEOFENCES_FILE": str(zones_file),
            "GEOSTREAM_TOPIC_PREFIX": settings.topic_prefix,
            "GEOSTREAM_WORKER_METRICS_PORT": str(port),
            "GEOSTREAM_WORKER_DATA_DIR": str(data_dir),
        }
    )
    log = (data_dir / "worker.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "geostream.cli", "worker", "--loglevel", "warning"],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        samples: list[tuple[float, float, float]] = []
        deadline = time.monotonic() + 600
        while not samples or samples[-1][1] < 0.9 * fixes:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"worker stopped or stalled; see {data_dir / 'worker.log'}")
            taken = fixes_in(port)
            if taken is not None:
                samples.append((time.perf_counter(), taken, process_cpu_s(proc.pid)))
            time.sleep(METRICS_POLL_S)
        t0, n0, cpu0 = next(sample for sample in samples if sample[1] >= 0.1 * fixes)
        t1, n1, cpu1 = samples[-1]
        # the last reorder window of every courier waits for the idle timer: not counted
        asyncio.run(_wait_clean(settings, int(fixes * 0.9), 600))
        return WorkerRate((n1 - n0) / (t1 - t0), (n1 - n0) / (cpu1 - cpu0))
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()


def through_kafka(
    base: Settings, records: list[tuple[bytes, bytes]], fixes: int, geofences: dict[str, Any]
) -> tuple[float, WorkerRate]:
    """(raw consume records/s, the worker's rates) of ``records`` on fresh topics of their
    own."""
    settings = base.model_copy(update={"topic_prefix": f"bench.{uuid.uuid4().hex[:8]}."})
    asyncio.run(create_topics(settings))
    try:
        asyncio.run(_produce(settings, records))
        raw = asyncio.run(raw_consume(settings, topic_name(settings, "fixes.raw"), len(records)))
        with tempfile.TemporaryDirectory() as tmp:
            worker = worker_rate(settings, fixes, Path(tmp), geofences)
    finally:
        asyncio.run(_drop_prefix(settings))
    return raw, worker


def measure(args: argparse.Namespace) -> BenchResult:
    base = get_settings()
    fixes = args.couriers * args.per_courier
    batched = args.fixes_per_record
    result = BenchResult("processors", "Stream processors: one worker beside its limits")
    result.add("fixes", fixes, "")
    result.add("couriers in the stream", args.couriers, "")
    batched_records = uploads(args.couriers, args.per_courier, batched)
    zones = bench_geofences(args.couriers)
    hysteresis_m = ProcessorConfig.from_settings(base).zone_hysteresis_m
    tune_gc()  # as the worker does at start
    loop_rate = in_process(batched_records, base, Geofences.from_geojson(zones, hysteresis_m))
    singles = sample(args.couriers, args.per_courier)
    raw_single, (worker_single, _) = through_kafka(base, singles, fixes, zones)
    raw_batched, (worker_batched, worker_batched_cpu) = through_kafka(
        base, batched_records, fixes, zones
    )
    guarantee = base.worker_guarantee
    result.add(
        f"uploads of {batched} fixes: pure pipeline in a plain loop (decode, process, encode)",
        loop_rate,
        "fixes/s",
    )
    result.add(
        f"uploads of {batched} fixes: one worker process ({guarantee})", worker_batched, "fixes/s"
    )
    result.add(
        f"uploads of {batched} fixes: one worker process, per second of its CPU time",
        worker_batched_cpu,
        "fixes/s",
    )
    result.add(
        f"uploads of {batched} fixes: worker / pure loop (goal >= 80 %)",
        100 * worker_batched / loop_rate,
        "%",
    )
    result.add(
        f"uploads of {batched} fixes: raw aiokafka consume", raw_batched * batched, "fixes/s"
    )
    result.add(
        f"uploads of {batched} fixes: worker / raw consume",
        100 * worker_batched / (raw_batched * batched),
        "%",
    )
    result.add("one fix per record: one worker process", worker_single, "fixes/s")
    result.add("one fix per record: raw aiokafka consume", raw_single, "fixes/s")
    result.add("one fix per record: worker / raw consume", 100 * worker_single / raw_single, "%")
    mean, biggest, heap = state_sizes(args.state_couriers, base)
    result.add(f"state, {args.state_couriers:,} couriers: serialised mean", mean, "bytes")
    result.add("state: serialised max (sampled)", biggest, "bytes")
    result.add("state: Python heap per courier (tracemalloc)", heap, "bytes")
    result.notes += [
        f"uploads of {batched} fixes: each phone posts {batched} fixes (5 s apart) per request and"
        " the gateway writes them as one fixes.raw record (a JSON array), as it does in production;"
        " one fix per record: a phone posting every fix on its own",
        "worker rate: the worker's own count of fixes taken in, from 10 % to 90 % of them"
        " (startup, recovery and the tail not counted); the run also waits until 90 % of the"
        " clean fixes are committed; per second of its CPU time: the same fixes over the user"
        " and system time of all the worker's threads meanwhile, which does not depend on what"
        " else runs on the machine",
        "geofences: the organisation has a depot zone around each courier's start and a"
        f" delivery zone around its first stop ({2 * args.couriers:,} zones), so fixes are"
        " looked up inside zone areas and zone events are emitted",
        "each fix produces a clean fix; each courier's courier.latest record and state (changelog)"
        f" are written once per batch of up to {WORKER_BATCH_MAX:,} records, in the transaction"
        " that commits the batch's offsets",
        "the plain loop runs with the garbage collector set up as the worker sets up its own"
        " (tune_gc: objects existing at start frozen, collections every 100k allocations)",
        "state: 20 couriers after 40-59 fixes (mid-trip or stopped, fixes held for reordering),"
        " copied to 100,000 through bytes; heap is the decoded Python objects",
    ]
    return result


def register(benches: Any) -> None:
    parser = benches.add_parser("processors", help="worker fixes/s beside its limits; state size")
    parser.add_argument("--couriers", type=int, default=1000)
    parser.add_argument("--per-courier", type=int, default=200)
    parser.add_argument("--state-couriers", type=int, default=100_000)
    parser.add_argument("--fixes-per-record", type=int, default=10)
    parser.set_defaults(bench_function=measure)

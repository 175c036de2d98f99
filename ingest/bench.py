"""``geostream bench ingest``: fixes/s through the gateway beside the raw producer's rate.

One run: a real gateway process (``geostream ingest`` on a free port, its own topic prefix),
concurrent clients posting 200-fix batches of pre-encoded bodies, then the plain aiokafka
producer (:func:`geostream.bench_kafka.raw_produce`) sending the very same IngestedFix records
to a scratch topic on the same broker. Both figures and their ratio go to docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from config.settings import Settings, get_settings
from geostream.bench import BenchResult, process_cpu_s, wait_ready
from geostream.bench_kafka import drop_topic, raw_produce, scratch_topic
from geostream.db import create_pool
from geostream.kafka import admin_client, create_topics, topic_name
from geostream.stack.system import free_port
from ingest.client import GatewayClient, PostStats, encode_body
from ingest.encoding import encode_ingested
from ingest.tokens import DeviceIdentity, TokenStore
from ingest.validation import TimeLimits, validate_fix


def bench_fixes(courier: int, count: int, start: datetime) -> list[dict[str, Any]]:
    """A courier's fixes, one per second, moving a little; all valid."""
    return [
        {
            "fix_id": uuid.uuid4().hex,
            "ts": (start + timedelta(seconds=i)).isoformat(),
            "lat": 43.2 + courier * 1e-3 + i * 1e-5,
            "lon": 76.9 + (i % 991) * 1e-5,
            "accuracy_m": 7.0,
            "speed_mps": 4.2,
            "heading_deg": 90.0,
            "provider": "gps",
            "battery_pct": 80.0,
        }
        for i in range(count)
    ]


def start_gateway(settings: Settings, port: int) -> subprocess.Popen[bytes]:
    """``geostream ingest`` in its own process, configured by environment like production."""
    env = dict(os.environ)
    env.update(
        {
            "GEOSTREAM_TOPIC_PREFIX": settings.topic_prefix,
            "GEOSTREAM_INGEST_PORT": str(port),
            "GEOSTREAM_INGEST_HOST": "127.0.0.1",
            "GEOSTREAM_INGEST_RATE_PER_S": str(settings.ingest_rate_per_s),
            "GEOSTREAM_INGEST_RATE_BURST": str(settings.ingest_rate_burst),
        }
    )
    if settings.database_url:
        env["GEOSTREAM_DATABASE_URL"] = settings.database_url
    return subprocess.Popen([sys.executable, "-m", "geostream.cli", "ingest"], env=env)


async def measure(total: int, batch: int, clients: int, couriers: int) -> BenchResult:
    run = uuid.uuid4().hex[:8]
    settings = get_settings().model_copy(
        update={
            "topic_prefix": f"bench.{run}.",
            "ingest_rate_per_s": 1e6,
            "ingest_rate_burst": 1e6,
        }
    )
    org = f"bench-{run}"
    await create_topics(settings, ["fixes.raw"])
    pool = create_pool(settings)
    await pool.open()
    store = TokenStore(pool)
    tokens = [await store.create(org, f"courier-{i}", f"device-{i}") for i in range(couriers)]
    start = datetime.now(UTC) - timedelta(hours=1)
    per_courier = -(-total // couriers)
    fixes = [bench_fixes(c, per_courier, start) for c in range(couriers)]
    jobs: list[tuple[str, bytes]] = []
    for c in range(couriers):
        for i in range(0, per_courier, batch):
            jobs.append((tokens[c], encode_body(fixes[c][i : i + batch])))
    sent = sum(len(f) for f in fixes)

    port = free_port()
    process = start_gateway(settings, port)
    url = f"http://127.0.0.1:{port}"
    stats = PostStats()
    try:
        await wait_ready(url, process)
        async with GatewayClient(url, connections=clients) as client:
            # Warm-up: connections, metadata, code paths (not counted).
            warm = bench_fixes(0, batch, datetime.now(UTC) - timedelta(minutes=5))
            await client.post(tokens[0], warm)
            queue: asyncio.Queue[tuple[str, bytes]] = asyncio.Queue()
            for job in jobs:
                queue.put_nowait(job)

            async def worker() -> None:
                while not queue.empty():
                    token, body = queue.get_nowait()
                    stats.record(await client.post_body(token, body))

            cpu_before = process_cpu_s(process.pid)
            began = time.perf_counter()
            await asyncio.gather(*(worker() for _ in range(clients)))
            gateway_s = time.perf_counter() - began
            gateway_cpu_s = process_cpu_s(process.pid) - cpu_before
    finally:
        process.terminate()
        process.wait(timeout=30)
        await store.delete_org(org)
        await pool.close()
        admin = admin_client(settings)
        await admin.start()
        try:
            await admin.delete_topics([topic_name(settings, "fixes.raw")])
        finally:
            await admin.close()

    # The same records for the raw producer, encoded as the gateway encodes them.
    limits = TimeLimits(settings.ingest_future_tolerance_s, settings.ingest_max_age_s)
    now = time.time()
    records: list[tuple[bytes, bytes]] = []
    received_at = datetime.now(UTC)
    for c in range(couriers):
        identity = DeviceIdentity(org, f"courier-{c}", f"device-{c}")
        clean = [validate_fix(f, now, limits)[0] for f in fixes[c]]
        values = encode_ingested([f for f in clean if f is not None], identity, received_at)
        records += [(identity.key, v) for v in values]
    topic = await scratch_topic(settings)
    try:
        raw = await raw_produce(settings, topic, records)
    finally:
        await drop_topic(settings, topic)

    gateway_rate = stats.accepted / gateway_s
    result = BenchResult("ingest", "Ingest gateway into Kafka")
    result.add("fixes posted", sent, "")
    result.add("fixes accepted (acked by Kafka)", stats.accepted, "")
    result.add("requests", stats.requests, "")
    result.add("non-200 answers", sum(n for s, n in stats.statuses.items() if s != 200), "")
    result.add("gateway (one process, uvicorn + uvloop + httptools)", gateway_rate, "fixes/s")
    result.add("raw aiokafka producer, same records", raw, "records/s")
    result.add("gateway / raw", gateway_rate / raw, "ratio")
    result.add("gateway CPU per 1,000 fixes", 1000 * gateway_cpu_s / stats.accepted, "s")
    result.add("gateway fixes per CPU-second", stats.accepted / gateway_cpu_s, "fixes/s")
    result.add("load average (1 min) at the end", os.getloadavg()[0], "")
    result.notes.append(
        f"{clients} concurrent keep-alive clients posting {batch}-fix JSON batches for "
        f"{couriers} devices; clients, gateway and broker share this machine's cores"
    )
    result.notes.append(
        "the gateway writes each request's fixes as JSON arrays of up to 200 per record into "
        "aiokafka batches it fills itself (one key, one partition per request); the raw figure "
        "calls send() per fix record, as raw_produce does"
    )
    result.notes.append(
        "fixes/s depend on what else runs on the machine (see load average); the gateway's "
        "CPU per fix is the steadier figure"
    )
    result.notes.append("goal: >= 30,000 fixes/s and >= 0.5 of raw")
    return result


def register(benches: Any) -> None:
    parser = benches.add_parser("ingest", help="gateway fixes/s beside the raw producer rate")
    parser.add_argument("--fixes", type=int, default=200_000, help="fixes to post")
    parser.add_argument("--batch", type=int, default=200, help="fixes per request")
    parser.add_argument("--clients", type=int, default=16, help="concurrent connections")
    parser.add_argument("--couriers", type=int, default=100, help="devices posting")
    parser.set_defaults(bench_function=_run)


def _run(args: argparse.Namespace) -> BenchResult:
    return asyncio.run(measure(args.fixes, args.batch, args.clients, args.couriers))

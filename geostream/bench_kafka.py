"""``geostream bench kafka``: the broker's raw limits for our records on this machine.

Other benchmarks compare against these: the gateway against the raw produce rate, the worker
against the raw consume rate. :func:`raw_produce` and :func:`raw_consume` are shared for that.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from config.settings import Settings, get_settings
from geostream.bench import BenchResult
from geostream.kafka import admin_client, create_consumer, create_producer
from schemas.records import IngestedFix
from schemas.wire import encode


def sample_records(count: int, couriers: int = 1000) -> list[tuple[bytes, bytes]]:
    """``count`` encoded fixes as (key, value), spread over ``couriers`` couriers."""
    start = datetime.now(UTC) - timedelta(hours=1)
    records = []
    for i in range(count):
        courier = f"courier-{i % couriers}"
        fix = IngestedFix(
            fix_id=uuid.uuid4().hex,
            ts=start + timedelta(seconds=i // couriers),
            lat=43.2 + (i % 997) * 1e-4,
            lon=76.9 + (i % 991) * 1e-4,
            accuracy_m=7.0,
            speed_mps=4.2,
            provider="gps",
            org_id="bench",
            courier_id=courier,
            device_id=f"device-{i % couriers}",
            received_at=start,
        )
        records.append((f"bench/{courier}".encode(), encode(fix)))
    return records


async def scratch_topic(settings: Settings, partitions: int = 6) -> str:
    """A new topic for one benchmark run."""
    from aiokafka.admin import NewTopic

    name = f"bench.{uuid.uuid4().hex[:10]}"
    admin = admin_client(settings)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(name, partitions, 1)])
    finally:
        await admin.close()
    return name


async def drop_topic(settings: Settings, name: str) -> None:
    admin = admin_client(settings)
    await admin.start()
    try:
        await admin.delete_topics([name])
    finally:
        await admin.close()


async def raw_produce(settings: Settings, topic: str, records: list[tuple[bytes, bytes]]) -> float:
    """Records/s of the plain aiokafka producer (our factory's settings), all acknowledged."""
    producer = create_producer(settings)
    await producer.start()
    try:
        began = time.perf_counter()
        futures = [await producer.send(topic, value, key=key) for key, value in records]
        await producer.flush()
        await asyncio.gather(*futures)
        return len(records) / (time.perf_counter() - began)
    finally:
        await producer.stop()


async def raw_consume(settings: Settings, topic: str, expected: int) -> float:
    """Records/s of a plain aiokafka consumer reading ``expected`` records from the start."""
    consumer = create_consumer(
        settings,
        topic,
        group_id=None,
        isolation_level="read_uncommitted",
        max_partition_fetch_bytes=4 * 1024 * 1024,
    )
    await consumer.start()
    try:
        seen = 0
        began = time.perf_counter()
        while seen < expected:
            batches = await consumer.getmany(timeout_ms=5000, max_records=10_000)
            if not batches:
                raise RuntimeError(f"consumer stalled after {seen} of {expected} records")
            seen += sum(len(batch) for batch in batches.values())
        return seen / (time.perf_counter() - began)
    finally:
        await consumer.stop()


async def measure(count: int) -> BenchResult:
    settings = get_settings()
    records = sample_records(count)
    topic = await scratch_topic(settings)
    try:
        produce = await raw_produce(settings, topic, records)
        consume = await raw_consume(settings, topic, count)
    finally:
        await drop_topic(settings, topic)
    result = BenchResult("kafka", "Raw Kafka limits for IngestedFix records")
    result.add("records", count, "")
    result.add("record size", sum(len(v) for _, v in records) / count, "bytes")
    result.add("raw produce (acks=all, idempotent, zstd)", produce, "records/s")
    result.add("raw consume (one aiokafka consumer)", consume, "records/s")
    result.notes.append("single local broker on loopback, 6 partitions, 1,000 couriers")
    return result


def register(benches: Any) -> None:
    parser = benches.add_parser("kafka", help="raw aiokafka produce and consume rates")
    parser.add_argument("--records", type=int, default=200_000)
    parser.set_defaults(bench_function=lambda args: asyncio.run(measure(args.records)))

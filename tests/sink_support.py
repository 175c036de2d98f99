"""Record factories and helpers shared by the sink's tests (tests/test_sink_*.py)."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg

from config.settings import Settings
from geostream.kafka import create_consumer, create_producer, topic_name
from schemas.records import CourierEvent, EnrichedFix, Stop, Trip
from schemas.wire import encode

NOW = datetime.now(UTC).replace(microsecond=0)


def fix(
    org: str = "acme", courier: str = "c1", ts: datetime | None = None, **kw: Any
) -> EnrichedFix:
    ts = ts or NOW - timedelta(minutes=5)
    fields: dict[str, Any] = {
        "fix_id": uuid.uuid4().hex,
        "ts": ts,
        "lat": 43.2389,
        "lon": 76.8897,
        "accuracy_m": 8.0,
        "speed_mps": 3.5,
        "org_id": org,
        "courier_id": courier,
        "device_id": f"dev-{courier}",
        "received_at": ts + timedelta(seconds=1),
        "distance_m": 12.5,
        "odometer_m": 1000.0,
        "zone_ids": ("z1",),
        "expires_at": ts + timedelta(days=90),
    }
    fields.update(kw)
    return EnrichedFix(**fields)


def stop(org: str = "acme", courier: str = "c1", start: datetime | None = None, **kw: Any) -> Stop:
    start = start or NOW - timedelta(hours=1)
    fields: dict[str, Any] = {
        "org_id": org,
        "courier_id": courier,
        "stop_id": f"stop-{courier}-{int(start.timestamp())}",
        "start": start,
        "end": start + timedelta(minutes=5),
        "lat": 43.24,
        "lon": 76.89,
        "duration_s": 300.0,
        "fix_count": 10,
        "expires_at": start + timedelta(days=180),
    }
    fields.update(kw)
    return Stop(**fields)


def trip(org: str = "acme", courier: str = "c1", start: datetime | None = None, **kw: Any) -> Trip:
    start = start or NOW - timedelta(hours=2)
    fields: dict[str, Any] = {
        "org_id": org,
        "courier_id": courier,
        "trip_id": f"trip-{courier}-{int(start.timestamp())}",
        "start": start,
        "end": start + timedelta(minutes=20),
        "distance_m": 5400.0,
        "duration_s": 1200.0,
        "avg_speed_mps": 4.5,
        "max_speed_mps": 9.0,
        "path": ((76.88, 43.23), (76.89, 43.24), (76.90, 43.25)),
        "fix_count": 240,
        "closed_by": "stop",
        "expires_at": start + timedelta(days=180),
    }
    fields.update(kw)
    return Trip(**fields)


def event(
    org: str = "acme", courier: str = "c1", ts: datetime | None = None, **kw: Any
) -> CourierEvent:
    ts = ts or NOW - timedelta(minutes=30)
    fields: dict[str, Any] = {
        "org_id": org,
        "courier_id": courier,
        "event_id": f"ev-{uuid.uuid4().hex}",
        "kind": "zone_enter",
        "ts": ts,
        "subject_id": "z1",
        "lat": 43.24,
        "lon": 76.89,
        "expires_at": ts + timedelta(days=90),
    }
    fields.update(kw)
    return CourierEvent(**fields)


TOPIC_OF = {
    EnrichedFix: "fixes.clean",
    Stop: "stops",
    Trip: "trips",
    CourierEvent: "courier.events",
}


async def produce(
    settings: Settings, records: list[Any], raw: list[tuple[str, bytes]] = ()
) -> None:  # type: ignore[assignment]
    """Publish records to their topics (keyed by org/courier), plus raw (logical topic, bytes)."""
    producer = create_producer(settings)
    await producer.start()
    try:
        futures = []
        for record in records:
            topic = topic_name(settings, TOPIC_OF[type(record)])
            key = f"{record.org_id}/{record.courier_id}".encode()
            futures.append(await producer.send(topic, encode(record), key=key))
        for logical, value in raw:
            futures.append(await producer.send(topic_name(settings, logical), value, key=b"x/y"))
        await asyncio.gather(*futures)
    finally:
        await producer.stop()


def count(url: str, table: str, where: str = "true") -> int:
    with psycopg.connect(url) as conn:
        row = conn.execute(f"SELECT count(*) FROM {table} WHERE {where}").fetchone()
        assert row is not None
        return int(row[0])


async def wait_until(
    predicate: Callable[[], bool], what: str, limit_s: float = 60.0, every: float = 0.2
) -> None:
    """Poll ``predicate`` until true; fails the test with ``what`` after ``limit_s`` seconds."""
    deadline = asyncio.get_running_loop().time() + limit_s
    while not predicate():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(every)


@contextlib.asynccontextmanager
async def running(sink: Any) -> AsyncIterator[asyncio.Task[None]]:
    """Run a Sink in a task; stop it cleanly (or cancel it) on exit."""
    task = asyncio.create_task(sink.run())
    try:
        yield task
    finally:
        sink.stop()
        try:
            await asyncio.wait_for(asyncio.shield(task), 30)
        except (TimeoutError, asyncio.CancelledError):
            task.cancel()
            with contextlib.suppress(BaseException):
                await task


async def read_all(
    settings: Settings, logical: str, expected: int, timeout_s: float = 20
) -> list[bytes]:
    consumer = create_consumer(
        settings,
        topic_name(settings, logical),
        group_id=None,
        isolation_level="read_uncommitted",
    )
    await consumer.start()
    values: list[bytes] = []
    try:
        deadline = asyncio.get_running_loop().time() + timeout_s
        while len(values) < expected and asyncio.get_running_loop().time() < deadline:
            batches = await consumer.getmany(timeout_ms=1000)
            for messages in batches.values():
                values += [m.value for m in messages]
    finally:
        await consumer.stop()
    return values

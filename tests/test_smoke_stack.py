"""Smoke tests against the real broker and the real PostgreSQL + TimescaleDB + PostGIS."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import psycopg
import pytest
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

from config.settings import Settings
from geostream.kafka import admin_client, create_consumer, create_producer, topic_name
from geostream.stack import Stack
from schemas.records import IngestedFix
from schemas.wire import decode, encode

pytestmark = pytest.mark.stack


def make_fix(**overrides: object) -> IngestedFix:
    now = datetime.now(UTC)
    fields: dict[str, object] = {
        "fix_id": uuid.uuid4().hex,
        "ts": now - timedelta(seconds=5),
        "lat": 43.2389,
        "lon": 76.8897,
        "accuracy_m": 8.5,
        "org_id": "acme",
        "courier_id": "courier-1",
        "device_id": "phone-1",
        "received_at": now,
    }
    fields.update(overrides)
    return IngestedFix(**fields)  # type: ignore[arg-type]


async def test_fix_round_trips_through_kafka(settings: Settings) -> None:
    topic = topic_name(settings, "fixes.raw")
    sent = [make_fix(courier_id=f"courier-{i % 3}") for i in range(20)]
    producer = create_producer(settings)
    await producer.start()
    try:
        for fix in sent:
            await producer.send_and_wait(
                topic, encode(fix), key=f"{fix.org_id}/{fix.courier_id}".encode()
            )
    finally:
        await producer.stop()

    consumer = create_consumer(settings, topic, group_id=None, isolation_level="read_uncommitted")
    await consumer.start()
    received: list[IngestedFix] = []
    try:
        while len(received) < len(sent):
            batches = await consumer.getmany(timeout_ms=10_000)
            assert batches, "no records came back from Kafka within 10 s"
            for records in batches.values():
                received.extend(decode(IngestedFix, r.value) for r in records)
    finally:
        await consumer.stop()

    assert sorted(received, key=lambda f: f.fix_id) == sorted(sent, key=lambda f: f.fix_id)


async def test_topics_have_their_configured_partitions_and_retention(settings: Settings) -> None:
    admin = admin_client(settings)
    await admin.start()
    try:
        raw, latest = topic_name(settings, "fixes.raw"), topic_name(settings, "courier.latest")
        described = {t["topic"]: t for t in await admin.describe_topics([raw, latest])}
        responses = await admin.describe_configs(
            [
                ConfigResource(ConfigResourceType.TOPIC, raw),
                ConfigResource(ConfigResourceType.TOPIC, latest),
            ]
        )
    finally:
        await admin.close()
    configs = {
        resource[3]: {entry[0]: entry[1] for entry in resource[4]}
        for response in responses
        for resource in response.resources
    }
    assert len(described[raw]["partitions"]) == 6
    assert configs[raw]["retention.ms"] == str(7 * 86_400_000)
    assert configs[raw]["cleanup.policy"] == "delete"
    assert configs[latest]["cleanup.policy"] == "compact,delete"
    assert configs[latest]["retention.ms"] == str(90 * 86_400_000)


def test_position_row_with_postgis_point_in_hypertable(database_url: str) -> None:
    fix = make_fix()
    with psycopg.connect(database_url) as conn:
        conn.execute(
            "INSERT INTO positions (ts, org_id, courier_id, device_id, fix_id, geom, accuracy_m,"
            " received_at, expires_at)"
            " VALUES (%s, %s, %s, %s, %s, ST_SetSRID(ST_MakePoint(%s, %s), 4326), %s, %s, %s)",
            (
                fix.ts,
                fix.org_id,
                fix.courier_id,
                fix.device_id,
                fix.fix_id,
                fix.lon,
                fix.lat,
                fix.accuracy_m,
                fix.received_at,
                fix.ts + timedelta(days=90),
            ),
        )
        row = conn.execute(
            "SELECT fix_id, ST_X(geom), ST_Y(geom), ST_SRID(geom) FROM positions"
            " WHERE org_id = %s AND courier_id = %s",
            (fix.org_id, fix.courier_id),
        ).fetchone()
        chunks = conn.execute("SELECT count(*) FROM show_chunks('positions')").fetchone()
    assert row == (fix.fix_id, pytest.approx(fix.lon), pytest.approx(fix.lat), 4326)
    assert chunks is not None
    assert chunks[0] == 1


def test_stack_status_names_healthy_services(stack: Stack) -> None:
    status = stack.status()
    assert status["kafka_bootstrap"] == stack.settings.kafka_bootstrap
    assert status["database_url"].startswith("postgresql://")
    pg = status["services"]["postgres"]
    assert {"timescaledb", "postgis"} <= set(pg["extensions"])
    assert "public.positions" in pg["hypertables"]
    assert status["services"]["kafka"]["brokers"] == 1

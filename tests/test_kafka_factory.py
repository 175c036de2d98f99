"""The consumer factory's defaults and overrides: pure, no broker.

Constructing an ``AIOKafkaConsumer`` does not connect (it needs only a running loop), so the
options are read back from the attributes aiokafka 0.14 keeps them in.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from aiokafka import AIOKafkaConsumer

from config.settings import Settings
from geostream.kafka import create_consumer


@asynccontextmanager
async def built(*topics: str, **overrides: object) -> AsyncIterator[AIOKafkaConsumer]:
    """A never-started consumer, closed afterwards so aiokafka does not warn it leaked."""
    settings = Settings(kafka_bootstrap="broker.invalid:9092")
    consumer = create_consumer(settings, *topics, **overrides)
    try:
        yield consumer
    finally:
        await consumer.stop()


async def test_consumer_defaults_suit_geostream() -> None:
    async with built("a.fixes.clean", "a.courier.latest") as consumer:
        assert consumer._client._bootstrap_servers == "broker.invalid:9092"
        assert consumer._client._client_id == "geostream"
        assert consumer._enable_auto_commit is False
        assert consumer._isolation_level == "read_committed"
        assert consumer._auto_offset_reset == "earliest"
        assert consumer._group_id is None
        assert consumer.subscription() == {"a.fixes.clean", "a.courier.latest"}


async def test_consumer_overrides_win() -> None:
    async with built(
        group_id="g",
        client_id="geostream-test",
        enable_auto_commit=True,
        isolation_level="read_uncommitted",
        auto_offset_reset="latest",
        max_partition_fetch_bytes=4 * 1024 * 1024,
        bootstrap_servers="other.invalid:9093",
    ) as consumer:
        assert consumer._client._bootstrap_servers == "other.invalid:9093"
        assert consumer._client._client_id == "geostream-test"
        assert consumer._enable_auto_commit is True
        assert consumer._isolation_level == "read_uncommitted"
        assert consumer._auto_offset_reset == "latest"
        assert consumer._group_id == "g"
        assert consumer._max_partition_fetch_bytes == 4 * 1024 * 1024
        assert consumer.subscription() == frozenset()

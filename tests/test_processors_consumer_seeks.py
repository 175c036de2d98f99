"""The worker's fixes to faust's seeks (processors/consumer_seeks.py): on the real broker, a
partition committed at 0 goes back to 0, where aiokafka's own seek leaves it; and a seek runs
in the consumer's own thread."""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator
from types import SimpleNamespace
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from faust.transport.consumer import ThreadDelegateConsumer
from faust.transport.drivers.aiokafka import AIOKafkaConsumerThread
from mode.threads import QueueServiceThread

from config.settings import Settings
from geostream.kafka import create_consumer, create_producer, topic_name
from processors import consumer_seeks
from processors.consumer_seeks import seek_to_committed

RECORDS = 3


@pytest.fixture
async def consumer(settings: Settings) -> AsyncIterator[AIOKafkaConsumer]:
    """A group member of three ``fixes.raw`` partitions of 3 records each, committed at 0, at
    2 and never, and read to the end."""
    topic = topic_name(settings, "fixes.raw")
    tps = [TopicPartition(topic, p) for p in range(3)]
    producer = create_producer(settings)
    await producer.start()
    try:
        for tp in tps:
            for n in range(RECORDS):
                await producer.send_and_wait(topic, b"%d" % n, partition=tp.partition)
    finally:
        await producer.stop()
    reader = create_consumer(settings, group_id=f"{settings.topic_prefix}seek")
    await reader.start()
    try:
        reader.assign(tps)
        await reader.commit({tps[0]: 0, tps[1]: 2})
        await read_to_the_end(reader)
        yield reader
    finally:
        await reader.stop()


async def read_to_the_end(reader: AIOKafkaConsumer) -> None:
    for _ in range(100):
        if await positions(reader) == [RECORDS] * 3:
            return
        await reader.getmany(timeout_ms=200)
    raise AssertionError("the records never came")


def partitions(reader: AIOKafkaConsumer) -> list[TopicPartition]:
    return sorted(reader.assignment())


async def positions(reader: AIOKafkaConsumer) -> list[int]:
    return [await reader.position(tp) for tp in partitions(reader)]


@pytest.mark.stack
async def test_a_partition_committed_at_zero_is_sought_back_to_zero(
    consumer: AIOKafkaConsumer,
) -> None:
    first, second, third = partitions(consumer)
    committed = {first: 0, second: 2, third: None}
    # aiokafka's own seek (what faust calls) leaves the partition committed at 0 at its end
    assert await consumer.seek_to_committed() == committed
    assert await positions(consumer) == [RECORDS, 2, RECORDS]

    await read_to_the_end(consumer)
    assert await seek_to_committed(consumer) == committed
    # one never committed stays where it is: the group has no offset to go back to
    assert await positions(consumer) == [0, 2, RECORDS]


@pytest.mark.stack
async def test_faust_seeks_through_it_once_installed(consumer: AIOKafkaConsumer) -> None:
    consumer_seeks.install()

    async def call_thread(method: Any, *args: Any) -> Any:
        return await method(*args)

    thread = SimpleNamespace(call_thread=call_thread, _ensure_consumer=lambda: consumer)
    seek = AIOKafkaConsumerThread.seek_to_committed
    assert await seek(thread) == dict(zip(partitions(consumer), [0, 2, None], strict=True))  # type: ignore[arg-type]
    assert await positions(consumer) == [0, 2, RECORDS]


class ConsumerThread(QueueServiceThread):
    """A thread with its own loop and method queue, as faust's aiokafka consumer thread."""

    def __init__(self) -> None:
        super().__init__()
        self.seeks: list[tuple[Any, int, int]] = []

    def seek(self, partition: Any, offset: int) -> None:
        self.seeks.append((partition, offset, threading.get_ident()))


async def test_faust_seeks_run_in_the_consumer_thread() -> None:
    consumer_seeks.install()
    thread = ConsumerThread()
    await thread.start()
    try:
        await ThreadDelegateConsumer._seek(SimpleNamespace(_thread=thread), "tp", 7)  # type: ignore[arg-type]
    finally:
        await thread.stop()
    [(partition, offset, ident)] = thread.seeks
    assert (partition, offset) == ("tp", 7)
    assert ident != threading.get_ident()
    assert thread._thread is not None
    assert ident == thread._thread.ident

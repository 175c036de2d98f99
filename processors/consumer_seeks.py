"""Two fixes to how faust's aiokafka consumer seeks, which the worker's offsets rely on.

**Committed offset 0.** When a rebalance or recovery stops the flow, faust drops the records
its fetcher had already taken from aiokafka and seeks every partition back to the group's
committed offset (``Consumer.perform_seek``). aiokafka's ``seek_to_committed`` only seeks where
the committed offset is above 0 (``if offset and offset > 0``), so a partition committed at 0
stayed where the dropped records had taken the fetch position, and nothing read them again
until a later record showed the hole. Committed at 0 means: the group never processed a
record of it (the worker anchors every source partition there, see
:func:`processors.app.anchor_offsets`), or a worker died before its first commit of that
partition was complete. After such a restart a partition's backlog stalled at its first few
records (a restart or takeover test failed in four of five full test runs).
:func:`seek_to_committed` seeks every partition that has a committed offset, 0 included, and
leaves those without one (changelog and assignor partitions, which the group never commits)
where they are, as aiokafka does.

**The consumer's thread.** faust runs the aiokafka consumer in a thread of its own, with its
own event loop, and asks it for everything through a method queue, except ``Consumer.seek``:
that calls aiokafka's ``seek`` in the caller's thread, which changes the fetcher's dict of
fetched records while the consumer thread may be iterating over it (a worker crashed with a
``KeyError`` in aiokafka's ``fetched_records`` after its seeks during a rebalance).
:func:`seek_in_consumer_thread` queues the seek to the consumer's thread, as faust's own
``seek_to_committed`` and ``commit`` are.
"""

from __future__ import annotations

from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition


async def seek_to_committed(consumer: AIOKafkaConsumer) -> dict[TopicPartition, int | None]:
    """Seek each assigned partition of ``consumer`` to its committed offset, where it has
    one; the committed offsets, as aiokafka's ``seek_to_committed`` returns them."""
    committed: dict[TopicPartition, int | None] = {}
    for tp in consumer.assignment():
        offset: int | None = await consumer.committed(tp)
        committed[tp] = offset
        if offset is not None:
            consumer.seek(tp, offset)
    return committed


async def seek_in_consumer_thread(consumer: Any, partition: Any, offset: int) -> None:
    """faust's ``ThreadDelegateConsumer._seek``, run in the consumer's thread."""
    thread = consumer._thread
    await thread.call_thread(thread.seek, partition, offset)


def install() -> None:
    """Patch faust's consumer classes (once, for the one faust app of the process)."""
    from faust.transport.consumer import ThreadDelegateConsumer
    from faust.transport.drivers.aiokafka import AIOKafkaConsumerThread

    async def faust_seek_to_committed(self: Any) -> Any:
        return await self.call_thread(seek_to_committed, self._ensure_consumer())

    AIOKafkaConsumerThread.seek_to_committed = faust_seek_to_committed  # type: ignore[method-assign]
    ThreadDelegateConsumer._seek = seek_in_consumer_thread  # type: ignore[method-assign,assignment]

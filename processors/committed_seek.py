"""faust's seek back to the committed offsets, for offset 0 too.

When a rebalance or recovery stops the flow, faust drops the records its fetcher had
already taken from aiokafka and seeks every partition back to the group's committed offset
(``Consumer.perform_seek``). aiokafka's ``seek_to_committed`` only seeks where the committed
offset is above 0 (``if offset and offset > 0``), so a partition committed at 0 stayed where
the dropped records had taken the fetch position, and nothing read them again until a later
record showed the hole. Committed at 0 means: the group never processed a record of it (the
worker anchors every source partition there, see :func:`processors.app.anchor_offsets`), or
a worker died before its first commit of that partition was complete. After such a restart
a partition's backlog stalled at its first few records (a restart or takeover test failed in
four of five full test runs).

:func:`seek_to_committed` seeks every partition that has a committed offset, 0 included,
and leaves those without one (changelog and assignor partitions, which the group never
commits) where they are, as aiokafka does.
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


def install() -> None:
    """Make faust's aiokafka consumer thread seek through :func:`seek_to_committed`
    (patched on faust's class, once, for the one faust app of the process)."""
    from faust.transport.drivers.aiokafka import AIOKafkaConsumerThread

    async def faust_seek_to_committed(self: Any) -> Any:
        return await self.call_thread(seek_to_committed, self._ensure_consumer())

    AIOKafkaConsumerThread.seek_to_committed = faust_seek_to_committed  # type: ignore[method-assign]

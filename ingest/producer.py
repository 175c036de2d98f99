"""The gateway's way into ``fixes.raw``: one request's fixes as a few records, acked.

All fixes of a request share one key (courier scoped by org), hence one partition: they go as
JSON arrays of up to :data:`FIXES_PER_RECORD` fixes, in whole record batches
(:func:`geostream.kafka.send_batches`), since every Kafka record costs tens of microseconds
in each process that handles it. The partition is chosen with the
producer's default partitioner, so the placement equals what ``send(key=...)`` would pick.
The producer comes from :func:`geostream.kafka.create_producer` (acks=all, idempotent, zstd).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Sequence

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError
from aiokafka.partitioner import DefaultPartitioner

from config.settings import Settings
from geostream.kafka import create_producer, send_batches, topic_name
from schemas.wire import encode_array

log = logging.getLogger("geostream.ingest.producer")

#: Fixes per Kafka record of ``fixes.raw`` (a JSON array; about 80 KB): the worker's cost per
#: record is paid once per array, and the record stays far below the broker's size limit.
FIXES_PER_RECORD = 200


class KafkaUnavailable(Exception):
    """Kafka did not acknowledge the batch in time (or refused it): answer 503, client retries."""


class FixProducer:
    """Owns the aiokafka producer of one gateway process and replaces it if it breaks."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.topic = topic_name(settings, "fixes.raw")
        self.timeout_s = settings.ingest_produce_timeout_s
        self._producer: AIOKafkaProducer | None = None
        self._lock = asyncio.Lock()
        self._partitioner = DefaultPartitioner()
        self._background: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        """Connect now if Kafka is there; otherwise the first request (or /readyz) retries."""
        try:
            await self._ensure()
        except KafkaUnavailable as exc:
            log.warning("Kafka not reachable at start, will retry on demand: %s", exc)

    async def stop(self) -> None:
        producer, self._producer = self._producer, None
        if producer is not None:
            with contextlib.suppress(KafkaError, OSError, TimeoutError):
                await asyncio.wait_for(producer.stop(), self.timeout_s)

    async def _ensure(self) -> AIOKafkaProducer:
        producer = self._producer
        if producer is not None:
            return producer
        async with self._lock:
            if self._producer is None:
                candidate = create_producer(self.settings, client_id="geostream-ingest")
                try:
                    await asyncio.wait_for(candidate.start(), self.timeout_s)
                except (KafkaError, OSError, TimeoutError) as exc:
                    with contextlib.suppress(Exception):
                        await candidate.stop()
                    raise KafkaUnavailable(f"cannot connect: {exc!r}") from exc
                self._producer = candidate
            return self._producer

    async def _replace(self, broken: AIOKafkaProducer) -> None:
        """Drop a producer whose sender failed for good; the next request makes a new one."""
        async with self._lock:
            if self._producer is broken:
                self._producer = None
        with contextlib.suppress(Exception):
            await asyncio.wait_for(broken.stop(), self.timeout_s)

    async def produce(self, key: bytes, values: Sequence[bytes]) -> float:
        """Write ``values`` under ``key`` and wait until Kafka acknowledged every one.

        Returns the seconds it took. Raises :class:`KafkaUnavailable` when Kafka does not ack
        within ``ingest_produce_timeout_s``; records may still land later, which is safe:
        the client retries with the same ``fix_id``s and downstream deduplicates on them.
        """
        if not values:
            return 0.0
        began = time.perf_counter()
        try:
            await asyncio.wait_for(self._send(key, values), self.timeout_s)
        except TimeoutError as exc:
            raise KafkaUnavailable(f"no ack within {self.timeout_s}s") from exc
        return time.perf_counter() - began

    async def _send(self, key: bytes, values: Sequence[bytes]) -> None:
        producer = await self._ensure()
        try:
            await self._send_batches(producer, key, values)
        except KafkaError as exc:
            # Retriable errors were already retried by the producer; what reaches us means
            # this producer gave up (e.g. its sender died): replace it in the background.
            log.warning("produce failed, replacing the producer: %r", exc)
            task = asyncio.get_running_loop().create_task(self._replace(producer))
            self._background.add(task)
            task.add_done_callback(self._background.discard)
            raise KafkaUnavailable(repr(exc)) from exc

    async def _send_batches(
        self, producer: AIOKafkaProducer, key: bytes, values: Sequence[bytes]
    ) -> None:
        partitions = sorted(await producer.partitions_for(self.topic))
        partition = self._partitioner(key, partitions, partitions)
        records = [
            (key, encode_array(values[at : at + FIXES_PER_RECORD]))
            for at in range(0, len(values), FIXES_PER_RECORD)
        ]
        await asyncio.gather(*await send_batches(producer, self.topic, partition, records))

    async def ready(self, timeout_s: float = 3.0) -> tuple[bool, str]:
        """Kafka reachable: the producer is connected and the broker answers a metadata request."""
        try:
            producer = await asyncio.wait_for(self._ensure(), timeout_s)
            await asyncio.wait_for(producer.client.fetch_all_metadata(), timeout_s)
            await asyncio.wait_for(producer.partitions_for(self.topic), timeout_s)
        except (KafkaUnavailable, KafkaError, OSError, TimeoutError) as exc:
            return False, f"{type(exc).__name__}: {exc}"
        return True, "ok"

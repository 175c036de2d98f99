"""The gateway's way into ``fixes.raw``: one request's fixes as a few records, acked.

All fixes of a request share one key (courier scoped by org), hence one partition: they go as
JSON arrays of up to :data:`FIXES_PER_RECORD` fixes, since every Kafka record costs tens of
microseconds in each process that handles it. Records go through ``producer.send``, so the
requests that arrive together share the partition's open record batch. (A batch of its own
per request, through ``send_batch``, waits until the partition has no batch queued: with
one produce request in flight per broker, a partition then took one phone upload per round
trip, and 1,000 small uploads a second timed out.)

A slow or absent ack is the broker's state, not the producer's: the request gets a 503 with
Retry-After and the producer stays. Only a producer whose sender task has ended is replaced.
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

from config.settings import Settings
from geostream.kafka import create_producer, sender_stopped, topic_name
from schemas.wire import encode_array

log = logging.getLogger("geostream.ingest.producer")

#: Fixes per Kafka record of ``fixes.raw`` (a JSON array; about 80 KB): the worker's cost per
#: record is paid once per array, and the record stays far below the broker's size limit.
FIXES_PER_RECORD = 200


class KafkaUnavailable(Exception):
    """Kafka did not acknowledge the batch in time (or refused it): answer 503, client retries."""

    reason = "kafka_unavailable"


class KafkaBacklog(KafkaUnavailable):
    """More fixes wait for Kafka's ack than ``ingest_max_pending_fixes``: answer 503 at once
    rather than queue the request behind them."""

    reason = "kafka_backlog"


class FixProducer:
    """Owns the aiokafka producer of one gateway process and replaces it if it breaks."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.topic = topic_name(settings, "fixes.raw")
        self.timeout_s = settings.ingest_produce_timeout_s
        self.max_pending = settings.ingest_max_pending_fixes
        self.pending = 0  # fixes handed to the producer and not yet acked (or given up on)
        self.replaced = 0  # producers dropped because their sender had stopped
        self._producer: AIOKafkaProducer | None = None
        self._lock = asyncio.Lock()
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
        """The producer, connected; one whose sender task has ended is replaced first."""
        producer = self._producer
        if producer is not None and not sender_stopped(producer):
            return producer
        async with self._lock:
            broken = self._producer
            if broken is not None and sender_stopped(broken):
                log.warning("the producer's sender has stopped; replacing the producer")
                self._producer = None
                self.replaced += 1
                task = asyncio.get_running_loop().create_task(self._close(broken))
                self._background.add(task)
                task.add_done_callback(self._background.discard)
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

    async def _close(self, broken: AIOKafkaProducer) -> None:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(broken.stop(), self.timeout_s)

    async def produce(self, key: bytes, values: Sequence[bytes]) -> float:
        """Write ``values`` under ``key`` and wait until Kafka acknowledged every one.

        Returns the seconds it took. Raises :class:`KafkaUnavailable` when Kafka does not ack
        within ``ingest_produce_timeout_s`` (or :class:`KafkaBacklog` at once, when too many
        fixes wait for acks already); records may still land later, which is safe: the client
        retries with the same ``fix_id``s and downstream deduplicates on them.
        """
        if not values:
            return 0.0
        if self.pending + len(values) > self.max_pending:
            raise KafkaBacklog(f"{self.pending} fixes wait for Kafka's ack")
        began = time.perf_counter()
        self.pending += len(values)
        try:
            await asyncio.wait_for(self._send(key, values), self.timeout_s)
        except TimeoutError as exc:
            raise KafkaUnavailable(f"no ack within {self.timeout_s}s") from exc
        finally:
            self.pending -= len(values)
        return time.perf_counter() - began

    async def _send(self, key: bytes, values: Sequence[bytes]) -> None:
        producer = await self._ensure()
        try:
            acks = [
                await producer.send(
                    self.topic, encode_array(values[at : at + FIXES_PER_RECORD]), key=key
                )
                for at in range(0, len(values), FIXES_PER_RECORD)
            ]
            await asyncio.gather(*acks)
        except KafkaError as exc:
            # Retriable errors were already retried, and batches that outlived the request
            # timeout fail with KafkaTimeoutError: the broker is slow or away, and a new
            # producer would only add its connection set-up to the load. (A producer whose
            # sender task has ended is replaced by the next request's _ensure.)
            raise KafkaUnavailable(repr(exc)) from exc

    async def ready(self, timeout_s: float = 3.0) -> tuple[bool, str]:
        """Kafka reachable: the producer is connected and the broker answers a metadata request."""
        try:
            producer = await asyncio.wait_for(self._ensure(), timeout_s)
            await asyncio.wait_for(producer.client.fetch_all_metadata(), timeout_s)
            await asyncio.wait_for(producer.partitions_for(self.topic), timeout_s)
        except (KafkaUnavailable, KafkaError, OSError, TimeoutError) as exc:
            # the detail is for the log: /readyz answers anyone, and addresses or broker
            # internals are nobody's business there
            log.warning("readiness: Kafka unavailable: %s: %s", type(exc).__name__, exc)
            return False, "unavailable"
        return True, "ok"

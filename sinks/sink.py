"""``geostream sink``: Kafka (fixes.clean, stops, trips, courier.events) -> TimescaleDB.

Guarantees, and how:

* **Nothing acknowledged is lost.** Offsets are committed manually, and only after the batch's
  database transaction has committed and its dead letters are acknowledged by Kafka. A crash
  anywhere before that re-reads the batch.
* **Nothing is doubled.** Every write is an ``INSERT ... ON CONFLICT`` on a deterministic key
  (:mod:`sinks.writer`), so re-reading a batch rewrites the same rows.
* **The database being down stalls the sink, it does not skip.** Transient errors (connection,
  pool timeout, anything not specific to a record) are retried with capped exponential back-off,
  forever; fetching pauses behind a bounded queue meanwhile, and the lag drains afterwards.
* **A poison record does not block its neighbours.** A record that cannot be decoded, or that
  the database refuses for a reason retries cannot fix (a data or integrity error), is isolated
  by bisecting the batch, and sent to ``sink.deadletter`` as a :class:`Rejection`.

Two tasks form a bounded pipeline: the collector fetches and decodes batch N+1 while the writer
writes batch N (at most two decoded batches wait); batches are written and committed strictly
in order, so an offset is never committed before every row below it is. Both tasks share one
thread, and PostgreSQL does its part of a COPY on another core only while the writer keeps the
COPY fed: the collector decodes in slices of :data:`DECODE_SLICE` records and yields between
them, so the writer gets to push rows (and send its next statement) within a millisecond
rather than once per decoded batch.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, NamedTuple

import orjson
import psycopg
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import CommitFailedError, KafkaError
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from config.retention import RetentionPolicy
from config.settings import Settings
from geostream.db import create_pool, service_database_url
from geostream.kafka import create_consumer, create_producer, topic_name
from schemas.records import Rejection
from schemas.wire import courier_of_key, encode
from sinks.decode import RECEIVED_AT, Unwritable, row_decoder
from sinks.erasure import Courier
from sinks.maintenance import Maintenance
from sinks.metrics import SinkMetrics
from sinks.rows import POSITIONS, TOPIC_TABLES, Row, Table
from sinks.writer import Tombstoned, write_batch

log = logging.getLogger("geostream.sink")

BeforeCommit = Callable[[], Awaitable[None]]
REPLAY_STAGING_BATCHES = 20
# End-to-end latency is observed on an even sample of each batch (observing 100k values a
# second would cost the sink a tenth of its time); small batches are observed in full.
E2E_SAMPLES_PER_BATCH = 1000
# Records decoded between two yields to the event loop: ~0.5 ms of CPU, so the writer's next
# statement (a batch makes ~7 round trips) hardly waits, and the COPY it queued in the socket
# outlasts the slice. Measured: slices of 2,000 left PostgreSQL idle for 0.9 s per 200k rows
# between statements, 500 for 0.5 s, 100 for 0.3 s; the yields themselves cost ~2 %.
DECODE_SLICE = 100


class Item(NamedTuple):
    """One decoded message, made only to bisect a batch the database refused."""

    table: Table
    row: Row
    message: Any  # the aiokafka ConsumerRecord: topic, partition, offset, value

    def reject(self, reason: str, detail: str) -> Reject:
        m = self.message
        return Reject(m.topic, m.partition, m.offset, m.value, reason, detail)


@dataclass(slots=True)
class Reject:
    """One message bound for the dead-letter topic."""

    topic: str
    partition: int
    offset: int
    value: bytes | None
    reason: str
    detail: str


@dataclass
class Batch:
    """Decoded messages by table, as parallel lists (no object per message: ~100k a second)."""

    rows: dict[Table, list[Row]] = field(default_factory=dict)
    messages: dict[Table, list[Any]] = field(default_factory=dict)  # each row's ConsumerRecord
    rejects: list[Reject] = field(default_factory=list)
    offsets: dict[TopicPartition, int] = field(default_factory=dict)  # next offset to commit
    # couriers whose erasure tombstone is in the batch, by table (sinks.erasure)
    tombstoned: dict[Table, set[Courier]] = field(default_factory=dict)

    def tombstone(self, table: Table, courier: Courier) -> None:
        """The courier's erasure tombstone: its rows of ``table`` so far in the batch go."""
        rows, messages = self.rows.get(table, []), self.messages.get(table, [])
        kept = [i for i, row in enumerate(rows) if table.courier_of(row) != courier]
        if len(kept) < len(rows):
            rows[:] = [rows[i] for i in kept]
            messages[:] = [messages[i] for i in kept]
        self.tombstoned.setdefault(table, set()).add(courier)

    @property
    def row_count(self) -> int:
        return sum(map(len, self.rows.values()))

    def __len__(self) -> int:
        return self.row_count + len(self.rejects)

    def items(self) -> list[Item]:
        return [
            Item(table, row, message)
            for table, rows in self.rows.items()
            for row, message in zip(rows, self.messages[table], strict=True)
        ]


class PermanentWriteError(Exception):
    """The database refused rows for a reason a retry cannot fix."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


def permanent_reason(exc: BaseException) -> str | None:
    """The dead-letter reason for an error no retry can fix, or None if it is transient.

    Data errors (SQLSTATE class 22) and integrity errors (class 23) are about the rows; values
    psycopg cannot dump are too. Everything else (connection loss, timeouts, a missing table,
    a full disk) is the database's state and is retried.
    """
    if isinstance(exc, psycopg.errors.DataError | psycopg.errors.IntegrityError):
        name = type(exc).__name__
        if name in ("DataError", "IntegrityError"):
            name = f"sqlstate_{exc.sqlstate or 'unknown'}"
        return "db_" + re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()
    if isinstance(exc, ValueError | OverflowError) and not isinstance(exc, psycopg.Error):
        return "unencodable_value"
    return None


def group_rows(items: Sequence[Item]) -> dict[Table, list[Row]]:
    grouped: dict[Table, list[Row]] = {}
    for item in items:
        grouped.setdefault(item.table, []).append(item.row)
    return grouped


class Sink:
    """One sink instance: a consumer group member plus a DB pool and a dead-letter producer."""

    def __init__(
        self,
        settings: Settings,
        *,
        metrics: SinkMetrics | None = None,
        before_commit: BeforeCommit | None = None,
    ) -> None:
        self.settings = settings
        self.metrics = metrics or SinkMetrics()
        self.policy = RetentionPolicy.load(settings.retention_file)
        self.maintenance = Maintenance(settings, self.policy, self.metrics)
        self._before_commit = before_commit
        self._logical = {topic_name(settings, t): t for t in TOPIC_TABLES}
        self._tables = {topic: TOPIC_TABLES[t] for topic, t in self._logical.items()}
        self._queue: asyncio.Queue[Batch] = asyncio.Queue(maxsize=2)
        self._stopping = asyncio.Event()
        self._committed: dict[TopicPartition, int] = {}
        self.consumer: AIOKafkaConsumer | None = None
        self.pool: AsyncConnectionPool | None = None
        self.batches_committed = 0
        # After a batch met replayed positions, the next few skip the direct COPY (which
        # would fail on the duplicates again) and go straight through staging.
        self._staging_batches_left = 0

    def stop(self) -> None:
        """Ask the sink to finish the batches it holds and return from :meth:`run`."""
        self._stopping.set()

    async def run(self) -> None:
        settings = self.settings
        # the writer logs in as geostream_sink; maintenance (retention) connects as the owner
        self.pool = create_pool(settings, service_database_url(settings, "sink"))
        await self.pool.open(wait=False)
        producer = create_producer(settings, client_id="geostream-sink")
        consumer = create_consumer(
            settings,
            *self._logical,
            group_id=settings.sink_group_id,
            client_id="geostream-sink",
            max_partition_fetch_bytes=4 * 1024 * 1024,
            max_poll_interval_ms=30 * 60 * 1000,
        )
        self.consumer = consumer
        try:
            await producer.start()
            await consumer.start()
        except BaseException:
            with contextlib.suppress(Exception):
                await consumer.stop()
            with contextlib.suppress(Exception):
                await producer.stop()
            await self.pool.close()
            raise
        log.info("sink consuming %s as group %s", sorted(self._logical), settings.sink_group_id)
        collector = asyncio.create_task(self._collect_loop(consumer), name="sink-collect")
        writer = asyncio.create_task(self._write_loop(consumer, producer), name="sink-write")
        maintenance = asyncio.create_task(
            self.maintenance.run_forever() if settings.sink_maintenance else asyncio.sleep(0),
            name="sink-maintenance",
        )
        try:
            done, _ = await asyncio.wait({collector, writer}, return_when=asyncio.FIRST_EXCEPTION)
            for task in done:
                task.result()  # re-raise a crash
            await asyncio.gather(collector, writer)
        finally:
            for task in (collector, writer, maintenance):
                task.cancel()
            await asyncio.gather(collector, writer, maintenance, return_exceptions=True)
            with contextlib.suppress(Exception):
                await consumer.stop()
            with contextlib.suppress(Exception):
                await producer.stop()
            await self.pool.close()

    # -- collecting ---------------------------------------------------------------------------

    async def _collect_loop(self, consumer: AIOKafkaConsumer) -> None:
        while not self._stopping.is_set():
            batch = await self._collect(consumer)
            if len(batch):
                await self._queue.put(batch)
        # End marker: the writer drains what is queued, then returns. (When the sink is
        # cancelled or crashes instead, run() cancels the writer; no marker is needed.)
        await self._queue.put(Batch())

    async def _collect(self, consumer: AIOKafkaConsumer) -> Batch:
        """Fetch until the batch is full or its first record has waited long enough."""
        batch = Batch()
        max_records = self.settings.sink_batch_max_records
        max_wait = self.settings.sink_batch_max_wait_ms / 1000
        deadline: float | None = None
        while len(batch) < max_records and not self._stopping.is_set():
            timeout = 0.5 if deadline is None else deadline - time.monotonic()
            if timeout <= 0:
                break
            fetched = await consumer.getmany(
                timeout_ms=int(timeout * 1000) + 1, max_records=max_records - len(batch)
            )
            for tp, messages in fetched.items():
                if not messages:
                    continue
                for start in range(0, len(messages), DECODE_SLICE):
                    self._decode_into(batch, tp, messages[start : start + DECODE_SLICE])
                    await asyncio.sleep(0)  # let the writer feed the COPY in flight
                batch.offsets[tp] = messages[-1].offset + 1
                self.metrics.records.labels(self._logical[tp.topic]).inc(len(messages))
            if len(batch) and deadline is None:
                deadline = time.monotonic() + max_wait
        return batch

    def _decode_into(self, batch: Batch, tp: TopicPartition, messages: Sequence[Any]) -> None:
        table = self._tables[tp.topic]
        decode_row = row_decoder(table)
        append_row = batch.rows.setdefault(table, []).append
        append_message = batch.messages.setdefault(table, []).append
        for message in messages:
            if message.value is None:
                courier = courier_of_key(message.key)
                if courier is not None:
                    batch.tombstone(table, courier)
                    continue
            try:
                row = decode_row(message.value)
            except Unwritable as exc:
                batch.rejects.append(
                    Reject(tp.topic, tp.partition, message.offset, message.value, exc.reason,
                           exc.detail)
                )  # fmt: skip
            else:
                append_row(row)
                append_message(message)

    # -- writing ------------------------------------------------------------------------------

    async def _write_loop(self, consumer: AIOKafkaConsumer, producer: object) -> None:
        while True:
            batch = await self._queue.get()
            if not len(batch):
                return
            began = time.monotonic()
            rejects = list(batch.rejects)
            if batch.row_count:
                try:
                    await self._write_retrying(batch.rows, batch.tombstoned)
                except PermanentWriteError as exc:
                    rejects += await self._isolate(batch.items(), batch.tombstoned, exc)
            elif batch.tombstoned:
                await self._write_retrying({}, batch.tombstoned)
            if rejects:
                await self._dead_letter(producer, rejects)
            await self._commit(consumer, batch.offsets)
            committed_at = datetime.now(UTC)
            self.metrics.batch_size.observe(len(batch))
            self.metrics.batch_seconds.observe(time.monotonic() - began)
            e2e = self.metrics.e2e_seconds
            positions = batch.rows.get(POSITIONS, [])  # clean fixes carry received_at
            stride = max(len(positions) // E2E_SAMPLES_PER_BATCH, 1)
            for row in positions[::stride]:
                e2e.observe((committed_at - row[RECEIVED_AT]).total_seconds())
            self.batches_committed += 1

    async def _write_isolating(self, items: list[Item], tombstoned: Tombstoned) -> list[Reject]:
        """Write ``items``; bisect around rows the database refuses for good."""
        if not items:
            return []
        try:
            await self._write_retrying(group_rows(items), tombstoned)
            return []
        except PermanentWriteError as exc:
            return await self._isolate(items, tombstoned, exc)

    async def _isolate(
        self, items: list[Item], tombstoned: Tombstoned, exc: PermanentWriteError
    ) -> list[Reject]:
        """``items`` were refused together: dead-letter the one, or bisect and write halves."""
        if len(items) == 1:
            reject = items[0].reject(exc.reason, exc.detail)
            log.warning("dead-lettering %s[%s]@%s: %s", reject.topic, reject.partition,
                        reject.offset, exc)  # fmt: skip
            return [reject]
        middle = len(items) // 2
        return await self._write_isolating(
            items[:middle], tombstoned
        ) + await self._write_isolating(items[middle:], tombstoned)

    async def _write_retrying(
        self, grouped: dict[Table, list[Row]], tombstoned: Tombstoned
    ) -> None:
        """One transaction for these rows, retried until it commits or is refused for good."""
        assert self.pool is not None
        delay = self.settings.sink_retry_initial_s
        while True:
            try:
                async with self.pool.connection(timeout=10) as conn:
                    written = await write_batch(
                        conn,
                        grouped,
                        tombstoned,
                        before_commit=self._before_commit,
                        direct_positions=self._staging_batches_left == 0,
                    )
                self._staging_batches_left = (
                    REPLAY_STAGING_BATCHES
                    if written.duplicates
                    else max(self._staging_batches_left - 1, 0)
                )
                for table, count in written.rows.items():
                    self.metrics.rows_written.labels(table).inc(count)
                return
            except (psycopg.Error, PoolTimeout, OSError, ValueError, OverflowError) as exc:
                reason = permanent_reason(exc)
                if reason is not None:
                    raise PermanentWriteError(reason, str(exc).strip()) from exc
                self.metrics.retries.labels("db").inc()
                if isinstance(exc, psycopg.errors.FeatureNotSupported):
                    # TimescaleDB refuses writes to hypertables under row-level security
                    log.error(
                        "the sink's role needs BYPASSRLS (a superuser: ALTER ROLE"
                        " geostream_sink BYPASSRLS); `geostream stack up` gives it"
                    )
                log.warning("DB write failed (%s: %s); retrying in %.1fs",
                            type(exc).__name__, str(exc).strip(), delay)  # fmt: skip
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.settings.sink_retry_max_s)

    async def _dead_letter(self, producer: object, rejects: list[Reject]) -> None:
        """Publish the rejects to ``sink.deadletter`` and wait for every acknowledgement."""
        topic = topic_name(self.settings, "sink.deadletter")
        now = datetime.now(UTC)
        period = self.policy.period("technical")
        payloads = [(r, encode(rejection(r, now, now + period))) for r in rejects]
        delay = self.settings.sink_retry_initial_s
        while True:
            try:
                futures = [
                    await producer.send(topic, payload, key=f"{r.topic}/{r.partition}".encode())  # type: ignore[attr-defined]
                    for r, payload in payloads
                ]
                await asyncio.gather(*futures)
                break
            except KafkaError as exc:
                self.metrics.retries.labels("deadletter").inc()
                log.warning("dead-letter send failed (%s); retrying in %.1fs", exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.settings.sink_retry_max_s)
        for r in rejects:
            self.metrics.dead_letters.labels(r.reason).inc()

    async def _commit(self, consumer: AIOKafkaConsumer, offsets: dict[TopicPartition, int]) -> None:
        """Commit the batch's offsets (never moving one backwards) and update the lag gauges.

        A failed commit loses nothing: the next batch's commit covers these offsets too, and
        after a rebalance the new owner re-reads and rewrites idempotently.
        """
        forward = {tp: o for tp, o in offsets.items() if o > self._committed.get(tp, -1)}
        if forward:
            try:
                await consumer.commit(forward)
                self._committed.update(forward)
            except (CommitFailedError, KafkaError) as exc:
                self.metrics.retries.labels("commit").inc()
                log.warning("offset commit failed (%s); the records will be re-read", exc)
        for tp in consumer.assignment():
            highwater = consumer.highwater(tp)
            if highwater is not None and tp in self._committed:
                self.metrics.lag.labels(self._logical.get(tp.topic, tp.topic), tp.partition).set(
                    max(highwater - self._committed[tp], 0)
                )


def rejection(reject: Reject, now: datetime, expires_at: datetime) -> Rejection:
    """The dead-letter record for ``reject``: reason code, where it came from, what it was."""
    record: dict[str, object] | None = None
    org_id = courier_id = fix_id = None
    if reject.value:
        try:
            parsed = orjson.loads(reject.value)
        except orjson.JSONDecodeError:
            record = {"raw": reject.value[:4096].decode("utf-8", "replace")}
        else:
            record = parsed if isinstance(parsed, dict) else {"value": parsed}
            org_id = _str_or_none(record.get("org_id"))
            courier_id = _str_or_none(record.get("courier_id"))
            fix_id = _str_or_none(record.get("fix_id"))
    return Rejection(
        stage="sink",
        reason=reject.reason,
        detail=f"{reject.topic}[{reject.partition}]@{reject.offset}: {reject.detail}"[:2000],
        org_id=org_id,
        courier_id=courier_id,
        fix_id=fix_id,
        rejected_at=now,
        record=record,
        expires_at=expires_at,
    )


def _str_or_none(value: object) -> str | None:
    return value if isinstance(value, str) else None

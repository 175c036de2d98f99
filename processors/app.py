"""The faust-streaming worker: Kafka in, :class:`CourierProcessor` in the middle, Kafka out.

Only wiring lives here; every decision is made by the pure code in :mod:`processors.pipeline`.

- Source: ``fixes.raw`` (keyed ``org/courier``) plus an internal ``ticks`` topic that the idle
  timer writes to. faust only lets a table change inside stream processing, so the timer does
  not close trips itself: it sends a tick (the wall-clock time) keyed by the courier to the
  courier's partition, and the agent handles it in order with that courier's fixes.
- State: a faust Table of serialised :class:`CourierState` per courier, with a changelog
  topic (rocksdict store, or memory). Decoded states are cached in memory; the states of
  partitions that move to another worker are forgotten at the rebalance.
- Guarantee: ``exactly_once`` by default, so outputs, the changelog and the consumer offsets
  are committed in one transaction; a worker killed at any moment resumes from the last
  commit with exactly the state of that commit. Ids are deterministic in any case.
- Offsets: the worker keeps its own position in each source partition
  (:mod:`processors.positions`) and commits that, not faust's account of acked records,
  which goes wrong around rebalances; and each courier's state remembers the last record
  applied to it, so a record committed in the state but not in the offsets is not applied
  twice.

Run it with ``geostream worker`` or faust's own CLI: ``faust -A processors.app worker``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
import time
import weakref
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

import faust
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.errors import IllegalStateError
from aiokafka.partitioner import murmur2
from faust.streams import _current_event
from faust.types import TP
from prometheus_client import start_http_server

from config.settings import Settings, get_settings
from geostream.garbage import tune_gc
from geostream.kafka import (
    COMPRESSION_TYPE,
    create_consumer,
    create_producer,
    create_topics,
    send_batches,
    topic_name,
    topic_specs,
)
from processors import consumer_seeks, eager_wait, erasure
from processors import state as state_codec
from processors._cleaning import epoch_ms
from processors.config import WORKER_BATCH_MAX, ProcessorConfig
from processors.metrics import WorkerMetrics
from processors.pipeline import CourierProcessor, CourierState, Outputs
from processors.positions import Admission, SourcePositions
from processors.zones import Geofences
from schemas.records import IngestedFix, PrivacyRequest, Rejection
from schemas.wire import WireError, decode, decode_many, encode, record_key

log = logging.getLogger("geostream.processors")

#: Partition hashes of courier keys remembered (murmur2 in Python costs more than a lookup).
KEY_HASHES_MAX = 20_000

#: The state changelog is compacted, but Kafka compacts only closed segments, and a segment
#: stays open for 7 days by default: a restart replayed every state write since the topic
#: was made (10,000 couriers write 1,000 states a second), so recovery grew with uptime. A
#: segment closed every minute and cleaned at 10 % dirty keeps it near one record per
#: courier. (The whole set: altering a topic's config replaces all of it.)
CHANGELOG_CONFIG = {
    "cleanup.policy": "compact",
    "segment.ms": "60000",
    "min.cleanable.dirty.ratio": "0.1",
}
#: How long a batch of up to WORKER_BATCH_MAX events waits to fill: the most a live fix waits
#: before it is processed. faust's fetcher fills the batch in the same event loop that
#: processes the last one, so with 50 ms a worker catching up took ~1,150 records per batch and
#: wrote each courier's state nearly twice as often (~4 % of its CPU); with 150 ms, ~1,900.
BATCH_WITHIN_S = 0.15

#: Largest record batch the worker's producers build (bytes, before compression). One batch
#: per output partition and event batch: aiokafka queues a second batch for a partition only
#: once the first has left, so small batches would serialise on the broker's round trips.
PRODUCER_BATCH_BYTES = 512 * 1024

#: How soon the records of partitions that arrived during a rebalance are read again once
#: it is over (see :meth:`Wiring.reread`).
REREAD_INTERVAL_S = 1.0

#: How long a batch waits for faust to start the transactional producer of a newly assigned
#: partition before the worker gives up (and crashes, to be restarted) rather than drop it.
PRODUCER_WAIT_S = 60.0

OUTPUT_TOPICS = ("fixes.clean", "fixes.rejected", "courier.events", "trips", "stops")


def app_id(settings: Settings) -> str:
    """The faust app id; it names the consumer group and internal topics, so it carries the
    topic prefix and tests (or pipelines) sharing a broker never share state."""
    return f"{settings.topic_prefix}geostream-processors"


def store_url(settings: Settings) -> str:
    if settings.worker_store == "rocksdb":
        try:
            import rocksdict  # noqa: F401
        except ImportError:
            log.warning("rocksdict is not installed; using the memory store")
            return "memory://"
        return "rocksdb://"
    return "memory://"


class TopicRecords:
    """What one transaction writes: ``(key, value)`` per logical output topic, the newest
    clean fix per courier for the compacted ``courier.latest``, and the changed states."""

    __slots__ = ("changelog", "erased", "events", "latest", "states", "topics")

    def __init__(self) -> None:
        # a value of None is a tombstone
        self.topics: dict[str, list[tuple[bytes | None, bytes | None]]] = {}
        self.latest: dict[bytes | None, bytes | None] = {}
        self.states: dict[bytes, tuple[CourierState, int]] = {}  # key -> (state, partition)
        self.erased: dict[bytes, tuple[int, int]] = {}  # key -> (partition, erasure time ms)
        self.changelog: dict[int, list[tuple[bytes, bytes | None]]] = {}  # by partition
        self.events: list[Any] = []  # the faust events these records came from

    def records(self, name: str) -> list[tuple[bytes | None, bytes | None]]:
        """The list of ``(key, value)`` going to logical topic ``name``."""
        records = self.topics.get(name)
        if records is None:
            records = self.topics[name] = []
        return records

    def add(self, name: str, key: bytes | None, value: bytes | None) -> None:
        self.records(name).append((key, value))


class OutputBatch(dict[str, TopicRecords]):
    """A batch's outputs by transactional id (one transaction per source partition)."""

    def __missing__(self, tid: str) -> TopicRecords:
        records = self[tid] = TopicRecords()
        return records


class Wiring:
    """The worker's moving parts around the pure processor."""

    def __init__(self, app: faust.App, settings: Settings) -> None:
        self.app = app
        self.settings = settings
        config = ProcessorConfig.from_settings(settings)
        self.processor = CourierProcessor(
            config, Geofences.load(settings.geofences_file, config.zone_hysteresis_m)
        )
        self.retention = self.processor.retention
        self.metrics = WorkerMetrics()
        self.partitions = settings.worker_partitions
        self.cache: dict[bytes, CourierState] = {}
        # States changed by the batch being processed (its TopicRecords write them).
        self.dirty: dict[bytes, CourierState] = {}
        self.idle: dict[bytes, int] = {}  # couriers with an open trip or held fixes
        self.erasures: dict[bytes, int] = {}  # erased couriers -> erasure time (ms)
        self.rescan = True
        self.tick_producer: Any = None
        self.positions: SourcePositions[TP] = SourcePositions()
        self.offsets_reader: AIOKafkaConsumer | None = None
        self.tids: dict[tuple[str, int], str] = {}
        self.partition_counts: dict[str, int] = {}
        self.key_hashes: dict[bytes, int] = {}
        self.raw_topic = topic_name(settings, "fixes.raw")
        self.ticks_topic = f"{app_id(settings)}-ticks"
        self.source = app.topic(
            self.raw_topic,
            self.ticks_topic,
            key_type=bytes,
            value_type=bytes,
            key_serializer="raw",
            value_serializer="raw",
            partitions=self.partitions,
        )
        self.ticks = app.topic(
            self.ticks_topic,
            key_type=bytes,
            value_type=bytes,
            key_serializer="raw",
            value_serializer="raw",
            partitions=self.partitions,
            internal=True,
        )
        self.outputs = {
            name: app.topic(
                topic_name(settings, name),
                key_type=bytes,
                value_type=bytes,
                key_serializer="raw",
                value_serializer="raw",
            )
            for name in (*OUTPUT_TOPICS, "courier.latest")
        }
        self.output_names = {name: t.get_topic_name() for name, t in self.outputs.items()}
        self.table = app.Table(
            "courier-state",
            default=None,
            key_type=bytes,
            value_type=bytes,
            partitions=self.partitions,
            extra_topic_configs=CHANGELOG_CONFIG,
        )
        self.changelog_topic: str = self.table.changelog_topic.get_topic_name()

    # state -------------------------------------------------------------------------------------
    def stored(self, key: bytes, event: Any) -> bytes | None:
        """The table's value for ``key``, read in the store of ``event``'s partition.

        faust's rocksdb store looks a key up only in the database of the *current* event's
        partition; inside a batch that is whichever event the stream saw last, so the read
        names the event it is for (the memory store has no partitions and does not care).
        """
        token = _current_event.set(weakref.ref(event))
        try:
            value: bytes | None = self.table.get(key)
        finally:
            _current_event.reset(token)
        return value

    def load(self, key: bytes, org_id: str, courier_id: str, event: Any) -> CourierState:
        pending = self.dirty.get(key)
        if pending is not None:  # changed in this batch, maybe evicted from the cache since
            return pending
        cached = self.cache.get(key)
        if cached is not None:
            return cached
        if key not in self.erasures:
            erased_ms = erasure.decode_marker(self.stored(erasure.marker_key(key), event))
            if erased_ms is not None:
                self.erasures[key] = erased_ms
        raw = self.stored(key, event)
        if raw is not None:
            try:
                state = state_codec.loads(raw)
            except state_codec.StateError:
                log.exception("unreadable state of %r; starting afresh", key)
                state = self.processor.new_state(org_id, courier_id)
        else:
            state = self.processor.new_state(org_id, courier_id)
        self.cache[key] = state
        if len(self.cache) > self.settings.worker_state_cache:  # the oldest goes first
            del self.cache[next(iter(self.cache))]
        self.metrics.couriers.set(len(self.cache))
        return state

    def save(self, key: bytes, state: CourierState, partition: int, out: TopicRecords) -> None:
        """Mark ``state`` changed; it is written once per batch, with ``out``'s transaction."""
        self.dirty[key] = state
        out.states[key] = (state, partition)

    def write_states(self, records: TopicRecords) -> None:
        """Put the batch's changed states into the table's store and queue their changelog
        records with the outputs of the same transaction.

        faust's own table writes (``table[key] = ...``) queue the changelog record in a buffer
        that an ``exactly_once`` commit does not wait for: a commit could then cover a fix
        whose state change lands in the next transaction, and a crash in between would resume
        from an older state. Written here, the state commits exactly with its offsets.
        """
        for key, (partition, erased_ms) in records.erased.items():
            records.changelog.setdefault(partition, []).extend(
                [(key, None), (erasure.marker_key(key), erasure.encode_marker(erased_ms))]
            )
        for key, (state, partition) in records.states.items():
            if self.dirty.get(key) is state:
                del self.dirty[key]
            data = state_codec.dumps(state)
            records.changelog.setdefault(partition, []).append((key, data))
            self.metrics.state_bytes.observe(len(data))
            if state.seg.trip is not None or state.buffer:
                self.idle[key] = partition
            else:
                self.idle.pop(key, None)
        self.store_states(records.changelog)

    def store_states(self, by_partition: dict[int, list[tuple[bytes, bytes | None]]]) -> None:
        """Put states into the table's local store: with rocksdb, one write per partition
        database, without its write-ahead log.

        The store only holds what the changelog holds: after a hard stop it is dropped
        (:func:`prepare_store`), and at every start and rebalance faust replays the changelog
        into it from the offset it last persisted, which the worker's own writes never move.
        A write lost with rocksdb's memtable therefore comes back from the changelog, and the
        log (4 µs of a 6 µs write) buys nothing.
        """
        store: Any = self.table.data
        if not hasattr(store, "_db_for_partition"):  # the memory store: no partitions
            for pairs in by_partition.values():
                for key, data in pairs:
                    if data is None:
                        store.pop(key, None)
                    else:
                        store[key] = data
            return
        from rocksdict import WriteBatch, WriteOptions  # faust's rocksdb store is rocksdict's

        unlogged = WriteOptions()
        unlogged.disable_wal = True  # type: ignore[method-assign,assignment]  # a property
        for partition, pairs in by_partition.items():
            batch = WriteBatch(raw_mode=True)
            for key, data in pairs:
                if data is None:
                    batch.delete(key)
                    store._key_index.pop(key, None)
                else:
                    batch.put(key, data)
                    store._key_index[key] = partition  # where faust's own lookups find it
            store._db_for_partition(partition).write(batch, unlogged)

    def keep_partitions(self, assigned: Iterable[Any]) -> None:
        """After a rebalance, forget the couriers of partitions this worker no longer owns.

        Another worker may have changed those meanwhile, so they are read from the table again
        if they come back. The couriers of partitions it keeps stay cached: faust commits every
        published batch when the rebalance starts (``stream_wait_empty``), so the table's
        recovery of those partitions ends at the same states.
        """
        assigned = set(assigned)
        mine = {tp.partition for tp in assigned if tp.topic == self.raw_topic}
        for held in (self.cache, self.idle):
            for key in [k for k in held if self.partition_for(k, self.partitions) not in mine]:
                del held[key]
        self.positions.keep(assigned)
        self.rescan = True

    def guard_store(self) -> None:
        """Have the table's store cleared of each partition the worker loses, as it loses it.

        The store takes the worker's writes as it processes, but the transaction that carries
        their changelog records is aborted once the partition's new owner starts. Left in
        place, those states would be ahead of the changelog if the partition came back (table
        recovery rewrites only the keys the changelog has, from the offset it last persisted).
        Cleared, a partition that comes back is rebuilt from the changelog alone. faust calls
        the store's ``on_rebalance`` with the partitions really lost (not those the eager
        protocol revokes and gives back), before any recovery starts.
        """
        store: Any = self.table.data
        rebalance = store.on_rebalance

        async def on_rebalance(
            assigned: set[Any], revoked: set[Any], newly_assigned: set[Any], generation_id: int = 0
        ) -> None:
            self.clear_stored({tp.partition for tp in revoked if tp.topic == self.changelog_topic})
            await rebalance(assigned, revoked, newly_assigned, generation_id)

        store.on_rebalance = on_rebalance

    def clear_stored(self, partitions: set[int]) -> None:
        """Delete every state of ``partitions`` from the table's local store."""
        if not partitions:
            return
        store: Any = self.table.data
        if hasattr(store, "_db_for_partition"):  # rocksdb: a database per partition
            for partition in partitions:
                db = store._dbs.get(partition)
                if db is None:  # not opened in this run: nothing written since a clean stop
                    continue
                for key in list(db.keys()):  # the persisted changelog offset included
                    db.delete(key)
        else:
            held = [k for k in store if self.partition_for(k, self.partitions) in partitions]
            for key in held:
                del store[key]
        log.info("cleared the stored states of lost partitions %s", sorted(partitions))

    # events ------------------------------------------------------------------------------------
    async def handle_batch(self, events: list[Any]) -> None:
        """Process one batch of events, then publish its outputs and changed states."""
        outputs = OutputBatch()
        events = await self.in_order(events)
        for event in events:
            message = event.message
            key: bytes | None = event.key
            txn = self.transaction_of(message.topic, message.partition)
            outputs[txn].events.append(event)
            if message.topic == self.ticks_topic:
                if key is not None:
                    self.handle_tick(key, int(event.value), event, outputs[txn])
                continue
            if erasure.is_erasure(message.headers):
                self.erase(key, event, outputs[txn])
                continue
            try:
                items = decode_many(IngestedFix, event.value)
            except WireError as exc:
                self.metrics.fixes_in.inc()
                self.reject_malformed(key, exc, outputs[txn])
                continue
            self.metrics.fixes_in.inc(len(items))
            out = outputs[txn]
            by_courier: dict[bytes, list[IngestedFix]] = {}
            for fix in items:
                if isinstance(fix, WireError):
                    self.reject_malformed(key, fix, out)
                    continue
                fix_key = key or record_key(fix.org_id, fix.courier_id)
                group = by_courier.get(fix_key)
                if group is None:
                    by_courier[fix_key] = [fix]
                else:
                    group.append(fix)
            results: list[tuple[bytes, Outputs]] = []
            for fix_key, fixes in by_courier.items():
                first = fixes[0]
                state = self.load(fix_key, first.org_id, first.courier_id, event)
                if self.already_applied(state, message.partition, message.offset):
                    self.metrics.replayed_out.inc(len(fixes))
                    continue
                erased_ms = self.erasures.get(fix_key)  # known once load has looked
                if erased_ms is not None:
                    kept = erasure.received_after(fixes, erased_ms)
                    if len(kept) < len(fixes):
                        self.metrics.erased_out.inc(len(fixes) - len(kept))
                        if not kept:
                            continue
                        fixes = kept
                state.source_partition = message.partition
                state.source_offset = message.offset
                self.save(fix_key, state, message.partition, out)
                results.append((fix_key, self.processor.process_many(state, fixes)))
            self.collect(results, out)
        await self.publish(outputs)

    @staticmethod
    def already_applied(state: CourierState, partition: int, offset: int) -> bool:
        """Whether the record at ``partition``/``offset`` is already in ``state``.

        faust's commit snapshots the acked offsets before it takes the transaction's lock, so
        a batch acked in between is committed, outputs and state, with the older offsets; after
        a crash its records come again. The state (always in the same transaction as the
        outputs) remembers the last record it took, so they change nothing a second time.
        """
        return state.source_partition == partition and offset <= state.source_offset

    async def in_order(self, events: list[Any]) -> list[Any]:
        """The events that continue their source partition exactly where processing stands
        (see :mod:`processors.positions`); partitions with records missing are sought back."""
        admitted: list[Any] = []
        holes: set[TopicPartition] = set()
        positions = self.positions
        rebalancing = self.app.rebalancing
        for event in events:
            tp = event.message.tp
            if rebalancing:
                # delivered while the table may still be recovering: read again afterwards
                event.ack()
                positions.defer(tp, event.message.offset)
                continue
            if tp not in positions:
                positions.start(tp, await self.start_position(tp))
            admission = positions.admit(tp, event.message.offset)
            if admission is Admission.PROCESS:
                admitted.append(event)
                continue
            event.ack()  # the commit takes the positions, not faust's acks
            if admission is Admission.HOLE:
                holes.add(tp)
        for tp in holes:
            await self.rewind(tp)
        return admitted

    async def reread(self) -> None:
        """Seek back the partitions whose records came during a rebalance and were not
        processed: faust hands over records before the table has recovered the partition's
        states (a courier would start afresh), and after its last seek back."""
        if self.app.rebalancing or not self.positions.deferred:
            return
        for tp, offset in self.positions.rereads(self.app.consumer.assignment()).items():
            if self.app.rebalancing:
                return  # faust seeks every partition back to its committed offset after it
            await self.seek(tp, offset)

    async def seek(self, tp: TP, offset: int) -> None:
        """Seek ``tp`` to ``offset``, unless it was revoked while the seek waited for the
        consumer's thread (:mod:`processors.consumer_seeks`)."""
        try:
            await self.app.consumer.seek(tp, offset)
        except IllegalStateError:
            log.info("%s was revoked before its seek to %d", tp, offset)

    async def start_position(self, tp: TopicPartition) -> int:
        """Where a newly assigned partition resumes: the group's committed offset."""
        reader = await self.group_offsets()
        committed: int | None = await reader.committed(TopicPartition(tp.topic, tp.partition))
        return committed if committed is not None else await self.first_offset(tp)

    async def first_offset(self, tp: TopicPartition) -> int:
        """The offset of ``tp``'s oldest record still on the broker."""
        reader = await self.group_offsets()
        plain = TopicPartition(tp.topic, tp.partition)
        first: int = (await reader.beginning_offsets([plain]))[plain]
        return first

    async def rewind(self, tp: TopicPartition) -> None:
        """Seek ``tp`` back to its position, or on to its first record if retention deleted
        the records from there (they can never be processed, and that is said loudly)."""
        first = await self.first_offset(tp)
        if tp not in self.positions:
            return  # revoked meanwhile
        position = self.positions.next[tp]
        if first > position:
            log.error("%s: records %d..%d expired before they were processed", tp, position, first)
            self.positions.skip_to(tp, first)
        else:
            log.warning("%s: records from %d went missing; reading them again", tp, position)
        self.metrics.rewinds.inc()
        await self.seek(tp, self.positions.next[tp])

    async def group_offsets(self) -> AIOKafkaConsumer:
        """A consumer that only reads the group's committed offsets (it never joins)."""
        if self.offsets_reader is None:
            self.offsets_reader = create_consumer(
                self.settings, group_id=app_id(self.settings), client_id="geostream-worker-offsets"
            )
            await self.offsets_reader.start()
        return self.offsets_reader

    def committable_offsets(self, tps: Iterable[TopicPartition]) -> dict[Any, int]:
        """What faust's commit sends: the worker's positions, never faust's own offsets.

        Replaces the consumer's ``_filter_committable_offsets``, which derives offsets from
        its acks plus the "gaps" it records whenever a delivered offset jumps, and so can step
        over records never processed. Its ack lists are emptied: nothing else reads them.
        """
        consumer: Any = self.app.consumer
        for tp in tps:
            consumer._acked[tp].clear()
            consumer._acked_index[tp].clear()
            consumer._gap.pop(tp, None)
        return self.positions.committable(consumer.assignment(), consumer._committed_offset)

    def erase(self, key: bytes | None, event: Any, out: TopicRecords) -> None:
        """A courier's erasure request: drop its state, and tombstone its outputs.

        The state goes with a tombstone on the changelog; a fresh state takes its place in
        the cache (fixes after the request in this batch build on it, not on the store's old
        one). Every output topic the sink reads, and ``courier.latest``, gets a tombstone
        after the courier's records that are already queued.
        """
        try:
            request = decode(PrivacyRequest, event.value)
        except WireError as exc:
            self.reject_malformed(key, exc, out)
            return
        key = record_key(request.org_id, request.courier_id)
        message = event.message
        state = self.load(key, request.org_id, request.courier_id, event)
        if self.already_applied(state, message.partition, message.offset):
            return  # the state is already one built after this request
        erased_ms = max(epoch_ms(request.requested_at), self.erasures.get(key, 0))
        self.erasures[key] = erased_ms
        self.dirty.pop(key, None)
        self.idle.pop(key, None)
        out.states.pop(key, None)
        fresh = self.processor.new_state(request.org_id, request.courier_id)
        fresh.source_partition, fresh.source_offset = message.partition, message.offset
        self.cache[key] = fresh
        out.erased[key] = (message.partition, erased_ms)
        for name in erasure.TOMBSTONED_TOPICS:
            out.add(name, key, None)
        # courier.latest's tombstone goes with the other topics' records, ahead of the newest
        # fixes (sent last): a fix after the request in this batch must not overwrite it
        out.latest.pop(key, None)
        out.add("courier.latest", key, None)
        self.metrics.erasures.inc()
        log.info("erased the state of a courier of %s (request %s)",
                 request.org_id, request.request_id)  # fmt: skip

    def handle_tick(self, key: bytes, now_ms: int, event: Any, out: TopicRecords) -> None:
        if key not in self.cache and key not in self.dirty and self.stored(key, event) is None:
            return
        org_id, _, courier_id = key.decode().partition("/")
        state = self.load(key, org_id, courier_id, event)
        result = self.processor.close_idle(state, datetime.fromtimestamp(now_ms / 1000, UTC))
        self.save(key, state, event.message.partition, out)
        self.collect([(key, result)], out)
        self.metrics.timer_closed.inc(result.timer_closed_trips)

    def reject_malformed(self, key: bytes | None, exc: WireError, out: TopicRecords) -> None:
        now = datetime.now(UTC)
        org_id, _, courier_id = (key or b"").decode(errors="replace").partition("/")
        rejection = Rejection(
            stage="processor",
            reason=exc.reason if exc.reason.replace("_", "").isalnum() else "malformed_record",
            detail=exc.detail[:500],
            org_id=org_id or None,
            courier_id=courier_id or None,
            rejected_at=now,
            expires_at=self.retention.expires_at("technical", org_id or None, now),
        )
        self.metrics.fixes_out.labels("rejected", rejection.reason).inc()
        out.add("fixes.rejected", key, encode(rejection))

    def collect(self, results: list[tuple[bytes, Outputs]], out: TopicRecords) -> None:
        """Encode each courier's ``results`` into ``out``; ``courier.latest`` keeps one record
        per courier. Called once per source record, so per-call costs (the clock, the metric
        series) do not repeat for each of its fixes."""
        m = self.metrics
        now = time.time()
        clean = out.records("fixes.clean")
        observe = m.latency.observe
        count = late = 0
        for key, result in results:
            latest = result.latest
            for fix in result.clean:
                data = encode(fix)
                clean.append((key, data))
                if fix is latest:
                    out.latest[key] = data
                late += fix.is_late
                observe(max(0.0, now - epoch_ms(fix.received_at) / 1000.0))
            count += len(result.clean)
            for rej in result.rejected:
                out.add("fixes.rejected", key, encode(rej))
                m.fixes_out.labels("rejected", rej.reason).inc()
            for ev in result.events:
                out.add("courier.events", key, encode(ev))
            for stop in result.stops:
                out.add("stops", key, encode(stop))
                m.stops.labels("open" if stop.is_open else "closed").inc()
            for trip in result.trips:
                out.add("trips", key, encode(trip))
                m.trips.labels(trip.closed_by).inc()
        if count > late:
            m.clean_out.inc(count - late)
        if late:
            m.late_out.inc(late)

    # publishing --------------------------------------------------------------------------------
    def transaction_of(self, topic: str, partition: int) -> str:
        """The transactional id faust commits ``topic``/``partition``'s offsets with."""
        tid = self.tids.get((topic, partition))
        if tid is None:
            group = self.app.assignor.group_for_topic(topic)
            tid = self.tids[(topic, partition)] = f"{self.app.conf.id}-{group}-{partition}"
        return tid

    async def publish(self, outputs: OutputBatch) -> None:
        """Queue every output of the batch, each in the transaction of its source partition,
        and acknowledge the events it came from in the same breath.

        Under ``exactly_once`` faust keeps one transactional producer per source partition and
        commits that partition's offsets with it; outputs written by the same producer are
        committed atomically with the offsets of the fixes they came from. (faust's own
        ``send`` picks the producer by the *output* partition, which is only right when every
        output topic has as many partitions as the source.) The records go as whole batches
        (:func:`geostream.kafka.send_batches`) and the events count as published (the commit
        takes :attr:`positions`' published offsets) under faust's lock of that transaction: a
        commit never covers records whose outputs are not in it (they would be lost after a
        crash). Outputs committed ahead of their offsets come again; the courier states skip
        them (:meth:`already_applied`).
        """
        faust_producer: Any = self.app.producer
        for tid, records in outputs.items():
            if not self.app.in_transaction:
                self.write_states(records)
                await self.send_records(faust_producer._ensure_producer(), records)
                self.published(records.events)
                continue
            producer = await self.transaction_producer(tid, records)
            if producer is None:
                # revoked meanwhile: the new owner processes these fixes again, from the
                # committed state, and so must this worker if the partition comes back
                log.info("partition of %s was revoked; dropping its outputs", tid)
                for key in records.states:
                    self.dirty.pop(key, None)
                    self.cache.pop(key, None)
                self.positions.forget({event.message.tp for event in records.events})
                continue
            self.write_states(records)
            async with faust_producer._trn_locks[tid]:
                await self.send_records(producer, records)
                self.published(records.events)

    def published(self, events: list[Any]) -> None:
        """Acknowledge ``events``, whose outputs are queued: a commit may cover them now."""
        for event in events:
            message = event.message
            self.positions.publish(message.tp, message.offset)
            event.ack()

    async def transaction_producer(
        self, tid: str, records: TopicRecords
    ) -> AIOKafkaProducer | None:
        """The transactional producer of ``tid``, once faust has started it after an
        assignment; ``None`` when the source partition is no longer this worker's."""
        faust_producer: Any = self.app.producer
        sources = {event.message.tp for event in records.events}
        began = time.monotonic()
        warned = False
        while True:
            producer: AIOKafkaProducer | None = faust_producer._transaction_producers.get(tid)
            if producer is not None:
                return producer
            if not sources & set(self.app.consumer.assignment()):
                return None
            waited = time.monotonic() - began
            if not warned and waited > 1.0:
                warned = True
                log.warning("waiting for faust's transactional producer %s", tid)
            if waited > PRODUCER_WAIT_S:
                raise RuntimeError(f"no transactional producer for {tid} after {PRODUCER_WAIT_S}s")
            await asyncio.sleep(0.05)

    async def send_records(self, producer: AIOKafkaProducer, records: TopicRecords) -> None:
        by_topic = list(records.topics.items())
        if records.latest:
            by_topic.append(("courier.latest", list(records.latest.items())))
        for name, pairs in by_topic:
            topic = self.output_names[name]
            count = self.partition_counts.get(topic)
            if count is None:
                count = self.partition_counts[topic] = len(await producer.partitions_for(topic))
            split: dict[int, list[tuple[bytes | None, bytes | None]]] = {}
            for key, value in pairs:
                split.setdefault(self.partition_for(key, count), []).append((key, value))
            for partition, part in split.items():
                await send_batches(producer, topic, partition, part)
        for partition, states in records.changelog.items():
            await send_batches(producer, self.changelog_topic, partition, states)

    def partition_for(self, key: bytes | None, count: int) -> int:
        """The default partitioner's choice for ``key`` (murmur2, as every Kafka client)."""
        if key is None:
            return 0
        hashed = self.key_hashes.get(key)
        if hashed is None:
            if len(self.key_hashes) > KEY_HASHES_MAX:
                self.key_hashes.clear()
            hashed = self.key_hashes[key] = murmur2(key) & 0x7FFFFFFF
        return hashed % count

    # timer -------------------------------------------------------------------------------------
    async def tick(self) -> None:
        """Ask each quiet courier's partition to close idle trips and release held fixes.

        Ticks go through a plain (non-transactional) producer: a timer runs outside any
        stream transaction, and a tick handled twice changes nothing. Partitions still behind
        on ``fixes.raw`` get no ticks: after downtime their couriers' next fixes are already
        waiting, and a tick overtaking them would split a trip that the data keeps open.
        """
        if self.tick_producer is None:
            self.tick_producer = create_producer(self.settings, client_id="geostream-ticks")
            await self.tick_producer.start()
        if self.rescan:
            self.rescan = False
            for key, raw in list(self.table.items()):
                try:
                    state = state_codec.loads(raw)
                except state_codec.StateError:
                    continue
                if state.seg.trip is not None or state.buffer:
                    self.idle[key] = self.partition_for(key, self.partitions)
        lagging = await self.lagging_partitions()
        now_ms = int(time.time() * 1000)
        settings = self.settings
        # held fixes are due after the shorter of their two bounds, an open trip after its gap
        held_ms = int(1000 * min(settings.reorder_window_s, settings.reorder_hold_s))
        gap_ms = int(1000 * settings.trip_max_gap_s)
        open_trips = 0
        for key, partition in list(self.idle.items()):
            cached = self.cache.get(key)
            if cached is not None:
                open_trips += cached.seg.trip is not None
                quiet_ms = held_ms if cached.buffer else gap_ms
                if now_ms - cached.last_received_ms < quiet_ms:
                    continue
            if partition in lagging:
                continue
            await self.tick_producer.send(
                self.ticks_topic, str(now_ms).encode(), key=key, partition=partition
            )
        self.metrics.open_trips.set(open_trips)

    async def lagging_partitions(self) -> set[int]:
        """Assigned ``fixes.raw`` partitions with records not yet fetched (or not yet known)."""
        consumer: Any = self.app.consumer
        lagging = set()
        for tp in consumer.assignment():
            if tp.topic != self.raw_topic:
                continue
            highwater = consumer.highwater(tp)
            position = await consumer.position(tp)
            if highwater is None or position is None or position < highwater:
                lagging.add(tp.partition)
        return lagging


async def ensure_topics(settings: Settings) -> None:
    """The pipeline's topics (configs from config/topics.yaml) and the worker's ticks topic."""
    from aiokafka.admin import NewTopic
    from aiokafka.errors import TopicAlreadyExistsError

    from geostream.kafka import admin_client

    await create_topics(settings)
    admin = admin_client(settings)
    await admin.start()
    try:
        ticks = f"{app_id(settings)}-ticks"
        if ticks not in await admin.list_topics():
            with contextlib.suppress(TopicAlreadyExistsError):
                await admin.create_topics(
                    [
                        NewTopic(
                            ticks,
                            settings.worker_partitions,
                            1,
                            topic_configs={"retention.ms": str(3_600_000)},
                        )
                    ]
                )
    finally:
        await admin.close()


async def align_changelog(settings: Settings, changelog_topic: str) -> None:
    """Give an existing changelog (made before :data:`CHANGELOG_CONFIG`) that config."""
    from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

    from geostream.kafka import admin_client

    admin = admin_client(settings)
    await admin.start()
    try:
        if changelog_topic in await admin.list_topics():
            await admin.alter_configs(
                [ConfigResource(ConfigResourceType.TOPIC, changelog_topic, CHANGELOG_CONFIG)]
            )
    finally:
        await admin.close()


async def anchor_offsets(settings: Settings) -> None:
    """Give each source partition the group never committed a committed offset: its start.

    When faust rebalances it drops the records it prefetched for paused partitions and seeks
    back to the committed offsets (:mod:`processors.consumer_seeks`); a partition without one
    is not rewound, and its first records were skipped (a new deployment's first fixes).
    Committed while the group is still empty; if another worker already runs the group, it
    refuses, and nothing changes.
    """
    from aiokafka.errors import KafkaError

    consumer = create_consumer(
        settings, group_id=app_id(settings), client_id="geostream-worker-anchor"
    )
    await consumer.start()
    try:
        sources = {
            topic_name(settings, "fixes.raw"): topic_specs(settings)["fixes.raw"].partitions,
            f"{app_id(settings)}-ticks": settings.worker_partitions,
        }
        tps = [TopicPartition(topic, p) for topic, n in sources.items() for p in range(n)]
        consumer.assign(tps)
        missing = [tp for tp in tps if await consumer.committed(tp) is None]
        if missing:
            starts = await consumer.beginning_offsets(missing)
            try:
                await consumer.commit({tp: starts[tp] for tp in missing})
            except KafkaError as exc:
                log.info("offsets not anchored (the group is active): %r", exc)
    finally:
        await consumer.stop()


def recover_to_the_broker_highwater() -> None:
    """Make faust's table recovery ask the broker how far each changelog partition goes.

    Under ``exactly_once`` faust takes a changelog partition's end from aiokafka's
    ``last_stable_offset``: the value seen in the consumer's last *fetch response* for it, so
    ``None`` for a partition just assigned and not fetched yet. faust reads that as "empty"
    and skips the partition's recovery: a worker taking a partition over found no states and
    started its couriers afresh (a fix held for reordering was lost, odometers restarted).
    A read_committed consumer's ``end_offsets`` is the same last stable offset, asked of the
    broker. Patched on faust's consumer class, once, for the one faust app of the process.
    """
    from faust.transport.drivers.aiokafka import AIOKafkaConsumerThread

    async def highwaters(self: Any, partitions: list[Any]) -> Any:
        return await self._ensure_consumer().end_offsets(partitions)

    AIOKafkaConsumerThread._highwaters = highwaters  # type: ignore[method-assign]


def create_app(settings: Settings) -> tuple[faust.App, Wiring]:
    """The faust app and its wiring, for ``settings`` (topic prefix, store, guarantee)."""
    ident = app_id(settings)
    (settings.worker_data_dir / ident).mkdir(parents=True, exist_ok=True)
    app = faust.App(
        ident,
        broker=f"kafka://{settings.kafka_bootstrap}",
        store=store_url(settings),
        datadir=str(settings.worker_data_dir / ident),
        topic_partitions=settings.worker_partitions,
        topic_replication_factor=1,
        table_standby_replicas=0,
        processing_guarantee=settings.worker_guarantee,
        broker_commit_interval=settings.worker_commit_interval_s,
        broker_session_timeout=settings.worker_session_timeout_s,
        broker_heartbeat_interval=settings.worker_session_timeout_s / 4,
        consumer_auto_offset_reset="earliest",
        producer_acks=-1,
        # outputs of many fixes per produce request (the transaction commit flushes anyway)
        producer_linger=0.05,
        producer_max_batch_size=PRODUCER_BATCH_BYTES,
        producer_compression_type=COMPRESSION_TYPE,
        # A revocation waits for the batches in hand and commits them, so the changelog that
        # recovery replays into the kept partitions' stores is never behind the worker.
        stream_wait_empty=True,
        web_enabled=False,
        key_serializer="raw",
        value_serializer="raw",
    )
    wiring = Wiring(app, settings)
    wiring.guard_store()
    recover_to_the_broker_highwater()
    consumer_seeks.install()
    eager_wait.install()

    @app.agent(wiring.source, name="process")
    async def process(stream: Any) -> None:
        async for events in stream.take_events(WORKER_BATCH_MAX, within=BATCH_WITHIN_S):
            await wiring.handle_batch(events)

    @app.timer(interval=settings.worker_idle_interval_s)  # type: ignore[untyped-decorator]
    async def idle_timer() -> None:
        await wiring.tick()

    # Its own timer, not the idle one (which may run rarely): the records a rebalance left
    # unread may be a partition's last for a while, and nothing else would read them again.
    @app.timer(interval=REREAD_INTERVAL_S)  # type: ignore[untyped-decorator]
    async def reread_timer() -> None:
        await wiring.reread()

    # Not on revocation: the (eager) rebalance protocol revokes every partition first, also
    # those the worker gets back, whose cached states stay right (see keep_partitions).
    @app.on_partitions_assigned.connect  # type: ignore[arg-type]
    async def on_assigned(app: Any, assigned: Any, **kwargs: Any) -> None:
        app.consumer._filter_committable_offsets = wiring.committable_offsets
        wiring.keep_partitions(assigned)

    @app.task  # type: ignore[untyped-decorator]
    async def startup() -> None:
        tune_gc()  # the app and its services exist by now: they are frozen too
        await ensure_topics(settings)
        await align_changelog(settings, wiring.changelog_topic)
        if settings.worker_metrics_port:
            start_http_server(
                settings.worker_metrics_port,
                addr=settings.worker_metrics_host,
                registry=wiring.metrics.registry,
            )

    return app, wiring


app, wiring = create_app(get_settings())


CLEAN_MARK = ".clean-shutdown"


def prepare_store(settings: Settings) -> None:
    """Drop the local rocksdb store unless the last run shut down cleanly.

    faust writes the rocksdb store as events are processed, outside the Kafka transaction, so
    after a hard kill it may hold state of events whose transaction was aborted and that will
    be processed again. The changelog topic holds only committed state: rebuilding from it
    keeps the state exactly in step with the committed offsets.
    """
    datadir = settings.worker_data_dir / app_id(settings)
    mark = datadir / CLEAN_MARK
    if mark.exists():
        mark.unlink()
        return
    if datadir.exists() and any(datadir.iterdir()) and settings.worker_store == "rocksdb":
        log.warning("last run did not stop cleanly; rebuilding state from the changelog")
        shutil.rmtree(datadir, ignore_errors=True)
    datadir.mkdir(parents=True, exist_ok=True)


def run_worker(loglevel: str = "info") -> int:
    """Run the worker in this process until it is stopped (SIGTERM/SIGINT)."""
    settings = wiring.settings
    prepare_store(settings)
    asyncio.run(ensure_topics(settings))
    asyncio.run(anchor_offsets(settings))
    worker = faust.Worker(app, loglevel=loglevel)
    # faust's terminal spinner (on at loglevel warning and above) sets the root logger to DEBUG
    # and spins on every record: aiokafka then builds a debug record per request sent.
    worker.spinner = None
    try:
        worker.execute_from_commandline()
    finally:
        (settings.worker_data_dir / app_id(settings) / CLEAN_MARK).touch()
    return 0

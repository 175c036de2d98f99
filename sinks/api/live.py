"""``/v1/live``: this org's position and event updates as Server-Sent Events, fed from Kafka.

One consumer per API process reads ``courier.latest`` and ``courier.events`` from their ends
(no consumer group: every API process sees every update; read_committed, so records of an
aborted worker transaction never reach a dispatcher) and hands each record to the
subscribers of its org. Records are keyed ``org/courier``, so records of orgs nobody is
watching are skipped without decoding; the org in the decoded record is what decides who gets
it. Each client has a bounded queue: one that falls behind is told (``event: overflow``) and
disconnected rather than slowing the feed or silently missing updates.

The parsing and formatting are pure functions; the consumer loop is the I/O edge.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

import orjson
from aiokafka import AIOKafkaConsumer
from aiokafka.errors import KafkaError

from config.settings import Settings
from geostream.kafka import assign_from_end, create_consumer, topic_name
from schemas.records import CourierEvent, EnrichedFix
from schemas.wire import WireError, courier_of_key, decode
from sinks.api.metrics import LIVE_CLIENTS, LIVE_EVENTS, LIVE_UNREADABLE

log = logging.getLogger("geostream.api.live")

LATEST_TOPIC = "courier.latest"
EVENTS_TOPIC = "courier.events"


def org_of_key(key: bytes | None) -> str | None:
    """The org of an ``org/courier`` record key (None for a key without one)."""
    if not key:
        return None
    org, sep, _ = key.partition(b"/")
    return org.decode(errors="replace") if sep and org else None


def sse_frame(event: str, data: dict[str, object], event_id: str | None = None) -> bytes:
    """One Server-Sent Events message."""
    head = f"event: {event}\n" + (f"id: {event_id}\n" if event_id else "")
    return head.encode() + b"data: " + orjson.dumps(data) + b"\n\n"


def position_update(fix: EnrichedFix) -> dict[str, object]:
    """What a dispatcher sees of a fix: the same fields as ``/v1/couriers/latest`` items."""
    return {
        "courier_id": fix.courier_id,
        "ts": fix.ts,
        "lat": fix.lat,
        "lon": fix.lon,
        "accuracy_m": fix.accuracy_m,
        "speed_mps": fix.speed_mps,
        "heading_deg": fix.heading_deg,
        "zone_ids": list(fix.zone_ids),
        "trip_id": fix.trip_id,
        "stop_id": fix.stop_id,
    }


def event_update(event: CourierEvent) -> dict[str, object]:
    return {
        "event_id": event.event_id,
        "courier_id": event.courier_id,
        "kind": event.kind,
        "ts": event.ts,
        "subject_id": event.subject_id,
        "lat": event.lat,
        "lon": event.lon,
    }


def erased_frame(key: bytes) -> bytes:
    """What a dispatcher is told when a courier is erased: drop it from the map."""
    courier = courier_of_key(key)
    return sse_frame("erased", {"courier_id": courier[1] if courier else ""})


def to_frame(logical_topic: str, value: bytes) -> tuple[str, bytes]:
    """(org, SSE frame) of a ``courier.latest`` or ``courier.events`` value; raises WireError."""
    if logical_topic == LATEST_TOPIC:
        fix = decode(EnrichedFix, value)
        return fix.org_id, sse_frame("position", position_update(fix), fix.fix_id)
    event = decode(CourierEvent, value)
    return event.org_id, sse_frame("event", event_update(event), event.event_id)


@dataclass(eq=False)
class Subscription:
    """One ``/v1/live`` client: its org, whose token it is, and a bounded queue of frames."""

    org_id: str
    queue: asyncio.Queue[bytes]
    overflowed: bool = False
    owner: str = ""


class TooManyStreams(Exception):
    """The token already has ``max_per_owner`` open streams."""


@dataclass
class LiveHub:
    """Subscribers by org; ``publish`` never blocks (a full queue marks the client overflowed).

    At most ``max_per_owner`` streams per token (0: no limit): each holds a queue of up to
    ``queue_size`` frames, so one token must not be able to open them without end."""

    queue_size: int
    max_per_owner: int = 0
    subscribers: dict[str, set[Subscription]] = field(default_factory=dict)
    per_owner: dict[str, int] = field(default_factory=dict)

    def watched(self, org_id: str | None) -> bool:
        return org_id is not None and org_id in self.subscribers

    def subscribe(self, org_id: str, owner: str = "") -> Subscription:
        held = self.per_owner.get(owner, 0)
        if owner and self.max_per_owner and held >= self.max_per_owner:
            raise TooManyStreams(f"{held} live streams are open with this token")
        subscription = Subscription(org_id, asyncio.Queue(self.queue_size), owner=owner)
        self.subscribers.setdefault(org_id, set()).add(subscription)
        if owner:
            self.per_owner[owner] = held + 1
        LIVE_CLIENTS.inc()
        return subscription

    def unsubscribe(self, subscription: Subscription) -> None:
        subs = self.subscribers.get(subscription.org_id)
        if subs is not None and subscription in subs:
            subs.discard(subscription)
            LIVE_CLIENTS.dec()
            if not subs:
                del self.subscribers[subscription.org_id]
            if subscription.owner:
                left = self.per_owner[subscription.owner] - 1
                if left:
                    self.per_owner[subscription.owner] = left
                else:
                    del self.per_owner[subscription.owner]

    def publish(self, org_id: str, frame: bytes) -> int:
        """Queue ``frame`` for the org's clients; returns how many got it."""
        delivered = 0
        for subscription in self.subscribers.get(org_id, ()):
            if subscription.overflowed:
                continue
            try:
                subscription.queue.put_nowait(frame)
                delivered += 1
            except asyncio.QueueFull:
                subscription.overflowed = True
        return delivered


async def stream(
    hub: LiveHub,
    subscription: Subscription,
    heartbeat_s: float,
    *,
    still_allowed: Callable[[], Awaitable[bool]] | None = None,
    recheck_s: float = 5.0,
) -> AsyncIterator[bytes]:
    """The body of one ``/v1/live`` response: ready, then updates, with heartbeat comments.

    Every ``recheck_s`` it asks ``still_allowed`` whether the token is still good; once it is
    not (revoked), the client gets ``event: revoked`` and the stream ends, as every other
    request of that token would get a 401 by then."""
    loop = asyncio.get_running_loop()
    try:
        yield sse_frame("ready", {"org_id": subscription.org_id})
        last_sent = next_check = loop.time()
        next_check += recheck_s
        while True:
            if subscription.overflowed:
                yield sse_frame("overflow", {"reason": "client_too_slow"})
                return
            now = loop.time()
            if still_allowed is not None and now >= next_check:
                if not await still_allowed():
                    yield sse_frame("revoked", {"reason": "token_revoked"})
                    return
                next_check = loop.time() + recheck_s
            wait = last_sent + heartbeat_s - now
            if still_allowed is not None:
                wait = min(wait, next_check - now)
            try:
                frame = await asyncio.wait_for(subscription.queue.get(), max(wait, 0.0))
            except TimeoutError:
                if loop.time() - last_sent >= heartbeat_s:
                    last_sent = loop.time()
                    yield b": keep-alive\n\n"
                continue
            LIVE_EVENTS.labels("event" if frame.startswith(b"event: event") else "position").inc()
            last_sent = loop.time()
            yield frame
    finally:
        hub.unsubscribe(subscription)


class LiveFeed:
    """The Kafka consumer behind the hub; ``ready`` is set once it reads from the topics' ends."""

    def __init__(self, settings: Settings, hub: LiveHub) -> None:
        self.settings = settings
        self.hub = hub
        self.ready = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._topics = {
            topic_name(settings, LATEST_TOPIC): LATEST_TOPIC,
            topic_name(settings, EVENTS_TOPIC): EVENTS_TOPIC,
        }

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="live-feed")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        """Connect (retrying with back-off while Kafka is away), then consume until cancelled."""
        backoff = 0.5
        while True:
            consumer = create_consumer(
                self.settings,
                group_id=None,
                auto_offset_reset="latest",
                client_id="geostream-api-live",
            )
            try:
                await consumer.start()
                await assign_from_end(self.settings, consumer, list(self._topics))
                self.ready.set()
                backoff = 0.5
                await self._consume(consumer)
            except (KafkaError, OSError) as exc:
                log.warning("live feed: %s; reconnecting in %.1fs", exc, backoff)
            except Exception:
                # Anything else must not end the feed for the process's lifetime either.
                log.exception("live feed failed; reconnecting in %.1fs", backoff)
            finally:
                await consumer.stop()
            self.ready.clear()
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, 15.0)

    async def _consume(self, consumer: AIOKafkaConsumer) -> None:
        while True:
            batches = await consumer.getmany(timeout_ms=500, max_records=2000)
            for tp, records in batches.items():
                logical = self._topics[tp.topic]
                for record in records:
                    org_id = org_of_key(record.key)
                    if not self.hub.watched(org_id):
                        continue
                    if record.value is None:  # an erasure's tombstone
                        if logical == LATEST_TOPIC and org_id is not None:
                            self.hub.publish(org_id, erased_frame(record.key))
                        continue
                    try:
                        org_id, frame = to_frame(logical, record.value)
                    except WireError as exc:
                        LIVE_UNREADABLE.inc()
                        log.debug("live feed: unreadable record on %s: %s", tp.topic, exc)
                        continue
                    self.hub.publish(org_id, frame)

"""The gateway's reader of ``privacy.requests``: an erased courier's tokens stop working at once.

The erasure revokes the courier's device tokens in the database, but a gateway answers from
its token cache for up to ``ingest_token_cache_ttl_s`` (and longer while the database is
down). Each gateway process therefore reads every erasure request as it is published and
drops the courier's cached tokens; the next request with one asks the database, which says
revoked (401).

It reads from the end, without a consumer group: a process that starts later has an empty
cache, so older requests do not concern it. (After a lost connection it starts from the end
again; requests published meanwhile were refused by Kafka too, and are repeated.)
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from aiokafka import AIOKafkaConsumer
from aiokafka.errors import KafkaError

from config.settings import Settings
from geostream.kafka import assign_from_end, create_consumer, topic_name
from geostream.tokens import TokenCache
from ingest.tokens import DeviceIdentity
from schemas.records import PrivacyRequest
from schemas.wire import WireError, decode

log = logging.getLogger("geostream.ingest.revocations")

RETRY_S = 2.0


class RevocationListener:
    """A task that forgets the cached tokens of each erased courier."""

    def __init__(self, settings: Settings, cache: TokenCache[DeviceIdentity]) -> None:
        self.settings = settings
        self.cache = cache
        self.ready = asyncio.Event()  # reading from the end of the topic
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="gateway-revocations")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    def apply(self, value: bytes | None) -> int:
        """Forget the tokens of the courier a request erases; returns how many."""
        if value is None:
            return 0
        try:
            request = decode(PrivacyRequest, value)
        except WireError as exc:
            log.warning("unreadable privacy request (%s)", exc.reason)
            return 0
        if request.kind != "delete":
            return 0
        courier = (request.org_id, request.courier_id)
        forgotten = self.cache.forget(lambda who: (who.org_id, who.courier_id) == courier)
        log.info("erasure %s: forgot %d cached tokens", request.request_id, forgotten)
        return forgotten

    async def _run(self) -> None:
        while True:
            consumer = create_consumer(
                self.settings, group_id=None, client_id="geostream-gateway-revocations"
            )
            try:
                await consumer.start()
                topic = topic_name(self.settings, "privacy.requests")
                await assign_from_end(self.settings, consumer, [topic])
                self.ready.set()
                await self._consume(consumer)
            except (KafkaError, OSError) as exc:
                log.warning("privacy.requests unreadable (%r); retrying in %.0fs", exc, RETRY_S)
            finally:
                with contextlib.suppress(Exception):
                    await consumer.stop()
            self.ready.clear()
            await asyncio.sleep(RETRY_S)

    async def _consume(self, consumer: AIOKafkaConsumer) -> None:
        while True:
            fetched = await consumer.getmany(timeout_ms=1000)
            for records in fetched.values():
                for record in records:
                    self.apply(record.value)

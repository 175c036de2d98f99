"""Device tokens (``gsd_`` + 256 random bits, :mod:`geostream.tokens`), resolved by the gateway.

The gateway caches resolutions (positive and negative) for ``ingest_token_cache_ttl_s``
seconds: a revoked token stops working within that time.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

from psycopg.errors import UniqueViolation
from psycopg_pool import AsyncConnectionPool
from pydantic import TypeAdapter, ValidationError

from geostream.tokens import TokenCache, hash_token, new_token
from schemas.records import Identifier
from schemas.wire import record_key

INSERT_DEVICE_ROW: Final = (
    "INSERT INTO device_tokens (token_hash, token_hint, org_id, courier_id, device_id)"
    " VALUES (%s, %s, %s, %s, %s)"
)
TOKEN_PREFIX: Final = "gsd_"  # noqa: S105 (a prefix, not a secret)
HINT_LENGTH: Final = 10


def new_device_token() -> str:
    """A fresh device token with 256 bits of entropy."""
    return new_token(TOKEN_PREFIX)


@dataclass(frozen=True, slots=True)
class DeviceIdentity:
    """Who a token speaks for; the gateway writes these into every fix, whatever the body says."""

    org_id: str
    courier_id: str
    device_id: str

    @property
    def key(self) -> bytes:
        """The Kafka key of this courier's fixes: courier scoped by org."""
        return record_key(self.org_id, self.courier_id)


class DeviceError(ValueError):
    """A create or revoke request that cannot be done (bad identifier, live device exists)."""


_IDENTIFIER: Final[TypeAdapter[str]] = TypeAdapter(Identifier)


def check_identifier(kind: str, value: str) -> str:
    """Validate an org, courier or device id with the records' own Identifier constraint."""
    try:
        return _IDENTIFIER.validate_python(value)
    except ValidationError as exc:
        raise DeviceError(f"invalid {kind} id {value!r}: {exc.errors()[0]['msg']}") from exc


class TokenStore:
    """The ``device_tokens`` table (migration 0002)."""

    def __init__(self, pool: AsyncConnectionPool) -> None:
        self.pool = pool

    async def create(
        self, org_id: str, courier_id: str, device_id: str, *, rotate: bool = False
    ) -> str:
        """Issue a token for a device; with ``rotate``, revoke the device's live token first.

        Returns the token, which exists nowhere else afterwards.
        """
        for kind, value in (("org", org_id), ("courier", courier_id), ("device", device_id)):
            check_identifier(kind, value)
        token = new_device_token()
        async with self.pool.connection() as conn, conn.transaction():
            if rotate:
                await conn.execute(
                    "UPDATE device_tokens SET revoked_at = now()"
                    " WHERE org_id = %s AND device_id = %s AND revoked_at IS NULL",
                    (org_id, device_id),
                )
            try:
                await conn.execute(
                    INSERT_DEVICE_ROW,
                    (hash_token(token), token[:HINT_LENGTH], org_id, courier_id, device_id),
                )
            except UniqueViolation as exc:
                raise DeviceError(
                    f"device {device_id!r} of org {org_id!r} already has a live token;"
                    " revoke it first or pass --rotate"
                ) from exc
        return token

    async def create_many(self, org_id: str, devices: Sequence[tuple[str, str]]) -> list[str]:
        """Tokens for many new ``(courier_id, device_id)`` of one org, in one transaction (a
        fleet enrolled at once; a device that has a live token fails the whole call)."""
        for courier_id, device_id in devices:
            check_identifier("courier", courier_id)
            check_identifier("device", device_id)
        check_identifier("org", org_id)
        tokens = [new_device_token() for _ in devices]
        rows = [
            (hash_token(token), token[:HINT_LENGTH], org_id, courier_id, device_id)
            for token, (courier_id, device_id) in zip(tokens, devices, strict=True)
        ]
        async with self.pool.connection() as conn, conn.transaction(), conn.cursor() as cursor:
            try:
                await cursor.executemany(INSERT_DEVICE_ROW, rows)
            except UniqueViolation as exc:
                raise DeviceError(f"a device of org {org_id!r} already has a live token") from exc
        return tokens

    async def revoke(
        self,
        org_id: str,
        *,
        device_id: str | None = None,
        courier_id: str | None = None,
        token: str | None = None,
    ) -> int:
        """Revoke the live tokens of a device, of a courier, or one token; returns how many."""
        if (device_id, courier_id, token).count(None) != 2:
            raise DeviceError("name exactly one of a device, a courier or a token")
        where, value = (
            ("device_id = %s", device_id)
            if device_id is not None
            else ("courier_id = %s", courier_id)
            if courier_id is not None
            else ("token_hash = %s", hash_token(token or ""))
        )
        async with self.pool.connection() as conn:
            cursor = await conn.execute(
                "UPDATE device_tokens SET revoked_at = now()"
                f" WHERE org_id = %s AND {where} AND revoked_at IS NULL",
                (org_id, value),
            )
            return cursor.rowcount

    async def delete_org(self, org_id: str) -> int:
        """Remove every token row of an org (benchmarks clean up their throwaway orgs)."""
        async with self.pool.connection() as conn:
            cursor = await conn.execute("DELETE FROM device_tokens WHERE org_id = %s", (org_id,))
            return cursor.rowcount

    async def lookup(self, token_hash: bytes) -> DeviceIdentity | None:
        """The identity of a live token, or None for an unknown or revoked one."""
        async with self.pool.connection() as conn:
            # the gateway's role may only ask (migration 0014), not read the table
            cursor = await conn.execute(
                "SELECT org_id, courier_id, device_id FROM device_for_token(%s)", (token_hash,)
            )
            row = await cursor.fetchone()
        return DeviceIdentity(*row) if row is not None else None


class TokenResolver:
    """What the gateway asks: which device does this bearer token belong to?"""

    #: The longest a lookup may take before the request is answered without it.
    LOOKUP_TIMEOUT_S = 2.0
    #: After a failed lookup, stale entries are served without asking for this long, so an
    #: outage costs each request nothing rather than a timeout.
    STORE_RETRY_S = 1.0

    def __init__(self, store: TokenStore, cache: TokenCache[DeviceIdentity]) -> None:
        self.store = store
        self.cache = cache
        self._store_down_until = float("-inf")

    async def resolve(self, token_hash: bytes) -> DeviceIdentity | None:
        """The device of a token (by :func:`~geostream.tokens.hash_token`); while the store
        cannot be asked, a stale cache entry (devices seen recently keep posting through a
        database outage: Kafka is the buffer)."""
        hit, identity = self.cache.get(token_hash)
        if hit:
            return identity
        if self.cache.clock() < self._store_down_until:
            hit, identity = self.cache.stale(token_hash)
            if hit:
                return identity
        try:
            identity = await asyncio.wait_for(self.store.lookup(token_hash), self.LOOKUP_TIMEOUT_S)
        except Exception:
            self._store_down_until = self.cache.clock() + self.STORE_RETRY_S
            hit, identity = self.cache.stale(token_hash)
            if hit:
                return identity
            raise
        self.cache.put(token_hash, identity)
        return identity

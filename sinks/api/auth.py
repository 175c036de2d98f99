"""Dispatcher tokens: issued once, stored as hashes, resolved per request through a short cache.

A token is 256 random bits (``gsa_`` + URL-safe base64); PostgreSQL keeps only its SHA-256
(:func:`geostream.tokens.hash_token`, as for device tokens), so a leaked table lets nobody
read positions. The owner role issues and revokes tokens (``geostream admin``); the API role
can only ask ``dispatcher_for_token(hash)`` who a token it was shown belongs to (migration
0010), never list the table.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final

from psycopg import AsyncConnection
from psycopg.errors import UniqueViolation

from geostream.tokens import TokenCache, hash_token, new_token
from sinks.isolation import IsolationError, check_org

TOKEN_PREFIX: Final = "gsa_"  # noqa: S105 (a prefix, not a secret)
HINT_LENGTH: Final = 10
_NAME = re.compile(r"^[A-Za-z0-9._:@-]{1,128}$")


class DispatcherError(ValueError):
    """A create or revoke request that cannot be done, with a message for the operator."""


@dataclass(frozen=True, slots=True)
class Dispatcher:
    """Who a bearer token speaks for: one dispatcher of one org."""

    org_id: str
    dispatcher_id: str
    is_operator: bool = False


def new_dispatcher_token() -> str:
    """A fresh dispatcher token with 256 bits of entropy."""
    return new_token(TOKEN_PREFIX)


def check_names(org_id: str, dispatcher_id: str) -> None:
    """Validate an org id and a dispatcher name (the records' Identifier pattern)."""
    try:
        check_org(org_id)
    except IsolationError as exc:
        raise DispatcherError(str(exc)) from exc
    if not _NAME.match(dispatcher_id):
        raise DispatcherError(
            f"invalid dispatcher name {dispatcher_id!r}: use 1-128 of A-Z a-z 0-9 . _ : @ -"
        )


async def create_dispatcher(
    conn: AsyncConnection[tuple[object, ...]],
    org_id: str,
    dispatcher_id: str,
    *,
    is_operator: bool = False,
    rotate: bool = False,
) -> str:
    """Issue a token (as the owner); with ``rotate``, revoke the dispatcher's live one first.

    Returns the token, which exists nowhere else afterwards.
    """
    check_names(org_id, dispatcher_id)
    token = new_dispatcher_token()
    async with conn.transaction():
        if rotate:
            await conn.execute(
                "UPDATE dispatcher_tokens SET revoked_at = now()"
                " WHERE org_id = %s AND dispatcher_id = %s AND revoked_at IS NULL",
                (org_id, dispatcher_id),
            )
        try:
            await conn.execute(
                "INSERT INTO dispatcher_tokens"
                " (token_hash, token_hint, org_id, dispatcher_id, is_operator)"
                " VALUES (%s, %s, %s, %s, %s)",
                (hash_token(token), token[:HINT_LENGTH], org_id, dispatcher_id, is_operator),
            )
        except UniqueViolation as exc:
            raise DispatcherError(
                f"dispatcher {dispatcher_id!r} of org {org_id!r} already has a live token;"
                " revoke it first or pass --rotate"
            ) from exc
    return token


async def revoke_dispatcher(
    conn: AsyncConnection[tuple[object, ...]],
    org_id: str,
    *,
    dispatcher_id: str | None = None,
    token: str | None = None,
) -> int:
    """Revoke a dispatcher's live token, or one token by its text; returns how many."""
    if (dispatcher_id is None) == (token is None):
        raise DispatcherError("name exactly one of a dispatcher or a token")
    where, value = (
        ("dispatcher_id = %s", dispatcher_id)
        if dispatcher_id is not None
        else ("token_hash = %s", hash_token(token or ""))
    )
    async with conn.transaction():
        cursor = await conn.execute(
            "UPDATE dispatcher_tokens SET revoked_at = now()"
            f" WHERE org_id = %s AND {where} AND revoked_at IS NULL",
            (org_id, value),
        )
    return cursor.rowcount


async def lookup_dispatcher(
    conn: AsyncConnection[tuple[object, ...]], token_hash: bytes
) -> Dispatcher | None:
    """The dispatcher of a live token (through the SECURITY DEFINER function), or None."""
    async with conn.transaction():
        cursor = await conn.execute(
            "SELECT org_id, dispatcher_id, is_operator FROM dispatcher_for_token(%s)",
            (token_hash,),
        )
        row = await cursor.fetchone()
    if row is None:
        return None
    org_id, dispatcher_id, is_operator = row
    return Dispatcher(str(org_id), str(dispatcher_id), bool(is_operator))


DispatcherCache = TokenCache[Dispatcher]

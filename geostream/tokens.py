"""Bearer tokens of devices and dispatchers: issued once, stored as hashes, cached briefly.

A token is 256 random bits behind a short prefix that says what it is for. PostgreSQL keeps
only its SHA-256, so a leaked table lets nobody in. Services cache resolutions (positive and
negative) for a few seconds: that bounds both the delay before a revocation bites and the
queries a flood of bad tokens can cause.
"""

from __future__ import annotations

import hashlib
import secrets
import time
from collections.abc import Callable
from typing import Generic, TypeVar

T = TypeVar("T")


def new_token(prefix: str) -> str:
    """A fresh token with 256 bits of entropy."""
    return prefix + secrets.token_urlsafe(32)


def hash_token(token: str) -> bytes:
    """What the database stores and services look up: SHA-256 of the token text."""
    return hashlib.sha256(token.encode()).digest()


class TokenCache(Generic[T]):
    """Token hash -> identity (or None: unknown/revoked) for ``ttl_s`` seconds, bounded in size.

    With ``ttl_s = 0`` nothing is cached and every request asks the database. An entry past
    its TTL is kept ``stale_s`` longer for :meth:`stale`: what a service may answer while the
    database cannot be asked (a revocation made just before an outage then bites at most
    ``ttl_s + stale_s`` late). When full, the entry refreshed longest ago makes room: a flood
    of new tokens pushes out one entry at a time, never the whole cache.
    """

    def __init__(
        self,
        ttl_s: float,
        max_entries: int = 100_000,
        clock: Callable[[], float] = time.monotonic,
        stale_s: float = 0.0,
    ) -> None:
        self.ttl_s = ttl_s
        self.stale_s = stale_s
        self.max_entries = max_entries
        self.clock = clock
        self._entries: dict[bytes, tuple[float, T | None]] = {}  # oldest refresh first

    def get(self, token_hash: bytes) -> tuple[bool, T | None]:
        """(hit, identity): a miss means "ask the database"."""
        entry = self._entries.get(token_hash)
        if entry is None:
            return False, None
        expires, identity = entry
        now = self.clock()
        if now >= expires:
            if now >= expires + self.stale_s:
                del self._entries[token_hash]
            return False, None
        return True, identity

    def knows(self, token_hash: bytes) -> bool:
        """Whether the token is cached as a live one (not as unknown or revoked)."""
        hit, identity = self.get(token_hash)
        return hit and identity is not None

    def stale(self, token_hash: bytes) -> tuple[bool, T | None]:
        """(hit, identity) of an entry at most ``stale_s`` past its TTL: for when the database
        cannot be asked."""
        entry = self._entries.get(token_hash)
        if entry is None or self.clock() >= entry[0] + self.stale_s:
            return False, None
        return True, entry[1]

    def forget(self, revoked: Callable[[T], bool]) -> int:
        """Drop every entry whose identity is ``revoked`` (stale ones too); returns how many."""
        gone = [h for h, (_, who) in self._entries.items() if who is not None and revoked(who)]
        for token_hash in gone:
            del self._entries[token_hash]
        return len(gone)

    def put(self, token_hash: bytes, identity: T | None) -> None:
        if self.ttl_s <= 0:
            return
        entries = self._entries
        entries.pop(token_hash, None)  # a refreshed entry moves to the end
        while len(entries) >= self.max_entries:
            del entries[next(iter(entries))]
        entries[token_hash] = (self.clock() + self.ttl_s, identity)

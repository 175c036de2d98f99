"""Token buckets: a key may spend ``burst`` at once, ``rate`` per second on average. Pure logic
with an injected clock. The gateway keeps one per device (requests) and, with the API, one per
client address (unknown tokens, spent before a database lookup can be asked for)."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(slots=True)
class Bucket:
    tokens: float
    updated: float


class RateLimiter:
    """Token bucket per key (the device); ``take`` answers 0 or the seconds until a token."""

    def __init__(
        self,
        rate_per_s: float,
        burst: float,
        clock: Callable[[], float] = time.monotonic,
        max_keys: int = 100_000,
    ) -> None:
        if rate_per_s <= 0 or burst < 1:
            raise ValueError("rate must be positive and burst at least 1")
        self.rate = rate_per_s
        self.burst = burst
        self.clock = clock
        self.max_keys = max_keys
        self._buckets: dict[object, Bucket] = {}

    def take(self, key: object, cost: float = 1.0) -> float:
        """Spend ``cost`` tokens of ``key``'s bucket: 0.0 when allowed, else the wait in seconds."""
        now = self.clock()
        bucket = self._buckets.get(key)
        if bucket is None:
            if len(self._buckets) >= self.max_keys:
                self._forget_full(now)
            bucket = self._buckets[key] = Bucket(self.burst, now)
        else:
            bucket.tokens = min(self.burst, bucket.tokens + (now - bucket.updated) * self.rate)
            bucket.updated = now
        if bucket.tokens >= cost:
            bucket.tokens -= cost
            return 0.0
        return (cost - bucket.tokens) / self.rate

    def wait(self, key: object, cost: float = 1.0) -> float:
        """What :meth:`take` would answer, without spending anything."""
        bucket = self._buckets.get(key)
        if bucket is None:
            return 0.0
        tokens = min(self.burst, bucket.tokens + (self.clock() - bucket.updated) * self.rate)
        return 0.0 if tokens >= cost else (cost - tokens) / self.rate

    def _forget_full(self, now: float) -> None:
        """Drop buckets that have refilled completely: they behave exactly like new ones."""
        refill = self.burst / self.rate
        self._buckets = {k: b for k, b in self._buckets.items() if now - b.updated < refill}
        if len(self._buckets) >= self.max_keys:
            self._buckets.clear()


def retry_after_header(wait_s: float) -> str:
    """``Retry-After`` wants whole seconds; never say 0 to a client that was refused."""
    return str(max(1, math.ceil(wait_s)))

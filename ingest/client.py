"""Talking to the gateway like a device does (aiohttp): the edge of simulate, replay and bench."""

from __future__ import annotations

import asyncio
import gzip
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import orjson

from config.settings import Settings


def gateway_url(settings: Settings, override: str | None = None) -> str:
    """The base URL clients post to: ``--url``, the ``ingest_url`` setting, or host and port."""
    if override:
        return override.rstrip("/")
    if settings.ingest_url:
        return settings.ingest_url.rstrip("/")
    host = "127.0.0.1" if settings.ingest_host in ("0.0.0.0", "::") else settings.ingest_host  # noqa: S104
    return f"http://{host}:{settings.ingest_port}"


@dataclass(frozen=True, slots=True)
class PostResult:
    """The gateway's answer to one request."""

    status: int
    accepted: int = 0
    rejected: tuple[dict[str, Any], ...] = ()
    warnings: tuple[Any, ...] = ()
    retry_after_s: float | None = None
    error: str | None = None


def encode_body(fixes: Sequence[dict[str, Any]], *, compress: bool = False) -> bytes:
    body = orjson.dumps({"fixes": fixes})
    return gzip.compress(body, compresslevel=5) if compress else body


class GatewayClient:
    """One HTTP session (connection pool) for many devices."""

    def __init__(self, base_url: str, *, connections: int = 64, timeout_s: float = 60.0) -> None:
        self.url = f"{base_url}/v1/fixes"
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=connections),
            timeout=aiohttp.ClientTimeout(total=timeout_s),
        )

    async def close(self) -> None:
        await self._session.close()

    async def __aenter__(self) -> GatewayClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def post_body(self, token: str, body: bytes, *, gzipped: bool = False) -> PostResult:
        """POST an already encoded body; network errors come back as status 0."""
        headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
        if gzipped:
            headers["Content-Encoding"] = "gzip"
        try:
            async with self._session.post(self.url, data=body, headers=headers) as response:
                payload = await response.read()
                retry_after = response.headers.get("Retry-After")
                status = response.status
        except (aiohttp.ClientError, TimeoutError) as exc:
            return PostResult(status=0, error=f"{type(exc).__name__}: {exc}", retry_after_s=1.0)
        try:
            document = orjson.loads(payload)
        except orjson.JSONDecodeError:
            document = {}
        if status == 200:
            return PostResult(
                status=200,
                accepted=int(document.get("accepted", 0)),
                rejected=tuple(document.get("rejected", ())),
                warnings=tuple(document.get("warnings", ())),
            )
        return PostResult(
            status=status,
            retry_after_s=float(retry_after) if retry_after else None,
            error=str(document.get("error", payload[:200])),
        )

    async def post(self, token: str, fixes: Sequence[dict[str, Any]]) -> PostResult:
        return await self.post_body(token, encode_body(fixes))

    async def post_until_stored(
        self,
        token: str,
        fixes: Sequence[dict[str, Any]],
        *,
        attempts: int = 20,
        stats: PostStats | None = None,
    ) -> PostResult:
        """What a phone does: keep the batch and retry after 429/503/network errors."""
        body = encode_body(fixes)
        result = PostResult(status=0, error="not sent")
        for _ in range(attempts):
            result = await self.post_body(token, body)
            if stats is not None:
                stats.record(result)
            if result.status not in (0, 429, 503):
                return result
            await asyncio.sleep(result.retry_after_s or 1.0)
        return result


@dataclass
class PostStats:
    """Running totals for progress lines and summaries."""

    requests: int = 0
    accepted: int = 0
    rejected: int = 0
    statuses: dict[int, int] = field(default_factory=dict)
    reasons: dict[str, int] = field(default_factory=dict)

    def record(self, result: PostResult) -> None:
        self.requests += 1
        self.statuses[result.status] = self.statuses.get(result.status, 0) + 1
        self.accepted += result.accepted
        self.rejected += len(result.rejected)
        for refusal in result.rejected:
            reason = str(refusal.get("reason"))
            self.reasons[reason] = self.reasons.get(reason, 0) + 1

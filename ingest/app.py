"""The device gateway as a plain ASGI application (no framework): routing, status codes, wiring.

The rules live elsewhere and are pure: :mod:`ingest.validation` (per-fix checks),
:mod:`ingest.ratelimit` (token buckets), :mod:`ingest.encoding` (IngestedFix JSON),
:mod:`ingest.body` (capped reading and inflating). This module only puts them in order:

401 token -> 429 rate -> 415 content type/encoding -> 413 Content-Length -> read body (413) ->
inflate (413/400) -> parse (400) -> shape (400) -> batch size (413) -> validate each fix ->
produce and wait for acks (503) -> 200.
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import orjson
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from config.settings import Settings
from geostream.db import create_pool, service_database_url
from geostream.tokens import TokenCache, hash_token
from ingest.body import BadEncoding, BodyTooLarge, ClientGone, gunzip_capped, read_capped
from ingest.encoding import encode_ingested
from ingest.metrics import IngestMetrics
from ingest.producer import FixProducer, KafkaUnavailable
from ingest.ratelimit import RateLimiter, retry_after_header
from ingest.revocations import RevocationListener
from ingest.tokens import DeviceIdentity, TokenResolver, TokenStore
from ingest.validation import TimeLimits, unstorable, validate_batch

log = logging.getLogger("geostream.ingest")

Scope = dict[str, Any]
Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
Headers = list[tuple[bytes, bytes]]

FIXES_PATH = "/v1/fixes"
#: Most warnings in one answer (then one ``warnings_truncated`` with the count of the rest).
MAX_WARNINGS = 20
JSON_TYPES = frozenset({b"application/json"})


def printable(name: str) -> str:
    """A client's key as the answer can carry it (a lone surrogate escaped, not a 500)."""
    return name.encode("utf-8", "backslashreplace").decode() if unstorable(name) else name


class Reply(Exception):
    """A whole-request answer other than 200, raised from anywhere in the request pipeline."""

    def __init__(
        self,
        status: int,
        error: str,
        detail: str,
        headers: Headers | None = None,
        close: bool = False,
    ) -> None:
        super().__init__(f"{status} {error}: {detail}")
        self.status = status
        self.error = error
        self.detail = detail
        self.headers = headers or []
        self.close = close


def _header(scope: Scope, name: bytes) -> bytes | None:
    for key, value in scope["headers"]:
        if key == name:
            return bytes(value)
    return None


def parse_json(body: bytes) -> Any:
    """orjson first; JSON with NaN/Infinity (which orjson refuses) falls back to the stdlib so
    that such a fix is refused alone with ``not_finite`` instead of failing the request."""
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        pass
    try:
        return json.loads(body)
    except (ValueError, RecursionError) as exc:
        raise Reply(400, "malformed_json", f"body is not JSON: {exc}") from exc


UNREAD_BODY_CLOSE_BYTES = 64 * 1024


def _large_body(scope: Scope) -> bool:
    """A body worth closing the connection for: chunked, or declared over 64 KiB."""
    length = _header(scope, b"content-length")
    if length is None:
        return _header(scope, b"transfer-encoding") is not None
    try:
        return int(length) > UNREAD_BODY_CLOSE_BYTES
    except ValueError:
        return True


class Gateway:
    """``POST /v1/fixes``, ``/healthz``, ``/readyz`` and ``/metrics`` for one process."""

    def __init__(
        self,
        settings: Settings,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self.clock = clock
        self.limits = TimeLimits(settings.ingest_future_tolerance_s, settings.ingest_max_age_s)
        self.metrics = IngestMetrics()
        self.rates = RateLimiter(settings.ingest_rate_per_s, settings.ingest_rate_burst)
        self.auth_failures = RateLimiter(settings.auth_failures_per_s, settings.auth_failures_burst)
        self.producer = FixProducer(settings)
        self.pool = create_pool(settings, service_database_url(settings, "gateway"))
        cache = TokenCache[DeviceIdentity](
            settings.ingest_token_cache_ttl_s, stale_s=settings.ingest_token_stale_s
        )
        self.tokens = TokenResolver(TokenStore(self.pool), cache)
        self.revocations = RevocationListener(settings, cache)

    # Lifecycle -------------------------------------------------------------------------------

    async def startup(self) -> None:
        await self.pool.open(wait=False)
        await self.producer.start()
        self.revocations.start()

    async def shutdown(self) -> None:
        await self.revocations.stop()
        await self.producer.stop()
        await self.pool.close()

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    await self.startup()
                except Exception as exc:
                    log.exception("gateway startup failed")
                    await send({"type": "lifespan.startup.failed", "message": repr(exc)})
                    return
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.shutdown()
                await send({"type": "lifespan.shutdown.complete"})
                return

    # ASGI ------------------------------------------------------------------------------------

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        path, method = scope["path"], scope["method"]
        if path == FIXES_PATH:
            if method != "POST":
                await self._error(send, path, Reply(405, "method_not_allowed", "use POST"))
                return
            self.metrics.in_flight.inc()
            try:
                await self._post_fixes(scope, receive, send)
            finally:
                self.metrics.in_flight.dec()
        elif path == "/healthz":
            await self._json(send, path, 200, {"status": "alive"})
        elif path == "/readyz":
            await self._readyz(send)
        elif path == "/metrics":
            await self._respond(
                send,
                path,
                200,
                generate_latest(self.metrics.registry),
                [(b"content-type", CONTENT_TYPE_LATEST.encode())],
            )
        else:
            await self._error(send, path, Reply(404, "not_found", f"no route {path}"))

    async def _readyz(self, send: Send) -> None:
        kafka_ok, kafka_detail = await self.producer.ready()
        await self._json(
            send,
            "/readyz",
            200 if kafka_ok else 503,
            {
                "status": "ready" if kafka_ok else "not_ready",
                "kafka": {"ok": kafka_ok, "detail": kafka_detail, "topic": self.producer.topic},
            },
        )

    # POST /v1/fixes --------------------------------------------------------------------------

    async def _post_fixes(self, scope: Scope, receive: Receive, send: Send) -> None:
        body_read = False

        async def receive_tracked() -> Message:
            nonlocal body_read
            message = await receive()
            body_read = message["type"] != "http.request" or not message.get("more_body", False)
            return message

        try:
            answer = await self._ingest(scope, receive_tracked)
        except Reply as reply:
            # Refused before a large body arrived (401, 429, 415, 413): close the connection
            # rather than let the server read and discard the rest of it. Small bodies are
            # cheaper to drain than a reconnect, so keep-alive survives those.
            reply.close = reply.close or (not body_read and _large_body(scope))
            await self._error(send, FIXES_PATH, reply)
            return
        except ClientGone:
            self.metrics.requests.labels(FIXES_PATH, "499").inc()
            return
        await self._json(send, FIXES_PATH, 200, answer)

    async def _ingest(self, scope: Scope, receive: Receive) -> dict[str, Any]:
        identity = await self._authenticate(scope)
        wait = self.rates.take(identity)
        if wait > 0:
            raise Reply(
                429,
                "rate_limited",
                f"device {identity.device_id} is over {self.settings.ingest_rate_per_s}/s",
                [(b"retry-after", retry_after_header(wait).encode())],
            )
        gzipped = self._check_content_headers(scope)
        body = await self._read_body(scope, receive)
        if gzipped:
            try:
                body = gunzip_capped(body, self.settings.ingest_max_decompressed_bytes)
            except BodyTooLarge as exc:
                raise Reply(413, "body_too_large", str(exc)) from exc
            except BadEncoding as exc:
                raise Reply(400, "bad_gzip", str(exc)) from exc
        document = parse_json(body)
        if type(document) is not dict or type(document.get("fixes")) is not list:
            raise Reply(400, "bad_shape", 'body must be an object {"fixes": [...]}')
        fixes: list[Any] = document["fixes"]
        self.metrics.batch_size.observe(len(fixes))
        if len(fixes) > self.settings.ingest_max_batch_fixes:
            raise Reply(
                413,
                "too_many_fixes",
                f"{len(fixes)} fixes, at most {self.settings.ingest_max_batch_fixes} per request",
            )
        received_at = datetime.now(UTC)
        verdict = validate_batch(fixes, self.clock(), self.limits)
        values = encode_ingested(verdict.accepted, identity, received_at)
        if values:
            try:
                took = await self.producer.produce(identity.key, values)
            except KafkaUnavailable as exc:
                log.warning("answering 503: %s", exc)
                raise Reply(
                    503,
                    exc.reason,
                    "fixes not stored; retry the same request later",
                    [(b"retry-after", str(self.settings.ingest_retry_after_s).encode())],
                ) from exc
            self.metrics.produce_seconds.observe(took)
            self.metrics.fixes_accepted.inc(len(values))
        for refusal in verdict.refused:
            self.metrics.fixes_rejected.labels(refusal.reason).inc()
        warnings = self._warnings(document, verdict.unknown_fields)
        return {
            "accepted": len(values),
            "rejected": [r.as_json() for r in verdict.refused],
            "warnings": warnings,
        }

    def _warnings(self, document: dict[str, Any], unknown: dict[str, int]) -> list[Any]:
        """The dropped fields, once per name with its count: data minimisation made visible.

        At most :data:`MAX_WARNINGS` names, then one ``warnings_truncated`` entry with the count
        of the rest: a body of many distinct names must not buy an answer many times its size
        (a 0.9 MB gzip body got a 46 MB answer)."""
        warnings: list[Any] = [
            {
                "code": "unknown_field_dropped",
                "where": "request",
                "field": name,
                "detail": "the device token decides org, courier and device"
                if name in ("org_id", "courier_id", "device_id", "org", "courier", "device")
                else "not part of the request schema",
            }
            for name in map(printable, document)
            if name != "fixes"
        ]
        warnings += [
            {"code": "unknown_field_dropped", "where": "fix", "field": printable(name), "count": n}
            for name, n in sorted(unknown.items())
        ]
        dropped = sum(unknown.values()) + len(document) - 1
        if dropped:
            self.metrics.unknown_fields.inc(dropped)
        if len(warnings) > MAX_WARNINGS:
            rest = len(warnings) - MAX_WARNINGS
            warnings = warnings[:MAX_WARNINGS]
            warnings.append({"code": "warnings_truncated", "count": rest})
        return warnings

    async def _authenticate(self, scope: Scope) -> DeviceIdentity:
        challenge = [(b"www-authenticate", b'Bearer realm="geostream"')]
        header = _header(scope, b"authorization")
        if header is None:
            raise Reply(401, "missing_token", "send Authorization: Bearer <token>", challenge)
        scheme, _, token = header.decode("latin-1").partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            raise Reply(401, "missing_token", "send Authorization: Bearer <token>", challenge)
        # A client that keeps presenting unknown tokens is refused before the lookup: a flood
        # of made-up tokens must not reach the database. Tokens the cache knows are exempt.
        client = (scope.get("client") or ("",))[0]
        token_hash = hash_token(token)
        if not self.tokens.cache.knows(token_hash):
            wait = self.auth_failures.wait(client)
            if wait > 0:
                self.metrics.auth_refused.inc()
                raise Reply(
                    429,
                    "too_many_invalid_tokens",
                    "too many unknown or revoked tokens from this address",
                    [(b"retry-after", retry_after_header(wait).encode())],
                )
        try:
            identity = await self.tokens.resolve(token_hash)
        except Exception as exc:  # the token store is down: not the device's fault
            log.warning("token lookup failed: %r", exc)
            raise Reply(
                503,
                "token_store_unavailable",
                "cannot check the token now",
                [(b"retry-after", str(self.settings.ingest_retry_after_s).encode())],
            ) from exc
        if identity is None:
            self.auth_failures.take(client)
            raise Reply(401, "invalid_token", "unknown or revoked token", challenge)
        return identity

    def _check_content_headers(self, scope: Scope) -> bool:
        """415 unless JSON; returns whether the body is gzip."""
        content_type = _header(scope, b"content-type") or b""
        media = content_type.split(b";", 1)[0].strip().lower()
        if media not in JSON_TYPES:
            raise Reply(415, "unsupported_media_type", "Content-Type must be application/json")
        encoding = (_header(scope, b"content-encoding") or b"identity").strip().lower()
        if encoding not in (b"identity", b"gzip"):
            raise Reply(415, "unsupported_encoding", "Content-Encoding must be gzip or absent")
        return encoding == b"gzip"

    async def _read_body(self, scope: Scope, receive: Receive) -> bytes:
        limit = self.settings.ingest_max_body_bytes
        length = _header(scope, b"content-length")
        if length is not None:
            try:
                declared = int(length)
            except ValueError as exc:
                raise Reply(400, "bad_content_length", "Content-Length is not a number") from exc
            if declared > limit:
                # Answer at once and close: the rest of the body is never read.
                raise Reply(413, "body_too_large", f"{declared} bytes, at most {limit}", close=True)
        try:
            return await read_capped(receive, limit)
        except BodyTooLarge as exc:
            raise Reply(413, "body_too_large", f"body over {limit} bytes", close=True) from exc

    # Responses -------------------------------------------------------------------------------

    async def _error(self, send: Send, path: str, reply: Reply) -> None:
        headers = list(reply.headers)
        if reply.close:
            headers.append((b"connection", b"close"))
        await self._json(
            send, path, reply.status, {"error": reply.error, "detail": reply.detail}, headers
        )

    async def _json(
        self,
        send: Send,
        path: str,
        status: int,
        document: object,
        headers: Headers | None = None,
    ) -> None:
        await self._respond(
            send,
            path,
            status,
            orjson.dumps(document),
            [(b"content-type", b"application/json"), *(headers or [])],
        )

    async def _respond(
        self, send: Send, path: str, status: int, body: bytes, headers: Headers
    ) -> None:
        self.metrics.requests.labels(path if path in _PATHS else "other", str(status)).inc()
        headers.append((b"content-length", str(len(body)).encode()))
        with contextlib.suppress(OSError):
            await send({"type": "http.response.start", "status": status, "headers": headers})
            await send({"type": "http.response.body", "body": body})


_PATHS = frozenset({FIXES_PATH, "/healthz", "/readyz", "/metrics"})

"""Request bodies under a cap: read from ASGI without buffering more than the limit, and gunzip
without inflating more than the limit (a few KiB of gzip can inflate to gigabytes)."""

from __future__ import annotations

import zlib
from collections.abc import Awaitable, Callable
from typing import Any

Receive = Callable[[], Awaitable[dict[str, Any]]]


class BodyTooLarge(Exception):
    """The body (on the wire or inflated) is over its limit: 413."""


class BadEncoding(Exception):
    """The body claims gzip but is not valid gzip: 400."""


class ClientGone(Exception):
    """The client disconnected before sending the whole body."""


async def read_capped(receive: Receive, limit: int) -> bytes:
    """The whole body, or :class:`BodyTooLarge` as soon as more than ``limit`` bytes arrived."""
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientGone
        chunk: bytes = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge(f"body over {limit} bytes")
        if chunk:
            chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


def gunzip_capped(data: bytes, limit: int) -> bytes:
    """Inflate a gzip body, stopping with :class:`BodyTooLarge` once past ``limit`` bytes."""
    inflater = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
    try:
        out = inflater.decompress(data, limit + 1)
        if len(out) > limit or inflater.unconsumed_tail:
            raise BodyTooLarge(f"inflated body over {limit} bytes")
        if not inflater.eof:
            raise BadEncoding("truncated gzip stream")
    except zlib.error as exc:
        raise BadEncoding(f"invalid gzip: {exc}") from exc
    return out

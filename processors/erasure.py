"""The worker's part of a courier's erasure (see :mod:`sinks.erasure`). Pure.

The erasure request reaches the worker inside the courier's ``fixes.raw`` partition, so every
fix queued before it has been processed when it arrives, and every fix of a device enrolled
afterwards comes after it. What may still follow it from before the erasure is a fix the
gateway received earlier but whose write to Kafka took longer: the worker keeps the request's
time under :func:`marker_key` in its table and drops a fix received at or before it.
"""

from __future__ import annotations

from collections.abc import Sequence

from processors._cleaning import epoch_ms
from schemas.records import IngestedFix

#: The header (and value) that marks an erasure request in ``fixes.raw``.
HEADER_NAME = "geostream-record"
HEADER_VALUE = b"privacy.request"
#: Output topics that get a tombstone (a record with no value) keyed by the erased courier:
#: the sink drops the courier's records from each until it passes that tombstone.
TOMBSTONED_TOPICS = ("fixes.clean", "stops", "trips", "courier.events")
_MARKER_PREFIX = b"\x00erased:"


def is_erasure(headers: Sequence[tuple[str, bytes]] | None) -> bool:
    """Whether a ``fixes.raw`` record with these headers is an erasure request."""
    return bool(headers) and any(
        name == HEADER_NAME and value == HEADER_VALUE for name, value in headers or ()
    )


def marker_key(key: bytes) -> bytes:
    """The table key under which the erasure time of courier ``key`` is kept. No courier
    key starts with a NUL (ids are ``[A-Za-z0-9._:@-]``), so the two never meet."""
    return _MARKER_PREFIX + key


def is_marker_key(key: bytes) -> bool:
    return key.startswith(_MARKER_PREFIX)


def encode_marker(erased_ms: int) -> bytes:
    return str(erased_ms).encode()


def decode_marker(value: bytes | None) -> int | None:
    """The erasure time in a marker value (None for no marker, or an unreadable one)."""
    if not value:
        return None
    try:
        return int(value)
    except ValueError:
        return None


def received_after(fixes: list[IngestedFix], erased_ms: int) -> list[IngestedFix]:
    """The fixes the gateway received after the erasure at ``erased_ms``."""
    return [fix for fix in fixes if epoch_ms(fix.received_at) > erased_ms]

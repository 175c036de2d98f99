"""Deterministic identities: the same courier and start time always give the same id.

Reprocessing after a crash re-emits records with the ids they had, so the sink can upsert.
"""

from __future__ import annotations

import hashlib
import uuid

_NAMESPACE = uuid.UUID("6f1d3c2e-4b7a-5e10-9c3d-2a8b7e6f5d40")
_PREFIX = _NAMESPACE.bytes


def derived_id(org_id: str, courier_id: str, kind: str, subject: str, ts_ms: int) -> str:
    """A UUID (version 5) of org, courier, kind, subject and a millisecond timestamp.

    ``str(uuid.uuid5(_NAMESPACE, name))``, spelled out (RFC 4122: SHA-1 of namespace and
    name, version and variant bits set) without the UUID object: 1.4 µs instead of 3.7, and
    the worker makes one for every event, stop and trip.
    """
    name = f"{org_id}/{courier_id}/{kind}/{subject}/{ts_ms}"
    digest = hashlib.sha1(_PREFIX + name.encode(), usedforsecurity=False).digest()
    b = bytearray(digest[:16])
    b[6] = (b[6] & 0x0F) | 0x50  # version 5
    b[8] = (b[8] & 0x3F) | 0x80  # variant RFC 4122
    h = b.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def stop_id(org_id: str, courier_id: str, start_ms: int) -> str:
    return derived_id(org_id, courier_id, "stop", "", start_ms)


def trip_id(org_id: str, courier_id: str, start_ms: int) -> str:
    return derived_id(org_id, courier_id, "trip", "", start_ms)


def event_id(org_id: str, courier_id: str, kind: str, subject: str, ts_ms: int) -> str:
    return derived_id(org_id, courier_id, kind, subject, ts_ms)

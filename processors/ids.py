"""Deterministic identities: the same courier and start time always give the same id.

Reprocessing after a crash re-emits records with the ids they had, so the sink can upsert.
"""

from __future__ import annotations

import uuid

_NAMESPACE = uuid.UUID("6f1d3c2e-4b7a-5e10-9c3d-2a8b7e6f5d40")


def derived_id(org_id: str, courier_id: str, kind: str, subject: str, ts_ms: int) -> str:
    """A UUID (version 5) of org, courier, kind, subject and a millisecond timestamp."""
    return str(uuid.uuid5(_NAMESPACE, f"{org_id}/{courier_id}/{kind}/{subject}/{ts_ms}"))


def stop_id(org_id: str, courier_id: str, start_ms: int) -> str:
    return derived_id(org_id, courier_id, "stop", "", start_ms)


def trip_id(org_id: str, courier_id: str, start_ms: int) -> str:
    return derived_id(org_id, courier_id, "trip", "", start_ms)


def event_id(org_id: str, courier_id: str, kind: str, subject: str, ts_ms: int) -> str:
    return derived_id(org_id, courier_id, kind, subject, ts_ms)

"""orjson on the wire: encoding and validated decoding of the v1 records."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, TypeVar

import orjson
from pydantic import TypeAdapter, ValidationError

T = TypeVar("T")


class WireError(ValueError):
    """Bytes that are not a valid record; ``reason`` is a machine-readable code."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


_ADAPTERS: dict[type, TypeAdapter[Any]] = {}


def adapter(record_type: type[T]) -> TypeAdapter[T]:
    """The (cached) pydantic adapter that validates and describes ``record_type``."""
    cached = _ADAPTERS.get(record_type)
    if cached is None:
        cached = _ADAPTERS[record_type] = TypeAdapter(record_type)
    return cached


def encode(record: object) -> bytes:
    """Serialise a record (a dataclass of :mod:`schemas.records`) to JSON bytes.

    orjson writes dataclasses and aware datetimes (RFC 3339) natively, so this is one C call.
    """
    return orjson.dumps(record)


def decode(record_type: type[T], data: bytes | str) -> T:
    """Parse and validate JSON bytes as ``record_type``."""
    try:
        raw: Any = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise WireError("malformed_json", str(exc)) from exc
    return validate(record_type, raw)


def validate(record_type: type[T], raw: Any) -> T:
    """Validate an already parsed JSON value as ``record_type``."""
    try:
        return adapter(record_type).validate_python(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "record"
        raise WireError(f"invalid_{first['type']}", f"{where}: {first['msg']}") from exc


def encode_array(values: Sequence[bytes]) -> bytes:
    """Records already encoded by :func:`encode`, as one JSON array (see :func:`decode_many`)."""
    return b"[" + b",".join(values) + b"]"


def decode_many(record_type: type[T], data: bytes) -> list[T | WireError]:
    """One record, or a JSON array of records, each validated on its own.

    ``fixes.raw`` carries up to a request's worth of fixes in one Kafka value: per-record
    broker and framework costs then amortise over the array. One bad element must not cost
    the others, so a failed whole-array validation falls back to element by element.
    Raises :class:`WireError` only for a value that is neither an object nor an array.
    """
    try:
        if data[:1] == b"[":
            return list(adapter(list[record_type]).validate_json(data))  # type: ignore[valid-type]
        return [adapter(record_type).validate_json(data)]
    except ValidationError:
        pass  # name the reasons, element by element
    try:
        raw: Any = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise WireError("malformed_json", str(exc)) from exc
    if isinstance(raw, dict):
        raw = [raw]
    elif not isinstance(raw, list):
        raise WireError("invalid_type", "record: a JSON object or an array of objects")
    out: list[T | WireError] = []
    for item in raw:
        try:
            out.append(validate(record_type, item))
        except WireError as exc:
            out.append(exc)
    return out


def record_key(org_id: str, courier_id: str) -> bytes:
    """The Kafka key of every record about a courier: ``org/courier``, so a courier's records
    share a partition in every topic (ids are ``[A-Za-z0-9._:@-]``, never a ``/``)."""
    return f"{org_id}/{courier_id}".encode()


def courier_of_key(key: bytes | None) -> tuple[str, str] | None:
    """``(org_id, courier_id)`` of a :func:`record_key` (None for any other key)."""
    org, sep, courier = (key or b"").decode(errors="replace").partition("/")
    return (org, courier) if sep and org and courier else None

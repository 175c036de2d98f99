"""Kafka message -> staged row, or a machine-readable reason why it never can be. Pure.

This is the sink's per-record CPU cost (most of the process's time at 100k records a second),
so the hot path does one pydantic call per message and builds no record object: the validator
is the record dataclass's own (derived from its ``TypeAdapter``, so the schema stays defined
once in :mod:`schemas.records`) minus the final step that instantiates the dataclass; the
validated fields go straight into the row tuple. Only a message that fails takes the slower
wire decoder, which names the dead-letter reason.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from functools import cache
from typing import Any, cast

from pydantic import ValidationError
from pydantic_core import CoreConfig, SchemaValidator

from schemas.wire import WireError, adapter, decode
from sinks.rows import POSITIONS, TOPIC_TABLES, Row, Table, record_fields

RowDecoder = Callable[[bytes | None], Row]
RECEIVED_AT = POSITIONS.columns.index("received_at")


class Unwritable(ValueError):
    """A record the sink can never write; ``reason`` is the dead-letter reason code."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


@cache
def fields_validator(record_type: type) -> SchemaValidator:
    """The validator of ``record_type``'s fields: the dataclass's own checks, returning
    ``(fields, None)`` instead of an instance (building the frozen, slotted instance cost a
    sixth of the decode, and the sink only reads it once to build the row)."""
    schema: Any = adapter(record_type).core_schema
    if schema["type"] != "dataclass" or schema["schema"]["type"] != "dataclass-args":
        raise TypeError(f"{record_type.__name__} is not a plain record dataclass")
    # Caching short strings pays for ids that repeat, not for unique fix ids: keys only.
    config = cast(CoreConfig, {**schema.get("config", {}), "cache_strings": "keys"})
    return SchemaValidator(schema["schema"], config)


@cache
def row_decoder(table: Table) -> RowDecoder:
    """A function: message value -> ``table``'s row; raises :class:`Unwritable`.

    Reasons: the wire decoder's (``malformed_json``, ``invalid_<pydantic error>``),
    ``empty_value``, or ``unmappable_record`` when the fields cannot make a row.
    """
    validate_json = fields_validator(table.record_type).validate_json
    from_fields = table.from_fields
    record_type = table.record_type

    def decode_row(value: bytes | None) -> Row:
        if not value:
            raise Unwritable("empty_value", "message has no value (tombstone?)")
        try:
            # pydantic parses and validates the bytes in one pass (faster than orjson + python
            # validation); on failure the wire decoder names the reason, so the codes are its.
            fields = validate_json(value)[0]
        except ValidationError:
            try:
                fields = record_fields(decode(record_type, value))
            except WireError as exc:
                raise Unwritable(exc.reason, exc.detail) from exc
        try:
            return from_fields(fields)
        except (ValueError, TypeError) as exc:
            raise Unwritable("unmappable_record", str(exc)) from exc

    return decode_row


@dataclass(frozen=True, slots=True)
class Decoded:
    table: Table
    row: Row
    received_at: datetime | None  # clean fixes only: the start of the end-to-end latency


def decode_message(logical_topic: str, value: bytes | None) -> Decoded:
    """Decode and validate one message of ``logical_topic`` and map it to its row.

    Raises :class:`Unwritable` with the reasons of :func:`row_decoder`, or ``unknown_topic``.
    """
    table = TOPIC_TABLES.get(logical_topic)
    if table is None:
        raise Unwritable("unknown_topic", f"the sink does not read {logical_topic!r}")
    row = row_decoder(table)(value)
    return Decoded(table, row, row[RECEIVED_AT] if table is POSITIONS else None)

"""Kafka message -> staged row, or a machine-readable reason why it never can be. Pure."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from pydantic import ValidationError

from schemas.records import EnrichedFix
from schemas.wire import WireError, adapter, decode
from sinks.rows import TOPIC_TABLES, Row, Table


class Unwritable(ValueError):
    """A record the sink can never write; ``reason`` is the dead-letter reason code."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True, slots=True)
class Decoded:
    table: Table
    row: Row
    received_at: datetime | None  # clean fixes only: the start of the end-to-end latency


def decode_message(logical_topic: str, value: bytes | None) -> Decoded:
    """Decode and validate one message of ``logical_topic`` and map it to its row.

    Raises :class:`Unwritable` with the wire reason (``malformed_json``, ``invalid_...``) or
    ``empty_value`` / ``unknown_topic`` / ``unmappable_record``.
    """
    table = TOPIC_TABLES.get(logical_topic)
    if table is None:
        raise Unwritable("unknown_topic", f"the sink does not read {logical_topic!r}")
    if not value:
        raise Unwritable("empty_value", "message has no value (tombstone?)")
    try:
        # pydantic parses and validates the bytes in one pass (faster than orjson + python
        # validation); on failure the wire decoder names the reason, so the codes are its.
        record: object = adapter(table.record_type).validate_json(value)
    except ValidationError:
        try:
            record = decode(table.record_type, value)
        except WireError as exc:
            raise Unwritable(exc.reason, exc.detail) from exc
    try:
        row = table.to_row(record)
    except (ValueError, TypeError) as exc:
        raise Unwritable("unmappable_record", str(exc)) from exc
    received_at = record.received_at if isinstance(record, EnrichedFix) else None
    return Decoded(table, row, received_at)

"""Query parameters of the API that FastAPI cannot check alone: time ranges and cursors (pure).

Pagination is by keyset, not offset: a page ends at the sort key of its last item, and the next
page starts after it. The cursor is that key, tagged with the listing it belongs to and encoded
as URL-safe base64 JSON; it is opaque to clients, and one listing's cursor is refused by
another's with a 422.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Literal

import orjson

KeyType = Literal["str", "ts"]

#: The times a query may name: GPS fixes exist from 1980 on, and far from datetime's ends.
EARLIEST = datetime(1970, 1, 1, tzinfo=UTC)
LATEST = datetime(9000, 1, 1, tzinfo=UTC)


class ParamError(ValueError):
    """A bad query parameter: where (``loc``), a message and a machine-readable type."""

    def __init__(self, loc: tuple[str, ...], msg: str, kind: str) -> None:
        super().__init__(f"{'.'.join(loc)}: {msg}")
        self.loc = loc
        self.msg = msg
        self.kind = kind

    def detail(self) -> dict[str, object]:
        """One item of a 422 body, shaped like FastAPI's own validation errors."""
        return {"loc": list(self.loc), "msg": self.msg, "type": self.kind}


@dataclass(frozen=True, slots=True)
class TimeRange:
    """A half-open interval [start, end)."""

    start: datetime
    end: datetime


def resolve_range(
    start: datetime | None,
    end: datetime | None,
    *,
    now: datetime,
    default_s: float,
    max_s: float,
) -> TimeRange:
    """``from``/``to`` with defaults (to: now, from: to - default), bounded to ``max_s``.

    Aware datetimes only (FastAPI refuses naive ones before this is called), between
    :data:`EARLIEST` and :data:`LATEST`: at the ends of ``datetime``'s range, the default
    ``from`` and the query's look-back cannot be computed (``to=0001-01-01T00:30:00Z`` was a
    500).
    """
    for name, value in (("from", start), ("to", end)):
        if value is not None and not EARLIEST <= value <= LATEST:
            raise ParamError(
                ("query", name),
                f"{name} must be between {EARLIEST:%Y-%m-%d} and {LATEST:%Y-%m-%d}",
                "time_out_of_range",
            )
    resolved_end = end if end is not None else now
    resolved_start = start if start is not None else resolved_end - timedelta(seconds=default_s)
    if resolved_start >= resolved_end:
        raise ParamError(("query", "from"), "from must be before to", "range_empty")
    if (resolved_end - resolved_start).total_seconds() > max_s:
        raise ParamError(
            ("query", "from"),
            f"the range from..to may span at most {max_s:g} s; ask for several shorter ranges",
            "range_too_long",
        )
    return TimeRange(resolved_start, resolved_end)


def encode_cursor(listing: str, key: list[object]) -> str:
    """The opaque cursor that continues ``listing`` after the item whose sort key is ``key``."""
    raw = orjson.dumps({"l": listing, "k": key})
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(listing: str, cursor: str, types: tuple[KeyType, ...]) -> tuple[object, ...]:
    """The sort key in a cursor made by :func:`encode_cursor` for the same listing."""

    def bad(why: str) -> ParamError:
        return ParamError(("query", "cursor"), f"invalid cursor: {why}", "cursor_invalid")

    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        data = orjson.loads(raw)
    except (binascii.Error, ValueError) as exc:
        raise bad("not a cursor this API issued") from exc
    if not isinstance(data, dict) or data.get("l") != listing:
        raise bad(f"not a cursor of this listing ({listing})")
    key = data.get("k")
    if not isinstance(key, list) or len(key) != len(types):
        raise bad("wrong key")
    values: list[object] = []
    for value, kind in zip(key, types, strict=True):
        if not isinstance(value, str):
            raise bad("wrong key")
        if kind == "ts":
            try:
                parsed = datetime.fromisoformat(value)
            except ValueError as exc:
                raise bad("wrong key") from exc
            if parsed.tzinfo is None:
                raise bad("wrong key")
            values.append(parsed)
        else:
            values.append(value)
    return tuple(values)

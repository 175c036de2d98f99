"""Record -> row mapping of the sink: pure functions, no I/O.

Each sink table has a staging layout (:class:`Table`): the columns the sink COPYs (binary) into
a temporary staging table, their PostgreSQL types (so psycopg dumps them without guessing), and
a function turning a record's validated fields (field name -> value, what :mod:`sinks.decode`
gets from pydantic without building the dataclass) into one row tuple. Geometries are built here
as EWKB (:func:`point_ewkb`, :func:`linestring_ewkb`), which is PostGIS's binary wire format: a
binary COPY hands the bytes straight to ``geometry_recv``, so the database does no per-row
parsing and positions rows can be COPYed into the hypertable as they are.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, fields
from functools import lru_cache
from typing import Any

from schemas.records import CourierEvent, EnrichedFix, Stop, Trip

Row = tuple[Any, ...]
Fields = Mapping[str, Any]  # a record's validated fields by name


def record_fields(record: object) -> dict[str, Any]:
    """The fields of a record dataclass by name (shallow: values are kept as they are)."""
    return {f.name: getattr(record, f.name) for f in fields(record)}  # type: ignore[arg-type]


@dataclass(frozen=True, slots=True, eq=False)
class Table:
    """One destination table: its staging columns and types, and the row mapping (from fields).

    Compared and hashed by identity (there is one instance per table): the sink groups every
    row by its table, and hashing the column tuples each time showed in profiles.
    """

    name: str
    record_type: type
    columns: tuple[str, ...]
    types: tuple[str, ...]
    from_fields: Callable[[Fields], Row]

    def to_row(self, record: object) -> Row:
        """The row of a record object (the sink itself maps validated fields, not objects)."""
        return self.from_fields(record_fields(record))

    def courier_of(self, row: Row) -> tuple[str, str]:
        """The row's (org_id, courier_id)."""
        columns = self.columns
        return row[columns.index("org_id")], row[columns.index("courier_id")]

    @property
    def staging(self) -> str:
        return f"stage_{self.name}"

    @property
    def copy_types(self) -> tuple[str, ...]:
        """Types for psycopg's binary COPY: geometries (EWKB) and text arrays go pre-encoded."""
        return tuple(
            "bytea" if t.startswith("geometry") or t == "text[]" else t for t in self.types
        )


_POINT = struct.Struct("<BIIdd").pack  # little endian, Point with SRID, 4326, x, y


def point_ewkb(lon: float, lat: float) -> bytes:
    """EWKB of an SRID 4326 point."""
    return _POINT(1, 0x20000001, 4326, lon, lat)


_TEXT_OID = 25
_ARRAY_HEADER = struct.Struct(">iiIii")  # ndim, has-nulls, element type, length, lower bound
_LENGTH = struct.Struct(">i")


@lru_cache(maxsize=4096)
def text_array(values: tuple[str, ...]) -> bytes:
    """PostgreSQL's binary format of a ``text[]`` (what ``array_recv`` reads).

    psycopg dumps lists element by element in Python; zone lists repeat from fix to fix, so a
    cached encoding makes them nearly free (the one hot spot of the sink's COPY).
    """
    if not values:
        return struct.pack(">iiI", 0, 0, _TEXT_OID)
    parts = [_ARRAY_HEADER.pack(1, 0, _TEXT_OID, len(values), 1)]
    for value in values:
        encoded = value.encode()
        parts += [_LENGTH.pack(len(encoded)), encoded]
    return b"".join(parts)


def position_row(fix: Fields) -> Row:
    """A clean fix (:class:`EnrichedFix` fields) as a staged ``positions`` row."""
    return (
        fix["ts"],
        fix["org_id"],
        fix["courier_id"],
        fix["device_id"],
        fix["fix_id"],
        point_ewkb(fix["lon"], fix["lat"]),
        fix["accuracy_m"],
        fix["speed_mps"],
        fix["heading_deg"],
        fix["altitude_m"],
        text_array(fix["zone_ids"]),
        fix["trip_id"],
        fix["stop_id"],
        fix["received_at"],
        fix["distance_m"],
        fix["odometer_m"],
        fix["derived_speed_mps"],
        fix["derived_heading_deg"],
        fix["is_late"],
        fix["retention_class"],
        fix["expires_at"],
    )


def stop_row(stop: Fields) -> Row:
    return (
        stop["start"],
        stop["end"],
        stop["org_id"],
        stop["courier_id"],
        stop["stop_id"],
        point_ewkb(stop["lon"], stop["lat"]),
        stop["duration_s"],
        stop["fix_count"],
        stop["zone_id"],
        stop["is_open"],
        stop["retention_class"],
        stop["expires_at"],
    )


def linestring_ewkb(path: Sequence[tuple[float, float]]) -> bytes:
    """EWKB of an SRID 4326 LineString through ``path`` ([lon, lat] pairs).

    A LineString needs two points; a one-point route (a trip of a single fix) is stored as a
    degenerate line from the point to itself so that every trip has a geometry.
    """
    if not path:
        raise ValueError("a trip path needs at least one point")
    points = list(path) if len(path) > 1 else [path[0], path[0]]
    flat = [coordinate for point in points for coordinate in point[:2]]
    return struct.pack(f"<BIII{len(flat)}d", 1, 0x20000002, 4326, len(points), *flat)


def trip_row(trip: Fields) -> Row:
    return (
        trip["start"],
        trip["end"],
        trip["org_id"],
        trip["courier_id"],
        trip["trip_id"],
        linestring_ewkb(trip["path"]),
        trip["distance_m"],
        trip["duration_s"],
        trip["avg_speed_mps"],
        trip["max_speed_mps"],
        trip["fix_count"],
        trip["start_stop_id"],
        trip["end_stop_id"],
        trip["closed_by"],
        trip["retention_class"],
        trip["expires_at"],
    )


def event_row(event: Fields) -> Row:
    return (
        event["ts"],
        event["org_id"],
        event["courier_id"],
        event["event_id"],
        event["kind"],
        event["subject_id"],
        point_ewkb(event["lon"], event["lat"]),
        event["retention_class"],
        event["expires_at"],
    )


POSITIONS = Table(
    name="positions",
    record_type=EnrichedFix,
    columns=(
        "ts", "org_id", "courier_id", "device_id", "fix_id", "geom", "accuracy_m",
        "speed_mps", "heading_deg", "altitude_m", "zone_ids", "trip_id", "stop_id",
        "received_at", "distance_m", "odometer_m", "derived_speed_mps", "derived_heading_deg",
        "is_late", "retention_class", "expires_at",
    ),
    types=(
        "timestamptz", "text", "text", "text", "text", "geometry(Point, 4326)", "float4",
        "float4", "float4", "float4", "text[]", "text", "text",
        "timestamptz", "float8", "float8", "float4", "float4",
        "bool", "text", "timestamptz",
    ),
    from_fields=position_row,
)  # fmt: skip

STOPS = Table(
    name="stops",
    record_type=Stop,
    columns=(
        "start_ts", "end_ts", "org_id", "courier_id", "stop_id", "geom", "duration_s",
        "fix_count", "zone_id", "is_open", "retention_class", "expires_at",
    ),
    types=(
        "timestamptz", "timestamptz", "text", "text", "text", "geometry(Point, 4326)", "float8",
        "int4", "text", "bool", "text", "timestamptz",
    ),
    from_fields=stop_row,
)  # fmt: skip

TRIPS = Table(
    name="trips",
    record_type=Trip,
    columns=(
        "start_ts", "end_ts", "org_id", "courier_id", "trip_id", "path", "distance_m",
        "duration_s", "avg_speed_mps", "max_speed_mps", "fix_count", "start_stop_id",
        "end_stop_id", "closed_by", "retention_class", "expires_at",
    ),
    types=(
        "timestamptz", "timestamptz", "text", "text", "text", "geometry(LineString, 4326)",
        "float8",
        "float8", "float4", "float4", "int4", "text",
        "text", "text", "text", "timestamptz",
    ),
    from_fields=trip_row,
)  # fmt: skip

COURIER_EVENTS = Table(
    name="courier_events",
    record_type=CourierEvent,
    columns=(
        "ts", "org_id", "courier_id", "event_id", "kind", "subject_id", "geom",
        "retention_class", "expires_at",
    ),
    types=(
        "timestamptz", "text", "text", "text", "text", "text", "geometry(Point, 4326)",
        "text", "timestamptz",
    ),
    from_fields=event_row,
)  # fmt: skip

# latest_positions rows are projections of positions rows (see latest_rows).
LATEST_COLUMNS: tuple[str, ...] = (
    "org_id", "courier_id", "ts", "device_id", "fix_id", "geom", "accuracy_m", "speed_mps",
    "heading_deg", "zone_ids", "trip_id", "stop_id", "received_at", "retention_class",
    "expires_at",
)  # fmt: skip
_LATEST_INDEX = tuple(POSITIONS.columns.index(c) for c in LATEST_COLUMNS)
_TS, _ORG, _COURIER, _FIX, _LATE = (
    POSITIONS.columns.index(c) for c in ("ts", "org_id", "courier_id", "fix_id", "is_late")
)


def latest_rows(rows: Sequence[Row]) -> list[Row]:
    """The newest non-late positions row of each courier, projected to ``LATEST_COLUMNS``.

    Newest means the largest (ts, fix_id), the order the database applies when a stored
    latest position meets a new one; late fixes never become the latest position.
    """
    newest: dict[tuple[str, str], Row] = {}
    for row in rows:
        if row[_LATE]:
            continue
        key = (row[_ORG], row[_COURIER])
        current = newest.get(key)
        if current is None or (row[_TS], row[_FIX]) > (current[_TS], current[_FIX]):
            newest[key] = row
    return [tuple(row[i] for i in _LATEST_INDEX) for row in newest.values()]


LATEST = Table(
    name="latest_positions",
    record_type=EnrichedFix,
    columns=LATEST_COLUMNS,
    types=tuple(POSITIONS.types[i] for i in _LATEST_INDEX),
    from_fields=lambda fix: tuple(position_row(fix)[i] for i in _LATEST_INDEX),
)

TABLES: tuple[Table, ...] = (POSITIONS, STOPS, TRIPS, COURIER_EVENTS)

# Logical topic -> destination table.
TOPIC_TABLES: dict[str, Table] = {
    "fixes.clean": POSITIONS,
    "stops": STOPS,
    "trips": TRIPS,
    "courier.events": COURIER_EVENTS,
}

# The retention class whose period governs each hypertable's chunks.
TABLE_RETENTION_CLASS: dict[str, str] = {
    "positions": "raw_fixes",
    "stops": "stops",
    "trips": "trips",
    "courier_events": "events",
}


def stop_version(is_open: bool, end: Any, fix_count: int) -> tuple[bool, Any, int]:
    """The order in which versions of one stop supersede each other (larger wins).

    A closed stop beats any open version, then a later end, then more fixes; the SQL upsert in
    :mod:`sinks.writer` applies the same order.
    """
    return (not is_open, end, fix_count)

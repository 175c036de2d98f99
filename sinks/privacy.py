"""A courier's right of access (privacy policy 9.7): every stored row, in one document.

The export reads every table that holds a courier's rows in one snapshot; the API calls it for
its org after authorising the request, the admin command for operators. Erasure, which must
reach beyond the database, is :mod:`sinks.erasure`.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from psycopg import AsyncConnection, sql

from sinks import audit
from sinks.formats import TrackPoint, Waypoint, track_points, waypoints
from sinks.isolation import check_org

# Tables holding a courier's rows, with their ordering column for the export.
COURIER_TABLES: dict[str, str] = {
    "positions": "ts",
    "stops": "start_ts",
    "trips": "start_ts",
    "courier_events": "ts",
    "latest_positions": "ts",
    "courier_daily": "day",
}
#: Most access-audit records in one export (the newest).
EXPORT_AUDIT_MAX = 100_000
# Geometry columns, exported as GeoJSON.
_GEOMETRY = {"geom", "path"}


def _export_query(table: str, order: str, geometry: str | None) -> sql.Composed:
    row: sql.Composable = sql.SQL("to_jsonb(t)")
    if geometry is not None:
        row = sql.SQL(
            "(to_jsonb(t) - {g}) || jsonb_build_object({g}, ST_AsGeoJSON({c})::jsonb)"
        ).format(g=sql.Literal(geometry), c=sql.Identifier("t", geometry))
    return sql.SQL(
        "SELECT coalesce(jsonb_agg({row} ORDER BY {order}), '[]'::jsonb) FROM {table} AS t"
        " WHERE org_id = %s AND courier_id = %s"
    ).format(row=row, order=sql.Identifier("t", order), table=sql.Identifier(table))


async def export_courier(
    conn: AsyncConnection[Any], org_id: str, courier_id: str
) -> dict[str, Any]:
    """Every row of the courier in every table, as one JSON-able document."""
    check_org(org_id)
    tables: dict[str, Any] = {}
    async with conn.transaction():
        await conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
        for table, order in COURIER_TABLES.items():
            geometry = await _geometry_column(conn, table)
            cursor = await conn.execute(_export_query(table, order, geometry), (org_id, courier_id))
            row = await cursor.fetchone()
            tables[table] = row[0] if row else []
        accesses = await audit.read(conn, org_id, courier_id, EXPORT_AUDIT_MAX)
    return {
        "org_id": org_id,
        "courier_id": courier_id,
        "exported_at": datetime.now(UTC).isoformat(),
        "counts": {table: len(rows) for table, rows in tables.items()},
        "tables": tables,
        "access_audit": accesses,  # who looked at the courier's data, newest first
    }


def export_track(document: dict[str, Any]) -> tuple[list[TrackPoint], list[Waypoint]]:
    """The positions and stops of an export document, for :func:`sinks.formats.render`."""
    tables = document["tables"]
    return track_points(tables["positions"]), waypoints(tables["stops"])


async def _geometry_column(conn: AsyncConnection[Any], table: str) -> str | None:
    cursor = await conn.execute(
        "SELECT attname FROM pg_attribute WHERE attrelid = %s::regclass AND attnum > 0"
        " AND NOT attisdropped AND attname = ANY(%s)",
        (table, list(_GEOMETRY)),
    )
    row = await cursor.fetchone()
    return str(row[0]) if row else None

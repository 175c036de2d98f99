"""The API's SQL: one statement per listing, building the JSON page inside PostgreSQL.

Every query runs in :func:`sinks.isolation.org_transaction`, as ``geostream_api``, so row-level
security limits it to the dispatcher's org; each also names the org explicitly, which changes
nothing about what is visible but lets the planner use the (org_id, ...) indexes directly.

PostgreSQL renders the items (``json_agg`` of projected rows) and the API sends that text
as it is: for a 10,000-courier page this avoids building 10,000 Python dicts per request. The
session time zone is UTC (set in the connection options), so timestamps come out as RFC 3339
with ``+00:00``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from psycopg import AsyncConnection

from sinks.api.params import TimeRange

Conn = AsyncConnection[tuple[Any, ...]]

# Each listing's item, projected from ``p`` (one row of the listing's table); PostgreSQL turns
# the projected row into a JSON object keyed by these names (cheaper than json_build_object).
POSITION_ITEM = """SELECT p.courier_id, p.ts, ST_Y(p.geom) AS lat, ST_X(p.geom) AS lon,
    p.accuracy_m, p.speed_mps, p.heading_deg, p.zone_ids, p.trip_id, p.stop_id"""
POSITION_COLUMNS = (
    "courier_id, ts, geom, accuracy_m, speed_mps, heading_deg, zone_ids, trip_id, stop_id"
)

TRACK_ITEM = """SELECT p.fix_id, p.ts, ST_Y(p.geom) AS lat, ST_X(p.geom) AS lon, p.accuracy_m,
    p.speed_mps, p.heading_deg, p.zone_ids, p.trip_id, p.stop_id, p.is_late"""
TRACK_COLUMNS = (
    "fix_id, ts, geom, accuracy_m, speed_mps, heading_deg, zone_ids, trip_id, stop_id, is_late"
)

STOP_ITEM = """SELECT p.stop_id, p.start_ts AS start, p.end_ts AS "end", ST_Y(p.geom) AS lat,
    ST_X(p.geom) AS lon, p.duration_s, p.zone_id, p.fix_count, p.is_open"""

TRIP_ITEM = """SELECT p.trip_id, p.start_ts AS start, p.end_ts AS "end", p.distance_m,
    p.duration_s, p.avg_speed_mps, p.max_speed_mps, p.fix_count, p.start_stop_id,
    p.end_stop_id, p.closed_by, ST_AsGeoJSON(p.path, 7)::json AS path"""

# The route of a track page: the page's points in order, optionally simplified. Douglas-Peucker
# needs a tolerance in the geometry's units, so the line goes to Web Mercator, whose metres are
# stretched by 1/cos(latitude): the tolerance is scaled by the same factor at the line's centre.
ROUTE = """CASE
    WHEN line IS NULL OR ST_NPoints(line) < 2 THEN NULL
    WHEN %(simplify)s::float8 > 0 THEN ST_AsGeoJSON(ST_Transform(ST_Simplify(
        ST_Transform(line, 3857),
        %(simplify)s::float8 / cos(radians(ST_Y(ST_Centroid(line))))), 4326), 7)
    ELSE ST_AsGeoJSON(line, 7) END"""


@dataclass(frozen=True, slots=True)
class Page:
    """One page: the items as JSON array text, and the sort key of the last item when more
    items follow (None on the last page)."""

    items_json: str
    next_key: str | None
    extra: tuple[Any, ...] = ()


def paged_sql(
    inner: str,
    item: str,
    key: tuple[str, ...],
    *,
    carry: tuple[str, ...] = (),
    extra_agg: str = "",
    extra_out: str = "",
) -> str:
    """One page of ``inner`` (rows of a table, alias ``p``) as JSON items made by ``item``.

    One more row than asked for is read, to know whether another page follows. The rows come
    out of the ordered, limited subquery in order and neither the numbering nor the aggregates
    reorder them, so the items are in key order; no second sort is needed. Only the key (for
    the next cursor) and the ``carry`` columns travel with the items.
    """
    order = ", ".join(key)
    columns = ", ".join(f"p.{c}" for c in (*key, *carry))
    return f"""
SELECT items, CASE WHEN more THEN last_key END {extra_out}
FROM (
    SELECT coalesce(json_agg(item) FILTER (WHERE rn <= %(limit)s), '[]')::text AS items,
           max(CASE WHEN rn = %(limit)s THEN json_build_array({order})::text END) AS last_key,
           count(*) > %(limit)s AS more
           {extra_agg}
    FROM (
        SELECT item, {columns}, row_number() OVER () AS rn
        FROM ({inner} ORDER BY {order} LIMIT %(limit_plus)s) p
        CROSS JOIN LATERAL ({item}) item
    ) numbered
) agg"""


async def _page(conn: Conn, query: str, params: dict[str, Any], limit: int) -> Page:
    cursor = await conn.execute(query, {**params, "limit": limit, "limit_plus": limit + 1})
    row = await cursor.fetchone()
    assert row is not None  # an aggregate always returns one row
    return Page(row[0], row[1], tuple(row[2:]))


async def latest_positions(conn: Conn, org_id: str, limit: int, after: str | None) -> Page:
    """Every courier's latest position, by courier id."""
    where = "org_id = %(org)s" + (" AND courier_id > %(after)s" if after is not None else "")
    inner = f"SELECT {POSITION_COLUMNS} FROM latest_positions WHERE {where}"
    query = paged_sql(inner, POSITION_ITEM, ("courier_id",))
    return await _page(conn, query, {"org": org_id, "after": after}, limit)


async def zone_couriers(
    conn: Conn, org_id: str, zone_id: str, since: datetime, limit: int, after: str | None
) -> Page:
    """Couriers whose latest fix (not older than ``since``) is inside ``zone_id``."""
    where = "org_id = %(org)s AND zone_ids @> ARRAY[%(zone)s]::text[] AND ts >= %(since)s" + (
        " AND courier_id > %(after)s" if after is not None else ""
    )
    inner = f"SELECT {POSITION_COLUMNS} FROM latest_positions WHERE {where}"
    query = paged_sql(inner, POSITION_ITEM, ("courier_id",))
    params = {"org": org_id, "zone": zone_id, "since": since, "after": after}
    return await _page(conn, query, params, limit)


async def track(
    conn: Conn,
    org_id: str,
    courier_id: str,
    span: TimeRange,
    limit: int,
    after: tuple[datetime, str] | None,
    simplify_m: float,
) -> Page:
    """A courier's positions in ``span`` by time; ``extra[0]`` is the page's route (GeoJSON
    LineString text, or None under two points)."""
    where = "org_id = %(org)s AND courier_id = %(courier)s AND ts >= %(start)s AND ts < %(end)s"
    if after is not None:
        where += " AND (ts, fix_id) > (%(after_ts)s, %(after_id)s)"
    inner = f"SELECT {TRACK_COLUMNS} FROM positions WHERE {where}"
    query = paged_sql(
        inner,
        TRACK_ITEM,
        ("ts", "fix_id"),
        carry=("geom",),
        extra_agg=", ST_MakeLine(geom) FILTER (WHERE rn <= %(limit)s) AS line",
        extra_out=f", {ROUTE}",
    )
    params = {
        "org": org_id,
        "courier": courier_id,
        "start": span.start,
        "end": span.end,
        "after_ts": after[0] if after else None,
        "after_id": after[1] if after else None,
        "simplify": simplify_m,
    }
    return await _page(conn, query, params, limit)


async def _intervals(
    conn: Conn,
    table: str,
    id_column: str,
    item: str,
    org_id: str,
    courier_id: str,
    span: TimeRange,
    limit: int,
    after: tuple[datetime, str] | None,
    lookback: datetime,
) -> Page:
    """Trips or stops that overlap ``span``, by start time.

    ``start_ts >= lookback`` bounds the scan (and lets TimescaleDB skip old chunks): nothing
    that started before it can still be running inside ``span``.
    """
    where = (
        "org_id = %(org)s AND courier_id = %(courier)s AND start_ts < %(end)s"
        " AND end_ts >= %(start)s AND start_ts >= %(lookback)s"
    )
    if after is not None:
        where += f" AND (start_ts, {id_column}) > (%(after_ts)s, %(after_id)s)"
    inner = f"SELECT * FROM {table} WHERE {where}"
    query = paged_sql(inner, item, ("start_ts", id_column))
    params = {
        "org": org_id,
        "courier": courier_id,
        "start": span.start,
        "end": span.end,
        "lookback": lookback,
        "after_ts": after[0] if after else None,
        "after_id": after[1] if after else None,
    }
    return await _page(conn, query, params, limit)


async def trips(
    conn: Conn,
    org_id: str,
    courier_id: str,
    span: TimeRange,
    limit: int,
    after: tuple[datetime, str] | None,
    lookback: datetime,
) -> Page:
    return await _intervals(
        conn, "trips", "trip_id", TRIP_ITEM, org_id, courier_id, span, limit, after, lookback
    )


async def stops(
    conn: Conn,
    org_id: str,
    courier_id: str,
    span: TimeRange,
    limit: int,
    after: tuple[datetime, str] | None,
    lookback: datetime,
) -> Page:
    return await _intervals(
        conn, "stops", "stop_id", STOP_ITEM, org_id, courier_id, span, limit, after, lookback
    )


async def courier_known(conn: Conn, org_id: str, courier_id: str) -> bool:
    """Whether the org has any data about the courier (another org's courier: no)."""
    tables = ("latest_positions", "positions", "trips", "stops")
    exists = " OR ".join(
        f"EXISTS (SELECT 1 FROM {t} WHERE org_id = %(org)s AND courier_id = %(courier)s)"
        for t in tables
    )
    cursor = await conn.execute(f"SELECT {exists}", {"org": org_id, "courier": courier_id})
    row = await cursor.fetchone()
    return bool(row and row[0])


async def database_ready(conn: Conn) -> bool:
    """The database answers and the API role can use the schema (for ``/readyz``)."""
    cursor = await conn.execute("SELECT count(*) FROM latest_positions WHERE false")
    return await cursor.fetchone() is not None

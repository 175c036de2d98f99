"""One batch of rows -> the database, in one transaction, idempotently.

Rows are COPYed (binary, with declared types, so psycopg never guesses) into temporary staging
tables, then moved into the real tables by ``INSERT ... SELECT ... ON CONFLICT``: append-only
entities (positions, courier events) do nothing on conflict, upserted entities (stops, trips,
latest positions) take the newer version only. Replaying a batch therefore changes nothing.
The staging tables are ``ON COMMIT DELETE ROWS`` temporaries made once per connection.
"""

from __future__ import annotations

import weakref
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import psycopg
from psycopg import AsyncConnection, sql
from psycopg.types.string import BytesBinaryDumper

from sinks import erasure
from sinks.rows import (
    COURIER_EVENTS,
    LATEST,
    POSITIONS,
    STOPS,
    TABLES,
    TOPIC_TABLES,
    TRIPS,
    Row,
    Table,
    latest_rows,
)

#: Couriers whose erasure tombstone a batch holds, by table.
Tombstoned = Mapping[Table, set[erasure.Courier]]
TABLE_TOPICS = {table.name: topic for topic, table in TOPIC_TABLES.items()}


def _cols(columns: tuple[str, ...]) -> str:
    return ", ".join(columns)


INSERTS: dict[str, str] = {
    "positions": f"""
        INSERT INTO positions ({_cols(POSITIONS.columns)})
        SELECT {_cols(POSITIONS.columns)} FROM stage_positions
        ON CONFLICT DO NOTHING""",
    "stops": f"""
        INSERT INTO stops AS s ({_cols(STOPS.columns)})
        SELECT DISTINCT ON (org_id, stop_id, start_ts) {_cols(STOPS.columns)}
        FROM stage_stops
        ORDER BY org_id, stop_id, start_ts, is_open, end_ts DESC, fix_count DESC
        ON CONFLICT (org_id, stop_id, start_ts) DO UPDATE SET
            end_ts = EXCLUDED.end_ts, geom = EXCLUDED.geom, duration_s = EXCLUDED.duration_s,
            fix_count = EXCLUDED.fix_count, zone_id = EXCLUDED.zone_id,
            is_open = EXCLUDED.is_open, retention_class = EXCLUDED.retention_class,
            expires_at = EXCLUDED.expires_at, written_at = now()
        WHERE (NOT s.is_open, s.end_ts, s.fix_count)
            < (NOT EXCLUDED.is_open, EXCLUDED.end_ts, EXCLUDED.fix_count)""",
    "trips": f"""
        INSERT INTO trips AS t ({_cols(TRIPS.columns)})
        SELECT DISTINCT ON (org_id, trip_id, start_ts) {_cols(TRIPS.columns)}
        FROM stage_trips
        ORDER BY org_id, trip_id, start_ts, end_ts DESC, fix_count DESC
        ON CONFLICT (org_id, trip_id, start_ts) DO UPDATE SET
            end_ts = EXCLUDED.end_ts, path = EXCLUDED.path, distance_m = EXCLUDED.distance_m,
            duration_s = EXCLUDED.duration_s, avg_speed_mps = EXCLUDED.avg_speed_mps,
            max_speed_mps = EXCLUDED.max_speed_mps, fix_count = EXCLUDED.fix_count,
            start_stop_id = EXCLUDED.start_stop_id, end_stop_id = EXCLUDED.end_stop_id,
            closed_by = EXCLUDED.closed_by, retention_class = EXCLUDED.retention_class,
            expires_at = EXCLUDED.expires_at, written_at = now()
        WHERE (t.end_ts, t.fix_count) < (EXCLUDED.end_ts, EXCLUDED.fix_count)""",
    "courier_events": f"""
        INSERT INTO courier_events ({_cols(COURIER_EVENTS.columns)})
        SELECT {_cols(COURIER_EVENTS.columns)} FROM stage_courier_events
        ON CONFLICT DO NOTHING""",
    # One row per courier, computed in Python (sinks.rows.latest_rows); it replaces the stored
    # latest position only if it is newer, in the same (ts, fix_id) order.
    "latest_positions": f"""
        INSERT INTO latest_positions AS l ({_cols(LATEST.columns)})
        SELECT {_cols(LATEST.columns)} FROM stage_latest_positions
        ON CONFLICT (org_id, courier_id) DO UPDATE SET
            ts = EXCLUDED.ts, device_id = EXCLUDED.device_id, fix_id = EXCLUDED.fix_id,
            geom = EXCLUDED.geom, accuracy_m = EXCLUDED.accuracy_m,
            speed_mps = EXCLUDED.speed_mps, heading_deg = EXCLUDED.heading_deg,
            zone_ids = EXCLUDED.zone_ids, trip_id = EXCLUDED.trip_id,
            stop_id = EXCLUDED.stop_id, received_at = EXCLUDED.received_at,
            retention_class = EXCLUDED.retention_class, expires_at = EXCLUDED.expires_at,
            written_at = now()
        WHERE (l.ts, l.fix_id) < (EXCLUDED.ts, EXCLUDED.fix_id)""",
}


def staging_ddl(table: Table) -> sql.Composed:
    """``CREATE TEMP TABLE stage_<name> (...) ON COMMIT DELETE ROWS`` for ``table``."""
    columns = sql.SQL(", ").join(
        sql.SQL("{} {}").format(sql.Identifier(name), sql.SQL(pg_type))
        for name, pg_type in zip(table.columns, table.types, strict=True)
    )
    return sql.SQL("CREATE TEMP TABLE IF NOT EXISTS {} ({}) ON COMMIT DELETE ROWS").format(
        sql.Identifier(table.staging), columns
    )


def copy_statement(table: Table, target: str | None = None) -> sql.Composed:
    """Binary COPY into ``table``'s staging table (or into ``target``)."""
    return sql.SQL("COPY {} ({}) FROM STDIN (FORMAT BINARY)").format(
        sql.Identifier(target or table.staging),
        sql.SQL(", ").join(map(sql.Identifier, table.columns)),
    )


_STAGED_TABLES = (*TABLES, LATEST)
_COPY = {table.name: copy_statement(table) for table in _STAGED_TABLES}
_COPY_DIRECT = copy_statement(POSITIONS, target="positions")
_STAGED: weakref.WeakSet[AsyncConnection[Any]] = weakref.WeakSet()


async def _ensure_staging(conn: AsyncConnection[Any]) -> bool:
    """Create the staging temporaries on this connection; True if they were made now."""
    if conn in _STAGED:
        return False
    for table in _STAGED_TABLES:
        await conn.execute(staging_ddl(table))
    # Pre-encoded columns (EWKB, text arrays) are COPYed as bytea. By default psycopg picks the
    # DB-API ``Binary`` wrapper's dumper for that type, written in Python; registering the
    # plain bytes dumper again restores the C one (a sixth of the COPY's cost per row).
    conn.adapters.register_dumper(bytes, BytesBinaryDumper)
    return True


async def copy_rows(
    conn: AsyncConnection[Any], table: Table, rows: Sequence[Row], direct: bool = False
) -> None:
    """Binary COPY of ``rows`` into ``table``'s staging table (``direct``: into positions)."""
    statement = _COPY_DIRECT if direct else _COPY[table.name]
    async with conn.cursor().copy(statement) as copy:
        copy.set_types(list(table.copy_types))
        for row in rows:
            await copy.write_row(row)


@dataclass
class Written:
    """What a batch did: rows inserted or updated per table; whether positions took the
    direct path (COPY straight into the hypertable) or met a duplicate and went via staging."""

    rows: dict[str, int] = field(default_factory=dict)
    erased: dict[str, int] = field(default_factory=dict)  # rows dropped: courier erased
    direct_positions: bool = False
    duplicates: bool = False


async def write_batch(
    conn: AsyncConnection[Any],
    batch: Mapping[Table, Sequence[Row]],
    tombstoned: Tombstoned | None = None,
    before_commit: Callable[[], Awaitable[None]] | None = None,
    direct_positions: bool = True,
) -> Written:
    """Write one batch in one transaction; returns what it wrote.

    The caller's connection must be idle (no transaction open). Nothing is written unless
    everything is: an error rolls the whole batch back. ``before_commit`` runs after the last
    statement, before COMMIT (the crash tests stop the sink there).

    Positions, the bulk of the rows, first try the fast path: a binary COPY straight into the
    hypertable, inside a savepoint. A replayed fix violates the unique key, the savepoint is
    rolled back, and the batch takes the staging path (``ON CONFLICT DO NOTHING``) instead, so
    a replay costs one extra COPY and never doubles a row.

    First of all, erasures (:mod:`sinks.erasure`): rows of a courier with an erasure pending on
    their topic are dropped, and the tombstones in ``tombstoned`` (couriers by table) are
    recorded as passed.
    """
    result = Written()
    tombstoned = tombstoned or {}
    async with conn.transaction():
        pending = await erasure.pending_erasures(conn, list(TABLE_TOPICS.values()))
        made_staging = await _ensure_staging(conn)
        for table in TABLES:
            topic = TABLE_TOPICS[table.name]
            passed = tombstoned.get(table, set())
            if passed:
                await erasure.mark_passed(conn, topic, passed)
            rows = batch.get(table)
            if not rows:
                continue
            rows = erasure.drop_erased(list(rows), table.courier_of, pending.get(topic, set()),
                                       passed)  # fmt: skip
            if len(rows) < len(batch[table]):
                result.erased[table.name] = len(batch[table]) - len(rows)
            if not rows:
                continue
            if table is POSITIONS and direct_positions:
                try:
                    async with conn.transaction():
                        await copy_rows(conn, POSITIONS, rows, direct=True)
                    result.rows["positions"] = len(rows)
                    result.direct_positions = True
                except psycopg.errors.UniqueViolation:
                    result.duplicates = True
            if not (table is POSITIONS and result.direct_positions):
                await copy_rows(conn, table, rows)
                cursor = await conn.execute(INSERTS[table.name])
                result.rows[table.name] = max(cursor.rowcount, 0)
                if table is POSITIONS and result.rows["positions"] < len(rows):
                    result.duplicates = True
            if table is POSITIONS:
                await copy_rows(conn, LATEST, latest_rows(rows))
                cursor = await conn.execute(INSERTS["latest_positions"])
                result.rows["latest_positions"] = max(cursor.rowcount, 0)
        if result.rows:
            await conn.execute("SELECT secure_chunks()")  # a chunk made now: migration 0015
        if before_commit is not None:
            await before_commit()
    if made_staging:  # only once committed: a rolled-back transaction drops them again
        _STAGED.add(conn)
    return result

"""Retention: remove what ``config/retention.yaml`` says has expired, and nothing else.

Every row carries ``expires_at`` (its class's period for its org, from its time), so deleting
``expires_at <= now()`` honours per-org overrides exactly. Whole chunks go cheaper: a chunk
whose range ends before ``now - (the class's longest period across orgs)`` holds only expired
rows, so it is dropped with ``drop_chunks`` instead of being deleted row by row.

* Apache edition (``SHOW timescaledb.license`` = apache): this module does both steps itself,
  run by ``geostream retention run`` or on the sink's schedule.
* Timescale-licensed edition: the chunk step becomes a background ``add_retention_policy`` per
  hypertable and old chunks are compressed by ``add_compression_policy``; the row step (per-org
  overrides shorter than the longest period) still runs here. Daily aggregates are fed by
  continuous aggregates there (see :mod:`sinks.aggregates`).

The planning (:func:`plan`) is pure; :func:`run_retention` is the I/O.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import psycopg
from psycopg import AsyncConnection, sql

from config.retention import RetentionPolicy
from sinks.rows import TABLE_RETENTION_CLASS

# Hypertables and their time column.
TIME_COLUMNS: dict[str, str] = {
    "positions": "ts",
    "stops": "start_ts",
    "trips": "start_ts",
    "courier_events": "ts",
}
# Plain tables cleaned by expires_at alone.
PLAIN_TABLES: tuple[str, ...] = ("latest_positions", "courier_daily", "access_audit")


def longest_period(policy: RetentionPolicy, retention_class: str) -> timedelta:
    """The longest period of ``retention_class`` for any org (default or override)."""
    periods = [policy.period(retention_class)]
    periods += [o[retention_class] for o in policy.org_overrides.values() if retention_class in o]
    return max(periods)


def shortest_period(policy: RetentionPolicy, retention_class: str) -> timedelta:
    periods = [policy.period(retention_class)]
    periods += [o[retention_class] for o in policy.org_overrides.values() if retention_class in o]
    return min(periods)


@dataclass(frozen=True, slots=True)
class TablePlan:
    """What retention does to one hypertable at ``now``.

    ``drop_before``: chunks entirely older than this are dropped (every row in them is past its
    longest possible period). ``delete_before``: rows older than this are candidates for the
    row-level delete by ``expires_at``; younger rows cannot have expired under any override.
    """

    table: str
    time_column: str
    retention_class: str
    drop_before: datetime
    delete_before: datetime


def plan(policy: RetentionPolicy, now: datetime) -> list[TablePlan]:
    """The retention plan for every hypertable. Pure."""
    plans = []
    for table, time_column in TIME_COLUMNS.items():
        retention_class = TABLE_RETENTION_CLASS[table]
        plans.append(
            TablePlan(
                table=table,
                time_column=time_column,
                retention_class=retention_class,
                drop_before=now - longest_period(policy, retention_class),
                delete_before=now - shortest_period(policy, retention_class),
            )
        )
    return plans


@dataclass
class RetentionReport:
    edition: str
    now: datetime
    chunks_dropped: dict[str, int] = field(default_factory=dict)
    rows_deleted: dict[str, int] = field(default_factory=dict)
    policies: list[str] = field(default_factory=list)
    couriers_forgotten: int = 0  # erasure requests whose courier id was cleared


async def timescale_edition(conn: AsyncConnection[Any]) -> str:
    """``apache`` or ``timescale`` (the licensed, community edition)."""
    row = await (await conn.execute("SHOW timescaledb.license")).fetchone()
    return str(row[0]) if row else "apache"


async def run_retention(
    conn: AsyncConnection[Any], policy: RetentionPolicy, now: datetime | None = None
) -> RetentionReport:
    """Apply retention in one transaction per table; ``now`` defaults to the DB clock.

    ``conn`` must be the owner's, in autocommit mode: each table gets its own transaction, so a
    long delete on one table holds no locks on the others.
    """
    if now is None:
        row = await (await conn.execute("SELECT now()")).fetchone()
        assert row is not None
        now = row[0]
    assert now is not None
    edition = await timescale_edition(conn)
    report = RetentionReport(edition=edition, now=now)
    for item in plan(policy, now):
        async with conn.transaction():
            if edition == "apache":
                cursor = await conn.execute(
                    "SELECT drop_chunks(%s::regclass, older_than => %s::timestamptz)",
                    (item.table, item.drop_before),
                )
                report.chunks_dropped[item.table] = len(await cursor.fetchall())
            else:
                report.policies.append(await _licensed_policies(conn, item, policy))
            cursor = await conn.execute(
                sql.SQL("DELETE FROM {} WHERE {} < %s AND expires_at <= %s").format(
                    sql.Identifier(item.table), sql.Identifier(item.time_column)
                ),
                (item.delete_before, now),
            )
            report.rows_deleted[item.table] = max(cursor.rowcount, 0)
    for table in PLAIN_TABLES:
        async with conn.transaction():
            cursor = await conn.execute(
                sql.SQL("DELETE FROM {} WHERE expires_at <= %s").format(sql.Identifier(table)),
                (now,),
            )
            report.rows_deleted[table] = max(cursor.rowcount, 0)
    async with conn.transaction():
        # erasure requests (migration 0012): the courier is forgotten once no log copy of
        # their records is left; the receipt, which names no courier, goes at its own time
        cursor = await conn.execute("DELETE FROM privacy_requests WHERE expires_at <= %s", (now,))
        report.rows_deleted["privacy_requests"] = max(cursor.rowcount, 0)
        cursor = await conn.execute(
            "UPDATE privacy_requests SET courier_id = NULL"
            " WHERE courier_id IS NOT NULL AND forget_courier_at <= %s",
            (now,),
        )
        report.couriers_forgotten = max(cursor.rowcount, 0)
    return report


async def _licensed_policies(
    conn: AsyncConnection[Any], item: TablePlan, policy: RetentionPolicy
) -> str:
    """Background retention and compression policies (licensed edition), kept in sync."""
    longest = longest_period(policy, item.retention_class)
    await conn.execute("SELECT remove_retention_policy(%s::regclass, if_exists => true)", (
        item.table,
    ))  # fmt: skip
    await conn.execute(
        "SELECT add_retention_policy(%s::regclass, drop_after => %s::interval)",
        (item.table, longest),
    )
    try:
        # TimescaleDB refuses compression on some configurations (row-level security on the
        # hypertable among them, in some versions): the retention policy stands on its own.
        async with conn.transaction():
            await conn.execute(
                sql.SQL(
                    "ALTER TABLE {} SET (timescaledb.compress,"
                    " timescaledb.compress_segmentby = 'org_id, courier_id',"
                    " timescaledb.compress_orderby = {})"
                ).format(sql.Identifier(item.table), sql.Literal(f"{item.time_column} DESC"))
            )
            await conn.execute(
                "SELECT add_compression_policy(%s::regclass,"
                " compress_after => INTERVAL '7 days', if_not_exists => true)",
                (item.table,),
            )
    except psycopg.Error as exc:
        return f"{item.table}: retention {longest}; compression unavailable ({exc})"
    return f"{item.table}: retention {longest}, compression after 7 days"

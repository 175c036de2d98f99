"""Daily distance and stop time per courier (``courier_daily``, class daily_aggregates).

``courier_daily`` is a table the sink refreshes (re-aggregating the last few UTC days and
upserting them), not a materialised view: a view over ``positions`` would lose its history when
raw fixes expire after 90 days while aggregates are kept for 730, and views cannot carry the
per-org row-level security. Days are UTC days, like the processors' odometer.

Distance is the sum of the clean fixes' ``distance_m`` (late fixes excluded: their distance is
not part of the courier's path); stop time is the part of each stop that falls in the day.

With the Timescale-licensed edition the distance comes from the continuous aggregate
``courier_daily_distance`` over ``positions`` (kept up to date by TimescaleDB's own policy, so a
refresh no longer scans raw fixes); stop time is still computed from ``stops`` (few rows per
courier per day, and a stop crossing midnight must be split, which a continuous aggregate cannot
do). With the Apache edition, where continuous aggregates are unavailable, both come from the raw
tables.
"""

from __future__ import annotations

from datetime import date, timedelta
from typing import Any

from psycopg import AsyncConnection
from psycopg.types.json import Jsonb

from config.retention import RetentionPolicy

DIST_FROM_POSITIONS = """
    SELECT org_id, courier_id, (ts AT TIME ZONE 'UTC')::date AS day,
           coalesce(sum(distance_m) FILTER (WHERE NOT is_late), 0) AS distance_m,
           count(*)::int AS fix_count
    FROM positions
    WHERE ts >= (%(since)s::date)::timestamp AT TIME ZONE 'UTC'
    GROUP BY 1, 2, 3"""

DIST_FROM_CAGG = """
    SELECT org_id, courier_id, (bucket AT TIME ZONE 'UTC')::date AS day,
           coalesce(distance_m, 0) AS distance_m, fix_count::int AS fix_count
    FROM courier_daily_distance
    WHERE bucket >= (%(since)s::date)::timestamp AT TIME ZONE 'UTC'"""

# Licensed edition only: real-time continuous aggregate of daily distance per courier.
CREATE_CAGG = """
CREATE MATERIALIZED VIEW IF NOT EXISTS courier_daily_distance
WITH (timescaledb.continuous, timescaledb.materialized_only = false) AS
SELECT org_id, courier_id, time_bucket(INTERVAL '1 day', ts) AS bucket,
       sum(distance_m) FILTER (WHERE NOT is_late) AS distance_m, count(*) AS fix_count
FROM positions
GROUP BY org_id, courier_id, bucket
WITH NO DATA"""
CAGG_POLICY = """
SELECT add_continuous_aggregate_policy('courier_daily_distance',
    start_offset => INTERVAL '7 days', end_offset => INTERVAL '1 hour',
    schedule_interval => INTERVAL '30 minutes', if_not_exists => true)"""

REFRESH = """
WITH dist AS ({dist}
), stop_days AS (
    SELECT s.org_id, s.courier_id, g.day::date AS day,
           extract(epoch FROM
               least(s.end_ts, (g.day + interval '1 day') AT TIME ZONE 'UTC')
               - greatest(s.start_ts, g.day AT TIME ZONE 'UTC'))::float8 AS seconds,
           (s.start_ts AT TIME ZONE 'UTC')::date = g.day::date AS starts_here
    FROM stops s,
         LATERAL generate_series(date_trunc('day', s.start_ts AT TIME ZONE 'UTC'),
                                 date_trunc('day', s.end_ts AT TIME ZONE 'UTC'),
                                 interval '1 day') AS g(day)
    WHERE s.end_ts >= (%(since)s::date)::timestamp AT TIME ZONE 'UTC'
      AND s.start_ts >= (%(since)s::date - 30)::timestamp AT TIME ZONE 'UTC'
), st AS (
    SELECT org_id, courier_id, day, sum(seconds) AS stop_time_s,
           (count(*) FILTER (WHERE starts_here))::int AS stop_count
    FROM stop_days WHERE day >= %(since)s::date
    GROUP BY 1, 2, 3
), merged AS (
    SELECT org_id, courier_id, day,
           coalesce(dist.distance_m, 0) AS distance_m, coalesce(dist.fix_count, 0) AS fix_count,
           coalesce(st.stop_time_s, 0) AS stop_time_s, coalesce(st.stop_count, 0) AS stop_count
    FROM dist FULL JOIN st USING (org_id, courier_id, day)
)
INSERT INTO courier_daily AS c (org_id, courier_id, day, distance_m, fix_count, stop_time_s,
                                stop_count, expires_at, refreshed_at)
SELECT org_id, courier_id, day, distance_m, fix_count, stop_time_s, stop_count,
       (day + 1)::timestamp AT TIME ZONE 'UTC'
           + make_interval(secs => coalesce((%(overrides)s::jsonb ->> org_id)::float8,
                                            %(period_s)s)),
       now()
FROM merged
ON CONFLICT (org_id, courier_id, day) DO UPDATE SET
    distance_m = EXCLUDED.distance_m, fix_count = EXCLUDED.fix_count,
    stop_time_s = EXCLUDED.stop_time_s, stop_count = EXCLUDED.stop_count,
    expires_at = EXCLUDED.expires_at, refreshed_at = now()
"""


def override_seconds(policy: RetentionPolicy, retention_class: str) -> dict[str, float]:
    """Per-org periods of ``retention_class`` in seconds (orgs without an override omitted)."""
    return {
        org: periods[retention_class].total_seconds()
        for org, periods in policy.org_overrides.items()
        if retention_class in periods
    }


async def ensure_continuous_aggregate(conn: AsyncConnection[Any]) -> None:
    """Create ``courier_daily_distance`` and its refresh policy (licensed edition only).

    ``conn`` must be in autocommit mode: a continuous aggregate cannot be made in a transaction.
    """
    await conn.execute(CREATE_CAGG)
    await conn.execute(CAGG_POLICY)


async def refresh_daily(
    conn: AsyncConnection[Any], policy: RetentionPolicy, since: date, edition: str = "apache"
) -> int:
    """Recompute ``courier_daily`` for UTC days from ``since`` on; returns rows upserted.

    Idempotent: a refresh of the same days with the same data writes the same values.
    ``edition`` is ``SHOW timescaledb.license``; with ``timescale`` the distances come from the
    continuous aggregate (created on first use; ``conn`` must then be in autocommit mode).
    """
    licensed = edition == "timescale"
    if licensed:
        await ensure_continuous_aggregate(conn)
    statement = REFRESH.replace("{dist}", DIST_FROM_CAGG if licensed else DIST_FROM_POSITIONS)
    async with conn.transaction():
        cursor = await conn.execute(
            statement,
            {
                "since": since,
                "overrides": Jsonb(override_seconds(policy, "daily_aggregates")),
                "period_s": policy.period("daily_aggregates").total_seconds(),
            },
        )
        return max(cursor.rowcount, 0)


def lookback_start(today: date, days: int) -> date:
    """The first day a refresh redoes: ``days`` back from ``today`` (today included)."""
    return today - timedelta(days=days - 1)

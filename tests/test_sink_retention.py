"""Retention and daily aggregates on the real database (Apache edition here)."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import UTC, date, datetime, timedelta

import psycopg
import pytest
from hypothesis import given
from hypothesis import strategies as st
from sink_support import event, fix, stop, trip

from config.retention import RetentionPolicy
from config.settings import get_settings
from sinks.aggregates import lookback_start, refresh_daily
from sinks.retention import longest_period, plan, run_retention, shortest_period
from sinks.rows import TOPIC_TABLES
from sinks.writer import write_batch

DAY = timedelta(days=1)
NOW = datetime(2026, 6, 15, 12, 0, tzinfo=UTC)


def policy_with_short_org() -> RetentionPolicy:
    base = RetentionPolicy.load(get_settings().retention_file)
    return RetentionPolicy(
        periods=base.periods,
        org_overrides={"short": {"raw_fixes": timedelta(days=30), "stops": timedelta(days=60)}},
    )


async def write(url: str, records: list) -> None:
    grouped: dict = {}
    for record in records:
        table = next(t for t in TOPIC_TABLES.values() if isinstance(record, t.record_type))
        grouped.setdefault(table, []).append(table.to_row(record))
    async with await psycopg.AsyncConnection.connect(url) as conn:
        await write_batch(conn, grouped)


def expiring_fix(org: str, age: timedelta, period: timedelta, label: str):
    ts = NOW - age
    return fix(org=org, courier="c1", ts=ts, fix_id=label, expires_at=ts + period)


@pytest.mark.stack
async def test_retention_removes_exactly_what_expired(database_url: str) -> None:
    policy = policy_with_short_org()
    raw, short = policy.period("raw_fixes"), policy.period("raw_fixes", "short")
    fixes = [
        expiring_fix("acme", 100 * DAY, raw, "acme-100d"),  # whole chunk expired
        expiring_fix("acme", raw + timedelta(seconds=1), raw, "acme-90d+1s"),  # just expired
        expiring_fix("acme", raw - timedelta(seconds=1), raw, "acme-90d-1s"),  # just kept
        expiring_fix("acme", 10 * DAY, raw, "acme-10d"),
        expiring_fix("short", 40 * DAY, short, "short-40d"),  # the org's override: expired
        expiring_fix("short", short + timedelta(seconds=1), short, "short-30d+1s"),
        expiring_fix("short", short - timedelta(seconds=1), short, "short-30d-1s"),
        expiring_fix("short", 100 * DAY, short, "short-100d"),
    ]
    stops = [
        stop(org="acme", start=NOW - 200 * DAY, expires_at=NOW - 20 * DAY, stop_id="s-old"),
        stop(org="acme", start=NOW - 170 * DAY, expires_at=NOW + 10 * DAY, stop_id="s-kept"),
        stop(org="short", start=NOW - 70 * DAY, expires_at=NOW - 10 * DAY, stop_id="s-short"),
    ]
    trips = [
        trip(org="acme", start=NOW - 181 * DAY, expires_at=NOW - DAY, trip_id="t-old"),
        trip(org="acme", start=NOW - 179 * DAY, expires_at=NOW + DAY, trip_id="t-kept"),
    ]
    events = [
        event(org="acme", ts=NOW - 95 * DAY, expires_at=NOW - 5 * DAY, event_id="e-old"),
        event(org="acme", ts=NOW - 85 * DAY, expires_at=NOW + 5 * DAY, event_id="e-kept"),
    ]
    await write(database_url, fixes + stops + trips + events)
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO courier_daily (org_id, courier_id, day, expires_at) VALUES"
            " ('acme', 'c1', '2020-01-01', %s), ('acme', 'c1', '2026-06-01', %s)",
            (NOW - DAY, NOW + DAY),
        )
        conn.execute("UPDATE latest_positions SET expires_at = %s WHERE org_id = 'short'", (NOW,))

    async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as conn:
        report = await run_retention(conn, policy, now=NOW)
    assert report.edition == "apache"
    assert report.chunks_dropped["positions"] >= 1  # the 100-day-old chunks went whole

    with psycopg.connect(database_url) as conn:
        kept = {r[0] for r in conn.execute("SELECT fix_id FROM positions").fetchall()}
        assert kept == {"acme-90d-1s", "acme-10d", "short-30d-1s"}
        assert {r[0] for r in conn.execute("SELECT stop_id FROM stops")} == {"s-kept"}
        assert {r[0] for r in conn.execute("SELECT trip_id FROM trips")} == {"t-kept"}
        assert {r[0] for r in conn.execute("SELECT event_id FROM courier_events")} == {"e-kept"}
        assert conn.execute("SELECT org_id FROM latest_positions").fetchall() == [("acme",)]
        assert conn.execute("SELECT day FROM courier_daily").fetchall() == [(date(2026, 6, 1),)]

    # A second run finds nothing more to do.
    async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as conn:
        again = await run_retention(conn, policy, now=NOW)
    assert set(again.rows_deleted.values()) == {0}
    assert set(again.chunks_dropped.values()) == {0}


@pytest.mark.stack
async def test_erasure_requests_forget_the_courier_then_the_receipt_goes(
    database_url: str,
) -> None:
    """An erasure request keeps the courier's id only while log copies may exist; the receipt
    (no courier in it) stays until its own class expires."""
    policy = RetentionPolicy.load(get_settings().retention_file)
    async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as conn:
        for courier, forget, expire in (("fresh", "1 day", "3 years"), ("old", "-1 day", "3 years"),
                                        ("ancient", "-2 days", "-1 day")):  # fmt: skip
            await conn.execute(
                "INSERT INTO privacy_requests (kind, org_id, courier_id, requested_by,"
                " forget_courier_at, expires_at, receipt)"
                " VALUES ('delete', 'acme', %s, 'op', now() + %s::interval,"
                " now() + %s::interval, %s)",
                (courier, forget, expire, json.dumps({"label": courier})),
            )
        report = await run_retention(conn, policy)
        cursor = await conn.execute(
            "SELECT receipt->>'label', courier_id FROM privacy_requests ORDER BY 1"
        )
        assert await cursor.fetchall() == [("fresh", "fresh"), ("old", None)]
    assert report.couriers_forgotten == 1
    assert report.rows_deleted["privacy_requests"] == 1


def test_retention_command_reports_edition(database_url: str) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "geostream.cli", "retention", "run", "--json"],
        capture_output=True, text=True, check=True,
        env={"GEOSTREAM_DATABASE_URL": database_url, "PATH": "/usr/bin:/bin"},
    )  # fmt: skip
    report = json.loads(out.stdout)
    assert report["edition"] == "apache"
    assert set(report["rows_deleted"]) >= {"positions", "stops", "trips", "courier_events"}


@pytest.mark.stack
async def test_daily_aggregates_split_stops_at_midnight(database_url: str) -> None:
    day1 = datetime(2026, 6, 14, tzinfo=UTC)
    fixes = [
        fix(ts=day1 + timedelta(hours=10), distance_m=100.0),
        fix(ts=day1 + timedelta(hours=11), distance_m=50.0),
        fix(ts=day1 + timedelta(hours=12), distance_m=999.0, is_late=True),  # not counted
        fix(ts=day1 + DAY + timedelta(hours=1), distance_m=20.0),
        fix(org="other", ts=day1 + timedelta(hours=1), distance_m=7.0),
    ]
    overnight = stop(start=day1 + timedelta(hours=23), end=day1 + DAY + timedelta(hours=1),
                     duration_s=7200.0)  # fmt: skip
    await write(database_url, [*fixes, overnight])
    policy = RetentionPolicy.load(get_settings().retention_file)
    async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as conn:
        assert await refresh_daily(conn, policy, date(2026, 6, 14)) == 3
        assert await refresh_daily(conn, policy, date(2026, 6, 14)) == 3  # idempotent
    with psycopg.connect(database_url) as conn:
        rows = conn.execute(
            "SELECT org_id, day, distance_m, fix_count, stop_time_s, stop_count, expires_at"
            " FROM courier_daily ORDER BY org_id, day"
        ).fetchall()
    expires = [datetime(2026, 6, d, tzinfo=UTC) + timedelta(days=730) for d in (15, 16, 15)]
    assert rows == [
        ("acme", date(2026, 6, 14), 150.0, 3, 3600.0, 1, expires[0]),
        ("acme", date(2026, 6, 15), 20.0, 1, 3600.0, 0, expires[1]),
        ("other", date(2026, 6, 14), 7.0, 1, 0.0, 0, expires[2]),
    ]
    # Aggregates outlive the raw fixes: deleting positions and refreshing keeps the day.
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("DELETE FROM positions")
    async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as conn:
        await refresh_daily(conn, policy, date(2026, 6, 14))
    with psycopg.connect(database_url) as conn:
        assert conn.execute(
            "SELECT distance_m FROM courier_daily WHERE org_id = 'other'"
        ).fetchone() == (7.0,)


periods = st.integers(min_value=1, max_value=3000).map(lambda d: timedelta(days=d))


@given(
    default=periods,
    overrides=st.dictionaries(st.sampled_from(["a", "b", "c"]), periods, max_size=3),
)
def test_plan_never_drops_a_chunk_someone_may_keep(default, overrides) -> None:
    """Chunks dropped are older than every org's period; row deletes cover the shortest."""
    policy = RetentionPolicy(
        periods={c: default for c in ("raw_fixes", "stops", "trips", "events")},
        org_overrides={org: {"raw_fixes": p} for org, p in overrides.items()},
    )
    for item in plan(policy, NOW):
        for org in [None, *overrides]:
            period = policy.period(item.retention_class, org)
            # A row at drop_before or older is past its period whatever its org.
            assert item.drop_before <= NOW - period
            # A row younger than delete_before cannot have expired for any org.
            assert item.delete_before >= NOW - period
        assert longest_period(policy, item.retention_class) >= shortest_period(
            policy, item.retention_class
        )


def test_lookback_includes_today() -> None:
    assert lookback_start(date(2026, 6, 15), 1) == date(2026, 6, 15)
    assert lookback_start(date(2026, 6, 15), 3) == date(2026, 6, 13)

"""The sink's writes against the real TimescaleDB: idempotence, upserts, geometry, privacy."""

from __future__ import annotations

from datetime import timedelta

import psycopg
import pytest
from sink_support import NOW, count, event, fix, stop, trip

from config.retention import RetentionPolicy
from config.settings import Settings
from geostream.db import create_pool
from ingest.tokens import TokenStore
from processors.offline import read_gpx
from schemas.wire import encode
from sinks.decode import decode_message
from sinks.erasure import erase_in_database
from sinks.privacy import COURIER_TABLES, export_courier
from sinks.rows import TOPIC_TABLES
from sinks.writer import write_batch

pytestmark = pytest.mark.stack


def batch_of(*records: object) -> dict:
    grouped: dict = {}
    for record in records:
        table = next(t for t in TOPIC_TABLES.values() if isinstance(record, t.record_type))
        grouped.setdefault(table, []).append(table.to_row(record))
    return grouped


async def write(url: str, *records: object) -> dict[str, int]:
    async with await psycopg.AsyncConnection.connect(url) as conn:
        return (await write_batch(conn, batch_of(*records))).rows


async def test_every_table_written_once_however_often_replayed(database_url: str) -> None:
    records = [fix(), fix(courier="c2"), stop(), trip(), event()]
    first = await write(database_url, *records)
    assert first == {
        "positions": 2, "latest_positions": 2, "stops": 1, "trips": 1, "courier_events": 1
    }  # fmt: skip
    again = await write(database_url, *records, *records)
    assert again == {
        "positions": 0, "latest_positions": 0, "stops": 0, "trips": 0, "courier_events": 0
    }  # fmt: skip
    for table, expected in [("positions", 2), ("latest_positions", 2), ("stops", 1),
                            ("trips", 1), ("courier_events", 1)]:  # fmt: skip
        assert count(database_url, table) == expected


async def test_positions_keep_every_field_and_point(database_url: str) -> None:
    f = fix(stop_id="s1", trip_id="t1", is_late=True, derived_speed_mps=4.0, zone_ids=("a", "b"))
    await write(database_url, f)
    with psycopg.connect(database_url) as conn:
        row = conn.execute(
            "SELECT ST_X(geom), ST_Y(geom), ST_SRID(geom), zone_ids, stop_id, trip_id, is_late,"
            " distance_m, odometer_m, derived_speed_mps, ts, expires_at FROM positions"
        ).fetchone()
    assert row == (f.lon, f.lat, 4326, ["a", "b"], "s1", "t1", True, 12.5, 1000.0, 4.0, f.ts,
                   f.expires_at)  # fmt: skip


@pytest.mark.parametrize("zones", [(), ("z",), ("zone-1", "zone-2", "ü-ß", "a,b"), ("x",) * 40])
async def test_zone_arrays_arrive_intact(database_url: str, zones: tuple[str, ...]) -> None:
    await write(database_url, fix(zone_ids=zones))
    with psycopg.connect(database_url) as conn:
        assert conn.execute("SELECT zone_ids FROM positions").fetchone() == (list(zones),)
        assert conn.execute("SELECT zone_ids FROM latest_positions").fetchone() == (list(zones),)


async def test_latest_position_only_moves_forward(database_url: str) -> None:
    old, new = fix(ts=NOW - timedelta(minutes=10)), fix(ts=NOW - timedelta(minutes=1))
    late = fix(ts=NOW - timedelta(seconds=30), is_late=True)
    await write(database_url, new)
    await write(database_url, old, late)  # older and late fixes never replace the latest
    with psycopg.connect(database_url) as conn:
        assert conn.execute("SELECT fix_id FROM latest_positions").fetchall() == [(new.fix_id,)]
    newest = fix(ts=NOW)
    await write(database_url, newest, old)  # the newest of a batch wins
    with psycopg.connect(database_url) as conn:
        assert conn.execute("SELECT fix_id FROM latest_positions").fetchall() == [(newest.fix_id,)]


async def test_stop_open_then_closed_keeps_newest_version(database_url: str) -> None:
    start = NOW - timedelta(hours=1)
    opened = stop(start=start, end=start + timedelta(minutes=2), duration_s=120, is_open=True)
    grown = stop(start=start, end=start + timedelta(minutes=4), duration_s=240, is_open=True)
    closed = stop(start=start, end=start + timedelta(minutes=6), duration_s=360, is_open=False)
    await write(database_url, opened)
    await write(database_url, closed, grown)  # both in one batch: the closed one wins
    await write(database_url, opened, grown)  # a replay of older versions changes nothing
    with psycopg.connect(database_url) as conn:
        rows = conn.execute("SELECT is_open, duration_s, end_ts FROM stops").fetchall()
    assert rows == [(False, 360.0, closed.end)]


async def test_trip_route_is_a_linestring(database_url: str) -> None:
    t = trip()
    single = trip(courier="c9", path=((76.9, 43.2),))
    await write(database_url, t, single)
    with psycopg.connect(database_url) as conn:
        rows = dict(
            conn.execute(
                "SELECT courier_id, ST_AsText(path) FROM trips ORDER BY courier_id"
            ).fetchall()
        )
    assert rows["c1"] == "LINESTRING(76.88 43.23,76.89 43.24,76.9 43.25)"
    assert rows["c9"] == "LINESTRING(76.9 43.2,76.9 43.2)"


async def test_constraint_violation_rolls_back_whole_batch(database_url: str) -> None:
    good = fix()
    bad = fix(courier="c2")
    grouped = batch_of(good, bad)
    positions = TOPIC_TABLES["fixes.clean"]
    # NaN is valid float8 but the geometry constructor refuses nothing; a NULL org_id is
    # what a row-level integrity error looks like.
    grouped[positions][1] = (*grouped[positions][1][:1], None, *grouped[positions][1][2:])
    async with await psycopg.AsyncConnection.connect(database_url) as conn:
        with pytest.raises(psycopg.errors.NotNullViolation):
            await write_batch(conn, grouped)
    assert count(database_url, "positions") == 0


async def test_export_then_erase_a_courier(settings: Settings, database_url: str) -> None:
    mine = [fix(), fix(), stop(), trip(), event()]
    others = [fix(courier="c2"), fix(org="other"), stop(org="other")]
    await write(database_url, *mine, *others)
    async with create_pool(settings) as pool:
        store = TokenStore(pool)
        await store.create("acme", "c1", "phone-1")
        await store.create("acme", "c1", "phone-2")
        await store.create("acme", "c2", "phone-3")
    async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as conn:
        await conn.execute(
            "INSERT INTO courier_daily (org_id, courier_id, day, expires_at)"
            " VALUES ('acme', 'c1', current_date, now() + interval '1 day')"
        )
        exported = await export_courier(conn, "acme", "c1")
        assert exported["counts"] == {
            "positions": 2, "stops": 1, "trips": 1, "courier_events": 1,
            "latest_positions": 1, "courier_daily": 1,
        }  # fmt: skip
        point = exported["tables"]["positions"][0]
        assert point["geom"] == {"type": "Point", "coordinates": [76.8897, 43.2389]}
        assert {p["fix_id"] for p in exported["tables"]["positions"]} == {
            mine[0].fix_id,
            mine[1].fix_id,
        }
        assert exported["tables"]["trips"][0]["path"]["type"] == "LineString"

        policy = RetentionPolicy.load(settings.retention_file)
        erased = await erase_in_database(
            conn, settings, policy, "acme", "c1", "admin:test", as_api=False
        )
        assert erased.deleted == exported["counts"]
        assert set(erased.deleted) == set(COURIER_TABLES)  # the SQL function misses no table
        assert erased.devices == ("phone-1", "phone-2")
        again = await export_courier(conn, "acme", "c1")
        assert set(again["counts"].values()) == {0}
        cursor = await conn.execute(
            "SELECT org_id, courier_id, requested_by, forget_courier_at > requested_at,"
            " expires_at > forget_courier_at FROM privacy_requests WHERE request_id = %s",
            (erased.request_id,),
        )
        assert await cursor.fetchall() == [("acme", "c1", "admin:test", True, True)]
    # Nobody else's rows or tokens were touched; the courier's tokens are revoked.
    assert count(database_url, "positions") == 2
    assert count(database_url, "stops") == 1
    assert count(database_url, "latest_positions") == 2
    assert count(database_url, "device_tokens", "revoked_at IS NULL") == 1
    assert count(database_url, "device_tokens", "courier_id = 'c2' AND revoked_at IS NULL") == 1


def test_decode_message_maps_each_topic() -> None:
    for record in (fix(), stop(), trip(), event()):
        logical = next(n for n, t in TOPIC_TABLES.items() if isinstance(record, t.record_type))
        decoded = decode_message(logical, encode(record))
        assert decoded.row == decoded.table.to_row(record)


async def test_privacy_commands(settings: Settings, database_url: str) -> None:
    import asyncio
    import json
    import subprocess
    import sys

    await write(database_url, fix(courier="c5"), stop(courier="c5"), fix(courier="c6"))
    env = {
        "GEOSTREAM_DATABASE_URL": database_url,
        "GEOSTREAM_TOPIC_PREFIX": settings.topic_prefix,
        "PATH": "/usr/bin:/bin",
    }
    base = [sys.executable, "-m", "geostream.cli", "admin"]
    exported = await asyncio.to_thread(
        subprocess.run,
        [*base, "export-courier", "--org", "acme", "--courier", "c5"],
        capture_output=True, text=True, check=True, env=env,
    )  # fmt: skip
    document = json.loads(exported.stdout)
    assert document["counts"]["positions"] == 1
    assert document["counts"]["stops"] == 1
    gpx = await asyncio.to_thread(
        subprocess.run,
        [*base, "export-courier", "--org", "acme", "--courier", "c5", "--format", "gpx"],
        capture_output=True, text=True, check=True, env=env,
    )  # fmt: skip
    assert len(list(read_gpx(gpx.stdout, "c5"))) == 1
    audited = await asyncio.to_thread(
        subprocess.run,
        [*base, "audit", "--org", "acme", "--courier", "c5"],
        capture_output=True, text=True, check=True, env=env,
    )  # fmt: skip
    reads = [json.loads(line) for line in audited.stdout.splitlines()]
    assert [(r["action"], r["detail"]) for r in reads] == [
        ("export", {"format": "gpx"}), ("export", {"format": "json"})
    ]  # fmt: skip
    assert all(r["accessor"].startswith("admin:") for r in reads)
    refused = await asyncio.to_thread(
        subprocess.run,
        [*base, "delete-courier", "--org", "acme", "--courier", "c5"],
        capture_output=True, text=True, env=env,
    )  # fmt: skip
    assert refused.returncode == 2
    assert "--yes" in refused.stderr
    assert count(database_url, "positions", "courier_id = 'c5'") == 1
    deleted = await asyncio.to_thread(
        subprocess.run,
        [*base, "delete-courier", "--org", "acme", "--courier", "c5", "--yes"],
        capture_output=True, text=True, check=True, env=env,
    )  # fmt: skip
    receipt = json.loads(deleted.stdout)
    assert receipt["rows_deleted"]["positions"] == 1
    assert receipt["requested_by"].startswith("admin:")
    stored = await asyncio.to_thread(
        count,
        database_url,
        "privacy_requests",
        f"receipt->>'request_id' = '{receipt['request_id']}'",
    )
    assert stored == 1
    assert count(database_url, "positions", "courier_id = 'c5'") == 0
    assert count(database_url, "positions", "courier_id = 'c6'") == 1
    bad = await asyncio.to_thread(
        subprocess.run,
        [*base, "export-courier", "--org", "no spaces", "--courier", "c5"],
        capture_output=True, text=True, env=env,
    )  # fmt: skip
    assert bad.returncode == 2
    assert "invalid org id" in bad.stderr

"""The sink's pure parts: record -> row mapping, WKB, decoding, error classes, dead letters."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import orjson
import psycopg
import pytest
import shapely
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError
from sink_support import event, fix, stop, trip

from schemas.records import EnrichedFix, Rejection
from schemas.wire import adapter, encode, validate
from sinks.decode import Unwritable, decode_message, fields_validator
from sinks.rows import (
    COURIER_EVENTS,
    LATEST,
    POSITIONS,
    STOPS,
    TABLES,
    TOPIC_TABLES,
    TRIPS,
    latest_rows,
    linestring_ewkb,
    point_ewkb,
    record_fields,
    stop_version,
    text_array,
)
from sinks.sink import Reject, permanent_reason, rejection

lon = st.floats(min_value=-180, max_value=180, allow_nan=False)
lat = st.floats(min_value=-90, max_value=90, allow_nan=False)


def test_every_table_declares_a_type_per_column() -> None:
    for table in TABLES:
        assert len(table.columns) == len(table.types), table.name
    samples = {POSITIONS: fix(), STOPS: stop(), TRIPS: trip(), COURIER_EVENTS: event()}
    for table, record in samples.items():
        assert len(table.to_row(record)) == len(table.columns), table.name


def test_position_row_carries_the_fields_by_column() -> None:
    f = fix(zone_ids=("a", "b"), stop_id="s", trip_id="t", is_late=True)
    row = dict(zip(POSITIONS.columns, POSITIONS.to_row(f), strict=True))
    point = shapely.from_wkb(row["geom"])
    assert (point.x, point.y) == (f.lon, f.lat)
    assert shapely.get_srid(point) == 4326
    assert row["zone_ids"] == text_array(("a", "b"))
    assert (row["stop_id"], row["trip_id"], row["is_late"]) == ("s", "t", True)
    assert row["ts"] == f.ts
    assert row["expires_at"] == f.expires_at
    assert row["received_at"] == f.received_at


@given(st.lists(st.tuples(lon, lat), min_size=1, max_size=50))
def test_linestring_ewkb_round_trips(path: list[tuple[float, float]]) -> None:
    geometry = shapely.from_wkb(linestring_ewkb(path))
    assert geometry.geom_type == "LineString"
    assert shapely.get_srid(geometry) == 4326
    expected = path if len(path) > 1 else path * 2
    assert [tuple(c) for c in geometry.coords] == expected


@given(lon, lat)
def test_point_ewkb_round_trips(x: float, y: float) -> None:
    point = shapely.from_wkb(point_ewkb(x, y))
    assert (point.x, point.y, shapely.get_srid(point)) == (x, y, 4326)


def test_linestring_needs_a_point() -> None:
    with pytest.raises(ValueError, match="at least one point"):
        linestring_ewkb(())


offsets = st.lists(
    st.tuples(st.sampled_from(["c1", "c2", "c3"]), st.integers(0, 50), st.booleans()),
    min_size=1,
    max_size=40,
)


@given(offsets)
def test_latest_rows_pick_the_newest_non_late_fix_per_courier(spec) -> None:
    base = datetime(2026, 6, 1, tzinfo=UTC)
    fixes = [
        fix(courier=c, ts=base + timedelta(seconds=s), is_late=late, fix_id=f"f{i:03d}")
        for i, (c, s, late) in enumerate(spec)
    ]
    latest = latest_rows([POSITIONS.to_row(f) for f in fixes])
    by_courier = {row[LATEST.columns.index("courier_id")]: row for row in latest}
    for courier in {c for c, _, _ in spec}:
        candidates = [f for f in fixes if f.courier_id == courier and not f.is_late]
        if not candidates:
            assert courier not in by_courier
            continue
        best = max(candidates, key=lambda f: (f.ts, f.fix_id))
        assert by_courier[courier] == LATEST.to_row(best)


times = st.datetimes(
    min_value=datetime(2026, 1, 1), max_value=datetime(2026, 12, 31), timezones=st.just(UTC)
)


@given(st.lists(st.tuples(st.booleans(), times, st.integers(1, 100)), min_size=1, max_size=10))
def test_stop_versions_have_one_winner_whatever_the_order(versions) -> None:
    """Closed beats open, then later end, then more fixes: the order the upsert applies."""
    best = max(versions, key=lambda v: stop_version(*v))
    for v in versions:
        assert stop_version(*v) <= stop_version(*best)
        if not v[0] and best[0]:  # a closed version exists -> the winner is closed
            raise AssertionError("an open version beat a closed one")


def test_decode_reasons_are_machine_readable() -> None:
    cases = {
        b"{nope": "malformed_json",
        b"": "empty_value",
        orjson.dumps({**orjson.loads(encode(fix())), "lat": 91}): "invalid_less_than_equal",
        orjson.dumps({**orjson.loads(encode(fix())), "ts": None}): "invalid_datetime_type",
    }
    for value, reason in cases.items():
        with pytest.raises(Unwritable) as caught:
            decode_message("fixes.clean", value)
        assert caught.value.reason == reason
    with pytest.raises(Unwritable, match="unknown_topic"):
        decode_message("fixes.raw", encode(fix()))
    empty_path = orjson.dumps({**orjson.loads(encode(trip())), "path": []})
    with pytest.raises(Unwritable, match="unmappable_record"):
        decode_message("trips", empty_path)


def test_topics_map_to_their_tables() -> None:
    assert {t: table.name for t, table in TOPIC_TABLES.items()} == {
        "fixes.clean": "positions", "stops": "stops", "trips": "trips",
        "courier.events": "courier_events",
    }  # fmt: skip


def test_permanent_and_transient_errors() -> None:
    assert permanent_reason(psycopg.errors.CheckViolation("x")) == "db_check_violation"
    assert permanent_reason(psycopg.errors.NotNullViolation("x")) == "db_not_null_violation"
    assert permanent_reason(psycopg.errors.NumericValueOutOfRange("x")) == (
        "db_numeric_value_out_of_range"
    )
    assert permanent_reason(OverflowError("float too large")) == "unencodable_value"
    for transient in (
        psycopg.OperationalError("connection refused"),
        psycopg.errors.AdminShutdown("terminating"),
        psycopg.errors.UndefinedTable("no positions"),
        psycopg.errors.DiskFull("disk full"),
        OSError("network down"),
    ):
        assert permanent_reason(transient) is None, transient


def test_rejection_is_a_valid_dead_letter() -> None:
    now = datetime.now(UTC)
    f = fix(courier="c7")
    reject = Reject("p.fixes.clean", 3, 42, encode(f), "db_check_violation", "boom")
    record = rejection(reject, now, now + timedelta(days=30))
    again = validate(Rejection, orjson.loads(encode(record)))
    assert again.stage == "sink"
    assert again.reason == "db_check_violation"
    assert (again.org_id, again.courier_id, again.fix_id) == ("acme", "c7", f.fix_id)
    assert again.detail == "p.fixes.clean[3]@42: boom"
    assert again.record is not None
    assert again.record["fix_id"] == f.fix_id

    garbage = rejection(Reject("t", 0, 1, b"\xff{", "malformed_json", "x"), now, now)
    assert garbage.record == {"raw": "\ufffd{"}
    assert garbage.org_id is None
    tombstone = rejection(Reject("t", 0, 1, None, "empty_value", "x"), now, now)
    assert tombstone.record is None


def test_metrics_are_served_over_http() -> None:
    import socket
    import urllib.request

    from sinks.metrics import SinkMetrics

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    metrics = SinkMetrics()
    metrics.rows_written.labels("positions").inc(3)
    metrics.dead_letters.labels("malformed_json").inc()
    metrics.serve("127.0.0.1", port)
    body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    assert 'geostream_sink_rows_written_total{table="positions"} 3.0' in body
    assert 'geostream_sink_dead_letters_total{reason="malformed_json"} 1.0' in body
    for name in ("batch_size", "batch_seconds", "consumer_lag", "end_to_end_seconds", "retries"):
        assert f"geostream_sink_{name}" in body


@pytest.mark.parametrize(
    "change",
    [{}, {"lat": 91}, {"lat": "43.2"}, {"ts": "yesterday"}, {"ts": "2026-01-01T00:00:00"},
     {"org_id": "a b"}, {"zone_ids": "z1"}, {"is_late": "yes"}, {"extra": 1}, {"fix_id": ""},
     {"distance_m": None}, {"expires_at": 1767225600000}],
)  # fmt: skip
def test_fields_validator_accepts_exactly_what_the_record_type_accepts(change: dict) -> None:
    """The sink's fast path validates with the dataclass's own schema, minus the instance."""
    value = orjson.dumps({**orjson.loads(encode(fix(zone_ids=("a", "b")))), **change})

    def outcome(validate: Callable[[], object]) -> tuple[str, object]:
        try:
            return "valid", validate()
        except ValidationError as exc:
            return "invalid", exc.errors(include_url=False)

    full = outcome(lambda: record_fields(adapter(EnrichedFix).validate_json(value)))
    fast = outcome(lambda: fields_validator(EnrichedFix).validate_json(value)[0])
    assert fast == full
    if full[0] == "valid":
        record = adapter(EnrichedFix).validate_json(value)
        assert decode_message("fixes.clean", value).row == POSITIONS.to_row(record)

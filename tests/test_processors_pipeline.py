"""Enrichment, segmentation, reordering, zones, ids, retention tags and state (pure, no I/O)."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from dataclasses import replace
from datetime import timedelta, timezone
from pathlib import Path

import orjson
import pytest
from hypothesis import given, settings
from hypothesis.strategies import integers, text
from processors_helpers import T0, config, day_route, fix, offset, processor, run

from processors import ids
from processors import state as state_codec
from processors.pipeline import CourierProcessor
from processors.zones import Geofences, ZoneState, track_zones
from schemas.records import EnrichedFix
from schemas.wire import encode


def test_day_route_gives_two_stops_and_two_trips():
    proc = processor()
    st, out = run(proc, day_route())
    out.extend(proc.finish(st))
    closed = [s for s in out.stops if not s.is_open]
    assert len(closed) == 1  # the first park; the last is still open
    open_stop = proc.open_stop(st)
    assert open_stop is not None
    assert open_stop.is_open
    park = closed[0]
    assert park.start == T0 + timedelta(seconds=600)
    assert park.end == T0 + timedelta(seconds=890)
    assert park.duration_s == 290.0
    assert park.fix_count == 30
    lat, lon = offset(0, 60 * 80)
    assert abs(park.lat - lat) < 5e-5
    assert abs(park.lon - lon) < 5e-5
    assert len(out.trips) == 2
    first, second = out.trips
    assert first.closed_by == "stop"
    assert first.end_stop_id == park.stop_id
    assert first.start == T0
    assert first.end == park.start
    assert abs(first.distance_m - 60 * 80) < 12  # 60 steps of 80 m, plus jitter at arrival
    assert first.start_stop_id is None
    assert 7.9 < first.avg_speed_mps < 8.1
    assert 7.9 < first.max_speed_mps < 9
    assert first.path[0] == (round(offset(0, 0)[1], 7), round(offset(0, 0)[0], 7))
    assert len(first.path) == 2  # a straight line simplifies to its ends
    assert second.start_stop_id == park.stop_id
    assert second.start == park.end
    assert second.end_stop_id == open_stop.stop_id
    kinds = [e.kind for e in out.events]
    assert kinds == [
        "trip_started",
        "trip_ended",
        "stop_started",
        "stop_ended",
        "trip_started",
        "trip_ended",
        "stop_started",
    ]
    assert all(e.retention_class == "events" for e in out.events)


def test_parked_jitter_adds_no_distance():
    proc = processor()
    jitter = [fix(i * 10, (i % 3 - 1) * 4.0, ((i * 7) % 5 - 2) * 3.0) for i in range(60)]
    st, out = run(proc, jitter)
    assert sum(f.distance_m for f in out.clean) == 0.0
    assert st.odo_m == 0.0
    assert out.trips == []


def test_gap_closes_the_trip_in_the_data():
    proc = processor()
    fixes = [fix(i * 10, 0, i * 80) for i in range(10)]
    fixes += [fix(90 + 700 + i * 10, 0, 5000 + i * 80) for i in range(10)]
    st, out = run(proc, fixes)
    assert len(out.trips) == 1
    trip = out.trips[0]
    assert trip.closed_by == "gap"
    assert trip.end == T0 + timedelta(seconds=90)
    assert st.seg.trip is not None
    assert st.seg.trip.start_ms == int((T0 + timedelta(seconds=790)).timestamp() * 1000)


def test_timer_closes_idle_trip_and_is_idempotent():
    proc = processor()
    fixes = [fix(i * 10, 0, i * 80) for i in range(10)]
    st, _out = run(proc, fixes)
    last_received = fixes[-1].received_at
    assert proc.close_idle(st, last_received + timedelta(seconds=599)).trips == []
    closed = proc.close_idle(st, last_received + timedelta(seconds=600))
    assert [t.closed_by for t in closed.trips] == ["timer"]
    assert closed.timer_closed_trips == 1
    assert closed.trips[0].end == fixes[-1].ts
    assert proc.close_idle(st, last_received + timedelta(seconds=900)).trips == []


def test_ids_are_deterministic():
    _a_state, a = run(processor(), day_route())
    _b_state, b = run(processor(), day_route())
    assert [s.stop_id for s in a.stops] == [s.stop_id for s in b.stops]
    assert [t.trip_id for t in a.trips] == [t.trip_id for t in b.trips]
    assert [e.event_id for e in a.events] == [e.event_id for e in b.events]
    assert len({e.event_id for e in a.events}) == len(a.events)
    other = [fix(f.ts.timestamp() - T0.timestamp(), courier="c2") for f in day_route()[:3]]
    _, c = run(processor(), other)
    assert {f.trip_id for f in c.clean}.isdisjoint({f.trip_id for f in a.clean})


@settings(max_examples=300, deadline=None)
@given(text(), text(), text(), text(), integers(-(2**63), 2**63))
def test_derived_ids_are_the_uuid5_of_their_name(org, courier, kind, subject, ts_ms):
    """Ids stay what they were (``uuid.uuid5``), so reprocessed records upsert in place."""
    name = f"{org}/{courier}/{kind}/{subject}/{ts_ms}"
    expected = str(uuid.uuid5(uuid.UUID("6f1d3c2e-4b7a-5e10-9c3d-2a8b7e6f5d40"), name))
    assert ids.derived_id(org, courier, kind, subject, ts_ms) == expected


def test_reorder_window_restores_order():
    """Fixes of separate uploads that arrive out of order, with a hold that waits for them."""
    proc = processor(reorder_window_s=30.0, reorder_hold_s=60.0)
    ordered = day_route()
    shuffled = list(ordered)
    for i in range(0, len(shuffled) - 2, 3):  # swap neighbours: 10 s out of order
        shuffled[i], shuffled[i + 1] = shuffled[i + 1], shuffled[i]
    s1, a = run(proc, ordered)
    s2, b = run(proc, shuffled)
    a.extend(proc.finish(s1))
    b.extend(proc.finish(s2))
    assert [s.stop_id for s in a.stops] == [s.stop_id for s in b.stops]
    assert a.trips == b.trips
    assert not any(f.is_late for f in b.clean)
    assert [f.ts for f in b.clean] == sorted(f.ts for f in b.clean)


def test_the_live_position_leaves_with_its_upload():
    """Default hold 0: each upload, in any order within the window, is released whole, so the
    newest fix is the live position at once and none waits for the next upload (issue 15)."""
    proc = processor(reorder_window_s=30.0)
    st = proc.new_state("acme", "c1")
    route = [fix(i * 5, 0, i * 40, received_delay_s=(i // 5) * 25 + 30.0) for i in range(15)]
    for n, at in enumerate(range(0, 15, 5)):
        upload = route[at : at + 5]
        out = proc.process_many(st, [upload[3], upload[0], upload[4], upload[2], upload[1]])
        assert [f.fix_id for f in out.clean] == [f.fix_id for f in upload], n
        assert not any(f.is_late for f in out.clean)
        assert out.latest is not None
        assert out.latest.fix_id == upload[-1].fix_id
        assert st.buffer == []


def test_a_hold_keeps_fixes_until_it_has_passed_in_processing_time():
    proc = processor(reorder_window_s=600.0, reorder_hold_s=20.0)
    st = proc.new_state("acme", "c1")
    first = [fix(i * 5, 0, i * 40, received_delay_s=30.0 - i * 5) for i in range(4)]  # rx 30 s
    assert proc.process_many(st, first).clean == []  # held: nothing has waited 20 s yet
    second = [fix(20 + i * 5, 0, 160 + i * 40, received_delay_s=30.0 - i * 5) for i in range(4)]
    out = proc.process_many(st, second)  # received 20 s after the first upload
    assert [f.fix_id for f in out.clean] == [f.fix_id for f in first]
    received = second[-1].received_at
    assert proc.close_idle(st, received + timedelta(seconds=19)).clean == []
    out = proc.close_idle(st, received + timedelta(seconds=20))
    assert [f.fix_id for f in out.clean] == [f.fix_id for f in second]
    assert st.buffer == []


def test_an_older_fix_of_a_later_upload_is_late_without_a_hold():
    proc = processor(reorder_window_s=30.0)
    st, _ = run(proc, [fix(i * 10, 0, i * 80) for i in range(5)])
    out = proc.process(st, fix(25, 0, 200, fix_id="retried"))
    assert [(f.fix_id, f.is_late) for f in out.clean] == [("retried", True)]
    assert out.latest is None


def test_late_fix_is_kept_but_does_not_touch_live_state():
    proc = processor(reorder_window_s=10.0)
    fixes = [fix(i * 10, 0, i * 80) for i in range(10)]
    st, _ = run(proc, fixes)
    before = state_codec.dumps(st)
    late = fix(15, 5000, 5000, fix_id="late-one")  # 60 s older than the newest released
    out = proc.process(st, late)
    assert [f.fix_id for f in out.clean] == ["late-one"]
    assert out.clean[0].is_late
    assert out.clean[0].trip_id is None
    assert out.clean[0].distance_m == 0.0
    after = state_codec.loads(state_codec.dumps(st))
    assert after.seg == state_codec.loads(before).seg
    assert after.clean.last_ms == state_codec.loads(before).clean.last_ms
    assert out.latest is None  # courier.latest keeps the live position


def test_enrichment_speed_heading_odometer_and_retention():
    proc = processor()
    _, out = run(proc, [fix(0), fix(10, 100, 0), fix(20, 100, 100)])
    a, b, c = out.clean
    assert a.distance_m == 0.0
    assert a.derived_speed_mps is None
    assert abs(b.distance_m - 100) < 0.5
    assert abs(b.derived_speed_mps - 10) < 0.05
    assert abs(b.derived_heading_deg - 0.0) < 0.5
    assert abs(c.derived_heading_deg - 90.0) < 0.5
    assert abs(c.odometer_m - 200) < 1
    assert c.retention_class == "raw_fixes"
    assert c.expires_at == c.ts + timedelta(days=90)
    assert c.trip_id is not None
    assert c.stop_id is None


def test_odometer_resets_at_utc_midnight():
    proc = processor()
    midnight = 16 * 3600.0  # T0 is 08:00 UTC
    _, out = run(
        proc, [fix(midnight - 20, 0, 0), fix(midnight - 10, 0, 100), fix(midnight, 0, 200)]
    )
    assert abs(out.clean[1].odometer_m - 100) < 1
    assert abs(out.clean[2].odometer_m - 100) < 1


def _zones() -> Geofences:
    lat_a, lon_a = offset(-100, -100)
    lat_b, lon_b = offset(100, 100)
    square = [[lon_a, lat_a], [lon_b, lat_a], [lon_b, lat_b], [lon_a, lat_b], [lon_a, lat_a]]
    return Geofences.from_geojson(
        {
            "features": [
                {
                    "properties": {"org_id": "acme", "zone_id": "z1", "kind": "delivery"},
                    "geometry": {"type": "Polygon", "coordinates": [square]},
                }
            ]
        },
        hysteresis_m=20.0,
    )


def test_zone_enter_exit_with_dwell_and_hysteresis():
    zones = _zones()
    proc = processor(zones, zone_min_dwell_s=30.0)
    fixes = [fix(0, 0, -300), fix(10, 0, -90), fix(20, 0, -80), fix(30, 0, -70), fix(40, 0, -60)]
    # on the boundary: 10 m outside (inside the 20 m hysteresis) for a long time: no exit
    fixes += [fix(50 + i * 10, 0, -110 if i % 2 else -95) for i in range(10)]
    fixes += [fix(150 + i * 10, 0, -200) for i in range(5)]  # really left
    _, out = run(proc, fixes)
    zone_events = [(e.kind, e.ts) for e in out.events if e.kind.startswith("zone")]
    assert zone_events == [
        ("zone_enter", T0 + timedelta(seconds=10)),
        ("zone_exit", T0 + timedelta(seconds=150)),
    ]
    assert out.clean[1].zone_ids == ("z1",)
    assert out.clean[0].zone_ids == ()


def test_zone_tracker_short_visit_makes_no_event():
    st = ZoneState()
    assert track_zones(st, 0, ["z"], ["z"], 30_000) == []
    assert track_zones(st, 10_000, [], [], 30_000) == []
    assert st.pending == {}
    assert st.inside == {}


def test_stop_matches_zone():
    zones = _zones()
    proc = processor(zones)
    fixes = [fix(i * 10, (i % 2) * 3, 0) for i in range(20)]
    st, _out = run(proc, fixes)
    stop = proc.open_stop(st)
    assert stop is not None
    assert stop.zone_id == "z1"


def test_state_round_trip_is_lossless_and_small():
    proc = processor(reorder_window_s=30.0)
    st, _ = run(proc, day_route()[:100])
    data = state_codec.dumps(st)
    again = state_codec.loads(data)
    assert state_codec.dumps(again) == data
    assert again.seg.window == st.seg.window
    assert len(data) < 2048, len(data)


def test_state_keeps_its_source_position_and_reads_version_1():
    proc = processor(reorder_window_s=30.0)
    st, _ = run(proc, day_route()[:100])
    st.source_partition, st.source_offset = 4, 12345
    again = state_codec.loads(state_codec.dumps(st))
    assert (again.source_partition, again.source_offset) == (4, 12345)
    # a version 1 state (no position): the same header without its last item
    data = state_codec.dumps(st)
    version, n_head, *counts = state_codec._HEAD.unpack_from(data, 0)
    assert version == state_codec.VERSION == 2
    head = orjson.loads(data[state_codec._HEAD.size : state_codec._HEAD.size + n_head])
    assert head[-1] == [4, 12345]
    old_head = orjson.dumps(head[:-1])
    v1 = b"".join(
        (
            state_codec._HEAD.pack(1, len(old_head), *counts),
            old_head,
            data[state_codec._HEAD.size + n_head :],
        )
    )
    old = state_codec.loads(v1)
    assert (old.source_partition, old.source_offset) == (-1, -1)
    old.source_partition, old.source_offset = 4, 12345
    assert state_codec.dumps(old) == data
    with pytest.raises(state_codec.StateError):
        state_codec.loads(state_codec._HEAD.pack(3, 0, 0, 0, 0))


def test_segment_command_csv(tmp_path: Path):
    csv_path = tmp_path / "trace.csv"
    rows = ["courier_id,ts,lat,lon,accuracy_m"]
    for f in day_route():
        rows.append(f"c1,{f.ts.isoformat().replace('+00:00', 'Z')},{f.lat},{f.lon},5")
    rows.append("c1,2026-03-02T08:00:00Z,0,0,5")  # (0,0): rejected, not a crash
    csv_path.write_text("\n".join(rows) + "\n")
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "geostream.cli",
            "segment",
            str(csv_path),
            "--stop-min-duration",
            "120",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert [line["type"] for line in lines] == ["trip", "stop", "trip", "stop"]
    stop = lines[1]
    assert stop["start"] == "2026-03-02T08:10:00Z"
    assert stop["end"] == "2026-03-02T08:14:50Z"
    assert stop["duration_s"] == 290.0
    assert stop["courier_id"] == "c1"
    assert set(stop) >= {"stop_id", "lat", "lon"}
    assert lines[3]["is_open"] is True
    assert "null_island=1" in result.stderr
    # a larger min duration than the park: no stop at all in the middle
    longer = subprocess.run(
        [
            sys.executable,
            "-m",
            "geostream.cli",
            "segment",
            str(csv_path),
            "--stop-min-duration",
            "400",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    assert [json.loads(x)["type"] for x in longer.stdout.splitlines()] == ["trip"]


def test_segment_command_bad_file(tmp_path: Path):
    bad = tmp_path / "bad.csv"
    bad.write_text("c1,yesterday,45,4\n")
    result = subprocess.run(
        [sys.executable, "-m", "geostream.cli", "segment", str(bad)], capture_output=True, text=True
    )
    assert result.returncode == 2
    assert "line 1" in result.stderr


def test_config_from_settings_defaults():
    c = config()
    assert c.retention is not None
    assert CourierProcessor(c).retention.period("trips") == timedelta(days=180)


def test_clean_fixes_equal_the_records_their_constructor_builds() -> None:
    """The hot path builds EnrichedFix from the fix's instance dict; it must equal, field for
    field and byte for byte on the wire, what ``EnrichedFix(**fields)`` builds."""
    plus_two = timezone(timedelta(hours=2))
    fixes = [
        replace(f, ts=f.ts.astimezone(plus_two)) if i % 3 == 0 else f
        for i, f in enumerate(day_route())
    ]
    late = replace(fixes[5], fix_id="late-one", received_at=fixes[-1].received_at)
    _, out = run(processor(), [*fixes, late])
    assert any(f.is_late for f in out.clean)
    assert len(out.clean) > 100
    for clean in out.clean:
        rebuilt = EnrichedFix(
            **{name: getattr(clean, name) for name in EnrichedFix.__dataclass_fields__}
        )
        assert clean == rebuilt
        assert encode(clean) == encode(rebuilt)
        assert clean.ts.utcoffset() == timedelta(0)
        assert clean.received_at.utcoffset() == timedelta(0)

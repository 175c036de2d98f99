"""The export formats: GPX read back by the project's own trace reader, CSV by the csv module,
GeoJSON by shapely; every fix and stop comes back exactly."""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime, timedelta

import orjson
from hypothesis import given
from hypothesis import strategies as st
from shapely.geometry import shape

from processors.offline import read_gpx
from sinks.formats import (
    CSV_COLUMNS,
    TrackPoint,
    Waypoint,
    render,
    to_csv,
    to_geojson,
    to_gpx,
    track_points,
    waypoints,
)

T0 = datetime(2026, 11, 30, 8, 0, tzinfo=UTC)
coords = st.tuples(st.floats(-90, 90, allow_nan=False), st.floats(-180, 180, allow_nan=False))
maybe = st.none() | st.floats(0, 359, allow_nan=False)


@st.composite
def tracks(draw: st.DrawFn) -> list[TrackPoint]:
    n = draw(st.integers(0, 30))
    points = []
    for i in range(n):
        lat, lon = draw(coords)
        points.append(
            TrackPoint(
                fix_id=draw(st.text(st.characters(codec="utf-8", exclude_categories=("Cs", "Cc")),
                                    min_size=1, max_size=12)) + f"-{i}",
                ts=T0 + timedelta(seconds=10 * i),
                lat=lat,
                lon=lon,
                accuracy_m=draw(maybe),
                speed_mps=draw(maybe),
                heading_deg=draw(maybe),
                trip_id=draw(st.none() | st.just("trip-1")),
            )
        )  # fmt: skip
    return points


STOPS = [Waypoint("stop-<&1>", T0, T0 + timedelta(minutes=5), 43.25, 76.95, 300.0, "zone-a")]


@given(tracks())
def test_gpx_gives_back_every_fix_and_stop(points: list[TrackPoint]) -> None:
    text = to_gpx("courier-1", points, STOPS)
    back = list(read_gpx(text, "courier-1"))
    assert [(f.ts, f.lat, f.lon) for f in back] == [(p.ts, p.lat, p.lon) for p in points]
    assert "name>stop-&lt;&amp;1&gt;</" in text  # escaped, so the document stays valid


@given(tracks())
def test_csv_gives_back_every_fix(points: list[TrackPoint]) -> None:
    text = to_csv(points)
    assert text.splitlines()[0] == ",".join(CSV_COLUMNS)
    rows = list(csv.DictReader(io.StringIO(text)))
    assert [(r["fix_id"], datetime.fromisoformat(r["ts"]), float(r["lat"]), float(r["lon"]))
            for r in rows] == [(p.fix_id, p.ts, p.lat, p.lon) for p in points]  # fmt: skip
    assert [r["speed_mps"] for r in rows] == ["" if p.speed_mps is None else repr(p.speed_mps)
                                              for p in points]  # fmt: skip


@given(tracks())
def test_geojson_is_the_route_each_fix_and_each_stop(points: list[TrackPoint]) -> None:
    collection = orjson.loads(render("geojson", "courier-1", points, STOPS))
    assert collection == to_geojson("courier-1", points, STOPS)
    kinds = [f["properties"]["kind"] for f in collection["features"]]
    assert kinds == ["route"] * (len(points) >= 2) + ["fix"] * len(points) + ["stop"]
    geometries = [shape(f["geometry"]) for f in collection["features"]]
    fixes = [g for g, k in zip(geometries, kinds, strict=True) if k == "fix"]
    assert [(g.y, g.x) for g in fixes] == [(p.lat, p.lon) for p in points]
    if len(points) >= 2:
        assert list(geometries[0].coords) == [(p.lon, p.lat) for p in points]


def test_rows_of_the_api_and_of_the_export_make_the_same_points() -> None:
    api_item = {"fix_id": "f1", "ts": "2026-11-30T08:00:00+00:00", "lat": 43.2, "lon": 76.9,
                "speed_mps": 2.0, "zone_ids": []}  # fmt: skip
    export_row = {"fix_id": "f1", "ts": "2026-11-30T08:00:00+00:00", "speed_mps": 2.0,
                  "geom": {"type": "Point", "coordinates": [76.9, 43.2]}}  # fmt: skip
    assert track_points([api_item]) == track_points([export_row])
    api_stop = {"stop_id": "s", "start": "2026-11-30T08:00:00Z", "end": "2026-11-30T08:05:00Z",
                "lat": 43.2, "lon": 76.9, "duration_s": 300}  # fmt: skip
    export_stop = {"stop_id": "s", "start_ts": "2026-11-30T08:00:00Z",
                   "end_ts": "2026-11-30T08:05:00Z", "duration_s": 300,
                   "geom": {"type": "Point", "coordinates": [76.9, 43.2]}}  # fmt: skip
    assert waypoints([api_stop]) == waypoints([export_stop])

"""Zone lookups (processors/zones.py) answer exactly what shapely's tree query with the
``intersects`` predicate answers, boundaries and vertices included."""

from __future__ import annotations

import math
from functools import cache
from typing import Any

import orjson
import pytest
import shapely
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from shapely import STRtree

from config.settings import get_settings
from processors._geometry import intersects_rings
from processors.zones import GRID_DEG, GRID_MAX_CELLS, Geofences, _rings


def _polygon(org_id: str, zone_id: str, ring: list[tuple[float, float]]) -> dict[str, Any]:
    return {
        "type": "Feature",
        "properties": {"org_id": org_id, "zone_id": zone_id, "kind": "restricted"},
        "geometry": {"type": "Polygon", "coordinates": [[*ring, ring[0]]]},
    }


@cache
def geofences(hysteresis_m: float) -> Geofences:
    """The configured zones, and for the lookup grid: a zone over many cells beside a small
    one (org "grid"), and one too large to list per cell (org "wide")."""
    data = orjson.loads(get_settings().geofences_file.read_bytes())
    data["features"] += [
        _polygon("grid", "grid-l", [(76.93, 43.21), (76.98, 43.21), (76.95, 43.24)]),
        _polygon("grid", "grid-s", [(76.951, 43.221), (76.952, 43.221), (76.952, 43.222)]),
        _polygon("wide", "wide-1", [(76.0, 42.0), (79.0, 42.5), (78.0, 45.0), (76.5, 44.0)]),
        _polygon("wide", "wide-2", [(76.9, 43.2), (76.91, 43.2), (76.91, 43.21), (76.9, 43.21)]),
    ]
    return Geofences.from_geojson(data, hysteresis_m)


def reference(fences: Geofences, org_id: str, lat: float, lon: float) -> tuple[list[str], ...]:
    """The lookup as it was: one tree per kind of shape, queried with the predicate."""
    zones = [z for z in fences.zones if z.org_id == org_id]
    point = shapely.Point(lon, lat)
    inner = STRtree([z.geometry for z in zones]).query(point, predicate="intersects")
    outer = STRtree([z.outer for z in zones]).query(point, predicate="intersects")
    return sorted(zones[i].zone_id for i in inner), sorted(zones[i].zone_id for i in outer)


@st.composite
def places(draw: st.DrawFn) -> tuple[Geofences, str, float, float]:
    """A point near one of the configured zones: one of its own or its grown shape's
    vertices, a point on an edge, or anywhere around it."""
    fences = geofences(draw(st.sampled_from([0.0, 30.0, 250.0])))
    zone = draw(st.sampled_from(fences.zones))
    shape = draw(st.sampled_from([zone.geometry, zone.outer]))
    coords = shapely.get_coordinates(shape).tolist()
    how = draw(st.sampled_from(["vertex", "edge", "around"]))
    if how == "vertex":
        lon, lat = draw(st.sampled_from(coords))
    elif how == "edge":
        i = draw(st.integers(0, len(coords) - 2))
        t = draw(st.floats(0.0, 1.0))
        (x0, y0), (x1, y1) = coords[i], coords[i + 1]
        lon, lat = x0 + t * (x1 - x0), y0 + t * (y1 - y0)
    else:
        minx, miny, maxx, maxy = shape.bounds
        dx, dy = maxx - minx, maxy - miny
        lon = draw(st.floats(minx - dx / 2, maxx + dx / 2))
        lat = draw(st.floats(miny - dy / 2, maxy + dy / 2))
    return fences, zone.org_id, lat, lon


@settings(max_examples=1000, deadline=None)
@given(places())
def test_lookup_is_the_tree_query_with_the_predicate(
    place: tuple[Geofences, str, float, float],
) -> None:
    fences, org_id, lat, lon = place
    assert fences.lookup(org_id, lat, lon) == reference(fences, org_id, lat, lon)


def test_the_sample_zones_are_found_and_missed() -> None:
    """The property above must see both answers: inside the first zone, and far away."""
    fences = geofences(30.0)
    zone = fences.zones[0]
    inside = zone.geometry.representative_point()
    assert fences.lookup(zone.org_id, inside.y, inside.x)[0] == [zone.zone_id]
    assert fences.lookup(zone.org_id, inside.y + 1.0, inside.x) == ([], [])


def test_the_zones_exercise_every_path_of_the_grid() -> None:
    """Zones in one cell, over several cells, and too large to list per cell; each found."""
    fences = geofences(30.0)
    cells = {}
    for zone in fences.zones:
        minx, miny, maxx, maxy = zone.outer.bounds
        cells[zone.zone_id] = (maxx // GRID_DEG - minx // GRID_DEG + 1) * (
            maxy // GRID_DEG - miny // GRID_DEG + 1
        )
        inside = zone.geometry.representative_point()
        assert zone.zone_id in fences.lookup(zone.org_id, inside.y, inside.x)[0]
    assert cells["grid-s"] == 1
    assert 1 < cells["grid-l"] <= GRID_MAX_CELLS
    assert cells["wide-1"] > GRID_MAX_CELLS


@st.composite
def areas(draw: st.DrawFn) -> Any:
    """Zone-like areas: star-shaped rings (convex or not) with a hole or without, and
    multipolygons of two; vertices on a 0.001-degree grid, so edges run horizontal, vertical
    and diagonal alike."""

    def ring(cx: float, cy: float, radius: float) -> list[tuple[float, float]]:
        n = draw(st.integers(3, 9))
        out = []
        for k in range(n):
            r = radius * draw(st.sampled_from([0.5, 0.8, 1.0]))
            angle = 2 * math.pi * k / n
            out.append((round(cx + r * math.cos(angle), 3), round(cy + r * math.sin(angle), 3)))
        return out

    parts = []
    for i in range(draw(st.integers(1, 2))):
        cx, cy = 76.9 + 0.05 * i, 43.2
        holes = [ring(cx, cy, 0.004)] if draw(st.booleans()) else []
        polygon = shapely.Polygon(ring(cx, cy, 0.02), holes)
        if polygon.is_valid:
            parts.append(polygon)
    assume(parts)
    return parts[0] if len(parts) == 1 else shapely.MultiPolygon(parts)


@st.composite
def probes(draw: st.DrawFn, area: Any) -> tuple[float, float]:
    """A vertex, a point on an edge (exactly, or as rounding leaves it), or one nearby."""
    coords = shapely.get_coordinates(shapely.get_rings(shapely.get_parts(area))).tolist()
    how = draw(st.sampled_from(["vertex", "edge", "around"]))
    if how == "vertex":
        return tuple(draw(st.sampled_from(coords)))  # type: ignore[return-value]
    if how == "edge":
        i = draw(st.integers(0, len(coords) - 2))
        t = (
            draw(st.sampled_from([0.0, 0.5, 0.25]))
            if draw(st.booleans())
            else draw(st.floats(0.0, 1.0))
        )
        (x0, y0), (x1, y1) = coords[i], coords[i + 1]
        return x0 + t * (x1 - x0), y0 + t * (y1 - y0)
    minx, miny, maxx, maxy = area.bounds
    return draw(st.floats(minx - 0.01, maxx + 0.01)), draw(st.floats(miny - 0.01, maxy + 0.01))


@settings(max_examples=1000, deadline=None)
@given(st.data())
def test_c_area_test_is_geos_where_it_answers(data: st.DataObject) -> None:
    """The C ray crossing answers exactly as GEOS's intersects, boundary included, or not at
    all (None: a point within rounding of an edge's line); the lookup then asks GEOS."""
    area = data.draw(areas())
    x, y = data.draw(probes(area))
    answer = intersects_rings((_rings(area), _rings(area)), x, y)
    expected = bool(shapely.intersects_xy(area, x, y))
    assert answer is None or answer == [expected, expected]


def test_c_area_test_decides_nearly_every_point_and_refuses_bad_rings() -> None:
    """Points of a ride across the configured zones: None for under 1 %, both answers seen."""
    fences = geofences(30.0)
    answers = []
    for zone in fences.zones:
        minx, miny, maxx, maxy = zone.outer.bounds
        for k in range(200):
            x = minx + (maxx - minx) * k / 199
            y = miny + (maxy - miny) * ((k * 37) % 200) / 199
            answers.append(intersects_rings((_rings(zone.outer),), x, y))
    assert answers.count(None) < 0.01 * len(answers)
    assert [True] in answers
    assert [False] in answers
    with pytest.raises(TypeError):
        intersects_rings([(b"",)], 76.9, 43.2)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        intersects_rings(((b"\0" * 12,),), 76.9, 43.2)
    with pytest.raises(TypeError):
        intersects_rings((("ring",),), 76.9, 43.2)  # type: ignore[arg-type]
    assert intersects_rings((_rings(fences.zones[0].outer),), math.nan, 43.2) is None


def test_points_the_c_cannot_place_go_to_geos() -> None:
    """On a diagonal edge exactly (GEOS's filter is never certain of a zero orientation) the
    C test answers None, and the lookup still finds the zone, through GEOS."""
    diamond = [(0.0, 0.0), (2.0, 2.0), (0.0, 4.0), (-2.0, 2.0)]
    fences = Geofences.from_geojson(
        {"type": "FeatureCollection", "features": [_polygon("o", "diamond", diamond)]}, 0.0
    )
    zone = fences.zones[0]
    assert intersects_rings((_rings(zone.geometry),), 1.0, 1.0) is None
    assert intersects_rings((_rings(zone.geometry),), 0.0, 1.0) == [True]
    assert intersects_rings((_rings(zone.geometry),), 3.0, 1.0) == [False]
    assert fences.lookup("o", 1.0, 1.0) == (["diamond"], ["diamond"])
    assert fences.lookup("o", 1.0, 1.0) == reference(fences, "o", 1.0, 1.0)
    assert fences.lookup("o", 1.0, 1.5) == ([], [])

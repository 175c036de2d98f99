"""Zone lookups (processors/zones.py) answer exactly what shapely's tree query with the
``intersects`` predicate answers, boundaries and vertices included."""

from __future__ import annotations

from functools import cache
from typing import Any

import orjson
import shapely
from hypothesis import given, settings
from hypothesis import strategies as st
from shapely import STRtree

from config.settings import get_settings
from processors.zones import GRID_DEG, GRID_MAX_CELLS, Geofences


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

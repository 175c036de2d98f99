"""The fast paths of the stop rectangle agree with the definition (pure, no I/O).

The segmenter decides "the window fits" with shortcuts that must give exactly the answer of
MovingPandas' rectangle (GEOS's oriented envelope of the MultiPoint, diagonal on the sphere),
degenerate inputs included: GEOS answers oddly for nearly collinear points, and the shortcuts
must not assume a textbook rectangle.
"""

from __future__ import annotations

import math

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from processors.geo import (
    _mrr_coords,
    _mrr_coords_multipoint,
    haversine_m,
    mrr_diagonal_bound,
    mrr_diagonal_bound3,
    mrr_diagonal_geo,
)
from processors.segmenter import WPoint, _window_stopped

PROPS = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])

origins = st.tuples(
    st.floats(min_value=-80.0, max_value=80.0), st.floats(min_value=-179.0, max_value=179.0)
)


@st.composite
def point_sets(draw: st.DrawFn) -> list[tuple[float, float]]:
    """(lon, lat) sets as couriers make them: jitter clouds, straight rides (collinear but
    for rounding), grids with repeated points, and thin slivers; 2 to 16 points."""
    lat0, lon0 = draw(origins)
    n = draw(st.integers(min_value=2, max_value=16))
    kind = draw(st.sampled_from(["cloud", "ride", "grid", "sliver"]))
    scale = draw(st.sampled_from([1.0, 10.0, 40.0, 80.0, 200.0])) / 111_195.0
    coslat = math.cos(math.radians(lat0))
    pts = []
    if kind == "ride":
        heading = math.radians(draw(st.floats(min_value=0.0, max_value=360.0)))
        step = draw(st.floats(min_value=0.1, max_value=1.0)) * scale
        for i in range(n):
            pts.append(
                (lon0 + i * step * math.sin(heading) / coslat, lat0 + i * step * math.cos(heading))
            )
    else:
        cells = draw(
            st.lists(
                st.tuples(
                    st.floats(min_value=-1.0, max_value=1.0),
                    st.floats(min_value=-1.0, max_value=1.0),
                ),
                min_size=n,
                max_size=n,
            )
        )
        for u, v in cells:
            if kind == "grid":
                u, v = round(u * 2) / 2, round(v * 2) / 2
            elif kind == "sliver":
                v *= 1e-6
            pts.append((lon0 + u * scale / coslat, lat0 + v * scale))
    # Devices send at most ~9 decimals; GEOS reads uninitialised memory for subnormal spans
    # (a "ride" due north at longitude 1e-300), which no fix can produce.
    return [(round(x, 9), round(y, 9)) for x, y in pts]


@PROPS
@given(point_sets())
def test_linestring_rectangle_is_the_multipoint_rectangle(pts: list[tuple[float, float]]) -> None:
    """Bit for bit (repr is exact for floats), degenerate hulls included."""
    lons, lats = [p[0] for p in pts], [p[1] for p in pts]
    assert repr(_mrr_coords(lons, lats)) == repr(_mrr_coords_multipoint(pts).tolist())


@PROPS
@given(point_sets())
def test_the_cheap_bound_is_never_below_the_rectangle_diagonal(
    pts: list[tuple[float, float]],
) -> None:
    lons, lats = [p[0] for p in pts], [p[1] for p in pts]
    bound = mrr_diagonal_bound(max(lons) - min(lons), max(lats) - min(lats))
    assert mrr_diagonal_geo(pts) <= bound


@PROPS
@given(point_sets())
def test_the_three_point_bound_is_never_below_the_rectangle_diagonal(
    pts: list[tuple[float, float]],
) -> None:
    three = (pts * 2)[:3]  # two points: one repeated
    lons, lats = [p[0] for p in three], [p[1] for p in three]
    assert mrr_diagonal_geo(three) <= mrr_diagonal_bound3(lons, lats)


def _definition(pts: list[tuple[float, float]], max_diameter: float) -> bool:
    """The window test without shortcuts: MovingPandas' rule, GEOS's rectangle."""
    lons, lats = [p[0] for p in pts], [p[1] for p in pts]
    if len(pts) == 2:
        return haversine_m(lats[0], lons[0], lats[1], lons[1]) < max_diameter
    coords = _mrr_coords_multipoint(pts).tolist()
    if len(coords) >= 4:
        (x1, y1), (x2, y2) = coords[0], coords[2]
    elif len(coords) >= 2:
        (x1, y1), (x2, y2) = coords[0], coords[-1]
    else:
        return max_diameter > 0.0
    return haversine_m(y1, x1, y2, x2) < max_diameter


@PROPS
@given(point_sets(), st.sampled_from([5.0, 20.0, 50.0, 80.0, 150.0]))
def test_window_decision_equals_the_definition(
    pts: list[tuple[float, float]], max_diameter: float
) -> None:
    window = [WPoint(i, lat, lon, 0.0, i, 1, lat, lon) for i, (lon, lat) in enumerate(pts)]
    assert _window_stopped(window, max_diameter) == _definition(pts, max_diameter)


def test_bounding_box_cut_is_exact_away_from_the_equator() -> None:
    """A diamond at 43 degrees: GEOS's rectangle measures ~79 m, its bounding box ~132 m (a
    fixed 1.5 x cut called this window moving)."""
    pts = [
        (76.89952111295587, 43.19994190737221),
        (76.89994107744427, 43.20047973820291),
        (76.90005815350504, 43.19952082693188),
        (76.90047832480236, 43.20005890682954),
    ]
    assert _definition(pts, 80.0)
    window = [WPoint(i, lat, lon, 0.0, i, 1, lat, lon) for i, (lon, lat) in enumerate(pts)]
    assert _window_stopped(window, 80.0)

"""The stop window test agrees with the definition (pure, no I/O).

The segmenter decides "the window fits" in C (processors/_geometry.c) and asks GEOS only where
that cannot be certain; the answer must be exactly that of MovingPandas' rectangle (GEOS's
oriented envelope of the MultiPoint, diagonal on the sphere), degenerate inputs included:
GEOS answers oddly for nearly collinear points, and the C test must not assume a textbook
rectangle.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from datetime import UTC, datetime

import pytest
import shapely
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st

from processors import segmenter
from processors._geometry import (
    bearing_deg,
    compress_window,
    inside_convex,
    tail_start,
    window_stopped,
)
from processors.bench import courier_fixes
from processors.geo import (
    _mrr_coords,
    _mrr_coords_multipoint,
    convex_hull,
    haversine_m,
    mrr_diagonal_lonlat,
)
from processors.segmenter import (
    Segmenter,
    SegParams,
    SegState,
    WPoint,
    _rectangle_fits,
    _simplify,
    _window_stopped,
)

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


THIN_DEG = 1e-9  # processors/_geometry.c


def _cross(o: tuple[float, float], a: tuple[float, float], b: tuple[float, float]) -> float:
    return (a[0] - o[0]) * (b[1] - o[1]) - (a[1] - o[1]) * (b[0] - o[0])


def _width_and_ends(pts: list[tuple[float, float]]) -> tuple[float, int, int]:
    """The hull's width (least extent across one of its edges, degrees) and its two farthest
    points (indices into ``pts``)."""
    hull = convex_hull(pts)
    far = max(
        ((i, j) for i in range(len(pts)) for j in range(i)),
        key=lambda ij: math.dist(pts[ij[0]], pts[ij[1]]),
    )
    if len(hull) <= 2:
        return 0.0, *far
    width = math.inf
    for k, a in enumerate(hull):
        b = hull[(k + 1) % len(hull)]
        edge = math.dist(a, b)
        width = min(width, max(abs(_cross(a, b, p)) / edge for p in hull))
    return width, *far


def _diagonal(pts: list[tuple[float, float]]) -> float:
    """MovingPandas' stop diameter: GEOS's rectangle of the MultiPoint, first to third corner
    on the sphere. Points collinear but for rounding (a hull under THIN_DEG wide) measure the
    segment between the farthest two, as GEOS answers for collinear points: its rectangle of
    those can leave points out (see processors/_geometry.c). Two points: their distance."""
    lons, lats = [p[0] for p in pts], [p[1] for p in pts]
    width, i, j = _width_and_ends(pts)
    if width <= THIN_DEG:
        return haversine_m(lats[i], lons[i], lats[j], lons[j])
    coords = _mrr_coords_multipoint(pts).tolist()
    if len(coords) >= 4:
        (x1, y1), (x2, y2) = coords[0], coords[2]
    elif len(coords) >= 2:
        (x1, y1), (x2, y2) = coords[0], coords[-1]
    else:
        return 0.0
    return haversine_m(y1, x1, y2, x2)


def _near_thin(pts: list[tuple[float, float]]) -> bool:
    """Within a factor 2 of the thin limit, where rounding decides which rule applies."""
    return THIN_DEG / 2 < _width_and_ends(pts)[0] < 2 * THIN_DEG


def _definition(pts: list[tuple[float, float]], max_diameter: float) -> bool:
    """The window test without shortcuts: MovingPandas' rule, GEOS's rectangle."""
    return _diagonal(pts) < max_diameter


def _window(pts: list[tuple[float, float]]) -> list[WPoint]:
    return [WPoint(i, lat, lon, 0.0, i, 1, lat, lon) for i, (lon, lat) in enumerate(pts)]


@PROPS
@given(point_sets(), st.sampled_from([5.0, 20.0, 50.0, 80.0, 150.0]))
def test_window_decision_equals_the_definition(
    pts: list[tuple[float, float]], max_diameter: float
) -> None:
    assume(not _near_thin(pts))
    assert _window_stopped(_window(pts), max_diameter) == _definition(pts, max_diameter)


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
    assert _window_stopped(_window(pts), 80.0)


@PROPS
@given(point_sets(), st.sampled_from([-1e-5, -1e-7, -1e-9, 0.0, 1e-9, 1e-7, 1e-5]))
def test_the_c_test_never_errs_at_the_limit(pts: list[tuple[float, float]], nudge: float) -> None:
    """With the limit a hair from GEOS's own diagonal the C test answers right or not at all
    (``None``: GEOS decides); two points it always answers."""
    assume(not _near_thin(pts))
    diagonal = _diagonal(pts)
    max_diameter = max(diagonal, 1e-3) * (1.0 + nudge)
    decided = window_stopped(_window(pts), max_diameter)
    assert decided is None or decided == (diagonal < max_diameter), (diagonal, max_diameter)
    if len(pts) == 2:
        assert decided is not None


def test_the_c_test_decides_nearly_every_window_of_a_ride(monkeypatch) -> None:
    """The bench ride (riding, then stopped with jitter, at 43 degrees): GEOS is asked for
    under 1 % of the fixes, so the C tests are what decide, moving and stopped alike."""
    geos: list[int] = []

    def counted(lons: list[float], lats: list[float]) -> float:
        geos.append(len(lons))
        return mrr_diagonal_lonlat(lons, lats)

    monkeypatch.setattr(segmenter, "mrr_diagonal_lonlat", counted)
    seg = Segmenter(SegParams(80.0, 120_000, 600_000, 16, 32, 10.0), segmenter.IdFactory())
    seg.ids.stop_id = seg.ids.trip_id = str  # type: ignore[method-assign]
    start = datetime(2026, 3, 2, 8, tzinfo=UTC)
    stopped: list[bool] = []
    for courier in range(20):
        st, last = SegState(), None
        for f in courier_fixes(courier, 200, start):
            step = 0.0 if last is None else haversine_m(last.lat, last.lon, f.lat, f.lon)
            seg.step(st, int(f.ts.timestamp() * 1000), f.lat, f.lon, step, None)
            stopped.append(st.stopped)
            last = f
    assert len(stopped) == 4_000
    assert len(geos) < 0.01 * len(stopped), len(geos)
    assert 0.1 * len(stopped) < stopped.count(True) < 0.9 * len(stopped)


def test_the_c_test_takes_long_windows_and_refuses_bad_points() -> None:
    """Past 64 points the C test works on the heap; points must be (t, lat, lon, ...) tuples."""
    ring = [
        (76.9 + 3e-4 * math.cos(k / 10), 43.2 + 3e-4 * math.sin(k * 1.1 / 10)) for k in range(100)
    ]
    for limit in (50.0, 80.0, 120.0):
        assert window_stopped(_window(ring), limit) == _definition(ring, limit)
        assert window_stopped(tuple(_window(ring)), limit) == _definition(ring, limit)
    with pytest.raises(TypeError):
        window_stopped([(0, 43.2, 76.9), [0, 43.2, 76.9]], 80.0)
    with pytest.raises(TypeError):
        window_stopped([(0, "43.2", 76.9), (0, 43.2, 76.9)], 80.0)
    with pytest.raises(TypeError):
        window_stopped(None, 80.0)  # type: ignore[arg-type]


def _haversine_reference(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    """The Python haversine that processors._geometry.haversine_m replaced."""
    rad = math.pi / 180.0
    p1, p2 = lat1 * rad, lat2 * rad
    dp, dl = p2 - p1, (lon2 - lon1) * rad
    # Squares as products: x * x is correctly rounded, where x ** 2 is libm's pow, which is
    # not always (glibc 2.36 gives 0.5835584008485952 for the square of sin(dl / 2) at the
    # example below, 0.503 ulp off; the product is the nearest double).
    s1, s2 = math.sin(dp / 2), math.sin(dl / 2)
    a = s1 * s1 + math.cos(p1) * math.cos(p2) * (s2 * s2)
    return 2 * 6_371_008.8 * math.asin(min(1.0, math.sqrt(a)))


def _bearing_reference(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    """The Python bearing that processors._geometry.bearing_deg replaced."""
    rad = math.pi / 180.0
    p1, p2, dl = lat1 * rad, lat2 * rad, (lon2 - lon1) * rad
    x = math.sin(dl) * math.cos(p2)
    y = math.cos(p1) * math.sin(p2) - math.sin(p1) * math.cos(p2) * math.cos(dl)
    deg = math.degrees(math.atan2(x, y)) % 360.0
    return 0.0 if deg >= 360.0 else deg


def _hull_reference(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """The Python monotone chain that processors._geometry.convex_hull replaced."""
    pts = sorted(set(points))
    if len(pts) <= 2:
        return pts
    lower: list[tuple[float, float]] = []
    for p in pts:
        while len(lower) >= 2 and _cross(lower[-2], lower[-1], p) <= 0:
            lower.pop()
        lower.append(p)
    upper: list[tuple[float, float]] = []
    for p in reversed(pts):
        while len(upper) >= 2 and _cross(upper[-2], upper[-1], p) <= 0:
            upper.pop()
        upper.append(p)
    return lower[:-1] + upper[:-1]


latitudes = st.floats(min_value=-90.0, max_value=90.0)
longitudes = st.floats(min_value=-180.0, max_value=180.0)


@pytest.mark.parametrize(
    ("formula", "reference"),
    [(haversine_m, _haversine_reference), (bearing_deg, _bearing_reference)],
    ids=["haversine_m", "bearing_deg"],
)
@PROPS
@given(latitudes, longitudes, latitudes, longitudes)
@example(0.0, -62.1816448586563, 2.0, 37.43858106160894)  # where pow(x, 2) != x * x
def test_c_formulas_are_the_python_ones_to_the_bit(
    formula: Callable[[float, float, float, float], float],
    reference: Callable[[float, float, float, float], float],
    lat1: float,
    lon1: float,
    lat2: float,
    lon2: float,
) -> None:
    assert repr(formula(lat1, lon1, lat2, lon2)) == repr(reference(lat1, lon1, lat2, lon2))


def test_c_bearing_edges() -> None:
    """Due north and a hair west of it: Python's % gives 360.0 there, which means 0."""
    for lat1, lon1, lat2, lon2 in [(45.0, 4.8, 45.1, 4.8), (45.0, 0.0, 45.1, -1e-300)]:
        assert repr(bearing_deg(lat1, lon1, lat2, lon2)) == repr(
            _bearing_reference(lat1, lon1, lat2, lon2)
        )
    assert bearing_deg(45.0, 0.0, 45.1, -1e-300) == 0.0
    assert bearing_deg(45.0, 4.8, 45.0, 4.8) == 0.0
    assert bearing_deg(45.0, 4.8, 44.9, 4.8) == 180.0
    with pytest.raises(TypeError):
        bearing_deg(45.0, 4.8, 45.1)  # type: ignore[call-arg]


@PROPS
@given(point_sets())
def test_c_hull_is_the_python_hull(pts: list[tuple[float, float]]) -> None:
    """The same vertices in the same order, relative to the first point as the segmenter asks
    and absolute, duplicates and collinear runs included."""
    relative = [(x - pts[0][0], y - pts[0][1]) for x, y in pts]
    for points in (pts, relative, pts + pts[::-1]):
        assert convex_hull(points) == _hull_reference(points)


def _simplify_reference(
    path: list[tuple[int, int, int]], tolerance_m: float
) -> tuple[tuple[float, float], ...]:
    """What the segmenter simplified trip paths with before: shapely (GEOS) itself."""
    coords = [(lon / 1e7, lat / 1e7) for _, lat, lon in path]
    if len(coords) < 3 or tolerance_m <= 0:
        return tuple((round(x, 7), round(y, 7)) for x, y in coords)
    line = shapely.LineString(coords).simplify(tolerance_m / 111_320.0, preserve_topology=False)
    return tuple((round(x, 7), round(y, 7)) for x, y in line.coords)


@st.composite
def trip_paths(draw: st.DrawFn) -> list[tuple[int, int, int]]:
    """Paths as the segmenter keeps them (ms, lat e7, lon e7): wiggles, straight runs (ties
    of distance), repeated points and closed loops, a few metres to tens of kilometres."""
    lat0 = draw(st.integers(min_value=-800_000_000, max_value=800_000_000))
    lon0 = draw(st.integers(min_value=-1_790_000_000, max_value=1_790_000_000))
    scale = draw(st.sampled_from([10, 300, 3_000, 100_000]))
    steps = draw(
        st.lists(st.tuples(st.integers(-3, 3), st.integers(-3, 3)), min_size=0, max_size=80)
    )
    lat, lon = lat0, lon0
    path = [(0, lat, lon)]
    for i, (dlat, dlon) in enumerate(steps, start=1):
        lat += dlat * scale
        lon += dlon * scale
        path.append((i * 1000, lat, lon))
    if draw(st.booleans()):
        path.append((len(path) * 1000, lat0, lon0))  # back where it started
    return path


@PROPS
@given(trip_paths(), st.sampled_from([0.0, 0.5, 5.0, 10.0, 25.0, 200.0, 5_000.0]))
def test_c_simplification_keeps_what_geos_keeps(
    path: list[tuple[int, int, int]], tolerance_m: float
) -> None:
    assert repr(_simplify(path, tolerance_m)) == repr(_simplify_reference(path, tolerance_m))


@settings(max_examples=2000, deadline=None)
@given(st.integers(min_value=-1_800_000_000, max_value=1_800_000_000))
def test_whole_e7_degrees_need_no_rounding(e7: int) -> None:
    """Why _simplify does not round its coordinates to 7 places (the output's precision)."""
    assert repr(round(e7 / 1e7, 7)) == repr(e7 / 1e7)


def _inside_reference(hull: list[tuple[float, float]], p: tuple[float, float]) -> bool:
    """The Python test that processors._geometry.inside_convex replaced."""
    n = len(hull)
    return n >= 3 and all(_cross(hull[i], hull[(i + 1) % n], p) >= 0 for i in range(n))


@PROPS
@given(point_sets(), point_sets())
def test_c_inside_convex_is_the_python_test(
    pts: list[tuple[float, float]], probes: list[tuple[float, float]]
) -> None:
    """Relative to the first point, as the segmenter asks: the hull's own vertices (on the
    boundary, so inside), the other points of the set, and points of another set."""
    x0, y0 = pts[0]
    hull = convex_hull([(x - x0, y - y0) for x, y in pts])
    for x, y in [*hull, *((x - x0, y - y0) for x, y in pts + probes)]:
        assert inside_convex(hull, x, y) == _inside_reference(hull, (x, y))
    for x, y in hull:
        assert inside_convex(hull, x, y) == (len(hull) >= 3)


def _tail_start_reference(window: list[WPoint], start: int, max_diameter: float) -> int:
    """The loop that processors._geometry.tail_start replaced: drop points from the front of
    window[start:] until the rest fits or one point is left."""
    tail = window[start:]
    popped = 0
    while len(tail) >= 2 and not _window_stopped(tail, max_diameter):
        tail.pop(0)
        popped += 1
    return start + popped


@PROPS
@given(point_sets(), st.sampled_from([0, 1]), st.sampled_from([5.0, 20.0, 50.0, 80.0, 150.0]))
def test_c_tail_start_is_the_python_loop(
    pts: list[tuple[float, float]], start: int, max_diameter: float
) -> None:
    window = _window(pts)
    asked: list[int] = []

    def undecided(tail: list[WPoint], limit: float) -> bool:
        asked.append(len(tail))
        return _rectangle_fits(tail, limit)

    assert tail_start(window, start, max_diameter, undecided) == _tail_start_reference(
        window, start, max_diameter
    )
    assert all(n >= 3 for n in asked)  # two points are always decided in C


def test_c_tail_start_asks_geos_where_it_cannot_tell_and_passes_its_errors() -> None:
    """A diamond whose GEOS diagonal is the limit itself: the C test is not certain, so the
    callable answers; whatever it raises comes out of tail_start."""
    pts = [(76.9, 43.2), (76.9008, 43.2002), (76.9001, 43.2009), (76.9003, 43.2004)]
    limit = _diagonal(pts)
    assert window_stopped(_window(pts), limit) is None
    assert tail_start(_window(pts), 0, limit, lambda tail, lim: True) == 0
    assert tail_start(_window(pts), 0, limit, lambda tail, lim: len(tail) < 4) == 1

    def broken(tail: list[WPoint], lim: float) -> bool:
        raise RuntimeError("GEOS failed")

    with pytest.raises(RuntimeError, match="GEOS failed"):
        tail_start(_window(pts), 0, limit, broken)


def _fold_reference(window: list[WPoint], keep: set[int]) -> list[WPoint]:
    out: list[WPoint] = []
    carry_n, carry_lat, carry_lon = 0, 0.0, 0.0
    for i, p in enumerate(window):
        if i in keep:
            if not carry_n:
                out.append(p)
                continue
            n = p.n + carry_n
            mlat = (p.mlat * p.n + carry_lat) / n
            mlon = (p.mlon * p.n + carry_lon) / n
            out.append(WPoint(p.t_ms, p.lat, p.lon, p.cum_m, p.k, n, mlat, mlon))
            carry_n, carry_lat, carry_lon = 0, 0.0, 0.0
        else:
            carry_n += p.n
            carry_lat += p.mlat * p.n
            carry_lon += p.mlon * p.n
    return out


def _compress_reference(window: list[WPoint], cap: int, breaker: bool) -> list[WPoint]:
    """The Python that processors._geometry.compress_window replaced."""
    if len(window) <= cap:
        return window
    skip = 1 if breaker else 0
    lat0, lon0 = window[skip].lat, window[skip].lon
    pts = [(p.lon - lon0, p.lat - lat0) for p in window[skip:]]
    hull = set(convex_hull(pts))
    keep = {i + skip for i, p in enumerate(pts) if p in hull} | {0, skip, len(window) - 1}
    if len(keep) > cap:
        ordered = sorted(keep)
        middle = ordered[1:-1]
        step = math.ceil(len(middle) / (cap - 2))
        keep = {ordered[0], ordered[-1], *middle[::step]}
    return _fold_reference(window, keep)


@PROPS
@given(
    point_sets(),
    st.lists(st.integers(min_value=1, max_value=40), min_size=16, max_size=16),
    st.integers(min_value=3, max_value=16),
    st.booleans(),
)
def test_c_compression_is_the_python_one(
    pts: list[tuple[float, float]], weights: list[int], cap: int, breaker: bool
) -> None:
    """Point for point, folded weights and means to the bit (repr), duplicates, collinear
    runs and the breaker included; a window within the cap comes back as it is."""
    window = [
        WPoint(i, lat, lon, 1.5 * i, i, n, lat + 1e-6 * n, lon - 1e-6 * n)
        for i, ((lon, lat), n) in enumerate(zip(pts * 2, weights, strict=False))
    ]
    assert repr(compress_window(window, cap, breaker)) == repr(
        _compress_reference(window, cap, breaker)
    )
    compressed = compress_window(window, cap, breaker)
    assert all(type(p) is WPoint for p in compressed)
    assert sum(p.n for p in compressed) == sum(p.n for p in window)
    assert len(compressed) <= max(cap, len(window) if len(window) <= cap else cap)
    short = window[:cap]
    assert compress_window(short, cap, breaker) is short


def test_c_compression_refuses_bad_input() -> None:
    window = _window([(76.9 + i * 1e-5, 43.2) for i in range(8)])
    with pytest.raises(ValueError, match="cap"):
        compress_window(window, 2, False)
    with pytest.raises(TypeError):
        compress_window([(0, 43.2, 76.9)] * 8, 4, False)
    with pytest.raises(TypeError):
        compress_window(None, 4, False)  # type: ignore[arg-type]

"""Small, fast planar and spherical geometry for per-fix processing (pure, no I/O).

The worker calls these once or more per fix, so they are plain-float functions rather than
shapely objects: building a shapely geometry costs more than the whole cleaning step. Distances
are haversine on a sphere (R = 6,371,008.8 m); shapes (hulls, rectangles) are computed in a local
equirectangular projection in metres, which is accurate to well under 0.1 % over the few hundred
metres a stop spans.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from math import asin, cos, hypot, sin, sqrt
from typing import Any

import numpy as np
import shapely
from shapely import lib as _lib

EARTH_RADIUS_M = 6_371_008.8
_RAD = math.pi / 180.0

Point2 = tuple[float, float]


def haversine_m(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    """Great-circle distance in metres."""
    p1 = lat1 * _RAD
    p2 = lat2 * _RAD
    dp = p2 - p1
    dl = (lon2 - lon1) * _RAD
    a = sin(dp / 2) ** 2 + cos(p1) * cos(p2) * sin(dl / 2) ** 2
    return 2 * EARTH_RADIUS_M * asin(min(1.0, sqrt(a)))


def bearing_deg(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    """Initial bearing from point 1 to point 2, degrees in [0, 360)."""
    p1 = lat1 * _RAD
    p2 = lat2 * _RAD
    dl = (lon2 - lon1) * _RAD
    x = math.sin(dl) * math.cos(p2)
    y = math.cos(p1) * math.sin(p2) - math.sin(p1) * math.cos(p2) * math.cos(dl)
    deg = math.degrees(math.atan2(x, y)) % 360.0
    return 0.0 if deg >= 360.0 else deg


def project(lat: float, lon: float, lat0: float, lon0: float) -> Point2:
    """Local equirectangular metres of (lat, lon) around the origin (lat0, lon0)."""
    x = (lon - lon0) * _RAD * EARTH_RADIUS_M * math.cos(lat0 * _RAD)
    y = (lat - lat0) * _RAD * EARTH_RADIUS_M
    return (x, y)


def _cross(o: Point2, a: Point2, b: Point2) -> float:
    return (a[0] - o[0]) * (b[1] - o[1]) - (a[1] - o[1]) * (b[0] - o[0])


def convex_hull(points: Sequence[Point2]) -> list[Point2]:
    """Counter-clockwise hull vertices (Andrew's monotone chain); collinear points dropped."""
    pts = sorted(set(points))
    if len(pts) <= 2:
        return list(pts)
    lower: list[Point2] = []
    for p in pts:
        while len(lower) >= 2 and _cross(lower[-2], lower[-1], p) <= 0:
            lower.pop()
        lower.append(p)
    upper: list[Point2] = []
    for p in reversed(pts):
        while len(upper) >= 2 and _cross(upper[-2], upper[-1], p) <= 0:
            upper.pop()
        upper.append(p)
    return lower[:-1] + upper[:-1]


def hull_indices(points: Sequence[Point2]) -> set[int]:
    """Indices of ``points`` that are vertices of their convex hull."""
    hull = set(convex_hull(points))
    return {i for i, p in enumerate(points) if p in hull}


def min_rotated_rectangle(points: Sequence[Point2]) -> tuple[Point2, Point2]:
    """Two opposite corners of the minimum-area rotated rectangle around ``points``.

    Rotating calipers over the convex hull's edges, as shapely's
    ``minimum_rotated_rectangle``; for fewer than three hull vertices, the extreme points.
    """
    hull = convex_hull(points)
    n = len(hull)
    if n == 0:
        return (0.0, 0.0), (0.0, 0.0)
    if n <= 2:
        return hull[0], hull[-1]
    best_area = math.inf
    best: tuple[Point2, Point2] = (hull[0], hull[0])
    for i in range(n):
        x0, y0 = hull[i]
        x1, y1 = hull[(i + 1) % n]
        ex, ey = x1 - x0, y1 - y0
        length = math.hypot(ex, ey)
        if length == 0.0:
            continue
        ux, uy = ex / length, ey / length
        min_u = max_u = min_v = max_v = 0.0
        for px, py in hull:
            dx, dy = px - x0, py - y0
            u = dx * ux + dy * uy
            v = -dx * uy + dy * ux
            min_u = min(min_u, u)
            max_u = max(max_u, u)
            min_v = min(min_v, v)
            max_v = max(max_v, v)
        area = (max_u - min_u) * (max_v - min_v)
        if area < best_area:
            best_area = area
            best = (
                (x0 + min_u * ux - min_v * uy, y0 + min_u * uy + min_v * ux),
                (x0 + max_u * ux - max_v * uy, y0 + max_u * uy + max_v * ux),
            )
    return best


def box_cut_factor(max_abs_lat: float) -> float:
    """How far a point set's bounding-box diagonal can exceed the diagonal of its minimum
    rotated rectangle, both in metres, at latitudes up to ``max_abs_lat``.

    In degree space the rectangle's diagonal is at least the set's extent along either axis,
    so the box diagonal is at most sqrt(2) times it; on the Earth degrees of longitude shrink
    by c = cos(latitude), which stretches the bound to sqrt(1 + c^2) / c (1.41 at the
    equator, 1.70 at 43 degrees, 2.24 at 60). 2 % covers haversine against the planar argument.
    """
    c = math.cos(math.radians(min(max_abs_lat, 89.0)))
    return 1.02 * math.sqrt(1.0 + c * c) / c


def mrr_diagonal(points: Sequence[Point2]) -> float:
    """Diagonal of the minimum rotated rectangle, in the points' own (planar) units."""
    a, b = min_rotated_rectangle(points)
    return math.dist(a, b)


_POINT_ALLOW_NAN = np.intc(0)  # shapely.creation.HandleNaN.allow, shapely.points' default
_MULTIPOINT = np.intc(shapely.GeometryType.MULTIPOINT)


def _mrr_coords(lons: Sequence[float], lats: Sequence[float]) -> list[list[float]]:
    """``get_coordinates(minimum_rotated_rectangle(multipoints(zip(lons, lats))))`` as lists,
    calling the same GEOS functions without shapely's Python wrappers (they cost more than
    GEOS itself here).

    From two points on, the rectangle is taken of a LineString through the points rather than
    of a MultiPoint: GEOS starts from the convex hull of the geometry's unique coordinates in
    order, which is the same for both, and one geometry is cheaper to build than n + 1
    (tests/test_processors_geo.py holds the two equal, degenerate inputs included).
    """
    coords = np.array((lons, lats), dtype=float).T
    if shapely.geos_version < (3, 12, 0):  # shapely computes the rectangle in Python there
        out = shapely.get_coordinates(
            shapely.minimum_rotated_rectangle(shapely.multipoints(coords))
        )
        return out.tolist()  # type: ignore[no-any-return]
    # The ufuncs write into fresh object arrays (``out=``): cheaper than wrapping results.
    geom = np.empty((), dtype=object)
    if len(coords) >= 2:
        _lib.linestrings(coords, _POINT_ALLOW_NAN, out=geom)
    else:
        geom[()] = _lib.create_collection(_lib.points(coords, _POINT_ALLOW_NAN), _MULTIPOINT)
    rect = np.empty(1, dtype=object)
    _lib.oriented_envelope(geom, out=rect)
    return _lib.get_coordinates(rect, False, False, False).tolist()  # type: ignore[no-any-return]


def _mrr_coords_multipoint(lonlat: Sequence[Point2]) -> Any:
    """The rectangle of the MultiPoint itself (the definition; tests compare the two)."""
    geom = _lib.create_collection(
        _lib.points(np.array(lonlat, dtype=float), _POINT_ALLOW_NAN), _MULTIPOINT
    )
    return _lib.get_coordinates(
        np.array([_lib.oriented_envelope(geom)], dtype=object), False, False, False
    )


def mrr_diagonal_bound(width_deg: float, height_deg: float) -> float:
    """An upper bound, in metres, of :func:`mrr_diagonal_geo` for points whose bounding box is
    ``width_deg`` (longitude) by ``height_deg`` (latitude) degrees; cheap, for a first test.

    GEOS builds the rectangle on a hull edge direction u from two extreme points along u and
    the furthest point from the edge (or, for a degenerate hull, from extreme points), so each
    side is at most the points' extent along its direction and the diagonal, in degrees, at
    most ``sqrt(ext_u**2 + ext_v**2) <= width + height``. A haversine over a segment of ``d``
    degrees is at most ``2 R asin(d * pi / 360)`` (sin x <= x, cos <= 1). The 1e-9 degrees
    (0.1 mm) and 1e-9 relative absorb rounding in GEOS's corners and in the haversine.
    """
    d = (width_deg + height_deg + 1e-9) * _RAD / 2
    return 2 * EARTH_RADIUS_M * asin(min(1.0, d)) * (1 + 1e-9)


def mrr_diagonal_geo(lonlat: Sequence[Point2]) -> float:
    """MovingPandas' stop "diameter" of geographic points, in metres.

    Exactly MovingPandas' ``mrr_diagonal(geom, spherical=True)``: shapely's minimum rotated
    rectangle of the (lon, lat) points in degree space, and the distance between its first and
    third corners on the Earth. Which diagonal is measured matters (degrees of longitude are
    shorter than degrees of latitude), so this uses shapely's rectangle rather than our own.
    Distance: haversine (MovingPandas: the ellipsoid; they differ by well under 1 %).
    """
    return mrr_diagonal_lonlat([p[0] for p in lonlat], [p[1] for p in lonlat])


def mrr_diagonal_lonlat(lons: Sequence[float], lats: Sequence[float]) -> float:
    """:func:`mrr_diagonal_geo` of the points ``zip(lons, lats)``."""
    coords = _mrr_coords(lons, lats)
    if len(coords) >= 4:
        (x1, y1), (x2, y2) = coords[0], coords[2]
    elif len(coords) >= 2:
        (x1, y1), (x2, y2) = coords[0], coords[-1]
    else:
        return 0.0
    return haversine_m(y1, x1, y2, x2)


def mrr_diagonal_bound3(lons: Sequence[float], lats: Sequence[float]) -> float:
    """A tighter upper bound, in metres, of :func:`mrr_diagonal_geo` of three points (inf
    where not derived): for a courier's straight ride, which the box bound misses.

    GEOS's rectangle stands on a hull edge, the direction u of a pair of the points; its sides
    are at most the points' extents ``e_u``, ``e_v`` along u and its normal v (see
    :func:`mrr_diagonal_bound`; a degenerate hull gives a segment between two points, shorter
    still). So the diagonal is ``a u + b v`` with ``|a| <= e_u``, ``|b| <= e_v``. On the sphere a
    step of (dlon, dlat) degrees is at most ``|(c dlon, dlat)|`` degrees of arc, c the largest
    cosine of latitude the corners can have (they lie within the box grown by its half-perimeter),
    and ``|A(a u + b v)| <= e_u |A u| + e_v |A v|`` with ``A = diag(c, 1)``. Same margins as the
    box bound. Unrolled for three points: in a loop it would cost more than GEOS.
    """
    x0, x1, x2 = lons
    y0, y1, y2 = lats
    lo, hi = min(y0, y1, y2), max(y0, y1, y2)
    reach = max(x0, x1, x2) - min(x0, x1, x2) + hi - lo + 1e-9
    if max(-lo, hi) + reach >= 89.0:
        return math.inf
    if lo - reach > 0.0:  # north of the equator: the corners' lowest latitude
        c = cos((lo - reach) * _RAD)
    elif hi + reach < 0.0:
        c = cos((hi + reach) * _RAD)
    else:
        c = 1.0
    ax, ay, bx, by = x1 - x0, y1 - y0, x2 - x0, y2 - y0  # the points, p0 at the origin
    worst = 0.0
    for dx, dy in ((ax, ay), (bx, by), (bx - ax, by - ay)):
        length = hypot(dx, dy)
        if length == 0.0:
            continue
        ux, uy = dx / length, dy / length
        pa, pb = ax * ux + ay * uy, bx * ux + by * uy
        qa, qb = ay * ux - ax * uy, by * ux - bx * uy
        size = (max(0.0, pa, pb) - min(0.0, pa, pb)) * hypot(c * ux, uy) + (
            max(0.0, qa, qb) - min(0.0, qa, qb)
        ) * hypot(c * uy, ux)
        if size > worst:
            worst = size
    d = (worst + 1e-9) * _RAD / 2
    return 2 * EARTH_RADIUS_M * asin(min(1.0, d)) * (1 + 1e-9)


def inside_convex(hull: Sequence[Point2], p: Point2) -> bool:
    """Whether ``p`` lies inside or on the counter-clockwise convex polygon ``hull``."""
    n = len(hull)
    if n < 3:
        return False
    return all(_cross(hull[i], hull[(i + 1) % n], p) >= 0 for i in range(n))

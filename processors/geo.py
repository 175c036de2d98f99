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
    a = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return 2 * EARTH_RADIUS_M * math.asin(min(1.0, math.sqrt(a)))


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


def mrr_diagonal(points: Sequence[Point2]) -> float:
    """Diagonal of the minimum rotated rectangle, in the points' own (planar) units."""
    a, b = min_rotated_rectangle(points)
    return math.dist(a, b)


_POINT_ALLOW_NAN = np.intc(0)  # shapely.creation.HandleNaN.allow, shapely.points' default
_MULTIPOINT = np.intc(shapely.GeometryType.MULTIPOINT)


def _mrr_coords(lonlat: Sequence[Point2]) -> Any:
    """``get_coordinates(minimum_rotated_rectangle(multipoints(lonlat)))``, calling the same GEOS
    functions without shapely's Python wrappers (they cost more than GEOS itself here)."""
    if shapely.geos_version < (3, 12, 0):  # shapely computes the rectangle in Python there
        return shapely.get_coordinates(
            shapely.minimum_rotated_rectangle(shapely.multipoints(lonlat))
        )
    geom = _lib.create_collection(
        _lib.points(np.array(lonlat, dtype=float), _POINT_ALLOW_NAN), _MULTIPOINT
    )
    return _lib.get_coordinates(
        np.array([_lib.oriented_envelope(geom)], dtype=object), False, False, False
    )


def mrr_diagonal_geo(lonlat: Sequence[Point2]) -> float:
    """MovingPandas' stop "diameter" of geographic points, in metres.

    Exactly MovingPandas' ``mrr_diagonal(geom, spherical=True)``: shapely's minimum rotated
    rectangle of the (lon, lat) points in degree space, and the distance between its first and
    third corners on the Earth. Which diagonal is measured matters (degrees of longitude are
    shorter than degrees of latitude), so this uses shapely's rectangle rather than our own.
    Distance: haversine (MovingPandas: the ellipsoid; they differ by well under 1 %).
    """
    coords = _mrr_coords(lonlat)
    if len(coords) >= 4:
        (x1, y1), (x2, y2) = coords[0], coords[2]
    elif len(coords) >= 2:
        (x1, y1), (x2, y2) = coords[0], coords[-1]
    else:
        return 0.0
    return haversine_m(float(y1), float(x1), float(y2), float(x2))


def inside_convex(hull: Sequence[Point2], p: Point2) -> bool:
    """Whether ``p`` lies inside or on the counter-clockwise convex polygon ``hull``."""
    n = len(hull)
    if n < 3:
        return False
    return all(_cross(hull[i], hull[(i + 1) % n], p) >= 0 for i in range(n))

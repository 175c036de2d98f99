"""Small, fast planar and spherical geometry for per-fix processing (pure, no I/O).

The worker calls these once or more per fix, so they are plain-float functions rather than
shapely objects: building a shapely geometry costs more than the whole cleaning step. The
hottest (``haversine_m``, ``bearing_deg``, ``convex_hull``, ``inside_convex``) are C, in
:mod:`processors._geometry`. Distances are haversine on a sphere (R = 6,371,008.8 m); hulls
are computed in degrees, relative to a window's first point. The stop rectangle is
MovingPandas' (GEOS's), asked only where the C window test cannot be certain.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import shapely
from shapely import lib as _lib

from processors._geometry import bearing_deg, convex_hull, haversine_m, inside_convex

__all__ = [
    "EARTH_RADIUS_M",
    "bearing_deg",
    "convex_hull",
    "haversine_m",
    "inside_convex",
    "intersects_xy",
    "mrr_diagonal_lonlat",
]

EARTH_RADIUS_M = 6_371_008.8

_POINT_ALLOW_NAN = np.intc(0)  # shapely.creation.HandleNaN.allow, shapely.points' default
_MULTIPOINT = np.intc(shapely.GeometryType.MULTIPOINT)


def intersects_xy(shapes: Any, lon: float, lat: float) -> list[bool]:
    """``[shape.intersects(Point(lon, lat)) for shape in shapes]`` for an object array of
    (prepared) shapes, in one GEOS call without a point or shapely's Python wrappers (1 µs
    for two shapes, where building the point alone cost 1.5 µs)."""
    return _lib.intersects_xy(shapes, lon, lat).tolist()  # type: ignore[no-any-return]


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


def _mrr_coords_multipoint(lonlat: Sequence[tuple[float, float]]) -> Any:
    """The rectangle of the MultiPoint itself (the definition; tests compare the two)."""
    geom = _lib.create_collection(
        _lib.points(np.array(lonlat, dtype=float), _POINT_ALLOW_NAN), _MULTIPOINT
    )
    return _lib.get_coordinates(
        np.array([_lib.oriented_envelope(geom)], dtype=object), False, False, False
    )


def mrr_diagonal_lonlat(lons: Sequence[float], lats: Sequence[float]) -> float:
    """MovingPandas' stop "diameter" of the points ``zip(lons, lats)``, in metres.

    Exactly MovingPandas' ``mrr_diagonal(geom, spherical=True)``: shapely's minimum rotated
    rectangle of the (lon, lat) points in degree space, and the distance between its first and
    third corners on the Earth. Which diagonal is measured matters (degrees of longitude are
    shorter than degrees of latitude), so this uses shapely's rectangle. Distance: haversine
    (MovingPandas: the ellipsoid; they differ by well under 1 %). The worker asks only where
    :mod:`processors._geometry` cannot be certain.
    """
    coords = _mrr_coords(lons, lats)
    if len(coords) >= 4:
        (x1, y1), (x2, y2) = coords[0], coords[2]
    elif len(coords) >= 2:
        (x1, y1), (x2, y2) = coords[0], coords[-1]
    else:
        return 0.0
    return haversine_m(y1, x1, y2, x2)

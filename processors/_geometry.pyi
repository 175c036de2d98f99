from collections.abc import Sequence

def haversine_m(lat1: float, lon1: float, lat2: float, lon2: float, /) -> float:
    """Great-circle distance in metres (R = 6,371,008.8 m)."""

def bearing_deg(lat1: float, lon1: float, lat2: float, lon2: float, /) -> float:
    """Initial bearing from point 1 to point 2, degrees in [0, 360)."""

def convex_hull(points: Sequence[tuple[float, float]], /) -> list[tuple[float, float]]:
    """Counter-clockwise hull vertices (Andrew's monotone chain); collinear points dropped."""

def window_stopped(window: Sequence[tuple[object, ...]], max_diameter: float, /) -> bool | None:
    """Whether the window's stop rectangle fits ``max_diameter``; None where only GEOS can tell."""

def simplified_indices(points: Sequence[tuple[float, float]], tolerance: float, /) -> list[int]:
    """Indices of the (x, y) points that GEOS's Douglas-Peucker simplification keeps."""

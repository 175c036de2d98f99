from collections.abc import Callable, Sequence
from typing import Any, TypeVar

T = TypeVar("T", bound=tuple[object, ...])

def haversine_m(lat1: float, lon1: float, lat2: float, lon2: float, /) -> float:
    """Great-circle distance in metres (R = 6,371,008.8 m)."""

def bearing_deg(lat1: float, lon1: float, lat2: float, lon2: float, /) -> float:
    """Initial bearing from point 1 to point 2, degrees in [0, 360)."""

def convex_hull(points: Sequence[tuple[float, float]], /) -> list[tuple[float, float]]:
    """Counter-clockwise hull vertices (Andrew's monotone chain); collinear points dropped."""

def window_stopped(window: Sequence[tuple[object, ...]], max_diameter: float, /) -> bool | None:
    """Whether the window's stop rectangle fits ``max_diameter``; None where only GEOS can tell."""

def tail_start(
    window: Sequence[tuple[object, ...]],
    start: int,
    max_diameter: float,
    undecided: Callable[[list[Any], float], bool],
    /,
) -> int:
    """The first i >= start where window[i:] fits max_diameter (or has one point left)."""

def inside_convex(hull: Sequence[tuple[float, float]], x: float, y: float, /) -> bool:
    """Whether (x, y) lies inside or on the counter-clockwise convex polygon hull (3+ points)."""

def compress_window(window: list[T], cap: int, breaker: bool, /) -> list[T]:
    """The window bounded at cap points, hull-interior points dropped first (weights folded)."""

def intersects_rings(
    shapes: tuple[tuple[bytes, ...], ...], x: float, y: float, /
) -> list[bool] | None:
    """Whether (x, y) intersects each shape (closed rings of (x, y) doubles), as GEOS answers;
    None where GEOS's orientation filter cannot be certain."""

def simplified_indices(points: Sequence[tuple[float, float]], tolerance: float, /) -> list[int]:
    """Indices of the (x, y) points that GEOS's Douglas-Peucker simplification keeps."""

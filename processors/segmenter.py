"""Streaming stop and trip detection with MovingPandas' TrajectoryStopDetector semantics.

MovingPandas (``_process_traj``) walks a trajectory keeping a window of points: while not
stopped, the window is cut from the front to the points of the last ``min_duration`` (keeping at
least two); the courier "is stopped" while the diagonal of the window's minimum rotated rectangle
is below ``max_diameter``; when that stops being true and the stopped window spanned at least
``min_duration``, the window minus the newest point is a stop, and the window restarts at the
newest point. :class:`Segmenter` runs exactly this loop one fix at a time, so a stop is known as
soon as MovingPandas would know it, and trips are the movement between stops.

Bounded state (the trade-off): MovingPandas keeps every point of the window. We keep at most
``stop_window_max_points``. When the window grows past that we drop points strictly inside the
window's convex hull (they can never change the rectangle of the window or of any window that
grows from it, so while stopped the result is exact) and fold each dropped point's weight into
the next kept point (so the stop centre stays the mean of all its fixes). Only when MovingPandas
would later cut the window from the front (a courier lingering for less than ``min_duration``)
can a dropped point matter; then our window may be slightly smaller than theirs, which at worst
lets a stop start a few fixes later. The reference comparison in tests/ measures this.

Other differences: the stop centre is the mean of its fixes (MovingPandas: the per-axis median),
distances are haversine rather than on the ellipsoid, and points collinear but for rounding
measure the segment between the farthest two, not GEOS's rectangle of them (which can leave
points out; see processors/_geometry.c).
"""

from __future__ import annotations

from array import array
from dataclasses import dataclass, field
from typing import NamedTuple

from processors._geometry import (
    compress_window,
    simplified_indices,
    tail_start,
    window_stopped,
)
from processors.geo import convex_hull, haversine_m, inside_convex, mrr_diagonal_lonlat


class WPoint(NamedTuple):
    """A window point: a fix plus the fixes folded into it (``n``, mean ``mlat``/``mlon``)."""

    t_ms: int
    lat: float
    lon: float
    cum_m: float
    k: int
    n: int
    mlat: float
    mlon: float


#: ``_new_wpoint(WPoint, (t_ms, ...))`` is ``WPoint(t_ms, ...)`` without the Python-level
#: ``__new__`` of a NamedTuple: half the cost, and the segmenter makes one or two per fix.
_new_wpoint = tuple.__new__


@dataclass(slots=True)
class OpenTrip:
    """The trip in progress: where it began, its running maximum and its (thinned) path."""

    trip_id: str
    start_ms: int
    lat: float
    lon: float
    cum_m: float
    k: int
    start_stop_id: str | None
    max_speed: float = 0.0
    announced: bool = False
    # Points flattened into one int32 array (t, lat, lon, t, lat, lon, ...): ms since start_ms
    # and 1e-7 degrees. Contiguous, and what the state codec stores, as it is.
    path: array[int] = field(default_factory=lambda: array("i"))


@dataclass(frozen=True, slots=True)
class StopSpan:
    start_ms: int
    end_ms: int
    lat: float
    lon: float
    fix_count: int
    is_open: bool


@dataclass(frozen=True, slots=True)
class TripSpan:
    trip_id: str
    start_ms: int
    end_ms: int
    distance_m: float
    max_speed: float
    fix_count: int
    path: tuple[tuple[float, float], ...]
    start_stop_id: str | None
    end_stop_id: str | None
    closed_by: str


@dataclass(slots=True)
class SegState:
    """Per-courier segmentation state (serialised by :mod:`processors.state`)."""

    window: list[WPoint] = field(default_factory=list)
    stopped: bool = False
    breaker: bool = False
    stop_start_ms: int | None = None
    stop_id: str | None = None
    last_stop_id: str | None = None
    trip: OpenTrip | None = None
    cum_m: float = 0.0
    k: int = 0
    hull: list[tuple[float, float]] | None = None  # transient cache, not serialised


class SegEvents:
    """What one step produced, in order of time.

    A plain class: one is made per fix, and a dataclass's ``__init__`` with default
    factories costs twice as much.
    """

    __slots__ = ("distance_m", "stops_closed", "stops_opened", "trips_closed", "trips_started")

    def __init__(self) -> None:
        self.stops_opened: list[tuple[str, StopSpan]] = []
        self.stops_closed: list[tuple[str, StopSpan]] = []
        self.trips_started: list[tuple[str, int, float, float]] = []
        self.trips_closed: list[TripSpan] = []
        self.distance_m = 0.0


class IdFactory:
    """Makes stop and trip ids; the pipeline binds org and courier."""

    def stop_id(self, start_ms: int) -> str:
        raise NotImplementedError

    def trip_id(self, start_ms: int) -> str:
        raise NotImplementedError


@dataclass(frozen=True, slots=True)
class SegParams:
    max_diameter_m: float
    min_duration_ms: int
    max_gap_ms: int
    window_max_points: int
    path_max_points: int
    simplify_tolerance_m: float


def _rectangle_fits(window: list[WPoint], max_diameter: float) -> bool:
    """GEOS's answer to "does the window fit?", where the C test cannot be certain."""
    return mrr_diagonal_lonlat([p.lon for p in window], [p.lat for p in window]) < max_diameter


def _window_stopped(window: list[WPoint], max_diameter: float) -> bool:
    """MovingPandas' "is stopped": the window's stop rectangle fits ``max_diameter``.

    :mod:`processors._geometry` answers without GEOS wherever the answer is certain (nearly
    always); GEOS decides the rest (a diagonal within 1e-7 of the limit, or a near-tie of
    rectangles).
    """
    decided = window_stopped(window, max_diameter)
    if decided is not None:
        return decided
    return _rectangle_fits(window, max_diameter)


def _centre(points: list[WPoint]) -> tuple[float, float, int]:
    n = sum(p.n for p in points)
    lat = sum(p.mlat * p.n for p in points) / n
    lon = sum(p.mlon * p.n for p in points) / n
    return lat, lon, n


def _e7(p: WPoint, start_ms: int) -> tuple[int, int, int]:
    """A path point: ms since the trip's start and position in 1e-7 degrees (1 cm; what the
    output keeps)."""
    return (p.t_ms - start_ms, round(p.lat * 1e7), round(p.lon * 1e7))


def _points(path: array[int]) -> list[tuple[int, int, int]]:
    """The flat path as (ms since start, lat e7, lon e7) points."""
    return list(zip(path[0::3], path[1::3], path[2::3], strict=True))


def _simplify(
    path: list[tuple[int, int, int]], tolerance_m: float
) -> tuple[tuple[float, float], ...]:
    """The trip's (lon, lat) line, simplified as ``LineString(coords).simplify(tolerance in
    degrees, preserve_topology=False)`` would (GEOS's Douglas-Peucker, in C).

    The coordinates are whole 1e-7 degrees divided by 1e7: the double nearest to a decimal of
    7 places, which ``round(x, 7)`` would return unchanged.
    """
    coords = [(lon / 1e7, lat / 1e7) for _, lat, lon in path]
    if len(coords) >= 3 and tolerance_m > 0:
        coords = [coords[i] for i in simplified_indices(coords, tolerance_m / 111_320.0)]
    return tuple(coords)


class Segmenter:
    """The stop/trip state machine; all methods are pure functions of (state, input)."""

    def __init__(self, params: SegParams, ids: IdFactory) -> None:
        self.p = params
        self.ids = ids

    # trips ------------------------------------------------------------------------------------
    def _open_trip(self, st: SegState, at: WPoint, out: SegEvents, announce: bool) -> None:
        trip = OpenTrip(
            trip_id=self.ids.trip_id(at.t_ms),
            start_ms=at.t_ms,
            lat=at.lat,
            lon=at.lon,
            cum_m=at.cum_m,
            k=at.k,
            start_stop_id=st.last_stop_id,
            path=array("i", _e7(at, at.t_ms)),
        )
        st.trip = trip
        if announce:
            self._announce(trip, out)

    def _announce(self, trip: OpenTrip, out: SegEvents) -> None:
        trip.announced = True
        out.trips_started.append((trip.trip_id, trip.start_ms, trip.lat, trip.lon))

    def _close_trip(
        self, st: SegState, end: WPoint, closed_by: str, end_stop_id: str | None, out: SegEvents
    ) -> None:
        trip = st.trip
        st.trip = None
        if trip is None or end.t_ms <= trip.start_ms:
            return
        if not trip.announced:
            self._announce(trip, out)
        end_rel = end.t_ms - trip.start_ms
        path = [pt for pt in _points(trip.path) if pt[0] < end_rel]
        path.append(_e7(end, trip.start_ms))
        out.trips_closed.append(
            TripSpan(
                trip_id=trip.trip_id,
                start_ms=trip.start_ms,
                end_ms=end.t_ms,
                distance_m=max(0.0, end.cum_m - trip.cum_m),
                max_speed=trip.max_speed,
                fix_count=end.k - trip.k + 1,
                path=_simplify(path, self.p.simplify_tolerance_m),
                start_stop_id=trip.start_stop_id,
                end_stop_id=end_stop_id,
                closed_by=closed_by,
            )
        )

    def _trip_step(self, trip: OpenTrip, p: WPoint, speed: float | None, out: SegEvents) -> None:
        if speed is not None and speed > trip.max_speed:
            trip.max_speed = speed
        if not trip.announced and haversine_m(trip.lat, trip.lon, p.lat, p.lon) >= (
            self.p.max_diameter_m
        ):
            self._announce(trip, out)
        path = trip.path
        if haversine_m(path[-2] / 1e7, path[-1] / 1e7, p.lat, p.lon) >= self.p.simplify_tolerance_m:
            path.extend(_e7(p, trip.start_ms))
            if len(path) > 3 * self.p.path_max_points:
                points = _points(path)
                kept = [points[0], *points[1:-1:2], points[-1]]
                trip.path = array("i", [v for point in kept for v in point])

    def _trip_end_point(self, st: SegState) -> WPoint:
        """Where an idle trip ends: at the window's start if the courier is lingering there."""
        return st.window[0] if st.stopped else st.window[-1]

    # steps -------------------------------------------------------------------------------------
    def _tail_step(self, st: SegState) -> bool:
        """Not stopped: keep only the newest run of points that fits (the tail) and, before it,
        the newest point that did not fit (the breaker, ``st.breaker``).

        MovingPandas' window is every point of the last ``min_duration``; it "fits" only if it
        holds no point from before the tail, so the points older than the breaker can never
        change a decision and are not kept. While the breaker is inside the window the courier
        is not stopped; once it ages out, the window is the tail.
        """
        window = st.window
        start = 1 if st.breaker else 0
        first = tail_start(window, start, self.p.max_diameter_m, _rectangle_fits)
        if first > start:  # the point before the tail is the breaker
            st.window = window[first - 1 :]
            st.breaker = True
            st.hull = None
        return not st.breaker and len(st.window) > 1

    def step(
        self,
        st: SegState,
        t_ms: int,
        lat: float,
        lon: float,
        distance_m: float,
        speed: float | None,
    ) -> SegEvents:
        """Feed one accepted fix, in time order; returns what it opened and closed.

        ``distance_m`` is the movement since the last moving anchor (0 under the jitter
        radius); it counts as 0 while the courier is stopped, and ``SegEvents.distance_m``
        says what was counted.
        """
        out = SegEvents()
        p = self.p
        if st.window and t_ms - st.window[-1].t_ms > p.max_gap_ms and st.trip is not None:
            self._close_trip(st, self._trip_end_point(st), "gap", None, out)
        st.k += 1
        point = _new_wpoint(WPoint, (t_ms, lat, lon, st.cum_m, st.k, 1, lat, lon))
        window = st.window
        window.append(point)
        was_stopped = st.stopped
        if not was_stopped:
            first = 0
            while len(window) - first > 2 and t_ms - window[first].t_ms >= p.min_duration_ms:
                first += 1
            if first:
                del window[:first]
                st.hull = None
                st.breaker = False
        stopped = False
        if len(window) > 1:
            if was_stopped:
                if st.hull is not None and len(st.hull) >= 3:
                    lat0, lon0 = window[0].lat, window[0].lon
                    stopped = inside_convex(st.hull, lon - lon0, lat - lat0)
                if not stopped:
                    stopped = _window_stopped(window, p.max_diameter_m)
                    st.hull = None
            else:
                stopped = self._tail_step(st)
                window = st.window
        # Parked jitter: while the window fits (the courier is stopped), nothing moved; the
        # distance from the last moving anchor is counted once the courier leaves.
        out.distance_m = 0.0 if stopped else distance_m
        if out.distance_m:
            st.cum_m += out.distance_m
            point = _new_wpoint(WPoint, (t_ms, lat, lon, st.cum_m, st.k, 1, lat, lon))
            window[-1] = point
        if not stopped and was_stopped and len(window) > 1:
            begin, end = window[0], window[-2]
            if end.t_ms - begin.t_ms >= p.min_duration_ms:
                clat, clon, n = _centre(window[:-1])
                span = StopSpan(begin.t_ms, end.t_ms, clat, clon, n, is_open=False)
                sid = st.stop_id or self.ids.stop_id(begin.t_ms)
                if st.stop_id is None:
                    # Confirmed only now (it never reached min_duration while growing).
                    if st.trip is not None:
                        self._close_trip(st, begin, "stop", sid, out)
                    out.stops_opened.append((sid, span))
                out.stops_closed.append((sid, span))
                st.last_stop_id = sid
                st.stop_id = None
                st.stop_start_ms = None
                st.window = window = [point]
                st.breaker = False
                st.hull = None
                self._open_trip(st, end, out, announce=True)
        st.stopped = stopped
        if stopped and st.stop_id is None and t_ms - window[0].t_ms >= p.min_duration_ms:
            begin = window[0]
            sid = self.ids.stop_id(begin.t_ms)
            if st.trip is not None:
                self._close_trip(st, begin, "stop", sid, out)
            clat, clon, n = _centre(window)
            out.stops_opened.append((sid, StopSpan(begin.t_ms, t_ms, clat, clon, n, is_open=True)))
            st.stop_id = sid
            st.stop_start_ms = begin.t_ms
        if st.trip is None and st.stop_id is None and not stopped:
            self._open_trip(st, point, out, announce=False)
        elif st.trip is not None and st.trip.start_ms < t_ms:
            self._trip_step(st.trip, point, speed, out)
        if len(window) > p.window_max_points:
            st.window = compress_window(window, p.window_max_points, st.breaker)
            st.hull = None
        if stopped and st.hull is None and len(st.window) >= 3:
            lat0, lon0 = st.window[0].lat, st.window[0].lon
            st.hull = convex_hull([(q.lon - lon0, q.lat - lat0) for q in st.window])
        return out

    def close_idle(self, st: SegState, closed_by: str) -> SegEvents:
        """No fix for longer than the gap: close the open trip at its last known point."""
        out = SegEvents()
        if st.trip is not None and st.window:
            self._close_trip(st, self._trip_end_point(st), closed_by, None, out)
        return out

    def open_stop_span(self, st: SegState) -> StopSpan | None:
        """The confirmed stop the courier is in now (for the end of an offline run)."""
        if st.stop_id is None or not st.window:
            return None
        clat, clon, n = _centre(st.window)
        return StopSpan(st.window[0].t_ms, st.window[-1].t_ms, clat, clon, n, is_open=True)

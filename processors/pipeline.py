"""One courier's fixes in, records out: cleaning, reordering, enrichment, segmentation, tags.

:class:`CourierProcessor` is the whole product logic as pure functions of
``(CourierState, input) -> Outputs``. The faust worker and the offline ``geostream segment``
command both call it, so they cannot disagree. Nothing here reads a clock: processing time
never leaks into outputs, and replaying the same input gives byte-identical records.

Order of work for a fix: static checks and dedupe at once; then the fix waits in a small
reorder buffer, and released fixes go, in time order, through the motion checks, enrichment
and the segmenter. A fix is released when a fix ``reorder_window_s`` newer (in event time) has
come, or when its upload has been taken in whole and the gateway received it at least
``reorder_hold_s`` before the courier's newest fix (the hold's bound is in processing time,
read from ``received_at``, so replays still give the same records). With the default hold
of 0 an upload's fixes are put in order and released together: the live position leaves with
the upload that carried it, not with the next one. A fix that arrives older than what was
already released is *late*: it passes the same static checks and is published with
``is_late=True`` for history, but never touches the live state.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from config.retention import RetentionPolicy
from processors import ids
from processors._cleaning import epoch_ms
from processors.cleaning import CleanState, check_static, motion_step, seen_before, ts_ms
from processors.config import CleaningRules, ProcessorConfig
from processors.geo import bearing_deg, haversine_m
from processors.segmenter import (
    IdFactory,
    SegEvents,
    Segmenter,
    SegParams,
    SegState,
    StopSpan,
    TripSpan,
)
from processors.zones import Geofences, ZoneState, track_zones
from schemas.records import CourierEvent, EnrichedFix, IngestedFix, Rejection, Stop, Trip

_FIX_FIELDS = tuple(IngestedFix.__dataclass_fields__)
assert tuple(EnrichedFix.__dataclass_fields__)[: len(_FIX_FIELDS)] == _FIX_FIELDS
_new = object.__new__
_set_attr = object.__setattr__


def ms_to_dt(t_ms: int) -> datetime:
    return datetime.fromtimestamp(t_ms / 1000.0, UTC)


@dataclass(slots=True)
class CourierState:
    """Everything remembered about one courier (kept in the worker's changelogged table)."""

    org_id: str
    courier_id: str
    clean: CleanState = field(default_factory=CleanState)
    buffer: list[IngestedFix] = field(default_factory=list)
    buffer_ms: list[int] = field(default_factory=list)
    newest_ms: int | None = None
    released_ms: int | None = None
    last_received_ms: int = 0
    anchor: tuple[float, float] | None = None
    odo_day: int = 0
    odo_m: float = 0.0
    zones: ZoneState = field(default_factory=ZoneState)
    seg: SegState = field(default_factory=SegState)
    #: Where in ``fixes.raw`` (partition, offset) the last record applied to this state came
    #: from; -1 before any. The worker skips a record at or before it: a commit can cover a
    #: state that is ahead of its offsets, and those records then come again.
    source_partition: int = -1
    source_offset: int = -1


@dataclass(slots=True)
class Outputs:
    """Records produced by one call, per output topic."""

    clean: list[EnrichedFix] = field(default_factory=list)
    rejected: list[Rejection] = field(default_factory=list)
    events: list[CourierEvent] = field(default_factory=list)
    stops: list[Stop] = field(default_factory=list)
    trips: list[Trip] = field(default_factory=list)
    timer_closed_trips: int = 0

    def extend(self, other: Outputs) -> None:
        self.clean += other.clean
        self.rejected += other.rejected
        self.events += other.events
        self.stops += other.stops
        self.trips += other.trips
        self.timer_closed_trips += other.timer_closed_trips

    @property
    def latest(self) -> EnrichedFix | None:
        """The newest live (not late) clean fix, for ``courier.latest``."""
        for fix in reversed(self.clean):
            if not fix.is_late:
                return fix
        return None


class _Ids(IdFactory):
    __slots__ = ("courier_id", "org_id")

    def __init__(self, org_id: str = "", courier_id: str = "") -> None:
        self.org_id = org_id
        self.courier_id = courier_id

    def stop_id(self, start_ms: int) -> str:
        return ids.stop_id(self.org_id, self.courier_id, start_ms)

    def trip_id(self, start_ms: int) -> str:
        return ids.trip_id(self.org_id, self.courier_id, start_ms)


class CourierProcessor:
    """The pure pipeline for every courier; holds only configuration and geofences."""

    def __init__(self, config: ProcessorConfig, geofences: Geofences | None = None) -> None:
        self.config = config
        self.geofences = geofences or Geofences([])
        self.retention = config.retention or RetentionPolicy(
            periods={
                "raw_fixes": _days(90),
                "trips": _days(180),
                "stops": _days(180),
                "events": _days(90),
                "technical": _days(30),
            }
        )
        self.params = SegParams(
            max_diameter_m=config.stop_max_diameter_m,
            min_duration_ms=int(config.stop_min_duration_s * 1000),
            max_gap_ms=int(config.trip_max_gap_s * 1000),
            window_max_points=config.stop_window_max_points,
            path_max_points=config.trip_path_max_points,
            simplify_tolerance_m=config.trip_simplify_tolerance_m,
        )
        self.window_ms = int(config.reorder_window_s * 1000)
        self.hold_ms = int(config.reorder_hold_s * 1000)
        self.dwell_ms = int(config.zone_min_dwell_s * 1000)
        # One segmenter for every courier: ``_accept`` points its ids at the courier in hand
        # (calls are synchronous), rather than building two objects per fix.
        self._ids = _Ids()
        self._seg = Segmenter(self.params, self._ids)
        self._periods: dict[tuple[str, str | None], timedelta] = {}

    def _expires_at(self, retention_class: str, org_id: str | None, ts: datetime) -> datetime:
        """``retention.expires_at``, with the period looked up once per class and org."""
        period = self._periods.get((retention_class, org_id))
        if period is None:
            period = self._periods[(retention_class, org_id)] = self.retention.period(
                retention_class, org_id
            )
        return ts + period

    def new_state(self, org_id: str, courier_id: str) -> CourierState:
        return CourierState(org_id=org_id, courier_id=courier_id)

    # entry points ------------------------------------------------------------------------------
    def process(self, st: CourierState, fix: IngestedFix) -> Outputs:
        """Handle one fix of ``st``'s courier (any arrival order)."""
        return self.process_many(st, (fix,))

    def process_many(self, st: CourierState, fixes: Iterable[IngestedFix]) -> Outputs:
        """Handle fixes of ``st``'s courier in arrival order (an upload's worth, say).

        The fixes are one upload: at the end, what has waited out ``reorder_hold_s`` is
        released (with the default 0, the whole upload). Without that bound (a hold longer
        than the data) the outputs, in their order, and the state are those of
        :meth:`process` called for each fix in turn: a fix newer than the buffer would have
        released by now just joins the buffer, whose fixes are then released in the same
        order either way; any other fix (late, rejected, or one the release would reach)
        releases what is due first, as the fix-by-fix calls would have.
        """
        out = Outputs()
        rules = self.config.rules_for(st.org_id)
        window_ms = self.window_ms
        due: int | None = None  # what to release up to, once fixes joined the buffer
        for fix in fixes:
            received_ms = epoch_ms(fix.received_at)
            if received_ms > st.last_received_ms:
                st.last_received_ms = received_ms
            problem = check_static(fix, rules)
            t_ms = ts_ms(fix) if problem is None else 0
            if problem is None:
                problem = seen_before(st.clean, fix.fix_id, t_ms, rules)
            if due is not None and (problem is not None or t_ms <= due):
                self._release(st, due, out, rules)
                due = None
            if problem is not None:
                out.rejected.append(self._rejection(st, fix, *problem))
                continue
            if st.released_ms is not None and t_ms <= st.released_ms:
                out.clean.append(self._late(st, fix, t_ms))
                continue
            buffer_ms = st.buffer_ms
            if not buffer_ms or t_ms >= buffer_ms[-1]:  # in order: the common case
                buffer_ms.append(t_ms)
                st.buffer.append(fix)
            else:
                i = bisect.bisect(buffer_ms, t_ms)
                buffer_ms.insert(i, t_ms)
                st.buffer.insert(i, fix)
            if st.newest_ms is None or t_ms > st.newest_ms:
                st.newest_ms = t_ms
            due = st.newest_ms - window_ms
        if st.buffer:
            held = self._held_until(st, st.last_received_ms)
            if held is not None and (due is None or held > due):
                due = held
        if due is not None:
            self._release(st, due, out, rules)
        return out

    def close_idle(self, st: CourierState, now: datetime) -> Outputs:
        """Timer: release held fixes and close the open trip when the courier went quiet.

        "Quiet" is measured from the gateway's ``received_at`` of the courier's last fix, so
        a replay of old data at full speed does not close trips that the data keeps open.
        """
        out = Outputs()
        now_ms = epoch_ms(now)
        idle_ms = now_ms - st.last_received_ms
        if st.buffer:
            upto = st.buffer_ms[-1] if idle_ms >= self.window_ms else self._held_until(st, now_ms)
            if upto is not None:
                self._release(st, upto, out, self.config.rules_for(st.org_id))
        if idle_ms >= self.params.max_gap_ms and st.seg.trip is not None and not st.buffer:
            seg = Segmenter(self.params, _Ids(st.org_id, st.courier_id))
            events = seg.close_idle(st.seg, "timer")
            out.timer_closed_trips += len(events.trips_closed)
            self._seg_records(st, events, out)
        return out

    def finish(self, st: CourierState) -> Outputs:
        """End of an offline trace: release everything, close the trip as a gap."""
        out = Outputs()
        if st.buffer:
            self._release(st, st.buffer_ms[-1], out, self.config.rules_for(st.org_id))
        seg = Segmenter(self.params, _Ids(st.org_id, st.courier_id))
        self._seg_records(st, seg.close_idle(st.seg, "gap"), out)
        return out

    def open_stop(self, st: CourierState) -> Stop | None:
        """The stop the courier is in at the end of the data, if any (marked open)."""
        seg = Segmenter(self.params, _Ids(st.org_id, st.courier_id))
        span = seg.open_stop_span(st.seg)
        if span is None or st.seg.stop_id is None:
            return None
        return self._stop(st, st.seg.stop_id, span)

    # internals ---------------------------------------------------------------------------------
    def _held_until(self, st: CourierState, now_ms: int) -> int | None:
        """The event time up to which the buffer is due by the hold: that of the newest held
        fix the gateway received ``reorder_hold_s`` or more before ``now_ms`` (None if none)."""
        latest = now_ms - self.hold_ms
        upto: int | None = None
        for fix, t_ms in zip(st.buffer, st.buffer_ms, strict=True):
            if epoch_ms(fix.received_at) <= latest:
                upto = t_ms
        return upto

    def _release(self, st: CourierState, upto_ms: int, out: Outputs, rules: CleaningRules) -> None:
        n = bisect.bisect(st.buffer_ms, upto_ms)
        if n == 0:
            return
        ready, ready_ms = st.buffer[:n], st.buffer_ms[:n]
        del st.buffer[:n]
        del st.buffer_ms[:n]
        for fix, t_ms in zip(ready, ready_ms, strict=True):
            st.released_ms = t_ms
            self._accept(st, fix, t_ms, out, rules)

    def _accept(
        self, st: CourierState, fix: IngestedFix, t_ms: int, out: Outputs, rules: CleaningRules
    ) -> None:
        clean = st.clean
        prev_ms, prev_lat, prev_lon = clean.last_ms, clean.last_lat, clean.last_lon
        lat, lon = fix.lat, fix.lon
        problem, step = motion_step(clean, t_ms, lat, lon, rules)
        if problem is not None:
            out.rejected.append(self._rejection(st, fix, *problem))
            return
        speed: float | None = None
        heading: float | None = None
        if prev_ms is not None:
            speed = step / ((t_ms - prev_ms) / 1000.0)
            if step > 0:
                heading = bearing_deg(prev_lat, prev_lon, lat, lon)
        move = 0.0
        anchor = st.anchor
        if anchor is None:
            st.anchor = (lat, lon)
        else:
            a_lat, a_lon = anchor
            if prev_ms is not None and a_lat == prev_lat and a_lon == prev_lon:
                from_anchor = step  # the same haversine (moving: the anchor is the last fix)
            else:
                from_anchor = haversine_m(a_lat, a_lon, lat, lon)
            if from_anchor >= max(rules.jitter_radius_m, fix.accuracy_m or 0.0):
                move = from_anchor
        ids = self._ids
        ids.org_id = st.org_id
        ids.courier_id = st.courier_id
        events = self._seg.step(st.seg, t_ms, lat, lon, move, speed)
        distance = events.distance_m
        if distance:
            st.anchor = (lat, lon)
        day = t_ms // 86_400_000
        if day != st.odo_day:
            st.odo_day = day
            st.odo_m = 0.0
        st.odo_m += distance
        n_events = len(out.events)
        inner, outer = self.geofences.lookup(st.org_id, lat, lon)
        if inner or st.zones.inside or st.zones.pending:
            for kind, zone_id, at_ms in track_zones(st.zones, t_ms, inner, outer, self.dwell_ms):
                out.events.append(self._event(st, kind, zone_id, at_ms, lat, lon))
        if (
            events.trips_closed
            or events.stops_opened
            or events.stops_closed
            or events.trips_started
        ):
            self._seg_records(st, events, out)
        elif len(out.events) > n_events:
            out.events.sort(key=_event_ts)  # what _seg_records would have done
        stop_id = st.seg.stop_id
        trip = st.seg.trip
        out.clean.append(
            self._enriched(
                fix,
                distance,
                speed,
                heading,
                st.odo_m,
                tuple(inner),
                trip.trip_id if trip is not None and stop_id is None else None,
                stop_id,
                False,
            )
        )

    def _late(self, st: CourierState, fix: IngestedFix, t_ms: int) -> EnrichedFix:
        inner, _ = self.geofences.lookup(st.org_id, fix.lat, fix.lon)
        return self._enriched(fix, 0.0, None, None, st.odo_m, tuple(inner), None, None, True)

    def _enriched(
        self,
        fix: IngestedFix,
        distance_m: float,
        derived_speed_mps: float | None,
        derived_heading_deg: float | None,
        odometer_m: float,
        zone_ids: tuple[str, ...],
        trip_id: str | None,
        stop_id: str | None,
        is_late: bool,
    ) -> EnrichedFix:
        """The fix with its derived fields; times in UTC, tagged ``raw_fixes``.

        Equal to ``EnrichedFix(**fields)``, built from a copy of the fix's instance dict (its
        fields, in order: an EnrichedFix's first fields) rather than through the frozen
        dataclass's ``__init__``, which calls ``object.__setattr__`` per field.
        """
        ts = fix.ts
        received_at = fix.received_at
        fields = dict(fix.__dict__)
        # Already in UTC (pydantic's own TzInfo, offset zero) stays: converting costs more.
        if ts.tzinfo is not UTC and ts.utcoffset():
            fields["ts"] = ts.astimezone(UTC)
        if received_at.tzinfo is not UTC and received_at.utcoffset():
            fields["received_at"] = received_at.astimezone(UTC)
        fields["distance_m"] = distance_m
        fields["derived_speed_mps"] = derived_speed_mps
        fields["derived_heading_deg"] = derived_heading_deg
        fields["odometer_m"] = odometer_m
        fields["zone_ids"] = zone_ids
        fields["trip_id"] = trip_id
        fields["stop_id"] = stop_id
        fields["is_late"] = is_late
        fields["retention_class"] = "raw_fixes"
        fields["expires_at"] = self._expires_at("raw_fixes", fix.org_id, ts)
        record: EnrichedFix = _new(EnrichedFix)
        _set_attr(record, "__dict__", fields)
        return record

    def _rejection(self, st: CourierState, fix: IngestedFix, reason: str, detail: str) -> Rejection:
        record = {name: getattr(fix, name) for name in _FIX_FIELDS}
        return Rejection(
            stage="processor",
            reason=reason,
            detail=detail,
            org_id=st.org_id,
            courier_id=st.courier_id,
            fix_id=fix.fix_id,
            ts=fix.ts,
            rejected_at=fix.received_at,
            record=record,
            expires_at=self._expires_at("technical", st.org_id, fix.received_at),
        )

    def _event(
        self, st: CourierState, kind: str, subject: str, t_ms: int, lat: float, lon: float
    ) -> CourierEvent:
        ts = ms_to_dt(t_ms)
        return CourierEvent(
            org_id=st.org_id,
            courier_id=st.courier_id,
            event_id=ids.event_id(st.org_id, st.courier_id, kind, subject, t_ms),
            kind=kind,  # type: ignore[arg-type]
            ts=ts,
            subject_id=subject,
            lat=lat,
            lon=lon,
            expires_at=self._expires_at("events", st.org_id, ts),
        )

    def _stop(self, st: CourierState, stop_id: str, span: StopSpan) -> Stop:
        start, end = ms_to_dt(span.start_ms), ms_to_dt(span.end_ms)
        return Stop(
            org_id=st.org_id,
            courier_id=st.courier_id,
            stop_id=stop_id,
            start=start,
            end=end,
            lat=span.lat,
            lon=span.lon,
            duration_s=(span.end_ms - span.start_ms) / 1000.0,
            fix_count=span.fix_count,
            zone_id=self.geofences.zone_at(st.org_id, span.lat, span.lon),
            is_open=span.is_open,
            expires_at=self._expires_at("stops", st.org_id, start),
        )

    def _trip(self, st: CourierState, span: TripSpan) -> Trip:
        start, end = ms_to_dt(span.start_ms), ms_to_dt(span.end_ms)
        duration = (span.end_ms - span.start_ms) / 1000.0
        return Trip(
            org_id=st.org_id,
            courier_id=st.courier_id,
            trip_id=span.trip_id,
            start=start,
            end=end,
            distance_m=span.distance_m,
            duration_s=duration,
            avg_speed_mps=span.distance_m / duration if duration > 0 else 0.0,
            max_speed_mps=span.max_speed,
            path=span.path,
            fix_count=max(1, span.fix_count),
            start_stop_id=span.start_stop_id,
            end_stop_id=span.end_stop_id,
            closed_by=span.closed_by,  # type: ignore[arg-type]
            expires_at=self._expires_at("trips", st.org_id, start),
        )

    def _seg_records(self, st: CourierState, events: SegEvents, out: Outputs) -> None:
        for trip in events.trips_closed:
            out.trips.append(self._trip(st, trip))
            last = trip.path[-1]
            out.events.append(
                self._event(st, "trip_ended", trip.trip_id, trip.end_ms, last[1], last[0])
            )
        for stop_id, span in events.stops_opened:
            out.stops.append(self._stop(st, stop_id, span))
            out.events.append(
                self._event(st, "stop_started", stop_id, span.start_ms, span.lat, span.lon)
            )
        for stop_id, span in events.stops_closed:
            out.stops.append(self._stop(st, stop_id, span))
            out.events.append(
                self._event(st, "stop_ended", stop_id, span.end_ms, span.lat, span.lon)
            )
        for trip_id, start_ms, lat, lon in events.trips_started:
            out.events.append(self._event(st, "trip_started", trip_id, start_ms, lat, lon))
        out.events.sort(key=_event_ts)


def _event_ts(event: CourierEvent) -> datetime:
    return event.ts


def _days(n: int) -> timedelta:
    return timedelta(days=n)

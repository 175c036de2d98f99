"""Traccar-style cleaning filters with machine-readable reason codes (pure, no I/O).

Two stages. :func:`check_static` needs nothing but the fix (coordinates, the (0,0) island,
timestamps against ``received_at``, accuracy). :func:`motion_step` compares a fix with the last
accepted one, in time order (minimum period, implausible jump with recovery). Duplicates are
caught by :func:`seen_before` against a bounded per-courier memory of recent ids and times.
"""

from __future__ import annotations

import math
from array import array
from dataclasses import dataclass, field

from processors._cleaning import epoch_ms, fix_hash, recent_match
from processors.config import CleaningRules
from processors.geo import haversine_m
from schemas.records import IngestedFix

#: Every reason code the processors put on ``fixes.rejected``.
REASONS = (
    "invalid_coordinates",
    "lat_out_of_range",
    "lon_out_of_range",
    "null_island",
    "ts_in_future",
    "ts_too_old",
    "low_accuracy",
    "duplicate_fix_id",
    "duplicate_ts",
    "min_period",
    "implausible_jump",
    "malformed_record",
)


def int64s() -> array[int]:
    return array("q")


@dataclass(slots=True)
class CleanState:
    """Per courier: recent (id hash, ts) pairs, last accepted fix, pending jump candidates.

    The pairs are one flat int64 array (h0, t0, h1, t1, ...), oldest first: with thousands of
    couriers a courier's state is never in the CPU cache, and scanning 16 contiguous pairs costs
    a few cache lines where a list of tuples costs some fifty scattered objects.
    """

    recent_flat: array[int] = field(default_factory=int64s)
    last_ms: int | None = None
    last_lat: float = 0.0
    last_lon: float = 0.0
    jumps: list[tuple[int, float, float]] = field(default_factory=list)

    @property
    def recent(self) -> list[tuple[int, int]]:
        """The remembered (id hash, ts ms) pairs, oldest first."""
        flat = self.recent_flat
        return list(zip(flat[0::2], flat[1::2], strict=True))


def ts_ms(fix: IngestedFix) -> int:
    return epoch_ms(fix.ts)


def check_static(fix: IngestedFix, rules: CleaningRules) -> tuple[str, str] | None:
    """``(reason, detail)`` if the fix is unusable on its own, else None."""
    lat, lon = fix.lat, fix.lon
    if not (math.isfinite(lat) and math.isfinite(lon)):
        return "invalid_coordinates", f"lat={lat} lon={lon}"
    if not -90.0 <= lat <= 90.0:
        return "lat_out_of_range", f"lat={lat}"
    if not -180.0 <= lon <= 180.0:
        return "lon_out_of_range", f"lon={lon}"
    if abs(lat) < 1e-6 and abs(lon) < 1e-6:
        return "null_island", "position (0, 0) is a missing fix, not a place"
    skew = (fix.ts - fix.received_at).total_seconds()
    if skew > rules.max_future_s:
        return "ts_in_future", f"ts is {skew:.0f}s after received_at (max {rules.max_future_s})"
    if -skew > rules.max_past_s:
        return "ts_too_old", f"ts is {-skew:.0f}s before received_at (max {rules.max_past_s})"
    if fix.accuracy_m is not None and fix.accuracy_m > rules.max_accuracy_m:
        return "low_accuracy", f"accuracy {fix.accuracy_m} m > {rules.max_accuracy_m} m"
    return None


def seen_before(
    st: CleanState, fix_id: str, t_ms: int, rules: CleaningRules
) -> tuple[str, str] | None:
    """Duplicate by fix id or by timestamp among the recent fixes; remembers this one if new."""
    h = fix_hash(fix_id)
    flat = st.recent_flat
    # The oldest pair that matches names the reason; its id is compared before its ts.
    match = recent_match(flat, h, t_ms)
    if match == 1:
        return "duplicate_fix_id", f"fix_id {fix_id} seen before"
    if match == 2:
        return "duplicate_ts", "another fix of this courier has the same ts"
    flat.append(h)
    flat.append(t_ms)
    if len(flat) > 2 * rules.dedupe_memory:
        del flat[:2]
    return None


def motion_step(
    st: CleanState, t_ms: int, lat: float, lon: float, rules: CleaningRules
) -> tuple[tuple[str, str] | None, float]:
    """Minimum period and implausible jump against the last accepted fix (in time order).

    Recovery: rejected jumps are remembered; once ``jump_recovery_fixes`` consecutive ones agree
    with each other (plausible speed between them), the courier really is there and the latest
    is accepted, re-anchoring the filter. On acceptance the state moves to this fix.
    Returns the problem (or None) and the haversine step from the last accepted fix (0.0 when
    there is none), which enrichment needs too: computed once per fix.
    """
    step = 0.0
    if st.last_ms is not None:
        dt = (t_ms - st.last_ms) / 1000.0
        if dt < rules.min_period_s:
            return (
                ("min_period", f"{dt:.3f}s after the previous fix (min {rules.min_period_s})"),
                step,
            )
        step = haversine_m(st.last_lat, st.last_lon, lat, lon)
        speed = step / dt
        if speed > rules.max_speed_mps:
            consistent = False
            if st.jumps:
                jt, jlat, jlon = st.jumps[-1]
                jdt = (t_ms - jt) / 1000.0
                consistent = jdt > 0 and haversine_m(jlat, jlon, lat, lon) / jdt <= (
                    rules.max_speed_mps
                )
            if consistent:
                st.jumps.append((t_ms, lat, lon))
            else:
                st.jumps = [(t_ms, lat, lon)]
            if len(st.jumps) <= rules.jump_recovery_fixes:
                return ("implausible_jump", f"{speed:.1f} m/s > {rules.max_speed_mps} m/s"), step
    if st.jumps:
        st.jumps = []
    st.last_ms = t_ms
    st.last_lat = lat
    st.last_lon = lon
    return None, step

"""Shared builders for the processors' tests (pure, no I/O)."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

from config.settings import get_settings
from processors.config import ProcessorConfig
from processors.pipeline import CourierProcessor, CourierState, Outputs
from processors.zones import Geofences
from schemas.records import IngestedFix

T0 = datetime(2026, 3, 2, 8, 0, tzinfo=UTC)
LAT0, LON0 = 45.7600, 4.8400
M_PER_DEG_LAT = 111_195.0


def offset(north_m: float, east_m: float) -> tuple[float, float]:
    """(lat, lon) this many metres north and east of (LAT0, LON0)."""
    return (
        LAT0 + north_m / M_PER_DEG_LAT,
        LON0 + east_m / (M_PER_DEG_LAT * math.cos(math.radians(LAT0))),
    )


def fix(
    seconds: float,
    north_m: float = 0.0,
    east_m: float = 0.0,
    *,
    fix_id: str | None = None,
    courier: str = "c1",
    org: str = "acme",
    accuracy_m: float | None = 5.0,
    received_delay_s: float = 1.0,
    lat: float | None = None,
    lon: float | None = None,
) -> IngestedFix:
    ts = T0 + timedelta(seconds=seconds)
    if lat is None or lon is None:
        lat, lon = offset(north_m, east_m)
    return IngestedFix(
        fix_id=fix_id or f"{courier}-{seconds:g}",
        ts=ts,
        lat=lat,
        lon=lon,
        accuracy_m=accuracy_m,
        org_id=org,
        courier_id=courier,
        device_id="d1",
        received_at=ts + timedelta(seconds=received_delay_s),
    )


def config(**overrides: object) -> ProcessorConfig:
    base: dict[str, object] = {
        "stop_max_diameter_m": 80.0,
        "stop_min_duration_s": 120.0,
        "trip_max_gap_s": 600.0,
        "reorder_window_s": 0.0,
        "zone_min_dwell_s": 0.0,
    }
    base.update(overrides)
    return ProcessorConfig.from_settings(get_settings(), **base)


def processor(geofences: Geofences | None = None, **overrides: object) -> CourierProcessor:
    return CourierProcessor(config(**overrides), geofences)


def run(
    proc: CourierProcessor, fixes: list[IngestedFix], state: CourierState | None = None
) -> tuple[CourierState, Outputs]:
    st = state or proc.new_state(fixes[0].org_id, fixes[0].courier_id)
    out = Outputs()
    for f in fixes:
        out.extend(proc.process(st, f))
    return st, out


def day_route() -> list[IngestedFix]:
    """Drive 10 min east at ~8 m/s, park 5 min (jitter), drive 10 min north, park 4 min."""
    fixes: list[IngestedFix] = []
    t = 0.0
    north = east = 0.0
    for _ in range(60):  # 10 s period, 80 m per fix
        fixes.append(fix(t, north, east))
        t += 10
        east += 80
    for i in range(30):
        jitter = ((i * 7) % 11 - 5) * 1.5
        fixes.append(fix(t, north + jitter, east - jitter))
        t += 10
    for _ in range(60):
        north += 80
        fixes.append(fix(t, north, east))
        t += 10
    for i in range(24):
        jitter = ((i * 5) % 9 - 4) * 2.0
        fixes.append(fix(t, north + jitter, east + jitter))
        t += 10
    return fixes

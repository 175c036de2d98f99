"""Simulated couriers: a pure model that yields what a courier's phone uploads, and when.

No I/O here: :func:`courier_uploads` is a generator of :class:`Upload` (send time + wire fixes),
driven by a seeded :class:`random.Random`, so tests can run hours of simulated time in
milliseconds. ``geostream simulate`` (:mod:`ingest.simulate_run`) posts the uploads at the edge.

What the model does, because real couriers do it:
- a shift is depot -> deliveries -> depot, driving or walking at plausible speeds;
- dwell for minutes at each stop, with sparse battery-saving fixes while standing still;
- GPS noise whose spread follows the reported ``accuracy_m`` (network fixes are worse);
- occasional jumps (a wildly wrong position with a small claimed accuracy);
- gaps (tunnels, the OS killing the app) when nothing is recorded;
- offline spells: fixes are recorded but uploaded late, in one batch, when back online;
- duplicates: an upload whose answer was lost is sent again with the same ``fix_id``s.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

EARTH_RADIUS_M = 6_371_008.8
CITY_CENTRE = (43.2380, 76.8890)  # Almaty


@dataclass(frozen=True, slots=True)
class Behaviour:
    """Rates of the messy parts, per fix or per minute; defaults look like a real fleet."""

    jump_probability: float = 0.004
    gap_per_minute: float = 0.01
    gap_minutes: tuple[float, float] = (1.0, 8.0)
    offline_per_minute: float = 0.008
    offline_minutes: tuple[float, float] = (5.0, 30.0)
    duplicate_upload_probability: float = 0.02
    network_fix_probability: float = 0.08
    epoch_ms_probability: float = 0.5
    dwell_minutes: tuple[float, float] = (2.0, 12.0)
    depot_dwell_minutes: tuple[float, float] = (10.0, 25.0)
    stationary_interval_factor: float = 6.0
    deliveries: tuple[int, int] = (4, 12)
    area_radius_m: float = 6_000.0


@dataclass(frozen=True, slots=True)
class Upload:
    """One POST a device makes: at simulated time ``at_s`` (epoch s), these wire fixes."""

    courier_id: str
    at_s: float
    fixes: tuple[dict[str, Any], ...]
    late: bool = False
    duplicate: bool = False


def offset(lat: float, lon: float, north_m: float, east_m: float) -> tuple[float, float]:
    """Move a point by metres (small distances, equirectangular)."""
    dlat = math.degrees(north_m / EARTH_RADIUS_M)
    dlon = math.degrees(east_m / (EARTH_RADIUS_M * math.cos(math.radians(lat))))
    return lat + dlat, lon + dlon


def distance_m(a: tuple[float, float], b: tuple[float, float]) -> float:
    """Haversine distance between (lat, lon) points."""
    lat1, lon1, lat2, lon2 = map(math.radians, (*a, *b))
    h = (
        math.sin((lat2 - lat1) / 2) ** 2
        + math.cos(lat1) * math.cos(lat2) * math.sin((lon2 - lon1) / 2) ** 2
    )
    return 2 * EARTH_RADIUS_M * math.asin(math.sqrt(h))


def bearing_deg(a: tuple[float, float], b: tuple[float, float]) -> float:
    lat1, lon1, lat2, lon2 = map(math.radians, (*a, *b))
    y = math.sin(lon2 - lon1) * math.cos(lat2)
    x = math.cos(lat1) * math.sin(lat2) - math.sin(lat1) * math.cos(lat2) * math.cos(lon2 - lon1)
    return math.degrees(math.atan2(y, x)) % 360.0


@dataclass
class _Device:
    """The phone's state: buffered fixes, connectivity, recording gaps, battery."""

    courier_id: str
    run_id: str
    rng: random.Random
    behaviour: Behaviour
    upload_every_s: float
    ms_timestamps: bool
    seq: int = 0
    battery: float = 100.0
    buffer: list[dict[str, Any]] = field(default_factory=list)
    offline_until: float = 0.0
    gap_until: float = 0.0
    next_upload: float = 0.0
    last_upload: tuple[dict[str, Any], ...] = ()

    def record(
        self, t: float, true_pos: tuple[float, float], speed: float, heading: float
    ) -> dict[str, Any] | None:
        """A fix taken at ``t``: noisy position per accuracy, or None during a gap."""
        rng, b = self.rng, self.behaviour
        if t < self.gap_until:
            return None
        if rng.random() < b.gap_per_minute * self.upload_every_s / 60.0 / 3:
            self.gap_until = t + 60.0 * rng.uniform(*b.gap_minutes)
            return None
        network = rng.random() < b.network_fix_probability
        accuracy = rng.uniform(25.0, 120.0) if network else rng.uniform(3.0, 15.0)
        sigma = accuracy / 1.5  # ~68 % of 2-D errors fall within the accuracy radius
        lat, lon = offset(*true_pos, rng.gauss(0.0, sigma), rng.gauss(0.0, sigma))
        if rng.random() < b.jump_probability:
            angle = rng.uniform(0.0, 2 * math.pi)
            jump = rng.uniform(500.0, 3_000.0)
            lat, lon = offset(lat, lon, jump * math.cos(angle), jump * math.sin(angle))
        self.seq += 1
        self.battery = max(1.0, self.battery - rng.uniform(0.0, 0.02))
        fix: dict[str, Any] = {
            "fix_id": f"{self.run_id}-{self.courier_id}-{self.seq}"[:64],
            "ts": _ms(t) if self.ms_timestamps else _rfc3339(t),
            "lat": round(lat, 7),
            "lon": round(lon, 7),
            "accuracy_m": round(accuracy, 1),
            "provider": "network" if network else "gps",
            "battery_pct": round(self.battery, 1),
            "is_mock": False,
        }
        if not network:
            fix["speed_mps"] = round(max(0.0, speed + rng.gauss(0.0, 0.3)), 2)
            fix["altitude_m"] = round(800.0 + rng.gauss(0.0, 3.0), 1)
            if speed > 0.5:
                fix["heading_deg"] = round((heading + rng.gauss(0.0, 4.0)) % 360.0, 1) % 360.0
        return fix

    def tick(self, t: float) -> Iterator[Upload]:
        """Uploads due at ``t``: the buffer when online, plus occasional re-sends."""
        rng, b = self.rng, self.behaviour
        if t < self.next_upload:
            return
        self.next_upload = t + self.upload_every_s
        if t < self.offline_until:
            return
        if rng.random() < b.offline_per_minute * self.upload_every_s / 60.0:
            self.offline_until = t + 60.0 * rng.uniform(*b.offline_minutes)
            return
        if self.last_upload and rng.random() < b.duplicate_upload_probability:
            yield Upload(self.courier_id, t, self.last_upload, duplicate=True)
        if self.buffer:
            fixes = tuple(self.buffer)
            self.buffer.clear()
            late = t - _fix_epoch(fixes[0]) > 5 * 60.0
            self.last_upload = fixes
            yield Upload(self.courier_id, t, fixes, late=late)


def _ms(t: float) -> int:
    """Whole milliseconds, rounded down: a fix is never stamped after the moment it was taken.

    ``t * 1000`` can round up to the next whole millisecond (1795002722.2779999 s gives
    1795002722278.0), so the result is checked the way a reader converts it back.
    """
    ms = math.floor(t * 1000)
    return ms - 1 if ms / 1000 > t else ms


def _rfc3339(t: float) -> str:
    ms = _ms(t)
    when = datetime.fromtimestamp(ms // 1000, UTC).replace(microsecond=(ms % 1000) * 1000)
    return when.isoformat(timespec="milliseconds")


def _fix_epoch(fix: dict[str, Any]) -> float:
    ts = fix["ts"]
    if isinstance(ts, int):
        return ts / 1000.0
    return datetime.fromisoformat(ts).timestamp()


def courier_uploads(
    courier_id: str,
    *,
    seed: int,
    start_s: float,
    interval_s: float = 5.0,
    run_id: str = "sim",
    behaviour: Behaviour | None = None,
    centre: tuple[float, float] = CITY_CENTRE,
) -> Iterator[Upload]:
    """Endless uploads of one courier in simulated time order, starting at ``start_s``.

    Deterministic for a given seed. Each fix's ``ts`` is never after its upload's ``at_s``.
    """
    b = behaviour or Behaviour()
    rng = random.Random(f"{seed}:{courier_id}")  # noqa: S311 (simulation, not security)
    walking = rng.random() < 0.3
    cruise = rng.uniform(1.1, 1.6) if walking else rng.uniform(6.0, 13.0)
    device = _Device(
        courier_id=courier_id,
        run_id=run_id,
        rng=rng,
        behaviour=b,
        upload_every_s=max(15.0, 3 * interval_s),
        ms_timestamps=rng.random() < b.epoch_ms_probability,
        next_upload=start_s + rng.uniform(0.0, interval_s),
    )
    radius = b.area_radius_m / (4 if walking else 1)
    depot = offset(*centre, rng.uniform(-radius, radius) / 2, rng.uniform(-radius, radius) / 2)
    t = start_s
    pos = depot

    def place() -> tuple[float, float]:
        return offset(*depot, rng.uniform(-radius, radius), rng.uniform(-radius, radius))

    def dwell(minutes: tuple[float, float]) -> Iterator[Upload]:
        nonlocal t
        until = t + 60.0 * rng.uniform(*minutes)
        step = interval_s * b.stationary_interval_factor
        while t < until:
            fix = device.record(t, pos, 0.0, 0.0)
            if fix is not None:
                device.buffer.append(fix)
            t += step * rng.uniform(0.8, 1.2)
            yield from device.tick(t)

    def travel(target: tuple[float, float]) -> Iterator[Upload]:
        nonlocal t, pos
        heading = bearing_deg(pos, target)
        while True:
            remaining = distance_m(pos, target)
            speed = cruise * rng.uniform(0.6, 1.15)
            step_s = interval_s * rng.uniform(0.9, 1.1)
            if remaining <= speed * step_s:
                pos = target
                t += remaining / speed
                yield from device.tick(t)
                return
            fraction = speed * step_s / remaining
            pos = (
                pos[0] + (target[0] - pos[0]) * fraction,
                pos[1] + (target[1] - pos[1]) * fraction,
            )
            t += step_s
            fix = device.record(t, pos, speed, heading)
            if fix is not None:
                device.buffer.append(fix)
            yield from device.tick(t)

    # Couriers join mid-shift: the first depot dwell is a random part of a full one.
    yield from dwell((0.0, b.depot_dwell_minutes[1]))
    while True:
        for _ in range(rng.randint(*b.deliveries)):
            yield from travel(place())
            yield from dwell(b.dwell_minutes)
        yield from travel(depot)
        yield from dwell(b.depot_dwell_minutes)

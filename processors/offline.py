"""``geostream segment``: the worker's cleaning and segmentation over a file, offline.

Reads CSV (``courier_id,ts,lat,lon[,accuracy_m]``, ts in RFC 3339 or epoch seconds) or GPX and
prints one JSON line per stop and per trip. Parsing is the only I/O; the records come from the
same :class:`processors.pipeline.CourierProcessor` the worker runs.
"""

from __future__ import annotations

import csv
import io
import xml.etree.ElementTree as ET
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from processors.pipeline import CourierProcessor, Outputs
from schemas.records import IngestedFix, Stop, Trip

OFFLINE_ORG = "offline"


class TraceError(ValueError):
    """A trace file that cannot be read; the message names the line or element."""


def parse_ts(text: str) -> datetime:
    text = text.strip()
    try:
        value = float(text)
    except ValueError:
        try:
            ts = datetime.fromisoformat(text.replace("Z", "+00:00"))
        except ValueError as exc:
            raise TraceError(f"not a timestamp: {text!r}") from exc
        return ts if ts.tzinfo is not None else ts.replace(tzinfo=UTC)
    if value > 1e11:  # epoch milliseconds
        value /= 1000.0
    return datetime.fromtimestamp(value, UTC)


def _fix(
    courier_id: str, n: int, ts: datetime, lat: float, lon: float, acc: float | None
) -> IngestedFix:
    return IngestedFix(
        fix_id=f"{courier_id}-{n}",
        ts=ts,
        lat=lat,
        lon=lon,
        accuracy_m=acc,
        org_id=OFFLINE_ORG,
        courier_id=courier_id,
        device_id=courier_id,
        received_at=ts,
    )


def read_csv(text: str) -> Iterator[IngestedFix]:
    reader = csv.reader(io.StringIO(text))
    for n, row in enumerate(reader, start=1):
        if not row or row[0].strip().lower() in ("courier_id", "") or row[0].startswith("#"):
            continue
        if len(row) < 4:
            raise TraceError(f"line {n}: want courier_id,ts,lat,lon[,accuracy_m]")
        try:
            lat, lon = float(row[2]), float(row[3])
            acc = float(row[4]) if len(row) > 4 and row[4].strip() else None
        except ValueError as exc:
            raise TraceError(f"line {n}: {exc}") from exc
        try:
            ts = parse_ts(row[1])
        except TraceError as exc:
            raise TraceError(f"line {n}: {exc}") from exc
        yield _fix(row[0].strip(), n, ts, lat, lon, acc)


def read_gpx(text: str, courier_id: str) -> Iterator[IngestedFix]:
    if "<!ENTITY" in text:
        raise TraceError("GPX with entity declarations is refused")
    try:
        root = ET.fromstring(text)  # noqa: S314  (entities refused above)
    except ET.ParseError as exc:
        raise TraceError(f"not GPX: {exc}") from exc
    n = 0
    for el in root.iter():
        if not el.tag.endswith("trkpt"):
            continue
        n += 1
        time_el = next((c for c in el if c.tag.endswith("time")), None)
        if time_el is None or not (time_el.text or "").strip():
            continue
        try:
            lat, lon = float(el.attrib["lat"]), float(el.attrib["lon"])
        except (KeyError, ValueError) as exc:
            raise TraceError(f"trkpt {n}: bad lat/lon") from exc
        yield _fix(courier_id, n, parse_ts(time_el.text or ""), lat, lon, None)


def read_trace(path: Path) -> list[IngestedFix]:
    """Fixes of a CSV or GPX file (GPX: the courier is the file's stem)."""
    text = path.read_text()
    if path.suffix.lower() == ".gpx" or text.lstrip().startswith("<"):
        return list(read_gpx(text, path.stem.replace(" ", "_")))
    return list(read_csv(text))


@dataclass
class SegmentResult:
    stops: list[Stop]
    trips: list[Trip]
    outputs: Outputs


def segment(processor: CourierProcessor, fixes: Iterable[IngestedFix]) -> SegmentResult:
    """Run fixes (any couriers, any order within a courier) through the processor.

    Each courier's fixes are fed in time order; the final version of each stop is kept (the
    stream publishes a stop when it opens and again when it closes).
    """
    per_courier: dict[str, list[IngestedFix]] = {}
    for fix in fixes:
        per_courier.setdefault(fix.courier_id, []).append(fix)
    total = Outputs()
    stops: dict[str, Stop] = {}
    trips: list[Trip] = []
    for courier_id, courier_fixes in per_courier.items():
        courier_fixes.sort(key=lambda f: f.ts)
        state = processor.new_state(courier_fixes[0].org_id, courier_id)
        total.extend(processor.process_many(state, courier_fixes))
        total.extend(processor.finish(state))
        open_stop = processor.open_stop(state)
        for stop in [*total.stops, *([open_stop] if open_stop else [])]:
            if stop.courier_id == courier_id:
                stops[stop.stop_id] = stop
        trips += [t for t in total.trips if t.courier_id == courier_id]
    ordered = sorted(stops.values(), key=lambda s: (s.courier_id, s.start))
    return SegmentResult(ordered, trips, total)


def rfc3339(ts: datetime) -> str:
    return ts.astimezone(UTC).isoformat().replace("+00:00", "Z")


def stop_line(stop: Stop) -> dict[str, Any]:
    return {
        "type": "stop",
        "courier_id": stop.courier_id,
        "stop_id": stop.stop_id,
        "start": rfc3339(stop.start),
        "end": rfc3339(stop.end),
        "lat": round(stop.lat, 7),
        "lon": round(stop.lon, 7),
        "duration_s": stop.duration_s,
        "fix_count": stop.fix_count,
        "zone_id": stop.zone_id,
        "is_open": stop.is_open,
    }


def trip_line(trip: Trip) -> dict[str, Any]:
    return {
        "type": "trip",
        "courier_id": trip.courier_id,
        "trip_id": trip.trip_id,
        "start": rfc3339(trip.start),
        "end": rfc3339(trip.end),
        "distance_m": round(trip.distance_m, 1),
        "duration_s": trip.duration_s,
        "avg_speed_mps": round(trip.avg_speed_mps, 2),
        "max_speed_mps": round(trip.max_speed_mps, 2),
        "fix_count": trip.fix_count,
        "start_stop_id": trip.start_stop_id,
        "end_stop_id": trip.end_stop_id,
        "closed_by": trip.closed_by,
        "path": [list(p) for p in trip.path],
    }


def lines(result: SegmentResult) -> list[dict[str, Any]]:
    """Stops and trips as JSON-ready dicts, in time order per courier."""
    items: list[tuple[str, datetime, dict[str, Any]]] = []
    items += [(s.courier_id, s.start, stop_line(s)) for s in result.stops]
    items += [(t.courier_id, t.start, trip_line(t)) for t in result.trips]
    items.sort(key=lambda x: (x[0], x[1]))
    return [line for _, _, line in items]

"""Recorded traces for ``geostream replay``: CSV and GPX files as wire fixes, without I/O beyond
the text handed in (parsing is pure; reading the file happens at the edge).

CSV needs a header with ``courier_id,ts,lat,lon``; further columns named like Fix fields
(``accuracy_m``, ``speed_mps``, ``fix_id``, ...) are used, any others are reported and ignored.
``ts`` is RFC 3339 with an offset or epoch milliseconds. A GPX file is one courier per track
(``<trk><name>``, else the file name), with ``<time>`` and ``<ele>`` per point.
"""

from __future__ import annotations

import csv
import hashlib
import io
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from ingest.validation import SPECS

REQUIRED_COLUMNS = ("courier_id", "ts", "lat", "lon")
_KINDS = {spec.name: spec.kind for spec in SPECS}


class TraceError(ValueError):
    """A trace file that cannot be replayed; the message names the line."""


@dataclass(frozen=True, slots=True)
class TracePoint:
    """One recorded fix: whose, when (epoch seconds, for pacing) and the wire fix."""

    courier_id: str
    epoch_s: float
    fix: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Trace:
    points: tuple[TracePoint, ...]
    ignored_columns: tuple[str, ...] = ()

    @property
    def couriers(self) -> tuple[str, ...]:
        return tuple(sorted({p.courier_id for p in self.points}))


def _epoch_s(ts: str | int) -> float:
    if isinstance(ts, int):
        return ts / 1000.0
    when = datetime.fromisoformat(ts.upper())
    if when.tzinfo is None:
        raise ValueError(f"ts {ts!r} has no offset")
    return when.timestamp()


def derived_fix_id(courier_id: str, ts: object, lat: object, lon: object) -> str:
    """A stable id for traces without one: replaying a file twice sends the same ids."""
    digest = hashlib.blake2b(f"{courier_id}|{ts}|{lat}|{lon}".encode(), digest_size=12)
    return f"r-{digest.hexdigest()}"


def _cell(name: str, text: str) -> object:
    kind = _KINDS[name]
    if kind == "float":
        return float(text)
    if kind == "bool":
        if text.lower() not in ("true", "false", "1", "0"):
            raise ValueError(f"{name} must be true or false")
        return text.lower() in ("true", "1")
    if kind == "datetime":
        return int(text) if text.lstrip("-").isdigit() else text
    return text


def parse_csv(text: str) -> Trace:
    reader = csv.DictReader(io.StringIO(text))
    columns = [c.strip() for c in reader.fieldnames or []]
    missing = [c for c in REQUIRED_COLUMNS if c not in columns]
    if missing:
        raise TraceError(f"CSV header lacks {', '.join(missing)} (have {', '.join(columns)})")
    reader.fieldnames = columns
    used = [c for c in columns if c in _KINDS]
    ignored = tuple(c for c in columns if c not in _KINDS and c != "courier_id")
    points = []
    for line, row in enumerate(reader, start=2):
        courier = (row.get("courier_id") or "").strip()
        if not courier:
            raise TraceError(f"line {line}: empty courier_id")
        fix: dict[str, Any] = {}
        try:
            for name in used:
                value = (row.get(name) or "").strip()
                if value:
                    fix[name] = _cell(name, value)
            epoch = _epoch_s(fix["ts"])
        except (KeyError, ValueError) as exc:
            raise TraceError(f"line {line}: {exc}") from exc
        fix.setdefault("fix_id", derived_fix_id(courier, fix["ts"], fix["lat"], fix["lon"]))
        points.append(TracePoint(courier, epoch, fix))
    return Trace(tuple(sorted(points, key=lambda p: p.epoch_s)), ignored)


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def parse_gpx(text: str, default_courier: str) -> Trace:
    try:
        root = ET.fromstring(text)  # noqa: S314 (an operator's own file, not network input)
    except ET.ParseError as exc:
        raise TraceError(f"invalid GPX: {exc}") from exc
    points = []
    for track in (el for el in root.iter() if _local(el.tag) == "trk"):
        name = next((el.text for el in track if _local(el.tag) == "name" and el.text), None)
        courier = (name or default_courier).strip()
        for point in (el for el in track.iter() if _local(el.tag) == "trkpt"):
            children = {_local(el.tag): (el.text or "").strip() for el in point}
            if "time" not in children:
                raise TraceError(f"track {courier}: a trkpt has no <time>")
            try:
                lat, lon = float(point.attrib["lat"]), float(point.attrib["lon"])
                ts = children["time"]
                epoch = _epoch_s(ts)
            except (KeyError, ValueError) as exc:
                raise TraceError(f"track {courier}: {exc}") from exc
            fix: dict[str, Any] = {
                "fix_id": derived_fix_id(courier, ts, lat, lon),
                "ts": ts,
                "lat": lat,
                "lon": lon,
            }
            if children.get("ele"):
                fix["altitude_m"] = float(children["ele"])
            points.append(TracePoint(courier, epoch, fix))
    if not points:
        raise TraceError("GPX has no track points")
    return Trace(tuple(sorted(points, key=lambda p: p.epoch_s)))


def parse_trace(text: str, name: str) -> Trace:
    """By file name: ``.gpx`` is GPX, anything else CSV."""
    if name.lower().endswith(".gpx"):
        stem = name.rsplit("/", 1)[-1].rsplit(".", 1)[0]
        return parse_gpx(text, stem)
    return parse_csv(text)


def shift_to(trace: Trace, end_epoch_s: float) -> Trace:
    """Move every timestamp so the trace ends at ``end_epoch_s`` (ts written as epoch ms)."""
    if not trace.points:
        return trace
    delta = end_epoch_s - trace.points[-1].epoch_s
    points = tuple(
        TracePoint(
            p.courier_id,
            p.epoch_s + delta,
            {**p.fix, "ts": round((p.epoch_s + delta) * 1000)},
        )
        for p in trace.points
    )
    return Trace(points, trace.ignored_columns)

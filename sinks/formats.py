"""A courier's track as GPX 1.1, CSV or GeoJSON (privacy policy 9.7: export). Pure.

Used for a dispatcher's track of a period (``/v1/couriers/{id}/track?format=``) and for the
courier's own export (``/v1/couriers/{id}/export?format=``, ``admin export-courier``). GPX
holds the fixes as one track and the stops as waypoints, as Traccar's and OwnTracks' exports
do; GeoJSON a FeatureCollection of the route, each fix and each stop; CSV one row per fix.
"""

from __future__ import annotations

import csv
import io
import xml.etree.ElementTree as ET
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, fields
from datetime import datetime
from typing import Any, Literal

import orjson

Format = Literal["gpx", "csv", "geojson"]
MEDIA_TYPES: dict[str, str] = {
    "gpx": "application/gpx+xml",
    "csv": "text/csv; charset=utf-8",
    "geojson": "application/geo+json",
}
_GPX_NS = "http://www.topografix.com/GPX/1/1"


@dataclass(frozen=True, slots=True)
class TrackPoint:
    fix_id: str
    ts: datetime
    lat: float
    lon: float
    accuracy_m: float | None = None
    speed_mps: float | None = None
    heading_deg: float | None = None
    trip_id: str | None = None
    stop_id: str | None = None


@dataclass(frozen=True, slots=True)
class Waypoint:
    stop_id: str
    start: datetime
    end: datetime
    lat: float
    lon: float
    duration_s: float
    zone_id: str | None = None


def _time(ts: datetime) -> str:
    return ts.isoformat().replace("+00:00", "Z")


def _parse_time(value: Any) -> datetime:
    return value if isinstance(value, datetime) else datetime.fromisoformat(str(value))


def _lon_lat(item: Mapping[str, Any]) -> tuple[float, float]:
    """A row's place: ``lat``/``lon`` (the API's items) or a GeoJSON ``geom`` (the export's)."""
    lon, lat = item["geom"]["coordinates"] if "geom" in item else (item["lon"], item["lat"])
    return float(lon), float(lat)


def track_points(items: Iterable[Mapping[str, Any]]) -> list[TrackPoint]:
    """Points from the API's items or the export's rows, in time order."""
    points = []
    for item in items:
        lon, lat = _lon_lat(item)
        points.append(
            TrackPoint(
                fix_id=str(item["fix_id"]),
                ts=_parse_time(item["ts"]),
                lat=lat,
                lon=lon,
                accuracy_m=item.get("accuracy_m"),
                speed_mps=item.get("speed_mps"),
                heading_deg=item.get("heading_deg"),
                trip_id=item.get("trip_id"),
                stop_id=item.get("stop_id"),
            )
        )
    return sorted(points, key=lambda p: (p.ts, p.fix_id))


def waypoints(items: Iterable[Mapping[str, Any]]) -> list[Waypoint]:
    """Stops from the API's items (``start``/``end``) or the export's rows (``start_ts``)."""
    stops = []
    for item in items:
        lon, lat = _lon_lat(item)
        stops.append(
            Waypoint(
                stop_id=str(item["stop_id"]),
                start=_parse_time(item.get("start", item.get("start_ts"))),
                end=_parse_time(item.get("end", item.get("end_ts"))),
                lat=lat,
                lon=lon,
                duration_s=float(item["duration_s"]),
                zone_id=item.get("zone_id"),
            )
        )
    return sorted(stops, key=lambda s: (s.start, s.stop_id))


def to_gpx(courier_id: str, points: Sequence[TrackPoint], stops: Sequence[Waypoint]) -> str:
    """GPX 1.1: the stops as waypoints, then the fixes as one track segment."""
    ET.register_namespace("", _GPX_NS)

    def sub(parent: ET.Element, tag: str, text: str | None = None, **attrs: str) -> ET.Element:
        element = ET.SubElement(parent, f"{{{_GPX_NS}}}{tag}", attrs)
        if text is not None:
            element.text = text
        return element

    root = ET.Element(f"{{{_GPX_NS}}}gpx", {"version": "1.1", "creator": "geostream"})
    for stop in stops:
        wpt = sub(root, "wpt", lat=repr(stop.lat), lon=repr(stop.lon))
        sub(wpt, "time", _time(stop.start))
        sub(wpt, "name", stop.stop_id)
        zone = f" in zone {stop.zone_id}" if stop.zone_id else ""
        sub(wpt, "desc", f"stop of {stop.duration_s:.0f} s until {_time(stop.end)}{zone}")
        sub(wpt, "type", "stop")
    track = sub(root, "trk")
    sub(track, "name", courier_id)
    segment = sub(track, "trkseg")
    for point in points:
        trkpt = sub(segment, "trkpt", lat=repr(point.lat), lon=repr(point.lon))
        sub(trkpt, "time", _time(point.ts))
        sub(trkpt, "name", point.fix_id)
    return ET.tostring(root, encoding="unicode", xml_declaration=True)


CSV_COLUMNS = tuple(f.name for f in fields(TrackPoint))


def to_csv(points: Sequence[TrackPoint]) -> str:
    """One row per fix; empty cells for missing values."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for point in points:
        row = asdict(point)
        row["ts"] = _time(point.ts)
        writer.writerow(["" if row[c] is None else row[c] for c in CSV_COLUMNS])
    return out.getvalue()


def to_geojson(
    courier_id: str, points: Sequence[TrackPoint], stops: Sequence[Waypoint]
) -> dict[str, Any]:
    """A FeatureCollection: the route (a LineString, from two fixes on), each fix, each stop."""
    features: list[dict[str, Any]] = []
    if len(points) >= 2:
        features.append(
            {
                "type": "Feature",
                "geometry": {"type": "LineString", "coordinates": [[p.lon, p.lat] for p in points]},
                "properties": {
                    "kind": "route",
                    "courier_id": courier_id,
                    "times": [_time(p.ts) for p in points],
                },
            }
        )
    for point in points:
        properties = {k: v for k, v in asdict(point).items() if k not in ("lat", "lon")}
        properties["ts"] = _time(point.ts)
        features.append(
            {
                "type": "Feature",
                "geometry": {"type": "Point", "coordinates": [point.lon, point.lat]},
                "properties": {"kind": "fix", **properties},
            }
        )
    for stop in stops:
        properties = {k: v for k, v in asdict(stop).items() if k not in ("lat", "lon")}
        properties.update(start=_time(stop.start), end=_time(stop.end))
        features.append(
            {
                "type": "Feature",
                "geometry": {"type": "Point", "coordinates": [stop.lon, stop.lat]},
                "properties": {"kind": "stop", **properties},
            }
        )
    return {"type": "FeatureCollection", "features": features}


def render(
    fmt: Format, courier_id: str, points: Sequence[TrackPoint], stops: Sequence[Waypoint]
) -> str:
    """The track in ``fmt``, as text."""
    if fmt == "gpx":
        return to_gpx(courier_id, points, stops)
    if fmt == "csv":
        return to_csv(points)
    return orjson.dumps(to_geojson(courier_id, points, stops)).decode()

"""Geofences: which zones a fix is in, and enter/exit events that do not flap.

Zones are GeoJSON features (``config/geofences.geojson``) with properties ``org_id``,
``zone_id`` and ``kind`` (depot, delivery, restricted), indexed in a grid of cells. A courier
enters a zone after being inside it for ``min_dwell_s``; they leave it only after being outside
the zone grown by ``hysteresis_m`` for ``min_dwell_s``, so GPS noise on the boundary produces no
events. Loading is I/O (at start-up); lookups and the tracker are pure.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import shapely
from shapely.affinity import scale
from shapely.geometry import shape

from processors._geometry import intersects_rings
from processors.geo import intersects_xy

ZONE_KINDS = ("depot", "delivery", "restricted")


@dataclass(frozen=True, slots=True)
class Zone:
    org_id: str
    zone_id: str
    kind: str
    geometry: Any
    outer: Any  # the geometry grown by the hysteresis buffer


def _grow(geometry: Any, metres: float) -> Any:
    """Buffer by ``metres`` in a locally isotropic frame (degrees of longitude shrink)."""
    if metres <= 0:
        return geometry
    centroid = geometry.centroid
    factor = math.cos(math.radians(centroid.y))
    squashed = scale(geometry, xfact=factor, yfact=1.0, origin=centroid)
    grown = squashed.buffer(metres / 111_320.0)
    return scale(grown, xfact=1.0 / factor, yfact=1.0, origin=centroid)


#: Side of a lookup grid cell, in degrees (about 1 km): a zone is listed in every cell its
#: grown shape's bounding box touches, so a fix far from every zone costs one dict lookup.
GRID_DEG = 0.01
#: Zones touching more cells than this (a city-sized restricted area) are checked on every
#: lookup of their organisation by their bounding box instead.
GRID_MAX_CELLS = 4096

#: A zone, its grown shape's bounding box, its (grown, own) shapes as one object array and
#: the same shapes as rings for :func:`intersects_rings`.
_Candidate = tuple["Zone", float, float, float, float, Any, tuple[tuple[bytes, ...], ...]]


def _cell(value: float) -> int:
    return math.floor(value / GRID_DEG)


def _rings(geometry: Any) -> tuple[bytes, ...]:
    """Every ring of a (multi)polygon, each as the bytes of its (x, y) doubles."""
    rings = shapely.get_rings(shapely.get_parts(geometry))
    return tuple(np.ascontiguousarray(shapely.get_coordinates(r), float).tobytes() for r in rings)


class Geofences:
    """All zones, per org, with a grid of candidate zones for lookups."""

    def __init__(self, zones: list[Zone]) -> None:
        self.zones = zones
        self._grid: dict[str, tuple[dict[tuple[int, int], list[_Candidate]], list[_Candidate]]]
        self._grid = {}
        self._kinds = {(z.org_id, z.zone_id): z.kind for z in zones}
        for zone in zones:
            shapely.prepare(zone.outer)
            shapely.prepare(zone.geometry)
            cells, wide = self._grid.setdefault(zone.org_id, ({}, []))
            minx, miny, maxx, maxy = (float(b) for b in zone.outer.bounds)
            shapes = np.array([zone.outer, zone.geometry], dtype=object)
            rings = (_rings(zone.outer), _rings(zone.geometry))
            candidate = (zone, minx, miny, maxx, maxy, shapes, rings)
            xs = range(_cell(minx), _cell(maxx) + 1)
            ys = range(_cell(miny), _cell(maxy) + 1)
            if len(xs) * len(ys) > GRID_MAX_CELLS:
                wide.append(candidate)
                continue
            for x in xs:
                for y in ys:
                    cells.setdefault((x, y), []).append(candidate)

    @classmethod
    def from_geojson(cls, data: dict[str, Any], hysteresis_m: float) -> Geofences:
        """Build from a FeatureCollection; raises ValueError naming a bad feature."""
        zones = []
        for i, feature in enumerate(data.get("features") or []):
            props = feature.get("properties") or {}
            org_id, zone_id, kind = props.get("org_id"), props.get("zone_id"), props.get("kind")
            if not org_id or not zone_id or kind not in ZONE_KINDS:
                raise ValueError(f"feature {i}: needs org_id, zone_id and kind in {ZONE_KINDS}")
            geometry = shape(feature["geometry"])
            if geometry.geom_type not in ("Polygon", "MultiPolygon") or not geometry.is_valid:
                raise ValueError(f"feature {i} ({zone_id}): not a valid (multi)polygon")
            zones.append(Zone(org_id, zone_id, kind, geometry, _grow(geometry, hysteresis_m)))
        return cls(zones)

    @classmethod
    def load(cls, path: Path, hysteresis_m: float) -> Geofences:
        if not path.exists():
            return cls([])
        return cls.from_geojson(json.loads(path.read_text()), hysteresis_m)

    def lookup(self, org_id: str, lat: float, lon: float) -> tuple[list[str], list[str]]:
        """(zones containing the point, zones whose hysteresis-grown shape contains it).

        The point's grid cell lists the zones whose grown shape's bounding box may hold it (a
        zone's own box lies inside that one); those whose box does are tested on their rings
        in C, which is GEOS's own test, and on their prepared shapes by GEOS itself where the C
        cannot be certain. This runs for every fix: a fix away from every zone costs a dict
        lookup, not a tree query.
        """
        entry = self._grid.get(org_id)
        if entry is None:
            return [], []
        cells, wide = entry
        near = cells.get((_cell(lon), _cell(lat)))
        if near is None:
            if not wide:
                return [], []
            near = wide
        elif wide:
            near = near + wide
        inner: list[str] = []
        outer: list[str] = []
        for zone, minx, miny, maxx, maxy, shapes, rings in near:
            if not (minx <= lon <= maxx and miny <= lat <= maxy):
                continue
            answer = intersects_rings(rings, lon, lat)
            if answer is None:  # within rounding of an edge's line: GEOS decides
                answer = intersects_xy(shapes, lon, lat)
            in_outer, in_zone = answer
            if in_outer:
                outer.append(zone.zone_id)
            if in_zone:
                inner.append(zone.zone_id)
        if len(inner) > 1:
            inner.sort()
        if len(outer) > 1:
            outer.sort()
        return inner, outer

    def zone_at(self, org_id: str, lat: float, lon: float) -> str | None:
        """The zone a stop centre matched (delivery before depot before restricted)."""
        inner, _ = self.lookup(org_id, lat, lon)
        if not inner:
            return None
        kinds = self._kinds
        return min(inner, key=lambda z: (ZONE_KINDS.index(kinds[(org_id, z)]), z))


@dataclass(slots=True)
class ZoneState:
    """Per courier: zones confirmed inside (value: ms since outside the grown shape, or 0) and
    zones pending entry (value: ms of the first fix inside)."""

    inside: dict[str, int] = field(default_factory=dict)
    pending: dict[str, int] = field(default_factory=dict)


def track_zones(
    st: ZoneState, t_ms: int, inner: list[str], outer: list[str], dwell_ms: int
) -> list[tuple[str, str, int]]:
    """Advance the tracker; returns ``(kind, zone_id, ts_ms)`` events (enter/exit)."""
    events: list[tuple[str, str, int]] = []
    if not inner and not st.pending and not st.inside:
        return events
    for zone_id in inner:
        if zone_id in st.inside:
            continue
        since = st.pending.setdefault(zone_id, t_ms)
        if t_ms - since >= dwell_ms:
            del st.pending[zone_id]
            st.inside[zone_id] = 0
            events.append(("zone_enter", zone_id, since))
    for zone_id in [z for z in st.pending if z not in inner]:
        del st.pending[zone_id]
    for zone_id in list(st.inside):
        if zone_id in outer:
            st.inside[zone_id] = 0
            continue
        since = st.inside[zone_id] or t_ms
        st.inside[zone_id] = since
        if t_ms - since >= dwell_ms:
            del st.inside[zone_id]
            events.append(("zone_exit", zone_id, since))
    return events

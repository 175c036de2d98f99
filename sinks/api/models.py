"""Response shapes of the API, for the OpenAPI document.

The listings are rendered as JSON by PostgreSQL (see :mod:`sinks.api.queries`) and returned as
they are, so these models describe the responses rather than build them; tests hold the two
together by validating real responses against them.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, Field


class Position(BaseModel):
    courier_id: str
    ts: datetime
    lat: float
    lon: float
    accuracy_m: float | None = None
    speed_mps: float | None = None
    heading_deg: float | None = None
    zone_ids: list[str] = Field(description="Zones the fix is in.")
    trip_id: str | None = None
    stop_id: str | None = None


class TrackPoint(BaseModel):
    fix_id: str
    ts: datetime
    lat: float
    lon: float
    accuracy_m: float | None = None
    speed_mps: float | None = None
    heading_deg: float | None = None
    zone_ids: list[str]
    trip_id: str | None = None
    stop_id: str | None = None
    is_late: bool = Field(description="Arrived after newer fixes (kept for history).")


class StopItem(BaseModel):
    stop_id: str
    start: datetime
    end: datetime
    lat: float
    lon: float
    duration_s: float
    zone_id: str | None = None
    fix_count: int
    is_open: bool = Field(description="The courier is still there.")


class LineString(BaseModel):
    type: Literal["LineString"]
    coordinates: list[list[float]] = Field(description="[lon, lat] pairs.")


class TripItem(BaseModel):
    trip_id: str
    start: datetime
    end: datetime
    distance_m: float
    duration_s: float
    avg_speed_mps: float
    max_speed_mps: float
    fix_count: int
    start_stop_id: str | None = None
    end_stop_id: str | None = None
    closed_by: Literal["stop", "gap", "timer"]
    path: LineString


class Paged(BaseModel):
    next_cursor: str | None = Field(
        description="Pass as ?cursor= for the next page; null on the last page."
    )


class PositionPage(Paged):
    items: list[Position]


class ZonePage(Paged):
    zone_id: str
    kind: str
    items: list[Position] = Field(description="Couriers whose latest fix is inside the zone.")


class RouteFeature(BaseModel):
    type: Literal["Feature"]
    geometry: LineString | None = Field(description="null when the page has under two points.")
    properties: dict[str, Any]


class TrackPage(Paged):
    courier_id: str
    from_: datetime = Field(alias="from")
    to: datetime
    items: list[TrackPoint]
    route: RouteFeature = Field(description="This page's points as a GeoJSON LineString.")


class TripPage(Paged):
    courier_id: str
    from_: datetime = Field(alias="from")
    to: datetime
    items: list[TripItem]


class StopPage(Paged):
    courier_id: str
    from_: datetime = Field(alias="from")
    to: datetime
    items: list[StopItem]


class ErasureReceipt(BaseModel):
    """What an erasure did; the copy kept by the operator is the same without ``courier_id``."""

    courier_id: str
    request_id: str
    org_id: str
    kind: str
    requested_by: str
    requested_at: str
    rows_deleted: dict[str, int] = Field(description="Rows deleted per table.")
    device_tokens_revoked: int
    tombstones: dict[str, str] = Field(description="Topics and logs that get a tombstone.")
    log_copies_expire: dict[str, str] = Field(
        description="Per topic, when the last copy of the courier's records leaves its log."
    )
    courier_forgotten_at: str = Field(
        description="When the request record itself drops the courier's id."
    )

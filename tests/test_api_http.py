"""The dispatcher API against the real stack: a real uvicorn server on a free port, the test's own
migrated database (rows inserted directly as the owner), the API connected as geostream_api.

Each test proves a behaviour end to end over HTTP: what a dispatcher sees, what another org's
dispatcher does not see, and the 401/403/404/422 answers.
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
import io
import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import psycopg
import pytest
import uvicorn
from processors_helpers import topic_reader

from config.settings import Settings
from geostream.db import create_pool
from geostream.kafka import create_producer, topic_name
from geostream.stack.system import free_port
from ingest.tokens import TokenStore
from processors.erasure import is_erasure
from processors.offline import read_gpx
from schemas.records import CourierEvent, EnrichedFix, PrivacyRequest
from schemas.wire import decode, encode
from sinks.api import models
from sinks.api.app import create_app
from sinks.api.auth import create_dispatcher, revoke_dispatcher

pytestmark = pytest.mark.stack

NOW = datetime.now(UTC).replace(microsecond=0)
T0 = NOW - timedelta(hours=2)

GEOFENCES = {
    "type": "FeatureCollection",
    "features": [
        {
            "type": "Feature",
            "properties": {"org_id": org, "zone_id": zone, "kind": "depot"},
            "geometry": {
                "type": "Polygon",
                "coordinates": [
                    [[76.0, 43.0], [77.0, 43.0], [77.0, 44.0], [76.0, 44.0], [76.0, 43.0]]
                ],
            },
        }
        for org, zone in (("org-a", "zone-a1"), ("org-b", "zone-b1"))
    ],
}


@dataclass
class Api:
    base: str
    settings: Settings
    owner_url: str

    async def token(self, org: str, name: str = "disp", *, operator: bool = False) -> str:
        async with await psycopg.AsyncConnection.connect(self.owner_url) as conn:
            return await create_dispatcher(conn, org, name, is_operator=operator)

    async def get(self, path: str, token: str | None, **params: Any) -> tuple[int, Any]:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        async with (
            aiohttp.ClientSession() as http,
            http.get(self.base + path, headers=headers, params=params) as response,
        ):
            body = await response.read()
            return response.status, json.loads(body) if body else None

    async def file(self, path: str, token: str, **params: Any) -> tuple[int, str, str]:
        """(status, content type, text) of a download."""
        headers = {"Authorization": f"Bearer {token}"}
        async with (
            aiohttp.ClientSession() as http,
            http.get(self.base + path, headers=headers, params=params) as response,
        ):
            return response.status, response.headers["Content-Type"], await response.text()

    async def delete(self, path: str, token: str) -> tuple[int, Any]:
        headers = {"Authorization": f"Bearer {token}"}
        async with (
            aiohttp.ClientSession() as http,
            http.delete(self.base + path, headers=headers) as response,
        ):
            return response.status, json.loads(await response.read())

    async def sql(self, query: str, params: Any = None) -> list[tuple[Any, ...]]:
        async with await psycopg.AsyncConnection.connect(self.owner_url) as conn:
            cursor = await conn.execute(query, params)
            rows = await cursor.fetchall() if cursor.description else []
            await conn.commit()
            return rows


@pytest.fixture
async def api(settings: Settings, tmp_path: Path) -> AsyncIterator[Api]:
    geofences = tmp_path / "geofences.geojson"
    geofences.write_text(json.dumps(GEOFENCES))
    api_settings = settings.model_copy(
        update={
            "api_token_cache_ttl_s": 0.0,
            "geofences_file": geofences,
            "api_default_limit": 100,
            "api_max_limit": 1000,
            "api_max_range_s": 86400.0,
        }
    )
    async with served(create_app(api_settings)) as base:
        yield Api(base, api_settings, settings.database_url)


@contextlib.asynccontextmanager
async def served(app: Any) -> AsyncIterator[str]:
    """The app on a free loopback port; yields its base URL."""
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning"))
    task = asyncio.create_task(server.serve())
    for _ in range(600):
        if server.started or task.done():
            break
        await asyncio.sleep(0.05)
    assert server.started, "the API did not start"
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task


async def add_latest(api: Api, org: str, courier: str, *, ts: datetime = NOW, zones=()) -> None:
    await api.sql(
        "INSERT INTO latest_positions (org_id, courier_id, ts, device_id, fix_id, geom,"
        " speed_mps, zone_ids, received_at, expires_at)"
        " VALUES (%s, %s, %s, 'dev', 'fix', ST_SetSRID(ST_MakePoint(76.95, 43.25), 4326), 4.5,"
        " %s, %s, %s)",
        (org, courier, ts, list(zones), ts, ts + timedelta(days=90)),
    )


async def add_track(api: Api, org: str, courier: str, n: int) -> list[datetime]:
    """``n`` fixes, one a minute from T0, heading east then north (a corner)."""
    times = [T0 + timedelta(minutes=i) for i in range(n)]
    for i, ts in enumerate(times):
        lon = 76.90 + 0.001 * min(i, n // 2)
        lat = 43.20 + 0.001 * max(0, i - n // 2)
        await api.sql(
            "INSERT INTO positions (ts, org_id, courier_id, device_id, fix_id, geom, speed_mps,"
            " received_at, expires_at) VALUES (%s, %s, %s, 'dev', %s,"
            " ST_SetSRID(ST_MakePoint(%s, %s), 4326), 3.0, %s, %s)",
            (ts, org, courier, f"f{i:03d}", lon, lat, ts, ts + timedelta(days=90)),
        )
    return times


async def add_stop_and_trip(api: Api, org: str, courier: str) -> None:
    start, end = T0 + timedelta(minutes=5), T0 + timedelta(minutes=15)
    await api.sql(
        "INSERT INTO stops (start_ts, end_ts, org_id, courier_id, stop_id, geom, duration_s,"
        " fix_count, zone_id, is_open, expires_at) VALUES (%s, %s, %s, %s, %s,"
        " ST_SetSRID(ST_MakePoint(76.91, 43.21), 4326), 600, 10, 'zone-x', false, %s)",
        (start, end, org, courier, f"stop-{courier}", end + timedelta(days=90)),
    )
    await api.sql(
        "INSERT INTO trips (start_ts, end_ts, org_id, courier_id, trip_id, path, distance_m,"
        " duration_s, avg_speed_mps, max_speed_mps, fix_count, end_stop_id, closed_by,"
        " expires_at) VALUES (%s, %s, %s, %s, %s,"
        " ST_GeomFromText('LINESTRING(76.90 43.20, 76.91 43.21)', 4326), 1400, 300, 4.7, 9.1,"
        " 30, %s, 'stop', %s)",
        (T0, start, org, courier, f"trip-{courier}", f"stop-{courier}", end + timedelta(days=90)),
    )


def iso(ts: datetime) -> str:
    return ts.isoformat().replace("+00:00", "Z")


async def test_latest_positions_show_only_the_dispatchers_org(api: Api) -> None:
    await add_latest(api, "org-a", "a1", zones=("zone-a1",))
    await add_latest(api, "org-a", "a2")
    await add_latest(api, "org-b", "b1")
    token_a, token_b = await api.token("org-a"), await api.token("org-b")

    status, body = await api.get("/v1/couriers/latest", token_a)
    assert status == 200, body
    page = models.PositionPage.model_validate(body)
    assert [item.courier_id for item in page.items] == ["a1", "a2"]
    first = body["items"][0]
    assert first["lat"] == pytest.approx(43.25)
    assert first["lon"] == pytest.approx(76.95)
    assert first["speed_mps"] == pytest.approx(4.5)
    assert first["zone_ids"] == ["zone-a1"]
    assert datetime.fromisoformat(first["ts"]) == NOW
    assert body["next_cursor"] is None

    status, body = await api.get("/v1/couriers/latest", token_b)
    assert status == 200
    assert [item["courier_id"] for item in body["items"]] == ["b1"]


async def test_latest_positions_paginate_with_a_cursor(api: Api) -> None:
    couriers = [f"c{i}" for i in range(7)]
    for courier in couriers:
        await add_latest(api, "org-a", courier)
    await add_latest(api, "org-b", "c3b")
    token = await api.token("org-a")

    seen: list[str] = []
    cursor: str | None = None
    pages = 0
    while True:
        params = {"limit": 3, **({"cursor": cursor} if cursor else {})}
        status, body = await api.get("/v1/couriers/latest", token, **params)
        assert status == 200
        assert len(body["items"]) <= 3
        seen += [item["courier_id"] for item in body["items"]]
        pages += 1
        cursor = body["next_cursor"]
        if cursor is None:
            break
    assert seen == couriers
    assert pages == 3


async def test_bad_parameters_get_422_with_a_reason(api: Api) -> None:
    await add_track(api, "org-a", "a1", 3)
    token = await api.token("org-a")
    track = "/v1/couriers/a1/track"
    cases = [
        ("/v1/couriers/latest", {"limit": 0}, "limit"),
        ("/v1/couriers/latest", {"limit": 1001}, "limit"),
        ("/v1/couriers/latest", {"cursor": "not-a-cursor!"}, "cursor"),
        (track, {"from": iso(NOW), "to": iso(NOW - timedelta(hours=1))}, "from"),
        (track, {"from": iso(NOW - timedelta(days=2)), "to": iso(NOW)}, "from"),
        (track, {"from": "2026-01-01T10:00:00"}, "from"),  # no offset
        (track, {"from": "yesterday"}, "from"),
        (track, {"simplify": -1}, "simplify"),
        (track, {"to": "0001-01-01T00:30:00Z"}, "to"),  # issue 16, finding 7: it was a 500
        ("/v1/couriers/bad%20id/track", {}, "courier_id"),
    ]
    for path, params, field in cases:
        status, body = await api.get(path, token, **params)
        assert status == 422, (path, params, body)
        assert any(field in item["loc"] for item in body["detail"]), (params, body)
        assert all(item["msg"] for item in body["detail"])

    # A cursor of one listing is refused by another.
    for i in range(3):
        await add_latest(api, "org-a", f"c{i}")
    _, body = await api.get("/v1/couriers/latest", token, limit=1)
    status, body = await api.get(track, token, cursor=body["next_cursor"])
    assert status == 422
    assert body["detail"][0]["type"] == "cursor_invalid"


async def test_track_returns_positions_and_a_geojson_route(api: Api) -> None:
    times = await add_track(api, "org-a", "a1", 21)
    await add_track(api, "org-b", "b1", 5)
    token_a, token_b = await api.token("org-a"), await api.token("org-b")
    span = {"from": iso(T0), "to": iso(T0 + timedelta(hours=1))}

    status, body = await api.get("/v1/couriers/a1/track", token_a, **span)
    assert status == 200, body
    models.TrackPage.model_validate(body)
    assert [datetime.fromisoformat(p["ts"]) for p in body["items"]] == times
    route = body["route"]
    assert route["type"] == "Feature"
    assert route["geometry"]["type"] == "LineString"
    coords = route["geometry"]["coordinates"]
    assert len(coords) == 21
    assert coords[0] == pytest.approx([76.90, 43.20])

    # Simplified, the straight legs collapse to their ends: start, corner, end.
    status, body = await api.get("/v1/couriers/a1/track", token_a, simplify=20, **span)
    assert status == 200
    assert len(body["items"]) == 21
    simplified = body["route"]["geometry"]["coordinates"]
    assert len(simplified) == 3
    assert simplified[1] == pytest.approx([76.91, 43.20])

    # Paged: the pages together are the track, in order, without repeats.
    seen: list[str] = []
    cursor = None
    while True:
        extra = {"cursor": cursor} if cursor else {}
        status, body = await api.get("/v1/couriers/a1/track", token_a, limit=8, **span, **extra)
        assert status == 200
        seen += [p["fix_id"] for p in body["items"]]
        cursor = body["next_cursor"]
        if cursor is None:
            break
    assert seen == [f"f{i:03d}" for i in range(21)]

    # Another org's courier is not found, exactly like one that does not exist.
    for token, courier in ((token_b, "a1"), (token_a, "b1"), (token_a, "nobody")):
        status, body = await api.get(f"/v1/couriers/{courier}/track", token, **span)
        assert status == 404, body
        assert "not found" in body["detail"]

    # A known courier with nothing in range: an empty page, not a 404.
    empty = {"from": iso(NOW - timedelta(minutes=5)), "to": iso(NOW)}
    status, body = await api.get("/v1/couriers/a1/track", token_a, **empty)
    assert status == 200
    assert body["items"] == []
    assert body["route"]["geometry"] is None


async def test_trips_and_stops_of_a_courier(api: Api) -> None:
    await add_stop_and_trip(api, "org-a", "a1")
    await add_stop_and_trip(api, "org-b", "b1")
    token_a = await api.token("org-a")
    span = {"from": iso(T0), "to": iso(T0 + timedelta(hours=1))}

    status, body = await api.get("/v1/couriers/a1/stops", token_a, **span)
    assert status == 200, body
    models.StopPage.model_validate(body)
    (stop,) = body["items"]
    assert {"stop_id", "start", "end", "lat", "lon", "duration_s", "zone_id"} <= stop.keys()
    assert stop["stop_id"] == "stop-a1"
    assert stop["duration_s"] == 600
    assert stop["zone_id"] == "zone-x"
    assert stop["lat"] == pytest.approx(43.21)

    status, body = await api.get("/v1/couriers/a1/trips", token_a, **span)
    assert status == 200, body
    models.TripPage.model_validate(body)
    (trip,) = body["items"]
    assert trip["trip_id"] == "trip-a1"
    assert trip["path"]["type"] == "LineString"
    assert trip["path"]["coordinates"] == [[76.9, 43.2], [76.91, 43.21]]
    assert trip["end_stop_id"] == "stop-a1"

    # Overlap: a range that starts inside the stop still returns it.
    inside = {"from": iso(T0 + timedelta(minutes=10)), "to": iso(T0 + timedelta(minutes=11))}
    _, body = await api.get("/v1/couriers/a1/stops", token_a, **inside)
    assert [s["stop_id"] for s in body["items"]] == ["stop-a1"]
    later = {"from": iso(T0 + timedelta(minutes=30)), "to": iso(T0 + timedelta(minutes=40))}
    _, body = await api.get("/v1/couriers/a1/stops", token_a, **later)
    assert body["items"] == []

    for listing in ("stops", "trips"):
        status, body = await api.get(f"/v1/couriers/b1/{listing}", token_a, **span)
        assert status == 404, body


async def test_zone_couriers_are_the_org_couriers_inside_now(api: Api) -> None:
    await add_latest(api, "org-a", "inside", zones=("zone-a1",))
    await add_latest(api, "org-a", "stale", zones=("zone-a1",), ts=NOW - timedelta(hours=3))
    await add_latest(api, "org-a", "elsewhere")
    await add_latest(api, "org-b", "b-inside", zones=("zone-b1",))
    token_a = await api.token("org-a")

    status, body = await api.get("/v1/zones/zone-a1/couriers", token_a)
    assert status == 200, body
    models.ZonePage.model_validate(body)
    assert [c["courier_id"] for c in body["items"]] == ["inside"]
    assert body["kind"] == "depot"

    for zone in ("zone-b1", "no-such-zone"):
        status, body = await api.get(f"/v1/zones/{zone}/couriers", token_a)
        assert status == 404, body
        assert "zone" in body["detail"]


async def test_tokens_missing_unknown_or_revoked_get_401(api: Api) -> None:
    await add_latest(api, "org-a", "a1")
    token = await api.token("org-a", "alice")
    assert (await api.get("/v1/couriers/latest", token))[0] == 200

    status, body = await api.get("/v1/couriers/latest", None)
    assert status == 401
    assert "missing" in body["detail"]
    assert (await api.get("/v1/couriers/latest", "gsa_not-a-real-token"))[0] == 401
    async with (
        aiohttp.ClientSession() as http,
        http.get(
            api.base + "/v1/couriers/latest", headers={"Authorization": f"Basic {token}"}
        ) as response,
    ):
        assert response.status == 401
        assert response.headers["WWW-Authenticate"].startswith("Bearer")

    async with await psycopg.AsyncConnection.connect(api.owner_url) as conn:
        assert await revoke_dispatcher(conn, "org-a", dispatcher_id="alice") == 1
    status, body = await api.get("/v1/couriers/latest", token)
    assert status == 401
    assert "revoked" in body["detail"]


async def test_a_flood_of_unknown_tokens_is_refused_before_the_database(
    settings: Settings,
) -> None:
    limited = settings.model_copy(
        update={"auth_failures_burst": 3.0, "auth_failures_per_s": 0.01,
                "api_token_cache_ttl_s": 60.0}
    )  # fmt: skip
    async with served(create_app(limited)) as base:
        api = Api(base, limited, settings.database_url)
        good = await api.token("org-a")
        assert (await api.get("/v1/couriers/latest", good))[0] == 200
        statuses = [(await api.get("/v1/couriers/latest", f"gsk_{n}"))[0] for n in range(6)]
        assert statuses == [401, 401, 401, 429, 429, 429]
        assert (await api.get("/v1/couriers/latest", good))[0] == 200  # known: still served


async def test_the_api_reads_as_the_restricted_role(api: Api) -> None:
    token = await api.token("org-a")
    assert (await api.get("/v1/couriers/latest", token))[0] == 200
    dbname = psycopg.conninfo.conninfo_to_dict(api.owner_url)["dbname"]
    rows = await api.sql(
        "SELECT DISTINCT usename FROM pg_stat_activity"
        " WHERE datname = %s AND application_name = 'geostream'",  # the pool factory's name
        (dbname,),
    )
    assert rows == [("geostream_api",)]


async def add_event(api: Api, org: str, courier: str) -> None:
    await api.sql(
        "INSERT INTO courier_events (ts, org_id, courier_id, event_id, kind, subject_id, geom,"
        " expires_at) VALUES (%s, %s, %s, %s, 'stop_started', 's',"
        " ST_SetSRID(ST_MakePoint(76.91, 43.21), 4326), %s)",
        (T0, org, courier, f"ev-{org}-{courier}", T0 + timedelta(days=90)),
    )


async def test_privacy_export_and_erase_need_an_operator_of_the_org(api: Api) -> None:
    # The same courier id in another org, and another courier of the org, in every table:
    # the erasure must leave all of them alone.
    for org, courier in (("org-a", "a1"), ("org-b", "a1"), ("org-a", "a2")):
        await add_latest(api, org, courier)
        await add_track(api, org, courier, 4)
        await add_stop_and_trip(api, org, courier)
        await add_event(api, org, courier)
    async with create_pool(api.settings) as pool:
        devices = TokenStore(pool)
        device_token = await devices.create("org-a", "a1", "a1-phone")
        other_token = await devices.create("org-b", "a1", "b-phone")
    plain = await api.token("org-a", "plain")
    operator = await api.token("org-a", "op", operator=True)
    other_operator = await api.token("org-b", "op", operator=True)

    status, body = await api.get("/v1/couriers/a1/export", plain)
    assert status == 403
    assert "operator" in body["detail"]
    assert (await api.delete("/v1/couriers/a1/data", plain))[0] == 403
    assert (await api.get("/v1/couriers/nobody/export", operator))[0] == 404

    status, body = await api.get("/v1/couriers/a1/export", operator)
    assert status == 200, body
    assert body["counts"]["positions"] == 4
    assert body["counts"]["latest_positions"] == 1
    assert body["counts"]["stops"] == 1
    assert {row["org_id"] for row in body["tables"]["latest_positions"]} == {"org-a"}

    status, receipt = await api.delete("/v1/couriers/a1/data", operator)
    assert status == 200, receipt
    assert receipt["rows_deleted"] == {
        "positions": 4, "stops": 1, "trips": 1, "courier_events": 1, "latest_positions": 1,
        "courier_daily": 0,
    }  # fmt: skip
    assert receipt["device_tokens_revoked"] == 1
    assert receipt["requested_by"] == "dispatcher:op"
    assert set(receipt["log_copies_expire"]) >= {"fixes.raw", "courier.latest", "privacy.requests"}
    for table in ("positions", "stops", "trips", "courier_events", "latest_positions"):
        survivors = await api.sql(f"SELECT DISTINCT org_id, courier_id FROM {table} ORDER BY 1, 2")
        assert survivors == [("org-a", "a2"), ("org-b", "a1")], table
    assert await api.sql(
        "SELECT org_id, courier_id FROM device_tokens WHERE revoked_at IS NULL"
    ) == [("org-b", "a1")]
    assert device_token != other_token
    # The request is recorded; the receipt kept for the operator names no courier.
    [(courier, requested_by, kept)] = await api.sql(
        "SELECT courier_id, requested_by, receipt FROM privacy_requests"
    )
    assert (courier, requested_by) == ("a1", "dispatcher:op")
    assert kept == {k: v for k, v in receipt.items() if k != "courier_id"}
    assert '"a1"' not in json.dumps(kept)  # (quoted: the request's uuid may hold "a1")
    # ... and published: on privacy.requests, and in the courier's fixes.raw partition.
    for logical in ("privacy.requests", "fixes.raw"):
        consumer = await topic_reader(api.settings, logical)
        try:
            records = [m for batch in (await consumer.getmany(timeout_ms=5000)).values()
                       for m in batch]  # fmt: skip
        finally:
            await consumer.stop()
        [record] = records
        assert record.key == b"org-a/a1"
        request = decode(PrivacyRequest, record.value)
        assert (request.kind, request.courier_id, request.request_id) == (
            "delete",
            "a1",
            receipt["request_id"],
        )
        assert is_erasure(record.headers) == (logical == "fixes.raw")

    # Org A's courier is gone; org B's operator still sees its own a1.
    assert (await api.get("/v1/couriers/a1/export", operator))[0] == 404
    status, body = await api.get("/v1/couriers/a1/export", other_operator)
    assert status == 200
    assert body["counts"]["latest_positions"] == 1
    assert body["counts"]["positions"] == 4


async def test_reads_of_a_courier_are_audited_for_the_courier_and_the_operator(api: Api) -> None:
    await add_track(api, "org-a", "a1", 6)
    await add_stop_and_trip(api, "org-a", "a1")
    await add_track(api, "org-b", "a1", 2)
    alice = await api.token("org-a", "alice")
    operator = await api.token("org-a", "op", operator=True)
    other_operator = await api.token("org-b", "op-b", operator=True)
    span = {"from": iso(T0), "to": iso(T0 + timedelta(hours=1))}
    for listing in ("track", "trips", "stops"):
        assert (await api.get(f"/v1/couriers/a1/{listing}", alice, **span))[0] == 200
    assert (await api.get("/v1/couriers/nobody/track", alice, **span))[0] == 404  # not a read
    timeout = aiohttp.ClientTimeout(total=30)
    async with (
        aiohttp.ClientSession(timeout=timeout) as http,
        http.get(api.base + "/v1/live", headers={"Authorization": f"Bearer {alice}"}) as live,
    ):
        assert live.status == 200

    assert (await api.get("/v1/audit", alice, courier="a1"))[0] == 403
    status, body = await api.get("/v1/audit", operator, courier="a1")
    assert status == 200, body
    seen = [(i["accessor"], i["action"], i["scope"]) for i in body["items"]]
    assert seen == [
        ("alice", "live", "org"), ("alice", "stops", "courier"), ("alice", "trips", "courier"),
        ("alice", "track", "courier"),
    ]  # fmt: skip
    assert body["items"][-1]["detail"] == {
        "from": (T0).isoformat(), "to": (T0 + timedelta(hours=1)).isoformat()
    }  # fmt: skip
    # Org B's a1 is another courier: its operator sees none of org A's reads.
    assert (await api.get("/v1/audit", other_operator, courier="a1"))[1]["items"] == []

    # The courier's export says who looked, and is itself recorded.
    status, document = await api.get("/v1/couriers/a1/export", operator)
    assert status == 200
    assert [(i["accessor"], i["action"]) for i in document["access_audit"]] == [
        (a, b) for a, b, _ in seen
    ]
    status, body = await api.get("/v1/audit", operator, courier="a1")
    assert (body["items"][0]["accessor"], body["items"][0]["action"]) == ("op", "export")


async def test_tracks_and_exports_as_gpx_csv_and_geojson(api: Api) -> None:
    times = await add_track(api, "org-a", "a1", 6)
    await add_stop_and_trip(api, "org-a", "a1")
    alice = await api.token("org-a", "alice")
    operator = await api.token("org-a", "op", operator=True)
    span = {"from": iso(T0), "to": iso(T0 + timedelta(hours=1))}
    for path, token, params in (
        ("/v1/couriers/a1/track", alice, span),
        ("/v1/couriers/a1/export", operator, {}),
    ):
        status, media, text = await api.file(path, token, format="gpx", **params)
        assert (status, media) == (200, "application/gpx+xml"), text
        assert [f.ts for f in read_gpx(text, "a1")] == times
        assert text.count("<wpt ") == 1  # the stop
        status, media, text = await api.file(path, token, format="csv", **params)
        assert (status, media) == (200, "text/csv; charset=utf-8")
        rows = list(csv.DictReader(io.StringIO(text)))
        assert [datetime.fromisoformat(r["ts"]) for r in rows] == times
        assert {float(r["speed_mps"]) for r in rows} == {3.0}
        status, media, text = await api.file(path, token, format="geojson", **params)
        assert (status, media) == (200, "application/geo+json")
        kinds = [f["properties"]["kind"] for f in json.loads(text)["features"]]
        assert kinds == ["route"] + ["fix"] * 6 + ["stop"]
    assert (await api.file("/v1/couriers/a1/track", alice, format="kml", **span))[0] == 422
    assert (await api.file("/v1/couriers/nobody/track", alice, format="gpx", **span))[0] == 404


async def test_readyz_tells_anyone_only_that_the_database_is_unavailable(
    settings: Settings,
) -> None:
    port = free_port()
    nowhere = f"postgresql://geostream_api:not-the-password@127.0.0.1:{port}/geostream"
    async with served(create_app(settings, db_url=nowhere)) as base:
        status, body = await Api(base, settings, settings.database_url).get("/readyz", None)
    assert status == 503
    assert (body["status"], body["database"]) == ("unavailable", "unavailable")
    assert str(port) not in json.dumps(body)  # no address, no driver message


async def test_health_readiness_metrics_and_openapi(api: Api) -> None:
    assert await api.get("/healthz", None) == (200, {"status": "ok"})
    status, body = await api.get("/readyz", None)
    assert status == 200
    assert body["database"] == "up"
    status, spec = await api.get("/openapi.json", None)
    assert status == 200
    for path in (
        "/v1/couriers/latest",
        "/v1/couriers/{courier_id}/track",
        "/v1/couriers/{courier_id}/trips",
        "/v1/couriers/{courier_id}/stops",
        "/v1/zones/{zone_id}/couriers",
        "/v1/live",
    ):
        assert path in spec["paths"], path
    await api.get("/v1/couriers/latest", None)  # a 401 to count
    async with aiohttp.ClientSession() as http, http.get(api.base + "/metrics") as response:
        text = await response.text()
    assert (
        'geostream_api_requests_total{method="GET",route="/v1/couriers/latest",status="401"}'
        in text
    )
    assert 'geostream_api_request_seconds_bucket{le="0.05",route="/healthz"}' in text


async def read_events(response: aiohttp.ClientResponse) -> AsyncIterator[tuple[str, Any]]:
    """(event, data) of a Server-Sent Events stream; comments (heartbeats) skipped."""
    event, data = "message", ""
    async for raw in response.content:
        line = raw.decode().rstrip("\n")
        if line.startswith(":"):
            continue
        if not line:
            if data:
                yield event, json.loads(data)
            event, data = "message", ""
        elif line.startswith("event: "):
            event = line[7:]
        elif line.startswith("data: "):
            data += line[6:]


def fix(org: str, courier: str, fix_id: str) -> EnrichedFix:
    return EnrichedFix(
        fix_id=fix_id, ts=NOW, lat=43.25, lon=76.95, org_id=org, courier_id=courier,
        device_id="dev", received_at=NOW, distance_m=0.0, odometer_m=0.0,
        zone_ids=("zone-a1",), expires_at=NOW + timedelta(days=90),
    )  # fmt: skip


async def test_live_stream_delivers_only_the_orgs_updates(api: Api) -> None:
    token_a, token_b = await api.token("org-a"), await api.token("org-b")
    latest = topic_name(api.settings, "courier.latest")
    events = topic_name(api.settings, "courier.events")
    headers_a = {"Authorization": f"Bearer {token_a}"}
    headers_b = {"Authorization": f"Bearer {token_b}"}
    timeout = aiohttp.ClientTimeout(total=60)
    async with (
        aiohttp.ClientSession(timeout=timeout) as http,
        http.get(api.base + "/v1/live", headers=headers_a) as stream_a,
        http.get(api.base + "/v1/live", headers=headers_b) as stream_b,
    ):
        assert stream_a.status == 200
        assert stream_a.headers["Content-Type"].startswith("text/event-stream")
        events_a, events_b = read_events(stream_a), read_events(stream_b)
        assert await anext(events_a) == ("ready", {"org_id": "org-a"})
        assert await anext(events_b) == ("ready", {"org_id": "org-b"})

        producer = create_producer(api.settings)
        await producer.start()
        try:
            # One partition, so the order is fixed: B's records come before A's last one.
            for org, courier, fix_id in (
                ("org-b", "b1", "fb1"),
                ("org-a", "a1", "fa1"),
                ("org-b", "b1", "fb2"),
            ):
                record = fix(org, courier, fix_id)
                key = f"{org}/{courier}".encode()
                await producer.send_and_wait(latest, encode(record), key=key, partition=0)
            event = CourierEvent(
                org_id="org-a", courier_id="a1", event_id="ev1", kind="zone_enter", ts=NOW,
                subject_id="zone-a1", lat=43.25, lon=76.95, expires_at=NOW + timedelta(days=90),
            )  # fmt: skip
            await producer.send_and_wait(events, encode(event), key=b"org-a/a1", partition=0)
            await producer.send_and_wait(
                latest, encode(fix("org-a", "a1", "fa2")), key=b"org-a/a1", partition=0
            )
            # a1's erasure: tombstones on both (the event one is not news to a dispatcher)
            await producer.send_and_wait(events, None, key=b"org-a/a1", partition=0)
            await producer.send_and_wait(latest, None, key=b"org-a/a1", partition=0)
        finally:
            await producer.stop()

        # Read until A's two positions, its event and its erasure are in; B's positions sit
        # between and before them in the partition, so had they leaked, they would be here too.
        got_a: list[tuple[str, str]] = []
        async for kind, data in events_a:
            got_a.append((kind, data["courier_id"]))
            if kind == "event":
                assert data["event_id"] == "ev1"
                assert data["kind"] == "zone_enter"
            if kind == "erased":
                break
            assert len(got_a) < 4, got_a
        assert sorted(got_a[:3]) == [("event", "a1"), ("position", "a1"), ("position", "a1")]
        assert got_a[3:] == [("erased", "a1")]

        got_b = []
        async for kind, data in events_b:
            got_b.append((kind, data["courier_id"]))
            if len(got_b) == 2:
                break
        assert got_b == [("position", "b1"), ("position", "b1")]


async def test_live_stream_never_shows_records_of_aborted_transactions(api: Api) -> None:
    """The worker writes courier.latest in transactions; a killed worker's open transaction
    is aborted, and its records must not reach dispatchers (issue 16, finding 4)."""
    token = await api.token("org-a")
    latest = topic_name(api.settings, "courier.latest")
    timeout = aiohttp.ClientTimeout(total=60)
    async with (
        aiohttp.ClientSession(timeout=timeout) as http,
        http.get(api.base + "/v1/live", headers={"Authorization": f"Bearer {token}"}) as stream,
    ):
        events = read_events(stream)
        assert await anext(events) == ("ready", {"org_id": "org-a"})
        producer = create_producer(api.settings, transactional_id=f"test-live-{os.getpid()}")
        await producer.start()
        try:
            # the same partition: the committed record comes after the aborted one
            for courier, commit in (("aborted", False), ("committed", True)):
                await producer.begin_transaction()
                record = encode(fix("org-a", courier, f"f-{courier}"))
                key = f"org-a/{courier}".encode()
                await producer.send_and_wait(latest, record, key=key, partition=0)
                if commit:
                    await producer.commit_transaction()
                else:
                    await producer.abort_transaction()
        finally:
            await producer.stop()
        kind, data = await anext(events)
    assert (kind, data["courier_id"]) == ("position", "committed")


async def test_a_revoked_token_loses_its_live_stream_and_streams_are_limited(api: Api) -> None:
    """Issue 16, finding 4: a revoked dispatcher kept streaming, and a token could open any
    number of streams."""
    token = await api.token("org-a", "carol")
    headers = {"Authorization": f"Bearer {token}"}
    limit = api.settings.api_live_streams_per_token
    timeout = aiohttp.ClientTimeout(total=60)
    async with contextlib.AsyncExitStack() as streams:
        http = await streams.enter_async_context(aiohttp.ClientSession(timeout=timeout))
        opened = [
            await streams.enter_async_context(http.get(api.base + "/v1/live", headers=headers))
            for _ in range(limit)
        ]
        assert [r.status for r in opened] == [200] * limit
        async with http.get(api.base + "/v1/live", headers=headers) as one_more:
            assert one_more.status == 429
        events = read_events(opened[0])
        assert (await anext(events))[0] == "ready"
        async with await psycopg.AsyncConnection.connect(api.owner_url) as conn:
            assert await revoke_dispatcher(conn, "org-a", dispatcher_id="carol") == 1
        kind, data = await anext(events)  # within a second: the cache TTL here is 0
        assert (kind, data) == ("revoked", {"reason": "token_revoked"})
        assert await anext(events, None) is None


def test_cli_create_dispatcher_prints_the_token_last(settings: Settings) -> None:
    env = {**os.environ, "GEOSTREAM_DATABASE_URL": settings.database_url}
    cli = [sys.executable, "-m", "geostream.cli", "admin"]
    out = subprocess.run(
        [*cli, "create-dispatcher", "--org", "org-a", "--name", "cli"],
        env=env, capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    token = out.strip().splitlines()[-1]
    assert token.startswith("gsa_")
    with psycopg.connect(settings.database_url) as conn:
        (stored,) = conn.execute(
            "SELECT token_hint FROM dispatcher_tokens WHERE org_id = 'org-a'"
        ).fetchone() or (None,)
        assert stored == token[:10]
        assert token not in str(conn.execute("SELECT * FROM dispatcher_tokens").fetchall())
    duplicate = subprocess.run(
        [*cli, "create-dispatcher", "--org", "org-a", "--name", "cli"],
        env=env, capture_output=True, text=True,
    )  # fmt: skip
    assert duplicate.returncode == 2
    assert "already has a live token" in duplicate.stderr
    revoked = subprocess.run(
        [*cli, "revoke-dispatcher", "--org", "org-a", "--token", token],
        env=env, capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert "revoked 1" in revoked.stdout

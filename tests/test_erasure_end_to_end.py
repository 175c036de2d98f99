"""A courier's erasure, black-box, on the whole pipeline (``geostream serve``; issue 16).

A moving courier with an open trip posts through the gateway and is erased through the API.
After the trip gap (when the worker's timer would have closed that trip), nothing of the
courier is served or stored, its old token gets 401, ``courier.latest`` ends with its
tombstone, and a device enrolled afterwards starts a history that links to nothing before.
"""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import psycopg
import pytest
from processors_helpers import records_until
from test_end_to_end import get_json, running_pipeline, wait_for_http

from config.settings import Settings
from geostream.db import create_pool
from geostream.kafka import topic_name
from ingest.tokens import TokenStore
from sinks.api.auth import create_dispatcher
from sinks.privacy import COURIER_TABLES

pytestmark = pytest.mark.stack

ORG, COURIER = "erase-org", "walker"
GAP_S = 20


def upload(start: datetime, first: int, lat0: float) -> dict[str, Any]:
    """Five fixes 2 s apart, ~22 m apart northwards: a courier on the move."""
    return {
        "fixes": [
            {
                "fix_id": f"{lat0}-{first + i}",
                "ts": (start + timedelta(seconds=2 * i)).isoformat(),
                "lat": lat0 + 0.0002 * (first + i),
                "lon": 76.9,
                "accuracy_m": 5.0,
            }
            for i in range(5)
        ]
    }


async def post(session: aiohttp.ClientSession, gateway: str, token: str, body: object) -> int:
    headers = {"Authorization": f"Bearer {token}"}
    async with session.post(f"{gateway}/v1/fixes", json=body, headers=headers) as response:
        await response.read()
        return response.status


def rows(url: str, query: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(url) as conn:
        return conn.execute(query, {"org": ORG, "courier": COURIER}).fetchall()


async def until(what: str, check: Any, limit_s: float = 90) -> None:
    deadline = time.monotonic() + limit_s
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.5)


async def test_an_erased_courier_stays_erased_across_the_pipeline(
    settings: Settings, tmp_path: Path
) -> None:
    url = settings.database_url
    extra = {"GEOSTREAM_TRIP_MAX_GAP_S": str(GAP_S), "GEOSTREAM_WORKER_IDLE_INTERVAL_S": "1"}
    async with create_pool(settings) as pool:
        devices = TokenStore(pool)
        old_token = await devices.create(ORG, COURIER, "phone-old")
        async with pool.connection() as conn:
            operator = await create_dispatcher(conn, ORG, "ops", is_operator=True)
        with running_pipeline(settings, tmp_path, extra) as (env, api):
            gateway = f"http://127.0.0.1:{env['GEOSTREAM_INGEST_PORT']}"
            wait_for_http(gateway, 60)
            wait_for_http(api, 60)
            async with aiohttp.ClientSession() as session:
                now = datetime.now(UTC).replace(microsecond=0)
                for n in range(3):
                    start = now - timedelta(seconds=30 - 10 * n)
                    assert (
                        await post(session, gateway, old_token, upload(start, 5 * n, 43.2)) == 200
                    )

                def stored_moving() -> bool:
                    [(fixes, on_trip)] = rows(
                        url,
                        "SELECT count(*), count(trip_id) FROM positions"
                        " WHERE org_id = %(org)s AND courier_id = %(courier)s",
                    )
                    return fixes == 15 and on_trip > 0

                await until("the courier's fixes, on a trip", stored_moving)
                old_trips = {
                    r[0]
                    for r in rows(url, "SELECT DISTINCT trip_id FROM positions"
                                       " WHERE courier_id = %(courier)s AND trip_id IS NOT NULL")
                }  # fmt: skip
                assert rows(url, "SELECT count(*) FROM trips") == [(0,)]  # the trip is open

                headers = {"Authorization": f"Bearer {operator}"}
                async with session.delete(
                    f"{api}/v1/couriers/{COURIER}/data", headers=headers
                ) as response:
                    assert response.status == 200, await response.text()
                    receipt = await response.json()
                assert receipt["rows_deleted"]["positions"] == 15
                assert receipt["device_tokens_revoked"] == 1
                assert await post(session, gateway, old_token, upload(now, 15, 43.2)) == 401

                # Past the trip gap: the worker's timer would have closed the old trip by now.
                await asyncio.sleep(GAP_S + 10)
                status, body = await get_json(session, f"{api}/v1/couriers/latest", operator)
                assert (status, body["items"]) == (200, [])  # type: ignore[index]
                for listing in ("track", "trips", "stops"):
                    status, _ = await get_json(
                        session, f"{api}/v1/couriers/{COURIER}/{listing}", operator
                    )
                    assert status == 404, listing
                for table in COURIER_TABLES:
                    assert rows(url, f"SELECT count(*) FROM {table}") == [(0,)], table
                key = f"{ORG}/{COURIER}".encode()

                def ends_with_tombstone(records: list[Any]) -> bool:
                    mine = [r for r in records if r.key == key]
                    return bool(mine) and mine[-1].value is None

                latest = await records_until(
                    settings, topic_name(settings, "courier.latest"), ends_with_tombstone, 30
                )
                assert ends_with_tombstone(latest)

                # Re-enrolled: a new device of the same courier starts from nothing.
                new_token = await devices.create(ORG, COURIER, "phone-new")
                again = datetime.now(UTC).replace(microsecond=0) - timedelta(seconds=10)
                assert await post(session, gateway, new_token, upload(again, 0, 43.3)) == 200
                await until("the new device's fixes", lambda: rows(
                    url, "SELECT count(*) FROM positions")[0][0] == 5)  # fmt: skip
    new_rows = rows(
        url,
        "SELECT device_id, trip_id, distance_m, odometer_m, fix_id FROM positions ORDER BY ts",
    )
    assert {r[0] for r in new_rows} == {"phone-new"}
    assert old_trips.isdisjoint({r[1] for r in new_rows})
    assert (new_rows[0][2], new_rows[0][3]) == (0.0, 0.0)  # no previous fix to measure from
    assert all(r[4].startswith("43.3-") for r in new_rows)

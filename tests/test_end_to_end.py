"""The whole pipeline on the real stack: real recorded traces in, the dispatcher API out.

``geostream serve`` runs the gateway, the worker, the sink and the API on the test's own topics
and database; the traces (tests/data/traces, real GPX recordings) are replayed through the
gateway with ``geostream replay``, moved in time so they end a minute ago. Then the API must
show every courier in latest positions, stops that match MovingPandas' reference stops for the
same parameters, and nothing at all to another organisation's dispatcher.
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiohttp
import psycopg
import pytest
from test_processors_reference import REFERENCE, Span, precision_recall

from config.settings import Settings
from geostream.stack.system import free_port
from processors.offline import read_trace
from sinks.api.auth import create_dispatcher

pytestmark = pytest.mark.stack

TRACES = Path(__file__).parent / "data" / "traces"
ORG, OTHER_ORG = "e2e-org", "e2e-other"
RUN = "80m_120s"  # the reference run made with the worker's default stop parameters


def shifted_csv(directory: Path, end: datetime) -> tuple[Path, dict[str, timedelta]]:
    """All traces in one CSV, each moved to end at ``end``; returns the shift per courier."""
    path = directory / "traces.csv"
    shifts: dict[str, timedelta] = {}
    with path.open("w", newline="") as out:
        writer = csv.writer(out)
        writer.writerow(["courier_id", "ts", "lat", "lon"])
        for trace in sorted(TRACES.glob("*.gpx")):
            fixes = list(read_trace(trace))
            shift = end - fixes[-1].ts
            shifts[trace.name] = shift
            for fix in fixes:
                writer.writerow([trace.stem, (fix.ts + shift).isoformat(), fix.lat, fix.lon])
    return path, shifts


@contextlib.contextmanager
def running_pipeline(
    settings: Settings, tmp_path: Path, extra_env: dict[str, str] | None = None
) -> Iterator[tuple[dict[str, str], str]]:
    """``geostream serve`` on the test's topics and database; yields (env, API base URL)."""
    env = {
        **os.environ,
        "GEOSTREAM_TOPIC_PREFIX": settings.topic_prefix,
        "GEOSTREAM_DATABASE_URL": settings.database_url,
        "GEOSTREAM_INGEST_PORT": str(free_port()),
        "GEOSTREAM_API_PORT": str(free_port()),
        "GEOSTREAM_WORKER_METRICS_PORT": str(free_port()),
        "GEOSTREAM_SINK_METRICS_PORT": str(free_port()),
        "GEOSTREAM_WORKER_DATA_DIR": str(tmp_path / "worker"),
        "GEOSTREAM_SINK_GROUP_ID": f"e2e-sink-{uuid.uuid4().hex[:8]}",
        "GEOSTREAM_INGEST_RATE_PER_S": "1000",
        "GEOSTREAM_INGEST_RATE_BURST": "1000",
        **(extra_env or {}),
    }
    log = (tmp_path / "serve.log").open("w")
    serve = subprocess.Popen(
        [sys.executable, "-m", "geostream.cli", "serve"],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        yield env, f"http://127.0.0.1:{env['GEOSTREAM_API_PORT']}"
    finally:
        serve.send_signal(signal.SIGTERM)
        try:
            serve.wait(timeout=60)
        except subprocess.TimeoutExpired:
            serve.kill()
            serve.wait()
        log.close()


@pytest.fixture
def pipeline(settings: Settings, tmp_path: Path) -> Iterator[tuple[dict[str, str], str]]:
    with running_pipeline(settings, tmp_path) as running:
        yield running


def wait_for_http(url: str, within_s: float) -> None:
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            host, port = url.removeprefix("http://").split(":")
            if sock.connect_ex((host, int(port))) == 0:
                return
        time.sleep(0.3)
    raise AssertionError(f"{url} did not come up within {within_s:.0f}s")


async def get_json(session: aiohttp.ClientSession, url: str, token: str) -> tuple[int, object]:
    async with session.get(url, headers={"Authorization": f"Bearer {token}"}) as response:
        return response.status, await response.json()


async def dispatcher_token(database_url: str, org: str) -> str:
    async with await psycopg.AsyncConnection.connect(database_url) as conn:
        return await create_dispatcher(conn, org, "e2e")


async def test_replayed_traces_reach_dispatchers_of_their_org_only(
    settings: Settings, pipeline: tuple[dict[str, str], str], tmp_path: Path
) -> None:
    env, api = pipeline
    wait_for_http(f"http://127.0.0.1:{env['GEOSTREAM_INGEST_PORT']}", 60)
    wait_for_http(api, 60)
    end = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=1)
    trace_csv, shifts = shifted_csv(tmp_path, end)
    replay = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "geostream.cli", "replay", str(trace_csv), "--org", ORG, "--max"],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert replay.returncode == 0, replay.stdout[-2000:] + replay.stderr[-2000:]

    token = await dispatcher_token(settings.database_url, ORG)
    other = await dispatcher_token(settings.database_url, OTHER_ORG)
    couriers = {trace.stem for trace in TRACES.glob("*.gpx")}
    async with aiohttp.ClientSession() as session:
        # Every courier's newest fix reaches latest positions once all stages have run.
        seen: set[str] = set()
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline:
            status, body = await get_json(session, f"{api}/v1/couriers/latest", token)
            assert status == 200, body
            assert isinstance(body, dict)
            latest = {item["courier_id"]: item for item in body["items"]}
            seen = set(latest)
            if seen == couriers and all(
                datetime.fromisoformat(item["ts"]) >= end for item in latest.values()
            ):
                break
            await asyncio.sleep(2)
        assert seen == couriers

        window = f"from={(end - timedelta(hours=4)).isoformat()}&to={end.isoformat()}"
        window = window.replace("+", "%2B")
        for trace, shift in shifts.items():
            courier = Path(trace).stem
            run = REFERENCE["traces"][trace]["runs"][RUN]
            reference: list[Span] = [
                (
                    datetime.fromisoformat(s["start"]) + shift,
                    datetime.fromisoformat(s["end"]) + shift,
                    s["lat"],
                    s["lon"],
                )
                for s in run["stops"]
            ]
            status, body = await get_json(
                session, f"{api}/v1/couriers/{courier}/stops?{window}&limit=1000", token
            )
            assert status == 200, body
            assert isinstance(body, dict)
            ours: list[Span] = [
                (
                    datetime.fromisoformat(s["start"]),
                    datetime.fromisoformat(s["end"]),
                    s["lat"],
                    s["lon"],
                )
                for s in body["items"]
            ]
            precision, recall = precision_recall(ours, reference, run["max_diameter"])
            detail = json.dumps({"ours": len(ours), "reference": len(reference)})
            assert precision >= 0.9, f"{trace}: precision {precision:.2f} {detail}"
            assert recall >= 0.9, f"{trace}: recall {recall:.2f} {detail}"

            # Another organisation's dispatcher cannot tell the courier exists.
            status, _ = await get_json(
                session, f"{api}/v1/couriers/{courier}/stops?{window}", other
            )
            assert status == 404

        status, body = await get_json(session, f"{api}/v1/couriers/latest", other)
        assert status == 200
        assert isinstance(body, dict)
        assert body["items"] == []

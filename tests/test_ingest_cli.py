"""The ingest commands as an operator runs them: admin tokens, ``geostream ingest`` as its own
process, ``replay`` and ``simulate`` through it into the real ``fixes.raw``."""

from __future__ import annotations

import asyncio
import hashlib
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import orjson
import psycopg
import pytest
from test_ingest_gateway import consume, fix

from config.settings import Settings
from geostream.bench import wait_ready
from geostream.stack.system import free_port
from ingest.bench import start_gateway
from ingest.client import GatewayClient
from schemas.records import IngestedFix
from schemas.wire import decode

pytestmark = pytest.mark.stack


def geostream(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "GEOSTREAM_DATABASE_URL": settings.database_url,
        "GEOSTREAM_TOPIC_PREFIX": settings.topic_prefix,
        "GEOSTREAM_INGEST_PORT": str(settings.ingest_port),
    }
    return subprocess.run(
        [sys.executable, "-m", "geostream.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


@pytest.fixture
async def gateway_process(settings: Settings) -> AsyncIterator[Settings]:
    with_port = settings.model_copy(update={"ingest_port": free_port()})
    process = start_gateway(with_port, with_port.ingest_port)
    try:
        await wait_ready(f"http://127.0.0.1:{with_port.ingest_port}", process)
        yield with_port
    finally:
        process.terminate()
        process.wait(timeout=30)


async def test_create_device_prints_the_token_last_and_stores_only_its_hash(
    gateway_process: Settings,
) -> None:
    settings = gateway_process
    done = await asyncio.to_thread(
        geostream, settings, "admin", "create-device", "--org", "acme", "--courier", "c-1",
        "--device", "phone-1",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    token = done.stdout.strip().splitlines()[-1]
    assert token.startswith("gsd_")
    with psycopg.connect(settings.database_url) as conn:
        rows = conn.execute(
            "SELECT token_hash, org_id, courier_id, device_id FROM device_tokens"
        ).fetchall()
        dump = str(conn.execute("SELECT * FROM device_tokens").fetchall())
    assert rows == [(hashlib.sha256(token.encode()).digest(), "acme", "c-1", "phone-1")]
    assert token not in dump

    again = await asyncio.to_thread(
        geostream, settings, "admin", "create-device", "--org", "acme", "--courier", "c-1",
        "--device", "phone-1",
    )  # fmt: skip
    assert again.returncode == 2
    assert "already has a live token" in again.stderr

    url = f"http://127.0.0.1:{settings.ingest_port}"
    async with GatewayClient(url) as client:
        assert (await client.post(token, [fix()])).status == 200
        revoked = await asyncio.to_thread(
            geostream, settings, "admin", "revoke-device", "--org", "acme", "--device", "phone-1"
        )
        assert revoked.returncode == 0
        assert "revoked 1" in revoked.stdout
        # The gateway process caches tokens for ingest_token_cache_ttl_s (5 s by default).
        deadline = time.monotonic() + 60
        status = 200
        while status == 200:
            assert time.monotonic() < deadline, "revocation never took effect"
            await asyncio.sleep(0.5)
            status = (await client.post(token, [fix()])).status
        assert status == 401


async def test_replay_a_csv_trace_through_the_gateway(
    gateway_process: Settings, tmp_path: Path
) -> None:
    settings = gateway_process
    now_ms = int(time.time() * 1000)
    lines = ["courier_id,ts,lat,lon,accuracy_m,speed_mps,note"]
    for i in range(30):
        lines.append(f"rider-{i % 3},{now_ms - 60_000 + i * 1000},43.{i:02d},76.9,5,2.5,x")
    lines.append(f"rider-0,{now_ms - 1000},95.0,76.9,5,2.5,bad")
    trace = tmp_path / "trace.csv"
    trace.write_text("\n".join(lines) + "\n")
    done = await asyncio.to_thread(
        geostream, settings, "replay", str(trace), "--org", "fleet", "--max", "--batch", "7"
    )
    assert done.returncode == 0, done.stderr
    assert "accepted 30, rejected 1 of 31 fixes" in done.stdout
    assert "rejected lat_out_of_range: 1" in done.stdout
    records = await consume(settings, 30)
    stored = [decode(IngestedFix, r.value) for r in records]
    assert len(stored) == 30
    assert {(f.org_id, f.courier_id) for f in stored} == {
        ("fleet", "rider-0"),
        ("fleet", "rider-1"),
        ("fleet", "rider-2"),
    }
    assert all(f.speed_mps == 2.5 for f in stored)
    assert not any("note" in orjson.loads(r.value) for r in records)


async def test_simulate_posts_fixes_that_land_in_kafka(gateway_process: Settings) -> None:
    settings = gateway_process
    done = await asyncio.to_thread(
        geostream, settings, "simulate", "--couriers", "3", "--interval", "1",
        "--duration", "20", "--org", "sim", "--seed", "4",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    summary = done.stdout.strip().splitlines()[-1]
    accepted = int(summary.split("accepted ")[1].split()[0])
    assert accepted > 0
    records = await consume(settings, accepted)
    assert {decode(IngestedFix, r.value).org_id for r in records} == {"sim"}
    assert len({orjson.loads(r.value)["fix_id"] for r in records}) <= accepted

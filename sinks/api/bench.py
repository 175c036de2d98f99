"""``geostream bench api``: latency of latest positions for an org with 10,000 couriers.

Runs against a scratch database of its own (dropped afterwards) on the local stack, with a real
``geostream api`` process on a free port, so the figures include HTTP, auth, the org
transaction and row-level security. The "limit" row is the same SQL timed through psycopg
alone (as the API role, in an org transaction): what the HTTP layer adds is the difference.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import time
import uuid
from typing import Any

from geostream.bench import BenchResult, process_cpu_s, wait_ready
from geostream.stack.system import free_port

ORG = "bench-org"
OTHER_ORG = "bench-other"


def register(benches: Any) -> None:
    bench = benches.add_parser("api", help="dispatcher API: latest positions of a large org")
    bench.add_argument("--couriers", type=int, default=10_000, help="couriers in the org")
    bench.add_argument("--requests", type=int, default=500, help="timed requests per case")
    bench.set_defaults(bench_function=run)


def _percentile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    index = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
    return ordered[index]


SEED = """
INSERT INTO latest_positions (org_id, courier_id, ts, device_id, fix_id, geom, accuracy_m,
    speed_mps, heading_deg, zone_ids, received_at, expires_at)
SELECT %(org)s, format('courier-%%s', lpad(i::text, 6, '0')), now() - (i %% 600) * interval '1 s',
    format('device-%%s', i), format('fix-%%s', i),
    ST_SetSRID(ST_MakePoint(76.9 + (i %% 100) * 0.001, 43.2 + (i / 100) * 0.001), 4326),
    5 + i %% 20, (i %% 15)::real, (i %% 360)::real,
    CASE WHEN i %% 10 = 0 THEN ARRAY['zone-a'] ELSE '{}'::text[] END,
    now(), now() + interval '90 days'
FROM generate_series(1, %(n)s) AS i
"""


async def _seed(url: str, couriers: int) -> str:
    import psycopg

    from sinks.api.auth import create_dispatcher

    async with await psycopg.AsyncConnection.connect(url) as conn:
        async with conn.transaction():
            await conn.execute(SEED, {"org": ORG, "n": couriers})
            await conn.execute(SEED, {"org": OTHER_ORG, "n": couriers})
        await conn.execute("ANALYZE latest_positions")
        await conn.commit()
        return await create_dispatcher(conn, ORG, "bench")


async def _time_http(base: str, token: str, path: str, n: int, expect: int) -> list[float]:
    import aiohttp

    headers = {"Authorization": f"Bearer {token}"}
    samples: list[float] = []
    async with aiohttp.ClientSession(headers=headers) as http:
        for i in range(n + 20):
            started = time.perf_counter()
            async with http.get(base + path) as response:
                body = await response.read()
            elapsed = time.perf_counter() - started
            if response.status != 200:
                raise RuntimeError(f"{path}: HTTP {response.status}: {body[:200]!r}")
            if i == 0:
                import orjson

                got = len(orjson.loads(body)["items"])
                if got != expect:
                    raise RuntimeError(f"{path}: {got} items, expected {expect}")
            if i >= 20:  # the first 20 warm the pool, caches and plans
                samples.append(elapsed)
    return samples


async def _time_sql(settings: Any, url: str, n: int, limit: int) -> list[float]:
    import psycopg

    from sinks.api import queries
    from sinks.api.app import session_conninfo
    from sinks.isolation import org_transaction

    samples: list[float] = []
    async with await psycopg.AsyncConnection.connect(session_conninfo(url, settings)) as conn:
        for i in range(n + 20):
            started = time.perf_counter()
            async with org_transaction(conn, ORG):
                page = await queries.latest_positions(conn, ORG, limit, None)
            elapsed = time.perf_counter() - started
            assert page.items_json.startswith("[")
            if i >= 20:
                samples.append(elapsed)
    return samples


def run(args: argparse.Namespace) -> BenchResult:
    import psycopg
    from psycopg import sql
    from psycopg.conninfo import make_conninfo

    from config.settings import get_settings
    from geostream.db import database_url, service_database_url
    from sinks.migrate import migrate

    settings = get_settings()
    owner_url = database_url(settings)
    name = f"bench_api_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(owner_url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    scratch_url = make_conninfo(owner_url, dbname=name)
    process: subprocess.Popen[bytes] | None = None
    try:
        migrate(scratch_url)
        token = asyncio.run(_seed(scratch_url, args.couriers))
        scratch = settings.model_copy(update={"database_url": scratch_url})
        api_url = service_database_url(scratch, "api")
        port = free_port()
        env = {
            **os.environ,
            "GEOSTREAM_DATABASE_URL": scratch_url,
            "GEOSTREAM_API_PORT": str(port),
            "GEOSTREAM_API_TOKEN_CACHE_TTL_S": "5",
        }
        process = subprocess.Popen(
            [sys.executable, "-m", "geostream.cli", "api"],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        base = f"http://127.0.0.1:{port}"
        asyncio.run(wait_ready(base, process))
        n = args.requests
        cpu_before = process_cpu_s(process.pid)
        full = asyncio.run(
            _time_http(base, token, f"/v1/couriers/latest?limit={args.couriers}", n, args.couriers)
        )
        api_cpu = (process_cpu_s(process.pid) - cpu_before) / (n + 20)
        page = settings.api_default_limit
        first = asyncio.run(_time_http(base, token, "/v1/couriers/latest", n, page))
        limit = asyncio.run(_time_sql(settings, api_url, n, args.couriers))
        load = os.getloadavg()[0]
    finally:
        if process is not None:
            process.terminate()
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
        with psycopg.connect(owner_url, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
                sql.Identifier(name)
            ))  # fmt: skip

    result = BenchResult(
        "api", f"Dispatcher API: latest positions of an org with {args.couriers:,} couriers"
    )
    ms = 1000.0
    result.add(f"all {args.couriers:,} in one response: p50", statistics.median(full) * ms, "ms")
    result.add(f"all {args.couriers:,} in one response: p99", _percentile(full, 0.99) * ms, "ms")
    result.add(f"first page ({page}): p50", statistics.median(first) * ms, "ms")
    result.add(f"first page ({page}): p99", _percentile(first, 0.99) * ms, "ms")
    result.add("limit, same SQL via psycopg only: p50", statistics.median(limit) * ms, "ms")
    result.add("limit, same SQL via psycopg only: p99", _percentile(limit, 0.99) * ms, "ms")
    result.add(f"API process CPU per {args.couriers:,}-courier response", api_cpu * ms, "ms")
    result.add("load average (1 min) at the end", load, "")
    result.notes += [
        f"{n} sequential requests per case after 20 warm-up ones, one client (aiohttp) against "
        "one `geostream api` process (uvicorn, uvloop, httptools) on the same machine.",
        f"Another org with {args.couriers:,} couriers is in the same table; row-level security "
        "and the org transaction are on the measured path.",
        "The API process's CPU per response is the steadier figure: latencies include waiting "
        "for cores shared with PostgreSQL, the client and whatever else runs (load average).",
        "Goal: p99 under 50 ms for the whole org in one response.",
    ]
    return result

"""``geostream simulate``: the courier model's uploads, posted to the gateway in real time."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import random
import sys
import time
import uuid

from config.settings import Settings
from geostream.db import create_pool
from ingest.client import GatewayClient, PostStats, gateway_url
from ingest.simulator import courier_uploads
from ingest.tokens import TokenStore


async def issue_tokens(settings: Settings, org: str, couriers: list[str], prefix: str) -> list[str]:
    """One device token per courier (device ``{prefix}-{courier}``), rotating older ones."""
    pool = create_pool(settings)
    await pool.open()
    try:
        store = TokenStore(pool)
        return [await store.create(org, c, f"{prefix}-{c}", rotate=True) for c in couriers]
    finally:
        await pool.close()


async def run_courier(
    client: GatewayClient,
    token: str,
    courier: str,
    *,
    seed: int,
    interval_s: float,
    run_id: str,
    until: float,
    stats: PostStats,
) -> None:
    for upload in courier_uploads(
        courier, seed=seed, start_s=time.time(), interval_s=interval_s, run_id=run_id
    ):
        if upload.at_s >= until:
            return
        await asyncio.sleep(max(0.0, upload.at_s - time.time()))
        await client.post_until_stored(token, upload.fixes, stats=stats)


def progress_line(stats: PostStats, elapsed: float, last: tuple[float, int]) -> str:
    window = max(1e-9, elapsed - last[0])
    rate = (stats.accepted - last[1]) / window
    reasons = ", ".join(f"{k}={v}" for k, v in sorted(stats.reasons.items())) or "none"
    statuses = " ".join(f"{k}:{v}" for k, v in sorted(stats.statuses.items()))
    return (
        f"[{elapsed:7.1f}s] accepted {stats.accepted} ({rate:.1f}/s)  rejected {stats.rejected}"
        f" ({reasons})  requests {stats.requests} [{statuses}]"
    )


async def simulate(settings: Settings, args: argparse.Namespace) -> int:
    run_id = uuid.uuid4().hex[:8]
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(2**31)
    couriers = [f"courier-{i}" for i in range(args.couriers)]
    tokens = await issue_tokens(settings, args.org, couriers, "sim")
    url = gateway_url(settings, args.url)
    print(f"simulating {len(couriers)} couriers of org {args.org} -> {url} (seed {seed})")
    began = time.time()
    until = began + args.duration if args.duration > 0 else float("inf")
    stats = PostStats()
    async with GatewayClient(url, connections=min(256, max(4, len(couriers)))) as client:
        tasks = [
            asyncio.create_task(
                run_courier(
                    client,
                    token,
                    courier,
                    seed=seed,
                    interval_s=args.interval,
                    run_id=run_id,
                    until=until,
                    stats=stats,
                )
            )
            for courier, token in zip(couriers, tokens, strict=True)
        ]
        last = (0.0, 0)
        try:
            while not all(task.done() for task in tasks):
                await asyncio.sleep(2.0)
                elapsed = time.time() - began
                print(progress_line(stats, elapsed, last), file=sys.stderr)
                last = (elapsed, stats.accepted)
        finally:
            for task in tasks:
                task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.gather(*tasks, return_exceptions=True)
    print(progress_line(stats, time.time() - began, (0.0, 0)))
    return 0

"""``geostream replay FILE --org ORG``: a recorded trace through the gateway, with progress."""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path
from typing import Any

from config.settings import Settings
from ingest.client import GatewayClient, PostStats, gateway_url
from ingest.simulate_run import issue_tokens
from ingest.tokens import DeviceError, check_identifier
from ingest.traces import TraceError, TracePoint, parse_trace, shift_to


def progress_bar(done: int, total: int, stats: PostStats, width: int = 30) -> str:
    filled = int(width * done / total) if total else width
    return (
        f"\r[{'#' * filled}{'.' * (width - filled)}] {100 * done / max(total, 1):5.1f}%"
        f" {done}/{total} fixes  accepted {stats.accepted}  rejected {stats.rejected}"
    )


async def replay(settings: Settings, args: argparse.Namespace) -> int:
    path = Path(args.file)
    try:
        text = await asyncio.to_thread(path.read_text)
        trace = parse_trace(text, path.name)
        for courier in trace.couriers:
            check_identifier("courier", courier)
    except (OSError, TraceError, DeviceError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.shift_to_now:
        trace = shift_to(trace, time.time())
    if trace.ignored_columns:
        print(f"ignoring columns outside the Fix schema: {', '.join(trace.ignored_columns)}")
    couriers = list(trace.couriers)
    tokens = dict(
        zip(couriers, await issue_tokens(settings, args.org, couriers, "replay"), strict=True)
    )
    url = gateway_url(settings, args.url)
    print(f"replaying {len(trace.points)} fixes of {len(couriers)} couriers of {args.org} to {url}")
    stats = PostStats()
    total = len(trace.points)
    done = 0
    pending: set[asyncio.Task[Any]] = set()
    buffers: dict[str, list[dict[str, Any]]] = {c: [] for c in couriers}
    locks = {c: asyncio.Lock() for c in couriers}
    unstored = 0
    async with GatewayClient(url, connections=32) as client:

        async def flush(courier: str) -> None:
            nonlocal done, unstored
            async with locks[courier]:  # one request at a time per courier keeps its order
                fixes, buffers[courier] = buffers[courier], []
                if not fixes:
                    return
                result = await client.post_until_stored(tokens[courier], fixes, stats=stats)
            done += len(fixes)
            if result.status != 200:
                unstored += len(fixes)
            print(progress_bar(done, total, stats), end="", file=sys.stderr, flush=True)

        def schedule(courier: str) -> None:
            task = asyncio.create_task(flush(courier))
            pending.add(task)
            task.add_done_callback(pending.discard)

        started = time.monotonic()
        first = trace.points[0].epoch_s if trace.points else 0.0
        last_flush = started
        point: TracePoint
        for point in trace.points:
            if not args.max:
                due = started + (point.epoch_s - first) / args.speed
                wait = due - time.monotonic()
                if wait > 0:
                    await asyncio.sleep(wait)
            buffers[point.courier_id].append(point.fix)
            if len(buffers[point.courier_id]) >= args.batch:
                schedule(point.courier_id)
            elif not args.max and time.monotonic() - last_flush >= 1.0:
                last_flush = time.monotonic()
                for courier in couriers:
                    schedule(courier)
            if len(pending) >= 32:
                await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
        for courier in couriers:
            schedule(courier)
        while pending:
            await asyncio.wait(pending)
    print(file=sys.stderr)
    print(f"accepted {stats.accepted}, rejected {stats.rejected} of {total} fixes")
    for reason, count in sorted(stats.reasons.items()):
        print(f"  rejected {reason}: {count}")
    if unstored:
        print(f"  fixes not stored (gateway kept refusing): {unstored}; statuses {stats.statuses}")
    return 0 if not unstored else 1

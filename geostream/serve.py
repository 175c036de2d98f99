"""``geostream serve``: ingest, worker, sink and API as supervised child processes.

A child that dies is started again after a growing pause (capped), so one crash does not take
the pipeline down; SIGTERM or SIGINT stops every child with SIGTERM, waits for a clean
shutdown and kills what is still running after the grace period.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import sys
import time
from dataclasses import dataclass, field
from typing import Any

from config.settings import Settings, get_settings

log = logging.getLogger("geostream.serve")

SERVICES: dict[str, list[str]] = {
    "ingest": ["ingest"],
    "worker": ["worker"],
    "sink": ["sink"],
    "api": ["api"],
}
GRACE_S = 20.0
MAX_BACKOFF_S = 30.0


@dataclass
class Child:
    """One supervised process: its full command line (and environment, if not this one's),
    the process, its restart history."""

    name: str
    argv: list[str]
    env: dict[str, str] | None = None
    process: asyncio.subprocess.Process | None = None
    restarts: int = 0
    started_at: float = field(default=0.0)

    async def start(self) -> None:
        self.process = await asyncio.create_subprocess_exec(*self.argv, env=self.env)
        self.started_at = time.monotonic()
        log.info("started %s (pid %s)", self.name, self.process.pid)

    def backoff(self) -> float:
        """Pause before the next start: doubles per quick crash, resets after a long run."""
        if time.monotonic() - self.started_at > MAX_BACKOFF_S:
            self.restarts = 0
        self.restarts += 1
        return float(min(MAX_BACKOFF_S, 2 ** (self.restarts - 1)))


class Supervisor:
    """Keeps the children running until asked to stop."""

    def __init__(self, children: list[Child]) -> None:
        self.children = children
        self.stopping = asyncio.Event()

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.stopping.set)
        await asyncio.gather(*(self._keep(child) for child in self.children))
        return 0

    async def _keep(self, child: Child) -> None:
        while not self.stopping.is_set():
            await child.start()
            assert child.process is not None
            waiter = asyncio.create_task(child.process.wait())
            stopper = asyncio.create_task(self.stopping.wait())
            await asyncio.wait({waiter, stopper}, return_when=asyncio.FIRST_COMPLETED)
            if self.stopping.is_set():
                stopper.cancel()
                await self._stop(child, waiter)
                return
            stopper.cancel()
            pause = child.backoff()
            log.warning(
                "%s exited with %s; starting it again in %.0fs", child.name, waiter.result(), pause
            )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stopping.wait(), pause)

    async def _stop(self, child: Child, waiter: asyncio.Task[int]) -> None:
        assert child.process is not None
        if child.process.returncode is None:
            child.process.terminate()
        done, _ = await asyncio.wait({waiter}, timeout=GRACE_S)
        if not done:
            log.warning("%s did not stop within %.0fs; killing it", child.name, GRACE_S)
            child.process.kill()
        code = await waiter
        log.info("stopped %s (exit %s)", child.name, code)


def worker_env(settings: Settings, index: int) -> dict[str, str]:
    """What sets worker ``index`` (0 first) of one consumer group apart from the others: its
    own store directory (rocksdb locks it) and metrics port. The first keeps the settings'."""
    if index == 0:
        return {}
    port = settings.worker_metrics_port
    return {
        "GEOSTREAM_WORKER_DATA_DIR": str(settings.worker_data_dir / f"worker-{index + 1}"),
        "GEOSTREAM_WORKER_METRICS_PORT": str(port + index if port else 0),
    }


def service_children(settings: Settings, names: list[str], workers: int) -> list[Child]:
    """The supervised processes of ``names``; ``worker`` as ``workers`` processes that share
    the partitions of fixes.raw."""
    children = []
    for name in names:
        if name != "worker":
            children.append(Child(name, geostream_argv(*SERVICES[name])))
            continue
        for index in range(workers):
            extra = worker_env(settings, index)
            label = "worker" if workers == 1 else f"worker-{index + 1}"
            env = {**os.environ, **extra} if extra else None
            children.append(Child(label, geostream_argv(*SERVICES[name]), env))
    return children


def geostream_argv(*args: str) -> list[str]:
    """The command line of a ``geostream`` sub-command in this interpreter."""
    return [sys.executable, "-m", "geostream.cli", *args]


def register(commands: Any) -> None:
    serve = commands.add_parser("serve", help="run ingest, worker, sink and API, supervised")
    serve.add_argument(
        "--only",
        default=",".join(SERVICES),
        help=f"comma-separated services to run (default: {','.join(SERVICES)})",
    )
    serve.add_argument(
        "--simulate", type=int, default=0, metavar="N", help="also run N simulated couriers"
    )
    serve.add_argument("--org", default="demo", help="org of the simulated couriers")
    serve.add_argument(
        "--workers",
        type=int,
        default=1,
        metavar="N",
        help="worker processes sharing the partitions (default: 1)",
    )
    serve.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    names = [n.strip() for n in args.only.split(",") if n.strip()]
    unknown = sorted(set(names) - set(SERVICES))
    if unknown:
        print(f"geostream serve: unknown services {unknown}; choose from {sorted(SERVICES)}")
        return 2
    if args.workers < 1:
        print("geostream serve: --workers needs at least 1")
        return 2
    settings = get_settings()
    children = service_children(settings, names, args.workers)
    if args.simulate:
        children.append(
            Child(
                "simulate",
                geostream_argv("simulate", "--couriers", str(args.simulate), "--org", args.org),
            )
        )
    token = asyncio.run(demo_dispatcher_token(settings, args.org)) if args.simulate else None
    print(banner(settings, names, args.org, token), flush=True)
    return asyncio.run(Supervisor(children).run())


async def demo_dispatcher_token(settings: Settings, org: str) -> str:
    """A fresh dispatcher token for the simulated org, so the banner's examples just work."""
    import psycopg

    from geostream.db import database_url
    from sinks.api.auth import create_dispatcher

    async with await psycopg.AsyncConnection.connect(database_url(settings)) as conn:
        return await create_dispatcher(conn, org, "serve-demo", rotate=True)


def banner(settings: Settings, names: list[str], org: str, token: str | None) -> str:
    """Where to look while the pipeline runs."""
    from geostream.db import database_url, redact

    api = f"http://{settings.api_host}:{settings.api_port}"
    lines = ["geostream is starting: " + ", ".join(names), ""]
    if "ingest" in names:
        gateway = f"http://{settings.ingest_host}:{settings.ingest_port}"
        lines.append(f"  device gateway   {gateway}/v1/fixes   metrics {gateway}/metrics")
    if "api" in names:
        lines.append(f"  dispatcher API   {api}/docs   metrics {api}/metrics")
    if "worker" in names:
        lines.append(f"  worker metrics   http://127.0.0.1:{settings.worker_metrics_port}/metrics")
    if "sink" in names:
        lines.append(f"  sink metrics     http://127.0.0.1:{settings.sink_metrics_port}/metrics")
    url = redact(database_url(settings))
    lines.append(f"  SQL              psql {url}   (password: .stack/postgres/credentials.json)")
    if token is not None:
        lines += [
            "",
            f"  dispatcher token of org {org!r} (new for this run):",
            f"    curl -H 'Authorization: Bearer {token}' {api}/v1/couriers/latest",
            f"    curl -N -H 'Authorization: Bearer {token}' {api}/v1/live",
        ]
    lines += ["", "Ctrl-C (SIGINT) or SIGTERM stops everything cleanly.", ""]
    return "\n".join(lines)

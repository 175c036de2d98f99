"""``geostream bench e2e``: the whole pipeline as devices and a dispatcher feel it.

One run starts the four services as ``geostream serve`` does (gateway, worker, sink, API, each
its own process, on a topic prefix and ports of the run's own), enrols the devices of a
throwaway org, and watches ``/v1/live`` as that org's dispatcher. Then:

- **steady load**: a lean generator (:mod:`geostream.loadgen`, its own process) plays N phones
  that post K fixes every P s. For each upload the gateway acknowledged, the newest fix is
  timed from the gateway's 200 to its arrival on ``/v1/live`` and to its row in ``positions``;
- **restarts**: optionally the worker is killed (SIGKILL) under that load and started again
  (the figure: from the new process's start until live updates flow again), then the gateway
  and the API (from the start to ``/readyz`` 200);
- **burst**: 400 couriers not seen before post a backlog in uploads of 20 as fast as the
  gateway takes them; the figure is accepted fixes over the time from the first accept to
  the last stored row.

Every process's CPU seconds per 1,000 fixes are read from ``/proc`` over each phase, the
generator's apart. The services' own histograms give the hops in between.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson

from config.settings import Settings, get_settings
from geostream.bench import BenchResult, process_cpu_s, wait_ready
from geostream.db import create_pool, database_url
from geostream.kafka import admin_client, create_consumer, create_topics, topic_name
from geostream.serve import worker_env
from geostream.stack import Stack
from geostream.stack.system import free_port, pid_alive

SERVICES = ("ingest", "worker", "sink", "api")
BURST_COURIERS = 400
BURST_UPLOAD = 20


def percentile(samples: list[float], q: float) -> float:
    if not samples:
        return float("nan")
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def ts_ms(iso: str) -> int:
    return round(datetime.fromisoformat(iso).timestamp() * 1000)


def postgres_cpu_s() -> float:
    """CPU seconds of every running ``postgres`` process (the server and its backends)."""
    total = 0.0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError, ValueError, IndexError):
            stat = (entry / "stat").read_text()
            if stat[stat.index("(") + 1 : stat.rindex(")")] == "postgres":
                total += process_cpu_s(int(entry.name))
    return total


@dataclass
class Run:
    """The run's settings, its service processes and what the watchers saw."""

    settings: Settings
    org: str
    workdir: Path
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    live: dict[tuple[str, int], float] = field(default_factory=dict)  # (courier, ts) -> seen
    live_ready: asyncio.Event = field(default_factory=asyncio.Event)
    #: every generator run numbers its uploads from its own base, so fix ids never repeat
    next_seq: int = 0
    #: where the simulated drives start: one place for every generator run of the pipeline
    epoch_ms: int = field(default_factory=lambda: int(time.time() * 1000) - 86_400_000)

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        s = self.settings
        env.update(
            {
                "GEOSTREAM_TOPIC_PREFIX": s.topic_prefix,
                "GEOSTREAM_INGEST_HOST": "127.0.0.1",
                "GEOSTREAM_INGEST_PORT": str(s.ingest_port),
                "GEOSTREAM_INGEST_RATE_PER_S": str(s.ingest_rate_per_s),
                "GEOSTREAM_INGEST_RATE_BURST": str(s.ingest_rate_burst),
                "GEOSTREAM_API_HOST": "127.0.0.1",
                "GEOSTREAM_API_PORT": str(s.api_port),
                "GEOSTREAM_WORKER_METRICS_PORT": str(s.worker_metrics_port),
                "GEOSTREAM_WORKER_DATA_DIR": str(s.worker_data_dir),
                "GEOSTREAM_SINK_METRICS_PORT": str(s.sink_metrics_port),
                "GEOSTREAM_SINK_GROUP_ID": s.sink_group_id,
            }
        )
        return env

    def start(self, name: str, index: int = 0) -> subprocess.Popen[bytes]:
        """Service ``name`` (its ``index``-th process, for workers), as geostream serve runs it."""
        label = name if index == 0 else f"{name}-{index + 1}"
        log = (self.workdir / f"{label}.log").open("ab")
        argv = [sys.executable, "-m", "geostream.cli", name]
        env = self.env()
        if name == "worker":
            argv += ["--loglevel", "warning"]
            env.update(worker_env(self.settings, index))
        process = subprocess.Popen(argv, env=env, stdout=log, stderr=log)
        self.processes[label] = process
        return process

    def cpu(self) -> dict[str, float]:
        seconds = {name: process_cpu_s(p.pid) for name, p in self.processes.items()}
        kafka = pid_alive(Stack(get_settings()).kafka.pid_file)
        seconds["kafka"] = process_cpu_s(kafka) if kafka else float("nan")
        seconds["postgres"] = postgres_cpu_s()
        return seconds

    @property
    def burst_tokens(self) -> Path:
        return self.workdir / "burst-tokens"

    @property
    def gateway(self) -> str:
        return f"http://127.0.0.1:{self.settings.ingest_port}"

    @property
    def api(self) -> str:
        return f"http://127.0.0.1:{self.settings.api_port}"


async def watch_live(run: Run, token: str) -> None:
    """The dispatcher: ``/v1/live`` of the run's org; each position's first arrival time."""
    import aiohttp

    headers = {"Authorization": f"Bearer {token}"}
    timeout = aiohttp.ClientTimeout(total=None, sock_read=None)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        while True:
            with contextlib.suppress(aiohttp.ClientError):
                async with session.get(f"{run.api}/v1/live", headers=headers) as response:
                    event = b""
                    async for line in response.content:
                        if line.startswith(b"event: "):
                            event = line[7:].strip()
                            if event == b"ready":
                                run.live_ready.set()
                        elif line.startswith(b"data: ") and event == b"position":
                            data = orjson.loads(line[6:])
                            key = (data["courier_id"], ts_ms(data["ts"]))
                            run.live.setdefault(key, time.time())
            run.live_ready.clear()
            await asyncio.sleep(0.2)


@dataclass
class Upload:
    courier: str
    fix_id: str
    newest_ms: int
    acked_at: float


@dataclass
class Phase:
    """What one generator run posted and what came of it."""

    statuses: dict[int, int] = field(default_factory=dict)
    uploads: list[Upload] = field(default_factory=list)
    accepted: int = 0
    stored_at: dict[tuple[str, str], float] = field(default_factory=dict)
    generator_cpu_s: float = 0.0
    seconds: float = 0.0
    cpu: dict[str, float] = field(default_factory=dict)
    accept_s: float = 0.0  # from the first accept to the last


async def generate(
    run: Run,
    tokens_file: Path,
    args: list[str],
    phase: Phase,
    pending: dict[tuple[str, str], float],
) -> None:
    """Run the generator and take in its answers as they come."""
    fixes = int(args[args.index("--fixes") + 1])
    first_seq, run.next_seq = run.next_seq, run.next_seq + 1_000_000
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "geostream.loadgen",
        "--port",
        str(run.settings.ingest_port),
        "--tokens",
        str(tokens_file),
        "--first-seq",
        str(first_seq),
        "--epoch-ms",
        str(run.epoch_ms),
        *args,
        stdout=asyncio.subprocess.PIPE,
    )
    assert proc.stdout is not None
    async for raw in proc.stdout:
        parts = raw.split()
        if parts[0] == b"cpu":
            phase.generator_cpu_s = float(parts[1])
            continue
        status, device, seq, newest_ms, answered, accepted = parts
        code = int(status)
        phase.statuses[code] = phase.statuses.get(code, 0) + 1
        if code == 200:
            phase.accepted += int(accepted)
            upload = Upload(
                f"courier-{int(device)}",
                f"d{int(device)}-{int(seq)}-{fixes - 1}",
                int(newest_ms),
                float(answered),
            )
            phase.uploads.append(upload)
            pending[(upload.courier, upload.fix_id)] = upload.acked_at
    await proc.wait()


async def poll_history(
    run: Run, pending: dict[tuple[str, str], float], stored: dict[tuple[str, str], float]
) -> None:
    """Every 100 ms: which pending newest fixes have their ``positions`` row now."""
    import psycopg

    query = (
        "SELECT courier_id, fix_id FROM positions WHERE org_id = %s"
        " AND (courier_id, fix_id) IN (SELECT * FROM unnest(%s::text[], %s::text[]))"
    )
    async with await psycopg.AsyncConnection.connect(
        database_url(run.settings), autocommit=True
    ) as conn:
        while True:
            keys = list(pending)[:20_000]
            if keys:
                cursor = await conn.execute(
                    query, (run.org, [k[0] for k in keys], [k[1] for k in keys])
                )
                now = time.time()
                for courier, fix_id in await cursor.fetchall():
                    if (courier, fix_id) in pending:
                        stored[(courier, fix_id)] = now
                        del pending[(courier, fix_id)]
            await asyncio.sleep(0.1)


async def stored_count(run: Run) -> int:
    import psycopg

    async with await psycopg.AsyncConnection.connect(database_url(run.settings)) as conn:
        cursor = await conn.execute("SELECT count(*) FROM positions WHERE org_id = %s", (run.org,))
        row = await cursor.fetchone()
        return int(row[0]) if row else 0


async def group_lag(settings: Settings, group: str, topics: Iterable[str]) -> int:
    """Records on ``topics`` beyond ``group``'s committed offsets."""
    from aiokafka import TopicPartition

    admin = admin_client(settings)
    consumer = create_consumer(settings, group_id=None)
    await admin.start()
    await consumer.start()
    try:
        committed = await admin.list_consumer_group_offsets(group)
        tps = [TopicPartition(t, p) for t in topics for p in consumer.partitions_for_topic(t) or ()]
        ends = await consumer.end_offsets(tps)
        return sum(
            end - (committed[tp].offset if tp in committed and committed[tp].offset >= 0 else 0)
            for tp, end in ends.items()
        )
    finally:
        await consumer.stop()
        await admin.close()


def scrape_histogram(text: str, name: str) -> dict[float, float]:
    """Cumulative bucket counts of one histogram in a Prometheus text page (labels summed)."""
    buckets: dict[float, float] = {}
    for line in text.splitlines():
        if line.startswith(f"{name}_bucket"):
            le = line.split('le="', 1)[1].split('"', 1)[0]
            bound = float("inf") if le == "+Inf" else float(le)
            buckets[bound] = buckets.get(bound, 0.0) + float(line.rsplit(" ", 1)[1])
    return buckets


def bucket_quantile(buckets: dict[float, float], q: float) -> float:
    """The upper bound of the bucket holding quantile ``q`` (what the histogram can say)."""
    if not buckets:
        return float("nan")
    total = buckets.get(float("inf"), max(buckets.values()))
    for bound in sorted(buckets):
        if buckets[bound] >= q * total:
            return bound
    return float("inf")


async def metrics_page(url: str) -> str:
    import aiohttp

    with contextlib.suppress(aiohttp.ClientError):
        async with aiohttp.ClientSession() as session, session.get(url) as response:
            return await response.text()
    return ""


@contextlib.asynccontextmanager
async def pipeline(devices: int, workers: int) -> AsyncIterator[tuple[Run, Path]]:
    """The four services on the run's own topics, ``devices`` enrolled, the dispatcher on."""
    from ingest.tokens import TokenStore
    from sinks.api.auth import create_dispatcher

    tag = uuid.uuid4().hex[:8]
    base = get_settings()
    # the services' logs stay for a look afterwards (git-ignored); their state does not
    workdir = base.stack_dir / "bench-e2e" / tag
    workdir.mkdir(parents=True)
    print(f"services' logs: {workdir}", flush=True)
    settings = base.model_copy(
        update={
            "topic_prefix": f"bench.{tag}.",
            "ingest_port": free_port(),
            "api_port": free_port(),
            "worker_metrics_port": free_port(),
            "sink_metrics_port": free_port(),
            "worker_data_dir": workdir / "worker",
            "sink_group_id": f"bench-{tag}-sink",
            "ingest_rate_per_s": 1e6,
            "ingest_rate_burst": 1e6,
        }
    )
    run = Run(settings, f"e2e-{tag}", workdir)
    await create_topics(settings)
    pool = create_pool(settings)
    await pool.open()
    store = TokenStore(pool)
    tokens_file = workdir / "tokens"
    watcher: asyncio.Task[None] | None = None
    try:
        # the burst's couriers are others than the steady load's: fresh couriers with a backlog
        tokens = await store.create_many(
            run.org, [(f"courier-{i}", f"device-{i}") for i in range(devices + BURST_COURIERS)]
        )
        tokens_file.write_text("\n".join(tokens[:devices]) + "\n")
        run.burst_tokens.write_text("\n".join(tokens[devices:]) + "\n")
        async with pool.connection() as conn:
            dispatcher = await create_dispatcher(conn, run.org, "bench-e2e")
        for name in SERVICES:
            for index in range(workers if name == "worker" else 1):
                run.start(name, index)
        await wait_ready(run.gateway, run.processes["ingest"])
        await wait_ready(run.api, run.processes["api"])
        watcher = asyncio.create_task(watch_live(run, dispatcher))
        await asyncio.wait_for(run.live_ready.wait(), 60)
        yield run, tokens_file
    finally:
        if watcher is not None:
            watcher.cancel()
        for process in run.processes.values():
            process.terminate()
        for process in run.processes.values():
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()
        await cleanup(run, store)
        await pool.close()
        shutil.rmtree(settings.worker_data_dir, ignore_errors=True)


async def cleanup(run: Run, store: Any) -> None:
    """The run's org out of every table, its topics and groups off the broker."""
    import psycopg

    await store.delete_org(run.org)
    async with await psycopg.AsyncConnection.connect(database_url(run.settings)) as conn:
        for table in (
            "positions",
            "latest_positions",
            "stops",
            "trips",
            "courier_events",
            "dispatcher_tokens",
        ):
            with contextlib.suppress(psycopg.Error):
                async with conn.transaction():
                    await conn.execute(f"DELETE FROM {table} WHERE org_id = %s", (run.org,))
    admin = admin_client(run.settings)
    await admin.start()
    try:
        names = [t for t in await admin.list_topics() if t.startswith(run.settings.topic_prefix)]
        with contextlib.suppress(Exception):
            await admin.delete_topics(names)
    finally:
        await admin.close()


async def warm_up(run: Run, tokens_file: Path, devices: int) -> None:
    """One upload per device, until all are stored: connections, assignment, caches."""
    phase = Phase()
    args = ["--fixes", "1", "--period", "0", "--uploads", str(devices)]
    already = await stored_count(run)
    await generate(run, tokens_file, args, phase, {})
    deadline = time.monotonic() + 120
    while await stored_count(run) - already < phase.accepted:
        if time.monotonic() > deadline:
            raise RuntimeError("the warm-up uploads were not all stored within 120 s")
        await asyncio.sleep(0.2)


async def steady(
    run: Run, tokens_file: Path, devices: int, fixes: int, period: float, duration: float
) -> Phase:
    phase = Phase()
    pending: dict[tuple[str, str], float] = {}
    poller = asyncio.create_task(poll_history(run, pending, phase.stored_at))
    before = run.cpu()
    began = time.monotonic()
    args = ["--fixes", str(fixes), "--period", str(period), "--duration", str(duration)]
    args += ["--connections", str(min(64, max(4, devices // 100)))]
    await generate(run, tokens_file, args, phase, pending)
    phase.seconds = time.monotonic() - began
    settle = time.monotonic() + 30
    while pending and time.monotonic() < settle:  # noqa: ASYNC110 (the poller empties it)
        await asyncio.sleep(0.2)
    after = run.cpu()
    poller.cancel()
    phase.cpu = {name: after[name] - before.get(name, 0.0) for name in after}
    return phase


async def restart_worker(
    run: Run, tokens_file: Path, devices: int, fixes: int, period: float
) -> float:
    """SIGKILL the (first) worker under load, start it again: seconds from its start until
    every partition of fixes.raw has live updates again (with more workers, the others' go
    on all along; the killed one's must come back)."""
    from aiokafka.partitioner import DefaultPartitioner

    partitions = list(range(run.settings.worker_partitions))
    partition_of = DefaultPartitioner()
    phase = Phase()
    args = ["--fixes", str(fixes), "--period", str(period), "--duration", "60"]
    args += ["--connections", str(min(64, max(4, devices // 100)))]
    load = asyncio.create_task(generate(run, tokens_file, args, phase, {}))
    await asyncio.sleep(15)
    run.processes["worker"].send_signal(signal.SIGKILL)
    run.processes["worker"].wait()
    restarted = time.time()
    run.start("worker")
    first_live: dict[int, float] = {}
    deadline = time.monotonic() + 180
    seen = 0
    while len(first_live) < len(partitions) and time.monotonic() < deadline:
        for upload in phase.uploads[seen:]:
            key = (upload.courier, upload.newest_ms)
            if upload.acked_at <= restarted or key not in run.live:
                continue
            part = partition_of(f"{run.org}/{upload.courier}".encode(), partitions, partitions)
            first_live[part] = min(first_live.get(part, float("inf")), run.live[key])
        # uploads still on their way stay in the list; look again from the oldest of them
        while seen < len(phase.uploads) and (
            phase.uploads[seen].acked_at <= restarted
            or (phase.uploads[seen].courier, phase.uploads[seen].newest_ms) in run.live
        ):
            seen += 1
        await asyncio.sleep(0.1)
    await load
    if len(first_live) < len(partitions):
        return float("nan")
    return max(first_live.values()) - restarted


async def restart_serving(run: Run, name: str, url: str) -> float:
    """SIGKILL a service with a ``/readyz``, start it again: seconds until it is ready."""
    run.processes[name].send_signal(signal.SIGKILL)
    run.processes[name].wait()
    began = time.monotonic()
    await wait_ready(url, run.start(name))
    return time.monotonic() - began


async def burst(run: Run, total: int) -> tuple[Phase, float]:
    """``total`` fixes from 400 couriers not seen before, in uploads of 20, as fast as the
    gateway takes them: fixes/s from the first accept to the last row stored."""
    phase = Phase()
    already = await stored_count(run)
    began = time.time()
    before = run.cpu()
    uploads = total // BURST_UPLOAD
    args = ["--fixes", str(BURST_UPLOAD), "--period", "0", "--uploads", str(uploads)]
    await generate(run, run.burst_tokens, [*args, "--connections", "32"], phase, {})
    first_ack = min((u.acked_at for u in phase.uploads), default=began)
    phase.accept_s = max((u.acked_at for u in phase.uploads), default=began) - first_ack
    deadline = time.monotonic() + 300
    stored_at = float("nan")
    while time.monotonic() < deadline:
        stored = await stored_count(run) - already
        if stored >= phase.accepted:
            stored_at = time.time()
            break
        await asyncio.sleep(0.25)
    else:
        print(f"burst: {stored:,} of {phase.accepted:,} accepted fixes stored after 300 s")
    after = run.cpu()
    phase.cpu = {name: after[name] - before.get(name, 0.0) for name in after}
    phase.seconds = stored_at - first_ack
    return phase, phase.accepted / phase.seconds


def report(
    args: argparse.Namespace, result: BenchResult, phase: Phase, run: Run, pages: dict[str, str]
) -> None:
    acked = phase.uploads
    live = [
        run.live[(u.courier, u.newest_ms)] - u.acked_at
        for u in acked
        if (u.courier, u.newest_ms) in run.live
    ]
    history = [
        phase.stored_at[(u.courier, u.fix_id)] - u.acked_at
        for u in acked
        if (u.courier, u.fix_id) in phase.stored_at
    ]
    offered = args.devices * args.fixes / args.period
    posts = sum(phase.statuses.values())
    result.add("worker processes", args.workers, "")
    result.add("devices", args.devices, "")
    result.add("fixes per upload, seconds between uploads", args.fixes, f"every {args.period:g} s")
    result.add("offered", offered, "fixes/s")
    result.add("accepted", phase.accepted / phase.seconds, "fixes/s")
    result.add("posts", posts, "")
    for status, count in sorted(phase.statuses.items()):
        if status != 200:
            result.add(f"posts answered {status or 'with no answer'}", count, "")
    result.add("uploads whose newest fix never reached /v1/live", len(acked) - len(live), "")
    result.add("uploads whose newest fix was not stored within 30 s", len(acked) - len(history), "")
    # /v1/live reads the worker's output as it is written: from there on it is commit and sink
    after_live = [
        phase.stored_at[(u.courier, u.fix_id)] - run.live[(u.courier, u.newest_ms)]
        for u in acked
        if (u.courier, u.fix_id) in phase.stored_at and (u.courier, u.newest_ms) in run.live
    ]
    for label, samples in (
        ("200 -> /v1/live", live),
        ("200 -> positions row", history),
        ("/v1/live -> positions row (worker commit, sink)", after_live),
    ):
        result.add(f"{label} p50", percentile(samples, 0.5), "s")
        result.add(f"{label} p99", percentile(samples, 0.99), "s")
        result.add(f"{label} max", max(samples, default=float("nan")), "s")
    hops = (
        ("gateway: request -> Kafka ack", pages["ingest"], "geostream_ingest_produce_seconds"),
        ("worker: received_at -> emitted", pages["worker"], "geostream_processor_latency_seconds"),
        ("sink: received_at -> committed", pages["sink"], "geostream_sink_end_to_end_seconds"),
    )
    for label, page, metric in hops:
        buckets = scrape_histogram(page, metric)
        result.add(f"{label} p50 (bucket bound)", bucket_quantile(buckets, 0.5), "s")
        result.add(f"{label} p99 (bucket bound)", bucket_quantile(buckets, 0.99), "s")
    for name, seconds in phase.cpu.items():
        result.add(f"CPU per 1,000 fixes: {name}", 1000 * seconds / max(1, phase.accepted), "s")
    result.add(
        "CPU per 1,000 fixes: load generator",
        1000 * phase.generator_cpu_s / max(1, phase.accepted),
        "s",
    )


async def measure(args: argparse.Namespace) -> BenchResult:
    name, title = "e2e", "The whole pipeline, devices to dispatcher"
    if args.workers > 1:  # its own section, beside the one-worker run
        name, title = f"e2e-{args.workers}-workers", f"{title}, {args.workers} workers"
    result = BenchResult(name, title)
    async with pipeline(args.devices, args.workers) as (run, tokens_file):
        await warm_up(run, tokens_file, args.devices)
        phase = await steady(run, tokens_file, args.devices, args.fixes, args.period, args.duration)
        pages = {
            "ingest": await metrics_page(f"{run.gateway}/metrics"),
            "worker": await metrics_page(
                f"http://127.0.0.1:{run.settings.worker_metrics_port}/metrics"
            ),
            "sink": await metrics_page(
                f"http://127.0.0.1:{run.settings.sink_metrics_port}/metrics"
            ),
        }
        report(args, result, phase, run, pages)
        from processors.app import app_id

        result.add(
            "worker lag on fixes.raw after the load",
            await group_lag(
                run.settings, app_id(run.settings), [topic_name(run.settings, "fixes.raw")]
            ),
            "records",
        )
        if args.restart:
            resumed = await restart_worker(run, tokens_file, args.devices, args.fixes, args.period)
            result.add("worker SIGKILLed under load: its start -> live updates again", resumed, "s")
            for name, url in (("ingest", run.gateway), ("api", run.api)):
                ready = await restart_serving(run, name, url)
                result.add(f"{name} SIGKILLed: its start -> /readyz 200", ready, "s")
        if args.burst:
            drained, rate = await burst(run, args.burst)
            result.add(
                f"burst: {drained.accepted:,} fixes from {BURST_COURIERS} couriers, "
                f"uploads of {BURST_UPLOAD}",
                rate,
                "fixes/s end to end",
            )
            result.add("burst: the gateway's first accept -> its last", drained.accept_s, "s")
            result.add(
                "burst: the gateway's first accept -> the last row stored", drained.seconds, "s"
            )
            for name, seconds in drained.cpu.items():
                result.add(
                    f"burst CPU per 1,000 fixes: {name}",
                    1000 * seconds / max(1, drained.accepted),
                    "s",
                )
    result.notes.append(
        "latencies are of each acknowledged upload's newest fix, from the gateway's 200 as the "
        "generator saw it; positions rows are polled every 100 ms"
    )
    result.notes.append(
        "gateway, worker, sink, API, Kafka, PostgreSQL and the generator share this machine's cores"
    )
    result.notes.append(
        "goals: /v1/live p99 <= 1 s, positions p99 <= 2 s, no refusals below saturation, "
        "burst >= 20,000 fixes/s, restart <= 10 s"
    )
    return result


def register(benches: Any) -> None:
    parser = benches.add_parser("e2e", help="the whole pipeline: devices to dispatcher")
    parser.add_argument("--devices", type=int, default=10_000, help="phones posting")
    parser.add_argument("--fixes", type=int, default=5, help="fixes per upload")
    parser.add_argument(
        "--period", type=float, default=10.0, help="seconds between a phone's uploads"
    )
    parser.add_argument("--duration", type=float, default=60.0, help="seconds of steady load")
    parser.add_argument("--workers", type=int, default=1, help="worker processes")
    parser.add_argument("--burst", type=int, default=200_000, help="fixes of the burst (0: none)")
    parser.add_argument(
        "--restart",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="kill and restart the worker under load",
    )
    parser.set_defaults(bench_function=_run)


def _run(args: argparse.Namespace) -> BenchResult:
    return asyncio.run(measure(args))

"""A lean device load generator for ``geostream bench e2e``, run in a process of its own.

Phones post a few fixes every 10-30 s. This process plays N of them: device ``i`` posts its
``fixes`` newest fixes every ``period_s``, at a phase spread evenly over the period, through a
few keep-alive HTTP/1.1 connections written by hand (an HTTP client library cost about 0.8 of
a core at 1,000 requests/s; this costs a fraction of that, so the figures are the pipeline's).
A burst (``period_s`` 0) posts every upload as fast as the connections take them.

Each answer is one line on stdout, read live by the bench:
``status device seq newest_ts_ms answered_at accepted`` (``answered_at`` in Unix seconds; the
upload's newest fix is ``d{device}-{seq}-{fixes - 1}``), and the last line is ``cpu SECONDS``
(this process's own CPU time).
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import sys
import time
from collections.abc import Sequence

import orjson

#: Fixes of a device are this many seconds apart at the most (a phone's background rate).
FIX_SPACING_MAX_S = 5.0


def upload_body(
    device: int, seq: int, count: int, newest_ms: int, spacing_ms: int, epoch_ms: int
) -> bytes:
    """``count`` fixes of device ``device`` ending at ``newest_ms``: a courier driving east at
    about 1 m/s from where it was at ``epoch_ms``."""
    fixes = []
    for k in range(count):
        ts = newest_ms - (count - 1 - k) * spacing_ms
        fixes.append(
            {
                "fix_id": f"d{device}-{seq}-{k}",
                "ts": ts,
                "lat": 43.0 + (device % 1000) * 1e-3,
                "lon": 76.0 + (device // 1000) * 1e-2 + (ts - epoch_ms) * 1e-8,
                "accuracy_m": 8.0,
            }
        )
    return orjson.dumps({"fixes": fixes})


def request(token: bytes, body: bytes) -> bytes:
    return b"".join(
        (
            b"POST /v1/fixes HTTP/1.1\r\nHost: gateway\r\nContent-Type: application/json\r\n",
            b"Authorization: Bearer ",
            token,
            b"\r\nContent-Length: ",
            str(len(body)).encode(),
            b"\r\n\r\n",
            body,
        )
    )


def content_length(head: bytes) -> int:
    for line in head.split(b"\r\n"):
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return int(value)
    return 0


class Generator:
    def __init__(
        self,
        host: str,
        port: int,
        tokens: Sequence[bytes],
        fixes: int,
        period_s: float,
        epoch_ms: int,
        first_seq: int = 0,
    ) -> None:
        self.epoch_ms = epoch_ms
        self.host = host
        self.port = port
        self.tokens = tokens
        self.fixes = fixes
        self.period_s = period_s
        spacing = min(FIX_SPACING_MAX_S, period_s / fixes) if period_s else 1.0
        self.spacing_ms = int(spacing * 1000)
        self.queue: asyncio.Queue[tuple[int, int] | None] = asyncio.Queue()
        self.lines: list[str] = []
        self.seq = [first_seq] * len(tokens)  # each device's next upload number

    async def connection(self) -> None:
        reader, writer = await asyncio.open_connection(self.host, self.port)
        try:
            while (job := await self.queue.get()) is not None:
                device, newest_ms = job
                seq = self.seq[device]
                self.seq[device] = seq + 1
                body = upload_body(
                    device, seq, self.fixes, newest_ms, self.spacing_ms, self.epoch_ms
                )
                writer.write(request(self.tokens[device], body))
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                    answer = await reader.readexactly(content_length(head))
                except (asyncio.IncompleteReadError, ConnectionError):
                    self.lines.append(f"0 {device} {seq} {newest_ms} {time.time():.4f} 0\n")
                    writer.close()
                    reader, writer = await asyncio.open_connection(self.host, self.port)
                    continue
                status = int(head[9:12])
                accepted = orjson.loads(answer).get("accepted", 0) if status == 200 else 0
                answered = time.time()
                self.lines.append(
                    f"{status} {device} {seq} {newest_ms} {answered:.4f} {accepted}\n"
                )
        finally:
            writer.close()

    async def flush(self) -> None:
        while True:
            await asyncio.sleep(0.05)
            self.write_lines()

    def write_lines(self) -> None:
        if self.lines:
            lines, self.lines = self.lines, []
            sys.stdout.write("".join(lines))
            sys.stdout.flush()

    async def schedule(self, duration_s: float, uploads: int) -> None:
        """Queue each device's uploads on its own phase; a burst queues ``uploads`` at once."""
        n = len(self.tokens)
        if not self.period_s:
            now_ms = int(time.time() * 1000)
            for u in range(uploads):
                # each device's fixes are one long drive: upload u ends (u // n + 1) uploads in
                rounds = math.ceil(uploads / n)
                newest = now_ms - (rounds - u // n) * self.fixes * self.spacing_ms
                self.queue.put_nowait((u % n, newest))
            return
        began = time.monotonic()
        due = [i * self.period_s / n for i in range(n)]  # seconds after the start
        order = sorted(range(n), key=lambda i: due[i])
        while (elapsed := time.monotonic() - began) < duration_s:
            for i in order:
                if due[i] > elapsed:
                    continue
                self.queue.put_nowait((i, int(time.time() * 1000) - 1000))
                due[i] += self.period_s
            await asyncio.sleep(0.01)

    async def run(self, connections: int, duration_s: float, uploads: int) -> None:
        flusher = asyncio.create_task(self.flush())
        workers = [asyncio.create_task(self.connection()) for _ in range(connections)]
        await self.schedule(duration_s, uploads)
        for _ in workers:
            self.queue.put_nowait(None)
        await asyncio.gather(*workers)
        flusher.cancel()
        self.write_lines()
        times = os.times()
        sys.stdout.write(f"cpu {times.user + times.system:.3f}\n")
        sys.stdout.flush()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--tokens", required=True, help="file with one device token a line")
    parser.add_argument("--fixes", type=int, default=5, help="fixes per upload")
    parser.add_argument("--period", type=float, default=10.0, help="seconds between uploads")
    parser.add_argument("--duration", type=float, default=60.0, help="seconds of load")
    parser.add_argument("--uploads", type=int, default=0, help="burst: uploads in all")
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--epoch-ms", type=int, default=0, help="where the drives start")
    parser.add_argument("--first-seq", type=int, default=0, help="first upload number")
    args = parser.parse_args(argv)
    with open(args.tokens, "rb") as f:
        tokens = f.read().split()
    epoch_ms = args.epoch_ms or int(time.time() * 1000) - 86_400_000
    generator = Generator(
        args.host, args.port, tokens, args.fixes, args.period, epoch_ms, args.first_seq
    )
    try:
        import uvloop

        uvloop.run(generator.run(args.connections, args.duration, args.uploads))
    except ImportError:
        asyncio.run(generator.run(args.connections, args.duration, args.uploads))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""``geostream bench NAME``: throughput figures, printed and written to ``docs/benchmarks.md``.

Each part of the pipeline contributes benchmarks by listing a module in :data:`BENCH_MODULES`
with ``register(benches)``; a benchmark returns a :class:`BenchResult`, whose section in
docs/benchmarks.md is replaced, leaving the other benchmarks' sections as they were.
Benchmarks measure; tests never assert timings.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import platform
import re
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from config.settings import PROJECT_DIR

BENCH_MODULES: tuple[str, ...] = (
    "geostream.bench_kafka",
    "ingest.bench",
    "processors.bench",
    "sinks.bench",
    "sinks.api.bench",
    "geostream.bench_e2e",
)
DOC = PROJECT_DIR / "docs" / "benchmarks.md"
HEADER = """# Benchmarks

Written by `geostream bench NAME` (or `make bench` for all); each section is replaced by the
run that produced it. Figures are from the machine named in the section: compare ratios
(against the limit measured in the same run) rather than absolute numbers across machines.
"""


@dataclass
class BenchResult:
    """One run's figures: a table of (measure, value, unit) rows plus notes."""

    name: str
    title: str
    rows: list[tuple[str, float, str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def add(self, measure: str, value: float, unit: str) -> None:
        self.rows.append((measure, value, unit))

    def markdown(self) -> str:
        when = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
        python = platform.python_version()
        machine = f"{platform.machine()}, {os.cpu_count()} cores, Python {python}"
        lines = [
            f"<!-- bench:{self.name} -->",
            f"## {self.title} (`geostream bench {self.name}`)",
            "",
            f"Run {when} on {machine}.",
            "",
            "| measure | value | unit |",
            "| --- | ---: | --- |",
            *(f"| {m} | {_fmt(v)} | {u} |" for m, v, u in self.rows),
        ]
        if self.notes:
            lines += ["", *(f"- {note}" for note in self.notes)]
        lines.append(f"<!-- /bench:{self.name} -->")
        return "\n".join(lines) + "\n"

    def print(self) -> None:
        width = max((len(m) for m, _, _ in self.rows), default=10)
        print(self.title)
        for measure, value, unit in self.rows:
            print(f"  {measure:<{width}}  {_fmt(value):>14} {unit}")
        for note in self.notes:
            print(f"  note: {note}")


def process_cpu_s(pid: int) -> float:
    """User plus system CPU seconds process ``pid`` has used so far, all its threads (Linux
    /proc): what a benchmark divides by for a figure that does not depend on what else the
    machine runs."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _fmt(value: float) -> str:
    if not math.isfinite(value):  # nan: not measured
        return str(value)
    if abs(value) >= 100:
        return f"{value:,.0f}"
    return f"{value:,.3g}" if value != int(value) else f"{int(value):,}"


def write_section(result: BenchResult, doc: Path = DOC) -> None:
    """Replace (or append) the result's section in the benchmarks document."""
    text = doc.read_text() if doc.exists() else HEADER
    section = result.markdown()
    pattern = re.compile(
        rf"<!-- bench:{re.escape(result.name)} -->.*?<!-- /bench:{re.escape(result.name)} -->\n",
        re.S,
    )
    text = pattern.sub(lambda _: section, text) if pattern.search(text) else f"{text}\n{section}"
    doc.parent.mkdir(parents=True, exist_ok=True)
    doc.write_text(text)


BenchFunction = Callable[[argparse.Namespace], BenchResult]


async def wait_ready(base_url: str, process: subprocess.Popen[bytes], within_s: float = 60) -> None:
    """Wait until a service started for a benchmark answers ``/readyz`` with 200."""
    import aiohttp

    deadline = time.monotonic() + within_s
    async with aiohttp.ClientSession() as session:
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise RuntimeError(f"{process.args!r} exited with {process.returncode}")
            try:
                async with session.get(f"{base_url}/readyz") as response:
                    if response.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.2)
    raise RuntimeError(f"{base_url} was not ready within {within_s:.0f} s")


def register(commands: Any) -> None:
    import importlib

    bench = commands.add_parser("bench", help="benchmarks (figures go to docs/benchmarks.md)")
    benches = bench.add_subparsers(dest="bench", metavar="NAME")
    benches.add_parser("all", help="every benchmark in turn")
    for name in BENCH_MODULES:
        importlib.import_module(name).register(benches)
    bench.set_defaults(handler=run, bench_parsers=benches)


def run(args: argparse.Namespace) -> int:
    if args.bench in (None, "all"):
        choices: dict[str, argparse.ArgumentParser] = args.bench_parsers.choices
        for name, parser in choices.items():
            if name != "all":
                _run_one(parser.parse_args([]))
        return 0
    _run_one(args)
    return 0


def _run_one(args: argparse.Namespace) -> None:
    result: BenchResult = args.bench_function(args)
    result.print()
    write_section(result)
    print(f"  written to {DOC.relative_to(PROJECT_DIR)}")

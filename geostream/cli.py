"""The ``geostream`` command. Each part of the pipeline adds its own sub-commands.

A part contributes a module with ``register(commands)``, listed in :data:`COMMAND_MODULES`;
handlers import their heavy dependencies themselves, so ``geostream --help`` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence

COMMAND_MODULES = (
    "geostream.stack.commands",
    "geostream.commands",
    "schemas.commands",
    "geostream.admin",
    "geostream.serve",
    "geostream.bench",
    "ingest.commands",
    "sinks.commands",
    "processors.commands",
    "sinks.api.commands",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="geostream", description="Courier-tracking pipeline on Kafka and TimescaleDB."
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    status: int = args.handler(args)
    return status


if __name__ == "__main__":
    sys.exit(main())

"""``geostream schemas export [--check]``: the JSON Schema files from the record definitions."""

from __future__ import annotations

import argparse
from typing import Any


def register(commands: Any) -> None:
    schemas = commands.add_parser("schemas", help="wire contract (JSON Schema files)")
    actions = schemas.add_subparsers(dest="action", required=True, metavar="ACTION")
    export = actions.add_parser("export", help="regenerate schemas/json from schemas/records.py")
    export.add_argument("--check", action="store_true", help="only report drift; exit 1 if any")
    schemas.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from schemas.jsonschema import stale_files, write

    if args.check:
        stale = stale_files()
        for path in stale:
            print(f"stale: {path}")
        return 1 if stale else 0
    for path in write():
        print(f"wrote {path}")
    return 0

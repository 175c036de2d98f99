"""``geostream stack up | down | status [--json] | url | reset``."""

from __future__ import annotations

import argparse
import json
from typing import Any

from config.settings import get_settings
from geostream.db import database_url
from geostream.stack import Stack, StackError


def register(commands: Any) -> None:
    stack = commands.add_parser("stack", help="the local Kafka + PostgreSQL/TimescaleDB stack")
    actions = stack.add_subparsers(dest="action", required=True, metavar="ACTION")
    actions.add_parser("up", help="install, start, migrate, create topics (idempotent)")
    actions.add_parser("down", help="stop what `up` started")
    actions.add_parser("reset", help="stop and delete data (keeps jars and builds)")
    status = actions.add_parser("status", help="addresses and health; non-zero when down")
    status.add_argument("--json", action="store_true", help="machine-readable output")
    actions.add_parser("url", help="the owner's database URL, password included (a secret)")
    stack.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    stack = Stack(get_settings())
    try:
        if args.action == "status":
            return print_status(stack.status(), as_json=args.json)
        if args.action == "url":
            print(database_url(stack.settings))
            return 0
        changes = {"up": stack.up, "down": stack.down, "reset": stack.reset}[args.action]()
    except StackError as exc:
        print(f"geostream stack {args.action}: {exc}")
        return 1
    print("\n".join(changes) if changes else "nothing to do")
    if args.action == "up":
        return print_status(stack.status(), as_json=False)
    return 0


def print_status(status: dict[str, Any], *, as_json: bool) -> int:
    if as_json:
        print(json.dumps(status, indent=2))
    else:
        for name, health in status["services"].items():
            state = "up" if health.get("up") else f"DOWN ({health.get('error')})"
            print(f"{name:9} {state}")
        print(f"kafka_bootstrap  {status['kafka_bootstrap']}")
        print(f"database_url     {status['database_url']}")
    return 0 if status["healthy"] else 1

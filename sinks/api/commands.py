"""``geostream api`` and ``geostream admin create-dispatcher | revoke-dispatcher``."""

from __future__ import annotations

import argparse
import asyncio
import sys
from typing import Any

from config.settings import Settings, get_settings


def register(commands: Any) -> None:
    api = commands.add_parser("api", help="run the dispatcher API (uvicorn)")
    api.add_argument("--host", default=None, help="bind address (default: settings api_host)")
    api.add_argument("--port", type=int, default=None, help="port (default: settings api_port)")
    api.set_defaults(handler=run_api)


def run_api(args: argparse.Namespace) -> int:
    import uvicorn

    from sinks.api.app import create_app

    settings = get_settings()
    app = create_app(settings)
    config = uvicorn.Config(
        app,
        host=args.host or settings.api_host,
        port=settings.api_port if args.port is None else args.port,
        loop="uvloop",
        http="httptools",
        access_log=False,
        log_level="info",
        timeout_graceful_shutdown=10,
    )
    uvicorn.Server(config).run()
    return 0


def register_admin(actions: Any) -> None:
    create = actions.add_parser(
        "create-dispatcher", help="issue a dispatcher token for the API (printed once)"
    )
    create.add_argument("--org", required=True, help="the dispatcher's organisation")
    create.add_argument(
        "--name",
        default="dispatcher",
        help="dispatcher name, unique in the org (default: %(default)s)",
    )
    create.add_argument(
        "--operator",
        action="store_true",
        help="may also export and delete couriers' data (privacy requests)",
    )
    create.add_argument(
        "--rotate", action="store_true", help="revoke the dispatcher's live token first"
    )
    create.set_defaults(handler=run_create)

    revoke = actions.add_parser("revoke-dispatcher", help="revoke a dispatcher's token")
    revoke.add_argument("--org", required=True, help="the dispatcher's organisation")
    which = revoke.add_mutually_exclusive_group(required=True)
    which.add_argument("--name", help="revoke this dispatcher's live token")
    which.add_argument("--token", help="revoke this token")
    revoke.set_defaults(handler=run_revoke)


async def _create(settings: Settings, args: argparse.Namespace) -> str:
    import psycopg

    from geostream.db import database_url
    from sinks.api.auth import create_dispatcher

    async with await psycopg.AsyncConnection.connect(database_url(settings)) as conn:
        return await create_dispatcher(
            conn, args.org, args.name, is_operator=args.operator, rotate=args.rotate
        )


async def _revoke(settings: Settings, args: argparse.Namespace) -> int:
    import psycopg

    from geostream.db import database_url
    from sinks.api.auth import revoke_dispatcher

    async with await psycopg.AsyncConnection.connect(database_url(settings)) as conn:
        return await revoke_dispatcher(conn, args.org, dispatcher_id=args.name, token=args.token)


def run_create(args: argparse.Namespace) -> int:
    from sinks.api.auth import DispatcherError

    try:
        token = asyncio.run(_create(get_settings(), args))
    except DispatcherError as exc:
        print(f"geostream admin create-dispatcher: {exc}", file=sys.stderr)
        return 2
    role = "operator" if args.operator else "dispatcher"
    print(f"{role} {args.name!r} of org {args.org!r}: token below (shown once, stored hashed)")
    print("use it as: Authorization: Bearer <token>")
    print(token)
    return 0


def run_revoke(args: argparse.Namespace) -> int:
    from sinks.api.auth import DispatcherError

    try:
        count = asyncio.run(_revoke(get_settings(), args))
    except DispatcherError as exc:
        print(f"geostream admin revoke-dispatcher: {exc}", file=sys.stderr)
        return 2
    print(f"revoked {count} live token(s)")
    return 0 if count else 1

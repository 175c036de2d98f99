"""CLI of the ingest part: ``geostream ingest | simulate | replay`` and the device admin actions.

Handlers import their heavy dependencies themselves, so ``geostream --help`` stays fast.
"""

from __future__ import annotations

import argparse
import asyncio
import secrets
import sys
from typing import Any

from config.settings import get_settings


def register(commands: Any) -> None:
    ingest = commands.add_parser("ingest", help="run the device gateway (POST /v1/fixes)")
    ingest.add_argument("--host", help="bind address (default: setting ingest_host)")
    ingest.add_argument("--port", type=int, help="port (default: setting ingest_port)")
    ingest.set_defaults(handler=run_ingest)

    simulate = commands.add_parser("simulate", help="simulated couriers posting to the gateway")
    simulate.add_argument("--couriers", type=int, default=10, help="how many couriers")
    simulate.add_argument(
        "--interval", type=float, default=5.0, help="seconds between a courier's fixes"
    )
    simulate.add_argument(
        "--duration", type=float, default=0.0, help="seconds to run (0: until Ctrl-C)"
    )
    simulate.add_argument("--org", default="demo", help="org of the simulated couriers")
    simulate.add_argument("--seed", type=int, default=None, help="random seed (reproducible)")
    simulate.add_argument("--speedup", type=float, default=1.0, help="simulated s per real s")
    simulate.add_argument("--url", help="gateway URL (default: from settings)")
    simulate.set_defaults(handler=run_simulate)

    replay = commands.add_parser("replay", help="replay a CSV or GPX trace through the gateway")
    replay.add_argument("file", help="CSV (courier_id,ts,lat,lon,...) or GPX file")
    replay.add_argument("--org", required=True, help="org the couriers belong to")
    pace = replay.add_mutually_exclusive_group()
    pace.add_argument("--speed", type=float, default=1.0, help="replay speed factor (1: real)")
    pace.add_argument("--max", action="store_true", help="as fast as the gateway takes it")
    replay.add_argument("--batch", type=int, default=100, help="fixes per request")
    replay.add_argument(
        "--shift-to-now",
        action="store_true",
        help="move timestamps so the trace ends now (old traces would be ts_too_old)",
    )
    replay.add_argument("--url", help="gateway URL (default: from settings)")
    replay.set_defaults(handler=run_replay)


def register_admin(actions: Any) -> None:
    create = actions.add_parser(
        "create-device", help="issue a device token (printed as the last line)"
    )
    create.add_argument("--org", required=True)
    create.add_argument("--courier", required=True)
    create.add_argument("--device", help="device id (default: generated)")
    create.add_argument(
        "--rotate", action="store_true", help="revoke the device's live token first"
    )
    create.set_defaults(handler=run_create_device)

    revoke = actions.add_parser("revoke-device", help="revoke device tokens")
    revoke.add_argument("--org", required=True)
    which = revoke.add_mutually_exclusive_group(required=True)
    which.add_argument("--device", help="revoke this device's live token")
    which.add_argument("--courier", help="revoke every live token of this courier")
    which.add_argument("--token", help="revoke this token")
    revoke.set_defaults(handler=run_revoke_device)


def run_ingest(args: argparse.Namespace) -> int:
    from ingest.server import serve

    settings = get_settings()
    update: dict[str, object] = {}
    if args.host:
        update["ingest_host"] = args.host
    if args.port is not None:
        update["ingest_port"] = args.port
    if update:
        settings = settings.model_copy(update=update)
    print(
        f"geostream ingest on http://{settings.ingest_host}:{settings.ingest_port}",
        file=sys.stderr,
    )
    serve(settings)
    return 0


def run_create_device(args: argparse.Namespace) -> int:
    from ingest.devices import create_device
    from ingest.tokens import DeviceError

    device = args.device or f"dev-{secrets.token_hex(4)}"
    try:
        token = asyncio.run(
            create_device(get_settings(), args.org, args.courier, device, rotate=args.rotate)
        )
    except DeviceError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"org {args.org} courier {args.courier} device {device}")
    print("device token (shown once, stored only as a hash):")
    print(token)
    return 0


def run_revoke_device(args: argparse.Namespace) -> int:
    from ingest.devices import revoke_devices
    from ingest.tokens import DeviceError

    try:
        count = asyncio.run(
            revoke_devices(
                get_settings(),
                args.org,
                device_id=args.device,
                courier_id=args.courier,
                token=args.token,
            )
        )
    except DeviceError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"revoked {count} token(s)")
    return 0 if count else 1


def run_simulate(args: argparse.Namespace) -> int:
    from ingest.simulate_run import simulate

    return asyncio.run(simulate(get_settings(), args))


def run_replay(args: argparse.Namespace) -> int:
    from ingest.replay_run import replay

    return asyncio.run(replay(get_settings(), args))

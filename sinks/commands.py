"""``geostream sink``, ``geostream retention run`` and the sink's ``admin`` actions."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import getpass
import json
import logging
import signal
import sys
from typing import Any

from config.settings import get_settings

log = logging.getLogger("geostream.sink")


def register(commands: Any) -> None:
    sink = commands.add_parser("sink", help="write the Kafka topics to TimescaleDB (until stopped)")
    sink.set_defaults(handler=run_sink)

    retention = commands.add_parser("retention", help="data retention (config/retention.yaml)")
    actions = retention.add_subparsers(dest="action", required=True, metavar="ACTION")
    run = actions.add_parser("run", help="drop expired chunks and delete expired rows now")
    run.add_argument("--json", action="store_true", help="print the report as JSON")
    retention.set_defaults(handler=run_retention_command)

    maintain = commands.add_parser(
        "maintain", help="retention and the courier_daily refresh on their schedule, as the owner"
    )
    maintain.set_defaults(handler=run_maintain)


def run_maintain(args: argparse.Namespace) -> int:
    from config.retention import RetentionPolicy
    from sinks.maintenance import Maintenance
    from sinks.metrics import SinkMetrics

    settings = get_settings()
    maintenance = Maintenance(
        settings, RetentionPolicy.load(settings.retention_file), SinkMetrics()
    )
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(maintenance.run_forever())
    return 0


def run_sink(args: argparse.Namespace) -> int:
    from geostream.garbage import tune_gc
    from sinks.sink import Sink

    settings = get_settings()
    tune_gc()

    async def main() -> None:
        sink = Sink(settings)
        sink.metrics.serve(settings.sink_metrics_host, settings.sink_metrics_port)
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, sink.stop)
        await sink.run()

    from aiokafka.errors import KafkaError

    try:
        asyncio.run(main())
    except KafkaError as exc:
        print(
            f"error: Kafka at {settings.kafka_bootstrap}: {type(exc).__name__} {exc}"
            " (are the topics created? `geostream topics create`)",
            file=sys.stderr,
        )
        return 1
    return 0


def run_retention_command(args: argparse.Namespace) -> int:
    import psycopg

    from config.retention import RetentionPolicy
    from geostream.db import database_url
    from sinks.retention import run_retention

    settings = get_settings()

    async def main() -> dict[str, Any]:
        url = database_url(settings)
        async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
            report = await run_retention(conn, RetentionPolicy.load(settings.retention_file))
        return {
            "edition": report.edition,
            "now": report.now.isoformat(),
            "chunks_dropped": report.chunks_dropped,
            "rows_deleted": report.rows_deleted,
            "policies": report.policies,
        }

    result = asyncio.run(main())
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(f"TimescaleDB edition: {result['edition']} (now {result['now']})")
        for table, count in result["chunks_dropped"].items():
            print(f"  {table}: {count} chunks dropped")
        for table, count in result["rows_deleted"].items():
            print(f"  {table}: {count} rows deleted")
        for line in result["policies"]:
            print(f"  policy {line}")
    return 0


# -- admin actions ----------------------------------------------------------------------------


def register_admin(actions: Any) -> None:
    analyst = actions.add_parser(
        "create-analyst", help="a DB login that reads one org's rows (URL on the last line)"
    )
    analyst.add_argument("--org", required=True)
    analyst.set_defaults(handler=create_analyst_command)

    drop = actions.add_parser("drop-analyst", help="remove an analyst login")
    drop.add_argument("--role", required=True)
    drop.set_defaults(handler=drop_analyst_command)

    export = actions.add_parser("export-courier", help="all of a courier's data as JSON (9.7)")
    export.add_argument("--org", required=True)
    export.add_argument("--courier", required=True)
    export.add_argument("--out", help="write to this file instead of stdout")
    export.add_argument(
        "--format",
        choices=("json", "gpx", "csv", "geojson"),
        default="json",
        help="json: every row and the access audit; gpx, csv, geojson: the track (and stops)",
    )
    export.set_defaults(handler=export_courier_command)

    accesses = actions.add_parser("audit", help="who read a courier's data, and when (6.1)")
    accesses.add_argument("--org", required=True)
    accesses.add_argument("--courier", required=True)
    accesses.add_argument("--limit", type=int, default=1000, help="newest first (default 1000)")
    accesses.set_defaults(handler=audit_command)

    delete = actions.add_parser("delete-courier", help="delete all of a courier's data (9.7)")
    delete.add_argument("--org", required=True)
    delete.add_argument("--courier", required=True)
    delete.add_argument("--yes", action="store_true", help="confirm the deletion")
    delete.set_defaults(handler=delete_courier_command)


def create_analyst_command(args: argparse.Namespace) -> int:
    from sinks.isolation import IsolationError, create_analyst

    try:
        role, url = create_analyst(get_settings(), args.org)
    except IsolationError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"analyst role {role} reads only org {args.org!r} (row-level security)")
    print(url)
    return 0


def drop_analyst_command(args: argparse.Namespace) -> int:
    from sinks.isolation import drop_analyst

    if not drop_analyst(get_settings(), args.role):
        print(f"error: {args.role!r} is not an analyst role of this database", file=sys.stderr)
        return 1
    print(f"dropped {args.role}")
    return 0


def operator() -> str:
    """Who runs an admin command, as the audit and erasure records name them."""
    return f"admin:{getpass.getuser()}"


async def _with_owner(fn: Any, *fn_args: Any) -> Any:
    import psycopg

    from geostream.db import database_url

    url = database_url(get_settings())
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        return await fn(conn, *fn_args)


async def _export_recorded(conn: Any, org_id: str, courier_id: str, fmt: str) -> Any:
    """The courier's export, recorded in the access audit as the operator's read."""
    from config.retention import RetentionPolicy
    from sinks import audit
    from sinks.privacy import export_courier

    document = await export_courier(conn, org_id, courier_id)
    policy = RetentionPolicy.load(get_settings().retention_file)
    await audit.record(conn, policy, org_id, courier_id, operator(), "export", {"format": fmt})
    return document


def export_courier_command(args: argparse.Namespace) -> int:
    from sinks.isolation import IsolationError

    try:
        document = asyncio.run(_with_owner(_export_recorded, args.org, args.courier, args.format))
    except IsolationError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.format == "json":
        text = json.dumps(document, indent=1, default=str)
    else:
        from sinks import formats
        from sinks.privacy import export_track

        text = formats.render(args.format, args.courier, *export_track(document))
    if args.out:
        with open(args.out, "w") as out:
            out.write(text)
        print(f"exported {document['counts']} to {args.out}")
    else:
        print(text)
    return 0


def audit_command(args: argparse.Namespace) -> int:
    from sinks import audit
    from sinks.isolation import IsolationError, check_org

    try:
        check_org(args.org)
    except IsolationError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    items = asyncio.run(_with_owner(audit.read, args.org, args.courier, args.limit))
    with contextlib.suppress(BrokenPipeError):
        for item in items:
            print(json.dumps(item, default=str))
    return 0


def delete_courier_command(args: argparse.Namespace) -> int:
    from aiokafka.errors import KafkaError

    from sinks.isolation import IsolationError, check_org

    if not args.yes:
        print("error: deleting is irreversible; add --yes to confirm", file=sys.stderr)
        return 2
    try:
        check_org(args.org)
        document = asyncio.run(_with_owner(_erase, args.org, args.courier))
    except IsolationError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except (KafkaError, OSError) as exc:
        print(f"error: the data is deleted and the request recorded, but Kafka did not take it"
              f" ({exc!r}); run the command again", file=sys.stderr)  # fmt: skip
        return 1
    with contextlib.suppress(BrokenPipeError):
        print(json.dumps({"courier_id": args.courier, **document}))
    return 0


async def _erase(conn: Any, org_id: str, courier_id: str) -> dict[str, Any]:
    """The erasure on the owner's connection (see :mod:`sinks.erasure`); returns the receipt."""
    from config.retention import RetentionPolicy
    from geostream.kafka import create_producer, topic_specs
    from sinks import erasure

    settings = get_settings()
    policy = RetentionPolicy.load(settings.retention_file)
    erased = await erasure.erase_in_database(
        conn, settings, policy, org_id, courier_id, operator(), as_api=False
    )
    producer = create_producer(settings, client_id="geostream-admin")
    await producer.start()
    try:
        await erasure.publish(producer, settings, erased)
    finally:
        await producer.stop()
    document = erasure.receipt(erased, topic_specs(settings))
    await erasure.store_receipt(conn, erased.request_id, document, as_api=False)
    return document

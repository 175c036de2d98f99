"""``geostream db migrate`` and ``geostream topics create | list``."""

from __future__ import annotations

import argparse
import asyncio
from typing import Any

from config.settings import get_settings


def register(commands: Any) -> None:
    db = commands.add_parser("db", help="database schema")
    db_actions = db.add_subparsers(dest="action", required=True, metavar="ACTION")
    db_actions.add_parser("migrate", help="apply pending migrations")
    db_actions.add_parser(
        "roles", help="give the service roles their logins and passwords (after migrate)"
    )
    db.set_defaults(handler=run_db)

    topics = commands.add_parser("topics", help="Kafka topics from config/topics.yaml")
    topic_actions = topics.add_subparsers(dest="action", required=True, metavar="ACTION")
    create = topic_actions.add_parser("create", help="create topics and align their configs")
    create.add_argument("names", nargs="*", help="logical topic names (default: all)")
    topic_actions.add_parser("list", help="configured topics and their broker configs")
    topics.set_defaults(handler=run_topics)

    settings = commands.add_parser("settings", help="the effective settings")
    settings.add_argument(
        "--update-readme", action="store_true", help="rewrite the README's settings table"
    )
    settings.set_defaults(handler=run_settings)


def run_db(args: argparse.Namespace) -> int:
    from geostream.db import database_url
    from sinks.migrate import migrate

    if args.action == "roles":
        from geostream.db import SERVICE_ROLES, enable_service_logins

        enabled = enable_service_logins(get_settings())
        for role in SERVICE_ROLES.values():
            print(f"{role}: {'login enabled' if role in enabled else 'no password configured'}")
        return 0 if len(enabled) == len(SERVICE_ROLES) else 1
    applied = migrate(database_url(get_settings()))
    for migration in applied:
        print(f"applied {migration.version:04d}_{migration.name}")
    if not applied:
        print("database is up to date")
    return 0


def run_topics(args: argparse.Namespace) -> int:
    from geostream.kafka import create_topics, topic_name, topic_specs

    settings = get_settings()
    if args.action == "list":
        for spec in topic_specs(settings).values():
            configs = " ".join(f"{k}={v}" for k, v in spec.broker_config().items())
            print(f"{topic_name(settings, spec.name)}  partitions={spec.partitions}  {configs}")
        return 0
    result = asyncio.run(create_topics(settings, args.names or None))
    for name, state in result.items():
        print(f"{name}: {state}")
    return 0


def run_settings(args: argparse.Namespace) -> int:
    from config.docs import readme_with_table
    from config.settings import PROJECT_DIR, is_secret
    from geostream.db import redact

    if args.update_readme:
        readme = PROJECT_DIR / "README.md"
        readme.write_text(readme_with_table(readme.read_text()))
        print(f"updated {readme}")
        return 0
    for name, value in get_settings().model_dump().items():
        shown = "***" if is_secret(name) and value else redact(str(value))
        print(f"GEOSTREAM_{name.upper()}={shown}")
    return 0

"""The local stack: Kafka, PostgreSQL, PostGIS and TimescaleDB on loopback, without Docker.

``geostream stack up`` installs what is missing (Debian packages, Kafka jars, a TimescaleDB
build), starts both servers, applies the migrations and creates the topics. Every step checks
before it acts, so a second ``up`` changes nothing.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
import time
from dataclasses import dataclass, field
from typing import Any

from config.settings import Settings
from geostream.db import enable_service_logins, redact
from geostream.stack.kafka import KafkaNode
from geostream.stack.postgres import PostgresCluster
from geostream.stack.system import StackError, ensure_debian_packages, os_release, require_commands
from geostream.stack.timescaledb import ensure_timescaledb

log = logging.getLogger("geostream.stack")

__all__ = ["Stack", "StackError"]

DEFAULT_PG_VERSIONS = {"bookworm": 15, "trixie": 17}


@dataclass
class Stack:
    """The local services of one project checkout, rooted in ``settings.stack_dir``."""

    settings: Settings
    changes: list[str] = field(default_factory=list)

    @property
    def kafka(self) -> KafkaNode:
        _host, _, port = self.settings.kafka_bootstrap.split(",")[0].rpartition(":")
        return KafkaNode(
            root=self.settings.stack_dir / "kafka",
            version=self.settings.kafka_version,
            port=int(port),
            controller_port=int(port) + 1,
            heap=self.settings.kafka_heap,
        )

    @property
    def postgres(self) -> PostgresCluster:
        return PostgresCluster(
            root=self.settings.stack_dir / "postgres",
            version=self.pg_version,
            port=self.settings.postgres_port,
        )

    @property
    def pg_version(self) -> int:
        codename = os_release().get("VERSION_CODENAME", "")
        return self.settings.postgres_version or DEFAULT_PG_VERSIONS.get(codename, 15)

    def _did(self, changed: bool, what: str) -> None:
        if changed:
            self.changes.append(what)

    def install(self) -> None:
        """Debian packages, the TimescaleDB extension and the Kafka jars."""
        logs = self.settings.stack_dir / "logs"
        packages = [
            f"postgresql-{self.pg_version}",
            f"postgresql-{self.pg_version}-postgis-3",
            "openjdk-17-jre-headless",
            "maven",
        ]
        before = time.monotonic()
        ensure_debian_packages(packages, logs / "apt.log")
        require_commands("java", "mvn")
        version = ensure_timescaledb(
            self.pg_version, self.settings.stack_dir / "build" / "timescaledb", logs / "build.log"
        )
        log.debug("TimescaleDB %s ready after %.1fs", version, time.monotonic() - before)
        self._did(self.kafka.fetch(), "fetched Kafka jars")

    def up(self) -> list[str]:
        """Install, start, migrate and create topics; returns what changed (empty when up)."""
        from geostream.kafka import create_topics
        from sinks.migrate import migrate

        self.changes = []
        self.settings.stack_dir.mkdir(parents=True, exist_ok=True)
        self.install()
        pg = self.postgres
        self._did(pg.initialise(), "initialised PostgreSQL")
        self._did(pg.start(), "started PostgreSQL")
        pg.bootstrap()
        applied = migrate(pg.url())
        self._did(bool(applied), f"applied {len(applied)} migration(s)")
        enable_service_logins(self.settings, pg.url())
        kafka = self.kafka
        self._did(kafka.configure(), "formatted Kafka storage")
        self._did(kafka.start(), "started Kafka")
        asyncio.run(self._wait_for_kafka())
        topics = asyncio.run(create_topics(self.settings))
        created = [name for name, state in topics.items() if state == "created"]
        self._did(bool(created), f"created topics {', '.join(created)}")
        return self.changes

    async def _wait_for_kafka(self, within_s: float = 60.0) -> None:
        from geostream.kafka import broker_health

        deadline = time.monotonic() + within_s
        health: dict[str, object] = {}
        while time.monotonic() < deadline:
            health = await broker_health(self.settings.kafka_bootstrap, request_timeout_s=5)
            if health.get("up"):
                return
            await asyncio.sleep(0.5)
        raise StackError(
            f"Kafka is not answering: {health.get('error')}; see {self.kafka.log_file}"
        )

    def down(self) -> list[str]:
        """Stop what ``up`` started, by PID."""
        self.changes = []
        self._did(self.kafka.stop(), "stopped Kafka")
        self._did(self.postgres.stop(), "stopped PostgreSQL")
        return self.changes

    def reset(self) -> list[str]:
        """Stop and delete data and logs; keep the downloaded jars and the build."""
        changes = self.down()
        self.kafka.remove_data()
        self.postgres.remove()
        shutil.rmtree(self.settings.stack_dir / "logs", ignore_errors=True)
        return [*changes, "removed Kafka and PostgreSQL data"]

    def status(self) -> dict[str, Any]:
        """Addresses and health of each service, as ``stack status --json`` prints them."""
        from geostream.kafka import broker_health

        kafka = asyncio.run(broker_health(self.settings.kafka_bootstrap, request_timeout_s=3))
        kafka["pid_running"] = self.kafka.running()
        pg = self.postgres
        database = pg.health()
        url = pg.url() if pg.credentials_file.exists() else None
        return {
            "kafka_bootstrap": self.settings.kafka_bootstrap,
            # without the password: status is printed to terminals and logs (`stack url` has it)
            "database_url": redact(shown) if (shown := self.settings.database_url or url) else None,
            "stack_dir": str(self.settings.stack_dir),
            "services": {"kafka": kafka, "postgres": database},
            "healthy": bool(kafka.get("up")) and bool(database.get("up")),
        }

"""The project's own PostgreSQL cluster (PostGIS + TimescaleDB) on loopback."""

from __future__ import annotations

import hashlib
import json
import logging
import secrets
import shutil
from dataclasses import dataclass
from pathlib import Path

import psycopg
from psycopg import sql

from geostream.stack.system import (
    StackError,
    as_postgres,
    is_root,
    port_open,
    run,
    wait_for_port,
    write_private,
)

log = logging.getLogger("geostream.stack")

HOST = "127.0.0.1"
OWNER_ROLE = "geostream"
SINK_ROLE = "geostream_sink"
DATABASE = "geostream"
EXTENSIONS = ("timescaledb", "postgis")


@dataclass(frozen=True, slots=True)
class PostgresCluster:
    """A cluster in ``root`` listening on 127.0.0.1:``port``, run by the postgres OS user."""

    root: Path
    version: int
    port: int

    @property
    def bin_dir(self) -> Path:
        return Path(f"/usr/lib/postgresql/{self.version}/bin")

    @property
    def data_dir(self) -> Path:
        return self.home / "data"

    @property
    def home(self) -> Path:
        """Where the cluster lives: in the stack dir, if the postgres user can reach it."""
        if not is_root() or _traversable_by_postgres(self.root.parent):
            return self.root
        digest = hashlib.sha1(str(self.root).encode()).hexdigest()[:12]  # noqa: S324
        return Path("/var/lib/geostream") / digest

    @property
    def log_file(self) -> Path:
        return self.home / "postgres.log"

    @property
    def credentials_file(self) -> Path:
        return self.root / "credentials.json"

    def credentials(self) -> dict[str, str]:
        return dict(json.loads(self.credentials_file.read_text()))

    def service_password(self, role: str) -> str:
        """The password of a service's role, made (random) and kept on first use."""
        creds = self.credentials()
        if role not in creds:
            creds[role] = secrets.token_urlsafe(18)
            write_private(self.credentials_file, json.dumps(creds))
        return creds[role]

    def url(self, role: str = OWNER_ROLE, database: str = DATABASE) -> str:
        password = self.credentials()[role]
        return f"postgresql://{role}:{password}@{HOST}:{self.port}/{database}"

    def initialise(self) -> bool:
        """initdb with password authentication on loopback; False if it was already done."""
        if (self.data_dir / "PG_VERSION").exists():
            return False
        self.root.mkdir(parents=True, exist_ok=True)
        self.home.mkdir(parents=True, exist_ok=True)
        if not self.credentials_file.exists():
            creds = {"postgres": secrets.token_urlsafe(18), OWNER_ROLE: secrets.token_urlsafe(18)}
            write_private(self.credentials_file, json.dumps(creds))
        pwfile = self.home / ".pwfile"
        write_private(pwfile, self.credentials()["postgres"] + "\n")
        if is_root():
            shutil.chown(self.home, "postgres", "postgres")
            shutil.chown(pwfile, "postgres", "postgres")
        log.info("initialising PostgreSQL %s cluster in %s", self.version, self.data_dir)
        try:
            run(
                as_postgres(
                    [
                        self.bin_dir / "initdb",
                        "-D", self.data_dir,
                        "-U", "postgres",
                        "--pwfile", pwfile,
                        "--auth-local=peer",
                        "--auth-host=scram-sha-256",
                        "--encoding=UTF8",
                        "--locale=C.UTF-8",
                    ]
                ),
                log_file=self.home / "initdb.log",
            )  # fmt: skip
        finally:
            pwfile.unlink(missing_ok=True)
        run_dir = self.home / "run"
        run_dir.mkdir(exist_ok=True)
        if is_root():
            shutil.chown(run_dir, "postgres", "postgres")
        conf = self.data_dir / "postgresql.conf"
        with conf.open("a") as out:
            out.write(
                "\n# geostream local stack\n"
                f"listen_addresses = '{HOST}'\n"
                f"port = {self.port}\n"
                f"unix_socket_directories = '{run_dir}'\n"
                "shared_preload_libraries = 'timescaledb'\n"
                "timescaledb.telemetry_level = off\n"
                "max_connections = 200\n"
                "shared_buffers = 512MB\n"
                "max_wal_size = 2GB\n"
                "password_encryption = 'scram-sha-256'\n"
            )
        return True

    def running(self) -> bool:
        pid_file = self.data_dir / "postmaster.pid"
        return pid_file.exists() and port_open(HOST, self.port)

    def start(self) -> bool:
        """Start the server; False if it was already running."""
        if self.running():
            return False
        if port_open(HOST, self.port):
            raise StackError(f"port {self.port} is taken by another process")
        log.info("starting PostgreSQL on %s:%s", HOST, self.port)
        run(
            as_postgres(
                [self.bin_dir / "pg_ctl", "-D", self.data_dir, "-l", self.log_file, "-w",
                 "-t", "60", "start"]
            ),
            log_file=self.home / "pg_ctl.log",
        )  # fmt: skip
        wait_for_port(HOST, self.port, 30, "PostgreSQL", self.log_file)
        return True

    def stop(self) -> bool:
        if not (self.data_dir / "postmaster.pid").exists():
            return False
        log.info("stopping PostgreSQL")
        run(
            as_postgres([self.bin_dir / "pg_ctl", "-D", self.data_dir, "-m", "fast", "-w", "stop"]),
            log_file=self.home / "pg_ctl.log",
            check=False,
        )
        return True

    def bootstrap(self) -> None:
        """Owner role, database and extensions; idempotent.

        The extensions are created (by the superuser) in template1 as well, so every database
        made later, such as a test's own, has them without superuser rights.
        """
        admin_url = self.url("postgres", "postgres")
        with psycopg.connect(admin_url, autocommit=True) as conn:
            role = sql.Identifier(OWNER_ROLE)
            password = self.credentials()[OWNER_ROLE]
            exists = conn.execute(
                "SELECT 1 FROM pg_roles WHERE rolname = %s", (OWNER_ROLE,)
            ).fetchone()
            if exists is None:
                conn.execute(
                    sql.SQL("CREATE ROLE {} LOGIN CREATEDB CREATEROLE PASSWORD {}").format(
                        role, sql.Literal(password)
                    )
                )
            # The sink writes every org's rows; COPY into a table with row-level security
            # needs BYPASSRLS, which only a superuser may give (migration 0014 gives the rest).
            sink = sql.Identifier(SINK_ROLE)
            if conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (SINK_ROLE,)).fetchone():
                conn.execute(sql.SQL("ALTER ROLE {} BYPASSRLS").format(sink))
            else:
                conn.execute(sql.SQL("CREATE ROLE {} NOLOGIN BYPASSRLS").format(sink))
            for database in ("template1", DATABASE):
                if database == DATABASE:
                    has_db = conn.execute(
                        "SELECT 1 FROM pg_database WHERE datname = %s", (DATABASE,)
                    ).fetchone()
                    if has_db is None:
                        conn.execute(
                            sql.SQL("CREATE DATABASE {} OWNER {}").format(
                                sql.Identifier(DATABASE), role
                            )
                        )
                with psycopg.connect(self.url("postgres", database), autocommit=True) as db:
                    for extension in EXTENSIONS:
                        db.execute(
                            sql.SQL("CREATE EXTENSION IF NOT EXISTS {}").format(
                                sql.Identifier(extension)
                            )
                        )

    def health(self) -> dict[str, object]:
        """What a client sees: versions, extensions, TimescaleDB edition, hypertables."""
        if not self.credentials_file.exists():
            return {"up": False, "error": "not initialised"}
        try:
            with psycopg.connect(self.url(), connect_timeout=3) as conn:
                server = conn.execute("SHOW server_version").fetchone()
                extensions: dict[str, str] = dict(
                    conn.execute("SELECT extname, extversion FROM pg_extension").fetchall()
                )
                license_row = conn.execute("SHOW timescaledb.license").fetchone()
                hypertables = [
                    row[0]
                    for row in conn.execute(
                        "SELECT format('%I.%I', hypertable_schema, hypertable_name)"
                        " FROM timescaledb_information.hypertables ORDER BY 1"
                    )
                ]
        except psycopg.Error as exc:
            return {"up": False, "error": str(exc).strip()}
        return {
            "up": True,
            "server_version": server[0] if server else None,
            "extensions": extensions,
            "timescaledb_license": license_row[0] if license_row else None,
            "hypertables": hypertables,
        }

    def remove(self) -> None:
        shutil.rmtree(self.home, ignore_errors=True)
        shutil.rmtree(self.root, ignore_errors=True)


def _traversable_by_postgres(directory: Path) -> bool:
    """Whether the postgres user can reach ``directory`` (a clone under /root, say, it cannot)."""
    directory.mkdir(parents=True, exist_ok=True)
    result = run(["runuser", "-u", "postgres", "--", "test", "-x", directory], check=False)
    return result.returncode == 0

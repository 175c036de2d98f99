"""Database migrations: numbered SQL files in ``sinks/migrations``, applied once each, in order.

Each file runs in its own transaction together with its row in ``schema_migrations``, so a
failed migration leaves nothing half applied; an advisory lock keeps concurrent runs apart.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path

import psycopg

log = logging.getLogger("geostream.migrate")

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
LOCK_ID = 0x6765_6F73  # "geos"


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()


def load_migrations(directory: Path = MIGRATIONS_DIR) -> list[Migration]:
    """The migrations on disk, ordered; file names are ``NNNN_name.sql``."""
    migrations = []
    for path in sorted(directory.glob("*.sql")):
        number, _, name = path.stem.partition("_")
        migrations.append(Migration(int(number), name, path.read_text()))
    versions = [m.version for m in migrations]
    if len(set(versions)) != len(versions):
        raise ValueError(f"duplicate migration numbers in {directory}")
    return migrations


def migrate(url: str, directory: Path = MIGRATIONS_DIR) -> list[Migration]:
    """Apply the pending migrations; returns those applied. Refuses edited applied ones."""
    applied_now: list[Migration] = []
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("SELECT pg_advisory_lock(%s)", (LOCK_ID,))
        try:
            conn.execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations ("
                " version integer PRIMARY KEY, name text NOT NULL, checksum text NOT NULL,"
                " applied_at timestamptz NOT NULL DEFAULT now())"
            )
            done: dict[int, str] = dict(
                conn.execute("SELECT version, checksum FROM schema_migrations").fetchall()
            )
            for migration in load_migrations(directory):
                if migration.version in done:
                    if done[migration.version] != migration.checksum:
                        raise RuntimeError(
                            f"migration {migration.version}_{migration.name} was edited after "
                            "it was applied; add a new migration instead"
                        )
                    continue
                log.info("applying migration %04d_%s", migration.version, migration.name)
                with conn.transaction():
                    conn.execute(migration.sql.encode())
                    conn.execute(
                        "INSERT INTO schema_migrations (version, name, checksum)"
                        " VALUES (%s, %s, %s)",
                        (migration.version, migration.name, migration.checksum),
                    )
                applied_now.append(migration)
        finally:
            conn.execute("SELECT pg_advisory_unlock(%s)", (LOCK_ID,))
    return applied_now

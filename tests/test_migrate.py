"""Migrations against the real PostgreSQL: once each, in order, atomic, never edited."""

from __future__ import annotations

import shutil
from pathlib import Path

import psycopg
import pytest

from sinks.migrate import MIGRATIONS_DIR, load_migrations, migrate

pytestmark = pytest.mark.stack


def test_fixture_database_is_fully_migrated_and_a_rerun_applies_nothing(database_url: str) -> None:
    assert migrate(database_url) == []
    with psycopg.connect(database_url) as conn:
        versions = [r[0] for r in conn.execute("SELECT version FROM schema_migrations ORDER BY 1")]
    assert versions == [m.version for m in load_migrations()]


def test_an_edited_applied_migration_is_refused(database_url: str, tmp_path: Path) -> None:
    edited = tmp_path / "migrations"
    shutil.copytree(MIGRATIONS_DIR, edited)
    first = sorted(edited.glob("*.sql"))[0]
    first.write_text(first.read_text() + "\n-- edited\n")
    with pytest.raises(RuntimeError, match="edited after it was applied"):
        migrate(database_url, edited)


def test_a_failing_migration_leaves_nothing_behind(database_url: str, tmp_path: Path) -> None:
    broken = tmp_path / "migrations"
    shutil.copytree(MIGRATIONS_DIR, broken)
    (broken / "9999_broken.sql").write_text(
        "CREATE TABLE half_done (id int);\nSELECT * FROM no_such_table;\n"
    )
    with pytest.raises(psycopg.errors.UndefinedTable):
        migrate(database_url, broken)
    with psycopg.connect(database_url) as conn:
        assert conn.execute("SELECT to_regclass('half_done')").fetchone() == (None,)
        assert (
            conn.execute("SELECT 1 FROM schema_migrations WHERE version = 9999").fetchone() is None
        )

"""The stack's own promises: idempotent up, truthful status, down stops what up started.

A second, throw-away stack on other ports and in its own directory is brought up and down
here, so the shared stack the other tests use is never disturbed.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import psycopg
import pytest

from config.settings import get_settings
from geostream.db import redact
from geostream.stack import Stack
from geostream.stack.system import port_open

pytestmark = pytest.mark.stack


def run_cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "geostream.cli", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
        check=False,
    )


def test_second_up_of_the_shared_stack_changes_nothing(stack: Stack) -> None:
    assert stack.up() == []


def test_a_fresh_stack_comes_up_reports_and_goes_down(tmp_path: Path) -> None:
    import os

    env = {
        **os.environ,
        "GEOSTREAM_STACK_DIR": str(tmp_path / "stack"),
        "GEOSTREAM_KAFKA_BOOTSTRAP": "127.0.0.1:19092",
        "GEOSTREAM_POSTGRES_PORT": "55499",
    }
    try:
        first = run_cli("stack", "up", env=env)
        assert first.returncode == 0, first.stdout + first.stderr
        assert "started Kafka" in first.stdout
        assert "started PostgreSQL" in first.stdout

        status = run_cli("stack", "status", "--json", env=env)
        assert status.returncode == 0, status.stdout + status.stderr
        report = json.loads(status.stdout)
        assert report["kafka_bootstrap"] == "127.0.0.1:19092"
        assert report["services"]["kafka"]["up"] is True
        assert ":***@" in report["database_url"]  # status is for terminals: no password
        url = run_cli("stack", "url", env=env)
        assert url.returncode == 0, url.stderr
        assert redact(url.stdout.strip()) == report["database_url"]
        with psycopg.connect(url.stdout.strip()) as conn:
            extensions = {r[0] for r in conn.execute("SELECT extname FROM pg_extension")}
            hypertables = conn.execute(
                "SELECT count(*) FROM timescaledb_information.hypertables"
            ).fetchone()
        assert {"timescaledb", "postgis"} <= extensions
        assert hypertables is not None
        assert hypertables[0] >= 1

        second = run_cli("stack", "up", env=env)
        assert second.returncode == 0, second.stdout + second.stderr
        assert second.stdout.splitlines()[0] == "nothing to do"
    finally:
        down = run_cli("stack", "down", env=env)
    assert down.returncode == 0, down.stdout + down.stderr
    assert "stopped Kafka" in down.stdout
    assert "stopped PostgreSQL" in down.stdout
    assert not port_open("127.0.0.1", 19092)
    assert not port_open("127.0.0.1", 55499)

    after = run_cli("stack", "status", "--json", env=env)
    assert after.returncode != 0
    assert json.loads(after.stdout)["healthy"] is False
    assert run_cli("stack", "reset", env=env).returncode == 0


def test_status_of_the_shared_stack_is_healthy_json(stack: Stack) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "geostream.cli", "stack", "status", "--json"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["kafka_bootstrap"] == get_settings().kafka_bootstrap
    assert report["database_url"].startswith("postgresql://geostream:***@")
    assert report["services"]["postgres"]["timescaledb_license"] in {"apache", "timescale"}


def test_private_files_are_never_readable_by_others(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Created 0600 from the first byte (os.open's mode), and an existing file is narrowed."""
    import os

    from geostream.stack.system import write_private

    opened: list[int] = []
    real_open = os.open

    def recording_open(path: Any, flags: int, mode: int = 0o777, **kw: Any) -> int:
        opened.append(mode)
        return real_open(path, flags, mode, **kw)

    monkeypatch.setattr(os, "open", recording_open)
    old_umask = os.umask(0)
    try:
        fresh = tmp_path / "fresh.json"
        write_private(fresh, "{}")
        existing = tmp_path / "existing.json"
        existing.write_text("old")
        existing.chmod(0o644)
        write_private(existing, "new")
    finally:
        os.umask(old_umask)
    assert opened == [0o600, 0o600]
    assert (fresh.stat().st_mode & 0o777, existing.stat().st_mode & 0o777) == (0o600, 0o600)
    assert existing.read_text() == "new"


def test_kafka_cluster_ids_never_look_like_an_option() -> None:
    """The storage tool took an id starting with "-" for an option: 1 fresh stack in 64 failed
    to format. 10,000 ids would hold ~156 such ids if they were not drawn again."""
    from geostream.stack.kafka import _cluster_id

    ids = [_cluster_id() for _ in range(10_000)]
    assert not [i for i in ids if i.startswith("-")]
    assert {len(i) for i in ids} == {22}
    assert len(set(ids)) == len(ids)

"""The stack's own promises: idempotent up, truthful status, down stops what up started.

A second, throw-away stack on other ports and in its own directory is brought up and down
here, so the shared stack the other tests use is never disturbed.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest

from config.settings import get_settings
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
        with psycopg.connect(report["database_url"]) as conn:
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
    assert report["database_url"].startswith("postgresql://geostream:")
    assert report["services"]["postgres"]["timescaledb_license"] in {"apache", "timescale"}

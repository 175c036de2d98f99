"""The supervisor behind ``geostream serve``: restarts what dies, stops everything on SIGTERM."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path

from config.settings import Settings
from geostream.serve import Child, Supervisor, service_children

# A child that records each start, then runs until SIGTERM and leaves a clean-exit mark.
WELL_BEHAVED = """
import pathlib, signal, sys, time
marks = pathlib.Path(sys.argv[1])
marks.open("a").write("start\\n")
def stop(*_):
    marks.open("a").write("clean-exit\\n")
    sys.exit(0)
signal.signal(signal.SIGTERM, stop)
while True:
    time.sleep(0.05)
"""

CRASHING = """
import pathlib, sys
pathlib.Path(sys.argv[1]).open("a").write("start\\n")
sys.exit(3)
"""

STUBBORN = """
import pathlib, signal, sys, time
signal.signal(signal.SIGTERM, signal.SIG_IGN)
pathlib.Path(sys.argv[1]).open("a").write("start\\n")
while True:
    time.sleep(0.05)
"""


def python_child(name: str, script: str, marks: Path) -> Child:
    return Child(name, [sys.executable, "-c", script, str(marks)])


async def wait_for_lines(path: Path, count: int) -> None:
    for _ in range(400):
        if path.exists() and len(path.read_text().splitlines()) >= count:
            return
        await asyncio.sleep(0.025)
    raise AssertionError(f"{path} never reached {count} lines: {path.read_text()!r}")


async def test_a_crashing_child_is_restarted_and_sigterm_stops_all(tmp_path: Path) -> None:
    good, bad = tmp_path / "good", tmp_path / "bad"
    supervisor = Supervisor([python_child("good", WELL_BEHAVED, good),
                             python_child("bad", CRASHING, bad)])  # fmt: skip
    running = asyncio.create_task(supervisor.run())
    await wait_for_lines(bad, 2)  # crashed once, started again (after a 1 s pause)
    await wait_for_lines(good, 1)
    os.kill(os.getpid(), signal.SIGTERM)
    assert await asyncio.wait_for(running, 10) == 0
    assert good.read_text().splitlines() == ["start", "clean-exit"]
    for child in supervisor.children:
        assert child.process is not None
        assert child.process.returncode is not None


async def test_a_child_ignoring_sigterm_is_killed_after_the_grace_period(
    tmp_path: Path, monkeypatch
) -> None:
    monkeypatch.setattr("geostream.serve.GRACE_S", 0.5)
    marks = tmp_path / "stubborn"
    supervisor = Supervisor([python_child("stubborn", STUBBORN, marks)])
    running = asyncio.create_task(supervisor.run())
    await wait_for_lines(marks, 1)
    supervisor.stopping.set()
    await asyncio.wait_for(running, 10)
    process = supervisor.children[0].process
    assert process is not None
    assert process.returncode == -signal.SIGKILL


def test_workers_share_the_group_with_stores_and_ports_of_their_own(tmp_path: Path) -> None:
    settings = Settings(worker_data_dir=tmp_path, worker_metrics_port=9200)
    children = service_children(settings, ["ingest", "worker", "sink"], workers=3)
    assert [c.name for c in children] == ["ingest", "worker-1", "worker-2", "worker-3", "sink"]
    workers = children[1:4]
    assert {tuple(c.argv[-1:]) for c in workers} == {("worker",)}
    assert workers[0].env is None  # the settings' own directory and port
    envs = [c.env for c in workers[1:]]
    assert all(env is not None for env in envs)
    dirs = [env["GEOSTREAM_WORKER_DATA_DIR"] for env in envs if env]
    ports = [env["GEOSTREAM_WORKER_METRICS_PORT"] for env in envs if env]
    assert dirs == [str(tmp_path / "worker-2"), str(tmp_path / "worker-3")]
    assert ports == ["9201", "9202"]
    assert envs[0] is not None
    assert envs[0]["PATH"] == os.environ["PATH"]  # the rest of the environment carries over
    one = service_children(settings, ["worker"], workers=1)
    assert [(c.name, c.env) for c in one] == [("worker", None)]

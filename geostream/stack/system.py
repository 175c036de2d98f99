"""Host helpers for the local stack: commands, Debian packages, the postgres OS user."""

from __future__ import annotations

import logging
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path

log = logging.getLogger("geostream.stack")


class StackError(RuntimeError):
    """The local stack cannot be provisioned or started; the message says what to do."""


def run(
    args: Sequence[str | Path],
    *,
    cwd: Path | None = None,
    env: dict[str, str] | None = None,
    log_file: Path | None = None,
    check: bool = True,
) -> subprocess.CompletedProcess[str]:
    """Run a command, capturing its output (to ``log_file`` when given)."""
    command = [str(a) for a in args]
    log.debug("$ %s", " ".join(command))
    full_env = {**os.environ, **(env or {})}
    if log_file is not None:
        log_file.parent.mkdir(parents=True, exist_ok=True)
        with log_file.open("a") as out:
            result = subprocess.run(
                command, cwd=cwd, env=full_env, stdout=out, stderr=subprocess.STDOUT, text=True
            )
    else:
        result = subprocess.run(command, cwd=cwd, env=full_env, capture_output=True, text=True)
    if check and result.returncode != 0:
        where = f"; see {log_file}" if log_file else f":\n{result.stdout}{result.stderr}"
        raise StackError(f"command failed ({result.returncode}): {' '.join(command)}{where}")
    return result


def write_private(path: Path, text: str) -> None:
    """Write a file only its owner may read, from its first byte: with ``write_text`` and
    then ``chmod``, a secret is world-readable in between."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        os.fchmod(out.fileno(), 0o600)  # a file that existed keeps its mode through O_CREAT
        out.write(text)


def is_root() -> bool:
    return os.geteuid() == 0


def as_postgres(args: Sequence[str | Path]) -> list[str | Path]:
    """PostgreSQL refuses to run as root: as root, run the command as the ``postgres`` user."""
    if is_root():
        return ["runuser", "-u", "postgres", "--", *args]
    return list(args)


def os_release() -> dict[str, str]:
    values: dict[str, str] = {}
    path = Path("/etc/os-release")
    if path.exists():
        for line in path.read_text().splitlines():
            key, sep, value = line.partition("=")
            if sep:
                values[key] = value.strip('"')
    return values


def missing_debian_packages(packages: Sequence[str]) -> list[str]:
    """Packages of ``packages`` that dpkg does not list as installed."""
    result = run(
        ["dpkg-query", "-W", "-f=${Package} ${db:Status-Status}\n", *packages], check=False
    )
    installed = {
        line.split()[0] for line in result.stdout.splitlines() if line.endswith(" installed")
    }
    return [p for p in packages if p not in installed]


def ensure_debian_packages(packages: Sequence[str], log_file: Path) -> None:
    """Install what is missing with apt-get (root only); a no-op when all are there."""
    missing = missing_debian_packages(packages)
    if not missing:
        return
    if not is_root():
        raise StackError(
            f"missing Debian packages {missing}; install them as root "
            f"(apt-get install {' '.join(missing)}) or run this as root"
        )
    log.info("installing Debian packages: %s", " ".join(missing))
    env = {"DEBIAN_FRONTEND": "noninteractive"}
    run(["apt-get", "update"], env=env, log_file=log_file)
    run(
        ["apt-get", "install", "-y", "--no-install-recommends", *missing],
        env=env,
        log_file=log_file,
    )


def require_commands(*names: str) -> None:
    missing = [n for n in names if shutil.which(n) is None]
    if missing:
        raise StackError(f"commands not found: {missing}")


def port_open(host: str, port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def free_port() -> int:
    """A TCP port on loopback that nothing listens on right now (for tests and benchmarks)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for_port(host: str, port: int, timeout: float, what: str, log_file: Path) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if port_open(host, port):
            return
        time.sleep(0.2)
    raise StackError(f"{what} did not open {host}:{port} within {timeout:.0f}s; see {log_file}")


def pid_alive(pid_file: Path) -> int | None:
    """The PID in ``pid_file`` if that process is still running."""
    try:
        pid = int(pid_file.read_text().split()[0])
    except (FileNotFoundError, ValueError, IndexError):
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:
        return pid
    return pid

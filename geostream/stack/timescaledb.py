"""TimescaleDB for the local PostgreSQL.

Debian 12 has no TimescaleDB package, so it is built from Debian's own source package (the
Apache-2 edition, from Debian 13), fetched with ``apt-get source`` through a project-local
sources file and lists directory; the system's apt configuration is never changed. On Debian 13
the binary package does the same job.
"""

from __future__ import annotations

import logging
import re
import shutil
from pathlib import Path

from geostream.stack.system import StackError, ensure_debian_packages, os_release, run

log = logging.getLogger("geostream.stack")

SOURCE_SUITE = "trixie"
DEFAULT_KEYRING = "/usr/share/keyrings/debian-archive-keyring.gpg"
BUILD_PACKAGES = ("dpkg-dev", "cmake", "gcc", "make", "libssl-dev", "xz-utils")


def installed_version(pg_version: int) -> str | None:
    """The default_version of the installed extension, if its files are there."""
    control = Path(f"/usr/share/postgresql/{pg_version}/extension/timescaledb.control")
    if not control.exists():
        return None
    match = re.search(r"default_version\s*=\s*'([^']+)'", control.read_text())
    library = Path(f"/usr/lib/postgresql/{pg_version}/lib/timescaledb.so")
    return match.group(1) if match and library.exists() else None


def debian_mirror() -> tuple[str, str]:
    """URI and keyring of the Debian archive this machine's apt already uses."""
    codename = os_release().get("VERSION_CODENAME", "")
    for path in sorted(Path("/etc/apt/sources.list.d").glob("*.sources")):
        for stanza in path.read_text().split("\n\n"):
            fields = dict(
                (key.strip(), value.strip())
                for key, sep, value in (line.partition(":") for line in stanza.splitlines())
                if sep and not key.startswith("#")
            )
            suites = fields.get("Suites", "").split()
            if codename in suites and "security" not in fields.get("URIs", ""):
                return fields["URIs"].split()[0], fields.get("Signed-By", DEFAULT_KEYRING)
    sources_list = Path("/etc/apt/sources.list")
    if sources_list.exists():
        for line in sources_list.read_text().splitlines():
            parts = line.split()
            if len(parts) >= 3 and parts[0] == "deb" and codename in parts:
                uri = next(p for p in parts[1:] if "://" in p)
                if "security" not in uri:
                    return uri, DEFAULT_KEYRING
    raise StackError("cannot find the Debian archive in this machine's apt sources")


def build_from_source(pg_version: int, work_dir: Path, log_file: Path) -> None:
    """Fetch Debian's timescaledb source package, build it against PostgreSQL, install it."""
    ensure_debian_packages([*BUILD_PACKAGES, f"postgresql-server-dev-{pg_version}"], log_file)
    uri, keyring = debian_mirror()
    apt_dir = work_dir / "apt"
    lists = apt_dir / "lists"
    (lists / "partial").mkdir(parents=True, exist_ok=True)
    sources = apt_dir / "sources.list"
    sources.write_text(f"deb-src [signed-by={keyring}] {uri} {SOURCE_SUITE} main\n")
    apt_options = [
        "-o", f"Dir::Etc::SourceList={sources}",
        "-o", "Dir::Etc::SourceParts=/nonexistent",
        "-o", f"Dir::State::Lists={lists}",
        "-o", "APT::Sandbox::User=root",
    ]  # fmt: skip
    log.info("fetching the timescaledb source package (Debian %s)", SOURCE_SUITE)
    run(["apt-get", *apt_options, "update"], log_file=log_file)
    source_dir = work_dir / "source"
    shutil.rmtree(source_dir, ignore_errors=True)
    source_dir.mkdir(parents=True)
    run(["apt-get", *apt_options, "source", "timescaledb"], cwd=source_dir, log_file=log_file)
    tree = next((p for p in source_dir.iterdir() if p.is_dir()), None)
    if tree is None:
        raise StackError(f"apt-get source produced no source tree; see {log_file}")
    build = tree / "build"
    log.info("building TimescaleDB (Apache-2 edition) against PostgreSQL %s", pg_version)
    run(
        [
            "cmake", "-S", tree, "-B", build,
            "-DCMAKE_BUILD_TYPE=Release",
            f"-DPG_CONFIG=/usr/lib/postgresql/{pg_version}/bin/pg_config",
            "-DAPACHE_ONLY=ON",
            "-DREGRESS_CHECKS=OFF",
            "-DTAP_CHECKS=OFF",
            "-DWARNINGS_AS_ERRORS=OFF",
            "-DSEND_TELEMETRY_DEFAULT=OFF",
            "-DUSE_TELEMETRY=OFF",
        ],
        log_file=log_file,
    )  # fmt: skip
    run(["cmake", "--build", build, "--parallel", "2"], log_file=log_file)
    run(["cmake", "--install", build], log_file=log_file)


def ensure_timescaledb(pg_version: int, work_dir: Path, log_file: Path) -> str:
    """Make the extension available to PostgreSQL ``pg_version``; returns its version."""
    version = installed_version(pg_version)
    if version is not None:
        return version
    codename = os_release().get("VERSION_CODENAME", "")
    if codename == "bookworm":
        build_from_source(pg_version, work_dir, log_file)
    else:
        ensure_debian_packages([f"postgresql-{pg_version}-timescaledb"], log_file)
    version = installed_version(pg_version)
    if version is None:
        raise StackError(f"TimescaleDB is still not installed; see {log_file}")
    return version

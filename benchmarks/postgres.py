"""A throwaway PostgreSQL cluster on 127.0.0.1, for the tests and the benchmarks.

It runs the machine's own PostgreSQL binaries (``SSE_JOBS_PG_BIN``, else Debian's
``/usr/lib/postgresql/<version>/bin``, else ``pg_ctl`` on the PATH). PostgreSQL refuses to
run as root, so when we are root (as CI is) the cluster belongs to the ``postgres`` user
and every command runs through ``runuser``.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

DEBIAN = Path("/usr/lib/postgresql")
START_TIMEOUT = 60
# For tests only: durability costs time and a crashed test cluster is thrown away anyway.
FAST = ["-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off"]


def binaries() -> Path | None:
    """The directory of ``initdb`` and ``pg_ctl``, or None when PostgreSQL is not installed."""
    given = os.environ.get("SSE_JOBS_PG_BIN")
    if given:
        return Path(given)
    versions = sorted(DEBIAN.glob("*/bin/pg_ctl"), key=lambda p: int(p.parts[-3]))
    if versions:
        return versions[-1].parent
    found = shutil.which("pg_ctl")
    return Path(found).parent if found else None


@dataclass
class Cluster:
    directory: Path
    port: int
    bin: Path
    owner: str | None  # the user the server runs as, when we are root

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def create_database(self, name: str) -> str:
        """A new, empty database; its URL."""
        import psycopg

        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')  # our own name, never user input
        return self.url(name)

    def stop(self) -> None:
        _run(self, "pg_ctl", "-D", str(self.directory / "data"), "-m", "immediate", "-w",
             "stop", check=False)
        shutil.rmtree(self.directory, ignore_errors=True)


def start(*, durable: bool = False) -> Cluster:
    """Initialise and start a cluster in a new temporary directory (trust auth, loopback)."""
    found = binaries()
    if found is None:
        raise RuntimeError("PostgreSQL is not installed (apt-get install postgresql)")
    directory = Path(tempfile.mkdtemp(prefix="sse-jobs-pg-"))
    owner = "postgres" if os.geteuid() == 0 else None
    if owner is not None:
        shutil.chown(directory, owner)
    cluster = Cluster(directory, _free_port(), found, owner)
    data = directory / "data"
    _run(cluster, "initdb", "-D", str(data), "-U", "postgres", "-A", "trust", "--no-sync",
         "-E", "UTF8", "--locale", "C.UTF-8")
    options = ["-k", str(directory), "-p", str(cluster.port), "-c", "listen_addresses=127.0.0.1",
               "-c", "max_connections=300", *([] if durable else FAST)]
    _run(cluster, "pg_ctl", "-D", str(data), "-l", str(directory / "log"), "-w", "-t",
         str(START_TIMEOUT), "-o", " ".join(options), "start")
    return cluster


def _run(cluster: Cluster, tool: str, *args: str, check: bool = True) -> None:
    command = [str(cluster.bin / tool), *args]
    if cluster.owner is not None:
        command = ["runuser", "-u", cluster.owner, "--", *command]
    subprocess.run(command, check=check, capture_output=True, timeout=START_TIMEOUT + 30,
                   cwd=cluster.directory)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])

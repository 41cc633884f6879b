"""``sse-jobs serve`` refusing what it cannot do before it touches anything: a port in use,
a ``--db`` in a directory that does not exist."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

from conftest import TESTS


def serve(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(TESTS.parent), os.environ.get("PYTHONPATH", "")])}
    return subprocess.run([sys.executable, "-m", "sse_jobs", "serve", "--workers", "1", *args],
                          capture_output=True, text=True, timeout=60, cwd=cwd, env=env,
                          check=False)


def test_a_port_in_use_is_one_clear_line_before_the_database_or_any_secret(
    tmp_path: Path,
) -> None:
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        port = held.getsockname()[1]
        done = serve("--port", str(port), "--db", str(tmp_path / "jobs.db"), cwd=tmp_path)
    assert done.returncode == 1
    assert done.stdout == ""
    assert done.stderr == (f"sse-jobs: cannot listen on 127.0.0.1:{port}: "
                           "the address is already in use\n")
    assert not (tmp_path / "jobs.db").exists()  # nothing migrated, no secret made or shown


def test_a_db_in_a_missing_directory_is_refused_not_created(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-dir"
    done = serve("--port", "0", "--db", str(missing / "jobs.db"), cwd=tmp_path)
    assert done.returncode == 2
    assert done.stdout == ""
    assert f"--db: the directory {missing} does not exist" in done.stderr
    assert "Traceback" not in done.stderr
    assert not missing.exists()

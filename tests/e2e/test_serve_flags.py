"""``sse-jobs serve`` refusing what it cannot do before it touches anything: a port in use,
a ``--db`` in a directory that does not exist, a SQLite file another server is using."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import aiohttp

from conftest import TESTS, SpawnServer


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


async def test_a_second_server_on_the_same_sqlite_file_is_refused_and_the_first_serves_on(
    spawn_server: SpawnServer, tmp_path: Path,
) -> None:
    db = tmp_path / "jobs.db"
    first = spawn_server(db=db)
    async with aiohttp.ClientSession() as http:
        async with http.post(first.api("/jobs"), json={"type": "echo",
                                                       "params": {"value": 1}}) as response:
            assert response.status == 202
            job = await response.json()
        done = serve("--port", "0", "--db", str(db), cwd=tmp_path)
        assert done.returncode == 1
        assert done.stdout == ""
        assert done.stderr == f"sse-jobs: another sse-jobs server is using {db}\n"
        async with http.get(first.api(f"/jobs/{job['id']}")) as response:
            assert response.status == 200
        async with http.get(f"{first.url}/healthz") as response:
            assert response.status == 200

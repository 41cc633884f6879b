"""The listening socket's bounds, on a real ``sse-jobs serve``: a deadline for request
headers, a cap on open connections, and an open-file limit that fits the cap."""

from __future__ import annotations

import asyncio
import os
import resource
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest

from conftest import TESTS, SpawnServer, _first_line

HALF_SENT = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: "


@pytest.fixture(autouse=True)
def enough_open_files() -> Iterator[None]:
    """This test process holds hundreds of sockets itself."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = 4096 if hard == resource.RLIM_INFINITY else min(4096, hard)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, wanted), hard))
    yield
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


async def half_sent(port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A connection whose request headers never end."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(HALF_SENT)
    await writer.drain()
    return reader, writer


async def answer(reader: asyncio.StreamReader, timeout: float) -> bytes:
    """Everything the server sends until it closes the connection."""
    async with asyncio.timeout(timeout):
        return await reader.read()


def port_of(url: str) -> int:
    return int(url.rsplit(":", 1)[1])


async def healthy(url: str) -> int:
    async with aiohttp.ClientSession() as http, http.get(f"{url}/healthz") as response:
        return response.status


async def test_connections_that_never_finish_their_headers_are_closed_with_408(
    spawn_server: SpawnServer,
) -> None:
    server = spawn_server("--header-timeout", "1")
    port = port_of(server.url)
    held = [await half_sent(port) for _ in range(600)]
    try:
        assert await healthy(server.url) == 200  # a complete request is served meanwhile
        answers = await asyncio.gather(*(answer(reader, 15) for reader, _ in held))
    finally:
        for _, writer in held:
            writer.close()
    assert {a.split(b"\r\n")[0] for a in answers} == {b"HTTP/1.1 408 Request Timeout"}
    async with aiohttp.ClientSession() as http, http.get(f"{server.url}/metrics") as response:
        metrics = await response.text()
    assert 'sse_jobs_connections_refused_total{reason="header_timeout"} 600.0' in metrics
    log = server.log.read_text()
    assert "Traceback" not in log
    assert log.count("closing connections that sent no complete request headers") == 1


async def test_connections_over_the_cap_get_503_and_the_server_keeps_serving(
    spawn_server: SpawnServer,
) -> None:
    server = spawn_server("--max-connections", "20", "--header-timeout", "30")
    port = port_of(server.url)
    held = [await half_sent(port) for _ in range(20)]
    try:
        over = [await half_sent(port) for _ in range(5)]
        refused = await asyncio.gather(*(answer(reader, 10) for reader, _ in over))
        for _, writer in over:
            writer.close()
        assert {a.split(b"\r\n")[0] for a in refused} == {b"HTTP/1.1 503 Service Unavailable"}
        assert all(b"Retry-After: 1\r\n" in a for a in refused)
    finally:
        for _, writer in held:
            writer.close()
    # Closed by their clients, the held connections free their places.
    async def served() -> int:
        while (status := await healthy(server.url)) != 200:
            await asyncio.sleep(0.05)
        return status
    async with asyncio.timeout(10):
        assert await served() == 200
    async with aiohttp.ClientSession() as http, http.get(f"{server.url}/metrics") as response:
        metrics = await response.text()
    assert 'sse_jobs_connections_refused_total{reason="limit"}' in metrics
    assert "sse_jobs_open_connections" in metrics
    log = server.log.read_text()
    assert "Traceback" not in log
    assert log.count("refusing connections: 20 are open (--max-connections)") == 1


def serve_with_open_files(limit: int, *args: str, cwd: Path) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(TESTS), os.environ.get("PYTHONPATH", "")])}

    def lower_limit() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (limit, limit))

    return subprocess.Popen(
        [sys.executable, "-m", "sse_jobs", "serve", "--port", "0", "--workers", "1",
         "--db", str(cwd / "jobs.db"), *args],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=cwd, env=env,
        preexec_fn=lower_limit)  # noqa: PLW1509 - sets one limit, starts no threads


def test_a_max_connections_the_open_file_limit_cannot_hold_is_refused(tmp_path: Path) -> None:
    proc = serve_with_open_files(1024, "--max-connections", "5000", cwd=tmp_path)
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 2
    assert stdout == ""
    assert "argument --max-connections: 5000 connections need more open files" in stderr
    assert "Traceback" not in stderr
    assert not (tmp_path / "jobs.db").exists()  # refused before anything was made


def test_the_default_cap_shrinks_to_the_open_file_limit_with_a_warning(tmp_path: Path) -> None:
    proc = serve_with_open_files(1024, cwd=tmp_path)
    try:
        assert _first_line(proc, timeout=30).startswith("sse-jobs listening on")
    finally:
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=30)
    assert proc.returncode == 0
    assert ("the open-file limit allows 760 connections, not 17408: serving at most 760"
            in stderr)

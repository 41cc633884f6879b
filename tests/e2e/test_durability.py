"""Faults against a real server process: kill -9, SIGTERM, killed workers, a full disk."""

from __future__ import annotations

import asyncio
import os
import random
import re
import signal
import socket
import sqlite3
import time
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest

from conftest import SpawnServer, _first_line
from sse_jobs.eventstream import EventStreamParser

TERMINAL = {"completed", "failed", "cancelled"}


class Follower:
    """Follows one job's stream like a careful client: on any drop it reconnects with the
    last id it received, and records every event it ever got."""

    def __init__(self, job_id: str) -> None:
        self.job_id = job_id
        self.events: list[tuple[int, str, dict[str, Any]]] = []

    @property
    def last_id(self) -> int:
        return self.events[-1][0] if self.events else 0

    async def run(self, session: aiohttp.ClientSession, base: list[str], deadline: float) -> None:
        while time.monotonic() < deadline:
            headers = {"Last-Event-ID": str(self.last_id)} if self.events else {}
            try:
                async with session.get(f"{base[0]}/api/v1/jobs/{self.job_id}/events",
                                       headers=headers) as response:
                    if response.status == 204:
                        return
                    assert response.status == 200, response.status
                    assert response.content_type == "text/event-stream"
                    parser = EventStreamParser()
                    async for chunk in response.content.iter_any():
                        for event in parser.feed(chunk):
                            self.events.append((int(event.id or 0), event.event,
                                                orjson.loads(event.data)))
                    if self.events and self.events[-1][1] in TERMINAL:
                        return
            except (TimeoutError, aiohttp.ClientError, ConnectionError):
                pass
            await asyncio.sleep(0.1)  # the server is down: try again shortly (bounded loop)
        raise AssertionError(f"job {self.job_id} not terminal before the deadline")


async def post_job(session: aiohttp.ClientSession, url: str, body: dict[str, Any]) -> str:
    async with session.post(f"{url}/api/v1/jobs", json=body) as response:
        assert response.status == 202, await response.text()
        job_id: str = (await response.json())["id"]
        return job_id


def descendants(pid: int) -> set[int]:
    """Every process below ``pid``, from /proc."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            parents[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
    found, frontier = set(), {pid}
    while frontier:
        frontier = {child for child, parent in parents.items() if parent in frontier}
        found |= frontier
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def integrity_ok(db: Path) -> None:
    with sqlite3.connect(db) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)


def mixed_jobs(count: int) -> list[dict[str, Any]]:
    kinds = [
        {"type": "sleep", "params": {"seconds": 1.5, "steps": 15}},
        {"type": "primes", "params": {"limit": 3_000_000, "segments": 20}},
        {"type": "flaky", "params": {"failures": 1}},
        {"type": "report", "params": {"rows": 20_000}},
        {"type": "echo", "params": {"value": {"n": 1}}},
        {"type": "chatty", "params": {"events": 50, "pause": 0.01}},
    ]
    return [kinds[i % len(kinds)] for i in range(count)]


async def test_chaos_kill_9_three_times_loses_nothing(
    spawn_server: SpawnServer, tmp_path: Path
) -> None:
    db = tmp_path / "chaos.db"
    rng = random.Random(1234)
    server = spawn_server("--retry-base", "0.1", "--retry-max", "0.5", "--progress-rate", "0",
                          db=db)
    base = [server.url]
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session:
        ids = [await post_job(session, server.url, body) for body in mixed_jobs(50)]
        followers = [Follower(job_id) for job_id in ids]
        deadline = time.monotonic() + 150
        watching = asyncio.gather(*(f.run(session, base, deadline) for f in followers))
        for _ in range(3):
            await asyncio.sleep(rng.uniform(0.3, 1.5))
            server.proc.send_signal(signal.SIGKILL)
            server.proc.wait(timeout=10)
            server = spawn_server("--retry-base", "0.1", "--retry-max", "0.5",
                                  "--progress-rate", "0", db=db)
            base[0] = server.url
        await asyncio.wait_for(watching, 160)

    for follower in followers:
        seqs = [seq for seq, _name, _data in follower.events]
        names = [name for _seq, name, _data in follower.events]
        assert seqs == list(range(1, len(seqs) + 1)), (follower.job_id, seqs)
        assert names[-1] in TERMINAL
        assert sum(name in TERMINAL for name in names) == 1
        assert all(data["seq"] == seq for seq, _name, data in follower.events)
    server.proc.send_signal(signal.SIGTERM)
    assert server.proc.wait(timeout=30) == 0
    integrity_ok(db)


async def test_sigterm_requeues_running_jobs_and_they_complete_after_restart(
    spawn_server: SpawnServer, tmp_path: Path
) -> None:
    db = tmp_path / "term.db"
    server = spawn_server("--shutdown-grace", "0.5", db=db)
    base = [server.url]
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session:
        ids = [await post_job(session, server.url,
                              {"type": "sleep", "params": {"seconds": 2, "steps": 4}})
               for _ in range(2)]
        followers = [Follower(job_id) for job_id in ids]
        watching = asyncio.gather(*(f.run(session, base, time.monotonic() + 60)
                                    for f in followers))
        async with asyncio.timeout(10):
            while not all(any(n == "processing" for _s, n, _d in f.events) for f in followers):
                await asyncio.sleep(0.05)
        children = descendants(server.proc.pid)
        assert len(children) >= 3  # the forkserver and two workers at least
        started = time.monotonic()
        server.proc.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(server.proc.wait, 15) == 0
        assert time.monotonic() - started < 0.5 + 8  # grace plus a margin
        async with asyncio.timeout(10):  # no child process is left behind
            while any(alive(pid) for pid in children):
                await asyncio.sleep(0.05)
        server = spawn_server(db=db)
        base[0] = server.url
        await asyncio.wait_for(watching, 60)

    for follower in followers:
        names = [name for _s, name, _d in follower.events]
        assert names[-1] == "completed"
        retrying = [data for _s, name, data in follower.events if name == "retrying"]
        assert [r["error"]["type"] for r in retrying] == ["interrupted"]
        # the interrupted attempt is not spent: sleep allows one attempt and still completes
        assert retrying[0]["attempt"] == 1
    integrity_ok(db)


async def test_killed_worker_is_retried_and_the_pool_replaces_it(
    spawn_server: SpawnServer, tmp_path: Path
) -> None:
    server = spawn_server()
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session:
        job_id = await post_job(session, server.url, {"type": "nap", "params": {}})
        pid = None
        async with session.get(f"{server.url}/api/v1/jobs/{job_id}/events") as response:
            parser = EventStreamParser()
            async with asyncio.timeout(20):
                async for chunk in response.content.iter_any():
                    for event in parser.feed(chunk):
                        data = orjson.loads(event.data)
                        if event.event == "progress" and pid is None:
                            pid = int(data["message"].split()[1])
                            os.kill(pid, signal.SIGKILL)
                        if event.event in TERMINAL:
                            assert event.event == "completed"
                            assert data["result"] == {"attempt": 2}
                            break
                    else:
                        continue
                    break
        assert pid is not None
        assert pid != server.proc.pid
        async with session.get(f"{server.url}/api/v1/jobs/{job_id}/events",
                               headers={"Last-Event-ID": "0"}) as response:
            events = EventStreamParser().feed(await response.read())
        retrying = [orjson.loads(e.data) for e in events if e.event == "retrying"]
        assert len(retrying) == 1
        assert retrying[0]["error"]["type"] == "crashed"
        assert retrying[0]["attempt"] == 2
        # the pool still serves both slots
        more = [await post_job(session, server.url, {"type": "echo", "params": {"value": i}})
                for i in range(4)]
        for job_id in more:
            follower = Follower(job_id)
            await follower.run(session, [server.url], time.monotonic() + 20)
            assert follower.events[-1][1] == "completed"
    integrity_ok(tmp_path / "jobs.db")


async def test_crash_while_processing_retries_with_crashed_then_fails_when_out_of_attempts(
    spawn_server: SpawnServer, tmp_path: Path
) -> None:
    db = tmp_path / "crash.db"
    server = spawn_server("--retry-base", "0.05", "--retry-max", "0.1", db=db)
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session:
        once = await post_job(session, server.url,
                              {"type": "polite", "params": {"seconds": 60}, "max_attempts": 2})
        twice = await post_job(session, server.url,
                               {"type": "polite", "params": {"seconds": 60}, "max_attempts": 1})
        followers = {job_id: Follower(job_id) for job_id in (once, twice)}
        base = [server.url]
        watching = asyncio.gather(*(f.run(session, base, time.monotonic() + 60)
                                    for f in followers.values()))
        async with asyncio.timeout(10):
            while not all(any(n == "progress" for _s, n, _d in f.events)
                          for f in followers.values()):
                await asyncio.sleep(0.05)
        server.proc.send_signal(signal.SIGKILL)
        server.proc.wait(timeout=10)
        server = spawn_server("--retry-base", "0.05", "--retry-max", "0.1", db=db)
        base[0] = server.url
        # `once` is retried and runs again; cancel it so the test ends quickly
        async with asyncio.timeout(10):
            while not [1 for _s, n, _d in followers[once].events[3:] if n == "processing"]:
                await asyncio.sleep(0.05)
        async with session.post(f"{server.url}/api/v1/jobs/{once}/cancel") as response:
            assert response.status == 202
        await asyncio.wait_for(watching, 60)

    once_events = [(n, d) for _s, n, d in followers[once].events]
    retry = [d for n, d in once_events if n == "retrying"]
    assert [r["error"]["type"] for r in retry] == ["crashed"]
    assert once_events[-1][0] == "cancelled"
    twice_events = [(n, d) for _s, n, d in followers[twice].events]
    assert twice_events[-1][0] == "failed"
    assert twice_events[-1][1]["error"]["type"] == "crashed"
    assert "retrying" not in [n for n, _d in twice_events]
    integrity_ok(db)


async def test_kill_9_leaves_no_worker_running_an_orphaned_attempt(
    spawn_server: SpawnServer,
) -> None:
    """A job that never reports progress never finds its pipe broken; its worker, the
    forkserver and the resource tracker must still all exit with the server."""
    server = spawn_server()
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session:
        job_id = await post_job(session, server.url, {"type": "spin", "params": {"seconds": 120}})
        async with session.get(f"{server.url}/api/v1/jobs/{job_id}/events") as response:
            parser = EventStreamParser()
            async with asyncio.timeout(20):
                async for chunk in response.content.iter_any():
                    if "processing" in [event.event for event in parser.feed(chunk)]:
                        break
    below = descendants(server.proc.pid)
    assert len(below) >= 3, below  # the forkserver, the tracker, the workers
    server.proc.send_signal(signal.SIGKILL)
    server.proc.wait(timeout=10)
    async with asyncio.timeout(10):
        while any(alive(pid) for pid in below):
            await asyncio.sleep(0.05)  # reparented to init: no event to await


@pytest.mark.parametrize("value", ["1", "true"])
def test_environment_configures_the_server(
    spawn_server: SpawnServer, tmp_path: Path, value: str
) -> None:
    """SSE_JOBS_* variables reach the server; the announced line has the real port."""
    server = spawn_server(env={"SSE_JOBS_DEBUG": value, "SSE_JOBS_WORKERS": "1"})
    assert server.url.startswith("http://127.0.0.1:")
    assert not server.url.endswith(":0")


def test_refuses_a_public_address_without_tokens(tmp_path: Path) -> None:
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-m", "sse_jobs", "serve", "--host", "0.0.0.0",
                           "--db", str(tmp_path / "x.db")], capture_output=True, text=True,
                          timeout=60, check=False)
    assert done.returncode == 2
    assert "--insecure" in done.stderr
    assert not (tmp_path / "x.db").exists()


def test_an_ipv6_host_is_announced_as_a_url_that_works(tmp_path: Path) -> None:
    import subprocess
    import sys
    import urllib.request

    with socket.socket(socket.AF_INET6) as probe:
        try:
            probe.bind(("::1", 0))
        except OSError:
            pytest.skip("no IPv6 loopback here")
    proc = subprocess.Popen([sys.executable, "-m", "sse_jobs", "serve", "--host", "::1",
                             "--port", "0", "--db", str(tmp_path / "x.db")],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        line = _first_line(proc, timeout=30)
        assert re.fullmatch(r"sse-jobs listening on http://\[::1\]:\d+", line), line
        with urllib.request.urlopen(line.split()[-1] + "/healthz", timeout=10) as response:
            assert response.status == 200
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
        if proc.stdout is not None:
            proc.stdout.close()


def test_sigterm_right_after_the_announcement_is_a_graceful_shutdown(
    spawn_server: SpawnServer, tmp_path: Path
) -> None:
    """Whoever reads the "listening" line may stop the server at once (a supervisor, a
    test); the signal handlers are in place before the line is printed."""
    for attempt in range(5):
        server = spawn_server(db=tmp_path / f"quick-{attempt}.db")
        server.proc.send_signal(signal.SIGTERM)
        assert server.proc.wait(timeout=30) == 0, attempt

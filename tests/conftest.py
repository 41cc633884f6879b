"""Fixtures: real servers (in-process or as a subprocess) on 127.0.0.1, a real SQLite file
in a temporary directory, a real process pool."""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from benchmarks import postgres
from sse_jobs.config import Settings
from sse_jobs.records import Event
from sse_jobs.server import drain
from sse_jobs.store import SQLiteStore, Store
from sse_jobs.store.postgres import PostgresStore
from sse_jobs.web import create_app, load_job_modules
from stores import Opened, OpenStore

TESTS = Path(__file__).parent
load_job_modules(("testjobs",))


# -- PostgreSQL: one throwaway cluster for the session, a fresh database per test --------


@pytest.fixture(scope="session")
def postgres_cluster() -> Iterator[postgres.Cluster]:
    """The cluster the PostgreSQL tests use. Without PostgreSQL installed they are skipped,
    saying so, unless ``SSE_JOBS_REQUIRE_POSTGRES=1`` (CI) makes that a failure."""
    if postgres.binaries() is None:
        message = "PostgreSQL is not installed (apt-get install postgresql)"
        if os.environ.get("SSE_JOBS_REQUIRE_POSTGRES") == "1":
            pytest.fail(message)
        pytest.skip(message)
    cluster = postgres.start()
    yield cluster
    cluster.stop()


_databases = itertools.count(1)


@pytest.fixture
def postgres_url(postgres_cluster: postgres.Cluster) -> str:
    """A new, empty database on the session's cluster."""
    return postgres_cluster.create_database(f"test_{os.getpid()}_{next(_databases)}")


@dataclass
class Server:
    """An in-process server: its URL, its app (for white-box checks) and a way to stop it."""

    url: str
    app: web.Application
    runner: web.AppRunner
    settings: Settings

    def api(self, path: str = "") -> str:
        return f"{self.url}/api/v1{path}"

    async def stop(self) -> None:
        """Graceful shutdown, as on SIGTERM."""
        if self.runner.server is not None:
            await drain(self.app)
            await self.runner.cleanup()


MakeServer = Callable[..., Awaitable[Server]]


BACKENDS = ("sqlite", "postgres")


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Every test of a server runs on each backend; ``@pytest.mark.backends("sqlite")``
    limits one to those it names (it reads a SQLite file, say)."""
    if "backend" in metafunc.fixturenames:
        only = metafunc.definition.get_closest_marker("backends")
        metafunc.parametrize("backend", only.args if only else BACKENDS)


@pytest.fixture
async def make_server(tmp_path: Path, backend: str,
                      request: pytest.FixtureRequest) -> AsyncIterator[MakeServer]:
    """In-process servers on the test's database: a SQLite file, or a fresh PostgreSQL
    database (every server of a test shares it: a restart, or another node)."""
    servers: list[Server] = []
    db: Path | str = tmp_path / "jobs.db"
    if backend == "postgres":
        db = request.getfixturevalue("postgres_url")

    async def make(**overrides: Any) -> Server:
        settings = dataclasses.replace(
            Settings(db=db, results_dir=tmp_path / "results", workers=2, port=0,
                     heartbeat=15.0, cancel_grace=1.0, retry_base=0.05, retry_max=0.2,
                     shutdown_grace=2.0),
            **overrides)
        runner = web.AppRunner(create_app(settings), handler_cancellation=True,
                               shutdown_timeout=2.0)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        server = Server(f"http://127.0.0.1:{runner.addresses[0][1]}", runner.app, runner,
                        settings)
        servers.append(server)
        return server

    yield make
    for server in reversed(servers):
        await server.stop()


@pytest.fixture
async def server(make_server: MakeServer) -> Server:
    return await make_server()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as session:
        yield session


Submit = Callable[..., Awaitable[dict[str, Any]]]


@pytest.fixture
def submit(http: aiohttp.ClientSession) -> Submit:
    """POST a job to ``server`` and return its resource, asserting the 202."""

    async def submit_job(server: Server, type_: str, params: dict[str, Any] | None = None,
                         **fields: Any) -> dict[str, Any]:
        body = {"type": type_, "params": params or {}, **fields}
        async with http.post(server.api("/jobs"), json=body) as response:
            assert response.status == 202, await response.text()
            job: dict[str, Any] = await response.json()
            assert response.headers["Location"] == f"/api/v1/jobs/{job['id']}"
            return job

    return submit_job


# -- stores of each backend, for the store suites (tests/store) ----------------------------

LEASE = 30.0


@pytest.fixture(params=BACKENDS)
async def open_store(request: pytest.FixtureRequest,
                     tmp_path: Path) -> AsyncIterator[OpenStore]:
    """Opens stores of one backend, all on the same database (a second one reopens it)."""
    opened: list[Store] = []
    url = request.getfixturevalue("postgres_url") if request.param == "postgres" else None

    def backend(node: str, lease: float) -> Store:
        if url is None:
            return SQLiteStore(tmp_path / "store.db")
        return PostgresStore(url, node=node, lease_timeout=lease)

    async def make(listener: Callable[[list[Event]], None] | None = None, *,
                   node: str = "node-1", lease: float = LEASE) -> Opened:
        result = Opened(backend(node, lease))
        await result.store.open(listener or result.published.extend)
        opened.append(result.store)
        return result

    yield make
    for store in opened:
        await store.close()


@pytest.fixture
async def opened(open_store: OpenStore) -> Opened:
    return await open_store()


# -- servers as subprocesses, for signals and crashes ------------------------------------


@dataclass
class Process:
    proc: subprocess.Popen[str]
    url: str
    log: Path  # the server's stderr

    def api(self, path: str = "") -> str:
        return f"{self.url}/api/v1{path}"


SpawnServer = Callable[..., Process]


@pytest.fixture
def spawn_node(tmp_path: Path) -> Iterator[Callable[..., Process]]:
    """Start ``sse-jobs serve`` (or ``worker``) as a subprocess and wait for its line."""
    processes: list[subprocess.Popen[str]] = []

    def spawn(*args: str, command: str = "serve", db: Path | str | None = None,
              env: dict[str, str] | None = None, test_jobs: bool = True) -> Process:
        argv = [sys.executable, "-m", "sse_jobs", command, "--port", "0",
                "--db", str(db or tmp_path / "jobs.db"), "--workers", "2",
                "--results-dir", str(tmp_path / "results"),
                *(["--jobs", "testjobs"] if test_jobs else []), *args]
        environment = {**os.environ, "PYTHONPATH": os.pathsep.join(
            [str(TESTS), os.environ.get("PYTHONPATH", "")]), **(env or {})}
        log = tmp_path / f"{command}-{len(processes)}.log"
        with log.open("w") as stderr:
            proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=stderr, text=True,
                                    env=environment)
        processes.append(proc)
        line = _first_line(proc, timeout=30)
        if command == "worker":
            assert line == "sse-jobs worker ready", line + log.read_text()[-2000:]
            return Process(proc, "", log)
        assert line.startswith("sse-jobs listening on http://127.0.0.1:"), line
        return Process(proc, line.split()[-1], log)

    yield spawn
    for proc in processes:
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
        if proc.stdout is not None:
            proc.stdout.close()


@pytest.fixture
def spawn_server(spawn_node: Callable[..., Process]) -> SpawnServer:
    """``sse-jobs serve`` as a subprocess, for signals and crashes."""
    return spawn_node


def _first_line(proc: subprocess.Popen[str], timeout: float) -> str:
    """The server's announcement line, waiting at most ``timeout`` seconds."""
    import selectors

    assert proc.stdout is not None
    with selectors.DefaultSelector() as selector:
        selector.register(proc.stdout, selectors.EVENT_READ)
        if not selector.select(timeout):
            proc.kill()
            raise AssertionError(f"server did not announce itself within {timeout}s")
    return proc.stdout.readline().strip()


async def wait_for(predicate: Callable[[], Awaitable[bool]], timeout: float = 10.0,
                   interval: float = 0.02) -> None:
    """Poll ``predicate`` until true; fail after ``timeout``. For state that has no event."""
    async with asyncio.timeout(timeout):
        while not await predicate():
            await asyncio.sleep(interval)

"""Storage faults and housekeeping against a real SQLite file: a full disk, retention."""

from __future__ import annotations

import sqlite3

import aiohttp
import pytest

from conftest import MakeServer, Server, Submit, wait_for
from sse_client import read_stream
from sse_jobs.store import SQLiteStore
from sse_jobs.web.keys import ENGINE, RETENTION, STORE

pytestmark = pytest.mark.backends("sqlite")  # faults made with SQLite's own PRAGMAs


async def writer_sql(store: object, pragma: str) -> None:
    """Set a PRAGMA on the store's own writer connection (such settings are per
    connection); ``{pages}`` stands for the database's current page count."""
    assert isinstance(store, SQLiteStore)

    def run(conn: sqlite3.Connection) -> None:
        pages = conn.execute("PRAGMA page_count").fetchone()[0]
        conn.execute(pragma.format(pages=pages))

    await store.on_writer_thread(run)


def integrity_ok(server: Server) -> None:
    with sqlite3.connect(server.settings.db) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)


async def test_full_disk_gives_503_and_recovers(
    make_server: MakeServer, submit: Submit, http: aiohttp.ClientSession
) -> None:
    server = await make_server()
    store = server.app[STORE]
    await writer_sql(store, "PRAGMA max_page_count = {pages}")  # a real SQLITE_FULL
    body = {"type": "echo", "params": {"value": "x" * 20_000}}
    for _ in range(3):  # refused every time, and the server keeps serving
        async with http.post(server.api("/jobs"), json=body) as response:
            assert response.status == 503
            assert response.content_type == "application/problem+json"
            assert response.headers["Retry-After"] == "5"
            problem = await response.json()
            assert "full" in problem["detail"]
    async with http.get(server.api("/jobs")) as response:
        assert response.status == 200
        assert (await response.json())["jobs"] == []  # nothing half-written

    await writer_sql(store, "PRAGMA max_page_count = 1073741823")
    job = await submit(server, "echo", {"value": 1})
    read = await read_stream(http, server.api(f"/jobs/{job['id']}/events"))
    assert read.names == ["queued", "processing", "completed"]
    assert read.ids == [1, 2, 3]
    integrity_ok(server)


async def test_retention_sweep_removes_old_finished_jobs_with_events_and_files(
    make_server: MakeServer, submit: Submit, http: aiohttp.ClientSession
) -> None:
    server = await make_server(retention=0.2)
    report = await submit(server, "report", {"rows": 10})
    await read_stream(http, server.api(f"/jobs/{report['id']}/events"))
    results = server.settings.results_path / report["id"]
    assert (results / "report.csv").is_file()
    blocker = await submit(server, "polite", {"seconds": 30})
    await read_stream(http, server.api(f"/jobs/{blocker['id']}/events"), max_events=3)

    async def report_gone() -> bool:
        async with http.get(server.api(f"/jobs/{report['id']}")) as response:
            return response.status == 404

    await wait_for(report_gone, timeout=10)  # the sweep runs every second at this retention
    assert await server.app[RETENTION].sweep() == 0
    assert not results.exists()
    async with http.get(server.api(f"/jobs/{blocker['id']}")) as response:
        assert response.status == 200  # running jobs are never swept
    with sqlite3.connect(server.settings.db) as conn:
        left = conn.execute("SELECT count(*) FROM events WHERE job_id = ?", (report["id"],))
        assert left.fetchone() == (0,)
    async with http.post(server.api(f"/jobs/{blocker['id']}/cancel")) as response:
        assert response.status == 202


async def test_a_job_running_while_the_disk_is_full_loses_no_event_once_space_returns(
    make_server: MakeServer, submit: Submit, http: aiohttp.ClientSession,
    caplog: pytest.LogCaptureFixture,
) -> None:
    server = await make_server(progress_rate=0)
    job = await submit(server, "chatty", {"events": 300, "pause": 0.003, "message_size": 500})
    started = await read_stream(http, server.api(f"/jobs/{job['id']}/events"), max_events=2)
    assert started.names[:2] == ["queued", "processing"]
    store = server.app[STORE]
    await writer_sql(store, "PRAGMA max_page_count = {pages}")

    async def refused() -> bool:  # the engine keeps what it could not store, and retries
        return any("not stored yet" in r.getMessage() or "cannot record" in r.getMessage()
                   for r in caplog.records)

    await wait_for(refused, timeout=10)
    await writer_sql(store, "PRAGMA max_page_count = 1073741823")
    read = await read_stream(http, server.api(f"/jobs/{job['id']}/events"), timeout=30)
    assert read.names[-1] == "completed"
    assert read.ids == list(range(1, len(read.ids) + 1))
    assert read.names.count("progress") == 300
    integrity_ok(server)


async def test_a_job_that_ends_while_the_disk_is_full_is_recorded_once_space_returns(
    make_server: MakeServer, submit: Submit, http: aiohttp.ClientSession
) -> None:
    server = await make_server(workers=1, progress_rate=0)
    job = await submit(server, "chatty", {"events": 100, "pause": 0.005, "message_size": 500})
    started = await read_stream(http, server.api(f"/jobs/{job['id']}/events"), max_events=2)
    assert started.names == ["queued", "processing"]
    store = server.app[STORE]
    await writer_sql(store, "PRAGMA max_page_count = {pages}")

    async def attempt_over() -> bool:  # it has left the pool: its outcome waits for storage
        return server.app[ENGINE].running == 0

    await wait_for(attempt_over, timeout=10)
    async with http.get(f"{server.url}/healthz") as response:
        assert response.status == 503
        health = await response.json()
    assert health["status"] == "unavailable"
    assert health["database"] == "ok"  # it answers reads; it cannot take writes
    assert "full" in health["writable"]
    async with http.get(server.api(f"/jobs/{job['id']}")) as response:
        assert (await response.json())["state"] == "processing"

    await writer_sql(store, "PRAGMA max_page_count = 1073741823")
    read = await read_stream(http, server.api(f"/jobs/{job['id']}/events"), timeout=15)
    assert read.names[-1] == "completed"
    assert read.names.count("processing") == 1  # recorded, not run again
    assert read.names.count("progress") == 100
    assert read.ids == list(range(1, len(read.ids) + 1))
    async with http.get(f"{server.url}/healthz") as response:
        assert response.status == 200
        assert (await response.json())["writable"] == "ok"
    integrity_ok(server)


async def test_read_only_database_gives_503_and_recovers(
    server: Server, submit: Submit, http: aiohttp.ClientSession
) -> None:
    store = server.app[STORE]
    await writer_sql(store, "PRAGMA query_only = ON")  # SQLite refuses every write: READONLY
    async with http.post(server.api("/jobs"), json={"type": "echo", "params": {}}) as response:
        assert response.status == 503
        assert response.headers["Retry-After"] == "5"
        assert "readonly" in (await response.json())["detail"]
    async with http.get(f"{server.url}/healthz") as response:
        assert response.status == 503  # it still answers, and says it cannot take writes
        health = await response.json()
    assert health["database"] == "ok"
    assert "readonly" in health["writable"]
    await writer_sql(store, "PRAGMA query_only = OFF")
    job = await submit(server, "echo", {"value": 1})
    read = await read_stream(http, server.api(f"/jobs/{job['id']}/events"))
    assert read.names == ["queued", "processing", "completed"]
    integrity_ok(server)

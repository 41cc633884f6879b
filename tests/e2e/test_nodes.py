"""Many nodes on one PostgreSQL database (contract section 9): real server and worker
processes, one real database, clients moving between nodes, nodes killed with SIGKILL."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import psycopg
import pytest

from conftest import Process, wait_for
from sse_client import StreamRead, read_stream

SpawnNode = Callable[..., Process]
# Short leases, so that a dead node's attempt is taken over within seconds.
LEASES = ("--lease-renew", "0.5", "--lease-timeout", "3")
API_ONLY = ("--workers", "0")


@pytest.fixture
def database(postgres_url: str) -> str:
    return postgres_url


async def submit(http: aiohttp.ClientSession, node: Process, type_: str,
                 params: dict[str, Any], **fields: Any) -> dict[str, Any]:
    async with http.post(node.api("/jobs"), json={"type": type_, "params": params,
                                                   **fields}) as response:
        assert response.status == 202, await response.text()
        job: dict[str, Any] = await response.json()
        return job


async def run_to_end(http: aiohttp.ClientSession, node: Process, job_id: str,
                     **options: Any) -> StreamRead:
    return await read_stream(http, node.api(f"/jobs/{job_id}/events"), timeout=60, **options)


def assert_gap_free(read: StreamRead) -> None:
    assert read.ids == list(range(1, len(read.ids) + 1))
    assert [d["seq"] for d in read.data()] == read.ids


async def test_a_job_submitted_to_one_api_node_runs_on_a_worker_node_and_streams_everywhere(
    spawn_node: SpawnNode, database: str, http: aiohttp.ClientSession,
) -> None:
    first = spawn_node(*API_ONLY, db=database)
    second = spawn_node(*API_ONLY, db=database)
    spawn_node("--progress-rate", "0", command="worker", db=database)
    async with http.get(f"{first.url}/healthz") as response:
        health = await response.json()
    assert response.status == 200
    assert (health["role"], health["workers"], health["pool"]) == ("api", 0, "none")
    assert health["backend"] == "postgresql"

    everything = asyncio.ensure_future(read_stream(
        http, second.api("/events?last_event_id=0"), until_terminal=False, max_events=6,
        timeout=60))
    job = await submit(http, first, "chatty", {"events": 3, "pause": 0.05})
    on_first, on_second = await asyncio.gather(run_to_end(http, first, job["id"]),
                                               run_to_end(http, second, job["id"]))
    assert on_first.names == ["queued", "processing", "progress", "progress", "progress",
                              "completed"]
    assert on_second.events == on_first.events
    assert_gap_free(on_first)
    global_read = await everything
    assert global_read.ids == list(range(1, 7))
    assert [e.data for e in global_read.events] == [e.data for e in on_first.events]


async def test_a_worker_node_killed_mid_job_is_retried_on_another_with_gap_free_seqs(
    spawn_node: SpawnNode, database: str, http: aiohttp.ClientSession,
) -> None:
    api = spawn_node(*API_ONLY, *LEASES, db=database)
    doomed = spawn_node(*LEASES, command="worker", db=database)
    job = await submit(http, api, "nap", {"seconds": 60})  # attempt 1 naps, 2 returns
    started = await run_to_end(http, api, job["id"], max_events=3, until_terminal=False)
    assert started.names == ["queued", "processing", "progress"]
    spawn_node(*LEASES, command="worker", db=database)
    doomed.proc.send_signal(signal.SIGKILL)
    doomed.proc.wait(timeout=10)
    killed_at = time.monotonic()

    read = await run_to_end(http, api, job["id"])
    names = [n for n in read.names if n != "progress"]
    assert names == ["queued", "processing", "retrying", "processing", "completed"]
    retrying = read.data()[read.names.index("retrying")]
    assert retrying["error"]["type"] == "crashed"
    assert read.data()[-1]["result"] == {"attempt": 2}
    assert_gap_free(read)
    assert time.monotonic() - killed_at < 3 + 10  # the lease timeout, and a margin


async def test_a_node_that_lost_its_lease_stops_its_attempt_and_records_nothing_more(
    spawn_node: SpawnNode, database: str, http: aiohttp.ClientSession,
) -> None:
    api = spawn_node(*API_ONLY, *LEASES, db=database)
    stalled = spawn_node(*LEASES, command="worker", db=database)
    job = await submit(http, api, "nap", {"seconds": 60})  # attempt 1 naps, 2 returns
    started = await run_to_end(http, api, job["id"], max_events=3, until_terminal=False)
    assert started.names == ["queued", "processing", "progress"]
    napping = int(started.data()[2]["message"].split()[1])  # "pid N"
    await stop_outside_a_transaction(stalled, database)
    try:  # alive but silent: its lease runs out and another node takes the job over
        spawn_node(*LEASES, command="worker", db=database)
        read = await run_to_end(http, api, job["id"])
    finally:
        stalled.proc.send_signal(signal.SIGCONT)
    names = [n for n in read.names if n != "progress"]
    assert names == ["queued", "processing", "retrying", "processing", "completed"]
    assert read.data()[read.names.index("retrying")]["error"]["type"] == "crashed"
    assert read.data()[-1]["result"] == {"attempt": 2}

    # Awake again, the stalled node learns at its next renewal that the lease is gone,
    # kills its attempt, and records neither the progress it still had nor the outcome.
    log = stalled.log
    await wait_for(lambda: _logged(log, "attempt 1 ended after its lease was lost"), 30)
    assert "lost the lease on attempt 1; stopping it" in log.read_text()
    await wait_for(lambda: _gone(napping), 30)
    again = await run_to_end(http, api, job["id"])
    assert again.events == read.events
    assert_gap_free(again)


async def stop_outside_a_transaction(node: Process, database: str) -> None:
    """SIGSTOP ``node`` at a moment none of its transactions is open: a node stopped inside
    one would hold row locks, and the node taking over would wait on them, not on the
    lease. Any open transaction counts (the other nodes' last milliseconds)."""
    async with await psycopg.AsyncConnection.connect(database, autocommit=True) as db:
        for _ in range(50):
            node.proc.send_signal(signal.SIGSTOP)
            await asyncio.sleep(0.05)
            cursor = await db.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                "AND state LIKE 'idle in transaction%'")
            row = await cursor.fetchone()
            if row is not None and row[0] == 0:
                return
            node.proc.send_signal(signal.SIGCONT)
            await asyncio.sleep(0.05)
    pytest.fail("the node always had a transaction open")


async def _logged(log: Path, text: str) -> bool:
    return text in log.read_text()


async def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


async def test_a_client_moves_from_a_killed_api_node_to_another_with_its_last_event_id(
    spawn_node: SpawnNode, database: str, http: aiohttp.ClientSession,
) -> None:
    doomed = spawn_node(*API_ONLY, db=database)
    other = spawn_node(*API_ONLY, db=database)
    spawn_node("--progress-rate", "0", command="worker", db=database)
    job = await submit(http, doomed, "chatty", {"events": 30, "pause": 0.05})
    before = await run_to_end(http, doomed, job["id"], max_events=10, until_terminal=False)
    everything_before = await read_stream(http, doomed.api("/events?last_event_id=0"),
                                          until_terminal=False, max_events=10, timeout=30)
    doomed.proc.send_signal(signal.SIGKILL)
    doomed.proc.wait(timeout=10)

    after = await run_to_end(http, other, job["id"],
                             headers={"Last-Event-ID": str(before.ids[-1])})
    assert after.ids == list(range(before.ids[-1] + 1, before.ids[-1] + 1 + len(after.ids)))
    assert after.names[-1] == "completed"
    assert before.ids + after.ids == list(range(1, 34))  # queued, processing, 30, completed
    global_after = await read_stream(
        http, other.api("/events"), headers={"Last-Event-ID": str(everything_before.ids[-1])},
        until_terminal=True, timeout=30)
    assert global_after.ids[0] == everything_before.ids[-1] + 1
    assert everything_before.ids + global_after.ids == list(range(1, 34))


async def test_two_worker_nodes_complete_every_job_exactly_once_under_contention(
    spawn_node: SpawnNode, database: str, http: aiohttp.ClientSession,
) -> None:
    api = spawn_node(*API_ONLY, db=database)
    spawn_node(command="worker", db=database)
    spawn_node(command="worker", db=database)
    jobs = await asyncio.gather(*(submit(http, api, "echo", {"value": n}) for n in range(60)))
    reads = await asyncio.gather(*(run_to_end(http, api, job["id"]) for job in jobs))
    for n, read in enumerate(reads):
        assert read.names == ["queued", "processing", "completed"]
        assert read.ids == [1, 2, 3]
        assert read.data()[1]["attempt"] == 1
        assert read.data()[-1]["result"] == n
    everything = await read_stream(http, api.api("/events?last_event_id=0"),
                                   until_terminal=False, max_events=180, timeout=30)
    assert everything.ids == list(range(1, 181))
    assert sum(name == "processing" for name in everything.names) == 60


async def test_a_cancel_sent_to_one_node_stops_the_job_running_on_another(
    spawn_node: SpawnNode, database: str, http: aiohttp.ClientSession,
) -> None:
    # Renewals 20 s apart: a stop within seconds comes from the notification.
    slow_renewals = ("--lease-renew", "20", "--lease-timeout", "60")
    api = spawn_node(*API_ONLY, *slow_renewals, db=database)
    spawn_node(*slow_renewals, command="worker", db=database)
    job = await submit(http, api, "polite", {"seconds": 60})
    started = await run_to_end(http, api, job["id"], max_events=3, until_terminal=False)
    assert started.names[:2] == ["queued", "processing"]
    asked = time.monotonic()
    async with http.post(api.api(f"/jobs/{job['id']}/cancel")) as response:
        assert response.status == 202
    read = await run_to_end(http, api, job["id"])
    assert read.names[-1] == "cancelled"
    assert time.monotonic() - asked < 10
    assert_gap_free(read)


def test_a_worker_node_needs_a_shared_database(spawn_node: SpawnNode, tmp_path: Any) -> None:
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-m", "sse_jobs", "worker", "--db",
                           str(tmp_path / "jobs.db")], capture_output=True, text=True,
                          timeout=60, check=False)
    assert done.returncode == 2
    assert "postgresql://" in done.stderr
    assert "Traceback" not in done.stderr


async def test_sigterm_stops_a_worker_node_gracefully_and_its_job_completes_elsewhere(
    spawn_node: SpawnNode, database: str, http: aiohttp.ClientSession,
) -> None:
    api = spawn_node(*API_ONLY, *LEASES, db=database)
    workers = [spawn_node(*LEASES, "--shutdown-grace", "0.5", "--progress-rate", "0",
                          command="worker", db=database) for _ in range(2)]
    job = await submit(http, api, "chatty", {"events": 40, "pause": 0.1})
    await run_to_end(http, api, job["id"], max_events=3, until_terminal=False)
    [running] = [w for w in workers if "attempt 1 started" in w.log.read_text()]
    running.proc.send_signal(signal.SIGTERM)
    assert running.proc.wait(timeout=30) == 0
    read = await run_to_end(http, api, job["id"])
    retrying = read.data()[read.names.index("retrying")]
    assert retrying["error"]["type"] == "interrupted"  # requeued: the attempt is not spent
    assert read.names[-1] == "completed"
    assert orjson.loads(read.events[-1].data)["result"] == {"events": 40}
    assert_gap_free(read)

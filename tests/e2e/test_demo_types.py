"""The built-in demo types with their defaults: the README's restart story, a failed job."""

from __future__ import annotations

import signal

import aiohttp

from conftest import SpawnServer
from sse_client import read_stream


async def test_a_sleep_job_killed_with_its_server_runs_again_after_the_restart(
    spawn_server: SpawnServer, http: aiohttp.ClientSession
) -> None:
    server = spawn_server(test_jobs=False)
    body = {"type": "sleep", "params": {"seconds": 0.4, "steps": 4}}  # the defaults otherwise
    async with http.post(server.api("/jobs"), json=body) as response:
        assert response.status == 202
        job = await response.json()
    assert job["max_attempts"] == 3
    async with http.post(server.api("/jobs"), json={"type": "sleep", "params": {
            "seconds": 30, "steps": 30}}) as response:
        long = await response.json()
    started = await read_stream(http, server.api(f"/jobs/{long['id']}/events"), max_events=2)
    assert started.names == ["queued", "processing"]
    server.proc.send_signal(signal.SIGKILL)
    server.proc.wait(timeout=10)

    again = spawn_server(test_jobs=False)
    async with http.post(again.api(f"/jobs/{long['id']}/cancel")) as response:
        assert response.status in {200, 202}
    read = await read_stream(http, again.api(f"/jobs/{long['id']}/events"))
    retrying = read.data()[read.names.index("retrying")]
    assert retrying["attempt"] == 2
    assert retrying["error"]["type"] == "crashed"
    assert read.names[-1] == "cancelled"  # not failed: it had attempts left


async def test_the_fail_demo_type_reports_progress_then_fails(
    spawn_server: SpawnServer, http: aiohttp.ClientSession
) -> None:
    server = spawn_server(test_jobs=False)
    async with http.post(server.api("/jobs"), json={"type": "fail", "params": {
            "steps": 2, "seconds": 0}}) as response:
        assert response.status == 202
        job = await response.json()
    read = await read_stream(http, server.api(f"/jobs/{job['id']}/events"))
    assert read.names == ["queued", "processing", "progress", "progress", "failed"]
    failed = read.data()[-1]
    assert failed["state"] == "failed"
    assert failed["error"]["type"] == "exception"
    assert failed["error"]["exception"] == "RuntimeError"
    assert failed["error"]["message"] == "failed on purpose after 2 steps"

"""Structured logs of a real server process."""

from __future__ import annotations

import json
import signal

import aiohttp

from conftest import SpawnServer


async def test_json_logs_carry_request_and_job_ids_and_no_params(
    spawn_server: SpawnServer,
) -> None:
    server = spawn_server("--log-format", "json")
    secret = "s3cr3t-param-value"
    async with aiohttp.ClientSession() as session:
        async with session.post(server.api("/jobs"), headers={"X-Request-ID": "req-42"},
                                json={"type": "echo", "params": {"value": secret}}) as response:
            assert response.status == 202
            assert response.headers["X-Request-ID"] == "req-42"
            job_id = (await response.json())["id"]
        async with session.get(server.api(f"/jobs/{job_id}/events")) as response:
            await response.read()
    server.proc.send_signal(signal.SIGTERM)
    assert server.proc.wait(timeout=30) == 0

    lines = [json.loads(line) for line in server.log.read_text().splitlines()]
    assert all({"time", "level", "logger", "message"} <= line.keys() for line in lines)
    submitted = [line for line in lines if line.get("job_id") == job_id]
    assert {line["message"] for line in submitted} >= {"submitted (type echo)", "completed"}
    request_lines = [line for line in lines if line.get("request_id") == "req-42"]
    assert any(line["logger"] == "sse_jobs.access"
               and line["message"].startswith("POST /api/v1/jobs 202") for line in request_lines)
    assert any(line.get("job_id") == job_id for line in request_lines)
    assert secret not in server.log.read_text()

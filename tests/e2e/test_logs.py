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


ALICE = "alice-token-0123456789abcdef"
SCRAPER = "scraper-token-0123456789abcdef"


async def requests_as_alice(server_url: str) -> str:
    """An authenticated listing, a refused one and a scrape; the listing's request id."""
    alice = {"Authorization": f"Bearer {ALICE}", "X-Request-ID": "as-alice"}
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{server_url}/api/v1/jobs", headers=alice) as response:
            assert response.status == 200
        async with session.get(f"{server_url}/api/v1/jobs",
                               headers={"X-Request-ID": "nobody"}) as response:
            assert response.status == 401
        async with session.get(f"{server_url}/metrics",
                               headers={"Authorization": f"Bearer {SCRAPER}"}) as response:
            assert response.status == 200
    return "as-alice"


async def test_access_lines_name_the_principal_in_json_never_the_token(
    spawn_server: SpawnServer,
) -> None:
    server = spawn_server("--log-format", "json", "--metrics-token", SCRAPER,
                          env={"SSE_JOBS_API_TOKENS": f"alice:{ALICE}"})
    await requests_as_alice(server.url)
    server.proc.send_signal(signal.SIGTERM)
    assert server.proc.wait(timeout=30) == 0

    text = server.log.read_text()
    access = {line["request_id"]: line for line in map(json.loads, text.splitlines())
              if line["logger"] == "sse_jobs.access"}
    assert access["as-alice"]["principal"] == "alice"
    assert access["as-alice"]["message"].startswith("GET /api/v1/jobs 200 ")
    assert "principal" not in access["nobody"]  # refused: nobody to name
    assert ALICE not in text
    assert SCRAPER not in text


async def test_access_lines_name_the_principal_in_text(spawn_server: SpawnServer) -> None:
    server = spawn_server("--metrics-token", SCRAPER,
                          env={"SSE_JOBS_API_TOKENS": f"alice:{ALICE}"})
    await requests_as_alice(server.url)
    server.proc.send_signal(signal.SIGTERM)
    assert server.proc.wait(timeout=30) == 0

    text = server.log.read_text()
    lines = [line for line in text.splitlines() if " sse_jobs.access: " in line]
    alice = next(line for line in lines if "request_id=as-alice" in line)
    nobody = next(line for line in lines if "request_id=nobody" in line)
    assert alice.endswith(" [request_id=as-alice principal=alice]")
    assert " sse_jobs.access: GET /api/v1/jobs 200 " in alice
    assert nobody.endswith(" [request_id=nobody]")
    assert ALICE not in text
    assert SCRAPER not in text

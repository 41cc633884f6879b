"""Metrics, health, request ids, the OpenAPI document and the docs page."""

from __future__ import annotations

import asyncio
import logging
import re
from typing import Any

import aiohttp
import pytest
from openapi_spec_validator import validate

from conftest import MakeServer, Server, Submit, wait_for
from sse_client import read_stream
from sse_jobs import logs
from sse_jobs.models import Job
from sse_jobs.web.keys import ENGINE, NODE, STORE


async def scrape(http: aiohttp.ClientSession, server: Server) -> dict[str, float]:
    async with http.get(f"{server.url}/metrics") as response:
        assert response.status == 200
        assert response.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        text = await response.text()
    samples = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            samples[name] = float(value)
    return samples


async def test_metrics_follow_jobs_as_they_run(
    make_server: MakeServer, submit: Submit, http: aiohttp.ClientSession
) -> None:
    server = await make_server(workers=1)
    done = await submit(server, "echo", {"value": 1})
    await read_stream(http, server.api(f"/jobs/{done['id']}/events"))
    idle = await scrape(http, server)
    assert idle["sse_jobs_pool_workers_alive"] == 1  # announced before it ran the job
    assert idle["sse_jobs_running_jobs"] == 0
    blocker = await submit(server, "polite", {"seconds": 30})
    await read_stream(http, server.api(f"/jobs/{blocker['id']}/events"), max_events=3)
    waiting = await submit(server, "echo", {"value": 2})

    during = await scrape(http, server)
    assert during['sse_jobs_jobs{state="completed",type="echo"}'] == 1
    assert during['sse_jobs_jobs{state="processing",type="polite"}'] == 1
    assert during['sse_jobs_jobs{state="queued",type="echo"}'] == 1
    assert during["sse_jobs_queue_depth"] == 1
    assert during["sse_jobs_running_jobs"] == 1
    assert during['sse_jobs_jobs_submitted_total{type="echo"}'] == 2
    assert during['sse_jobs_events_stored_total{event="completed"}'] == 1
    assert during['sse_jobs_job_duration_seconds_count{outcome="ok",type="echo"}'] == 1
    assert during['sse_jobs_queue_wait_seconds_count{type="polite"}'] == 1
    route = '{method="POST",route="/api/v1/jobs",status="202"}'
    assert during[f"sse_jobs_http_request_duration_seconds_count{route}"] == 3

    async with http.post(server.api(f"/jobs/{waiting['id']}/cancel")) as response:
        assert response.status == 200
    async with http.post(server.api(f"/jobs/{blocker['id']}/cancel")) as response:
        assert response.status == 202
    await read_stream(http, server.api(f"/jobs/{blocker['id']}/events"))
    after = await scrape(http, server)
    assert after['sse_jobs_jobs{state="cancelled",type="echo"}'] == 1
    assert after['sse_jobs_jobs{state="cancelled",type="polite"}'] == 1
    assert after["sse_jobs_queue_depth"] == 0
    assert after["sse_jobs_running_jobs"] == 0
    assert after['sse_jobs_events_stored_total{event="cancelled"}'] == 2


async def test_open_stream_gauge_returns_to_zero_after_300_streams_close(
    server: Server, submit: Submit, http: aiohttp.ClientSession
) -> None:
    job = await submit(server, "polite", {"seconds": 30})
    responses = []
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as streams:
        for i in range(300):
            path = "/events" if i % 10 == 0 else f"/jobs/{job['id']}/events"
            response = await streams.get(server.api(path))
            assert response.status == 200
            await response.content.readuntil(b"\n\n")  # the retry: line: the stream is open
            responses.append(response)
        opened = await scrape(http, server)
        assert opened['sse_jobs_open_streams{scope="job"}'] == 270
        assert opened['sse_jobs_open_streams{scope="global"}'] == 30
        for response in responses:
            response.close()

    async def all_closed() -> bool:
        samples = await scrape(http, server)
        return (samples['sse_jobs_open_streams{scope="job"}'] == 0
                and samples['sse_jobs_open_streams{scope="global"}'] == 0)

    await wait_for(all_closed, timeout=10)
    async with http.post(server.api(f"/jobs/{job['id']}/cancel")) as response:
        assert response.status == 202


async def test_healthz_is_503_when_the_pool_is_broken(
    server: Server, http: aiohttp.ClientSession
) -> None:
    async with http.get(f"{server.url}/healthz") as response:
        assert response.status == 200
        assert await response.json() == {"status": "ok", "database": "ok", "writable": "ok",
                                         "pool": "ok", "dispatcher": "ok", **node_of(server)}
    await server.app[ENGINE].pool.close()
    async with http.get(f"{server.url}/healthz") as response:
        assert response.status == 503
        body = await response.json()
    assert body["status"] == "unavailable"
    assert body["pool"] == "down"


async def test_healthz_is_503_and_says_why_when_the_database_cannot_answer(
    server: Server, http: aiohttp.ClientSession
) -> None:
    await server.app[STORE].close()  # what a server whose store has gone looks like
    async with http.get(f"{server.url}/healthz") as response:
        assert response.status == 503
        body = await response.json()
    assert body == {"status": "unavailable", "database": "the store is closed",
                    "writable": "the store is closed", "pool": "ok", "dispatcher": "ok",
                    **node_of(server)}


def node_of(server: Server) -> dict[str, object]:
    """What /healthz says of the node itself (contract section 9)."""
    return {"role": "api+worker", "workers": 2, "node": server.app[NODE],
            "backend": "postgresql" if server.settings.postgres_url else "sqlite"}


async def test_request_id_is_echoed_or_made(server: Server, http: aiohttp.ClientSession) -> None:
    async with http.get(server.api("/jobs"), headers={"X-Request-ID": "abc-123"}) as response:
        assert response.headers["X-Request-ID"] == "abc-123"
    async with http.get(server.api("/jobs"), headers={"X-Request-ID": "x" * 200}) as response:
        assert re.fullmatch(r"[0-9a-f]{32}", response.headers["X-Request-ID"])
    async with http.get(server.api("/nope")) as response:
        assert response.status == 404
        assert re.fullmatch(r"[0-9a-f]{32}", response.headers["X-Request-ID"])
        assert response.headers["X-Content-Type-Options"] == "nosniff"


async def test_openapi_document_is_valid_and_matches_the_resources(
    server: Server, submit: Submit, http: aiohttp.ClientSession
) -> None:
    async with http.get(f"{server.url}/openapi.json") as response:
        assert response.status == 200
        document = await response.json()
    validate(document)
    assert document["openapi"] == "3.1.0"
    events = document["paths"]["/api/v1/jobs/{id}/events"]["get"]["responses"]["200"]
    assert "text/event-stream" in events["content"]
    socket = document["paths"]["/api/v1/jobs/{id}/ws"]["get"]["responses"]
    assert {"101", "401", "404", "426", "429", "503"} <= set(socket)
    assert "CreateJob" in document["components"]["schemas"]
    schemas = document["components"]["schemas"]

    def resolve(schema: dict[str, Any]) -> dict[str, Any]:
        return schemas[schema["$ref"].rsplit("/", 1)[1]] if "$ref" in schema else schema

    body = document["paths"]["/api/v1/jobs"]["post"]["requestBody"]
    assert body["required"] is True
    one, many = (resolve(s) for s in body["content"]["application/json"]["schema"]["oneOf"])
    fields = {"type", "params", "priority", "timeout", "max_attempts", "callback_url",
              "callback_events"}
    assert one["type"] == "object"
    for variant in map(resolve, one["oneOf"]):
        assert fields <= set(variant["properties"])
    assert {"echo", "sleep"} <= set(one["discriminator"]["mapping"])
    sleep = resolve({"$ref": one["discriminator"]["mapping"]["sleep"]})
    assert set(resolve(sleep["properties"]["params"])["properties"]) == {"seconds", "steps"}
    assert many["type"] == "array"
    for variant in map(resolve, many["items"]["oneOf"]):
        assert {*fields, "idempotency_key"} <= set(variant["properties"])

    job = await submit(server, "echo", {"value": [1, "two"]})
    await read_stream(http, server.api(f"/jobs/{job['id']}/events"))
    async with http.get(server.api(f"/jobs/{job['id']}")) as response:
        Job.model_validate(await response.json())  # the served shape is the documented one


async def test_docs_page_is_served_without_external_resources(
    server: Server, http: aiohttp.ClientSession
) -> None:
    async with http.get(f"{server.url}/docs") as response:
        assert response.status == 200
        page = await response.text()
    assert "/static/docs.js" in page
    assert "http://" not in page
    assert "https://" not in page
    async with http.get(f"{server.url}/static/docs.js") as response:
        assert response.status == 200
        assert "https://" not in await response.text()
    async with http.get(f"{server.url}/static/../pyproject.toml") as response:
        assert response.status == 404


ALICE = "alice-token-0123456789abcdef"
SCRAPER = "scraper-token-0123456789abcdef"


async def metrics_status(http: aiohttp.ClientSession, server: Server,
                         token: str | None) -> tuple[int, str, dict[str, object] | str]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with http.get(f"{server.url}/metrics", headers=headers) as response:
        body = await response.json() if response.status == 401 else await response.text()
        return response.status, response.headers["Content-Type"], body


async def test_metrics_with_a_metrics_token_need_exactly_that_token(
    make_server: MakeServer, http: aiohttp.ClientSession
) -> None:
    server = await make_server(api_tokens=f"alice:{ALICE}", metrics_token=SCRAPER)

    status, kind, body = await metrics_status(http, server, SCRAPER)
    assert (status, kind.split(";")[0]) == (200, "text/plain")
    assert "sse_jobs_queue_depth" in str(body)
    for refused in (None, ALICE, SCRAPER + "x", "Basic " + SCRAPER):
        status, kind, body = await metrics_status(http, server, refused)
        assert (status, kind) == (401, "application/problem+json")
        assert isinstance(body, dict)
        assert body["detail"] == "send Authorization: Bearer <metrics token>"
    async with http.get(server.api("/jobs"),
                        headers={"Authorization": f"Bearer {SCRAPER}"}) as response:
        assert response.status == 401  # a metrics token opens /metrics and nothing else


async def test_metrics_with_api_tokens_and_no_metrics_token_need_an_api_token(
    make_server: MakeServer, http: aiohttp.ClientSession
) -> None:
    server = await make_server(api_tokens=f"alice:{ALICE}")

    assert (await metrics_status(http, server, ALICE))[0] == 200
    status, kind, body = await metrics_status(http, server, None)
    assert (status, kind) == (401, "application/problem+json")
    assert isinstance(body, dict)
    assert body["status"] == 401


async def test_metrics_token_alone_guards_metrics_of_an_open_server(
    make_server: MakeServer, http: aiohttp.ClientSession
) -> None:
    server = await make_server(metrics_token=SCRAPER)

    assert (await metrics_status(http, server, None))[0] == 401
    assert (await metrics_status(http, server, SCRAPER))[0] == 200
    async with http.get(server.api("/jobs")) as response:
        assert response.status == 200  # the API itself stays open

@pytest.mark.backends("postgres")
async def test_healthz_is_503_while_postgresql_takes_no_writes(
    server: Server, http: aiohttp.ClientSession
) -> None:
    import psycopg

    url = str(server.settings.postgres_url)
    with psycopg.connect(url, autocommit=True) as admin:
        admin.execute("ALTER SYSTEM SET default_transaction_read_only = on")
        admin.execute("SELECT pg_reload_conf()")
        try:
            async def refused() -> bool:
                async with http.get(f"{server.url}/healthz") as response:
                    return response.status == 503

            await wait_for(refused, timeout=10)
            async with http.get(f"{server.url}/healthz") as response:
                body = await response.json()
            assert body["database"] == "ok"
            assert "read-only" in body["writable"]
        finally:
            admin.execute("ALTER SYSTEM RESET default_transaction_read_only")
            admin.execute("SELECT pg_reload_conf()")

    async def healthy() -> bool:
        async with http.get(f"{server.url}/healthz") as response:
            return response.status == 200

    await wait_for(healthy, timeout=10)


async def test_a_stream_the_client_closes_is_logged_and_counted_as_the_200_it_got(
    server: Server, submit: Submit, http: aiohttp.ClientSession,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="sse_jobs.access")
    job = await submit(server, "polite", {"seconds": 30})
    path = f"/api/v1/jobs/{job['id']}/events"
    response = await http.get(f"{server.url}{path}")
    assert response.status == 200
    await response.content.readuntil(b"\n\n")  # the retry: line: the stream is open
    response.close()  # the client leaves

    async def logged() -> bool:
        return any(r.name == "sse_jobs.access" and path in r.getMessage()
                   for r in caplog.records)

    await wait_for(logged, timeout=10)
    [line] = [r.getMessage() for r in caplog.records
              if r.name == "sse_jobs.access" and path in r.getMessage()]
    assert line.startswith(f"GET {path} 200 ")
    samples = await scrape(http, server)
    route = '{method="GET",route="/api/v1/jobs/{id}/events",status="%s"}'
    assert samples[f"sse_jobs_http_request_duration_seconds_count{route % 200}"] == 1
    assert f"sse_jobs_http_request_duration_seconds_count{route % 500}" not in samples
    async with http.post(server.api(f"/jobs/{job['id']}/cancel")) as cancelled:
        assert cancelled.status in {200, 202}  # queued still, or running


async def test_control_characters_of_a_request_path_are_escaped_in_the_text_log(
    server: Server, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="sse_jobs.access")
    host, port = server.url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    # Percent-escapes that aiohttp accepts and decodes into the path: ESC, CR, LF.
    writer.write(b"GET /a%1b[31mred%0d%0aforged HTTP/1.1\r\nHost: x\r\n"
                 b"Connection: close\r\n\r\n")
    async with asyncio.timeout(10):
        answer = await reader.read()
    writer.close()
    assert answer.startswith(b"HTTP/1.1 404 ")
    [record] = [r for r in caplog.records if r.name == "sse_jobs.access"]
    line = logs.TextFormatter().format(record)
    assert "\x1b" not in line
    assert "\r" not in line
    assert "\n" not in line
    assert "GET /a\\x1b[31mred\\x0d\\x0aforged 404 " in line

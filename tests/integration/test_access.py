"""Access control with API tokens: 401s, principal isolation, stream tokens, limits, CORS."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from conftest import MakeServer, Server
from sse_client import read_stream
from sse_jobs.auth import StreamTokens, job_scope, parse_tokens
from sse_jobs.eventstream import EventStreamParser
from sse_jobs.web.keys import ACCESS

ALICE = "alice-token-0123456789"
BOB = "bob-token-0123456789ab"


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
async def secured(make_server: MakeServer, tmp_path: Path) -> Server:
    tokens = tmp_path / "tokens"
    tokens.write_text(f"# who may call\nalice:{ALICE}\n\nbob:{BOB}\n")
    return await make_server(api_tokens_file=tokens)


async def post(http: aiohttp.ClientSession, server: Server, token: str, body: dict[str, Any],
               status: int = 202) -> dict[str, Any]:
    async with http.post(server.api("/jobs"), json=body, headers=bearer(token)) as response:
        assert response.status == status, await response.text()
        result: dict[str, Any] = await response.json()
        return result


async def test_api_needs_a_valid_bearer_token(secured: Server, http: aiohttp.ClientSession) -> None:
    for headers in ({}, bearer("wrong-token-0123456789"), {"Authorization": ALICE},
                    {"Authorization": f"Basic {ALICE}"}):
        async with http.get(secured.api("/jobs"), headers=headers) as response:
            assert response.status == 401
            assert response.headers["WWW-Authenticate"] == 'Bearer realm="sse-jobs"'
            assert response.content_type == "application/problem+json"
            assert (await response.json())["status"] == 401
    async with http.get(secured.api("/jobs"), headers=bearer(ALICE)) as response:
        assert response.status == 200
    async with http.get(f"{secured.url}/healthz") as response:
        assert response.status == 200  # no auth outside /api


async def test_a_principal_cannot_see_or_touch_another_principals_jobs(
    secured: Server, http: aiohttp.ClientSession
) -> None:
    alice_job = await post(http, secured, ALICE, {"type": "echo", "params": {"value": "a"}})
    bob_job = await post(http, secured, BOB, {"type": "echo", "params": {"value": "b"}})
    await read_stream(http, secured.url + alice_job["links"]["events"])
    await read_stream(http, secured.url + bob_job["links"]["events"])
    job = f"/jobs/{alice_job['id']}"
    for method, path in (("GET", job), ("POST", f"{job}/cancel"), ("DELETE", job),
                         ("GET", f"{job}/result"), ("GET", f"{job}/events"),
                         ("GET", f"{job}/deliveries"), ("POST", f"{job}/deliveries/1/retry")):
        async with http.request(method, secured.api(path), headers=bearer(BOB)) as response:
            assert response.status == 404, (method, path)
    async with http.get(secured.api("/jobs"), headers=bearer(BOB)) as response:
        listing = await response.json()
    assert [j["id"] for j in listing["jobs"]] == [bob_job["id"]]
    # the same Idempotency-Key is separate per principal
    body = {"type": "echo", "params": {"value": 1}}
    for token in (ALICE, BOB):
        async with http.post(secured.api("/jobs"), json=body,
                             headers={**bearer(token), "Idempotency-Key": "k1"}) as response:
            assert response.status == 202


async def test_global_stream_shows_only_the_principals_own_events(
    secured: Server, http: aiohttp.ClientSession
) -> None:
    async with http.get(secured.api("/jobs"), headers=bearer(BOB)) as response:
        bob_events = (await response.json())["links"]["events"]
    assert "token=" in bob_events
    assert BOB not in bob_events  # the API token never goes into a URL
    await post(http, secured, ALICE, {"type": "echo", "params": {"value": "a"}})
    bob_job = await post(http, secured, BOB, {"type": "echo", "params": {"value": "b"}})
    read = await read_stream(http, secured.url + bob_events, max_events=3,
                             until_terminal=False)
    assert {d["job_id"] for d in read.data()} == {bob_job["id"]}
    assert read.names == ["queued", "processing", "completed"]
    everything = await read_stream(http, secured.api("/events?last_event_id=0"),
                                   headers=bearer(BOB), max_events=3, until_terminal=False)
    assert {d["job_id"] for d in everything.data()} == {bob_job["id"]}


async def test_stream_token_opens_that_jobs_stream_and_result_only(
    secured: Server, http: aiohttp.ClientSession
) -> None:
    first = await post(http, secured, ALICE, {"type": "echo", "params": {"value": 1}})
    second = await post(http, secured, ALICE, {"type": "echo", "params": {"value": 2}})
    read = await read_stream(http, secured.url + first["links"]["events"])  # no header
    assert read.status == 200
    assert read.names == ["queued", "processing", "completed"]
    async with http.get(secured.url + first["links"]["result"]) as response:
        assert response.status == 200
        assert await response.json() == 1
    token = first["links"]["events"].split("token=")[1]
    for path in (f"/jobs/{second['id']}/events", f"/jobs/{second['id']}/result",
                 f"/jobs/{first['id']}", "/jobs", "/events"):
        async with http.get(secured.api(f"{path}?token={token}")) as response:
            assert response.status == 401, path
    async with http.post(secured.api(f"/jobs/{first['id']}/cancel?token={token}")) as response:
        assert response.status == 401
    tampered = token[:-2] + ("AA" if not token.endswith("AA") else "BB")
    async with http.get(secured.api(f"/jobs/{first['id']}/events?token={tampered}")) as response:
        assert response.status == 401
    stream_tokens: StreamTokens = secured.app[ACCESS].stream_tokens
    expired = stream_tokens.issue(job_scope(first["id"]), now=time.time() - 2 * 86400)
    async with http.get(secured.api(f"/jobs/{first['id']}/events?token={expired}")) as response:
        assert response.status == 401


async def test_active_job_limit_gives_429_and_recovers(
    make_server: MakeServer, tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    server = await make_server(api_tokens=f"alice:{ALICE}", max_active_per_principal=1,
                               workers=1)
    running = await post(http, server, ALICE, {"type": "polite", "params": {"seconds": 30}})
    await read_stream(http, server.url + running["links"]["events"], max_events=2)
    async with http.post(server.api("/jobs"), json={"type": "echo", "params": {}},
                         headers=bearer(ALICE)) as response:
        assert response.status == 429
        assert int(response.headers["Retry-After"]) >= 1
        assert "running" in (await response.json())["detail"]
    async with http.post(server.api(f"/jobs/{running['id']}/cancel"),
                         headers=bearer(ALICE)) as response:
        assert response.status == 202
    await read_stream(http, server.url + running["links"]["events"])
    await post(http, server, ALICE, {"type": "echo", "params": {}})


async def test_submission_rate_limit_gives_429_with_retry_after(
    make_server: MakeServer, http: aiohttp.ClientSession
) -> None:
    server = await make_server(api_tokens=f"alice:{ALICE},bob:{BOB}", submissions_per_minute=120)
    body = {"type": "echo", "params": {}}
    accepted = 0
    for _ in range(200):  # 120 at once, then 2 a second: the bucket runs dry quickly
        async with http.post(server.api("/jobs"), json=body, headers=bearer(ALICE)) as response:
            if response.status == 429:
                retry_after = int(response.headers["Retry-After"])
                assert response.content_type == "application/problem+json"
                assert "120 jobs a minute" in (await response.json())["detail"]
                break
            assert response.status == 202
            accepted += 1
    else:
        raise AssertionError("never limited")
    assert accepted >= 120
    assert retry_after == 1
    await post(http, server, BOB, body)  # others are not affected
    await asyncio.sleep(retry_after)  # what the client is told to do; then it may go on
    await post(http, server, ALICE, body)


async def until_event(response: aiohttp.ClientResponse, name: str) -> None:
    """Read an open event stream until an event called ``name`` (bounded)."""
    parser = EventStreamParser()
    async with asyncio.timeout(30):
        async for chunk in response.content.iter_any():
            if any(event.event == name for event in parser.feed(chunk)):
                return
    raise AssertionError(f"the stream ended without {name}")


async def test_stream_limits_give_429_per_principal_and_503_in_total(
    make_server: MakeServer, http: aiohttp.ClientSession
) -> None:
    server = await make_server(api_tokens=f"alice:{ALICE},bob:{BOB}",
                               max_streams_per_principal=2, max_streams=3)
    job = await post(http, server, ALICE, {"type": "polite", "params": {"seconds": 30}})
    url = server.url + job["links"]["events"]
    opened = []
    async with aiohttp.ClientSession() as streams:
        for _ in range(2):
            response = await streams.get(url)
            assert response.status == 200
            opened.append(response)
        async with streams.get(url) as response:
            assert response.status == 429
            assert "Retry-After" in response.headers
            assert response.content_type == "application/problem+json"
        bob_stream = await streams.get(server.api("/events"), headers=bearer(BOB))
        assert bob_stream.status == 200
        async with streams.get(server.api("/events"), headers=bearer(BOB)) as response:
            assert response.status == 503
            assert "Retry-After" in response.headers
            assert response.content_type == "application/problem+json"
        await until_event(opened[0], "processing")  # it runs: the cancel asks it to stop
        for response in [*opened, bob_stream]:
            response.close()
    async with http.post(server.api(f"/jobs/{job['id']}/cancel"),
                         headers=bearer(ALICE)) as response:
        assert response.status == 202
    read = await read_stream(http, url)  # recovered: streams were released
    assert read.status == 200


async def test_cors_preflight_for_allowed_and_refused_origins(
    make_server: MakeServer, http: aiohttp.ClientSession
) -> None:
    server = await make_server(cors_origin=("https://app.example",))
    preflight = {"Access-Control-Request-Method": "GET",
                 "Access-Control-Request-Headers": "last-event-id"}
    async with http.options(server.api("/events"),
                            headers={**preflight, "Origin": "https://app.example"}) as response:
        assert response.status == 204
        assert response.headers["Access-Control-Allow-Origin"] == "https://app.example"
        assert "Last-Event-ID" in response.headers["Access-Control-Allow-Headers"]
        assert "Authorization" in response.headers["Access-Control-Allow-Headers"]
    async with http.options(server.api("/events"),
                            headers={**preflight, "Origin": "https://evil.example"}) as response:
        assert response.status == 403
        assert "Access-Control-Allow-Origin" not in response.headers
    async with http.get(server.api("/jobs"), headers={"Origin": "https://app.example"}) as r:
        assert r.headers["Access-Control-Allow-Origin"] == "https://app.example"
        assert "Location" in r.headers["Access-Control-Expose-Headers"]
    async with http.get(server.api("/jobs"), headers={"Origin": "https://evil.example"}) as r:
        assert "Access-Control-Allow-Origin" not in r.headers


def test_token_file_format() -> None:
    assert parse_tokens(["# c", "", " a : 0123456789abcdef ", "b:fedcba9876543210"]) == {
        "0123456789abcdef": "a", "fedcba9876543210": "b"}
    for bad in (["nocolon0123456789"], ["a:short"], [":0123456789abcdef"],
                ["a:0123456789abcdef", "b:0123456789abcdef"]):
        with pytest.raises(ValueError, match="line"):
            parse_tokens(bad)


async def test_the_dashboard_page_allows_only_its_own_scripts(
    server: Server, http: aiohttp.ClientSession
) -> None:
    async with http.get(f"{server.url}/") as response:
        assert response.status == 200
        policy = dict(directive.strip().split(" ", 1) for directive in
                      response.headers["Content-Security-Policy"].split(";"))
        assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert policy["script-src"] == "'self'"
    assert policy["default-src"] == "'self'"
    assert policy["object-src"] == "'none'"
    assert "unsafe-inline" not in response.headers["Content-Security-Policy"]


async def test_job_counts_are_the_callers_own_by_type_and_state(
    secured: Server, http: aiohttp.ClientSession
) -> None:
    for token, job_type in ((ALICE, "echo"), (ALICE, "echo"), (ALICE, "flaky"), (BOB, "echo")):
        await post(http, secured, token, {"type": job_type, "params": {}})
    async with http.get(secured.api("/jobs")) as response:
        assert response.status == 401

    counted: dict[str, Any] = {}
    for name, token in (("alice", ALICE), ("bob", BOB)):
        async with http.get(secured.api("/job-counts"), headers=bearer(token)) as response:
            assert response.status == 200
            counted[name] = {(c["type"], c["state"]): c["count"]
                             for c in (await response.json())["counts"]}
    # Each job is counted once, whatever state it has reached meanwhile.
    assert sum(v for (t, _s), v in counted["alice"].items() if t == "echo") == 2
    assert sum(v for (t, _s), v in counted["alice"].items() if t == "flaky") == 1
    assert sum(counted["bob"].values()) == 1
    assert {t for t, _s in counted["bob"]} == {"echo"}


async def test_whoami_names_the_tokens_principal(
    secured: Server, http: aiohttp.ClientSession
) -> None:
    async with http.get(secured.api("/whoami"), headers=bearer(BOB)) as response:
        assert (response.status, await response.json()) == (200, {"principal": "bob",
                                                                  "tokens": True})
    async with http.get(secured.api("/whoami")) as response:
        assert response.status == 401


async def test_whoami_in_open_mode_names_nobody(server: Server, http: aiohttp.ClientSession
                                                ) -> None:
    async with http.get(server.api("/whoami")) as response:
        assert (response.status, await response.json()) == (200, {"principal": None,
                                                                  "tokens": False})

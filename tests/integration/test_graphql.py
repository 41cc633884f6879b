"""The GraphQL API (contract section 10): over HTTP and over graphql-transport-ws (spoken
with aiohttp's WebSocket client), compared with the REST resources and the SSE streams
of the same jobs."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest

from conftest import MakeServer, Server, Submit, wait_for
from graphql_client import (
    ALL_EVENTS,
    JOB_EVENTS,
    JOB_FIELDS,
    codes,
    gql,
    graphql_socket,
    subscription,
)
from sse_client import StreamRead, read_stream
from sse_jobs.web.keys import BROKER, SOCKETS
from ws_client import small_send_buffers

ALICE, BOB = "alice-token-0123456789", "bob-token-0123456789ab"
AS_ALICE = {"Authorization": f"Bearer {ALICE}"}
AS_BOB = {"Authorization": f"Bearer {BOB}"}


def url(server: Server) -> str:
    return server.url + "/graphql"


def camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part.title() for part in rest)


def as_graphql(value: Any) -> Any:
    """A REST resource with GraphQL's field names (JSON values such as params stay)."""
    if isinstance(value, dict):
        return {camel(k): v if k in {"params", "result", "params_schema"} else as_graphql(v)
                for k, v in value.items()}
    if isinstance(value, list):
        return [as_graphql(item) for item in value]
    return value


def untokened(resource: dict[str, Any]) -> dict[str, Any]:
    """``resource`` with its links' stream tokens cut off: a token names its expiry second,
    so two answers a moment apart may carry different ones."""
    links = {name: link.split("?token=")[0] for name, link in resource["links"].items()}
    return {**resource, "links": links}


def same_events(got: list[dict[str, Any]], sse: StreamRead, *, key: str = "seq") -> None:
    """The subscription carried the SSE stream's events: ids, names and data, in order."""
    assert [(e[key], e["event"], e["data"]) for e in got] == [
        (int(e.id or 0), e.event, orjson.loads(e.data)) for e in sse.events]
    assert all(e["jobId"] == e["data"]["job_id"] and e["seq"] == e["data"]["seq"]
               and e["state"] == e["data"]["state"] for e in got)


async def test_queries_answer_what_the_rest_api_answers(
    make_server: MakeServer, submit: Submit, http: aiohttp.ClientSession
) -> None:
    server = await make_server(api_tokens=f"alice:{ALICE}")
    async with http.post(server.api("/jobs"), json={"type": "flaky", "params": {
            "failures": 5}, "max_attempts": 1}, headers=AS_ALICE) as response:
        failed = await response.json()
    async with http.post(server.api("/jobs"), json={"type": "echo", "params": {
            "value": {"a": [1, 2]}}}, headers=AS_ALICE) as response:
        done = await response.json()
    for job in (failed, done):
        await read_stream(http, server.url + job["links"]["events"])

    for job in (failed, done):
        async with http.get(server.api(f"/jobs/{job['id']}"), headers=AS_ALICE) as response:
            rest = await response.json()
        answer = await gql(http, url(server), f"query ($id: ID!) {{ job(id: $id) {{ "
                           f"{JOB_FIELDS} }} }}", {"id": job["id"]}, AS_ALICE)
        expected = as_graphql(untokened(rest))
        expected["error"] = rest["error"] and {"traceback": None, **rest["error"]}
        assert untokened(answer["data"]["job"]) == expected
    assert answer["data"]["job"]["links"]["ws"].startswith(f"/api/v1/jobs/{done['id']}/ws?token=")

    async with http.get(server.api("/jobs?limit=1"), headers=AS_ALICE) as response:
        page = await response.json()
    listing = await gql(http, url(server), f"{{ jobs(limit: 1) {{ next lastEventId "
                        f"links {{ events }} jobs {{ {JOB_FIELDS} }} }} }}", None, AS_ALICE)
    assert listing["data"]["jobs"]["next"] == page["next"]
    assert [j["id"] for j in listing["data"]["jobs"]["jobs"]] == [page["jobs"][0]["id"]]
    assert listing["data"]["jobs"]["links"]["events"].startswith(page["links"]["events"][:40])
    assert listing["data"]["jobs"]["lastEventId"] == int(
        page["links"]["events"].split("last_event_id=")[1].split("&")[0])

    async with http.get(server.api("/job-types"), headers=AS_ALICE) as response:
        rest_types = (await response.json())["job_types"]
    types = await gql(http, url(server), "{ jobTypes { name description paramsSchema "
                      "defaults { timeout maxAttempts } concurrency } }", None, AS_ALICE)
    assert types == {"data": {"jobTypes": as_graphql(rest_types)}}


async def test_submit_and_cancel_go_through_the_same_rules_as_rest(
    server: Server, http: aiohttp.ClientSession
) -> None:
    submit = """mutation ($key: String) { submitJob(type: "sleep", params: {seconds: 30},
                priority: 3, idempotencyKey: $key) { id state priority params } }"""
    first = await gql(http, url(server), submit, {"key": "k-1"})
    again = await gql(http, url(server), submit, {"key": "k-1"})
    job = first["data"]["submitJob"]
    assert job["state"] == "queued"
    assert job["priority"] == 3
    assert job["params"] == {"seconds": 30.0, "steps": 10}  # defaults filled in
    assert again["data"]["submitJob"]["id"] == job["id"]  # the same job for the same key
    other = await gql(http, url(server), """mutation { submitJob(type: "sleep", params:
                      {seconds: 1}, idempotencyKey: "k-1") { id } }""")
    assert codes(other) == ["BAD_USER_INPUT"]  # the key reused for another request

    invalid = await gql(http, url(server), """mutation { submitJob(type: "sleep",
                        params: {seconds: -1}, maxAttempts: 0) { id } }""")
    assert codes(invalid) == ["BAD_USER_INPUT"]
    assert invalid["errors"][0]["extensions"]["errors"] == [
        {"field": "maxAttempts", "message": "Input should be greater than or equal to 1"},
        {"field": "params.seconds", "message": "Input should be greater than or equal to 0"}]
    unknown = await gql(http, url(server), 'mutation { submitJob(type: "nope") { id } }')
    assert codes(unknown) == ["BAD_USER_INPUT"]

    cancel = "mutation ($id: ID!) { cancelJob(id: $id) { id state } }"
    cancelled = await gql(http, url(server), cancel, {"id": job["id"]})
    assert cancelled["data"]["cancelJob"]["id"] == job["id"]
    assert cancelled["data"]["cancelJob"]["state"] in {"cancelled", "processing"}  # or asked
    stream = await read_stream(http, server.api(f"/jobs/{job['id']}/events"))
    assert stream.names[-1] == "cancelled"
    echo = await gql(http, url(server), 'mutation { submitJob(type: "echo") { id } }')
    echo_id = echo["data"]["submitJob"]["id"]
    await read_stream(http, server.api(f"/jobs/{echo_id}/events"))
    assert codes(await gql(http, url(server), cancel, {"id": echo_id})) == ["CONFLICT"]
    assert codes(await gql(http, url(server), cancel, {"id": "nope"})) == ["NOT_FOUND"]


async def test_every_error_has_its_code(
    make_server: MakeServer, http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    server = await make_server(api_tokens=f"alice:{ALICE},bob:{BOB}", submissions_per_minute=1)
    job = "{ jobTypes { name } }"
    assert codes(await gql(http, url(server), job)) == ["UNAUTHENTICATED"]
    assert codes(await gql(http, url(server), job, None,
                           {"Authorization": "Bearer nobody-0123456789"})) == ["UNAUTHENTICATED"]
    submit = 'mutation { submitJob(type: "sleep", params: {seconds: 30}) { id } }'
    mine = await gql(http, url(server), submit, None, AS_ALICE)
    assert "errors" not in mine
    assert codes(await gql(http, url(server), submit, None, AS_ALICE)) == ["RATE_LIMITED"]
    limited = await gql(http, url(server), submit, None, AS_ALICE)
    assert limited["errors"][0]["extensions"]["retryAfter"] >= 1
    full = await make_server(max_queued=0, db=tmp_path / "full.db")
    unavailable = await gql(http, url(full), submit)
    assert codes(unavailable) == ["UNAVAILABLE"]
    assert unavailable["errors"][0]["extensions"]["retryAfter"] == 5
    # Principals are isolated: alice's job does not exist for bob.
    query = "query ($id: ID!) { job(id: $id) { id } }"
    job_id = mine["data"]["submitJob"]["id"]
    assert codes(await gql(http, url(server), query, {"id": job_id}, AS_BOB)) == ["NOT_FOUND"]
    assert codes(await gql(http, url(server), "{ nothing }", None, AS_ALICE)) == [
        "BAD_USER_INPUT"]
    assert codes(await gql(http, url(server), "{ jobs(limit: 0) { next } }", None,
                           AS_ALICE)) == ["BAD_USER_INPUT"]


async def test_bad_requests_are_problems_and_no_page_is_served(
    server: Server, http: aiohttp.ClientSession
) -> None:
    async with http.post(url(server), data=b"{not json",
                         headers={"Content-Type": "application/json"}) as response:
        assert response.status == 400
        assert response.content_type == "application/problem+json"
    async with http.get(url(server), headers={"Accept": "text/html"}) as response:
        assert response.status == 404  # no GraphiQL: it would load from a CDN
    async with http.post(url(server), json={
            "query": "subscription { events { id } }"}) as response:
        assert response.status == 400  # subscriptions run over the WebSocket only
        assert "WebSocket" in (await response.json())["detail"]
    async with http.get(server.url + "/graphql/schema.graphql") as response:
        sdl = await response.text()
        assert response.status == 200
        assert response.content_type == "text/plain"
    for line in ("type Query {", "type Mutation {", "type Subscription {",
                 "jobEvents(jobId: ID!, afterSeq: Int = null): JobEvent!",
                 "events(afterId: Int = null): JobEvent!", "enum JobState {"):
        assert line in sdl
    assert "http" not in sdl


async def test_job_events_are_the_sse_events_from_every_position(
    make_server: MakeServer, submit: Submit, http: aiohttp.ClientSession
) -> None:
    server = await make_server(progress_rate=0)
    job = await submit(server, "sleep", {"seconds": 0.5, "steps": 5})
    live = await subscription(http, url(server), JOB_EVENTS, {"job": job["id"]})
    sse = await read_stream(http, server.api(f"/jobs/{job['id']}/events"))
    assert live.completed
    assert live.errors == []
    assert live.seqs == list(range(1, 9))
    same_events(live.events, sse)

    last = live.seqs[-1]
    for after in range(last):
        got = await subscription(http, url(server), JOB_EVENTS, {"job": job["id"],
                                                                 "after": after})
        assert got.seqs == list(range(after + 1, last + 1)), after
        assert got.events == live.events[after:]
        assert got.completed
    nothing = await subscription(http, url(server), JOB_EVENTS, {"job": job["id"],
                                                                 "after": last})
    assert nothing.events == []
    assert nothing.completed
    beyond = await subscription(http, url(server), JOB_EVENTS, {"job": job["id"],
                                                                "after": 10**6})
    assert beyond.events == live.events


async def test_events_follow_every_job_with_global_ids_like_the_sse_stream(
    server: Server, submit: Submit, http: aiohttp.ClientSession
) -> None:
    async with graphql_socket(http, url(server)) as socket:
        assert (await socket.init())["type"] == "connection_ack"
        ident = await socket.subscribe(ALL_EVENTS, {"after": None})
        await wait_for(lambda: _subscribed(server, (0, 1)))
        first = await submit(server, "echo", {"value": 1})
        second = await submit(server, "echo", {"value": 2})
        got = await socket.collect(ident, max_events=6)
    sse = await read_stream(http, server.api("/events?last_event_id=0"), max_events=6)
    same_events(got.events, sse, key="id")
    assert {e["jobId"] for e in got.events} == {first["id"], second["id"]}
    for after in (0, 3):
        again = await subscription_until(http, server, {"after": after}, 6 - after)
        assert again == got.events[after:]


async def subscription_until(http: aiohttp.ClientSession, server: Server,
                             variables: dict[str, Any], count: int) -> list[dict[str, Any]]:
    async with graphql_socket(http, url(server)) as socket:
        await socket.init()
        return (await socket.collect(await socket.subscribe(ALL_EVENTS, variables),
                                     max_events=count)).events


async def _subscribed(server: Server, counts: tuple[int, int]) -> bool:
    return server.app[BROKER].counts() == counts


async def test_connection_init_authenticates_and_principals_are_isolated(
    make_server: MakeServer, http: aiohttp.ClientSession
) -> None:
    server = await make_server(api_tokens=f"alice:{ALICE},bob:{BOB}")
    async with http.post(server.api("/jobs"), json={"type": "echo", "params": {"value": 1}},
                         headers=AS_ALICE) as response:
        job = await response.json()
    variables = {"job": job["id"]}

    by_payload = await subscription(http, url(server), JOB_EVENTS, variables,
                                    payload={"Authorization": f"Bearer {ALICE}"})
    assert by_payload.completed
    assert by_payload.events[-1]["event"] == "completed"
    async with graphql_socket(http, url(server), headers=AS_ALICE) as socket:
        assert (await socket.init())["type"] == "connection_ack"  # by the header
    for payload in ({}, {"Authorization": "Bearer nobody-0123456789"}):
        async with graphql_socket(http, url(server)) as socket:
            assert await socket.init(payload) == {"type": "closed", "code": 4403}
    bobs = await subscription(http, url(server), JOB_EVENTS, variables,
                              payload={"Authorization": f"Bearer {BOB}"})
    assert bobs.events == []
    assert bobs.errors[0]["extensions"]["code"] == "NOT_FOUND"

    async with graphql_socket(http, url(server)) as socket:  # bob sees none of alice's
        await socket.init({"Authorization": f"Bearer {BOB}"})
        ident = await socket.subscribe(ALL_EVENTS, {"after": 0})
        await wait_for(lambda: _subscribed(server, (0, 1)))
        async with http.post(server.api("/jobs"), json={"type": "echo"},
                             headers=AS_BOB) as response:
            bob_job = await response.json()
        got = await socket.collect(ident, max_events=3)
    assert {e["jobId"] for e in got.events} == {bob_job["id"]}


async def test_subscriptions_count_against_the_stream_limits(
    make_server: MakeServer, submit: Submit, http: aiohttp.ClientSession
) -> None:
    server = await make_server(max_streams=1)
    job = await submit(server, "sleep", {"seconds": 5, "steps": 1})
    async with graphql_socket(http, url(server)) as socket:
        await socket.init()
        first = await socket.subscribe(JOB_EVENTS, {"job": job["id"]})
        await wait_for(lambda: _subscribed(server, (1, 0)))
        refused = await socket.collect(await socket.subscribe(JOB_EVENTS, {"job": job["id"]}))
        assert [e["extensions"]["code"] for e in refused.errors] == ["UNAVAILABLE"]
        async with http.get(server.api(f"/jobs/{job['id']}/ws")) as response:
            assert response.status == 426 or response.status == 503
        got = await socket.collect(first, max_events=2)
        assert [e["event"] for e in got.events] == ["queued", "processing"]
    await wait_for(lambda: _freed(server))


async def _freed(server: Server) -> bool:
    return server.app[BROKER].counts() == (0, 0) and len(server.app[SOCKETS]) == 0


async def test_closing_connections_frees_every_subscription(
    server: Server, submit: Submit, http: aiohttp.ClientSession
) -> None:
    job = await submit(server, "sleep", {"seconds": 5, "steps": 1})
    for _ in range(3):
        async with graphql_socket(http, url(server)) as socket:
            await socket.init()
            for _ in range(5):
                await socket.subscribe(JOB_EVENTS, {"job": job["id"]})
            await socket.subscribe(ALL_EVENTS)
            await wait_for(lambda: _subscribed(server, (5, 1)))
            async with http.get(server.url + "/metrics") as response:
                text = await response.text()
            assert 'sse_jobs_open_streams{scope="job"} 5.0' in text
            assert 'sse_jobs_open_streams{scope="global"} 1.0' in text
        await wait_for(lambda: _freed(server))


async def test_a_connection_left_behind_is_closed_1013(
    make_server: MakeServer, submit: Submit, http: aiohttp.ClientSession
) -> None:
    server = await make_server(progress_rate=0, subscriber_queue=4, fan_out_rate=0)
    small_send_buffers(server)
    job = await submit(server, "chatty", {"events": 3000, "message_size": 400,
                                           "pause": 0.0005})
    async with graphql_socket(http, url(server)) as socket:
        await socket.init()
        ident = await socket.subscribe(JOB_EVENTS, {"job": job["id"]})
        await wait_for(lambda: _subscribed(server, (1, 0)))
        socket.ws._response.connection.transport.pause_reading()  # type: ignore[union-attr]
        await wait_for(lambda: _subscribed(server, (0, 0)), timeout=30)
        socket.ws._response.connection.transport.resume_reading()  # type: ignore[union-attr]
        first = await asyncio.wait_for(socket.collect(ident), 20)
    assert first.close_code == 1013
    assert not first.completed
    await wait_for(lambda: _finished(http, server, job["id"]), timeout=30)
    rest = await subscription(http, url(server), JOB_EVENTS,
                              {"job": job["id"], "after": first.seqs[-1]})
    sse = await read_stream(http, server.api(f"/jobs/{job['id']}/events"))
    same_events(first.events + rest.events, sse)


async def _finished(http: aiohttp.ClientSession, server: Server, job_id: str) -> bool:
    async with http.get(server.api(f"/jobs/{job_id}")) as response:
        return (await response.json())["finished_at"] is not None


@pytest.mark.parametrize("subscribed", [True, False])
async def test_shutdown_closes_connections_with_1012(
    make_server: MakeServer, submit: Submit, http: aiohttp.ClientSession, subscribed: bool
) -> None:
    server = await make_server(shutdown_grace=0.5)
    job = await submit(server, "sleep", {"seconds": 30, "steps": 1})
    async with graphql_socket(http, url(server)) as socket:
        await socket.init()
        ident = await socket.subscribe(JOB_EVENTS, {"job": job["id"]}) if subscribed else "-"
        if subscribed:
            await wait_for(lambda: _subscribed(server, (1, 0)))
        stopping = asyncio.create_task(server.stop())
        got = await asyncio.wait_for(socket.collect(ident), 10)
        await stopping
    assert got.close_code == 1012
    assert not got.completed

"""Bulk submission: ``POST /api/v1/jobs`` with a JSON array, every valid item stored in
one transaction, ``207`` with what became of each item, in order."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
import orjson

from conftest import MakeServer, Server
from sse_client import read_stream
from sse_jobs import SyncClient
from sse_jobs.client import ApiError, Client

ALICE = "alice-token-0123456789"


async def post_many(http: aiohttp.ClientSession, server: Server, items: Any,
                    headers: dict[str, str] | None = None) -> tuple[int, Any]:
    async with http.post(server.api("/jobs"), data=orjson.dumps(items),
                         headers={"Content-Type": "application/json", **(headers or {})}
                         ) as response:
        return response.status, await response.json()


async def test_valid_items_are_stored_and_each_invalid_one_gets_its_own_problem(
    server: Server, http: aiohttp.ClientSession
) -> None:
    items = [{"type": "echo", "params": {"value": 1}},
             {"type": "echo", "params": {"value": 2}, "priority": 5},
             {"type": "sleep", "params": {"seconds": -1}},
             {"type": "no-such-type"},
             {"type": "echo", "params": {"value": 5}, "bogus": True},
             {"type": "echo", "params": {"value": 6}}]
    status, body = await post_many(http, server, items)
    assert status == 207
    assert [r["status"] for r in body["results"]] == [202, 202, 422, 422, 422, 202]
    assert body["results"][2]["problem"]["errors"][0]["field"] == "params.seconds"
    assert "no-such-type" in body["results"][3]["problem"]["detail"]
    assert body["results"][4]["problem"]["detail"] == "item 4 is not a valid job submission"
    jobs = [r["job"] for r in body["results"] if "job" in r]
    assert [job["params"]["value"] for job in jobs] == [1, 2, 6]
    assert jobs[1]["priority"] == 5
    for job in jobs:
        read = await read_stream(http, server.api(f"/jobs/{job['id']}/events"), timeout=20)
        assert read.names == ["queued", "processing", "completed"]
        assert read.data()[-1]["result"] == job["params"]["value"]
    async with http.get(server.api("/jobs")) as response:
        assert len((await response.json())["jobs"]) == 3  # nothing else was stored


async def test_items_are_stored_in_one_transaction_in_their_order(
    make_server: MakeServer, http: aiohttp.ClientSession
) -> None:
    server = await make_server(workers=1)
    stream = await http.get(server.api("/events?last_event_id=0"))
    items = [{"type": "polite", "params": {"seconds": 30}}] + [
        {"type": "echo", "params": {"value": n}} for n in range(4)]
    status, body = await post_many(http, server, items)
    assert status == 207
    queued = await read_stream(http, server.api("/events?last_event_id=0"),
                               until_terminal=False, max_events=5, timeout=20)
    stream.close()
    assert queued.names == ["queued"] * 5
    assert [d["job_id"] for d in queued.data()] == [r["job"]["id"] for r in body["results"]]
    assert [d["position"] for d in queued.data()] == [1, 2, 3, 4, 5]
    async with http.post(server.api(f"/jobs/{body['results'][0]['job']['id']}/cancel")) as r:
        assert r.status in {200, 202}


async def test_each_item_has_its_own_idempotency_key(
    server: Server, http: aiohttp.ClientSession
) -> None:
    items = [{"type": "echo", "params": {"value": n}, "idempotency_key": f"k{n}"}
             for n in range(3)]
    _, first = await post_many(http, server, items)
    status, again = await post_many(http, server, [*items, {
        "type": "echo", "params": {"value": 99}, "idempotency_key": "k0"}])
    assert status == 207
    assert [r["status"] for r in again["results"]] == [200, 200, 200, 422]
    assert [r["job"]["id"] for r in again["results"][:3]] == [
        r["job"]["id"] for r in first["results"]]
    assert "already used for another request" in again["results"][3]["problem"]["detail"]


async def test_a_bulk_submission_is_refused_whole_when_it_is_no_list_of_jobs(
    server: Server, http: aiohttp.ClientSession
) -> None:
    status, body = await post_many(http, server, [])
    assert (status, body["status"]) == (422, 422)
    status, body = await post_many(http, server, [{"type": "echo"}] * 1001)
    assert status == 422
    assert "1 to 1000" in body["detail"]
    status, body = await post_many(http, server, [{"type": "echo"}],
                                   headers={"Idempotency-Key": "one-for-all"})
    assert status == 400
    assert "idempotency_key in each item" in body["detail"]
    status, body = await post_many(http, server, ["echo", 5, None])
    assert status == 207
    assert [r["status"] for r in body["results"]] == [422, 422, 422]
    async with http.get(server.api("/jobs")) as response:
        assert (await response.json())["jobs"] == []


async def test_items_past_the_queue_limit_get_503_and_the_rest_are_stored(
    make_server: MakeServer, http: aiohttp.ClientSession
) -> None:
    server = await make_server(max_queued=2, workers=1)
    blocker = [{"type": "polite", "params": {"seconds": 30}}]
    _, running = await post_many(http, server, blocker)
    await read_stream(http, server.api(f"/jobs/{running['results'][0]['job']['id']}/events"),
                      max_events=2, until_terminal=False, timeout=20)
    status, body = await post_many(http, server, [{"type": "echo", "params": {"value": n}}
                                                  for n in range(4)])
    assert status == 207
    # One transaction: the queue fills up within it, item by item.
    assert [r["status"] for r in body["results"]] == [202, 202, 503, 503]
    assert all("full" in r["problem"]["detail"] for r in body["results"][2:])
    async with http.post(server.api(f"/jobs/{running['results'][0]['job']['id']}/cancel")):
        pass


async def test_a_principal_past_its_active_job_limit_gets_429_for_the_items_beyond(
    make_server: MakeServer, http: aiohttp.ClientSession
) -> None:
    server = await make_server(api_tokens=f"alice:{ALICE}", max_active_per_principal=2,
                               workers=1)
    headers = {"Authorization": f"Bearer {ALICE}"}
    status, body = await post_many(http, server, [
        {"type": "polite", "params": {"seconds": 30}} for _ in range(3)], headers)
    assert status == 207
    assert [r["status"] for r in body["results"]] == [202, 202, 429]
    assert "2 jobs queued or running" in body["results"][2]["problem"]["detail"]
    for result in body["results"][:2]:
        async with http.post(server.api(f"/jobs/{result['job']['id']}/cancel"),
                             headers=headers):
            pass


async def test_the_python_clients_submit_many(server: Server) -> None:
    async with Client(server.url) as client:
        done = await client.submit_many([{"type": "echo", "params": {"value": "a"}},
                                         {"type": "echo", "params": {"value": -1},
                                          "timeout": -5}])
    job, refused = done
    assert not isinstance(job, ApiError)
    assert job.state == "queued"
    assert isinstance(refused, ApiError)
    assert refused.status == 422
    assert refused.errors[0].field == "timeout"


async def test_the_sync_clients_submit_many(server: Server) -> None:
    def use() -> object:
        with SyncClient(server.url) as client:
            [job] = client.submit_many([{"type": "echo", "params": {"value": 7}}])
            assert not isinstance(job, ApiError)
            return client.wait(job, timeout=30).result

    assert await asyncio.to_thread(use) == 7

"""Re-runs, delayed jobs, tags and per-type concurrency limits, through a real server on
each backend."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import orjson
import pytest

from conftest import MakeServer, Server, Submit, wait_for
from graphql_client import codes, gql
from sse_client import read_stream
from sse_jobs import SyncClient
from sse_jobs.client import ApiError, Client
from sse_jobs.events import iso

ALICE, BOB = "alice-token-0123456789", "bob-token-0123456789ab"


def parse(stamp: str) -> float:
    return datetime.fromisoformat(stamp).timestamp()


async def finished(http: aiohttp.ClientSession, server: Server, job: dict[str, Any]
                   ) -> list[dict[str, Any]]:
    read = await read_stream(http, server.url + job["links"]["events"], timeout=20)
    return read.data()


async def get(http: aiohttp.ClientSession, server: Server, job_id: str,
              headers: dict[str, str] | None = None) -> tuple[int, Any]:
    async with http.get(server.api(f"/jobs/{job_id}"), headers=headers) as response:
        return response.status, await response.json()


async def rerun(http: aiohttp.ClientSession, server: Server, job_id: str,
                headers: dict[str, str] | None = None) -> tuple[int, Any, aiohttp.ClientResponse]:
    async with http.post(server.api(f"/jobs/{job_id}/rerun"), headers=headers) as response:
        return response.status, await response.json(), response


async def post(http: aiohttp.ClientSession, server: Server, body: Any) -> tuple[int, Any]:
    async with http.post(server.api("/jobs"), data=orjson.dumps(body),
                         headers={"Content-Type": "application/json"}) as response:
        return response.status, await response.json(content_type=None)


# -- re-run ---------------------------------------------------------------------------------


async def test_a_failed_job_is_rerun_as_a_new_job_that_names_it(
    server: Server, http: aiohttp.ClientSession, submit: Submit
) -> None:
    old = await submit(server, "flaky", {"failures": 1}, max_attempts=1, priority=4,
                       tags=["nightly"])
    assert [d["event"] for d in await finished(http, server, old)][-1] == "failed"
    _, before = await get(http, server, old["id"])
    status, new, response = await rerun(http, server, old["id"])
    assert status == 202
    assert response.headers["Location"] == f"/api/v1/jobs/{new['id']}"
    assert new["id"] != old["id"]
    assert (new["rerun_of"], new["state"], new["type"], new["params"], new["priority"],
            new["tags"], new["attempt"]) == (old["id"], "queued", "flaky", {"failures": 1}, 4,
                                            ["nightly"], 0)
    assert [d["event"] for d in await finished(http, server, new)] == [
        "queued", "processing", "failed"]  # its first attempt fails again, as the old one's
    assert await get(http, server, old["id"]) == (200, before)  # untouched, still failed


async def test_only_a_failed_or_cancelled_job_is_rerun(
    make_server: MakeServer, http: aiohttp.ClientSession, submit: Submit
) -> None:
    server = await make_server(workers=1)
    done = await submit(server, "echo", {"value": 1})
    await finished(http, server, done)
    running = await submit(server, "polite", {"seconds": 30})
    waiting = await submit(server, "echo", {"value": 2})
    await read_stream(http, server.url + running["links"]["events"], max_events=2)
    for job, state in ((done, "completed"), (running, "processing"), (waiting, "queued")):
        status, problem, response = await rerun(http, server, job["id"])
        assert (status, response.content_type) == (409, "application/problem+json")
        assert problem["detail"] == (f"job {job['id']} is {state}; only a failed or "
                                     "cancelled job can be re-run")
    status, problem, _ = await rerun(http, server, "01M8900000000000000000000Z")
    assert status == 404
    async with http.post(server.api(f"/jobs/{running['id']}/cancel")) as response:
        assert response.status == 202
    await finished(http, server, running)
    status, new, _ = await rerun(http, server, running["id"])
    assert (status, new["rerun_of"], new["params"]) == (202, running["id"], {"seconds": 30})
    async with http.post(server.api(f"/jobs/{new['id']}/cancel")) as response:
        assert response.status in {200, 202}


async def test_another_principals_job_is_not_found_and_a_rerun_counts_against_limits(
    make_server: MakeServer, http: aiohttp.ClientSession
) -> None:
    server = await make_server(api_tokens=f"alice:{ALICE},bob:{BOB}",
                               max_active_per_principal=1, workers=1)
    alice, bob = {"Authorization": f"Bearer {ALICE}"}, {"Authorization": f"Bearer {BOB}"}
    async with http.post(server.api("/jobs"), json={"type": "polite", "params": {}},
                         headers=alice) as response:
        old = await response.json()
    async with http.post(server.api(f"/jobs/{old['id']}/cancel"), headers=alice) as response:
        assert response.status in {200, 202}
    await read_stream(http, server.url + old["links"]["events"], timeout=20)
    status, _, _ = await rerun(http, server, old["id"], bob)
    assert status == 404
    status, new, _ = await rerun(http, server, old["id"], alice)
    assert (status, new["rerun_of"]) == (202, old["id"])
    status, limited, response = await rerun(http, server, old["id"], alice)
    assert status == 429  # the new one is active: alice's one active job
    assert "has 1 jobs queued or running" in limited["detail"]
    assert "Retry-After" in response.headers
    async with http.post(server.api(f"/jobs/{new['id']}/cancel"), headers=alice) as response:
        assert response.status in {200, 202}


# -- delayed jobs ---------------------------------------------------------------------------


async def test_a_delayed_job_stays_queued_with_its_time_and_runs_once_due(
    server: Server, http: aiohttp.ClientSession, submit: Submit
) -> None:
    job = await submit(server, "echo", {"value": 1}, delay=1.0)
    created, run_at = parse(job["created_at"]), parse(job["run_at"])
    assert job["state"] == "queued"
    assert abs(run_at - (created + 1.0)) < 0.01
    events = await finished(http, server, job)
    assert [d["event"] for d in events] == ["queued", "processing", "completed"]
    assert events[0]["run_at"] == job["run_at"]
    assert parse(events[1]["at"]) >= run_at  # never claimed before its time


async def test_run_at_names_the_time_and_one_past_runs_at_once(
    server: Server, http: aiohttp.ClientSession, submit: Submit
) -> None:
    soon = datetime.now(UTC) + timedelta(seconds=1)
    later = await submit(server, "echo", {"value": 1},
                         run_at=soon.isoformat())
    assert later["run_at"] == iso(soon.timestamp())
    past = await submit(server, "echo", {"value": 2}, run_at="2020-01-01T10:00:00+02:00")
    assert past["run_at"] == "2020-01-01T08:00:00.000000Z"
    past_events = await finished(http, server, past)
    assert past_events[-1]["event"] == "completed"
    later_events = await finished(http, server, later)
    assert parse(later_events[1]["at"]) >= soon.timestamp()
    assert parse(past_events[-1]["at"]) < soon.timestamp()  # it did not wait


async def test_timing_that_is_contradictory_or_out_of_bounds_is_422(
    server: Server, http: aiohttp.ClientSession
) -> None:
    base = {"type": "echo", "params": {}}
    cases = [({"delay": 5, "run_at": "2030-01-01T00:00:00Z"}, "delay"),
             ({"delay": 0}, "delay"), ({"delay": -1}, "delay"),
             ({"delay": 31 * 86400}, "delay"), ({"delay": "5"}, "delay"),
             ({"run_at": "2030-01-01T00:00:00"}, "run_at"),  # no offset
             ({"run_at": "tomorrow"}, "run_at"),
             ({"run_at": "0405-10-15T13:32:24-01:25"}, "run_at"),  # before UNIX time
             ({"run_at": iso(time.time() + 31 * 86400)}, "run_at")]
    for extra, field in cases:
        status, problem = await post(http, server, {**base, **extra})
        assert status == 422, extra
        assert field in [e["field"] for e in problem["errors"]], (extra, problem)
    async with http.get(server.api("/jobs")) as response:
        assert (await response.json())["jobs"] == []  # nothing half-written


async def test_a_delayed_job_survives_a_restart(
    make_server: MakeServer, http: aiohttp.ClientSession, submit: Submit
) -> None:
    first = await make_server()
    job = await submit(first, "echo", {"value": 7}, delay=1.5)
    await first.stop()
    second = await make_server()
    events = await finished(http, second, job)
    assert [d["event"] for d in events] == ["queued", "processing", "completed"]
    assert parse(events[1]["at"]) >= parse(job["run_at"])


async def test_bulk_items_take_delays_and_tags(server: Server, http: aiohttp.ClientSession) -> None:
    status, body = await post(http, server, [
        {"type": "echo", "params": {"value": 1}, "delay": 60, "tags": ["bulk"]},
        {"type": "echo", "params": {"value": 2}, "delay": 1, "run_at": "2030-01-01T00:00:00Z"}])
    assert status == 207
    assert [r["status"] for r in body["results"]] == [202, 422]
    job = body["results"][0]["job"]
    assert (job["state"], job["tags"]) == ("queued", ["bulk"])
    assert parse(job["run_at"]) - parse(job["created_at"]) == 60


# -- tags -----------------------------------------------------------------------------------


async def test_tags_are_kept_and_filter_the_listing(
    server: Server, http: aiohttp.ClientSession, submit: Submit
) -> None:
    a = await submit(server, "echo", {}, tags=["team:a", "v1.2_rc-1"])
    ab = await submit(server, "echo", {}, tags=["team:a", "team:b", "team:a"])
    await submit(server, "echo", {})
    assert a["tags"] == ["team:a", "v1.2_rc-1"]
    assert ab["tags"] == ["team:a", "team:b"]  # a tag named twice is kept once

    async def listed(query: str) -> list[str]:
        async with http.get(server.api(f"/jobs?{query}")) as response:
            assert response.status == 200
            return [j["id"] for j in (await response.json())["jobs"]]

    assert await listed("tag=team:a") == [ab["id"], a["id"]]
    assert await listed("tag=team:a&tag=team:b") == [ab["id"]]
    assert await listed("tag=team:a,team:b") == [ab["id"]]
    assert await listed("tag=team:a&limit=1") == [ab["id"]]
    assert await listed("tag=nobody") == []
    async with http.get(server.api("/jobs?" + "&".join(f"tag=t{n}" for n in range(17)))
                        ) as response:
        assert response.status == 400


async def test_tags_out_of_bounds_are_422(server: Server, http: aiohttp.ClientSession) -> None:
    for tags in (["a b"], [""], ["x" * 65], [f"t{n}" for n in range(17)], "a", [1], ["é"]):
        status, problem = await post(http, server, {"type": "echo", "tags": tags})
        assert status == 422, tags
        assert all(e["field"].startswith("tags") for e in problem["errors"]), problem


# -- per-type concurrency -------------------------------------------------------------------


async def test_a_limited_type_runs_one_at_a_time_while_other_types_flow(
    make_server: MakeServer, http: aiohttp.ClientSession, submit: Submit
) -> None:
    server = await make_server(workers=2)
    async with http.get(server.api("/job-types")) as response:
        types = {t["name"]: t for t in (await response.json())["job_types"]}
    assert (types["single"]["concurrency"], types["echo"]["concurrency"]) == (1, None)
    first = await submit(server, "single", {"seconds": 30}, priority=5)
    second = await submit(server, "single", {"seconds": 30}, priority=5)
    await read_stream(http, server.url + first["links"]["events"], max_events=2)
    other = await submit(server, "echo", {"value": 3})  # a free worker, a type with room
    assert [d["event"] for d in await finished(http, server, other)][-1] == "completed"
    _, waiting = await get(http, server, second["id"])
    assert waiting["state"] == "queued"  # the second worker is free, but the type is full
    async with http.post(server.api(f"/jobs/{first['id']}/cancel")) as response:
        assert response.status == 202
    await finished(http, server, first)
    read = await read_stream(http, server.url + second["links"]["events"], max_events=2)
    assert read.names == ["queued", "processing"]

    async def one_running() -> bool:
        async with http.get(server.api("/jobs?state=processing&type=single")) as response:
            return len((await response.json())["jobs"]) == 1

    await wait_for(one_running)
    async with http.post(server.api(f"/jobs/{second['id']}/cancel")) as response:
        assert response.status == 202
    await finished(http, server, second)


# -- GraphQL --------------------------------------------------------------------------------


async def test_graphql_submits_delayed_tagged_jobs_filters_by_tag_and_reruns(
    server: Server, http: aiohttp.ClientSession, submit: Submit
) -> None:
    endpoint = server.url + "/graphql"
    answer = await gql(http, endpoint, """mutation { submitJob(type: "echo", delay: 30,
        tags: ["gql", "x"]) { id state runAt createdAt tags rerunOf } }""")
    delayed = answer["data"]["submitJob"]
    assert (delayed["state"], delayed["tags"], delayed["rerunOf"]) == ("queued", ["gql", "x"],
                                                                     None)
    assert parse(delayed["runAt"]) - parse(delayed["createdAt"]) == 30
    both = await gql(http, endpoint, """mutation { submitJob(type: "echo", delay: 3,
        runAt: "2030-01-01T00:00:00Z") { id } }""")
    assert codes(both) == ["BAD_USER_INPUT"]
    listed = await gql(http, endpoint, '{ jobs(tag: ["gql"]) { jobs { id } } }')
    assert listed["data"]["jobs"]["jobs"] == [{"id": delayed["id"]}]

    old = await submit(server, "flaky", {"failures": 1}, max_attempts=1)
    await finished(http, server, old)
    rerun = """mutation ($id: ID!) { rerunJob(id: $id) { id rerunOf state type } }"""
    again = (await gql(http, endpoint, rerun, {"id": old["id"]}))["data"]["rerunJob"]
    assert (again["rerunOf"], again["state"], again["type"]) == (old["id"], "queued", "flaky")
    assert codes(await gql(http, endpoint, rerun, {"id": delayed["id"]})) == ["CONFLICT"]
    types = await gql(http, endpoint, "{ jobTypes { name concurrency } }")
    assert {"name": "single", "concurrency": 1} in types["data"]["jobTypes"]


# -- the Python clients ---------------------------------------------------------------------


async def test_the_clients_submit_delayed_tagged_jobs_and_rerun(
    server: Server, http: aiohttp.ClientSession
) -> None:
    async with Client(server.url) as client:
        when = datetime.now(UTC) + timedelta(minutes=5)
        later = await client.submit("echo", {"value": 1}, run_at=when, tags=["client"])
        assert (later.state, later.tags, later.run_at) == ("queued", ["client"], when)
        soon = await client.submit("echo", delay=60)
        assert soon.run_at is not None
        assert soon.run_at > soon.created_at
        assert [j.id for j in (await client.list(tag="client")).jobs] == [later.id]
        failed = await client.submit("flaky", {"failures": 1}, max_attempts=1)
        assert (await client.wait(failed.id)).state == "failed"
        again = await client.rerun(failed.id)
        assert (again.rerun_of, again.type, again.state) == (failed.id, "flaky", "queued")
        with pytest.raises(ApiError) as refused:
            await client.rerun(later.id)
        assert refused.value.status == 409

    def use() -> tuple[str | None, list[str]]:
        with SyncClient(server.url) as sync:
            rerun = sync.rerun(again.id) if sync.wait(again.id).state == "failed" else None
            tagged = sync.submit("echo", tags=["sync"], delay=1.5)
            return None if rerun is None else rerun.rerun_of, tagged.tags

    assert await asyncio.to_thread(use) == (again.id, ["sync"])

"""Third-party clients, not ours: the npm packages ``ws`` and ``graphql-ws`` driven from
Node (``tests/node/``) against a real server, each compared with the SSE stream of the
same job event by event. ``.ci/run`` installs Node and runs ``npm ci`` there."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest

from conftest import MakeServer, Server, Submit, wait_for
from graphql_client import ALL_EVENTS, JOB_EVENTS
from sse_client import StreamRead, read_stream
from sse_jobs.web.keys import BROKER

NODE_DIR = Path(__file__).parent.parent / "node"
ALICE = "alice-token-0123456789"


@pytest.fixture(scope="module")
def node() -> str:
    found = shutil.which("node")
    assert found is not None, "Node.js is needed (.ci/run installs it)"
    assert (NODE_DIR / "node_modules" / "graphql-ws").is_dir(), (
        f"run `npm ci` in {NODE_DIR} (.ci/run does)")
    return found


async def run_node(node: str, script: str, *args: str, timeout: float = 30.0
                   ) -> list[dict[str, Any]]:
    """Run ``script`` to its end; the JSON lines it printed."""
    proc = await asyncio.create_subprocess_exec(
        node, str(NODE_DIR / script), *args, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE, cwd=NODE_DIR)
    try:
        async with asyncio.timeout(timeout):
            out, err = await proc.communicate()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert proc.returncode == 0, err.decode()
    return [orjson.loads(line) for line in out.splitlines()]


def ws_url(server: Server, path: str) -> str:
    return server.url.replace("http://", "ws://") + path


def from_sse(sse: StreamRead) -> list[tuple[int, str, dict[str, Any]]]:
    return [(int(e.id or 0), e.event, orjson.loads(e.data)) for e in sse.events]


def frames(lines: list[dict[str, Any]]) -> list[tuple[int, str, dict[str, Any]]]:
    return [(f["id"], f["event"], f["data"]) for f in (x["frame"] for x in lines if "frame" in x)]


def results(lines: list[dict[str, Any]], key: str = "seq") -> list[tuple[int, str, Any]]:
    events = [next(iter(x["next"]["data"].values())) for x in lines if "next" in x]
    return [(e[key], e["event"], e["data"]) for e in events]


async def test_the_ws_package_reads_the_sse_events_from_every_position(
    make_server: MakeServer, submit: Submit, http: aiohttp.ClientSession, node: str
) -> None:
    server = await make_server(progress_rate=0)
    job = await submit(server, "sleep", {"seconds": 0.5, "steps": 5})
    live = await run_node(node, "ws-events.mjs", ws_url(server, job["links"]["ws"]))
    sse = await read_stream(http, server.api(f"/jobs/{job['id']}/events"))
    assert frames(live) == from_sse(sse)
    assert live[-1] == {"close": 1000}

    for after in range(len(sse.events) + 1):
        read = await run_node(node, "ws-events.mjs", ws_url(
            server, f"{job['links']['ws']}?last_event_id={after}"))
        assert frames(read) == from_sse(sse)[after:], after
        assert read[-1] == {"close": 1000}


async def test_the_ws_package_sees_refusals_as_http_statuses_and_pings(
    make_server: MakeServer, http: aiohttp.ClientSession, node: str
) -> None:
    server = await make_server(api_tokens=f"alice:{ALICE}", heartbeat=0.2)
    async with http.post(server.api("/jobs"), json={"type": "sleep", "params": {
            "seconds": 2, "steps": 1}}, headers={"Authorization": f"Bearer {ALICE}"}) as answer:
        job = await answer.json()
    read = await run_node(node, "ws-events.mjs", ws_url(server, job["links"]["ws"]))
    assert {"ping": True} in read  # at --heartbeat while the job sleeps
    assert [f[1] for f in frames(read)] == ["queued", "processing", "progress", "completed"]

    path = f"/api/v1/jobs/{job['id']}/ws"
    assert await run_node(node, "ws-events.mjs", ws_url(server, path)) == [{"status": 401}]
    missing = "/api/v1/jobs/01M8VDHMVQNJ8MJN3WHFAFTX7V/ws"
    assert await run_node(node, "ws-events.mjs", ws_url(server, missing), orjson.dumps(
        {"Authorization": f"Bearer {ALICE}"}).decode()) == [{"status": 404}]


async def test_graphql_ws_subscriptions_are_the_sse_events_from_every_position(
    make_server: MakeServer, submit: Submit, http: aiohttp.ClientSession, node: str
) -> None:
    server = await make_server(progress_rate=0)
    url = ws_url(server, "/graphql")
    submitted = await run_node(node, "graphql-events.mjs", url, """mutation {
        submitJob(type: "sleep", params: {seconds: 0.5, steps: 5}) { id state } }""")
    job = submitted[0]["next"]["data"]["submitJob"]
    assert job["state"] == "queued"
    assert {"complete": True} in submitted

    live = await run_node(node, "graphql-events.mjs", url, JOB_EVENTS, orjson.dumps(
        {"job": job["id"]}).decode())
    sse = await read_stream(http, server.api(f"/jobs/{job['id']}/events"))
    assert results(live) == from_sse(sse)
    assert {"complete": True} in live

    for after in range(len(sse.events) + 1):
        read = await run_node(node, "graphql-events.mjs", url, JOB_EVENTS, orjson.dumps(
            {"job": job["id"], "after": after}).decode())
        assert results(read) == from_sse(sse)[after:], after
        assert {"complete": True} in read


async def test_graphql_ws_follows_every_job_like_the_global_sse_stream(
    server: Server, submit: Submit, http: aiohttp.ClientSession, node: str
) -> None:
    jobs = [await submit(server, "echo", {"value": n}) for n in range(2)]
    for job in jobs:
        await read_stream(http, server.api(f"/jobs/{job['id']}/events"))
    url = ws_url(server, "/graphql")
    got = []
    for after in (0, 2):  # replayed, then live: a job submitted while it follows
        proc = await asyncio.create_subprocess_exec(
            node, str(NODE_DIR / "graphql-events.mjs"), url, ALL_EVENTS,
            orjson.dumps({"after": after}).decode(), stdout=asyncio.subprocess.PIPE,
            cwd=NODE_DIR)
        try:
            stored = 6 + 3 * len(got)  # three events a job: queued, processing, completed
            replayed = await json_lines(proc, stored - after)
            await wait_for(lambda: _global_streams(server, 1))
            await submit(server, "echo", {"value": "live"})
            got.append(results(replayed + await json_lines(proc, 3), key="id"))
        finally:
            proc.kill()
            await proc.wait()
        await wait_for(lambda: _global_streams(server, 0))
    sse = from_sse(await read_stream(http, server.api("/events?last_event_id=0"),
                                     max_events=12))
    assert got[0] == sse[:9]
    assert got[1] == sse[2:12]


async def json_lines(proc: asyncio.subprocess.Process, count: int) -> list[dict[str, Any]]:
    """The next ``count`` JSON lines ``proc`` prints (a subscription that never ends)."""
    assert proc.stdout is not None
    async with asyncio.timeout(20):
        return [orjson.loads(await proc.stdout.readline()) for _ in range(count)]


async def _global_streams(server: Server, number: int) -> bool:
    return server.app[BROKER].counts()[1] == number


async def test_graphql_ws_authenticates_in_connection_params(
    make_server: MakeServer, http: aiohttp.ClientSession, node: str
) -> None:
    server = await make_server(api_tokens=f"alice:{ALICE}")
    url = ws_url(server, "/graphql")
    query = "{ jobTypes { name } }"
    ok = await run_node(node, "graphql-events.mjs", url, query, "{}", orjson.dumps(
        {"Authorization": f"Bearer {ALICE}"}).decode())
    assert {t["name"] for t in ok[0]["next"]["data"]["jobTypes"]} >= {"sleep", "echo"}
    refused = await run_node(node, "graphql-events.mjs", url, query, "{}", orjson.dumps(
        {"Authorization": "Bearer nobody-0123456789"}).decode())
    assert {"closed": 4403} in refused
    assert not any("next" in line for line in refused)

"""The WebSocket and GraphQL channels across a restart and across nodes (contract sections
8 to 10): a client that read part of a job's events on one server resumes on the next,
or on another node of the same PostgreSQL database, with no gap and no duplicate."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import aiohttp
import orjson

from conftest import MakeServer, Process, Submit
from graphql_client import JOB_EVENTS, subscription
from sse_client import StreamRead, read_stream
from ws_client import read_ws

SpawnNode = Callable[..., Process]


def from_sse(sse: StreamRead) -> list[tuple[int, str, dict[str, Any]]]:
    return [(int(e.id or 0), e.event, orjson.loads(e.data)) for e in sse.events]


def ws(url: str) -> str:
    return url.replace("http://", "ws://")


async def test_a_socket_resumes_after_a_restart_without_a_gap(
    make_server: MakeServer, submit: Submit, http: aiohttp.ClientSession
) -> None:
    first = await make_server(progress_rate=0)
    job = await submit(first, "sleep", {"seconds": 1.5, "steps": 6})
    before = await read_ws(http, first.api(f"/jobs/{job['id']}/ws"), max_frames=4)
    await first.stop()  # graceful: the running attempt is requeued, not lost

    second = await make_server(progress_rate=0)
    after = await read_ws(http, second.api(f"/jobs/{job['id']}/ws?last_event_id={before.ids[-1]}"))
    subscribed = await subscription(http, second.url + "/graphql", JOB_EVENTS,
                                    {"job": job["id"], "after": 2})
    sse = from_sse(await read_stream(http, second.api(f"/jobs/{job['id']}/events")))
    assert [(f["id"], f["event"], f["data"]) for f in before.frames + after.frames] == sse
    assert after.close_code == 1000
    assert [(e["seq"], e["event"], e["data"]) for e in subscribed.events] == sse[2:]


async def test_a_client_moves_between_api_nodes_on_both_channels(
    spawn_node: SpawnNode, postgres_url: str, http: aiohttp.ClientSession
) -> None:
    one = spawn_node("--workers", "0", db=postgres_url)
    other = spawn_node("--workers", "0", db=postgres_url)
    spawn_node("--progress-rate", "0", command="worker", db=postgres_url)
    async with http.post(one.api("/jobs"), json={"type": "sleep", "params": {
            "seconds": 1.5, "steps": 6}}) as response:
        job = await response.json()

    began = await read_ws(http, ws(one.url) + job["links"]["ws"], max_frames=3, timeout=60)
    rest = await read_ws(http, ws(other.url) + job["links"]["ws"]
                         + f"?last_event_id={began.ids[-1]}", timeout=60)
    subscribed = await subscription(http, other.url + "/graphql", JOB_EVENTS,
                                    {"job": job["id"], "after": began.ids[-1]})
    sse = from_sse(await read_stream(http, one.api(f"/jobs/{job['id']}/events"), timeout=60))
    assert sse[-1][1] == "completed"
    assert [(f["id"], f["event"], f["data"]) for f in began.frames + rest.frames] == sse
    assert [(e["seq"], e["event"], e["data"]) for e in subscribed.events] == sse[3:]

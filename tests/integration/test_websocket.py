"""The WebSocket channel (contract section 10), read with aiohttp's client and compared
with the SSE stream of the same job event by event."""

from __future__ import annotations

import asyncio
from pathlib import Path

import aiohttp
import orjson
import pytest

from conftest import MakeServer, Server, Submit, wait_for
from sse_client import StreamRead, read_stream
from sse_jobs.web.keys import BROKER, SOCKETS
from ws_client import (
    WsRead,
    handshake_status,
    read_frames,
    read_ws,
    small_receive_buffer,
    small_send_buffers,
)

ALICE, BOB = "alice-token-0123456789", "bob-token-0123456789ab"


def ws_url(server: Server, job_id: str, query: str = "") -> str:
    return server.api(f"/jobs/{job_id}/ws") + query


def same_events(ws: WsRead, sse: StreamRead) -> None:
    """Both channels carried the same events: ids, names and data, in the same order."""
    from_ws = [(f["id"], f["event"], f["data"]) for f in ws.frames]
    from_sse = [(int(e.id or 0), e.event, orjson.loads(e.data)) for e in sse.events]
    assert from_ws == from_sse


async def sse_of(http: aiohttp.ClientSession, server: Server, job_id: str) -> StreamRead:
    return await read_stream(http, server.api(f"/jobs/{job_id}/events"))


async def streams_closed(server: Server) -> bool:
    return await unsubscribed(server) and len(server.app[SOCKETS]) == 0


async def unsubscribed(server: Server) -> bool:
    """No stream is subscribed to events (a closing socket may still be flushing)."""
    return server.app[BROKER].counts() == (0, 0)


async def finished(http: aiohttp.ClientSession, server: Server, job_id: str) -> bool:
    async with http.get(server.api(f"/jobs/{job_id}")) as response:
        return (await response.json())["finished_at"] is not None


async def test_frames_are_the_sse_events_and_the_socket_closes_1000_after_the_terminal_one(
    make_server: MakeServer, submit: Submit, http: aiohttp.ClientSession
) -> None:
    server = await make_server(progress_rate=0)
    job = await submit(server, "sleep", {"seconds": 0.6, "steps": 6})
    assert job["links"]["ws"] == f"/api/v1/jobs/{job['id']}/ws"

    live = await read_ws(http, server.url + job["links"]["ws"])  # connected while queued
    sse = await sse_of(http, server, job["id"])

    assert live.names == ["queued", "processing", *["progress"] * 6, "completed"]
    assert live.ids == list(range(1, 10))
    assert live.close_code == 1000
    same_events(live, sse)


@pytest.mark.parametrize("size", [10, 200, 65_000])  # 7-, 16- and 64-bit frame lengths
async def test_frames_of_every_length_reach_the_client(
    server: Server, submit: Submit, http: aiohttp.ClientSession, size: int
) -> None:
    job = await submit(server, "echo", {"value": "é" * (size // 2)})
    read = await read_ws(http, ws_url(server, job["id"]))
    assert read.frames[-1]["data"]["result"] == "é" * (size // 2)
    same_events(read, await sse_of(http, server, job["id"]))


async def test_resume_from_every_position(
    make_server: MakeServer, submit: Submit, http: aiohttp.ClientSession
) -> None:
    server = await make_server(progress_rate=0)
    job = await submit(server, "sleep", {"seconds": 0.1, "steps": 3})
    sse = await sse_of(http, server, job["id"])
    last = int(sse.events[-1].id or 0)

    for after in range(last):
        read = await read_ws(http, ws_url(server, job["id"], f"?last_event_id={after}"))
        assert read.ids == list(range(after + 1, last + 1)), after
        assert read.close_code == 1000
        assert [f["data"] for f in read.frames] == sse.data()[after:]
    for header in ({"Last-Event-ID": "2"},):
        read = await read_ws(http, ws_url(server, job["id"]), headers=header)
        assert read.ids == list(range(3, last + 1))


async def test_a_finished_job_with_nothing_left_closes_1000_at_once(
    server: Server, submit: Submit, http: aiohttp.ClientSession
) -> None:
    job = await submit(server, "echo", {"value": 1})
    last = int((await sse_of(http, server, job["id"])).events[-1].id or 0)

    read = await read_ws(http, ws_url(server, job["id"], f"?last_event_id={last}"))
    assert read.frames == []
    assert read.close_code == 1000


@pytest.mark.parametrize("resume", ["abc", "-1", "999999"])
async def test_a_resume_id_that_is_no_number_or_beyond_the_last_replays_from_the_first(
    server: Server, submit: Submit, http: aiohttp.ClientSession, resume: str
) -> None:
    job = await submit(server, "echo", {"value": 1})
    sse = await sse_of(http, server, job["id"])

    read = await read_ws(http, ws_url(server, job["id"], f"?last_event_id={resume}"))
    same_events(read, sse)


async def test_refusals_are_http_problems_before_the_upgrade(
    make_server: MakeServer, submit: Submit, http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    server = await make_server(api_tokens=f"alice:{ALICE},bob:{BOB}")
    alice, bob = {"Authorization": f"Bearer {ALICE}"}, {"Authorization": f"Bearer {BOB}"}
    async with http.post(server.api("/jobs"), json={"type": "echo", "params": {"value": 1}},
                         headers=alice) as response:
        job = await response.json()
    url = ws_url(server, job["id"])

    assert await handshake_status(http, url) == 401
    assert await handshake_status(http, url, {"Authorization": "Bearer wrong-token-0123456"}) == 401
    assert await handshake_status(http, url, bob) == 404  # another principal's job
    assert await handshake_status(http, ws_url(server, "01M8VDHMVQNJ8MJN3WHFAFTX7V"), alice) == 404
    async with http.get(url, headers=alice) as response:  # no handshake at all
        assert response.status == 426
        assert response.headers["Upgrade"] == "websocket"
        assert (await response.json())["status"] == 426
    assert await handshake_status(http, url, {**alice, "Origin": "https://evil.example"}) == 403

    # The job-scoped token in links.ws opens this job's socket, and no other job's.
    read = await read_ws(http, server.url + job["links"]["ws"])
    assert read.names[-1] == "completed"
    async with http.post(server.api("/jobs"), json={"type": "echo", "params": {"value": 2}},
                         headers=alice) as response:
        other = await response.json()
    token = job["links"]["ws"].split("?")[1]
    assert await handshake_status(http, ws_url(server, other["id"], f"?{token}")) == 401
    assert await streams_closed(server)


async def test_stream_limits_count_every_channel(
    make_server: MakeServer, submit: Submit, http: aiohttp.ClientSession
) -> None:
    server = await make_server(max_streams=2)
    job = await submit(server, "sleep", {"seconds": 5, "steps": 1})
    async with http.get(server.api(f"/jobs/{job['id']}/events")), \
            http.ws_connect(ws_url(server, job["id"])):
        await wait_for(lambda: _opened(server, 2))
        assert await handshake_status(http, ws_url(server, job["id"])) == 503
        async with http.get(server.api(f"/jobs/{job['id']}/events")) as response:
            assert response.status == 503
    await wait_for(lambda: streams_closed(server))


async def _opened(server: Server, number: int) -> bool:
    return server.app[BROKER].counts()[0] >= number


async def test_a_third_stream_is_refused_503_and_a_principals_excess_429(
    make_server: MakeServer, http: aiohttp.ClientSession
) -> None:
    server = await make_server(max_streams=2, api_tokens=f"alice:{ALICE}",
                               max_streams_per_principal=1)
    alice = {"Authorization": f"Bearer {ALICE}"}
    async with http.post(server.api("/jobs"), json={"type": "sleep", "params": {"seconds": 5}},
                         headers=alice) as response:
        job = await response.json()
    async with http.ws_connect(ws_url(server, job["id"]), headers=alice):
        await wait_for(lambda: _opened(server, 1))
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            async with http.ws_connect(ws_url(server, job["id"]), headers=alice):
                pass
        assert refused.value.status == 429
        assert refused.value.headers is not None
        assert refused.value.headers["Retry-After"] == "5"
        # The token in the job's links is not alice's API token, but the same principal's.
        async with http.get(server.url + job["links"]["events"]) as response:
            assert response.status == 429


async def test_pings_every_heartbeat(
    make_server: MakeServer, submit: Submit, http: aiohttp.ClientSession
) -> None:
    server = await make_server(heartbeat=0.2)
    job = await submit(server, "sleep", {"seconds": 5, "steps": 1})
    read = await read_ws(http, ws_url(server, job["id"]), min_pings=3, timeout=10)
    assert read.pings == 3
    assert read.names[:2] == ["queued", "processing"]


async def test_a_peer_that_stops_reading_is_closed_1013_and_resumes_without_loss(
    make_server: MakeServer, submit: Submit, http: aiohttp.ClientSession
) -> None:
    server = await make_server(progress_rate=0, send_timeout=1.0)
    job = await submit(server, "chatty", {"events": 3000, "message_size": 400})
    await wait_for(lambda: finished(http, server, job["id"]), timeout=30)
    sse = await sse_of(http, server, job["id"])  # before the buffers are made small
    small_send_buffers(server)
    connector = aiohttp.TCPConnector(socket_factory=small_receive_buffer)
    async with aiohttp.ClientSession(connector=connector) as slow, \
            slow.ws_connect(ws_url(server, job["id"])) as ws:
        await wait_for(lambda: unsubscribed(server))  # it gave up on us and freed the stream
        first = await asyncio.wait_for(read_frames(ws), 10)
    assert first.close_code == 1013
    assert 0 < len(first.frames) < len(sse.events)
    rest = await read_ws(http, ws_url(server, job["id"], f"?last_event_id={first.ids[-1]}"))
    same_events(WsRead(first.frames + rest.frames), sse)


async def test_a_live_reader_left_behind_is_dropped_with_1013_and_resumes_without_loss(
    make_server: MakeServer, submit: Submit, http: aiohttp.ClientSession
) -> None:
    server = await make_server(progress_rate=0, send_timeout=60.0, subscriber_queue=8,
                               fan_out_rate=0)
    small_send_buffers(server)
    job = await submit(server, "chatty", {"events": 4000, "message_size": 400,
                                           "pause": 0.0005})
    connector = aiohttp.TCPConnector(socket_factory=small_receive_buffer)
    async with aiohttp.ClientSession(connector=connector) as slow, \
            slow.ws_connect(ws_url(server, job["id"])) as ws:
        await wait_for(lambda: unsubscribed(server), timeout=30)
        first = await asyncio.wait_for(read_frames(ws), 10)
    assert server.app[BROKER].dropped == 1  # the broker dropped it, not the send timeout
    assert first.close_code == 1013
    await wait_for(lambda: finished(http, server, job["id"]), timeout=30)
    sse = await sse_of(http, server, job["id"])  # replayed: too slow a reader of its own live
    rest = await read_ws(http, ws_url(server, job["id"], f"?last_event_id={first.ids[-1]}"))
    same_events(WsRead(first.frames + rest.frames), sse)


async def test_closing_sockets_frees_everything(
    make_server: MakeServer, submit: Submit, http: aiohttp.ClientSession
) -> None:
    server = await make_server()
    job = await submit(server, "sleep", {"seconds": 5, "steps": 1})
    sockets = [await http.ws_connect(ws_url(server, job["id"])) for _ in range(20)]
    await wait_for(lambda: _opened(server, 20))
    assert len(server.app[SOCKETS]) == 20
    async with http.get(server.url + "/metrics") as response:
        assert 'sse_jobs_open_streams{scope="job"} 20.0' in await response.text()
    for ws in sockets[:10]:
        await ws.close()
    for ws in sockets[10:]:  # gone without a close frame
        assert ws._response.connection is not None
        ws._response.connection.transport.abort()  # type: ignore[union-attr]
    await wait_for(lambda: streams_closed(server))
    async with http.get(server.url + "/metrics") as response:
        assert 'sse_jobs_open_streams{scope="job"} 0.0' in await response.text()


async def test_shutdown_closes_sockets_with_1012(
    make_server: MakeServer, submit: Submit, http: aiohttp.ClientSession
) -> None:
    server = await make_server(shutdown_grace=0.5)
    job = await submit(server, "sleep", {"seconds": 30, "steps": 1})
    async with http.ws_connect(ws_url(server, job["id"])) as ws:
        started = await read_frames(ws, max_frames=2)
        assert started.names == ["queued", "processing"]
        stopping = asyncio.create_task(server.stop())
        rest = await asyncio.wait_for(read_frames(ws), 10)
        await stopping
    assert rest.close_code == 1012

"""The Python client against real servers: typed calls, problems, and event streams that
lose nothing across drops, restarts and proxies that get in the way."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import signal
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from conftest import MakeServer, Server, SpawnServer
from sse_jobs.client import (
    ApiError,
    Backoff,
    Client,
    JobEvent,
    StreamUnavailable,
    SyncClient,
    Unreachable,
)

FAST = Backoff(base=0.05, max_delay=0.5)
TOKEN = "alice-token-0123456789abcdef"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


async def collect(client: Client, job: Any, timeout: float = 30.0, **options: Any
                  ) -> list[JobEvent]:
    async with asyncio.timeout(timeout):
        return [event async for event in client.events(job, **options)]


# -- a proxy in front of the real server, standing for a misbehaving one ----------------

StreamHandler = Callable[["Proxy", web.Request], Awaitable[web.StreamResponse]]
PASSED_HEADERS = {"content-type", "retry-after", "location", "content-disposition"}


class Proxy:
    """Forwards every request to ``upstream``; ``/events`` requests go to ``streams``."""

    def __init__(self, upstream: str, session: aiohttp.ClientSession,
                 streams: StreamHandler) -> None:
        self.upstream, self.session, self.streams = upstream, session, streams
        self.seen: list[tuple[str, float]] = []  # (path, monotonic time)
        self.url = ""

    async def handle(self, request: web.Request) -> web.StreamResponse:
        self.seen.append((request.path, time.monotonic()))
        if request.path.endswith("/events"):
            return await self.streams(self, request)
        async with self.upstream_request(request, await request.read()) as upstream:
            return web.Response(status=upstream.status, body=await upstream.read(),
                                headers=_passed(upstream))

    def upstream_request(self, request: web.Request, body: bytes | None = None,
                         drop: tuple[str, ...] = ()) -> Any:
        headers = {k: v for k, v in request.headers.items()
                   if k.lower() not in {"host", *drop}}
        return self.session.request(request.method, self.upstream + request.path_qs,
                                    headers=headers, data=body)

    def times(self, suffix: str) -> list[float]:
        return [at for path, at in self.seen if path.endswith(suffix)]


def _passed(upstream: aiohttp.ClientResponse) -> dict[str, str]:
    return {k: v for k, v in upstream.headers.items() if k.lower() in PASSED_HEADERS}


MakeProxy = Callable[[Server, StreamHandler], Awaitable[Proxy]]


@pytest.fixture
async def make_proxy(http: aiohttp.ClientSession) -> AsyncIterator[MakeProxy]:
    runners: list[web.AppRunner] = []

    async def make(server: Server, streams: StreamHandler) -> Proxy:
        proxy = Proxy(server.url, http, streams)
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", proxy.handle)
        runner = web.AppRunner(app, handler_cancellation=True)  # a held stream ends with its client
        await runner.setup()
        runners.append(runner)
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        proxy.url = f"http://127.0.0.1:{runner.addresses[0][1]}"
        return proxy

    yield make
    for runner in runners:
        await runner.cleanup()


async def bad_gateway(proxy: Proxy, request: web.Request) -> web.StreamResponse:
    return web.Response(status=502, text="<html>502 Bad Gateway</html>",
                        content_type="text/html")


async def not_a_stream(proxy: Proxy, request: web.Request) -> web.StreamResponse:
    return web.Response(text="streaming is disabled here", content_type="text/plain")


async def holds_the_stream(proxy: Proxy, request: web.Request) -> web.StreamResponse:
    """Answers as an event stream but passes nothing on, as a proxy that buffers whole
    responses would."""
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
    await response.prepare(request)
    await asyncio.sleep(20)
    return response


async def forgetful_cut_once(proxy: Proxy, request: web.Request) -> web.StreamResponse:
    """Drops ``Last-Event-ID`` (so the server replays from the start) and cuts the first
    stream after three events: only the client's own bookkeeping prevents duplicates."""
    first = len(proxy.times("/events")) == 1
    async with proxy.upstream_request(request, drop=("last-event-id",)) as upstream:
        response = web.StreamResponse(status=upstream.status, headers=_passed(upstream))
        await response.prepare(request)
        events = 0
        async for line in upstream.content:
            await response.write(line)
            events += line.startswith(b"id:")
            if first and events == 3 and line == b"\n":
                assert request.transport is not None
                request.transport.abort()
                return response
    await response.write_eof()
    return response


# -- following jobs ---------------------------------------------------------------------


async def test_events_across_kill_9_and_restart_have_no_gap_and_no_duplicate(
    spawn_server: SpawnServer, tmp_path: Path
) -> None:
    db, port = tmp_path / "restart.db", free_port()
    flags = ("--port", str(port), "--retry-ms", "100", "--progress-rate", "0",
             "--retry-base", "0.05", "--retry-max", "0.1")
    server = spawn_server(*flags, db=db)
    seen: list[JobEvent] = []
    async with Client(server.url, backoff=FAST, give_up_after=30) as client:
        job = await client.submit("chatty", {"events": 40, "pause": 0.05}, max_attempts=2)
        restart: asyncio.Future[Any] | None = None
        async with asyncio.timeout(60):
            async for event in client.events(job):
                seen.append(event)
                if len(seen) == 5:  # mid-job: kill the server, bring it back meanwhile
                    server.proc.send_signal(signal.SIGKILL)
                    server.proc.wait(timeout=10)
                    restart = asyncio.ensure_future(asyncio.to_thread(spawn_server, *flags, db=db))
            assert restart is not None
            await restart
        replayed = await collect(client, job.id)

    ids = [event.id for event in seen]
    assert ids == list(range(1, len(ids) + 1))
    assert [event.data["seq"] for event in seen] == ids
    assert [event.terminal for event in seen].count(True) == 1
    assert seen[-1].event == "completed"
    retried = [event.data["error"]["type"] for event in seen if event.event == "retrying"]
    assert retried == ["crashed"]  # the kill really happened while the job ran
    assert [(e.id, e.event) for e in replayed] == [(e.id, e.event) for e in seen]


async def test_a_replay_that_overlaps_is_not_yielded_twice_and_retry_is_honoured(
    make_server: MakeServer, make_proxy: MakeProxy
) -> None:
    server = await make_server(progress_rate=0, retry_ms=300)
    proxy = await make_proxy(server, forgetful_cut_once)
    async with Client(server.url) as direct:
        job = await direct.submit("chatty", {"events": 8})
        await asyncio.wait_for(direct.wait(job), 20)  # the whole history comes in one replay
    async with Client(proxy.url, backoff=FAST) as client:
        events = await collect(client, job.id)

    assert [event.id for event in events] == list(range(1, len(events) + 1))
    assert events[-1].event == "completed"
    first, second = proxy.times("/events")
    assert second - first >= 0.3  # the server's retry: 300


@pytest.mark.parametrize("streams", [bad_gateway, not_a_stream, holds_the_stream])
async def test_wait_polls_when_the_stream_is_unavailable(
    make_server: MakeServer, make_proxy: MakeProxy, streams: StreamHandler
) -> None:
    server = await make_server()
    proxy = await make_proxy(server, streams)
    async with Client(proxy.url, backoff=Backoff(base=0.05, max_delay=5),
                      read_timeout=0.5) as client:
        job = await client.submit("sleep", {"seconds": 1.2, "steps": 3})
        async with asyncio.timeout(20):
            done = await client.wait(job)

    assert done.state == "completed"
    assert done.result == {"slept": 1.2}
    stream_at = proxy.times("/events")[0]
    polls = [at for at in proxy.times(job.id) if at > stream_at]
    assert len(polls) >= 2
    gaps = [b - a for a, b in itertools.pairwise(polls)]
    assert all(gap >= 0.95 for gap in gaps)  # Retry-After: 1 while processing


async def test_events_raise_when_no_stream_gets_through(
    make_server: MakeServer, make_proxy: MakeProxy
) -> None:
    server = await make_server()
    plain, gateway = (await make_proxy(server, not_a_stream), await make_proxy(server, bad_gateway))
    async with Client(plain.url) as client:
        job = await client.submit("echo", {"value": 1})
        with pytest.raises(StreamUnavailable) as refused:
            await collect(client, job)
    async with Client(gateway.url, backoff=FAST, give_up_after=0.3) as client:
        with pytest.raises(Unreachable) as down:  # a 502 is retried, but not forever
            await collect(client, job.id)

    assert refused.value.status == 200
    assert "streaming is disabled here" in refused.value.detail
    assert "502" in str(down.value)
    assert len(gateway.times("/events")) >= 2


async def test_events_of_a_finished_job_replay_then_stop_and_204_ends_at_once(
    server: Server
) -> None:
    async with Client(server.url) as client:
        job = await client.submit("echo", {"value": 7})
        final = await asyncio.wait_for(client.wait(job), 20)
        everything = await collect(client, job.id)
        rest = await collect(client, job.id, after=2)
        nothing = await collect(client, job.id, after=final.last_event_id)

    assert [e.event for e in everything] == ["queued", "processing", "completed"]
    assert everything[-1].data["result"] == 7
    assert [e.id for e in rest] == [3]
    assert nothing == []


async def test_wait_returns_failed_and_cancelled_jobs(server: Server) -> None:
    async with Client(server.url) as client:
        failing = await client.submit("flaky", {"failures": 1}, max_attempts=1)
        polite = await client.submit("polite", {"seconds": 30})
        async with asyncio.timeout(20), contextlib.aclosing(client.events(polite)) as events:
            async for event in events:
                if event.event == "progress":
                    break
        async with asyncio.timeout(20):
            asked = await client.cancel(polite.id)
            failed, cancelled = await client.wait(failing), await client.wait(polite.id)

    assert failed.state == "failed"
    assert failed.error is not None
    assert failed.error.message == "attempt 1 fails on purpose"
    assert asked.state == "processing"  # 202: asked to stop
    assert cancelled.state == "cancelled"


async def test_stream_links_with_tokens_are_followed_in_auth_mode(
    make_server: MakeServer
) -> None:
    server = await make_server(api_tokens=f"alice:{TOKEN}")
    async with Client(server.url, token=TOKEN) as client:
        job = await client.submit("echo", {"value": "hi"})
        assert "?token=" in job.links.events
        events = await collect(client, job)
        done = await asyncio.wait_for(client.wait(job.id), 20)
    async with Client(server.url) as anonymous:
        with pytest.raises(ApiError) as refused:
            await anonymous.get(job.id)

    assert events[-1].data["result"] == "hi"
    assert done.result == "hi"
    assert refused.value.status == 401


# -- the rest of the API ----------------------------------------------------------------


async def test_submit_get_list_cancel_delete_and_results(server: Server, tmp_path: Path) -> None:
    async with Client(server.url) as client:
        types = await client.job_types()
        job = await client.submit("write_file", {"name": "r.txt", "content": "hello"},
                                  priority=5, idempotency_key="client-test-1")
        again = await client.submit("write_file", {"name": "r.txt", "content": "hello"},
                                    priority=5, idempotency_key="client-test-1")
        done = await asyncio.wait_for(client.wait(job.id), 20)
        body = await client.download_result(job.id)
        saved = await client.download_result(job.id, tmp_path / "copy.txt")
        queued = await client.submit("sleep", {"seconds": 30})
        listed = await client.list(state=["completed"], type="write_file", limit=10)
        cancelled = await client.cancel(queued.id)
        await asyncio.wait_for(client.wait(queued.id), 20)
        await client.delete(job.id)
        with pytest.raises(ApiError) as gone:
            await client.get(job.id)

    assert {"sleep", "echo", "write_file"} <= {t.name for t in types.job_types}
    assert again.id == job.id
    assert done.state == "completed"
    assert done.priority == 5
    assert body == b"hello"
    assert saved.read_bytes() == b"hello"
    assert [j.id for j in listed.jobs] == [job.id]
    assert listed.next is None
    assert cancelled.state in {"cancelled", "processing"}
    assert gone.value.status == 404
    assert gone.value.title == "Not Found"


async def test_problems_raise_api_error_with_status_title_detail_and_errors(
    server: Server
) -> None:
    async with Client(server.url) as client:
        with pytest.raises(ApiError) as invalid:
            await client.submit("sleep", {"seconds": -1})
        job = await client.submit("echo", {"value": 1})
        await asyncio.wait_for(client.wait(job), 20)
        with pytest.raises(ApiError) as conflict:
            await client.cancel(job.id)

    assert invalid.value.status == 422
    assert invalid.value.title == "Unprocessable Content"
    assert invalid.value.detail == "invalid params for job type 'sleep'"
    assert [e.field for e in invalid.value.errors] == ["params.seconds"]
    assert "params.seconds" in str(invalid.value)
    assert conflict.value.status == 409


async def test_a_server_that_is_not_there_raises_unreachable() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    async with Client(url, backoff=FAST, give_up_after=0.3) as client:
        with pytest.raises(Unreachable) as refused:
            await client.get("01M890GNM18S4HXAG82Y76K6K5")
        with pytest.raises(Unreachable):
            await collect(client, "01M890GNM18S4HXAG82Y76K6K5", timeout=5)

    assert refused.value.reason == "Connection refused"
    assert url in str(refused.value)


async def test_sync_client_submits_waits_and_iterates(server: Server) -> None:
    def use() -> tuple[str, list[int], str]:
        with SyncClient(server.url) as client:
            job = client.submit("chatty", {"events": 3})
            done = client.wait(job, timeout=20)
            ids = [event.id for event in client.events(job.id, timeout=20)]
            return done.state, ids, client.list(limit=1).jobs[0].id

    state, ids, newest = await asyncio.to_thread(use)
    assert state == "completed"
    assert ids == list(range(1, len(ids) + 1))
    assert ids[-1] >= 4
    assert len(newest) == 26


def test_backoff_grows_with_jitter_and_stays_bounded() -> None:
    backoff = Backoff(base=1.0, max_delay=10.0)
    for failures, ceiling in enumerate([1, 2, 4, 8, 10, 10]):
        delays = {backoff.delay(failures) for _ in range(50)}
        assert all(ceiling / 2 <= d <= ceiling for d in delays), (failures, delays)
        assert len(delays) > 1  # jittered
    assert backoff.delay(0, floor=3) == 3  # a Retry-After wins over a shorter pause
    assert backoff.delay(0, floor=60) == 10  # but every pause is bounded
    assert backoff.delay(0, base=0.2, floor=0.2) == 0.2  # the server's retry: after a drop

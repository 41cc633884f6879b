"""What streams hold on the server: a slow reader is dropped (and resumes losing nothing),
closed streams leave nothing behind, a stream to a finished job replays and closes."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Awaitable, Callable
from urllib.parse import urlsplit

import aiohttp

from conftest import MakeServer, Server, Submit, wait_for
from sse_client import read_stream
from sse_jobs.eventstream import EventStreamParser, ServerSentEvent
from sse_jobs.web.keys import BROKER

TERMINAL = {"completed", "failed", "cancelled"}
SLOW_QUEUE, EVENTS = 256, 1000


async def wait_processing(http: aiohttp.ClientSession, server: Server, job_id: str) -> None:
    read = await read_stream(http, server.api(f"/jobs/{job_id}/events"), max_events=2,
                             until_terminal=False, timeout=15)
    assert read.names[:2] == ["queued", "processing"], read.names


async def cancel(http: aiohttp.ClientSession, server: Server, job_id: str) -> None:
    async with http.post(server.api(f"/jobs/{job_id}/cancel")) as response:
        assert response.status == 202, await response.text()


async def job_subscribers(server: Server, number: int) -> None:
    async def subscribed() -> bool:
        return server.app[BROKER].counts()[0] >= number

    await wait_for(subscribed, timeout=10)


# -- a slow subscriber ---------------------------------------------------------------------


class RawStream:
    """An HTTP/1.1 event-stream request on a plain socket with a tiny receive buffer, which
    the test reads only when it chooses to."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.raw = bytearray()
        self.reset = False

    @classmethod
    async def open(cls, server: Server, path: str) -> RawStream:
        address = urlsplit(server.url)
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 2048)  # before connecting
        sock.setblocking(False)
        loop = asyncio.get_running_loop()
        await loop.sock_connect(sock, (address.hostname, address.port))
        request = (f"GET {path} HTTP/1.1\r\nHost: {address.netloc}\r\n"
                   "Accept: text/event-stream\r\n\r\n")
        await loop.sock_sendall(sock, request.encode())
        return cls(sock)

    async def read_to_end(self, timeout: float = 15.0) -> None:
        """Read everything until the server's EOF or reset."""
        loop = asyncio.get_running_loop()
        async with asyncio.timeout(timeout):
            while True:
                try:
                    chunk = await loop.sock_recv(self.sock, 1 << 16)
                except ConnectionResetError:
                    self.reset = True
                    return
                if not chunk:
                    return
                self.raw += chunk

    async def constrain_server_side(self, server: Server, send_buffer: int) -> None:
        """Give the server's end of this connection a small, fixed send buffer, as on a slow
        link. On loopback the kernel would otherwise grow it to several megabytes
        (tcp_wmem) and absorb the whole stream however little the client reads."""
        peer = self.sock.getsockname()
        found: list[socket.socket] = []

        async def accepted() -> bool:
            assert server.runner.server is not None
            for handler in server.runner.server.connections:
                transport = handler.transport
                if transport is not None and transport.get_extra_info("peername") == peer:
                    found.append(transport.get_extra_info("socket"))
                    return True
            return False

        await wait_for(accepted, timeout=10)
        found[0].setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, send_buffer)

    def close(self) -> None:
        self.sock.close()

    def events(self) -> tuple[str, list[ServerSentEvent]]:
        """The status line and the complete events received (a cut-off one is left out)."""
        head, _, body = bytes(self.raw).partition(b"\r\n\r\n")
        status = head.split(b"\r\n", 1)[0].decode()
        if b"transfer-encoding: chunked" in head.lower():
            body = _dechunk(body)
        return status, EventStreamParser().feed(body)


def _dechunk(body: bytes) -> bytes:
    """The payload of a (possibly cut-off) chunked body."""
    out, position = bytearray(), 0
    while (line_end := body.find(b"\r\n", position)) >= 0:
        size = int(body[position:line_end].split(b";")[0], 16)
        if size == 0:
            break
        start = line_end + 2
        out += body[start:start + size]
        position = start + size + 2
        if position > len(body):
            break
    return bytes(out)


async def test_slow_subscriber_is_dropped_and_resumes_without_loss(
    make_server: MakeServer, submit: Submit, http: aiohttp.ClientSession
) -> None:
    # The queue is larger than the bursts this job's progress is committed in (a burst
    # larger than the queue drops every subscriber, see
    # test_reader_that_keeps_up_is_not_dropped_by_a_burst), so only the slow reader falls
    # behind.
    server = await make_server(subscriber_queue=SLOW_QUEUE, progress_rate=0, send_timeout=30,
                               workers=1)
    broker = server.app[BROKER]
    blocker = await submit(server, "polite", {"seconds": 60})
    await wait_processing(http, server, blocker["id"])
    job = await submit(server, "chatty", {"events": EVENTS, "pause": 0.001, "message_size": 400})
    path = f"/api/v1/jobs/{job['id']}/events"

    slow = await RawStream.open(server, path)
    try:
        await slow.constrain_server_side(server, 4096)
        fast_task = asyncio.create_task(read_stream(http, server.url + path, timeout=30))
        await job_subscribers(server, 2)  # both are streaming before the job starts
        assert broker.dropped == 0
        await cancel(http, server, blocker["id"])

        fast = await fast_task
        assert fast.status == 200
        assert fast.names[0] == "queued"
        assert fast.names[-1] == "completed"
        assert fast.names.count("progress") == EVENTS
        final = fast.ids[-1]
        assert fast.ids == list(range(1, final + 1))
        assert broker.dropped == 1  # the slow one, and only it

        await slow.read_to_end()  # the server closed it: EOF or reset, not a hang
    finally:
        slow.close()
    status, received = slow.events()
    assert status == "HTTP/1.1 200 OK"
    got = [int(e.id or 0) for e in received]
    assert got == list(range(1, len(got) + 1))
    assert 1 <= len(got) < final  # cut off: it never got to the end
    assert received[-1].event not in TERMINAL

    resumed = await read_stream(http, server.url + path, headers={"Last-Event-ID": str(got[-1])})
    assert resumed.status == 200
    assert resumed.ids == list(range(got[-1] + 1, final + 1))
    assert resumed.names[-1] == "completed"
    assert [e.data for e in resumed.events] == [e.data for e in fast.events[got[-1]:]]
    assert [e.data for e in received] == [e.data for e in fast.events[:got[-1]]]
    await wait_for(_no_subscribers(server), timeout=10)


async def test_reader_that_keeps_up_is_not_dropped_by_a_burst(
    make_server: MakeServer, submit: Submit, http: aiohttp.ClientSession
) -> None:
    server = await make_server(progress_rate=0, workers=1)  # default queue: 1024 events
    broker = server.app[BROKER]
    blocker = await submit(server, "polite", {"seconds": 60})
    await wait_processing(http, server, blocker["id"])
    job = await submit(server, "chatty", {"events": 3000, "message_size": 400})
    path = f"/api/v1/jobs/{job['id']}/events"
    reader = asyncio.create_task(read_stream(http, server.url + path, timeout=30))
    await job_subscribers(server, 1)
    await cancel(http, server, blocker["id"])
    try:
        read = await reader
    except aiohttp.ClientPayloadError:
        read = None  # the server aborted the stream mid-way
    assert broker.dropped == 0
    assert read is not None
    assert read.names[-1] == "completed"
    assert read.ids == list(range(1, 3004))


async def test_a_peer_that_stops_reading_is_cut_off_after_the_send_timeout(
    make_server: MakeServer, submit: Submit, http: aiohttp.ClientSession
) -> None:
    """A peer that stops reading without closing: its queue never overflows (it is large),
    but once nothing can be written for --send-timeout the stream is ended and freed (by
    the write's own timer, or by the kernel: aiohttp-sse sets TCP_USER_TIMEOUT to the same
    value)."""
    server = await make_server(subscriber_queue=1_000_000, progress_rate=0, send_timeout=1.0)
    broker = server.app[BROKER]
    job = await submit(server, "chatty", {"events": 30_000, "pause": 0.001, "message_size": 400})
    stalled = await RawStream.open(server, f"/api/v1/jobs/{job['id']}/events")
    try:
        await stalled.constrain_server_side(server, 4096)
        await job_subscribers(server, 1)
        await wait_for(_no_subscribers(server), timeout=20)
        await stalled.read_to_end()  # the server closed it: EOF or reset, not a hang
    finally:
        stalled.close()
    assert broker.dropped == 0  # cut off by the send timeout, not by the queue bound
    status, received = stalled.events()
    assert status == "HTTP/1.1 200 OK"
    got = [int(e.id or 0) for e in received]
    assert got == list(range(1, len(got) + 1))
    async with http.get(server.api(f"/jobs/{job['id']}")) as response:
        assert (await response.json())["state"] == "processing"  # cut off long before the end
    await cancel(http, server, job["id"])


def _no_subscribers(server: Server) -> Callable[[], Awaitable[bool]]:
    async def none_left() -> bool:
        return server.app[BROKER].counts() == (0, 0)

    return none_left


# -- many streams opened and closed ----------------------------------------------------------


async def _first_event(response: aiohttp.ClientResponse) -> ServerSentEvent:
    parser = EventStreamParser()
    while True:
        chunk = await response.content.readany()
        assert chunk, "the stream ended before its first event"
        events = parser.feed(chunk)
        if events:
            return events[0]


async def test_closed_streams_leave_nothing_behind(
    server: Server, submit: Submit, http: aiohttp.ClientSession
) -> None:
    job = await submit(server, "polite", {"seconds": 60})
    await wait_processing(http, server, job["id"])
    broker = server.app[BROKER]
    await wait_for(_no_subscribers(server), timeout=10)
    tasks_before = len(asyncio.all_tasks())

    job_url, global_url = server.api(f"/jobs/{job['id']}/events"), server.api("/events")
    connector = aiohttp.TCPConnector(limit=0, force_close=True)
    async with aiohttp.ClientSession(connector=connector,
                                     timeout=aiohttp.ClientTimeout(total=60)) as session:
        responses: list[aiohttp.ClientResponse] = []

        async def open_stream(url: str) -> None:
            response = await session.get(url)
            responses.append(response)
            assert response.status == 200
            first = await _first_event(response)
            assert first.event in {"queued", "progress"}

        async with asyncio.timeout(30):
            await asyncio.gather(*(open_stream(job_url) for _ in range(300)),
                                 *(open_stream(global_url) for _ in range(20)))
        assert len(responses) == 320
        assert broker.counts() == (300, 20)

        for response in responses:
            response.close()

        await wait_for(_no_subscribers(server), timeout=10)

    async def tasks_back() -> bool:
        return len(asyncio.all_tasks()) <= tasks_before

    await wait_for(tasks_back, timeout=10)
    assert broker.counts() == (0, 0)

    # the server still streams, and the job still runs
    read = await read_stream(http, job_url, max_events=3, until_terminal=False)
    assert read.ids[:3] == [1, 2, 3]
    await cancel(http, server, job["id"])
    finished = await read_stream(http, job_url, headers={"Last-Event-ID": "2"})
    assert finished.names[-1] == "cancelled"
    await wait_for(_no_subscribers(server), timeout=10)


# -- a finished job ---------------------------------------------------------------------------


async def test_stream_to_a_finished_job_replays_and_closes(
    server: Server, submit: Submit, http: aiohttp.ClientSession
) -> None:
    job = await submit(server, "flaky", {"failures": 1})
    url = server.api(f"/jobs/{job['id']}/events")
    first = await read_stream(http, url)
    assert first.names == ["queued", "processing", "retrying", "processing", "completed"]

    for headers, expected in (({}, [1, 2, 3, 4, 5]), ({"Last-Event-ID": "0"}, [1, 2, 3, 4, 5]),
                              ({"Last-Event-ID": "3"}, [4, 5]), ({"Last-Event-ID": "4"}, [5])):
        read = await read_stream(http, url, headers=headers, until_terminal=False)
        assert read.status == 200, headers
        assert read.closed_by_server, headers
        assert read.ids == expected, headers
        assert [e.data for e in read.events] == [e.data for e in first.events[expected[0] - 1:]]
    async with http.get(url, headers={"Last-Event-ID": "5"}) as response:
        assert response.status == 204
    await wait_for(_no_subscribers(server), timeout=10)

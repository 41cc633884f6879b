"""The SSE endpoints: replay what the client missed from storage, then stream live.

Race-free resume: the handler subscribes to live events *before* it reads storage, so an
event committed while it replays is either in the replay or in the subscription buffer
(or both — then its id is not above the last one sent and it is skipped). Nothing falls
between the two, and nothing is sent twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
from collections.abc import Awaitable, Callable

from aiohttp import web
from aiohttp_sse import EventSourceResponse

from sse_jobs.broker import Broker, Subscription, SubscriptionClosed
from sse_jobs.config import Settings
from sse_jobs.eventstream import encode_json_event, encode_retry
from sse_jobs.records import Event

REPLAY_PAGE = 2000
# Encoded live events kept for the other streams that send the same event in the same
# framing; larger events (a completed event may carry 64 KiB of result) are not kept.
LIVE_FRAMES = 2048
LIVE_FRAME_MAX_DATA = 2048
# What chunked transfer encoding adds to a write: the size line and its CRLFs.
CHUNK_OVERHEAD = 32
RESUME_QUERY = "last_event_id"

EventKey = Callable[[Event], int]
ReadAfter = Callable[[int], Awaitable[list[Event]]]


def requested_resume(request: web.Request) -> int | None:
    """The client's last event id: the ``Last-Event-ID`` header, else ``?last_event_id``.

    None when absent; 0 (replay everything) when it is not a non-negative number.
    """
    raw = request.headers.get("Last-Event-ID", request.query.get(RESUME_QUERY))
    if raw is None:
        return None
    raw = raw.strip()
    return int(raw) if raw.isascii() and raw.isdigit() and len(raw) <= 18 else 0


async def stream(
    request: web.Request,
    settings: Settings,
    broker: Broker,
    *,
    job_id: str | None,
    principal: str,
    after: int,
    read_after: ReadAfter,
    key: EventKey,
) -> EventSourceResponse:
    """Serve one event stream: replay events with key above ``after``, then live ones.

    A job stream (``job_id`` set) ends after its terminal event; the global one runs
    until the client leaves, falls behind, or the server shuts down.
    """
    subscription = broker.subscribe(job_id, principal)
    response = EventSourceResponse(ping_interval=settings.heartbeat,
                                   send_timeout=settings.send_timeout, sep="\n")
    response.headers["Content-Type"] = "text/event-stream; charset=utf-8"
    try:
        await response.prepare(request)
        subscription.on_drop = lambda: _abort(request)
        await _send(request, response, encode_retry(settings.retry_ms), settings.send_timeout)
        last, ended = await _replay(request, response, settings, read_after, key, after,
                                    job_stream=job_id is not None)
        if not ended:
            await _live(request, response, settings, subscription, key, last,
                        job_stream=job_id is not None)
    except SubscriptionClosed:
        pass  # shutdown or a dropped slow reader: end the response; the client resumes
    except (ConnectionResetError, TimeoutError):
        _abort(request)
    finally:
        broker.unsubscribe(subscription)
        if response.prepared:
            response.stop_streaming()
            with contextlib.suppress(Exception):
                await response.wait()
    return response


async def _replay(
    request: web.Request, response: web.StreamResponse, settings: Settings,
    read_after: ReadAfter, key: EventKey, after: int, *, job_stream: bool,
) -> tuple[int, bool]:
    """Send stored events after ``after`` page by page; (last key sent, stream ended)."""
    while True:
        page = await read_after(after)
        if not page:
            return after, False
        payload = b"".join(_frame(key(event), event.name.value, event.data) for event in page)
        await _send(request, response, payload, settings.send_timeout)
        after = key(page[-1])
        if job_stream and page[-1].terminal:
            return after, True
        if len(page) < REPLAY_PAGE:
            return after, False


async def _live(
    request: web.Request, response: web.StreamResponse, settings: Settings,
    subscription: Subscription, key: EventKey, last: int, *, job_stream: bool,
) -> None:
    while True:
        batch = [event for event in await subscription.next_batch() if key(event) > last]
        if not batch:
            continue
        payload = b"".join(_live_frame(key(event), event) for event in batch)
        await _send(request, response, payload, settings.send_timeout)
        last = key(batch[-1])
        if job_stream and batch[-1].terminal:
            return


def _frame(ident: int, name: str, data: bytes) -> bytes:
    return encode_json_event(data, id=ident, event=name)


# A live event goes to every stream of its job (or every global stream) at about the same
# time: encode it once for all of them. The arguments determine the bytes, so a cached
# frame is always the right one.
_shared_frame = functools.lru_cache(maxsize=LIVE_FRAMES)(_frame)


def _live_frame(ident: int, event: Event) -> bytes:
    if len(event.data) > LIVE_FRAME_MAX_DATA:
        return _frame(ident, event.name.value, event.data)
    return _shared_frame(ident, event.name.value, event.data)


async def _send(
    request: web.Request, response: web.StreamResponse, payload: bytes, limit: float
) -> None:
    """Write, but never wait longer than ``limit`` seconds on a peer that stopped reading.

    A write can wait only while writing is paused, which the transport does once its
    buffer is above the high-water mark, until the peer has read it down to the low one.
    So the timer is armed only for a write made while paused or that may cross the mark:
    a timer for every write was the costliest step of fanning an event out to many streams.
    """
    transport, protocol = request.transport, request.protocol
    if transport is not None and not protocol.writing_paused:
        _low, high = transport.get_write_buffer_limits()
        if transport.get_write_buffer_size() + len(payload) + CHUNK_OVERHEAD <= high:
            await response.write(payload)
            return
    async with asyncio.timeout(limit):
        await response.write(payload)


def _abort(request: web.Request) -> None:
    if request.transport is not None:
        request.transport.abort()


def come_back_later(settings: Settings) -> web.Response:
    """The answer to a stream request while shutting down: an empty stream with only a
    ``retry:`` field. EventSource treats a 503 as fatal and stops reconnecting, but it
    retries after an empty 200, so browsers find the server again once it is back."""
    return web.Response(body=encode_retry(settings.retry_ms), headers={
        "Content-Type": "text/event-stream; charset=utf-8", "Cache-Control": "no-cache"})

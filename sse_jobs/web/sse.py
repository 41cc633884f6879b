"""The SSE channel (contract section 4 on the wire): a ``StreamSource`` written as
``text/event-stream``, with heartbeats, a send timeout, and cleanup on every exit."""

from __future__ import annotations

import contextlib
import functools

from aiohttp import web
from aiohttp_sse import EventSourceResponse

from sse_jobs.config import Settings
from sse_jobs.eventstream import encode_json_event, encode_retry
from sse_jobs.paths import API
from sse_jobs.records import Event
from sse_jobs.streams.broker import SubscriptionClosed
from sse_jobs.streams.source import NothingToSend, ShuttingDown, StreamSource, parse_resume
from sse_jobs.web import sending
from sse_jobs.web.keys import PRINCIPAL, SETTINGS, STREAMS

# Encoded live events kept for the other streams that send the same event in the same
# framing; larger events (a completed event may carry 64 KiB of result) are not kept.
LIVE_FRAMES = 2048
LIVE_FRAME_MAX_DATA = 2048
RESUME_QUERY = "last_event_id"


def add_routes(app: web.Application) -> None:
    app.add_routes([
        web.get(f"{API}/jobs/{{id}}/events", job_events, allow_head=False, name="job_events"),
        web.get(f"{API}/events", all_events, allow_head=False, name="all_events"),
    ])


async def job_events(request: web.Request) -> web.StreamResponse:
    """``GET /api/v1/jobs/ID/events``: one job's events."""
    settings = request.app[SETTINGS]
    try:
        source = await request.app[STREAMS].job(
            request.match_info["id"], request[PRINCIPAL], requested_resume(request))
    except ShuttingDown:
        return come_back_later(settings)
    except NothingToSend:
        return web.Response(status=204)  # EventSource stops reconnecting on 204
    return await serve(request, settings, source)


async def all_events(request: web.Request) -> web.StreamResponse:
    """``GET /api/v1/events``: every job's events, of the caller's jobs."""
    settings = request.app[SETTINGS]
    principal = request[PRINCIPAL]
    assert principal is not None, "a stream token for the global stream names its principal"
    try:
        source = await request.app[STREAMS].everything(principal, requested_resume(request))
    except ShuttingDown:
        return come_back_later(settings)
    return await serve(request, settings, source)


def requested_resume(request: web.Request) -> int | None:
    """The client's last event id: the ``Last-Event-ID`` header, else ``?last_event_id``
    (for clients that cannot set headers)."""
    return parse_resume(request.headers.get("Last-Event-ID", request.query.get(RESUME_QUERY)))


async def serve(request: web.Request, settings: Settings,
                source: StreamSource) -> EventSourceResponse:
    """Write ``source`` as an event stream until it ends, the client leaves, the client
    falls behind, or the server shuts down; the source is closed on every path."""
    response = EventSourceResponse(ping_interval=settings.heartbeat,
                                   send_timeout=settings.send_timeout, sep="\n")
    response.headers["Content-Type"] = "text/event-stream; charset=utf-8"
    async with source:
        try:
            await response.prepare(request)
            source.on_drop(lambda: _abort(request))
            await _send(request, response, encode_retry(settings.retry_ms),
                        settings.send_timeout)
            while (batch := await source.next_batch()) is not None:
                await _send(request, response, _encode_batch(source, batch),
                            settings.send_timeout)
                del batch  # an idle stream keeps no events while it waits for the next
        except SubscriptionClosed:
            pass  # shutdown or a dropped slow reader: end the response; the client resumes
        except (ConnectionResetError, TimeoutError):
            _abort(request)
        finally:
            if response.prepared:
                response.stop_streaming()
                with contextlib.suppress(Exception):
                    await response.wait()
    return response


def _encode_batch(source: StreamSource, batch: list[Event]) -> bytes:
    frame = _live_frame if source.live else _frame
    return b"".join(frame(source.key(event), event) for event in batch)


def _encode(ident: int, name: str, data: bytes) -> bytes:
    return encode_json_event(data, id=ident, event=name)


def _frame(ident: int, event: Event) -> bytes:
    return _encode(ident, event.name.value, event.data)


# A live event goes to every stream of its job (or every global stream) at about the same
# time: encode it once for all of them. The arguments determine the bytes, so a cached
# frame is always the right one.
_shared_frame = functools.lru_cache(maxsize=LIVE_FRAMES)(_encode)


def _live_frame(ident: int, event: Event) -> bytes:
    if len(event.data) > LIVE_FRAME_MAX_DATA:
        return _frame(ident, event)
    return _shared_frame(ident, event.name.value, event.data)


async def _send(
    request: web.Request, response: web.StreamResponse, payload: bytes, limit: float
) -> None:
    await sending.bounded(request, response.write(payload), len(payload), limit)


def _abort(request: web.Request) -> None:
    if request.transport is not None:
        request.transport.abort()


def come_back_later(settings: Settings) -> web.Response:
    """The answer to a stream request while shutting down: an empty stream with only a
    ``retry:`` field. EventSource treats a 503 as fatal and stops reconnecting, but it
    retries after an empty 200, so browsers find the server again once it is back."""
    return web.Response(body=encode_retry(settings.retry_ms), headers={
        "Content-Type": "text/event-stream; charset=utf-8", "Cache-Control": "no-cache"})

"""The WebSocket channel (contract section 10): a job's ``StreamSource`` as one text frame
per event, ``{"id": N, "event": NAME, "data": {...}}``, with the ids and ``data`` of the
SSE stream. Refusals (401, 404, 429, 503; 426 for a request that is no handshake, 403
for a foreign origin) are answered before the upgrade; ``sockets`` has the pings, the
bounded writes and the close codes."""

from __future__ import annotations

import asyncio
import contextlib
import functools
from collections.abc import Collection
from urllib.parse import urlsplit

from aiohttp import web
from aiohttp.abc import AbstractStreamWriter

from sse_jobs.config import Settings
from sse_jobs.paths import API
from sse_jobs.records import Event
from sse_jobs.streams.broker import SubscriptionClosed
from sse_jobs.streams.source import NothingToSend, StreamSource
from sse_jobs.web import sockets
from sse_jobs.web.keys import PRINCIPAL, SETTINGS, SOCKETS, STREAMS
from sse_jobs.web.middleware import problem
from sse_jobs.web.sockets import Connection
from sse_jobs.web.sse import requested_resume

# The client has nothing to say on this channel; a larger frame closes it with 1009.
INCOMING_MAX = 4096
# Framed live events kept for the other sockets of the same job (as in sse.py).
LIVE_FRAMES = 2048
LIVE_FRAME_MAX_DATA = 2048


def add_routes(app: web.Application) -> None:
    app.add_routes([
        web.get(f"{API}/jobs/{{id}}/ws", job_ws, allow_head=False, name="job_ws"),
    ])


async def job_ws(request: web.Request) -> web.StreamResponse:
    """``GET /api/v1/jobs/ID/ws``: one job's events over a WebSocket."""
    settings = request.app[SETTINGS]
    refused = refusal(request, settings.cors_origin)
    if refused is not None:
        return refused
    try:
        source = await request.app[STREAMS].job(
            request.match_info["id"], request[PRINCIPAL], requested_resume(request))
    except NothingToSend:
        source = None  # a finished job with nothing left: open, then close with 1000 at once
    return await serve(request, settings, source)


def _encode(ident: int, name: str, data: bytes) -> bytes:
    """The frame of one event: its id on this stream, its name, and its stored data."""
    return sockets.text_frame(b'{"id":%d,"event":"%s","data":%s}' % (ident, name.encode(), data))


def _frame(ident: int, event: Event) -> bytes:
    return _encode(ident, event.name.value, event.data)


# A live event goes to every socket of its job at about the same time: frame it once for
# all of them (as sse.py does). The arguments determine the bytes.
_shared_frame = functools.lru_cache(maxsize=LIVE_FRAMES)(_encode)


def _live_frame(ident: int, event: Event) -> bytes:
    if len(event.data) > LIVE_FRAME_MAX_DATA:
        return _frame(ident, event)
    return _shared_frame(ident, event.name.value, event.data)


async def serve(request: web.Request, settings: Settings,
                source: StreamSource | None) -> web.WebSocketResponse:
    """Upgrade, send ``source`` until it ends, the peer leaves or falls behind, or the
    server shuts down, then close with the code that says which. The source is freed as
    soon as its stream ends, before the close handshake."""
    ws = sockets.response(settings, max_msg_size=INCOMING_MAX)
    connection = Connection(request, ws, settings.send_timeout)
    with request.app[SOCKETS].holding(connection):
        if source is None:
            await ws.prepare(request)
            await connection.close(sockets.NORMAL)
            return ws
        async with source:
            writer = await ws.prepare(request)
            source.on_drop(lambda: connection.close_soon(sockets.TRY_AGAIN_LATER))
            pump = asyncio.create_task(_pump(connection, writer, source))
            try:
                await connection.until_closed()
            finally:
                pump.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await pump
        await connection.close(sockets.GOING_AWAY)
    return ws


async def _pump(connection: Connection, writer: AbstractStreamWriter,
                source: StreamSource) -> None:
    """Send every event of ``source``, a batch in one write, then start the close that
    fits how it ended."""
    code = sockets.TRY_AGAIN_LATER
    try:
        async for batch in source.batches():
            frame = _live_frame if source.live else _frame
            if not await connection.send_frames(
                    writer, [frame(source.key(event), event) for event in batch]):
                return
        code = sockets.NORMAL
    except SubscriptionClosed as closed:
        code = sockets.TRY_AGAIN_LATER if closed.dropped else sockets.SERVICE_RESTART
    finally:
        connection.close_soon(code)


def refusal(request: web.Request, allowed_origins: Collection[str]) -> web.Response | None:
    """Why this request may not become a WebSocket, as a problem answered before the
    upgrade; None when it may.

    A browser page on another origin may open one only when ``--cors-origin`` names its
    origin, as for the rest of the API (a WebSocket handshake is not subject to CORS)."""
    if not web.WebSocketResponse().can_prepare(request).ok:
        answer = problem(426, "Upgrade Required", "this resource is a WebSocket: send a "
                         "WebSocket handshake (Upgrade: websocket)", "upgrade-required")
        answer.headers["Upgrade"] = "websocket"
        return answer
    origin = request.headers.get("Origin")
    if origin is None or origin in allowed_origins or _same_origin(origin, request.host):
        return None
    return problem(403, "Forbidden", f"origin {origin!r} is not allowed", "cors")


def _same_origin(origin: str, host: str) -> bool:
    return urlsplit(origin).netloc.lower() == host.lower()

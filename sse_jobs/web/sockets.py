"""What every WebSocket channel shares (contract section 10): how a connection is opened,
how each frame is sent within ``--send-timeout``, and how it is closed, once, with the
code that says why.

Close codes (RFC 6455 section 7.4, and the IANA registry it set up):

    1000  normal     the stream is over: the job's terminal event was sent, or a finished
                     job had nothing left to send
    1012  restart    the server is shutting down: reconnect later and resume
    1013  try again  the peer did not read fast enough (a send stalled for
                     ``--send-timeout``, or it fell ``--subscriber-queue`` events behind):
                     reconnect and resume; nothing is lost

A close is bounded too: a peer that does not take even the close frame within
``--send-timeout`` has its connection cut, and so has one that does not answer a ping
within ``--send-timeout`` (it has vanished: the peer sees 1006, no close frame).
"""

from __future__ import annotations

import asyncio
import contextlib
import struct
from collections.abc import Coroutine, Iterable, Iterator
from typing import Any

from aiohttp import WSCloseCode, WSMsgType, web
from aiohttp.abc import AbstractStreamWriter

from sse_jobs.config import Settings
from sse_jobs.web import sending

NORMAL = int(WSCloseCode.OK)
GOING_AWAY = int(WSCloseCode.GOING_AWAY)
SERVICE_RESTART = int(WSCloseCode.SERVICE_RESTART)
TRY_AGAIN_LATER = int(WSCloseCode.TRY_AGAIN_LATER)
FLUSH_POLL = 0.05  # seconds between looks at what a closing connection has left to send


def text_frame(payload: bytes) -> bytes:
    """One unmasked, unfragmented text frame of UTF-8 ``payload``, as a server sends it
    (RFC 6455 section 5.2): FIN and opcode 1, then the length in 7 bits, or 126 and 16
    bits, or 127 and 64 bits."""
    size = len(payload)
    if size < 126:
        header = struct.pack("!BB", 0x81, size)
    elif size < 1 << 16:
        header = struct.pack("!BBH", 0x81, 126, size)
    else:
        header = struct.pack("!BBQ", 0x81, 127, size)
    return header + payload


class _WebSocket(web.WebSocketResponse):
    """aiohttp's WebSocket, with a peer given ``--send-timeout`` to answer a ping rather
    than half the heartbeat: a pong waits behind every frame the peer has not read yet,
    and a reader that is merely behind is told so with 1013 by the send timeout, as SSE
    readers are, not cut as if it had vanished."""

    def __init__(self, *, pong_timeout: float, **options: Any) -> None:
        super().__init__(**options)
        self._pong_heartbeat = pong_timeout


def response(settings: Settings, *, max_msg_size: int,
             protocols: tuple[str, ...] = ()) -> web.WebSocketResponse:
    """A WebSocket that pings every ``--heartbeat`` seconds (a peer that does not answer
    within ``--send-timeout`` is gone) and compresses nothing: the frames are small, and
    per-message deflate would cost every connection its own compressor's memory and
    every subscriber its own compression of the same event."""
    return _WebSocket(heartbeat=settings.heartbeat, pong_timeout=settings.send_timeout,
                      timeout=settings.send_timeout, compress=False,
                      max_msg_size=max_msg_size, protocols=protocols)


class Connection:
    """One open WebSocket: frames sent within ``--send-timeout``, and one close."""

    def __init__(self, request: web.Request, ws: web.WebSocketResponse,
                 send_timeout: float) -> None:
        self.request = request
        self.ws = ws
        self._limit = send_timeout
        self._closing: asyncio.Task[None] | None = None

    @property
    def closing(self) -> bool:
        return self._closing is not None or self.ws.closed

    async def send(self, payload: bytes) -> bool:
        """Send one text frame (``payload`` is UTF-8). False when the connection is closing
        and the frame was not sent: it was closing already, the peer has gone, or it did
        not take the frame within ``--send-timeout`` (then it is closed with 1013)."""
        return await self._bounded(self.ws.send_frame(payload, WSMsgType.TEXT), len(payload))

    async def send_frames(self, writer: AbstractStreamWriter, frames: Iterable[bytes]) -> bool:
        """Send encoded frames (``text_frame``) in one write through the WebSocket's
        stream ``writer`` (what ``prepare`` returned): one system call for a batch, as
        SSE makes one per fan-out; answered as ``send``."""
        payload = b"".join(frames)
        return await self._bounded(writer.write(payload), len(payload))

    async def _bounded(self, write: Coroutine[Any, Any, None], size: int) -> bool:
        if self.closing:
            write.close()
            return False
        try:
            await sending.bounded(self.request, write, size, self._limit)
        except TimeoutError:
            self.close_soon(TRY_AGAIN_LATER)
            return False
        except ConnectionResetError:
            self.close_soon(GOING_AWAY)
            return False
        return True

    async def until_closed(self) -> None:
        """Read until the WebSocket closes, from either side. Reading is what answers the
        peer's pings and notices its pongs and its close; what it sends is ignored."""
        async for _message in self.ws:
            pass

    def close_soon(self, code: int) -> None:
        """Start closing with ``code``, unless a close is already under way."""
        if self._closing is None and self.ws.prepared and not self.ws.closed:
            self._closing = asyncio.get_running_loop().create_task(self._close(code))

    async def close(self, code: int) -> None:
        """Close with ``code`` (unless a close is already under way) and wait until done."""
        self.close_soon(code)
        if self._closing is not None:
            await asyncio.wait([self._closing])  # however it ended, it has ended

    async def _close(self, code: int) -> None:
        """Queue the close frame behind what is already buffered, without waiting for the
        buffer to drain, then give the peer ``--send-timeout`` to read down to it and
        answer; a peer that has not by then is cut off."""
        deadline = asyncio.get_running_loop().time() + 2 * self._limit  # aiohttp waits one
        try:
            async with asyncio.timeout_at(deadline):
                await self.ws.close(code=code, drain=False)
                # The transport is still flushing, the close frame last. asyncio signals
                # no "buffer empty" (aiohttp's drain wakes at the low-water mark), so look.
                while self._unsent():  # noqa: ASYNC110
                    await asyncio.sleep(FLUSH_POLL)
        except TimeoutError:
            pass
        except asyncio.CancelledError:
            # aiohttp shares one drain future among its writers: a send given up on by
            # its timeout leaves it cancelled, and the close's own drain sees that. Only
            # a cancellation of this task itself goes on.
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                raise
        finally:
            if self._unsent() and self.request.transport is not None:
                self.request.transport.abort()

    def _unsent(self) -> int:
        transport = self.request.transport
        return transport.get_write_buffer_size() if transport is not None else 0


class Sockets:
    """The open WebSocket connections, so that shutdown can close every one of them."""

    def __init__(self) -> None:
        self._open: set[Connection] = set()

    def add(self, connection: Connection) -> None:
        self._open.add(connection)

    def discard(self, connection: Connection) -> None:
        self._open.discard(connection)

    @contextlib.contextmanager
    def holding(self, connection: Connection) -> Iterator[Connection]:
        self.add(connection)
        try:
            yield connection
        finally:
            self.discard(connection)

    def close_all(self, code: int) -> None:
        for connection in list(self._open):
            connection.close_soon(code)

    def __len__(self) -> int:
        return len(self._open)

"""Guarding the listening socket: a cap on open connections, a deadline for a new
connection's request headers, and an open-file limit that fits the cap.

aiohttp closes a keep-alive connection that idles between requests, but it waits for the
first request's headers for ever, and it accepts connections until the process runs out of
file descriptors. Each accepted connection is wrapped in a small protocol that forwards
everything to aiohttp's own and adds those two bounds.
"""

from __future__ import annotations

import asyncio
import logging
import resource
import time
from collections.abc import Callable

from sse_jobs.metrics import Metrics

log = logging.getLogger(__name__)

# Files the process needs besides its connections: the database and its journal, the
# worker pool's pipes, webhook and PostgreSQL sockets, result files, logs.
RESERVED_FILES = 256
FILES_PER_WORKER = 8
# How long a refused connection's unread request is drained before the socket is closed.
LINGER = 1.0
# A refused or timed-out connection is logged at most this often, not once per connection.
WARNING_INTERVAL = 10.0
_BUSY = (b"HTTP/1.1 503 Service Unavailable\r\nConnection: close\r\nContent-Length: 0\r\n"
         b"Retry-After: 1\r\n\r\n")
_TIMED_OUT = b"HTTP/1.1 408 Request Timeout\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"
# aiohttp accepts bare LF line ends too; either blank line ends the headers.
_HEADER_ENDS = (b"\r\n\r\n", b"\n\n")


def fit_open_files(connections: int, workers: int) -> int:
    """Raise the soft open-file limit towards what ``connections`` need (up to the hard
    limit) and return how many connections the limit now allows."""
    needed = connections + RESERVED_FILES + FILES_PER_WORKER * workers
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < needed:
        soft = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    if soft == resource.RLIM_INFINITY:
        return connections
    return max(0, min(connections, soft - RESERVED_FILES - FILES_PER_WORKER * workers))


class ConnectionGuard:
    """The listening socket's protocol factory: counts open connections, answers those
    over ``limit`` with 503, and those whose first request's headers take longer than
    ``header_timeout`` seconds with 408."""

    def __init__(self, factory: Callable[[], asyncio.Protocol], *, limit: int,
                 header_timeout: float, metrics: Metrics) -> None:
        self._factory = factory
        self.limit = limit
        self.header_timeout = header_timeout
        self._metrics = metrics
        self.open = 0
        self._warned_at: dict[str, float] = {}
        metrics.open_connections.set_function(lambda: self.open)

    def __call__(self) -> asyncio.Protocol:
        return _GuardedConnection(self)

    def admit(self) -> asyncio.Protocol | None:
        """The protocol of a new connection, or None when the cap is reached."""
        if self.open >= self.limit:
            self._count("limit", f"refusing connections: {self.limit} are open "
                                 "(--max-connections)")
            return None
        self.open += 1
        return self._factory()

    def release(self) -> None:
        self.open -= 1

    def timed_out(self) -> None:
        self._count("header_timeout", "closing connections that sent no complete request "
                                      f"headers within {self.header_timeout:g}s")

    def _count(self, reason: str, warning: str) -> None:
        self._metrics.connections_refused.labels(reason).inc()
        now = time.monotonic()
        if now - self._warned_at.get(reason, -WARNING_INTERVAL) >= WARNING_INTERVAL:
            self._warned_at[reason] = now
            log.warning(warning)


class _GuardedConnection(asyncio.Protocol):
    """One connection: aiohttp's protocol behind the guard's two bounds."""

    __slots__ = ("_deadline", "_guard", "_inner", "_tail", "_transport")

    def __init__(self, guard: ConnectionGuard) -> None:
        self._guard = guard
        self._inner: asyncio.Protocol | None = None
        self._transport: asyncio.Transport | None = None
        self._deadline: asyncio.TimerHandle | None = None
        self._tail = b""  # the end of what came so far, for a blank line split across reads

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport
        self._inner = self._guard.admit()
        if self._inner is None:
            # Closed with the request unread, the socket would be reset and the 503 lost:
            # end our side, then drop what the client still sends for a moment.
            transport.write(_BUSY)
            transport.write_eof()
            self._deadline = asyncio.get_running_loop().call_later(LINGER, transport.close)
            return
        self._deadline = asyncio.get_running_loop().call_later(
            self._guard.header_timeout, self._expire)
        self._inner.connection_made(transport)

    def data_received(self, data: bytes) -> None:
        if self._inner is None:
            return
        if self._deadline is not None:
            seen = self._tail + data
            if any(end in seen for end in _HEADER_ENDS):
                self._deadline.cancel()
                self._deadline = None
                self._tail = b""
            else:
                self._tail = seen[-3:]
        self._inner.data_received(data)

    def eof_received(self) -> bool | None:
        return self._inner.eof_received() if self._inner is not None else False

    def pause_writing(self) -> None:
        if self._inner is not None:
            self._inner.pause_writing()

    def resume_writing(self) -> None:
        if self._inner is not None:
            self._inner.resume_writing()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None
        if self._inner is None:
            return
        self._guard.release()
        inner, self._inner = self._inner, None
        inner.connection_lost(exc)

    def _expire(self) -> None:
        self._deadline = None
        self._guard.timed_out()
        assert self._transport is not None
        self._transport.write(_TIMED_OUT)
        self._transport.close()

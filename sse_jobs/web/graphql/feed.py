"""A subscription's events: a ``StreamSource`` (all of contract section 4: resume, limits,
replay then live) one event at a time, over one graphql-transport-ws connection.

The feed owns its source from the moment the resolver opened it: ``aclose`` frees it
whether or not iteration ever began. When the broker drops the source (the connection
fell behind) or shuts it down, the feed closes the whole connection with 1013 or 1012:
the peer is not reading, so an error message would only queue behind what it has not
read, and the client resubscribes from the last ``seq``/``id`` it received.
"""

from __future__ import annotations

import contextlib
from collections import deque
from collections.abc import AsyncGenerator

from sse_jobs.records import Event
from sse_jobs.streams.broker import SubscriptionClosed
from sse_jobs.streams.source import StreamSource
from sse_jobs.web import sockets
from sse_jobs.web.graphql.types import JobEvent, job_event
from sse_jobs.web.sockets import Connection


class Feed:
    """The async iterator a subscription resolver returns."""

    def __init__(self, source: StreamSource | None, connection: Connection | None) -> None:
        self._source = source
        self._connection = connection
        self._batches: AsyncGenerator[list[Event], None] | None = None
        self._pending: deque[Event] = deque()
        if source is not None:
            self._batches = source.batches()
            if connection is not None:
                source.on_drop(lambda: connection.close_soon(sockets.TRY_AGAIN_LATER))

    @classmethod
    def empty(cls) -> Feed:
        """A feed that completes at once: a finished job with nothing left to send."""
        return cls(None, None)

    def __aiter__(self) -> Feed:
        return self

    async def __anext__(self) -> JobEvent:
        while not self._pending:
            if self._batches is None or (self._connection is not None
                                         and self._connection.closing):
                await self.aclose()
                raise StopAsyncIteration
            try:
                self._pending.extend(await anext(self._batches))
            except StopAsyncIteration:  # after the job's terminal event
                await self.aclose()
                raise
            except SubscriptionClosed as closed:
                await self.aclose()
                if self._connection is not None:
                    self._connection.close_soon(
                        sockets.TRY_AGAIN_LATER if closed.dropped else sockets.SERVICE_RESTART)
                raise StopAsyncIteration from None
        return job_event(self._pending.popleft())

    async def aclose(self) -> None:
        """Free the source (idempotent)."""
        if self._source is not None:
            self._source.close()
            self._source = None
        batches, self._batches = self._batches, None
        if batches is not None:
            with contextlib.suppress(RuntimeError):  # it is being closed where it runs
                await batches.aclose()
        self._pending.clear()

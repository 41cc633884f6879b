"""One stream's events, whatever carries them: the rules of contract section 4.

Race-free resume: a source subscribes to live events *before* it reads storage, so an
event committed while it replays is either in the replay or in the subscription buffer
(or both: then its key is not above the last one given and it is skipped). Nothing falls
between the two, and nothing is given twice.

A job's stream is keyed by the job's ``seq`` and ends after its terminal event; the
global stream (every job of a principal) is keyed by the global event ``id`` and runs
until its reader leaves, falls behind, or the server shuts down.
"""

from __future__ import annotations

import functools
from collections.abc import AsyncGenerator, Awaitable, Callable

from sse_jobs.auth import ANONYMOUS
from sse_jobs.config import Settings
from sse_jobs.engine.jobs import Jobs
from sse_jobs.errors import SseJobsError, TooManyRequests, Unavailable
from sse_jobs.records import Event
from sse_jobs.store.base import Store
from sse_jobs.streams.broker import Broker, Subscription

REPLAY_PAGE = 2000
STREAM_LIMIT_RETRY_AFTER = 5
SHUTDOWN_RETRY_AFTER = 5


class NothingToSend(SseJobsError):
    """A finished job's stream asked to resume after its last event: there is nothing
    more, ever. Each channel says so its own way: SSE answers 204 (which tells
    EventSource to stop reconnecting), the WebSocket opens and closes with 1000, a
    GraphQL subscription completes at once."""

    status = 204
    title = "No Content"


class ShuttingDown(Unavailable):
    """The server is shutting down: come back later (SSE answers an empty stream)."""


ReadAfter = Callable[[int], Awaitable[list[Event]]]


def parse_resume(raw: str | None) -> int | None:
    """A client's last event id as it sent it: None when absent; 0 (replay everything)
    when it is not a non-negative number, rather than leaving the client stuck."""
    if raw is None:
        return None
    raw = raw.strip()
    return int(raw) if raw.isascii() and raw.isdigit() and len(raw) <= 18 else 0


class StreamSource:
    """The events of one open stream: replayed from storage after ``after``, then live.

    Owns its subscription: ``close`` frees it, and must be called (``async with``)."""

    def __init__(self, broker: Broker, subscription: Subscription, read_after: ReadAfter,
                 *, job_id: str | None, after: int) -> None:
        self._broker = broker
        self._subscription = subscription
        self._read_after = read_after
        self.job_id = job_id
        self.after = after  # the key of the last event handed out
        self.live = False  # the replay is over: batches now come from the broker
        self._replayed = False  # the last replay page has been handed out
        self._ended = False  # a job's terminal event has been handed out

    def key(self, event: Event) -> int:
        """The id a client sees: the job's ``seq`` on a job stream, else the global id."""
        return event.seq if self.job_id is not None else event.id

    def on_drop(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` when the broker drops this stream for falling behind: the
        channel can then end its connection at once, not at its next write."""
        self._subscription.on_drop = callback

    async def next_batch(self) -> list[Event] | None:
        """The next events in order, each with a key above the previous: the replay a page
        at a time, then what arrives live; None after a job's terminal event. Raises
        ``SubscriptionClosed`` when dropped or at shutdown.

        A plain coroutine over state kept here, not an async generator: a live event
        wakes every stream, and each frame a wakeup resumes costs on every one of them.
        Nothing of a batch is kept while waiting: an idle stream waits for hours."""
        if self._ended:
            return None
        if not self._replayed:
            page = await self._read_after(self.after)
            self._replayed = len(page) < REPLAY_PAGE
            if page:
                return self._handed_out(page)
        self.live = True
        last, by_seq = self.after, self.job_id is not None
        while True:
            arrived = await self._subscription.next_batch()
            batch = ([e for e in arrived if e.seq > last] if by_seq
                     else [e for e in arrived if e.id > last])
            if batch:
                return self._handed_out(batch)

    def _handed_out(self, batch: list[Event]) -> list[Event]:
        newest = batch[-1]
        if self.job_id is not None:
            self.after = newest.seq
            self._ended = newest.terminal
        else:
            self.after = newest.id
        return batch

    async def batches(self) -> AsyncGenerator[list[Event], None]:
        """``next_batch`` until the stream ends, for channels that iterate."""
        while (batch := await self.next_batch()) is not None:
            yield batch

    def close(self) -> None:
        self._broker.unsubscribe(self._subscription)

    async def __aenter__(self) -> StreamSource:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self.close()


class Streams:
    """Opens stream sources for a principal, enforcing the limits on open streams."""

    def __init__(self, settings: Settings, store: Store, broker: Broker, jobs: Jobs,
                 accepting: Callable[[], bool]) -> None:
        self._settings = settings
        self._store = store
        self.broker = broker
        self._jobs = jobs
        self._accepting = accepting

    async def job(self, job_id: str, principal: str | None, resume: int | None) -> StreamSource:
        """A job's stream after the client's last seq ``resume`` (None: from the start).

        A ``resume`` beyond the job's last event (a client of another database) replays
        from the first; a finished job with nothing after ``resume`` raises
        ``NothingToSend``."""
        self._check_open()
        record = await self._jobs.get(job_id, principal)
        after = resume if resume is not None and resume <= record.last_event_id else 0
        if record.state.terminal and resume is not None and after >= record.last_event_id:
            raise NothingToSend(f"job {job_id} has finished and sent all its events")
        self._check_limits(record.principal)
        # The reader holds the job's id, not ``record``, which the stream would keep alive.
        return StreamSource(
            self.broker, self.broker.subscribe(record.id, record.principal),
            functools.partial(self._store.job_events, record.id, limit=REPLAY_PAGE),
            job_id=record.id, after=after)

    async def everything(self, principal: str, resume: int | None) -> StreamSource:
        """Every job's events of ``principal`` after global id ``resume``; None: only
        what comes next (no history); beyond the newest id: from the first stored."""
        self._check_open()
        newest = await self._store.last_event_id()
        after = newest if resume is None else (resume if resume <= newest else 0)
        self._check_limits(principal)
        return StreamSource(
            self.broker, self.broker.subscribe(None, principal),
            lambda ident: self._store.all_events(ident, REPLAY_PAGE, principal),
            job_id=None, after=after)

    def _check_open(self) -> None:
        if not self._accepting():
            raise ShuttingDown("the server is shutting down", retry_after=SHUTDOWN_RETRY_AFTER)

    def _check_limits(self, principal: str) -> None:
        settings, broker = self._settings, self.broker
        if broker.total() >= settings.max_streams:
            raise Unavailable(f"the server has {settings.max_streams} streams open",
                              retry_after=STREAM_LIMIT_RETRY_AFTER)
        if principal != ANONYMOUS and broker.count(principal) >= settings.max_streams_per_principal:
            raise TooManyRequests(f"{principal} has {settings.max_streams_per_principal} streams "
                                  "open", retry_after=STREAM_LIMIT_RETRY_AFTER)

"""In-process publish/subscribe of stored events to open streams.

Each subscription has a bounded buffer. Publishing never waits: a subscriber that still
has ``maxsize`` unread events when the next fan-out arrives is dropped (its stream is
closed, it reconnects with Last-Event-ID and replays from storage), so one slow reader
can neither slow the others nor grow memory. The check is made per fan-out, not per
event, so a reader that keeps up is never dropped by one large group commit; a buffer
thus holds at most ``maxsize`` plus one fan-out's events (references shared by all
subscribers).

Fan-outs to many streams are rate-limited, ``rate`` a second with bursts of
``FAN_OUT_BURST``. Every fan-out wakes each stream with an event in it and each then
writes (a send(2) to its socket), so with many streams the cost is per fan-out, not per
event: under a dense commit rate, the commits that arrive while the limit holds go out
together in the next fan-out, one write per stream. A commit after a quiet spell goes out
at once, and the burst lets a source that publishes at about the rate itself through
without delay. A fan-out that wakes at most ``SMALL_FAN_OUT`` streams costs little and
is never held (unless it would overtake one that is), so a few watchers see each event
the moment it commits. A fan-out wakes the streams ``PUSH_SLICE`` at a time, one slice
per turn of the loop, and what commits meanwhile is held until its last slice is out and
then goes out together: one fan-out is pushed at a time, so a server that cannot keep up
with the commit rate (a slow machine, a busy hour) makes fewer, larger writes instead of
queueing one fan-out per commit behind the next, whose delay would grow without bound.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable, Sequence

from sse_jobs.ratelimit import TokenBucket
from sse_jobs.records import Event

FAN_OUT_BURST = 3.0
SMALL_FAN_OUT = 16  # streams a fan-out may wake and still go out at once, unlimited
PUSH_SLICE = 64  # streams woken per turn of the event loop


class SubscriptionClosed(Exception):
    """The subscription ended: dropped for falling behind, or closed by shutdown."""

    def __init__(self, dropped: bool) -> None:
        super().__init__("dropped: the reader fell behind" if dropped else "closed")
        self.dropped = dropped


class Subscription:
    """One stream's view of the live events: a job's, or every job's when ``job_id`` is None.

    Slotted, with a plain list and a waiter made only while the stream waits: ten thousand
    idle streams hold ten thousand of these.
    """

    __slots__ = ("_closed", "_events", "_maxsize", "_waiter", "job_id", "on_drop", "principal")

    def __init__(self, job_id: str | None, principal: str, maxsize: int) -> None:
        self.job_id = job_id
        self.principal = principal
        self._maxsize = maxsize
        self._events: list[Event] = []
        self._waiter: asyncio.Future[None] | None = None
        self._closed: SubscriptionClosed | None = None
        self.on_drop: Callable[[], None] | None = None

    @property
    def buffered(self) -> int:
        """Events received and not yet taken by the stream."""
        return len(self._events)

    def push(self, events: Sequence[Event]) -> bool:
        """Buffer one fan-out's events; False (and the subscription closed) if the reader
        had fallen ``maxsize`` events behind."""
        if self._closed is not None:
            return True
        if len(self._events) >= self._maxsize:
            self.close(dropped=True)
            return False
        self._events.extend(events)
        self._wake()
        return True

    def close(self, *, dropped: bool = False) -> None:
        if self._closed is None:
            self._closed = SubscriptionClosed(dropped)
            self._events = []
            self._wake()
            if dropped and self.on_drop is not None:
                self.on_drop()

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    async def next_batch(self) -> list[Event]:
        """Wait for events and take all buffered ones; raises ``SubscriptionClosed``."""
        while not self._events:
            if self._closed is not None:
                raise self._closed
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        if self._closed is not None:
            raise self._closed
        batch, self._events = self._events, []
        return batch


class Broker:
    """Routes each committed event to the subscriptions of its job and to global ones."""

    def __init__(self, queue_size: int, rate: float = 0.0) -> None:
        self.queue_size = queue_size
        # Fan-outs a second; None (rate 0): every commit goes out at once.
        self._bucket = TokenBucket(rate, FAN_OUT_BURST) if rate else None
        self._by_job: dict[str, set[Subscription]] = {}
        self._global: set[Subscription] = set()
        self._per_principal: dict[str, int] = {}
        self._held: list[Event] = []
        self._flush: asyncio.TimerHandle | None = None
        # The pushes of the fan-out under way, in order. Only one is under way at a time
        # (later commits are held meanwhile), so none overtakes another on any stream.
        self._pushes: deque[tuple[Subscription, list[Event]]] = deque()
        self._pushing: asyncio.Handle | None = None
        self.dropped = 0

    def subscribe(self, job_id: str | None, principal: str) -> Subscription:
        """A job's live events, or (``job_id`` None) those of all ``principal``'s jobs."""
        subscription = Subscription(job_id, principal, self.queue_size)
        if job_id is None:
            self._global.add(subscription)
        else:
            self._by_job.setdefault(job_id, set()).add(subscription)
        self._per_principal[principal] = self._per_principal.get(principal, 0) + 1
        return subscription

    def unsubscribe(self, subscription: Subscription) -> None:
        subscription.close()
        if subscription.job_id is None:
            found = subscription in self._global
            self._global.discard(subscription)
        else:
            subscribers = self._by_job.get(subscription.job_id, set())
            found = subscription in subscribers
            subscribers.discard(subscription)
            if not subscribers:
                self._by_job.pop(subscription.job_id, None)
        if found:
            left = self._per_principal[subscription.principal] - 1
            if left:
                self._per_principal[subscription.principal] = left
            else:
                del self._per_principal[subscription.principal]

    def publish(self, events: Sequence[Event]) -> None:
        """Called by the store after each commit, with that commit's events in order."""
        if self._flush is not None or self._pushing is not None:
            self._held.extend(events)  # a fan-out is due or under way: these go next, in order
            return
        self._start_fan_out(events)

    def _start_fan_out(self, events: Sequence[Event]) -> None:
        wait = 0.0
        if self._bucket is not None and self._woken_by(events) > SMALL_FAN_OUT:
            wait = self._bucket.take()
        if wait > 0:
            self._held = list(events)
            self._flush = asyncio.get_running_loop().call_later(wait, self._fan_out_held)
            return
        self._fan_out(events)

    def _woken_by(self, events: Sequence[Event]) -> int:
        """How many streams a fan-out of ``events`` would wake, at most."""
        jobs = {event.job_id for event in events}
        return len(self._global) + sum(len(self._by_job.get(job, ())) for job in jobs)

    def _fan_out_held(self) -> None:
        self._flush = None
        if self._bucket is not None:
            self._bucket.spend()
        events, self._held = self._held, []
        self._fan_out(events)

    def _fan_out(self, events: Sequence[Event]) -> None:
        pushes = self._pushes
        by_job: dict[str, list[Event]] = {}
        for event in events:
            if event.job_id in self._by_job:
                by_job.setdefault(event.job_id, []).append(event)
        for job_id, job_events in by_job.items():
            pushes.extend((subscription, job_events) for subscription in self._by_job[job_id])
        mine: dict[str, list[Event]] = {}
        for subscription in self._global:
            principal = subscription.principal
            if principal not in mine:
                mine[principal] = [event for event in events if event.principal == principal]
            if mine[principal]:
                pushes.append((subscription, mine[principal]))
        self._push_slice()

    def _push_slice(self) -> None:
        """Wake ``PUSH_SLICE`` streams, and let the loop run before the next slice: every
        woken stream writes in the loop's next turn, and a request that arrives meanwhile
        waits behind one slice, not behind every stream. What committed meanwhile starts
        the next fan-out in the turn after the last slice."""
        self._pushing = None
        pushes = self._pushes
        for _ in range(min(PUSH_SLICE, len(pushes))):
            subscription, events = pushes.popleft()
            self.dropped += not subscription.push(events)
        if pushes:
            self._pushing = asyncio.get_running_loop().call_soon(self._push_slice)
        elif self._held:  # no flush is due while pushing: publish held everything
            self._pushing = asyncio.get_running_loop().call_soon(self._fan_out_next)

    def _fan_out_next(self) -> None:
        self._pushing = None
        events, self._held = self._held, []
        self._start_fan_out(events)

    def close_all(self) -> None:
        """End every subscription (shutdown): each stream finishes and its client resumes.

        Held events are let go with the buffers (they are stored; clients replay them),
        and from now on nothing is held: no fan-out is left scheduled."""
        if self._flush is not None:
            self._flush.cancel()
            self._flush, self._held = None, []
        if self._pushing is not None:
            self._pushing.cancel()
            self._pushing = None
        self._pushes.clear()
        self._bucket = None
        for subscribers in self._by_job.values():
            for subscription in subscribers:
                subscription.close()
        for subscription in self._global:
            subscription.close()

    def counts(self) -> tuple[int, int]:
        """Open (per-job, global) subscriptions."""
        return sum(len(s) for s in self._by_job.values()), len(self._global)

    def total(self) -> int:
        return sum(self._per_principal.values())

    def count(self, principal: str) -> int:
        """Open subscriptions of ``principal``."""
        return self._per_principal.get(principal, 0)

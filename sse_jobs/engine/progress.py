"""Progress of running attempts on its way to the store: coalesced, estimated, bounded.

- **Coalescing** (contract section 4): at most ``--progress-rate`` progress events per job
  per second are stored. A report that comes sooner is held back, never dropped: the
  newest held report is written when the interval ends, and before the attempt's outcome.
- **ETA**: seconds left at the average rate of the attempt since its first report.
- **Backpressure**: reports wait in one list for the store's writer; above
  ``HIGH_WATER`` the pool stops reading the progress pipe, so workers block on it, and
  reading resumes below ``LOW_WATER``, so that reading and writing overlap.
- **After the start**: an attempt reports as soon as it runs, but its ``processing``
  event is recorded a moment later; its first reports wait (counted in the same bound)
  until then, so that no stream sees progress before ``processing``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass, field

from sse_jobs.engine.pool import WorkerPool
from sse_jobs.errors import Unavailable
from sse_jobs.ratelimit import TokenBucket
from sse_jobs.records import JobRecord, ProgressUpdate
from sse_jobs.states import EventName
from sse_jobs.store.base import Store
from sse_jobs.webhooks.policy import delivery_url

log = logging.getLogger(__name__)

HIGH_WATER = 10_000  # unwritten progress events before workers are held back
LOW_WATER = HIGH_WATER // 2  # ... and when reading resumes
CHUNK = 1000  # progress events per store call
STORAGE_RETRY = 1.0  # seconds before trying storage again after an error


@dataclass(slots=True)
class _Attempt:
    """What coalescing and the ETA need to know of one running attempt."""

    attempt: int
    webhook: str | None
    limit: TokenBucket | None  # None: every report is stored
    started: bool = False  # its start is recorded: its reports may be written
    early: list[ProgressUpdate] = field(default_factory=list)  # reports before that
    first_report: tuple[float, float] | None = None  # (time, percent)
    held: ProgressUpdate | None = None  # newest report held back by the rate limit
    flush_timer: asyncio.TimerHandle | None = None


class ProgressWriter:
    """Takes progress reports from the pool and writes them to the store in order."""

    def __init__(self, store: Store, pool: WorkerPool, rate: float) -> None:
        self._store = store
        self._pool = pool
        self._rate = rate
        self._attempts: dict[str, _Attempt] = {}
        self._backlog: list[ProgressUpdate] = []
        self._early = 0  # reports of attempts whose start is not recorded yet
        self._ready = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="progress-writer")

    async def stop(self) -> None:
        """Stop the loop and write what is left; unstored progress is moot after a restart."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        with contextlib.suppress(Unavailable):
            await self.write_backlog()

    def track(self, job: JobRecord, attempt: int) -> None:
        """Attempt ``attempt`` of ``job`` is in the pool: its reports are wanted from now
        on, and written once ``started`` says its start is recorded."""
        self._attempts[job.id] = _Attempt(
            attempt, delivery_url(EventName.PROGRESS, job.callback_url, job.callback_events),
            TokenBucket(self._rate) if self._rate else None)

    def started(self, job_id: str) -> None:
        """The attempt's ``processing`` event is stored: write what it reported so far."""
        state = self._attempts.get(job_id)
        if state is not None and not state.started:
            state.started = True
            self._backlog += state.early
            self._early -= len(state.early)
            state.early = []
            self._ready.set()

    def report(self, job_id: str, attempt: int, percent: float, message: str | None,
               at: float) -> None:
        """One ``ctx.progress`` call, as the pool received it (on the event loop)."""
        state = self._attempts.get(job_id)
        if state is None or state.attempt != attempt:
            return  # an attempt that has ended, or a stale one
        if state.first_report is None:
            state.first_report = (at, percent)
        update = ProgressUpdate(job_id, attempt, percent, message,
                                _eta(state.first_report, at, percent), at, state.webhook)
        wait = state.limit.take() if state.limit is not None else 0.0
        if wait > 0:
            state.held = update  # the newest report wins; it is written when the wait ends
            if state.flush_timer is None:
                state.flush_timer = asyncio.get_running_loop().call_later(
                    wait, self._release_held, state)
            return
        self._queue(state, update)

    async def finish(self, job_id: str) -> None:
        """The attempt has ended: write its reports, held ones too, before its outcome is
        recorded, so that streams see them first; if its start was never recorded, it
        said nothing that counts, and its reports are dropped."""
        state = self._attempts.pop(job_id, None)
        if state is not None:
            if state.flush_timer is not None:
                state.flush_timer.cancel()
                state.flush_timer = None
            if state.held is not None and state.started:
                self._queue(state, state.held)
            self._early -= len(state.early)
        await self.write_backlog()

    def _release_held(self, state: _Attempt) -> None:
        state.flush_timer = None
        if state.held is not None:
            if state.limit is not None:
                state.limit.spend()  # it goes out now: the interval starts again
            self._queue(state, state.held)

    def _queue(self, state: _Attempt, update: ProgressUpdate) -> None:
        if state.flush_timer is not None:
            state.flush_timer.cancel()
            state.flush_timer = None
        state.held = None
        if state.started:
            self._backlog.append(update)
            self._ready.set()
        else:
            state.early.append(update)
            self._early += 1
        if len(self._backlog) + self._early >= HIGH_WATER:
            self._pool.pause_reading()

    async def _run(self) -> None:
        while True:
            await self._ready.wait()
            self._ready.clear()
            try:
                await self.write_backlog()
            except Unavailable as exc:  # workers wait on the full pipe meanwhile
                log.warning("progress not stored yet: %s", exc.detail)
                self._ready.set()
                await asyncio.sleep(STORAGE_RETRY)

    async def write_backlog(self) -> None:
        """Write every queued report, in order; raises ``Unavailable`` with the rest kept."""
        # In chunks, which bounds the events one commit hands to every stream at once.
        while self._backlog:
            batch = self._backlog[:CHUNK]
            del self._backlog[:CHUNK]
            try:
                await self._store.record_progress(batch)
            except Unavailable:
                self._backlog[:0] = batch  # not stored: keep it, in order
                raise
            self._resume_below_low_water()
        self._resume_below_low_water()

    def _resume_below_low_water(self) -> None:
        # Resumed before the backlog is gone, so that reading the pipe and writing to the
        # store overlap instead of taking turns.
        if len(self._backlog) + self._early < LOW_WATER:
            self._pool.resume_reading()


def _eta(first: tuple[float, float] | None, at: float, percent: float) -> float | None:
    """Seconds left at the average rate since the first report of this attempt."""
    if first is None:
        return None
    elapsed, done = at - first[0], percent - first[1]
    if elapsed <= 0 or done <= 0:
        return None
    return round((100 - percent) * elapsed / done, 1)

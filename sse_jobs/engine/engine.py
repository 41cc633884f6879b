"""The engine: dispatch, outcomes, retries, cancel, recovery and shutdown.

No HTTP and no SQL here. The engine decides what happens to a job and records each
decision through the store, which makes it durable and hands its event to the broker.
Its collaborators do the rest: ``Admission`` stores new jobs, ``ProgressWriter`` the
progress of running attempts, ``Jobs`` serves reads, ``Retention`` sweeps.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import heapq
import logging
import time
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any, TypeVar

from sse_jobs import events
from sse_jobs.backoff import Backoff
from sse_jobs.config import Settings
from sse_jobs.engine.jobs import Jobs
from sse_jobs.engine.pool import Outcome, WorkerPool
from sse_jobs.engine.progress import ProgressWriter
from sse_jobs.engine.results import ResultFiles
from sse_jobs.errors import Conflict, IllegalTransition, SseJobsError, Unavailable
from sse_jobs.events import EventDraft
from sse_jobs.jobs.registry import Registry
from sse_jobs.jobs.runtime import WorkerCall
from sse_jobs.logs import job_extra
from sse_jobs.metrics import Metrics
from sse_jobs.records import Change, Fence, JobRecord
from sse_jobs.states import JobState
from sse_jobs.store.base import Store
from sse_jobs.webhooks.policy import delivery_url

log = logging.getLogger(__name__)
T = TypeVar("T")

IDLE_DISPATCH_WAIT = 60.0
EXPIRED_BATCH = 100  # expired attempts ended per lease round
STORAGE_RETRY = 1.0  # seconds before the dispatcher tries storage again after an error
KILL_WAIT = 15.0  # after the grace period: how long killed attempts get to be recorded
# Waiting out storage trouble (a full disk) before an outcome can be recorded.
OUTCOME_RETRY = Backoff(base=1.0, max_delay=30.0)
CANCELLED = {"type": "cancelled", "message": "cancelled on request"}


def job_log(job_id: str) -> logging.LoggerAdapter[logging.Logger]:
    """The engine's logger for lines about one job (they carry its id)."""
    return logging.LoggerAdapter(log, job_extra(job_id))


@dataclass(slots=True)
class _Run:
    """An attempt in the pool: handed over reserved, running once it starts."""

    job: JobRecord  # as reserved; the started row once its start is recorded
    attempt: int
    outcome: asyncio.Future[Outcome]
    handed_at: float = field(default_factory=time.time)
    start: asyncio.Future[bool] | None = None  # recording its start: True once recorded
    started_at: float | None = None
    kill_timer: asyncio.TimerHandle | None = None
    cancel_requested: bool = False
    requeue: bool = False  # killed by shutdown: back to the queue, attempt not spent
    lost: bool = False  # its lease was lost: another node has taken over; record nothing


class Engine:
    """Owns the dispatcher and the running attempts."""

    def __init__(self, settings: Settings, store: Store, pool: WorkerPool | None,
                 registry: Registry, metrics: Metrics, jobs: Jobs) -> None:
        """``pool`` None: an API node that runs no jobs (``--workers 0``)."""
        self.settings = settings
        self.metrics = metrics
        self.store = store
        self.pool = pool
        self.registry = registry
        self.jobs = jobs
        self.progress = (None if pool is None else
                         ProgressWriter(store, pool, settings.progress_rate))
        self._leases: asyncio.Task[None] | None = None
        self._retry = Backoff(base=settings.retry_base, max_delay=settings.retry_max,
                              jitter="full")
        self._runs: dict[str, _Run] = {}
        # Reserved jobs waiting for a free worker, best first: (-priority, id, the record).
        self._held: list[tuple[int, str, JobRecord]] = []
        self._dispatch_wakeup = asyncio.Event()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._dispatcher: asyncio.Task[None] | None = None
        self.accepting = False
        self._stopping: asyncio.Future[None] | None = None

    @classmethod
    def create(cls, settings: Settings, store: Store, registry: Registry, metrics: Metrics,
               results: ResultFiles) -> Engine:
        """The engine of a node, with its pool (none with ``--workers 0``)."""
        pool = None if settings.workers == 0 else WorkerPool(
            settings.workers, debug=settings.debug, preload=registry.modules())
        return cls(settings, store, pool, registry, metrics, Jobs(store, results))

    @property
    def running(self) -> int:
        """Attempts running now (not the jobs held ready for a worker)."""
        return len(self._runs)

    def workers_alive(self) -> int:
        return 0 if self.pool is None else self.pool.workers_alive()

    @property
    def dispatcher_running(self) -> bool:
        return self._dispatcher is not None and not self._dispatcher.done()

    def wake(self, priority: int | None = None) -> None:
        """Look for work now (a job was submitted, a slot freed, a retry became due).

        ``priority``: that of a job just submitted. With no room left, a held job of a
        lower priority is given back for it, so that holding jobs ahead never makes a job
        wait behind one that ranks below it."""
        self._dispatch_wakeup.set()
        if priority is None or not self._held or self._room() > 0:
            return
        lowest = max(self._held)  # the lowest priority, and of those the newest
        if -lowest[0] < priority:
            self._held.remove(lowest)
            heapq.heapify(self._held)
            self._spawn(self._release([lowest[1]]))

    def _room(self) -> int:
        """How many more jobs this node takes now: to run, and to hold ready."""
        if self.pool is None:
            return 0
        capacity = self.pool.workers * (1 + self.settings.prefetch)
        return capacity - len(self._runs) - len(self._held)

    async def _release(self, job_ids: list[str]) -> None:
        with contextlib.suppress(Unavailable):  # not given back: its reservation runs out
            await self.store.release(job_ids)

    async def health(self) -> dict[str, str]:
        """``ok`` or what is wrong, for the database (reads), its writes, the pool and the
        dispatcher."""
        if self.pool is None:  # runs nothing: there is no pool or dispatcher to be down
            checks = {"database": "ok", "writable": "ok", "pool": "none", "dispatcher": "none"}
        else:
            checks = {"database": "ok", "writable": "ok",
                      "pool": "ok" if self.pool.alive else "down",
                      "dispatcher": "ok" if self.dispatcher_running else "down"}
        for check, probe in (("database", self.store.ping), ("writable", self.store.writable)):
            try:
                await probe()
            except SseJobsError as exc:
                checks[check] = exc.detail
        return checks

    # -- lifecycle ----------------------------------------------------------------------

    async def start(self) -> None:
        """Recover what a previous process left running, then start dispatching.

        On a shared store there is no "previous process": other nodes may be running
        their attempts right now, and only attempts whose lease has expired are ended,
        by whichever node holds the recovery task (``_keep_leases``)."""
        if not self.store.shared:
            await self._recover()
        self.store.on_cancel(self._cancel_requested_elsewhere)
        self.store.on_queued(self.wake)  # a job queued on another node
        if self.pool is not None and self.progress is not None:
            self.pool.start(self._on_start, self.progress.report)
            self.progress.start()
            self._dispatcher = asyncio.create_task(self._dispatch_loop(), name="dispatcher")
        if self.store.shared:
            self._leases = asyncio.create_task(self._keep_leases(), name="leases")
        self.accepting = True

    async def stop(self) -> None:
        """Graceful shutdown: refuse new jobs, give running ones the grace period, then
        kill and requeue the rest, and write everything still pending. Idempotent."""
        if self._stopping is None:
            self._stopping = asyncio.ensure_future(self._stop())
        await asyncio.shield(self._stopping)

    async def _stop(self) -> None:
        self.accepting = False
        self.wake()
        if self._dispatcher is not None:  # it ends at this wakeup; a stuck one may not hold us
            done, _ = await asyncio.wait([self._dispatcher], timeout=KILL_WAIT)
            if not done:
                log.error("the dispatcher did not stop within %.0fs; cancelling it", KILL_WAIT)
                self._dispatcher.cancel()
        held, self._held = [job_id for _, job_id, _ in self._held], []
        await self._release(held)  # never started: back to the queue, no attempt spent
        running = [run.outcome for run in self._runs.values()]
        if running:
            log.info("waiting up to %.1fs for %d running jobs", self.settings.shutdown_grace,
                     len(running))
            await asyncio.wait(running, timeout=self.settings.shutdown_grace)
        for job_id, run in self._runs.items():
            job_log(job_id).info("requeueing: still running at shutdown")
            run.requeue = True
            self._kill(job_id)
        deadline = time.monotonic() + KILL_WAIT
        while (self._tasks or self._runs) and time.monotonic() < deadline:
            await asyncio.wait([*self._tasks, *(r.outcome for r in self._runs.values())],
                               timeout=deadline - time.monotonic())
        for task in (self._dispatcher, self._leases):
            if task is not None:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
        if self.progress is not None:
            await self.progress.stop()
        if self.pool is not None:
            await self.pool.close()

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("background task failed", exc_info=task.exception())

    # -- cancel -------------------------------------------------------------------------

    async def cancel(self, job_id: str, principal: str | None = None) -> tuple[JobRecord, bool]:
        """Cancel a job. Returns the job and whether it is already cancelled (True) or
        a running attempt has been asked to stop (False)."""
        record = await self.jobs.get(job_id, principal)
        if record.state is JobState.QUEUED:
            with contextlib.suppress(IllegalTransition):  # it may have just started
                record, _ = await self.store.record(job_id, dataclasses.replace(
                    _cancelled(record, time.time()), only_from=frozenset({JobState.QUEUED})))
                job_log(job_id).info("cancelled while queued")
                self._drop_held(job_id)
                return record, True
            record = await self.jobs.get(job_id)
        if record.state is JobState.CANCELLED:
            return record, True
        if record.state.terminal:
            raise Conflict(f"job {job_id} is already {record.state.value}")
        updated = await self.store.request_cancel(job_id)
        run = self._runs.get(job_id)
        if run is not None:
            self._request_stop(run)
        # On a shared store the node running it hears of it (``on_cancel``), and at its
        # next lease renewal at the latest.
        return updated or record, False

    def _drop_held(self, job_id: str) -> bool:
        """Forget a held job (cancelled, or its reservation lost): it will not be started."""
        kept = [entry for entry in self._held if entry[1] != job_id]
        dropped = len(kept) < len(self._held)
        if dropped:
            self._held = kept
            heapq.heapify(self._held)
        return dropped

    def _cancel_requested_elsewhere(self, job_id: str) -> None:
        run = self._runs.get(job_id)
        if run is not None:
            self._request_stop(run)

    def _request_stop(self, run: _Run) -> None:
        if run.cancel_requested or self.pool is None:
            return
        run.cancel_requested = True
        self.pool.request_cancel(run.job.id)
        run.kill_timer = asyncio.get_running_loop().call_later(
            self.settings.cancel_grace, self._kill, run.job.id)
        job_log(run.job.id).info("asked to stop; killed in %.1fs if it does not",
                                 self.settings.cancel_grace)

    # -- dispatch -----------------------------------------------------------------------

    async def _dispatch_loop(self) -> None:
        while self.accepting:
            self._dispatch_wakeup.clear()
            try:
                delay = await self._dispatch()
            except Unavailable as exc:  # storage trouble: keep the loop, try again soon
                log.warning("dispatch paused: %s", exc.detail)
                delay = STORAGE_RETRY
            except Exception:  # a bug, or a pool that refuses work: say so, keep the loop
                log.exception("dispatch failed; trying again in %.0fs", STORAGE_RETRY)
                delay = STORAGE_RETRY
            if delay == 0:
                continue
            # asyncio.timeout, not wait_for: on Python 3.11 wait_for can lose a
            # cancellation that arrives as the event is set.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay):
                    await self._dispatch_wakeup.wait()

    def _kill(self, job_id: str) -> None:
        if self.pool is not None:
            self.pool.kill(job_id)

    async def _dispatch(self) -> float:
        """Reserve what this node has room for, and start what has a free worker; how long
        to wait before looking again (0: at once)."""
        assert self.pool is not None, "only a node with workers dispatches"
        self._feed()
        room = self._room() if self.pool.alive else 0
        if room:
            reserved = await self.store.reserve(time.time(), room, self.registry.limits())
            for record in reserved:
                heapq.heappush(self._held, (-record.priority, record.id, record))
            self._feed()
            if len(reserved) == room:
                return 0.0
        # On a shared store another node may queue a job: it says so (``on_queued``), and
        # the dispatcher looks now and then in case that word was lost.
        delay = min(IDLE_DISPATCH_WAIT, self.settings.lease_renew) if self.store.shared else (
            IDLE_DISPATCH_WAIT)
        next_at = (await self.store.next_run_at(self.registry.limits()) if self._room()
                   else None)
        if next_at is not None:
            delay = min(delay, max(0.0, next_at - time.time()))
        return delay

    def _feed(self) -> None:
        """Start held jobs while workers are free, the highest priority, then oldest, first:
        a worker that has just finished starts its next job at once, before the outcome
        of the last one is recorded."""
        assert self.pool is not None, "only a node with workers dispatches"
        while self._held and self.pool.free and self.pool.alive and self.accepting:
            _, _, record = heapq.heappop(self._held)
            self._hand_over(record)

    def _hand_over(self, record: JobRecord) -> None:
        """Give a reserved job's next attempt to a free worker; its start is recorded when
        the worker says it runs (``_on_start``)."""
        assert self.pool is not None, "only a node with workers dispatches"
        assert self.progress is not None
        job_type = self.registry.get(record.type)
        if job_type is None:
            self._spawn(self._fail_unrunnable(record))
            return
        attempt = record.attempt + 1
        call = WorkerCall(job_id=record.id, attempt=attempt, type_name=record.type,
                          module=job_type.module, params=record.params, slot=-1,
                          result_dir=str(self.settings.results_path))
        try:
            outcome = self.pool.run(call, timeout=record.timeout)
        except Exception as exc:  # the pool refused it: the attempt ends now, as crashed
            log.exception("the worker pool refused attempt %d of %s", attempt, record.id)
            outcome = asyncio.get_running_loop().create_future()
            outcome.set_result(Outcome("crashed", message=f"the worker pool refused it: {exc}"))
        self._runs[record.id] = _Run(record, attempt, outcome)
        self.progress.track(record, attempt)
        outcome.add_done_callback(lambda done: self._spawn(self._finish(record.id, done.result())))

    def _on_start(self, job_id: str, attempt: int, at: float) -> None:
        """The pool says the attempt began to run: record its start (``processing``)."""
        run = self._runs.get(job_id)
        if run is not None and run.attempt == attempt and run.start is None:
            run.started_at = at
            run.start = asyncio.ensure_future(self._record_start(run, at))

    async def _record_start(self, run: _Run, at: float) -> bool:
        """Record the start of ``run``, waiting out storage trouble: whether it is recorded.
        Refused when the job is no longer ours to start (cancelled while it was held, or
        its reservation lost): then the attempt is stopped."""
        job_id = run.job.id
        try:
            started, _ = await self._stored(
                job_id, f"record the start of attempt {run.attempt}",
                lambda: self.store.start(job_id, at, lambda job: _processing(job, at)))
        except IllegalTransition as exc:
            job_log(job_id).info("attempt %d not started: %s", run.attempt, exc.detail)
            self._kill(job_id)
            return False
        except Unavailable:  # stopping: the next start's recovery deals with it
            return False
        run.job = started
        assert self.progress is not None
        self.progress.started(job_id)
        job_log(job_id).info("attempt %d started", started.attempt)
        self.metrics.queue_wait.labels(started.type).observe(max(0.0, at - started.not_before))
        if started.cancel_requested:  # asked while an earlier attempt ran, which ended otherwise
            self._request_stop(run)
        return True

    async def _fail_unrunnable(self, record: JobRecord) -> None:
        error = {"type": "unknown_type", "message": f"job type {record.type!r} is not "
                 "registered on this server (start it with the --jobs module that defines it)"}
        await self._record(record, Change(_draft(record, events.failed(time.time(), error)),
                                          error=error))

    # -- outcomes -----------------------------------------------------------------------

    async def _finish(self, job_id: str, outcome: Outcome) -> None:
        run = self._runs.pop(job_id)
        # The worker is free already: it gets the next held job now, and the next
        # reservation goes to the writer, where it can share a commit with this outcome.
        if self.pool is not None and self.accepting:
            self._feed()
        self.wake()
        if run.kill_timer is not None:
            run.kill_timer.cancel()
        started = await run.start if run.start is not None else False
        if run.start is None and outcome.kind != "killed" and not run.requeue:
            # It ended before it said it started (its worker died as it began, say): it
            # was an attempt all the same, and ends as one.
            started = await self._record_start(run, time.time())
        await self._write_progress(job_id)
        if not started:  # never ran as far as anyone can tell: back to the queue, if ours
            with contextlib.suppress(Unavailable):
                await self.store.release([job_id])
            return
        now = time.time()
        self.metrics.job_duration.labels(run.job.type, outcome.kind).observe(
            now - (run.started_at or run.handed_at))
        await self._record_outcome(run, outcome, now)
        self.wake()

    async def _write_progress(self, job_id: str) -> None:
        """Store what the attempt reported before its outcome: an outcome is never recorded
        ahead of its progress, nor lost because that progress could not be stored at once."""
        progress = self.progress
        assert progress is not None, "attempts run only on a node with workers"
        await self._stored(job_id, "store its progress", lambda: progress.finish(job_id))

    async def _record_outcome(self, run: _Run, outcome: Outcome, now: float) -> None:
        job = run.job
        if run.lost:
            job_log(job.id).warning("attempt %d ended after its lease was lost; another node "
                                    "has ended it, so its outcome (%s) is not recorded",
                                    job.attempt, outcome.kind)
        elif run.requeue or (not self.accepting and outcome.kind in {"crashed", "killed"}):
            # Killed by our shutdown, or by a signal sent to the whole process group.
            await self._requeue(job, now)
        elif outcome.kind == "ok":
            await self._record(job, Change(
                _draft(job, events.completed(now, job.id, outcome.result)),
                fence=Fence(job.attempt), result=outcome.result,
                result_file=outcome.result_file))
            job_log(job.id).info("completed")
        elif run.cancel_requested or outcome.kind == "cancelled":
            await self._record(job, dataclasses.replace(_cancelled(job, now),
                                                        fence=Fence(job.attempt)))
            job_log(job.id).info("cancelled")
        else:
            await self._retry_or_fail(job, _error_of(outcome, job), now)

    async def _record(self, job: JobRecord, change: Change) -> None:
        """Record an attempt's outcome rather than lose it (``_stored``). A fenced outcome
        the store refuses belongs to an attempt that has been taken over (its lease ran
        out): it is dropped, as it must be."""
        try:
            await self._stored(job.id, f"record {change.name.value}",
                               lambda: self.store.record(job.id, change))
        except IllegalTransition as exc:
            if change.fence is None:
                raise
            job_log(job.id).warning("attempt %d: %s not recorded: %s", job.attempt,
                                    change.name.value, exc.detail)

    async def _stored(self, job_id: str, what: str, write: Callable[[], Awaitable[T]]) -> T:
        """``write()``'s result, waiting out storage trouble (a full disk) with waits
        bounded by ``OUTCOME_RETRY``. While starting or stopping, the ``Unavailable`` is
        raised instead: the next start's recovery deals with the job."""
        failures = 0
        while True:
            try:
                return await write()
            except Unavailable as exc:
                if not self.accepting:
                    raise
                delay = OUTCOME_RETRY.delay(failures)
                job_log(job_id).warning("cannot %s yet (%s); retrying in %.0fs", what,
                                        exc.detail, delay)
                failures += 1
                await asyncio.sleep(delay)

    async def _retry_or_fail(self, job: JobRecord, error: dict[str, Any], now: float, *,
                             expired: bool = False) -> None:
        """End the attempt as failed: retried with backoff while attempts remain. ``expired``:
        it is another node's attempt whose lease ran out."""
        fence = Fence(job.attempt, expired=expired)
        if job.attempt < job.max_attempts:
            retry_at = now + self._retry.delay(job.attempt - 1)
            await self._record(job, Change(
                _draft(job, events.retrying(now, job.attempt + 1, retry_at, error)),
                fence=fence, error=error, not_before=retry_at))
            job_log(job.id).info("attempt %d failed (%s); retrying at %s",
                                 job.attempt, error["type"], events.iso(retry_at))
            self.wake()
        else:
            await self._record(job, Change(_draft(job, events.failed(now, error)),
                                           fence=fence, error=error))
            job_log(job.id).info("failed (%s)", error["type"])

    async def _requeue(self, job: JobRecord, now: float) -> None:
        error = {"type": "interrupted", "message": "the server shut down during this attempt"}
        await self._record(job, Change(
            _draft(job, events.retrying(now, job.attempt, now, error)),
            fence=Fence(job.attempt), error=error, not_before=now, refund_attempt=True))

    async def _recover(self) -> None:
        """Attempts left ``processing`` by a process that died: retry or fail them."""
        for job in await self.store.jobs_in_state(JobState.PROCESSING):
            now = time.time()
            job_log(job.id).warning("was processing when the server stopped")
            error = {"type": "crashed",
                     "message": f"the server stopped during attempt {job.attempt}"}
            try:
                if job.cancel_requested:
                    await self.store.record(job.id, _cancelled(job, now))
                else:
                    await self._retry_or_fail(job, error, now)
            except Unavailable as exc:  # left processing; the next start tries again
                job_log(job.id).error("cannot recover it now: %s", exc.detail)

    # -- leases (a shared store) ----------------------------------------------------------

    async def _keep_leases(self) -> None:
        """Every ``--lease-renew`` seconds: renew this node's leases, stop the attempts whose
        lease was lost (or that another node asked to stop), and, if this node holds the
        recovery task, end the attempts of nodes whose leases have expired."""
        while True:
            await asyncio.sleep(self.settings.lease_renew)
            try:
                await self._renew()
                if await self.store.hold("recovery", 2 * self.settings.lease_renew):
                    await self._end_expired()
            except Unavailable as exc:  # the leases run on; renewal tries again
                log.warning("leases not renewed: %s", exc.detail)

    async def _renew(self) -> None:
        runs, waiting = dict(self._runs), [job_id for _, job_id, _ in self._held]
        if not runs and not waiting:
            return
        held = await self.store.renew_leases([*runs, *waiting])
        for job_id in waiting:
            if job_id not in held and self._drop_held(job_id):
                job_log(job_id).warning("lost the reservation of a held job")
        for job_id, run in runs.items():
            if self._runs.get(job_id) is not run:
                continue  # ended meanwhile
            if job_id not in held:
                job_log(job_id).warning("lost the lease on attempt %d; stopping it",
                                        run.job.attempt)
                run.lost = True
                self._kill(job_id)
            elif held[job_id]:
                self._request_stop(run)

    async def _end_expired(self) -> None:
        for job in await self.store.expired_attempts(EXPIRED_BATCH):
            if job.id in self._runs:  # ours: renewal deals with it
                continue
            job_log(job.id).warning("attempt %d: its node stopped renewing the lease",
                                    job.attempt)
            error = {"type": "crashed", "message": f"the node running attempt {job.attempt} "
                     "stopped renewing its lease"}
            if job.cancel_requested:
                await self._record(job, dataclasses.replace(
                    _cancelled(job, time.time()), fence=Fence(job.attempt, expired=True)))
            else:
                await self._retry_or_fail(job, error, time.time(), expired=True)


def _draft(job: JobRecord, draft: EventDraft) -> EventDraft:
    """``draft`` with the webhook delivery the job's callback asks for, if any."""
    return draft._replace(webhook=delivery_url(draft.name, job.callback_url,
                                               job.callback_events))


def _processing(job: JobRecord, now: float) -> EventDraft:
    return _draft(job, events.processing(now, job.attempt))


def _cancelled(job: JobRecord, now: float) -> Change:
    return Change(_draft(job, events.cancelled(now, CANCELLED)), error=CANCELLED)


def _error_of(outcome: Outcome, job: JobRecord) -> dict[str, Any]:
    if outcome.kind == "timeout":
        return {"type": "timeout", "message": f"attempt {job.attempt} ran longer than its "
                f"timeout of {job.timeout:g}s and was stopped"}
    if outcome.kind in {"crashed", "killed"}:
        return {"type": "crashed", "message": outcome.message or "the worker process died"}
    error = {"type": "exception", "message": outcome.message or "",
             "exception": outcome.exception}
    if outcome.traceback:
        error["traceback"] = outcome.traceback
    return error

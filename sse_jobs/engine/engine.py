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
import logging
import time
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import Any

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
    """A running attempt, as the engine tracks it."""

    job: JobRecord
    outcome: asyncio.Future[Outcome]
    started: float = field(default_factory=time.time)
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
        self._dispatch_wakeup = asyncio.Event()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._cancel_on_start: set[str] = set()
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
        return len(self._runs)

    def workers_alive(self) -> int:
        return 0 if self.pool is None else self.pool.workers_alive()

    @property
    def dispatcher_running(self) -> bool:
        return self._dispatcher is not None and not self._dispatcher.done()

    def wake(self) -> None:
        """Look for work now (a job was submitted, a slot freed, a retry became due)."""
        self._dispatch_wakeup.set()

    async def health(self) -> dict[str, str]:
        """``ok`` or what is wrong, for the database, the pool and the dispatcher."""
        if self.pool is None:  # runs nothing: there is no pool or dispatcher to be down
            checks = {"database": "ok", "pool": "none", "dispatcher": "none"}
        else:
            checks = {"database": "ok", "pool": "ok" if self.pool.alive else "down",
                      "dispatcher": "ok" if self.dispatcher_running else "down"}
        try:
            await self.store.ping()
        except SseJobsError as exc:
            checks["database"] = exc.detail
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
        self.store.on_queued(self.wake)
        if self.pool is not None and self.progress is not None:
            self.pool.start(self.progress.report)
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
        elif not self.store.shared:  # claimed a moment ago; _start will see the request
            self._cancel_on_start.add(job_id)
        # On a shared store the node running it hears of it (``on_cancel``), and at its
        # next lease renewal at the latest.
        return updated or record, False

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
        """Start what can start; how long to wait before looking again (0: at once)."""
        assert self.pool is not None, "only a node with workers dispatches"
        if self.pool.free and self.pool.alive:
            wanted = self.pool.free
            now = time.time()
            claimed = await self.store.claim(now, wanted, lambda job: _processing(job, now))
            for record, _event in claimed:
                self._start(record)
            if len(claimed) == wanted:
                return 0.0
        # On a shared store another node may queue a job: it says so (``on_queued``), and
        # the dispatcher looks now and then in case that word was lost.
        delay = min(IDLE_DISPATCH_WAIT, self.settings.lease_renew) if self.store.shared else (
            IDLE_DISPATCH_WAIT)
        next_at = await self.store.next_run_at() if self.pool.free else None
        if next_at is not None:
            delay = min(delay, max(0.0, next_at - time.time()))
        return delay

    def _start(self, record: JobRecord) -> None:
        assert self.pool is not None, "only a node with workers dispatches"
        assert self.progress is not None
        job_type = self.registry.get(record.type)
        if job_type is None:
            self._spawn(self._fail_unrunnable(record))
            return
        call = WorkerCall(job_id=record.id, attempt=record.attempt, type_name=record.type,
                          module=job_type.module, params=record.params, slot=-1,
                          result_dir=str(self.settings.results_path))
        try:
            outcome = self.pool.run(call, timeout=record.timeout)
        except Exception as exc:  # the pool refused it: the attempt ends now, as crashed
            log.exception("the worker pool refused attempt %d of %s", record.attempt,
                          record.id)
            outcome = asyncio.get_running_loop().create_future()
            outcome.set_result(Outcome("crashed", message=f"the worker pool refused it: {exc}"))
        run = self._runs[record.id] = _Run(record, outcome)
        self.progress.track(record)
        job_log(record.id).info("attempt %d started", record.attempt)
        self.metrics.queue_wait.labels(record.type).observe(
            max(0.0, run.started - record.not_before))
        if record.cancel_requested or record.id in self._cancel_on_start:
            self._cancel_on_start.discard(record.id)
            self._request_stop(run)
        outcome.add_done_callback(lambda done: self._spawn(self._finish(record.id, done.result())))

    async def _fail_unrunnable(self, record: JobRecord) -> None:
        error = {"type": "unknown_type", "message": f"job type {record.type!r} is not "
                 "registered on this server (start it with the --jobs module that defines it)"}
        await self._record(record, Change(_draft(record, events.failed(time.time(), error)),
                                          fence=Fence(record.attempt), error=error))

    # -- outcomes -----------------------------------------------------------------------

    async def _finish(self, job_id: str, outcome: Outcome) -> None:
        run = self._runs.pop(job_id)
        # The slot is free already: the next claim goes to the writer now, and so can share
        # a commit with this outcome instead of waiting for it.
        self.wake()
        self.metrics.job_duration.labels(run.job.type, outcome.kind).observe(
            time.time() - run.started)
        if run.kill_timer is not None:
            run.kill_timer.cancel()
        assert self.progress is not None, "attempts run only on a node with workers"
        await self.progress.finish(job_id)
        job, now = run.job, time.time()
        if run.lost:
            job_log(job_id).warning("attempt %d ended after its lease was lost; another node "
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
            job_log(job_id).info("completed")
        elif run.cancel_requested or outcome.kind == "cancelled":
            await self._record(job, _cancelled(job, now))
            job_log(job_id).info("cancelled")
        else:
            await self._retry_or_fail(job, _error_of(outcome, job), now)
        self.wake()

    async def _record(self, job: JobRecord, change: Change) -> None:
        """Record an attempt's outcome, waiting out storage trouble (a full disk) rather
        than losing it; while starting or stopping, give up and leave the job to the next
        start's recovery. A fenced outcome the store refuses belongs to an attempt that
        has been taken over (its lease ran out): it is dropped, as it must be."""
        failures = 0
        while True:
            try:
                await self.store.record(job.id, change)
                return
            except IllegalTransition as exc:
                if change.fence is None:
                    raise
                job_log(job.id).warning("attempt %d: %s not recorded: %s", job.attempt,
                                        change.name.value, exc.detail)
                return
            except Unavailable as exc:
                if not self.accepting:
                    raise
                delay = OUTCOME_RETRY.delay(failures)
                job_log(job.id).warning("cannot record %s yet (%s); retrying in %.0fs",
                                        change.name.value, exc.detail, delay)
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
        runs = dict(self._runs)
        if not runs:
            return
        held = await self.store.renew_leases(list(runs))
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
            if job.id in self._runs:
                continue  # ours: renewal deals with it
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

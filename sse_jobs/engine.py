"""The domain: submit, dispatch, progress, outcomes, retries, cancel, recovery, shutdown.

No HTTP and no SQL here. The engine decides what happens to a job and records each
decision through the store, which makes it durable and hands its event to the broker.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hashlib
import logging
import math
import random
import shutil
import time
from collections.abc import Coroutine, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
from pydantic import ValidationError

from sse_jobs.auth import ANONYMOUS, RateLimiter
from sse_jobs.config import Settings
from sse_jobs.errors import (
    BadRequest,
    Conflict,
    IllegalTransition,
    NotFound,
    TooManyRequests,
    Unavailable,
    ValidationFailed,
)
from sse_jobs.events import iso
from sse_jobs.ids import JobIdFactory, is_job_id
from sse_jobs.logs import job_extra
from sse_jobs.metrics import Metrics
from sse_jobs.models import CreateJob, inline_result, job_links
from sse_jobs.pool import Outcome, WorkerPool
from sse_jobs.records import Change, JobRecord, NewJob, ProgressUpdate
from sse_jobs.registry import Registry
from sse_jobs.states import EventName, JobState
from sse_jobs.store.base import Store
from sse_jobs.webhooks import check_callback_url
from sse_jobs.worker import WorkerCall

log = logging.getLogger(__name__)


def job_log(job_id: str) -> logging.LoggerAdapter[logging.Logger]:
    """The engine's logger for lines about one job (they carry its id)."""
    return logging.LoggerAdapter(log, job_extra(job_id))

PROGRESS_HIGH_WATER = 10_000  # unwritten progress events before workers are held back
PROGRESS_LOW_WATER = PROGRESS_HIGH_WATER // 2  # ... and when reading resumes
PROGRESS_CHUNK = 1000  # progress events per store call
RETENTION_BATCH = 100
RETENTION_INTERVAL = 60.0
IDLE_DISPATCH_WAIT = 60.0
STORAGE_RETRY = 1.0  # seconds before loops try storage again after an error
KILL_WAIT = 15.0  # after the grace period: how long killed attempts get to be recorded
SHUTDOWN_RETRY_AFTER = 5
QUEUE_FULL_RETRY_AFTER = 5
ACTIVE_LIMIT_RETRY_AFTER = 5
MAX_IDEMPOTENCY_KEY = 255


@dataclass(slots=True)
class _Run:
    """A running attempt, as the engine tracks it."""

    job: JobRecord
    outcome: asyncio.Future[Outcome]
    started: float = field(default_factory=time.time)
    first_report: tuple[float, float] | None = None  # (time, percent), for the ETA
    last_written: float = 0.0
    pending: ProgressUpdate | None = None  # newest report held back by the rate limit
    flush_timer: asyncio.TimerHandle | None = None
    kill_timer: asyncio.TimerHandle | None = None
    cancel_requested: bool = False
    requeue: bool = False  # killed by shutdown: back to the queue, attempt not spent


class Engine:
    """Owns the dispatcher, the progress writer and the retention sweep."""

    def __init__(self, settings: Settings, store: Store, pool: WorkerPool, registry: Registry,
                 metrics: Metrics) -> None:
        self.settings = settings
        self.metrics = metrics
        self.store = store
        self.pool = pool
        self.registry = registry
        self._ids = JobIdFactory()
        self._runs: dict[str, _Run] = {}
        self._progress_out: list[ProgressUpdate] = []
        self._progress_ready = asyncio.Event()
        self._dispatch_wakeup = asyncio.Event()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._cancel_on_start: set[str] = set()
        self._submissions = RateLimiter(settings.submissions_per_minute)
        self._loops: list[asyncio.Task[None]] = []
        self.accepting = False
        self._stopping: asyncio.Future[None] | None = None

    @property
    def running(self) -> int:
        return len(self._runs)

    @property
    def dispatcher_running(self) -> bool:
        return bool(self._loops) and not self._loops[0].done()

    # -- lifecycle ----------------------------------------------------------------------

    async def start(self) -> None:
        """Recover what a previous process left running, then start dispatching."""
        await self._recover()
        self.pool.start(self._on_progress)
        self._loops = [
            asyncio.create_task(self._dispatch_loop(), name="dispatcher"),
            asyncio.create_task(self._progress_loop(), name="progress-writer"),
            asyncio.create_task(self._retention_loop(), name="retention"),
        ]
        self.accepting = True

    async def stop(self) -> None:
        """Graceful shutdown: refuse new jobs, give running ones the grace period, then
        kill and requeue the rest, and write everything still pending. Idempotent."""
        if self._stopping is None:
            self._stopping = asyncio.ensure_future(self._stop())
        await asyncio.shield(self._stopping)

    async def _stop(self) -> None:
        self.accepting = False
        self._dispatch_wakeup.set()
        if self._loops:  # the dispatcher ends at this wakeup; a stuck one may not hold us up
            done, _ = await asyncio.wait(self._loops[:1], timeout=KILL_WAIT)
            if not done:
                log.error("the dispatcher did not stop within %.0fs; cancelling it", KILL_WAIT)
                self._loops[0].cancel()
        running = [run.outcome for run in self._runs.values()]
        if running:
            log.info("waiting up to %.1fs for %d running jobs", self.settings.shutdown_grace,
                     len(running))
            await asyncio.wait(running, timeout=self.settings.shutdown_grace)
        for job_id, run in self._runs.items():
            job_log(job_id).info("requeueing: still running at shutdown")
            run.requeue = True
            self.pool.kill(job_id)
        deadline = time.monotonic() + KILL_WAIT
        while (self._tasks or self._runs) and time.monotonic() < deadline:
            await asyncio.wait([*self._tasks, *(r.outcome for r in self._runs.values())],
                               timeout=deadline - time.monotonic())
        for task in self._loops:
            task.cancel()
        await asyncio.gather(*self._loops, return_exceptions=True)
        with contextlib.suppress(Unavailable):  # unstored progress is moot after a restart
            await self._write_progress()
        await self.pool.close()

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("background task failed", exc_info=task.exception())

    # -- submit, cancel, delete, read ---------------------------------------------------

    async def submit(
        self, request: CreateJob, idempotency_key: str | None, principal: str = ANONYMOUS
    ) -> tuple[JobRecord, bool]:
        """Validate and store a new job; with a known idempotency key, return that job.

        Named principals (API tokens) are held to their active-job and rate limits; the
        anonymous principal of open mode only to the global queue bound."""
        if not self.accepting:
            raise Unavailable("the server is shutting down", retry_after=SHUTDOWN_RETRY_AFTER)
        job_type = self.registry.get(request.type)
        if job_type is None:
            known = ", ".join(t.name for t in self.registry)
            raise ValidationFailed(f"unknown job type {request.type!r}", [
                {"field": "type", "message": f"unknown job type; registered: {known}"}])
        try:
            params = job_type.params.model_validate(request.params)
        except ValidationError as exc:
            raise ValidationFailed(f"invalid params for job type {request.type!r}",
                                   _params_errors(exc)) from None
        if idempotency_key is not None and not _valid_key(idempotency_key):
            raise BadRequest("Idempotency-Key must be 1-255 printable ASCII characters")
        params_json = params.model_dump(mode="json")
        timeout = min(request.timeout or job_type.timeout, job_type.timeout)
        attempts = request.max_attempts or job_type.max_attempts
        fingerprint = hashlib.sha256(orjson.dumps(
            [request.type, params_json, request.priority, timeout, attempts,
             request.callback_url, request.callback_events],
            option=orjson.OPT_SORT_KEYS)).hexdigest()
        if idempotency_key is not None:  # a retry of an accepted request is never refused
            existing = await self.store.job_by_idempotency_key(principal, idempotency_key)
            if existing is not None:
                return _same_request(existing, fingerprint), False
        if principal != ANONYMOUS:
            await self._check_principal_limits(principal)
        if request.callback_url is not None:
            await check_callback_url(request.callback_url, self.settings.webhook_allow_private)
        if await self.store.count_queued() >= self.settings.max_queued:
            raise Unavailable("the job queue is full", retry_after=QUEUE_FULL_RETRY_AFTER)
        record, created = await self.store.create_job(NewJob(
            id=self._ids.new(), type=request.type, params=params_json,
            priority=request.priority, max_attempts=attempts, timeout=timeout,
            created_at=time.time(), idempotency_key=idempotency_key, request_hash=fingerprint,
            principal=principal, callback_url=request.callback_url,
            callback_events=request.callback_events,
        ))
        if not created:
            return _same_request(record, fingerprint), False
        if created:
            job_log(record.id).info("submitted (type %s)", record.type)
            self.metrics.submitted.labels(record.type).inc()
            self._dispatch_wakeup.set()
        return record, created

    async def _check_principal_limits(self, principal: str) -> None:
        if await self.store.count_active(principal) >= self.settings.max_active_per_principal:
            raise TooManyRequests(f"{principal} has {self.settings.max_active_per_principal} "
                                  "jobs queued or running; wait for some to finish",
                                  retry_after=ACTIVE_LIMIT_RETRY_AFTER)
        wait = self._submissions.take(principal)
        if wait:
            raise TooManyRequests(f"{principal} may submit {self.settings.submissions_per_minute}"
                                  " jobs a minute", retry_after=max(1, math.ceil(wait)))

    def params_errors(self, type_name: Any, params: Any) -> list[dict[str, Any]]:
        """What is wrong with ``params`` for a registered type (nothing if it is unknown)."""
        job_type = self.registry.get(type_name) if isinstance(type_name, str) else None
        if job_type is None or not isinstance(params, dict):
            return []
        try:
            job_type.params.model_validate(params)
        except ValidationError as exc:
            return _params_errors(exc)
        return []

    async def get(self, job_id: str, principal: str | None = None) -> JobRecord:
        """The job, if it exists and (when ``principal`` is given) belongs to ``principal``;
        another principal's job is reported missing, not forbidden, to leak nothing."""
        record = await self.store.get_job(job_id) if is_job_id(job_id) else None
        if record is None or (principal is not None and record.principal != principal):
            raise NotFound(f"no job with id {job_id!r}")
        return record

    async def cancel(self, job_id: str, principal: str | None = None) -> tuple[JobRecord, bool]:
        """Cancel a job. Returns the job and whether it is already cancelled (True) or
        a running attempt has been asked to stop (False)."""
        record = await self.get(job_id, principal)
        if record.state is JobState.QUEUED:
            with contextlib.suppress(IllegalTransition):  # it may have just started
                record, _ = await self.store.record(job_id, dataclasses.replace(
                    _cancelled(time.time()), only_from=frozenset({JobState.QUEUED})))
                job_log(job_id).info("cancelled while queued")
                return record, True
            record = await self.get(job_id)
        if record.state is JobState.CANCELLED:
            return record, True
        if record.state.terminal:
            raise Conflict(f"job {job_id} is already {record.state.value}")
        updated = await self.store.request_cancel(job_id)
        run = self._runs.get(job_id)
        if run is None:  # claimed a moment ago; _start will see the request
            self._cancel_on_start.add(job_id)
        else:
            self._request_stop(run)
        return updated or record, False

    def _request_stop(self, run: _Run) -> None:
        if run.cancel_requested:
            return
        run.cancel_requested = True
        self.pool.request_cancel(run.job.id)
        run.kill_timer = asyncio.get_running_loop().call_later(
            self.settings.cancel_grace, self.pool.kill, run.job.id)
        job_log(run.job.id).info("asked to stop; killed in %.1fs if it does not",
                                 self.settings.cancel_grace)

    async def delete(self, job_id: str, principal: str | None = None) -> None:
        record = await self.get(job_id, principal)
        if not record.state.terminal:
            raise Conflict(f"job {job_id} is {record.state.value}; cancel it first")
        if await self.store.delete_job(job_id):
            await self._remove_results(job_id)

    def result_path(self, record: JobRecord) -> Path | None:
        """The job's result file, if it has one inside its own result directory."""
        if record.result_file is None:
            return None
        directory = (self.settings.results_path / record.id).resolve()
        path = (directory / record.result_file).resolve()
        return path if path.is_relative_to(directory) and path.is_file() else None

    async def _remove_results(self, job_id: str) -> None:
        directory = self.settings.results_path / job_id
        await asyncio.to_thread(shutil.rmtree, directory, ignore_errors=True)

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
            with contextlib.suppress(TimeoutError):  # asyncio.timeout: see webhooks._run
                async with asyncio.timeout(delay):
                    await self._dispatch_wakeup.wait()

    async def _dispatch(self) -> float:
        """Start what can start; how long to wait before looking again (0: at once)."""
        if self.pool.free and self.pool.alive:
            wanted = self.pool.free
            claimed = await self.store.claim(time.time(), wanted)
            for record, _event in claimed:
                self._start(record)
            if len(claimed) == wanted:
                return 0.0
        delay = IDLE_DISPATCH_WAIT
        next_at = await self.store.next_run_at() if self.pool.free else None
        if next_at is not None:
            delay = min(delay, max(0.0, next_at - time.time()))
        return delay

    def _start(self, record: JobRecord) -> None:
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
        await self._record(record.id, Change(EventName.FAILED, time.time(), error=error,
                                                  data={"error": error}))

    # -- progress -----------------------------------------------------------------------

    def _on_progress(self, job_id: str, attempt: int, percent: float, message: str | None,
                     at: float) -> None:
        run = self._runs.get(job_id)
        if run is None or run.job.attempt != attempt:
            return
        if run.first_report is None:
            run.first_report = (at, percent)
        update = ProgressUpdate(job_id, attempt, percent, message,
                                _eta(run.first_report, at, percent), at)
        rate = self.settings.progress_rate
        wait = run.last_written + 1 / rate - at if rate else 0.0
        if wait > 0:
            run.pending = update  # the newest report wins; it is written when the wait ends
            if run.flush_timer is None:
                run.flush_timer = asyncio.get_running_loop().call_later(
                    wait, self._flush_pending, run)
            return
        self._queue_progress(run, update)

    def _flush_pending(self, run: _Run) -> None:
        run.flush_timer = None
        if run.pending is not None:
            self._queue_progress(run, run.pending)

    def _queue_progress(self, run: _Run, update: ProgressUpdate) -> None:
        if run.flush_timer is not None:
            run.flush_timer.cancel()
            run.flush_timer = None
        run.pending = None
        run.last_written = time.time()  # when written, so held reports keep the rate too
        self._progress_out.append(update)
        self._progress_ready.set()
        if len(self._progress_out) >= PROGRESS_HIGH_WATER:
            self.pool.pause_reading()

    async def _progress_loop(self) -> None:
        while True:
            await self._progress_ready.wait()
            self._progress_ready.clear()
            try:
                await self._write_progress()
            except Unavailable as exc:  # workers wait on the full pipe meanwhile
                log.warning("progress not stored yet: %s", exc.detail)
                self._progress_ready.set()
                await asyncio.sleep(STORAGE_RETRY)

    async def _write_progress(self) -> None:
        # In chunks, which bounds the events one commit hands to every stream at once.
        while self._progress_out:
            batch = self._progress_out[:PROGRESS_CHUNK]
            del self._progress_out[:PROGRESS_CHUNK]
            try:
                await self.store.record_progress(batch)
            except Unavailable:
                self._progress_out[:0] = batch  # not stored: keep it, in order
                raise
            # Resumed before the backlog is gone, so that reading the pipe and writing to
            # the store overlap instead of taking turns.
            if len(self._progress_out) < PROGRESS_LOW_WATER:
                self.pool.resume_reading()

    # -- outcomes -----------------------------------------------------------------------

    async def _finish(self, job_id: str, outcome: Outcome) -> None:
        run = self._runs.pop(job_id)
        # The slot is free already: the next claim goes to the writer now, and so can share
        # a commit with this outcome instead of waiting for it.
        self._dispatch_wakeup.set()
        self.metrics.job_duration.labels(run.job.type, outcome.kind).observe(
            time.time() - run.started)
        for timer in (run.flush_timer, run.kill_timer):
            if timer is not None:
                timer.cancel()
        if run.pending is not None:
            self._queue_progress(run, run.pending)
        # Progress of this attempt is written before its outcome, so streams see it first.
        await self._write_progress()
        job, now = run.job, time.time()
        if run.requeue or (not self.accepting and outcome.kind in {"crashed", "killed"}):
            # Killed by our shutdown, or by a signal sent to the whole process group.
            await self._requeue(job, now)
        elif outcome.kind == "ok":
            await self._complete(job, outcome, now)
        elif run.cancel_requested or outcome.kind == "cancelled":
            await self._record(job_id, _cancelled(now))
            job_log(job_id).info("cancelled")
        else:
            await self._retry_or_fail(job, _error_of(outcome, job), now)
        self._dispatch_wakeup.set()

    async def _record(self, job_id: str, change: Change) -> None:
        """Record an attempt's outcome, waiting out storage trouble (a full disk) rather
        than losing it; while starting or stopping, give up and leave the job to the next
        start's recovery."""
        for delay in _backoff():
            try:
                await self.store.record(job_id, change)
                return
            except Unavailable as exc:
                if not self.accepting:
                    raise
                job_log(job_id).warning("cannot record %s yet (%s); retrying in %.0fs",
                                        change.event.value, exc.detail, delay)
                await asyncio.sleep(delay)

    async def _complete(self, job: JobRecord, outcome: Outcome, now: float) -> None:
        links = job_links(job.id)
        await self._record(job.id, Change(
            EventName.COMPLETED, now, result=outcome.result, result_file=outcome.result_file,
            data={"result": inline_result(outcome.result), "result_url": links["result"]}))
        job_log(job.id).info("completed")

    async def _retry_or_fail(self, job: JobRecord, error: dict[str, Any], now: float) -> None:
        if job.attempt < job.max_attempts:
            backoff = self.settings.retry_base * 2 ** (job.attempt - 1)
            ceiling = min(self.settings.retry_max, backoff)
            retry_at = now + random.uniform(0, ceiling)  # noqa: S311 - "full jitter" backoff
            await self._record(job.id, Change(
                EventName.RETRYING, now, error=error, not_before=retry_at,
                data={"attempt": job.attempt + 1, "retry_at": iso(retry_at), "error": error}))
            job_log(job.id).info("attempt %d failed (%s); retrying at %s",
                                 job.attempt, error["type"], iso(retry_at))
            self._dispatch_wakeup.set()
        else:
            await self._record(job.id, Change(EventName.FAILED, now, error=error,
                                                   data={"error": error}))
            job_log(job.id).info("failed (%s)", error["type"])

    async def _requeue(self, job: JobRecord, now: float) -> None:
        error = {"type": "interrupted", "message": "the server shut down during this attempt"}
        await self._record(job.id, Change(
            EventName.RETRYING, now, error=error, not_before=now, refund_attempt=True,
            data={"attempt": job.attempt, "retry_at": iso(now), "error": error}))

    async def _recover(self) -> None:
        """Attempts left ``processing`` by a process that died: retry or fail them."""
        for job in await self.store.jobs_in_state(JobState.PROCESSING):
            now = time.time()
            job_log(job.id).warning("was processing when the server stopped")
            error = {"type": "crashed",
                     "message": f"the server stopped during attempt {job.attempt}"}
            try:
                if job.cancel_requested:
                    await self.store.record(job.id, _cancelled(now))
                else:
                    await self._retry_or_fail(job, error, now)
            except Unavailable as exc:  # left processing; the next start tries again
                job_log(job.id).error("cannot recover it now: %s", exc.detail)

    # -- retention ----------------------------------------------------------------------

    async def _retention_loop(self) -> None:
        while True:
            try:
                await self.sweep()
            except Unavailable as exc:
                log.warning("retention sweep skipped: %s", exc.detail)
            await asyncio.sleep(min(RETENTION_INTERVAL, max(1.0, self.settings.retention)))

    async def sweep(self) -> int:
        """Remove finished jobs older than the retention period, a small batch at a time."""
        removed = 0
        cutoff = time.time() - self.settings.retention
        while batch := await self.store.finished_before(cutoff, RETENTION_BATCH):
            for job_id in batch:
                if await self.store.delete_job(job_id):
                    await self._remove_results(job_id)
                    removed += 1
            if len(batch) < RETENTION_BATCH:
                break
        if removed:
            log.info("retention: removed %d finished jobs", removed)
        return removed


def _params_errors(exc: ValidationError) -> list[dict[str, Any]]:
    return [{"field": ".".join(["params", *map(str, err["loc"])]), "message": err["msg"]}
            for err in exc.errors()]


def _backoff() -> Iterator[float]:
    delay = 1.0
    while True:
        yield delay
        delay = min(delay * 2, 30.0)


def _cancelled(now: float) -> Change:
    error = {"type": "cancelled", "message": "cancelled on request"}
    return Change(EventName.CANCELLED, now, error=error, data={"error": error})


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


def _eta(first: tuple[float, float] | None, at: float, percent: float) -> float | None:
    """Seconds left at the average rate since the first report of this attempt."""
    if first is None:
        return None
    elapsed, done = at - first[0], percent - first[1]
    if elapsed <= 0 or done <= 0:
        return None
    return round((100 - percent) * elapsed / done, 1)


def _same_request(existing: JobRecord, fingerprint: str) -> JobRecord:
    if existing.request_hash != fingerprint:
        raise ValidationFailed("this Idempotency-Key was already used for another request",
                               [{"field": "Idempotency-Key", "message": "reused"}])
    return existing


def _valid_key(key: str) -> bool:
    return 0 < len(key) <= MAX_IDEMPOTENCY_KEY and key.isascii() and key.isprintable()

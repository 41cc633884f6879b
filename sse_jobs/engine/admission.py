"""Admission: what turns a submission into a stored ``queued`` job, or refuses it.

In order: the server must be accepting; the type must be registered and the params valid
for it (pydantic, so defaults are filled in); an ``Idempotency-Key`` that was seen before
returns its job (a retry of an accepted request is never refused); a named principal is
held to its active-job and rate limits; a callback URL must be one we may call. Then the
job is stored with its first event, if the queue has room (the store checks it, and
counts the job's position, in the transaction that stores it).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import math
import time
from collections.abc import Sequence
from typing import Any, Protocol

import orjson
from pydantic import ValidationError

from sse_jobs import events
from sse_jobs.auth import ANONYMOUS
from sse_jobs.config import Settings
from sse_jobs.errors import (
    BadRequest,
    Conflict,
    SseJobsError,
    TooManyRequests,
    Unavailable,
    ValidationFailed,
)
from sse_jobs.ids import JobIdFactory
from sse_jobs.jobs.registry import JobType, Registry
from sse_jobs.logs import job_extra
from sse_jobs.metrics import Metrics
from sse_jobs.models import MAX_DELAY, CreateJob
from sse_jobs.records import JobRecord, NewJob
from sse_jobs.states import EventName, JobState
from sse_jobs.store.base import Store
from sse_jobs.webhooks.guard import check_callback_url
from sse_jobs.webhooks.policy import delivery_url

log = logging.getLogger(__name__)

SHUTDOWN_RETRY_AFTER = 5
ACTIVE_LIMIT_RETRY_AFTER = 5
MAX_IDEMPOTENCY_KEY = 255
RERUNNABLE = frozenset({JobState.FAILED, JobState.CANCELLED})


class Intake(Protocol):
    """What admission needs of the engine: whether it takes jobs, and a nudge for each."""

    @property
    def accepting(self) -> bool: ...

    def wake(self, priority: int | None = None) -> None: ...


class Admission:
    """Validates and stores submissions."""

    def __init__(self, settings: Settings, store: Store, registry: Registry,
                 metrics: Metrics, intake: Intake) -> None:
        self._settings = settings
        self._store = store
        self.registry = registry
        self._metrics = metrics
        self._intake = intake
        self._ids = JobIdFactory()

    async def submit(
        self, request: CreateJob, idempotency_key: str | None, principal: str = ANONYMOUS
    ) -> tuple[JobRecord, bool]:
        """Validate and store a new job; with a known idempotency key, return that job
        (then the flag is False).

        Named principals (API tokens) are held to their active-job and rate limits; the
        anonymous principal of open mode only to the global queue bound."""
        [outcome] = await self.submit_many([(request, idempotency_key)], principal)
        if isinstance(outcome, SseJobsError):
            raise outcome
        return outcome

    async def rerun(self, old: JobRecord, principal: str = ANONYMOUS) -> JobRecord:
        """A new job with the type, params, options and tags of a failed or cancelled one
        (which stays as it is), admitted like any submission: limits and queue bound."""
        if old.state not in RERUNNABLE:
            raise Conflict(f"job {old.id} is {old.state.value}; only a failed or cancelled "
                           "job can be re-run")
        request = CreateJob(
            type=old.type, params=old.params, priority=old.priority, timeout=old.timeout,
            max_attempts=old.max_attempts, callback_url=old.callback_url,
            callback_events="all" if old.callback_events == "all" else "terminal",
            run_at=None, delay=None, tags=list(old.tags))
        [outcome] = await self.submit_many([(request, None)], principal, rerun_of=old.id)
        if isinstance(outcome, SseJobsError):
            raise outcome
        return outcome[0]

    async def submit_many(
        self, requests: Sequence[tuple[CreateJob | SseJobsError, str | None]],
        principal: str = ANONYMOUS, *, rerun_of: str | None = None,
    ) -> list[tuple[JobRecord, bool] | SseJobsError]:
        """``submit`` for each (request, idempotency key), the new jobs stored in one
        transaction: for each, in order, its job and whether it is new, or why it was
        refused (a request that is already an error stays one)."""
        if not self._intake.accepting:
            raise Unavailable("the server is shutting down", retry_after=SHUTDOWN_RETRY_AFTER)
        outcomes: list[tuple[JobRecord, bool] | SseJobsError] = []
        new: list[tuple[int, NewJob]] = []
        for request, key in requests:
            try:
                prepared = await self._prepare(request, key, principal, rerun_of)
            except SseJobsError as refusal:
                outcomes.append(refusal)
                continue
            if isinstance(prepared, JobRecord):
                outcomes.append((prepared, False))
            else:
                new.append((len(outcomes), prepared))
                outcomes.append(Unavailable("not stored"))  # its place, filled in below
        refusals = await self._limits(principal, len(new))
        admitted = [(place, job) for (place, job), refusal in zip(new, refusals, strict=True)
                    if refusal is None]
        for (place, _), limited in zip(new, refusals, strict=True):
            if limited is not None:
                outcomes[place] = limited
        stored = await self._store.create_jobs([job for _, job in admitted],
                                               self._settings.max_queued)
        for (place, job), outcome in zip(admitted, stored, strict=True):
            outcomes[place] = self._stored(job, outcome)
        return outcomes

    async def _prepare(self, request: CreateJob | SseJobsError, idempotency_key: str | None,
                       principal: str, rerun_of: str | None = None) -> NewJob | JobRecord:
        """The job to store for a valid request, or the job already stored for its key."""
        if isinstance(request, SseJobsError):
            raise request
        job_type = self._job_type(request.type)
        try:
            params = job_type.params.model_validate(request.params)
        except ValidationError as exc:
            raise ValidationFailed(f"invalid params for job type {request.type!r}",
                                   _params_errors(exc)) from None
        if idempotency_key is not None and not _valid_key(idempotency_key):
            raise BadRequest("Idempotency-Key must be 1-255 printable ASCII characters")
        now = time.time()
        run_at = _run_at(request, now)
        tags = tuple(dict.fromkeys(request.tags))  # a tag named twice is one tag
        params_json = params.model_dump(mode="json")
        timeout = min(request.timeout or job_type.timeout, job_type.timeout)
        attempts = request.max_attempts or job_type.max_attempts
        fingerprint = hashlib.sha256(orjson.dumps(
            [request.type, params_json, request.priority, timeout, attempts,
             request.callback_url, request.callback_events,
             None if request.run_at is None else request.run_at.isoformat(), request.delay,
             tags],
            option=orjson.OPT_SORT_KEYS)).hexdigest()
        if idempotency_key is not None:  # a retry of an accepted request is never refused
            existing = await self._store.job_by_idempotency_key(principal, idempotency_key)
            if existing is not None:
                return _same_request(existing, fingerprint)
        if request.callback_url is not None:
            await check_callback_url(request.callback_url, self._settings.webhook_allow_private)
        webhook = delivery_url(EventName.QUEUED, request.callback_url, request.callback_events)
        return NewJob(
            id=self._ids.new(), type=request.type, params=params_json,
            priority=request.priority, max_attempts=attempts, timeout=timeout, created_at=now,
            first_event=lambda position: events.queued(now, position, run_at)._replace(
                webhook=webhook),
            idempotency_key=idempotency_key, request_hash=fingerprint, principal=principal,
            callback_url=request.callback_url, callback_events=request.callback_events,
            rerun_of=rerun_of, run_at=run_at, tags=tags)

    def _stored(self, job: NewJob, outcome: tuple[JobRecord, bool] | SseJobsError
                ) -> tuple[JobRecord, bool] | SseJobsError:
        if isinstance(outcome, SseJobsError):
            return outcome
        record, created = outcome
        if not created:  # the same key, stored meanwhile by a concurrent request
            assert job.request_hash is not None
            try:
                return _same_request(record, job.request_hash), False
            except SseJobsError as refusal:
                return refusal
        log.info("submitted (type %s)", record.type, extra=job_extra(record.id))
        self._metrics.submitted.labels(record.type).inc()
        self._intake.wake(record.priority)
        return record, True

    def params_errors(self, type_name: Any, params: Any) -> list[dict[str, Any]]:
        """What is wrong with ``params`` for a registered type (nothing if it is unknown),
        so that one answer can report every mistake of a submission."""
        job_type = self.registry.get(type_name) if isinstance(type_name, str) else None
        if job_type is None or not isinstance(params, dict):
            return []
        try:
            job_type.params.model_validate(params)
        except ValidationError as exc:
            return _params_errors(exc)
        return []

    def _job_type(self, name: str) -> JobType:
        job_type = self.registry.get(name)
        if job_type is None:
            known = ", ".join(t.name for t in self.registry)
            raise ValidationFailed(f"unknown job type {name!r}", [
                {"field": "type", "message": f"unknown job type; registered: {known}"}])
        return job_type

    async def _limits(self, principal: str, count: int) -> Sequence[SseJobsError | None]:
        """For each of ``count`` new jobs of ``principal``, in order, what refuses it:
        a named principal's active-job limit, then its submissions a minute (in the store:
        on a shared store, the limit holds across every node)."""
        if principal == ANONYMOUS or count == 0:
            return [None] * count
        limit = self._settings.max_active_per_principal
        room = max(0, limit - await self._store.count_active(principal))
        busy = TooManyRequests(f"{principal} has {limit} jobs queued or running; wait for "
                               "some to finish", retry_after=ACTIVE_LIMIT_RETRY_AFTER)
        per_minute = self._settings.submissions_per_minute
        waits = await asyncio.gather(*(
            self._store.take_token(f"submissions:{principal}", per_minute / 60.0, per_minute)
            for _ in range(min(count, room))))
        return [None if wait == 0 else TooManyRequests(
                    f"{principal} may submit {per_minute} jobs a minute",
                    retry_after=max(1, math.ceil(wait)))
                for wait in waits] + [busy] * (count - len(waits))


def _run_at(request: CreateJob, now: float) -> float | None:
    """When a submission asks its job to start (None: at once): ``run_at``, or ``delay``
    seconds from now; never both, and never more than ``MAX_DELAY`` ahead."""
    if request.run_at is not None and request.delay is not None:
        raise ValidationFailed("give run_at or delay, not both", [
            {"field": "delay", "message": "not allowed together with run_at"}])
    if request.delay is not None:
        return now + request.delay
    if request.run_at is None:
        return None
    run_at = request.run_at.timestamp()
    if run_at < 0:  # times are kept as UNIX seconds, and written back in 4-digit years
        raise ValidationFailed("run_at is before 1970", [
            {"field": "run_at", "message": "must be 1970-01-01T00:00:00Z or later"}])
    if run_at > now + MAX_DELAY:
        raise ValidationFailed(f"run_at is more than {MAX_DELAY / 86400:g} days ahead", [
            {"field": "run_at", "message": f"at most {MAX_DELAY / 86400:g} days ahead"}])
    return run_at


def _params_errors(exc: ValidationError) -> list[dict[str, Any]]:
    return [{"field": ".".join(["params", *map(str, err["loc"])]), "message": err["msg"]}
            for err in exc.errors()]


def _same_request(existing: JobRecord, fingerprint: str) -> JobRecord:
    if existing.request_hash != fingerprint:
        raise ValidationFailed("this Idempotency-Key was already used for another request",
                               [{"field": "Idempotency-Key", "message": "reused"}])
    return existing


def _valid_key(key: str) -> bool:
    return 0 < len(key) <= MAX_IDEMPOTENCY_KEY and key.isascii() and key.isprintable()

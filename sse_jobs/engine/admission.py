"""Admission: what turns a submission into a stored ``queued`` job, or refuses it.

In order: the server must be accepting; the type must be registered and the params valid
for it (pydantic, so defaults are filled in); an ``Idempotency-Key`` that was seen before
returns its job (a retry of an accepted request is never refused); a named principal is
held to its active-job and rate limits; a callback URL must be one we may call; the
queue must have room. Only then is the job stored, with its first event.
"""

from __future__ import annotations

import hashlib
import logging
import math
import time
from typing import Any, Protocol

import orjson
from pydantic import ValidationError

from sse_jobs import events
from sse_jobs.auth import ANONYMOUS
from sse_jobs.config import Settings
from sse_jobs.errors import BadRequest, TooManyRequests, Unavailable, ValidationFailed
from sse_jobs.ids import JobIdFactory
from sse_jobs.jobs.registry import JobType, Registry
from sse_jobs.logs import job_extra
from sse_jobs.metrics import Metrics
from sse_jobs.models import CreateJob
from sse_jobs.records import JobRecord, NewJob
from sse_jobs.states import EventName
from sse_jobs.store.base import Store
from sse_jobs.webhooks.guard import check_callback_url
from sse_jobs.webhooks.policy import delivery_url

log = logging.getLogger(__name__)

SHUTDOWN_RETRY_AFTER = 5
QUEUE_FULL_RETRY_AFTER = 5
ACTIVE_LIMIT_RETRY_AFTER = 5
MAX_IDEMPOTENCY_KEY = 255


class Intake(Protocol):
    """What admission needs of the engine: whether it takes jobs, and a nudge for each."""

    @property
    def accepting(self) -> bool: ...

    def wake(self) -> None: ...


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
        if not self._intake.accepting:
            raise Unavailable("the server is shutting down", retry_after=SHUTDOWN_RETRY_AFTER)
        job_type = self._job_type(request.type)
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
        if idempotency_key is not None:
            existing = await self._store.job_by_idempotency_key(principal, idempotency_key)
            if existing is not None:
                return _same_request(existing, fingerprint), False
        if principal != ANONYMOUS:
            await self._check_principal_limits(principal)
        if request.callback_url is not None:
            await check_callback_url(request.callback_url, self._settings.webhook_allow_private)
        job_id, now = self._ids.new(), time.time()
        queued, ahead = await self._store.queue_depth(request.priority, job_id)
        if queued >= self._settings.max_queued:
            raise Unavailable("the job queue is full", retry_after=QUEUE_FULL_RETRY_AFTER)
        first = events.queued(now, ahead + 1)._replace(webhook=delivery_url(
            EventName.QUEUED, request.callback_url, request.callback_events))
        record, created = await self._store.create_job(NewJob(
            id=job_id, type=request.type, params=params_json, priority=request.priority,
            max_attempts=attempts, timeout=timeout, created_at=now, queued=first,
            idempotency_key=idempotency_key, request_hash=fingerprint, principal=principal,
            callback_url=request.callback_url, callback_events=request.callback_events,
        ))
        if not created:  # the same key, stored meanwhile by a concurrent request
            return _same_request(record, fingerprint), False
        log.info("submitted (type %s)", record.type, extra=job_extra(record.id))
        self._metrics.submitted.labels(record.type).inc()
        self._intake.wake()
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

    async def _check_principal_limits(self, principal: str) -> None:
        limit = self._settings.max_active_per_principal
        if await self._store.count_active(principal) >= limit:
            raise TooManyRequests(f"{principal} has {limit} jobs queued or running; wait for "
                                  "some to finish", retry_after=ACTIVE_LIMIT_RETRY_AFTER)
        per_minute = self._settings.submissions_per_minute
        # In the store: on a shared store, the limit holds across every node.
        wait = await self._store.take_token(f"submissions:{principal}", per_minute / 60.0,
                                            per_minute)
        if wait:
            raise TooManyRequests(f"{principal} may submit {self._settings.submissions_per_minute}"
                                  " jobs a minute", retry_after=max(1, math.ceil(wait)))


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

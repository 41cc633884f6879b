"""The GraphQL schema (contract section 10): resolvers that call the same domain services
as the REST handlers (``Jobs``, ``Admission.submit``, ``Engine.cancel``, ``Streams``), so
validation, idempotency, limits, principals and stream rules are the REST API's own."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import strawberry
from strawberry.schema.config import StrawberryConfig

from sse_jobs.errors import BadRequest, ValidationFailed
from sse_jobs.models import MAX_TAGS
from sse_jobs.records import JobRecord
from sse_jobs.states import JobState
from sse_jobs.streams.source import NothingToSend
from sse_jobs.web.bodies import submission
from sse_jobs.web.graphql import types
from sse_jobs.web.graphql.context import Context
from sse_jobs.web.graphql.errors import ErrorCodes, log_defects
from sse_jobs.web.graphql.feed import Feed
from sse_jobs.web.graphql.types import JSON, Job, JobEvent, JobList, JobListLinks, JobTypeInfo
from sse_jobs.web.resources import job_resource, job_type_resource

Info = strawberry.Info[Context, None]
DEFAULT_PAGE, MAX_PAGE = 50, 500


def _job(context: Context, record: JobRecord) -> Job:
    return types.job(job_resource(record, context.access.job_links(record.id)))


@strawberry.type
class Query:
    @strawberry.field(description="A job by id; null, with a NOT_FOUND error, when there "
                                  "is none or it is another principal's")
    async def job(self, info: Info, id: strawberry.ID) -> Job | None:
        context = info.context
        return _job(context, await context.jobs.get(str(id), context.who()))

    @strawberry.field(description="Jobs newest first, filtered by state and type; `next` is "
                                  "the cursor of the following page")
    async def jobs(self, info: Info, state: list[JobState] | None = None,
                   type: list[str] | None = None,
                   limit: int = DEFAULT_PAGE, cursor: str | None = None,
                   tag: list[str] | None = None) -> JobList:
        context = info.context
        if not 1 <= limit <= MAX_PAGE:
            raise BadRequest(f"limit must be a whole number from 1 to {MAX_PAGE}")
        principal = context.who()
        if len(tag or []) > MAX_TAGS:
            raise BadRequest(f"filter by at most {MAX_TAGS} tags")
        page = await context.jobs.page(principal, states=state or [], types=type or [],
                                       cursor=cursor, limit=limit, tags=tag or [])
        return JobList(jobs=[_job(context, record) for record in page.jobs], next=page.next,
                       links=JobListLinks(events=context.access.events_link(
                           principal, page.last_event_id)),
                       last_event_id=page.last_event_id)

    @strawberry.field(description="The registered job types")
    def job_types(self, info: Info) -> list[JobTypeInfo]:
        info.context.who()
        return [types.job_type(job_type_resource(t)) for t in info.context.registry]


# GraphQL argument -> CreateJob field, for submitJob and for its errors' field names.
SUBMIT_FIELDS = {"type": "type", "params": "params", "priority": "priority",
                 "timeout": "timeout", "maxAttempts": "max_attempts",
                 "callbackUrl": "callback_url", "callbackEvents": "callback_events",
                 "runAt": "run_at", "delay": "delay", "tags": "tags"}
_ARGUMENT = {field: argument for argument, field in SUBMIT_FIELDS.items()}


@strawberry.type
class Mutation:
    @strawberry.mutation(description="Submit a job, as POST /api/v1/jobs does; a repeated "
                                     "idempotencyKey returns the job it made")
    async def submit_job(self, info: Info, type: str,
                         params: JSON | None = None, priority: int = 0,
                         timeout: float | None = None,  # noqa: ASYNC109 (the argument's name)
                         max_attempts: int | None = None,
                         idempotency_key: str | None = None, callback_url: str | None = None,
                         callback_events: str = "terminal", run_at: str | None = None,
                         delay: float | None = None, tags: list[str] | None = None) -> Job:
        context = info.context
        given: dict[str, Any] = {"type": type, "params": {} if params is None else params,
                 "priority": priority, "timeout": timeout, "max_attempts": max_attempts,
                 "callback_url": callback_url, "callback_events": callback_events,
                 "run_at": run_at, "delay": delay, "tags": tags or []}
        try:
            request = submission(given, context.admission)
        except ValidationFailed as exc:
            raise ValidationFailed(exc.detail, [_argument_error(e) for e in exc.errors]) from None
        record, _created = await context.admission.submit(request, idempotency_key,
                                                          context.who())
        return _job(context, record)

    @strawberry.mutation(description="Run a failed or cancelled job again, as POST "
                                     "/api/v1/jobs/ID/rerun does: a new job, naming the old "
                                     "one in rerunOf")
    async def rerun_job(self, info: Info, id: strawberry.ID) -> Job:
        context = info.context
        principal = context.who()
        old = await context.jobs.get(str(id), principal)
        return _job(context, await context.admission.rerun(old, principal))

    @strawberry.mutation(description="Cancel a job, as POST /api/v1/jobs/ID/cancel does: a "
                                     "queued job at once, a running one is asked to stop")
    async def cancel_job(self, info: Info, id: strawberry.ID) -> Job:
        context = info.context
        record, _done = await context.engine.cancel(str(id), context.who())
        return _job(context, record)


def _argument_error(error: dict[str, Any]) -> dict[str, Any]:
    """A field error named by the GraphQL argument (``maxAttempts``, ``params.seconds``)."""
    head, dot, rest = str(error["field"]).partition(".")
    return {**error, "field": _ARGUMENT.get(head, head) + dot + rest}


@strawberry.type
class Subscription:
    @strawberry.subscription(description="A job's events after seq afterSeq (null: from the "
                                          "first), then live; completes after its terminal "
                                          "event. The same events and ids as its SSE stream")
    async def job_events(self, info: Info, job_id: strawberry.ID,
                         after_seq: int | None = None) -> AsyncIterator[JobEvent]:
        context = info.context
        resume = None if after_seq is None else max(after_seq, 0)
        try:
            source = await context.streams.job(str(job_id), context.who(), resume)
        except NothingToSend:
            return Feed.empty()
        return Feed(source, context.connection)

    @strawberry.subscription(description="Every event of the caller's jobs after global id "
                                          "afterId (null: only what comes next), then live. "
                                          "The same events and ids as /api/v1/events")
    async def events(self, info: Info, after_id: int | None = None) -> AsyncIterator[JobEvent]:
        context = info.context
        resume = None if after_id is None else max(after_id, 0)
        source = await context.streams.everything(context.who(), resume)
        return Feed(source, context.connection)


class Schema(strawberry.Schema):
    """The schema, logging only the errors that are defects (the rest are answers)."""

    def process_errors(self, errors: list[Any], execution_context: Any = None) -> None:
        log_defects(errors)


SCHEMA = Schema(query=Query, mutation=Mutation, subscription=Subscription,
                extensions=[ErrorCodes], config=StrawberryConfig(scalar_map=types.SCALARS))

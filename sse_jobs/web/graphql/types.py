"""The GraphQL object types: the REST resources of ``models.py`` field for field, in
GraphQL's camelCase, built from the very dicts the REST endpoints answer with (so every
value, every timestamp and every link is the same); ``tests/unit/test_graphql_types.py``
fails when a field is added to one and not the other.

Timestamps are the REST strings (UTC ISO 8601 with a ``Z``); ``params``, ``result``,
``paramsSchema`` and an event's ``data`` are JSON as the REST API and SSE send them.
"""

from __future__ import annotations

from typing import Any, NewType

import orjson
import strawberry
from strawberry.types.scalar import ScalarDefinition

from sse_jobs.records import Event
from sse_jobs.states import EventName, JobState

Timestamp = NewType("Timestamp", str)
JSON = NewType("JSON", object)
SCALARS: dict[object, ScalarDefinition] = {
    Timestamp: strawberry.scalar(
        name="Timestamp", serialize=str, parse_value=str,
        description="A UTC time in ISO 8601 with microseconds and a Z, as the REST API "
                    "writes it"),
    # graphql-core's default literal parsing reads an inline object or list as it is.
    JSON: strawberry.scalar(name="JSON", description="Any JSON value",
                            serialize=lambda value: value, parse_value=lambda value: value),
}

# The domain's own enums, made GraphQL enums (strawberry marks the classes): their values,
# not their Python names, are the GraphQL names, so a state reads "queued" everywhere.
strawberry.enum(JobState, name="JobState", graphql_name_from="value",
                description="A job's state; the same words as the REST API and the streams")
strawberry.enum(EventName, name="EventName", graphql_name_from="value",
                description="An event's name; the same words as the event streams")


@strawberry.type(description="Where to find a job and what can be done with it")
class JobLinks:
    self: str
    events: str = strawberry.field(description="the job's SSE stream")
    ws: str = strawberry.field(description="the job's event stream over a WebSocket")
    cancel: str
    result: str = strawberry.field(description="the result: JSON, or the file the job wrote")


@strawberry.type(description="Why an attempt or a job failed")
class JobError:
    type: str = strawberry.field(
        description="exception, timeout, crashed, cancelled, interrupted, ...")
    message: str
    exception: str | None = strawberry.field(
        description="the exception class, for `exception`")
    traceback: str | None = strawberry.field(
        description="only when the server runs with --debug")


@strawberry.type(description="A job, as GET /api/v1/jobs/ID answers it")
class Job:
    id: strawberry.ID = strawberry.field(description="opaque, URL-safe, sortable by creation time")
    type: str
    state: JobState
    params: JSON
    progress: float = strawberry.field(description="percent done")
    message: str | None = strawberry.field(description="the job's last progress text")
    attempt: int = strawberry.field(description="attempts started so far")
    max_attempts: int
    priority: int
    timeout: float = strawberry.field(description="seconds an attempt may run")
    created_at: Timestamp
    started_at: Timestamp | None
    finished_at: Timestamp | None
    result: JSON | None = strawberry.field(
        description="the JSON result when at most 64 KiB, else null")
    error: JobError | None
    last_event_id: int = strawberry.field(description="seq of the job's newest event")
    rerun_of: strawberry.ID | None = strawberry.field(
        description="the job this one runs again, if it is a re-run")
    run_at: Timestamp | None = strawberry.field(
        description="the time it was asked to start at (runAt or delay); null: at once")
    tags: list[str]
    links: JobLinks


@strawberry.type
class JobListLinks:
    events: str = strawberry.field(
        description="the global SSE stream from the moment of this listing")


@strawberry.type(description="One page of jobs, newest first")
class JobList:
    jobs: list[Job]
    next: str | None = strawberry.field(
        description="cursor of the next page; null on the last one")
    links: JobListLinks
    last_event_id: int = strawberry.field(
        description="the newest event id when the page was read: subscribe to "
                    "events(afterId: lastEventId) to miss nothing that changes after it")


@strawberry.type
class JobTypeDefaults:
    timeout: float
    max_attempts: int


@strawberry.type(name="JobType", description="A registered job type")
class JobTypeInfo:
    name: str
    description: str
    params_schema: JSON = strawberry.field(description="JSON Schema of the type's params")
    defaults: JobTypeDefaults
    concurrency: int | None = strawberry.field(
        description="at most this many of its jobs run at once; null: no limit of its own")


@strawberry.type(description="One stored event, as the SSE streams send it")
class JobEvent:
    id: int = strawberry.field(description="the global event id (the id on /api/v1/events)")
    seq: int = strawberry.field(description="the job's own sequence (the id on its stream)")
    job_id: strawberry.ID
    event: EventName
    state: JobState = strawberry.field(description="the job's state after this event")
    at: Timestamp
    data: JSON = strawberry.field(description="the event's data, exactly as SSE sends it")


def job(resource: dict[str, Any]) -> Job:
    """The GraphQL job of a REST job resource (``web.resources.job_resource``)."""
    error = resource["error"]
    return Job(
        id=strawberry.ID(resource["id"]), type=resource["type"],
        state=JobState(resource["state"]), params=resource["params"],
        progress=resource["progress"], message=resource["message"],
        attempt=resource["attempt"], max_attempts=resource["max_attempts"],
        priority=resource["priority"], timeout=resource["timeout"],
        created_at=resource["created_at"], started_at=resource["started_at"],
        finished_at=resource["finished_at"], result=resource["result"],
        error=None if error is None else JobError(
            type=error["type"], message=error["message"], exception=error.get("exception"),
            traceback=error.get("traceback")),
        last_event_id=resource["last_event_id"],
        rerun_of=None if resource["rerun_of"] is None else strawberry.ID(resource["rerun_of"]),
        run_at=resource["run_at"], tags=resource["tags"], links=JobLinks(**resource["links"]))


def job_type(resource: dict[str, Any]) -> JobTypeInfo:
    """The GraphQL job type of a REST job type resource (``web.resources.job_type_resource``)."""
    defaults = resource["defaults"]
    return JobTypeInfo(name=resource["name"], description=resource["description"],
                       params_schema=resource["params_schema"],
                       defaults=JobTypeDefaults(timeout=defaults["timeout"],
                                                max_attempts=defaults["max_attempts"]),
                       concurrency=resource["concurrency"])


def job_event(event: Event) -> JobEvent:
    """An event as a subscription delivers it: its ids, and its stored data decoded."""
    data = orjson.loads(event.data)
    return JobEvent(id=event.id, seq=event.seq, job_id=strawberry.ID(event.job_id),
                    event=event.name, state=JobState(data["state"]), at=data["at"], data=data)

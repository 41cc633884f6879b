"""The contract's request and resource shapes (sections 2, 3 and 6), as pydantic models.

The server validates submissions with them and describes itself with them (OpenAPI); the
client parses answers with them. Plain shapes: nothing here knows the server.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, StringConstraints

MAX_DELAY = 30 * 86400.0  # seconds a submission may ask a job to wait: 30 days
MAX_TAGS = 16
Tag = Annotated[str, StringConstraints(min_length=1, max_length=64,
                                       pattern=r"^[A-Za-z0-9._:-]+$")]


class CreateJob(BaseModel):
    """The body of ``POST /api/v1/jobs``."""

    # strict: JSON false is not a priority, nor "3" an attempt count
    model_config = ConfigDict(extra="forbid", strict=True)

    type: str = Field(min_length=1, max_length=64, description="a registered job type")
    params: dict[str, Any] = Field(default_factory=dict, description="the type's parameters")
    priority: int = Field(0, ge=-1000, le=1000, description="higher runs first")
    timeout: float | None = Field(None, gt=0, description="seconds; capped by the type's")
    max_attempts: int | None = Field(None, ge=1, le=100, description="default: the type's")
    callback_url: str | None = Field(None, max_length=2048,
                                     description="webhook URL for this job's events")
    callback_events: Literal["terminal", "all"] = Field(
        "terminal", description="webhook on terminal events only, or on every event")
    # not strict: the time arrives as an ISO 8601 string; it must name its offset
    run_at: AwareDatetime | None = Field(
        None, strict=False, description="do not start before this time (ISO 8601 with an "
                                        "offset); a time past starts as soon as possible")
    delay: float | None = Field(None, gt=0, le=MAX_DELAY,
                                description="seconds to wait before starting; not with run_at")
    tags: list[Tag] = Field(default_factory=list, max_length=MAX_TAGS,
                            description="labels to find the job by: up to 16, each 1-64 of "
                                        "A-Z a-z 0-9 . _ : -")


class BulkSubmission(CreateJob):
    """One item of a bulk submission: ``POST /api/v1/jobs`` with a JSON array of them."""

    idempotency_key: str | None = Field(
        None, min_length=1, max_length=255,
        description="as the Idempotency-Key header does for a single submission")


StateName = Literal["queued", "processing", "completed", "failed", "cancelled"]


class JobLinks(BaseModel):
    self: str
    events: str = Field(description="the job's SSE stream")
    ws: str = Field(description="the job's event stream over a WebSocket")
    cancel: str
    result: str = Field(description="the result: JSON, or the file the job wrote")


class JobError(BaseModel):
    """Why an attempt or a job failed."""

    model_config = ConfigDict(extra="allow")

    type: str = Field(description="exception, timeout, crashed, cancelled, interrupted, ...")
    message: str
    exception: str | None = Field(None, description="the exception class, for `exception`")
    traceback: str | None = Field(None, description="only when the server runs with --debug")


class Job(BaseModel):
    """The job resource every job-returning endpoint answers with."""

    id: str = Field(description="opaque, URL-safe, sortable by creation time")
    type: str
    state: StateName
    params: dict[str, Any]
    progress: float = Field(ge=0, le=100, description="percent done")
    message: str | None = Field(description="the job's last progress text")
    attempt: int = Field(ge=0, description="attempts started so far")
    max_attempts: int
    priority: int
    timeout: float = Field(description="seconds an attempt may run")
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    result: Any = Field(description="the JSON result when at most 64 KiB, else null")
    error: JobError | None
    last_event_id: int = Field(description="seq of the job's newest event")
    rerun_of: str | None = Field(description="the job this one runs again, if it is a re-run")
    run_at: datetime | None = Field(
        description="the time it was asked to start at (run_at or delay); null: at once")
    tags: list[str]
    links: JobLinks


class JobListLinks(BaseModel):
    events: str = Field(description="the global stream from the moment of this listing")


class JobList(BaseModel):
    jobs: list[Job]
    next: str | None = Field(description="cursor of the next page; null on the last one")
    links: JobListLinks


class JobTypeDefaults(BaseModel):
    timeout: float
    max_attempts: int


class JobTypeInfo(BaseModel):
    name: str
    description: str
    params_schema: dict[str, Any] = Field(description="JSON Schema of the type's params")
    defaults: JobTypeDefaults
    concurrency: int | None = Field(
        description="at most this many of its jobs run at once; null: no limit of its own")


class JobTypes(BaseModel):
    job_types: list[JobTypeInfo]


class JobCount(BaseModel):
    type: str
    state: StateName
    count: int = Field(ge=1)


class JobCounts(BaseModel):
    """How many jobs the caller has of each type and state (pairs with none are left out)."""

    counts: list[JobCount]


class Whoami(BaseModel):
    """Who the caller is: the principal of its API token; null when the server has none."""

    principal: str | None
    tokens: bool = Field(description="whether the server requires API tokens")


class FieldError(BaseModel):
    field: str
    message: str


class Problem(BaseModel):
    """An RFC 9457 problem document (``application/problem+json``)."""

    type: str
    title: str
    status: int
    detail: str
    errors: list[FieldError] | None = Field(None, description="with 422: what is invalid")


class DeliveryAttemptInfo(BaseModel):
    number: int
    at: datetime
    status: int | None = Field(description="the receiver's HTTP status; null: no answer")
    error: str | None
    duration: float = Field(description="seconds")


class DeliveryInfo(BaseModel):
    """A webhook for one event of a job."""

    id: int
    event: str
    seq: int
    url: str
    webhook_id: str = Field(description="the webhook-id header: <job id>.<seq>")
    state: Literal["pending", "delivered", "dead"]
    created_at: datetime
    next_attempt_at: datetime | None
    attempts: list[DeliveryAttemptInfo]


class DeliveryList(BaseModel):
    deliveries: list[DeliveryInfo]


class Health(BaseModel):
    status: Literal["ok", "unavailable"]
    database: str = Field(description="ok, or why the database cannot answer")
    pool: str = Field(description="ok, down, or none on a node that runs no jobs")
    dispatcher: str = Field(description="ok, down, or none on a node that runs no jobs")
    role: Literal["api+worker", "api"] = Field(
        description="api: a node that runs no jobs (--workers 0)")
    workers: int = Field(description="worker processes of this node")
    backend: Literal["sqlite", "postgresql"]
    node: str = Field(description="this node's name among the nodes of its database")


class BulkResult(BaseModel):
    """What became of one item of a bulk submission."""

    status: int = Field(description="202 stored; 200 the job already made for its "
                                    "idempotency_key; else the status of its problem")
    job: Job | None = None
    problem: Problem | None = None


class BulkResults(BaseModel):
    """The answer to a bulk submission (``207``): one result per item, in order."""

    results: list[BulkResult]

"""The exceptions of sse-jobs.

Every error the domain raises derives from ``SseJobsError`` and carries the HTTP status
the web layer answers with, so one middleware turns any of them into problem+json
(RFC 9457)::

    SseJobsError
    ├── BadRequest             400  malformed JSON, bad query parameter
    ├── Unauthorized           401  missing or wrong API token or stream token
    ├── NotFound               404  unknown job (or another principal's)
    ├── Conflict               409  the job is in the wrong state for the request
    ├── UnsupportedMediaType   415  body is not JSON
    ├── ValidationFailed       422  invalid params, unknown job type, reused Idempotency-Key
    ├── TooManyRequests        429  a per-principal limit (active jobs, rate, streams)
    └── Unavailable            503  queue full, shutting down, storage unwritable

Storage backends translate their own errors into these at the boundary.
"""

from __future__ import annotations

from typing import Any, ClassVar


class SseJobsError(Exception):
    """Base of every error sse-jobs raises on purpose."""

    status: ClassVar[int] = 500
    title: ClassVar[str] = "Internal Server Error"

    def __init__(self, detail: str, *, retry_after: int | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        self.retry_after = retry_after


class BadRequest(SseJobsError):
    status = 400
    title = "Bad Request"


class NotFound(SseJobsError):
    status = 404
    title = "Not Found"


class Conflict(SseJobsError):
    status = 409
    title = "Conflict"


class UnsupportedMediaType(SseJobsError):
    status = 415
    title = "Unsupported Media Type"


class ValidationFailed(SseJobsError):
    status = 422
    title = "Unprocessable Content"

    def __init__(self, detail: str, errors: list[dict[str, Any]] | None = None) -> None:
        super().__init__(detail)
        self.errors = errors or []


class TooManyRequests(SseJobsError):
    status = 429
    title = "Too Many Requests"


class Unauthorized(SseJobsError):
    """No valid credentials; the web layer adds ``WWW-Authenticate: Bearer``."""

    status = 401
    title = "Unauthorized"


class Unavailable(SseJobsError):
    status = 503
    title = "Service Unavailable"


class IllegalTransition(Conflict):
    """The store refused an event the job's current state does not allow."""


class JobCancelled(Exception):
    """Raised inside a job by ``ctx.progress`` once the job has been asked to stop."""

"""The contract's request and resource shapes (``../shared/CONTRACT.md`` section 2)."""

from __future__ import annotations

from typing import Any

import orjson
from pydantic import BaseModel, ConfigDict, Field

from sse_jobs.events import iso
from sse_jobs.records import JobRecord

API = "/api/v1"
INLINE_RESULT_LIMIT = 64 * 1024  # larger results are only served at links.result


class CreateJob(BaseModel):
    """The body of ``POST /api/v1/jobs``."""

    model_config = ConfigDict(extra="forbid")

    type: str = Field(min_length=1, max_length=64, description="a registered job type")
    params: dict[str, Any] = Field(default_factory=dict, description="the type's parameters")
    priority: int = Field(0, ge=-1000, le=1000, description="higher runs first")
    timeout: float | None = Field(None, gt=0, description="seconds; capped by the type's")
    max_attempts: int | None = Field(None, ge=1, le=100, description="default: the type's")


def job_links(job_id: str) -> dict[str, str]:
    base = f"{API}/jobs/{job_id}"
    return {"self": base, "events": f"{base}/events", "cancel": f"{base}/cancel",
            "result": f"{base}/result"}


def job_resource(job: JobRecord) -> dict[str, Any]:
    """The job resource every job-returning endpoint answers with."""
    return {
        "id": job.id,
        "type": job.type,
        "state": job.state.value,
        "params": job.params,
        "progress": job.progress,
        "message": job.message,
        "attempt": job.attempt,
        "max_attempts": job.max_attempts,
        "priority": job.priority,
        "timeout": job.timeout,
        "created_at": iso(job.created_at),
        "started_at": iso(job.started_at),
        "finished_at": iso(job.finished_at),
        "result": inline_result(job.result),
        "error": job.error,
        "last_event_id": job.last_event_id,
        "links": job_links(job.id),
    }


def inline_result(result: bytes | None) -> Any:
    """The decoded result when small enough to embed, else None (see links.result)."""
    if result is None or len(result) > INLINE_RESULT_LIMIT:
        return None
    return orjson.loads(result)

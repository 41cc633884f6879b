"""The resources the API answers with (contract section 2), built from stored records."""

from __future__ import annotations

from typing import Any

import orjson
from aiohttp import web

from sse_jobs.events import inline_result, iso
from sse_jobs.jobs.registry import JobType
from sse_jobs.records import Delivery, DeliveryAttempt, JobRecord


def json_response(
    body: Any, status: int = 200, headers: dict[str, str] | None = None
) -> web.Response:
    return web.Response(status=status, body=orjson.dumps(body),
                        content_type="application/json", headers=headers)


def job_resource(job: JobRecord, links: dict[str, str]) -> dict[str, Any]:
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
        "rerun_of": job.rerun_of,
        "run_at": iso(job.run_at),
        "tags": list(job.tags),
        "links": links,
    }


def job_type_resource(job_type: JobType) -> dict[str, Any]:
    return {"name": job_type.name, "description": job_type.description,
            "params_schema": job_type.params_schema(),
            "defaults": {"timeout": job_type.timeout, "max_attempts": job_type.max_attempts},
            "concurrency": job_type.concurrency}


def delivery_resource(delivery: Delivery, attempts: list[DeliveryAttempt]) -> dict[str, Any]:
    """A delivery as ``GET /api/v1/jobs/ID/deliveries`` shows it."""
    return {
        "id": delivery.id, "event": delivery.event, "seq": delivery.seq, "url": delivery.url,
        "webhook_id": f"{delivery.job_id}.{delivery.seq}", "state": delivery.state,
        "created_at": iso(delivery.created_at),
        "next_attempt_at": iso(delivery.next_attempt_at) if delivery.state == "pending" else None,
        "attempts": [{"number": a.number, "at": iso(a.at), "status": a.status,
                      "error": a.error, "duration": a.duration} for a in attempts],
    }

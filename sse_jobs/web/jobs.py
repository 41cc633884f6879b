"""The job endpoints of contract section 3: thin handlers over the domain services."""

from __future__ import annotations

import mimetypes
from pathlib import Path
from typing import Any
from urllib.parse import quote

from aiohttp import web

from sse_jobs.errors import BadRequest, SseJobsError, ValidationFailed
from sse_jobs.models import MAX_TAGS, BulkSubmission, CreateJob
from sse_jobs.paths import API
from sse_jobs.records import JobRecord
from sse_jobs.states import JobState
from sse_jobs.web.bodies import csv_param, int_param, json_body, submission
from sse_jobs.web.keys import (
    ACCESS,
    ADMISSION,
    DELIVERIES,
    ENGINE,
    JOB_TYPES,
    JOBS,
    PRINCIPAL,
)
from sse_jobs.web.middleware import problem_of
from sse_jobs.web.resources import (
    delivery_resource,
    job_resource,
    job_type_resource,
    json_response,
)

DEFAULT_PAGE, MAX_PAGE = 50, 500
MAX_BULK = 1000  # jobs in one bulk submission
RETRY_AFTER_QUEUED, RETRY_AFTER_PROCESSING = 2, 1


def add_routes(app: web.Application) -> None:
    app.add_routes([
        web.post(f"{API}/jobs", create_job),
        web.get(f"{API}/jobs", list_jobs, allow_head=False),
        web.get(f"{API}/jobs/{{id}}", get_job, allow_head=False),
        web.delete(f"{API}/jobs/{{id}}", delete_job),
        web.post(f"{API}/jobs/{{id}}/cancel", cancel_job),
        web.post(f"{API}/jobs/{{id}}/rerun", rerun_job),
        web.get(f"{API}/jobs/{{id}}/result", get_result, allow_head=False, name="job_result"),
        web.get(f"{API}/job-types", job_types, allow_head=False),
        web.get(f"{API}/job-counts", job_counts, allow_head=False),
        web.get(f"{API}/whoami", whoami, allow_head=False),
        web.get(f"{API}/jobs/{{id}}/deliveries", list_deliveries, allow_head=False),
        web.post(f"{API}/jobs/{{id}}/deliveries/{{delivery}}/retry", retry_delivery),
    ])


def named(request: web.Request) -> str:
    """The principal of a request that needs an API token (stream tokens never get here)."""
    principal = request[PRINCIPAL]
    assert principal is not None, "authentication admits stream tokens only to streams"
    return principal


def _resource(request: web.Request, record: JobRecord) -> dict[str, Any]:
    return job_resource(record, request.app[ACCESS].job_links(record.id))


async def create_job(request: web.Request) -> web.Response:
    body = await json_body(request)
    if isinstance(body, list):
        return await _create_many(request, body)
    admission = request.app[ADMISSION]
    record, created = await admission.submit(
        submission(body, admission), request.headers.get("Idempotency-Key"), named(request))
    resource = _resource(request, record)
    return json_response(resource, 202 if created else 200,
                         {"Location": resource["links"]["self"]})


async def _create_many(request: web.Request, body: list[Any]) -> web.Response:
    """A bulk submission: every valid item stored in one transaction, ``207`` with what
    became of each item, in order."""
    if "Idempotency-Key" in request.headers:
        raise BadRequest("a bulk submission takes an idempotency_key in each item, not the "
                         "Idempotency-Key header")
    if not 1 <= len(body) <= MAX_BULK:
        raise ValidationFailed(f"a bulk submission has 1 to {MAX_BULK} jobs, not {len(body)}",
                               [{"field": "body", "message": f"1 to {MAX_BULK} items"}])
    admission = request.app[ADMISSION]
    items: list[tuple[CreateJob | SseJobsError, str | None]] = []
    for number, item in enumerate(body):
        try:
            valid = submission(item, admission, BulkSubmission, f"item {number}")
        except ValidationFailed as invalid:
            items.append((invalid, None))
        else:
            assert isinstance(valid, BulkSubmission)
            items.append((valid, valid.idempotency_key))
    outcomes = await admission.submit_many(items, named(request))
    results = [{"status": outcome.status, "problem": problem_of(outcome)}
               if isinstance(outcome, SseJobsError) else
               {"status": 202 if outcome[1] else 200, "job": _resource(request, outcome[0])}
               for outcome in outcomes]
    return json_response({"results": results}, 207)


async def get_job(request: web.Request) -> web.Response:
    record = await request.app[JOBS].get(request.match_info["id"], named(request))
    headers = {}
    if not record.state.terminal:
        wait = RETRY_AFTER_QUEUED if record.state is JobState.QUEUED else RETRY_AFTER_PROCESSING
        headers["Retry-After"] = str(wait)
    return json_response(_resource(request, record), headers=headers)


async def list_jobs(request: web.Request) -> web.Response:
    query = request.query
    states = csv_param(query.getall("state", []), "state")
    unknown = [s for s in states if s not in JobState.__members__.values()]
    if unknown:
        raise BadRequest(f"unknown state {unknown[0]!r}; use one of "
                         + ", ".join(s.value for s in JobState))
    tags = csv_param(query.getall("tag", []), "tag")
    if len(tags) > MAX_TAGS:
        raise BadRequest(f"filter by at most {MAX_TAGS} tags, not {len(tags)}")
    principal = named(request)
    page = await request.app[JOBS].page(
        principal, states=[JobState(s) for s in states],
        types=csv_param(query.getall("type", []), "type"), cursor=query.get("cursor"),
        limit=int_param(query.get("limit"), "limit", DEFAULT_PAGE, 1, MAX_PAGE), tags=tags)
    links = {"events": request.app[ACCESS].events_link(principal, page.last_event_id)}
    return json_response({"jobs": [_resource(request, r) for r in page.jobs],
                          "next": page.next, "links": links})


async def cancel_job(request: web.Request) -> web.Response:
    record, done = await request.app[ENGINE].cancel(request.match_info["id"], named(request))
    return json_response(_resource(request, record), 200 if done else 202)


async def rerun_job(request: web.Request) -> web.Response:
    """A new job like a failed or cancelled one: 202 with it, which names ``rerun_of``."""
    principal = named(request)
    old = await request.app[JOBS].get(request.match_info["id"], principal)
    resource = _resource(request, await request.app[ADMISSION].rerun(old, principal))
    return json_response(resource, 202, {"Location": resource["links"]["self"]})


async def delete_job(request: web.Request) -> web.Response:
    await request.app[JOBS].delete(request.match_info["id"], named(request))
    return web.Response(status=204)


async def get_result(request: web.Request) -> web.StreamResponse:
    jobs = request.app[JOBS]
    result = jobs.result(await jobs.get(request.match_info["id"], request[PRINCIPAL]))
    if isinstance(result, Path):
        content_type = mimetypes.guess_type(result.name)[0] or "application/octet-stream"
        return web.FileResponse(result, headers={
            "Content-Type": content_type, "Content-Disposition": _attachment(result.name)})
    return web.Response(body=result, content_type="application/json")


def _attachment(name: str) -> str:
    """Content-Disposition for a download (RFC 6266): a quoted ASCII fallback for old
    clients, and the exact UTF-8 name in ``filename*``."""
    fallback = name.encode("ascii", "replace").decode().replace("\\", "\\\\")
    fallback = fallback.replace('"', '\\"')
    return f"attachment; filename=\"{fallback}\"; filename*=UTF-8''{quote(name, safe='')}"


async def job_types(request: web.Request) -> web.Response:
    return json_response({"job_types": [job_type_resource(t) for t in request.app[JOB_TYPES]]})


async def job_counts(request: web.Request) -> web.Response:
    """The caller's jobs counted by type and state: what a dashboard's filters show."""
    counts = sorted(await request.app[JOBS].counts(named(request)))
    return json_response({"counts": [{"type": job_type, "state": state, "count": count}
                                     for job_type, state, count in counts]})


async def whoami(request: web.Request) -> web.Response:
    """The principal the caller's token names (null in open mode), so a page can say who
    is signed in."""
    return json_response({"principal": named(request) or None,
                          "tokens": request.app[ACCESS].enabled})


async def list_deliveries(request: web.Request) -> web.Response:
    record = await request.app[JOBS].get(request.match_info["id"], named(request))
    deliveries = await request.app[DELIVERIES].of_job(record.id)
    return json_response({"deliveries": [delivery_resource(d, a) for d, a in deliveries]})


async def retry_delivery(request: web.Request) -> web.Response:
    record = await request.app[JOBS].get(request.match_info["id"], named(request))
    delivery = await request.app[DELIVERIES].retry(record.id, request.match_info["delivery"])
    return json_response(delivery_resource(delivery, []), 202)

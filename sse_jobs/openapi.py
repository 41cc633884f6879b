"""The OpenAPI 3.1 description of the API, built from the pydantic models in
``models.py`` — the same ones that validate requests — so the document cannot drift
from what the server accepts."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from sse_jobs import __version__
from sse_jobs.models import (
    API,
    CreateJob,
    Health,
    Job,
    JobList,
    JobTypes,
    Problem,
)

_REF = "#/components/schemas/{model}"
_MODELS: list[type[BaseModel]] = [CreateJob, Health, Job, JobList, JobTypes, Problem]

_EVENTS_DESCRIPTION = (
    "Server-Sent Events. Each event has `id`, `event` (queued, processing, progress, "
    "retrying, completed, failed, cancelled) and one line of JSON `data`. Send "
    "`Last-Event-ID` (or `?last_event_id=`) to resume after that id.")


def build() -> dict[str, Any]:
    """The whole document."""
    _, schemas = models_json_schema([(m, "serialization") for m in _MODELS], ref_template=_REF)
    job_id = {"name": "id", "in": "path", "required": True, "schema": {"type": "string"},
              "description": "the job's id"}
    resume = [
        {"name": "Last-Event-ID", "in": "header", "required": False,
         "schema": {"type": "string"}, "description": "resume after this event id"},
        {"name": "last_event_id", "in": "query", "required": False,
         "schema": {"type": "string"}, "description": "as Last-Event-ID, for EventSource"},
    ]
    return {
        "openapi": "3.1.0",
        "info": {"title": "sse-jobs", "version": __version__,
                 "description": "Long-running requests as jobs with live SSE progress."},
        "paths": {
            f"{API}/jobs": {
                "post": _op("createJob", "Submit a job", body="CreateJob", responses={
                    "202": _json("Job", "accepted", location=True),
                    "200": _json("Job", "the job already made for this Idempotency-Key"),
                }, problems=(400, 413, 415, 422, 503), parameters=[
                    {"name": "Idempotency-Key", "in": "header", "required": False,
                     "schema": {"type": "string", "minLength": 1, "maxLength": 255}},
                ]),
                "get": _op("listJobs", "List jobs, newest first", parameters=[
                    {"name": "state", "in": "query", "required": False,
                     "schema": {"type": "string"}, "description": "comma separated states"},
                    {"name": "type", "in": "query", "required": False,
                     "schema": {"type": "string"}, "description": "comma separated types"},
                    {"name": "limit", "in": "query", "required": False,
                     "schema": {"type": "integer", "minimum": 1, "maximum": 500}},
                    {"name": "cursor", "in": "query", "required": False,
                     "schema": {"type": "string"}},
                ], responses={"200": _json("JobList", "a page of jobs")}, problems=(400,)),
            },
            f"{API}/jobs/{{id}}": {
                "get": _op("getJob", "Get a job", parameters=[job_id], responses={
                    "200": _json("Job", "the job; Retry-After while it is not finished")},
                    problems=(404,)),
                "delete": _op("deleteJob", "Delete a finished job", parameters=[job_id],
                              responses={"204": {"description": "deleted"}},
                              problems=(404, 409)),
            },
            f"{API}/jobs/{{id}}/cancel": {
                "post": _op("cancelJob", "Cancel a job", parameters=[job_id], responses={
                    "200": _json("Job", "cancelled (now or before)"),
                    "202": _json("Job", "the running job was asked to stop"),
                }, problems=(404, 409)),
            },
            f"{API}/jobs/{{id}}/result": {
                "get": _op("getResult", "Download a completed job's result",
                           parameters=[job_id], responses={"200": {
                               "description": "the result, in its own content type",
                               "content": {"application/json": {}, "*/*": {}}}},
                           problems=(404, 409)),
            },
            f"{API}/jobs/{{id}}/events": {
                "get": _op("jobEvents", "A job's event stream", parameters=[job_id, *resume],
                           responses={"200": _events(), "204": {
                               "description": "the job is finished and nothing is left"}},
                           problems=(404,)),
            },
            f"{API}/events": {
                "get": _op("allEvents", "Every job's events", parameters=resume,
                           responses={"200": _events()}),
            },
            f"{API}/job-types": {
                "get": _op("listJobTypes", "Registered job types",
                           responses={"200": _json("JobTypes", "the types")}),
            },
            "/healthz": {
                "get": _op("health", "Health", responses={
                    "200": _json("Health", "healthy"), "503": _json("Health", "unhealthy")}),
            },
            "/metrics": {
                "get": _op("metrics", "Prometheus metrics", responses={"200": {
                    "description": "metrics in the Prometheus text format",
                    "content": {"text/plain": {"schema": {"type": "string"}}}}}),
            },
        },
        "components": {"schemas": schemas["$defs"]},
    }


def _op(operation_id: str, summary: str, *, responses: dict[str, Any],
        parameters: list[dict[str, Any]] | None = None, body: str | None = None,
        problems: tuple[int, ...] = ()) -> dict[str, Any]:
    operation: dict[str, Any] = {"operationId": operation_id, "summary": summary,
                                 "responses": dict(responses)}
    if parameters:
        operation["parameters"] = parameters
    if body is not None:
        operation["requestBody"] = {"required": True, "content": {
            "application/json": {"schema": {"$ref": _REF.format(model=body)}}}}
    for status in problems:
        operation["responses"][str(status)] = {
            "description": "problem", "content": {"application/problem+json": {
                "schema": {"$ref": _REF.format(model="Problem")}}}}
    return operation


def _json(model: str, description: str, *, location: bool = False) -> dict[str, Any]:
    response: dict[str, Any] = {"description": description, "content": {
        "application/json": {"schema": {"$ref": _REF.format(model=model)}}}}
    if location:
        response["headers"] = {"Location": {"schema": {"type": "string"},
                                            "description": "the job's URL"}}
    return response


def _events() -> dict[str, Any]:
    return {"description": _EVENTS_DESCRIPTION,
            "content": {"text/event-stream": {"schema": {"type": "string"}}}}

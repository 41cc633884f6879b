"""The OpenAPI 3.1 description of the API, built from the pydantic models in
``models.py`` — the same ones that validate requests — so the document cannot drift
from what the server accepts."""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import JsonSchemaMode, models_json_schema

from sse_jobs import __version__
from sse_jobs.jobs.registry import Registry
from sse_jobs.models import (
    BulkResults,
    BulkSubmission,
    CreateJob,
    DeliveryInfo,
    DeliveryList,
    Health,
    Job,
    JobCounts,
    JobList,
    JobTypes,
    Problem,
    Whoami,
)
from sse_jobs.paths import API

_REF = "#/components/schemas/{model}"
_MODELS: list[type[BaseModel]] = [BulkResults, BulkSubmission, CreateJob, DeliveryInfo,
                                   DeliveryList, Health, Job, JobCounts, JobList, JobTypes,
                                   Problem, Whoami]

# From a new job to what can be done with it (used by clients and stateful API testing).
_LINKS = {
    operation: {"operationId": operation, "parameters": {"id": "$response.body#/id"}}
    for operation in ("getJob", "cancelJob", "getResult", "deleteJob", "jobEvents")
}

_STATE = "(queued|processing|completed|failed|cancelled)"

_SECURITY_SCHEMES = {
    "apiToken": {"type": "http", "scheme": "bearer",
                 "description": "an API token from --api-tokens-file; not needed when the "
                                "server runs without tokens (local, open mode)"},
    "streamToken": {"type": "apiKey", "in": "query", "name": "token",
                    "description": "the job-scoped token in links.events and links.result"},
}

_EVENTS_DESCRIPTION = (
    "Server-Sent Events. Each event has `id`, `event` (queued, processing, progress, "
    "retrying, completed, failed, cancelled) and one line of JSON `data`. Send "
    "`Last-Event-ID` (or `?last_event_id=`) to resume after that id.")

_WS_DESCRIPTION = (
    "Switching Protocols: a WebSocket with one text frame per event, "
    '`{"id": N, "event": NAME, "data": {...}}` (the SSE id, event and data); closed with '
    "1000 after the terminal event, 1013 when the reader falls behind, 1012 at shutdown. "
    "Refusals are answered before the upgrade. GraphQL is served at /graphql (schema at "
    "/graphql/schema.graphql).")


def build(registry: Registry) -> dict[str, Any]:
    """The whole document, with the request body of each registered job type."""
    params_models: list[tuple[type[BaseModel], JsonSchemaMode]] = [
        (t.params, "validation") for t in registry]
    refs, schemas = models_json_schema(
        [*((m, "serialization") for m in _MODELS), *params_models], ref_template=_REF)
    definitions = schemas["$defs"]
    submissions = _submissions(registry, definitions, refs)
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
                "post": _op("createJob", "Submit a job, or an array of them", body=submissions,
                            responses={
                    "202": {**_json("Job", "accepted", location=True), "links": _LINKS},
                    "200": _json("Job", "the job already made for this Idempotency-Key"),
                    "207": _json("BulkResults", "an array was submitted: what became of "
                                 "each item, in order"),
                }, problems=(400, 413, 415, 422, 503), parameters=[
                    {"name": "Idempotency-Key", "in": "header", "required": False,
                     "schema": {"type": "string", "minLength": 1, "maxLength": 255,
                                "pattern": "^[\\x20-\\x7e]+$"}},
                ]),
                "get": _op("listJobs", "List jobs, newest first", parameters=[
                    {"name": "state", "in": "query", "required": False,
                     "schema": {"type": "string", "pattern": f"^({_STATE}(,{_STATE})*)?$"},
                     "description": "comma separated states; empty means any"},
                    {"name": "type", "in": "query", "required": False,
                     "schema": {"type": "string"}, "description": "comma separated types"},
                    {"name": "limit", "in": "query", "required": False,
                     "schema": {"type": "integer", "minimum": 1, "maximum": 500}},
                    {"name": "cursor", "in": "query", "required": False,
                     "schema": {"type": "string", "pattern": "^[0-9A-HJKMNP-TV-Z]{26}$"},
                     "description": "`next` of the previous page"},
                    {"name": "tag", "in": "query", "required": False, "explode": True,
                     "schema": {"type": "array", "maxItems": 16, "items": {"type": "string"}},
                     "description": "repeatable (or comma separated): only the jobs that "
                                    "have every tag named"},
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
            f"{API}/jobs/{{id}}/rerun": {
                "post": _op("rerunJob", "Run a failed or cancelled job again, as a new job",
                            parameters=[job_id], responses={
                    "202": {**_json("Job", "the new job; its rerun_of names this one",
                                    location=True), "links": _LINKS},
                }, problems=(404, 409, 422)),
            },
            f"{API}/jobs/{{id}}/result": {
                "get": _op("getResult", "Download a completed job's result",
                           parameters=[job_id], responses={"200": {
                               "description": "the result, in its own content type",
                               "content": {"application/json": {}, "*/*": {}}}},
                           problems=(404, 409)),
            },
            f"{API}/jobs/{{id}}/deliveries": {
                "get": _op("listDeliveries", "A job's webhook deliveries and their attempts",
                           parameters=[job_id], responses={
                               "200": _json("DeliveryList", "the deliveries")},
                           problems=(404,)),
            },
            f"{API}/jobs/{{id}}/deliveries/{{delivery}}/retry": {
                "post": _op("retryDelivery", "Send a dead-lettered delivery again", parameters=[
                    job_id, {"name": "delivery", "in": "path", "required": True,
                             "schema": {"type": "string"}}], responses={
                    "202": _json("DeliveryInfo", "scheduled")}, problems=(404, 409)),
            },
            f"{API}/jobs/{{id}}/events": {
                "get": _op("jobEvents", "A job's event stream", parameters=[job_id, *resume],
                           responses={"200": _events(), "204": {
                               "description": "the job is finished and nothing is left"}},
                           problems=(404,)),
            },
            f"{API}/jobs/{{id}}/ws": {
                "get": _op("jobWebSocket", "A job's event stream over a WebSocket",
                           parameters=[job_id, *resume], responses={"101": {
                               "description": _WS_DESCRIPTION}}, problems=(403, 404, 426)),
            },
            f"{API}/events": {
                "get": _op("allEvents", "Every job's events", parameters=resume,
                           responses={"200": _events()}),
            },
            f"{API}/job-types": {
                "get": _op("listJobTypes", "Registered job types",
                           responses={"200": _json("JobTypes", "the types")}),
            },
            f"{API}/job-counts": {
                "get": _op("countJobs", "The caller's jobs counted by type and state",
                           responses={"200": _json("JobCounts", "the counts")}),
            },
            f"{API}/whoami": {
                "get": _op("whoami", "The caller's principal",
                           responses={"200": _json("Whoami", "who is asking")}),
            },
            "/healthz": {
                "get": _op("health", "Health", responses={
                    "200": _json("Health", "healthy"), "503": _json("Health", "unhealthy")}),
            },
            "/metrics": {
                "get": _op("metrics", "Prometheus metrics", responses={"200": {
                    "description": "metrics in the Prometheus text format",
                    "content": {"text/plain": {"schema": {"type": "string"}}}}},
                    problems=(401,)),
            },
        },
        "components": {"schemas": definitions, "securitySchemes": _SECURITY_SCHEMES},
        # Either an API token, or (streams and results) the stream token in a job's links.
        "security": [{"apiToken": []}, {"streamToken": []}],
    }


def _submissions(registry: Registry, definitions: dict[str, Any],
                 refs: Mapping[tuple[Any, JsonSchemaMode], Any]) -> dict[str, Any]:
    """The body of POST /jobs: one variant per job type, told apart by ``type``; or an
    array of such variants, each with its own ``idempotency_key`` (a bulk submission).
    Both are named schemas, so that a reader (``/docs``) finds their fields by name."""
    one = _variants(registry, definitions, refs, "CreateJob", "Submit")
    many = _variants(registry, definitions, refs, "BulkSubmission", "BulkSubmit")
    definitions["JobSubmission"] = {"type": "object", "title": "A job", **one}
    definitions["BulkJobSubmission"] = {"type": "array", "minItems": 1, "maxItems": 1000,
                                        "items": {"type": "object", **many},
                                        "title": "A bulk submission"}
    return {"oneOf": [{"$ref": _REF.format(model="JobSubmission")},
                      {"$ref": _REF.format(model="BulkJobSubmission")}]}


def _variants(registry: Registry, definitions: dict[str, Any],
              refs: Mapping[tuple[Any, JsonSchemaMode], Any], model: str,
              prefix: str) -> dict[str, Any]:
    variants = []
    for job_type in registry:
        name = f"{prefix}_{job_type.name}"
        variant = copy.deepcopy(definitions[model])
        variant["title"] = f"Submit a {job_type.name} job"
        variant["properties"]["type"] = {"const": job_type.name}
        variant["properties"]["params"] = refs[(job_type.params, "validation")]
        definitions[name] = variant
        variants.append({"$ref": _REF.format(model=name)})
    return {"oneOf": variants, "discriminator": {"propertyName": "type", "mapping": {
        t.name: _REF.format(model=f"{prefix}_{t.name}") for t in registry}}}



def _op(operation_id: str, summary: str, *, responses: dict[str, Any],
        parameters: list[dict[str, Any]] | None = None, body: dict[str, Any] | None = None,
        problems: tuple[int, ...] = ()) -> dict[str, Any]:
    operation: dict[str, Any] = {"operationId": operation_id, "summary": summary,
                                 "responses": dict(responses)}
    if parameters:
        operation["parameters"] = parameters
    if body is not None:
        operation["requestBody"] = {"required": True,
                                    "content": {"application/json": {"schema": body}}}
    if operation_id == "health":
        operation["security"] = []  # open whatever the server's tokens
    elif operation_id == "metrics":
        # Open, the --metrics-token, or an API token: as the server is configured.
        operation["security"] = [{}, {"apiToken": []}]
    else:
        problems = (*problems, 401)
        if operation_id in {"createJob", "rerunJob", "jobEvents", "jobWebSocket", "allEvents"}:
            problems = (*problems, 429, 503)
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

"""Reading what a request sends: JSON bodies and query parameters, refused clearly."""

from __future__ import annotations

from typing import Any

import orjson
from aiohttp import web
from pydantic import ValidationError

from sse_jobs.engine.admission import Admission
from sse_jobs.errors import BadRequest, UnsupportedMediaType, ValidationFailed
from sse_jobs.models import CreateJob

MAX_JSON_DEPTH = 64


async def json_body(request: web.Request) -> Any:
    """The request's JSON body: 415 unless it is JSON, 400 unless it parses, 422 when it
    nests deeper than ``MAX_JSON_DEPTH``."""
    if request.content_type != "application/json" and not request.content_type.endswith("+json"):
        raise UnsupportedMediaType(
            f"send the body as application/json, not {request.content_type or 'nothing'}")
    raw = await request.read()
    too_deep = ValidationFailed(f"the body nests deeper than {MAX_JSON_DEPTH} levels",
                                [{"field": "body", "message": "nested too deeply"}])
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        # Newer orjson refuses very deep documents itself: still valid JSON, still a 422.
        if "depth" in str(exc) or "recursion" in str(exc):
            raise too_deep from None
        raise BadRequest(f"the body is not valid JSON: {exc}") from None
    if _depth(body) > MAX_JSON_DEPTH:
        raise too_deep
    return body


def _depth(value: Any) -> int:
    """How deeply ``value`` nests, counted without recursion (the body may be adversarial)."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, depth = stack.pop()
        children = item.values() if isinstance(item, dict) else item if isinstance(
            item, list) else ()
        if children:
            deepest = max(deepest, depth)
            if depth > MAX_JSON_DEPTH:
                break
            stack.extend((child, depth + 1) for child in children)
    return deepest


def csv_param(values: list[str], name: str) -> list[str]:
    """Repeated and comma separated values; an empty parameter means no filter."""
    parts = [part for value in values if value for part in value.split(",")]
    if "" in parts:
        raise BadRequest(f"{name} has an empty item; separate values with single commas")
    return parts


def int_param(raw: str | None, name: str, default: int, low: int, high: int) -> int:
    if raw is None or raw == "":
        return default
    if not raw.isascii() or not raw.isdigit() or not low <= int(raw) <= high:
        raise BadRequest(f"{name} must be a whole number from {low} to {high}")
    return int(raw)


def submission(body: Any, admission: Admission, model: type[CreateJob] = CreateJob,
               what: str = "the request body") -> CreateJob:
    """A job submission checked against ``model``; 422 with every field's error, those of
    the params for the type included, all in one answer."""
    try:
        return model.model_validate(body)
    except ValidationError as exc:
        errors = [{"field": ".".join(map(str, err["loc"])) or "body", "message": err["msg"]}
                  for err in exc.errors()]
        if isinstance(body, dict):
            errors += admission.params_errors(body.get("type"), body.get("params"))
        raise ValidationFailed(f"{what} is not a valid job submission", errors) from None

"""Cross-cutting request handling: request ids and metrics, problem+json errors,
authentication, CORS, and the headers every response carries."""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from aiohttp import web

from sse_jobs import logs
from sse_jobs.errors import BadRequest, SseJobsError, Unauthorized, ValidationFailed
from sse_jobs.web.keys import (
    ACCESS,
    CORS_ORIGIN,
    METRICS,
    PRINCIPAL,
    REQUEST_ID,
    SENT_STATUS,
    SETTINGS,
)

log = logging.getLogger("sse_jobs.web")
access_log = logging.getLogger("sse_jobs.access")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
PROBLEM_TYPE = "application/problem+json"
CORS_METHODS = "GET, POST, DELETE"
CORS_REQUEST_HEADERS = ("Authorization, Content-Type, Idempotency-Key, Last-Event-ID, "
                        "X-Request-ID")
CORS_EXPOSED_HEADERS = "Location, Retry-After, X-Request-ID"
CORS_MAX_AGE = "600"
# Logged and counted for a request whose client left before any response went out
# (nginx's convention); one that left later got, and is logged with, the status sent.
CLIENT_CLOSED = 499


@web.middleware
async def handle_request(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every request, in this order: an id (the client's ``X-Request-ID`` when sane) that
    every log line and the response carry, timing by route for /metrics and the access
    log; CORS; authentication; and every error as ``application/problem+json``.

    One middleware rather than one per concern: each middleware keeps a coroutine frame
    (and aiohttp a handler wrapper) alive for as long as its request runs, which for an
    event stream is its whole life, and ten thousand idle streams are what a server holds.
    """
    given = request.headers.get("X-Request-ID", "")
    rid = given if _sane_request_id(given) else uuid.uuid4().hex
    request[REQUEST_ID] = rid
    token = logs.request_id.set(rid)
    started = time.perf_counter()
    status = 500
    try:
        response: web.StreamResponse | None = _cors_preflight(request)
        if response is None:
            try:
                _authenticate(request)
                response = await handler(request)
            except SseJobsError as exc:
                response = problem_response(exc)
            except web.RequestPayloadError as exc:
                response = _unreadable_body(request, exc)
            except web.HTTPException as exc:
                if exc.status < 400:
                    raise
                response = _http_problem(exc, request)
            except Exception:
                log.exception("unhandled error in %s %s", request.method, request.path)
                response = problem(500, "Internal Server Error", "an unexpected error "
                                   "occurred; it has been logged", "about:blank")
        status = response.status
        return response
    except (asyncio.CancelledError, ConnectionResetError):  # the client went away
        status = request.get(SENT_STATUS, CLIENT_CLOSED)
        raise
    except BaseException:
        status = request.get(SENT_STATUS, 500)
        raise
    finally:
        elapsed = time.perf_counter() - started
        resource = request.match_info.route.resource
        route = resource.canonical if resource is not None else "unmatched"
        request.app[METRICS].requests.labels(route, request.method, str(status)).observe(elapsed)
        # The path only: query strings may carry stream tokens. The principal is the
        # token's name, never the token; open mode has none to name.
        access_log.info("%s %s %d %.1fms", request.method, request.path, status,
                        elapsed * 1000, extra=logs.principal_extra(request.get(PRINCIPAL)))
        logs.request_id.reset(token)


def _sane_request_id(value: str) -> bool:
    return 0 < len(value) <= 128 and value.isascii() and value.isprintable() and " " not in value


def _cors_preflight(request: web.Request) -> web.Response | None:
    """CORS for the origins named with ``--cors-origin`` (off by default): the answer to
    a preflight request, else None with an allowed origin noted for the response."""
    origin = request.headers.get("Origin")
    allowed = origin is not None and origin in request.app[SETTINGS].cors_origin
    if request.method == "OPTIONS" and "Access-Control-Request-Method" in request.headers:
        if not allowed:
            return problem(403, "Forbidden", f"origin {origin!r} is not allowed", "cors")
        return web.Response(status=204, headers={
            "Access-Control-Allow-Origin": origin or "", "Vary": "Origin",
            "Access-Control-Allow-Methods": CORS_METHODS,
            "Access-Control-Allow-Headers": CORS_REQUEST_HEADERS,
            "Access-Control-Max-Age": CORS_MAX_AGE})
    if allowed and origin is not None:
        request[CORS_ORIGIN] = origin
    return None


def _authenticate(request: web.Request) -> None:
    """Decide whose jobs an /api request may see (see ``Access.principal``)."""
    if request.path.startswith("/api/"):
        route = request.match_info.route.name
        request[PRINCIPAL] = request.app[ACCESS].principal(
            request.headers.get("Authorization"), request.query.get("token"), route,
            request.match_info.get("id"))


def _unreadable_body(request: web.Request, exc: web.RequestPayloadError) -> web.Response:
    """The body failed while being read: a Content-Encoding it does not match, or a
    connection that ended inside it. The client's fault, and nothing was stored."""
    reason = " ".join(str(getattr(exc.__cause__, "message", exc)).split())
    response = problem_response(BadRequest(f"the body could not be read: {reason}"))
    # The rest of this body cannot be decoded: end it here, so that aiohttp does not
    # read on after the response (and log the same error again as unhandled), and
    # close the connection rather than parse what follows as a next request.
    request.content.feed_eof()
    response.force_close()
    return response


def _http_problem(exc: web.HTTPException, request: web.Request) -> web.Response:
    response = problem(exc.status, exc.reason, _http_detail(exc, request), "about:blank")
    if "Allow" in exc.headers:
        response.headers["Allow"] = exc.headers["Allow"]
    return response


def problem_response(exc: SseJobsError) -> web.Response:
    response = web.Response(status=exc.status, body=orjson.dumps(problem_of(exc)),
                            content_type=PROBLEM_TYPE)
    if exc.retry_after is not None:
        response.headers["Retry-After"] = str(exc.retry_after)
    if isinstance(exc, Unauthorized):
        response.headers["WWW-Authenticate"] = 'Bearer realm="sse-jobs"'
    return response


def problem_of(exc: SseJobsError) -> dict[str, Any]:
    """The problem document of an error (RFC 9457), as a response body or one item of a
    bulk answer."""
    body: dict[str, Any] = {"type": f"urn:sse-jobs:problem:{_slug(type(exc).__name__)}",
                            "title": exc.title, "status": exc.status, "detail": exc.detail}
    if isinstance(exc, ValidationFailed):
        body["errors"] = exc.errors
    return body


def problem(status: int, title: str, detail: str, kind: str, *,
            retry_after: int | None = None, **extra: Any) -> web.Response:
    """An RFC 9457 problem response."""
    body = {"type": kind if ":" in kind else f"urn:sse-jobs:problem:{kind}", "title": title,
            "status": status, "detail": detail, **extra}
    response = web.Response(status=status, body=orjson.dumps(body), content_type=PROBLEM_TYPE)
    if retry_after is not None:
        response.headers["Retry-After"] = str(retry_after)
    return response


def _http_detail(exc: web.HTTPException, request: web.Request) -> str:
    if exc.status == 404:
        return f"no such resource: {request.path}"
    if exc.status == 405:
        return f"{request.method} is not allowed on {request.path}"
    if exc.status == 413:
        return f"the request body is larger than {request.app[SETTINGS].max_body} bytes"
    return exc.text or exc.reason


def _slug(name: str) -> str:
    return "".join(f"-{c.lower()}" if c.isupper() else c for c in name).lstrip("-")


async def common_headers(request: web.Request, response: web.StreamResponse) -> None:
    """Headers every response carries, streams and files included (set before sending)."""
    request[SENT_STATUS] = response.status
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    if request.path.startswith("/static/"):
        response.headers["Cache-Control"] = "no-cache"  # revalidate: pages and scripts match
    if REQUEST_ID in request:
        response.headers["X-Request-ID"] = request[REQUEST_ID]
    if CORS_ORIGIN in request:
        response.headers["Access-Control-Allow-Origin"] = request[CORS_ORIGIN]
        response.headers["Access-Control-Expose-Headers"] = CORS_EXPOSED_HEADERS
        response.headers.add("Vary", "Origin")


MIDDLEWARES = [handle_request]

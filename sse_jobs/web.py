"""The HTTP API: thin handlers over the engine, errors as problem+json (RFC 9457)."""

from __future__ import annotations

import logging
import mimetypes
import secrets
import time
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import quote

import orjson
from aiohttp import web
from pydantic import ValidationError

from sse_jobs import logs, openapi, streams, webhooks
from sse_jobs.access import Access
from sse_jobs.appkeys import (
    ACCESS,
    BROKER,
    ENGINE,
    METRICS,
    PRINCIPAL,
    SETTINGS,
    STORE,
    WEBHOOKS,
)
from sse_jobs.auth import ANONYMOUS, ApiTokens, StreamTokens, TokenFileError, load_tokens
from sse_jobs.broker import Broker
from sse_jobs.config import Settings
from sse_jobs.engine import Engine
from sse_jobs.errors import (
    BadRequest,
    Conflict,
    NotFound,
    SseJobsError,
    TooManyRequests,
    Unavailable,
    UnsupportedMediaType,
    ValidationFailed,
)
from sse_jobs.ids import is_job_id
from sse_jobs.metrics import CONTENT_TYPE as METRICS_TYPE
from sse_jobs.metrics import LiveState, Metrics
from sse_jobs.middleware import MIDDLEWARES, Handler, common_headers
from sse_jobs.models import API, CreateJob, job_resource
from sse_jobs.pool import WorkerPool
from sse_jobs.records import Event, JobRecord
from sse_jobs.registry import REGISTRY, Registry
from sse_jobs.states import JobState
from sse_jobs.store import Store, store_for
from sse_jobs.webhooks import WebhookSender

log = logging.getLogger(__name__)

DEFAULT_PAGE, MAX_PAGE = 50, 500
MAX_JSON_DEPTH = 64
RETRY_AFTER_QUEUED, RETRY_AFTER_PROCESSING = 2, 1
STREAM_LIMIT_RETRY_AFTER = 5


def create_app(settings: Settings, registry: Registry = REGISTRY) -> web.Application:
    """The aiohttp application; storage, pool and engine live in its cleanup context."""
    app = web.Application(client_max_size=settings.max_body, middlewares=MIDDLEWARES)
    app[SETTINGS] = settings
    app[METRICS] = Metrics()
    app.on_response_prepare.append(common_headers)
    app.cleanup_ctx.append(_lifecycle(settings, registry))
    api = [
        web.post(f"{API}/jobs", create_job),
        web.get(f"{API}/jobs", list_jobs, allow_head=False),
        web.get(f"{API}/jobs/{{id}}", get_job, allow_head=False),
        web.delete(f"{API}/jobs/{{id}}", delete_job),
        web.post(f"{API}/jobs/{{id}}/cancel", cancel_job),
        web.get(f"{API}/jobs/{{id}}/result", get_result, allow_head=False, name="job_result"),
        web.get(f"{API}/jobs/{{id}}/events", job_events, allow_head=False, name="job_events"),
        web.get(f"{API}/events", all_events, allow_head=False, name="all_events"),
        web.get(f"{API}/job-types", job_types, allow_head=False),
        web.get(f"{API}/jobs/{{id}}/deliveries", list_deliveries, allow_head=False),
        web.post(f"{API}/jobs/{{id}}/deliveries/{{delivery}}/retry", retry_delivery),
        web.get("/healthz", healthz, allow_head=False),
        web.get("/metrics", metrics, allow_head=False),
        web.get("/openapi.json", openapi_document, allow_head=False),
        web.get("/docs", static_page("docs.html"), allow_head=False),
        web.get("/", static_page("index.html"), allow_head=False),
    ]
    app.add_routes(api)
    app.router.add_static("/static/", static_dir())
    return app


def static_dir() -> Path:
    """``static/``: installed inside the package, or beside it in a source checkout."""
    installed = Path(__file__).parent / "static"
    return installed if installed.is_dir() else Path(__file__).parent.parent / "static"


# Pages may run only their own scripts and talk only to this server.
PAGE_CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
            "connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'; "
            "form-action 'self'")


def static_page(name: str) -> Handler:
    async def page(request: web.Request) -> web.StreamResponse:
        return web.FileResponse(static_dir() / name, headers={
            "Content-Security-Policy": PAGE_CSP, "Cache-Control": "no-cache"})

    return page


def _lifecycle(
    settings: Settings, registry: Registry
) -> Callable[[web.Application], AsyncIterator[None]]:
    async def lifecycle(app: web.Application) -> AsyncIterator[None]:
        broker, metrics = Broker(settings.subscriber_queue, settings.fan_out_rate), app[METRICS]
        senders: list[WebhookSender] = []

        def committed(events: Sequence[Event]) -> None:
            broker.publish(events)
            metrics.count_events(events)
            for sender in senders:
                sender.wake()  # the commit may have stored deliveries

        store = store_for(settings)
        await store.open(committed)
        try:
            tokens = load_tokens(settings.api_tokens_file, settings.api_tokens)
            stream_key = await store.secret("stream-token-key", lambda: secrets.token_bytes(32))
            webhook_secret = settings.webhook_secret or await _stored_webhook_secret(store)
        except (TokenFileError, SseJobsError):
            await store.close()
            raise
        senders.append(WebhookSender(settings, store, metrics, webhook_secret))
        app[ACCESS] = Access(ApiTokens(tokens), StreamTokens(stream_key,
                                                             settings.stream_token_ttl))
        pool = WorkerPool(settings.workers, debug=settings.debug)
        engine = Engine(settings, store, pool, registry, metrics)
        metrics.watch(lambda: LiveState(
            running=engine.running, workers_alive=pool.workers_alive(),
            job_streams=broker.counts()[0], global_streams=broker.counts()[1],
            dropped=broker.dropped))
        try:
            await engine.start()
        except BaseException:
            await store.close()
            raise
        app[BROKER], app[STORE], app[ENGINE], app[WEBHOOKS] = broker, store, engine, senders[0]
        senders[0].start()
        yield
        broker.close_all()
        await engine.stop()
        await senders[0].close()
        await store.close()

    return lifecycle


async def _stored_webhook_secret(store: Store) -> str:
    """The secret made and kept on first start; shown once so receivers can be set up."""
    made = webhooks.new_secret()
    secret = (await store.secret("webhook-secret", made.encode)).decode()
    if secret == made:
        logs.show_once("generated the webhook signing secret; it is shown this once (or set "
                       "--webhook-secret)", "webhook_secret", secret)
    return secret


def json_response(
    body: Any, status: int = 200, headers: dict[str, str] | None = None
) -> web.Response:
    return web.Response(status=status, body=orjson.dumps(body),
                        content_type="application/json", headers=headers)


# -- jobs -------------------------------------------------------------------------------


async def create_job(request: web.Request) -> web.Response:
    body = await _json_body(request)
    engine = request.app[ENGINE]
    try:
        payload = CreateJob.model_validate(body)
    except ValidationError as exc:
        errors = [{"field": ".".join(map(str, err["loc"])) or "body", "message": err["msg"]}
                  for err in exc.errors()]
        if isinstance(body, dict):  # report the params' errors too, all in one answer
            errors += engine.params_errors(body.get("type"), body.get("params"))
        raise ValidationFailed("the request body is not a valid job submission",
                               errors) from None
    record, created = await engine.submit(payload, request.headers.get("Idempotency-Key"),
                                          _named(request))
    resource = _resource(request, record)
    return json_response(resource, 202 if created else 200,
                         {"Location": resource["links"]["self"]})


async def _json_body(request: web.Request) -> Any:
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


async def get_job(request: web.Request) -> web.Response:
    record = await request.app[ENGINE].get(request.match_info["id"], _named(request))
    headers = {}
    if not record.state.terminal:
        wait = RETRY_AFTER_QUEUED if record.state is JobState.QUEUED else RETRY_AFTER_PROCESSING
        headers["Retry-After"] = str(wait)
    return json_response(_resource(request, record), headers=headers)


async def list_jobs(request: web.Request) -> web.Response:
    query = request.query
    states = _csv(query.getall("state", []), "state")
    unknown = [s for s in states if s not in JobState.__members__.values()]
    if unknown:
        raise BadRequest(f"unknown state {unknown[0]!r}; use one of "
                         + ", ".join(s.value for s in JobState))
    limit = _int_param(query.get("limit"), "limit", DEFAULT_PAGE, 1, MAX_PAGE)
    cursor = query.get("cursor")
    if cursor is not None and not is_job_id(cursor):
        raise BadRequest("cursor is not one this server handed out")
    # The global stream from this point on: a page listing the jobs then follows it
    # without missing what changes in between.
    newest = await request.app[STORE].last_event_id()
    principal = _named(request)
    records = await request.app[STORE].list_jobs(principal=principal,
        states=[JobState(s) for s in states], types=_csv(query.getall("type", []), "type"),
        before=cursor, limit=limit + 1)
    page = records[:limit]
    next_cursor = page[-1].id if len(records) > limit else None
    links = {"events": request.app[ACCESS].events_link(principal, newest)}
    return json_response({"jobs": [_resource(request, r) for r in page], "next": next_cursor,
                          "links": links})


def _csv(values: list[str], name: str) -> list[str]:
    """Repeated and comma separated values; an empty parameter means no filter."""
    parts = [part for value in values if value for part in value.split(",")]
    if "" in parts:
        raise BadRequest(f"{name} has an empty item; separate values with single commas")
    return parts


def _int_param(raw: str | None, name: str, default: int, low: int, high: int) -> int:
    if raw is None or raw == "":
        return default
    if not raw.isascii() or not raw.isdigit() or not low <= int(raw) <= high:
        raise BadRequest(f"{name} must be a whole number from {low} to {high}")
    return int(raw)


async def cancel_job(request: web.Request) -> web.Response:
    record, done = await request.app[ENGINE].cancel(request.match_info["id"], _named(request))
    return json_response(_resource(request, record), 200 if done else 202)


async def delete_job(request: web.Request) -> web.Response:
    await request.app[ENGINE].delete(request.match_info["id"], _named(request))
    return web.Response(status=204)


async def get_result(request: web.Request) -> web.StreamResponse:
    engine = request.app[ENGINE]
    record = await engine.get(request.match_info["id"], request[PRINCIPAL])
    if record.state is not JobState.COMPLETED:
        raise Conflict(f"job {record.id} is {record.state.value}; "
                       "its result exists once it is completed")
    if record.result_file is not None:
        path = engine.result_path(record)
        if path is None:
            raise Conflict(f"the result file of job {record.id} is no longer there")
        content_type = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
        return web.FileResponse(path, headers={
            "Content-Type": content_type,
            "Content-Disposition": _attachment(path.name)})
    return web.Response(body=record.result or b"null", content_type="application/json")


def _attachment(name: str) -> str:
    """Content-Disposition for a download (RFC 6266): a quoted ASCII fallback for old
    clients, and the exact UTF-8 name in ``filename*``."""
    fallback = name.encode("ascii", "replace").decode().replace("\\", "\\\\")
    fallback = fallback.replace('"', '\\"')
    return f"attachment; filename=\"{fallback}\"; filename*=UTF-8''{quote(name, safe='')}"


async def job_types(request: web.Request) -> web.Response:
    return json_response({"job_types": [
        {"name": t.name, "description": t.description, "params_schema": t.params_schema(),
         "defaults": {"timeout": t.timeout, "max_attempts": t.max_attempts}}
        for t in request.app[ENGINE].registry]})


def _named(request: web.Request) -> str:
    """The principal of a request that needs an API token (stream tokens never get here)."""
    principal: str | None = request[PRINCIPAL]
    assert principal is not None, "the authenticate middleware admits stream tokens only to streams"
    return principal


def _resource(request: web.Request, record: JobRecord) -> dict[str, Any]:
    return job_resource(record, request.app[ACCESS].job_links(record.id))


async def list_deliveries(request: web.Request) -> web.Response:
    record = await request.app[ENGINE].get(request.match_info["id"], _named(request))
    deliveries, attempts = await request.app[STORE].job_deliveries(record.id)
    return json_response({"deliveries": [
        webhooks.delivery_resource(d, [a for a in attempts if a.delivery_id == d.id])
        for d in deliveries]})


async def retry_delivery(request: web.Request) -> web.Response:
    record = await request.app[ENGINE].get(request.match_info["id"], _named(request))
    raw = request.match_info["delivery"]
    delivery = await request.app[STORE].retry_delivery(
        record.id, int(raw) if raw.isdigit() and len(raw) < 18 else -1, time.time())
    if delivery is None:
        deliveries, _ = await request.app[STORE].job_deliveries(record.id)
        if not any(str(d.id) == raw for d in deliveries):
            raise NotFound(f"job {record.id} has no delivery {raw!r}")
        raise Conflict("only a dead-lettered delivery can be retried")
    request.app[WEBHOOKS].wake()
    return json_response(webhooks.delivery_resource(delivery, []), 202)


# -- streams ----------------------------------------------------------------------------


def _check_stream_limits(request: web.Request, principal: str) -> None:
    settings, broker = request.app[SETTINGS], request.app[BROKER]
    if broker.total() >= settings.max_streams:
        raise Unavailable(f"the server has {settings.max_streams} streams open",
                          retry_after=STREAM_LIMIT_RETRY_AFTER)
    if principal != ANONYMOUS and broker.count(principal) >= settings.max_streams_per_principal:
        raise TooManyRequests(f"{principal} has {settings.max_streams_per_principal} streams "
                              "open", retry_after=STREAM_LIMIT_RETRY_AFTER)


async def job_events(request: web.Request) -> web.StreamResponse:
    engine, store = request.app[ENGINE], request.app[STORE]
    if not engine.accepting:
        return streams.come_back_later(request.app[SETTINGS])
    record = await engine.get(request.match_info["id"], request[PRINCIPAL])
    resume = streams.requested_resume(request)
    after = resume if resume is not None and resume <= record.last_event_id else 0
    if record.state.terminal and resume is not None and after >= record.last_event_id:
        return web.Response(status=204)  # EventSource stops reconnecting on 204
    _check_stream_limits(request, record.principal)
    return await streams.stream(
        request, request.app[SETTINGS], request.app[BROKER], job_id=record.id,
        principal=record.principal, after=after,
        read_after=lambda seq: store.job_events(record.id, seq, streams.REPLAY_PAGE),
        key=lambda event: event.seq)


async def all_events(request: web.Request) -> web.StreamResponse:
    engine, store = request.app[ENGINE], request.app[STORE]
    if not engine.accepting:
        return streams.come_back_later(request.app[SETTINGS])
    principal = _named(request)
    newest = await store.last_event_id()
    resume = streams.requested_resume(request)
    after = newest if resume is None else (resume if resume <= newest else 0)
    _check_stream_limits(request, principal)
    return await streams.stream(
        request, request.app[SETTINGS], request.app[BROKER], job_id=None, principal=principal,
        after=after,
        read_after=lambda event_id: store.all_events(event_id, streams.REPLAY_PAGE, principal),
        key=lambda event: event.id)


# -- health -----------------------------------------------------------------------------


async def healthz(request: web.Request) -> web.Response:
    engine = request.app[ENGINE]
    checks = {"database": "ok", "pool": "ok" if engine.pool.alive else "down",
              "dispatcher": "ok" if engine.dispatcher_running else "down"}
    try:
        await request.app[STORE].ping()
    except SseJobsError as exc:
        checks["database"] = exc.detail
    healthy = all(value == "ok" for value in checks.values())
    return json_response({"status": "ok" if healthy else "unavailable", **checks},
                         200 if healthy else 503)


async def metrics(request: web.Request) -> web.Response:
    registry = request.app[METRICS]
    registry.set_job_counts(await request.app[STORE].job_counts())
    return web.Response(body=registry.render(), headers={"Content-Type": METRICS_TYPE})


async def openapi_document(request: web.Request) -> web.Response:
    return web.Response(body=orjson.dumps(openapi.build(request.app[ENGINE].registry)),
                        content_type="application/json")

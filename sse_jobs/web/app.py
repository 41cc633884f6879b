"""The composition root: builds every component, wires them together, and ties each one's
life to the application's with a ``cleanup_ctx`` of its own.

Startup runs the contexts in order and cleanup in reverse, so a component is always
started after, and stopped before, what it uses::

    storage   the store, opened with the listener that hands each commit to the broker
    access    API tokens and the stream-token key (kept in the store)
    webhooks  the delivery loop (the store wakes it after commits that stored deliveries)
    engine    the pool, the engine, admission and the stream sources
    retention the sweep of finished jobs
"""

from __future__ import annotations

import importlib
import logging
import secrets
from collections.abc import AsyncIterator, Sequence

from aiohttp import web

from sse_jobs import logs
from sse_jobs.auth import ApiTokens, StreamTokens, load_tokens
from sse_jobs.config import Settings
from sse_jobs.engine.admission import Admission
from sse_jobs.engine.engine import Engine
from sse_jobs.engine.results import ResultFiles
from sse_jobs.engine.retention import Retention
from sse_jobs.ids import node_name
from sse_jobs.jobs.registry import REGISTRY, Registry
from sse_jobs.metrics import LiveState, Metrics
from sse_jobs.records import Event
from sse_jobs.store import Store, store_for
from sse_jobs.store.base import EventListener
from sse_jobs.streams.broker import Broker
from sse_jobs.streams.source import Streams
from sse_jobs.web import graphql, jobs, ops, sockets, sse, ws
from sse_jobs.web.access import Access
from sse_jobs.web.keys import (
    ACCESS,
    ADMISSION,
    BROKER,
    COMMITTED,
    DELIVERIES,
    ENGINE,
    JOB_TYPES,
    JOBS,
    METRICS,
    NODE,
    RESULTS,
    RETENTION,
    SETTINGS,
    SOCKETS,
    STORE,
    STREAMS,
    WEBHOOKS,
)
from sse_jobs.web.middleware import MIDDLEWARES, common_headers
from sse_jobs.webhooks.deliveries import Deliveries
from sse_jobs.webhooks.sender import WebhookSender, new_secret

log = logging.getLogger(__name__)

DEMO_JOBS = "sse_jobs.jobs.demo"


def load_job_modules(modules: Sequence[str]) -> None:
    """Import the built-in demo jobs and every ``--jobs`` module, so that their types
    register (contract section 1: the demo types are always there)."""
    for module in (DEMO_JOBS, *modules):
        importlib.import_module(module)


def create_app(settings: Settings, registry: Registry | None = None) -> web.Application:
    """The aiohttp application. Without ``registry``: the shared one, with the demo types
    and the ``--jobs`` modules of ``settings`` loaded."""
    if registry is None:
        load_job_modules(settings.jobs)
        registry = REGISTRY
    app = web.Application(client_max_size=settings.max_body, middlewares=MIDDLEWARES)
    app[SETTINGS] = settings
    app[NODE] = node_name()
    app[METRICS] = Metrics()
    app[JOB_TYPES] = registry
    app[BROKER] = Broker(settings.subscriber_queue, settings.fan_out_rate)
    app[RESULTS] = ResultFiles(settings.results_path)
    committed: list[EventListener] = [app[BROKER].publish, app[METRICS].count_events]
    app[COMMITTED] = committed
    app[SOCKETS] = sockets.Sockets()
    app.on_response_prepare.append(common_headers)
    app.on_shutdown.append(_close_sockets)
    app.cleanup_ctx.extend([_storage, _access, _webhooks, _engine, _retention])
    jobs.add_routes(app)
    sse.add_routes(app)
    ws.add_routes(app)
    graphql.add_routes(app)
    ops.add_routes(app)
    return app


async def _close_sockets(app: web.Application) -> None:
    """Shutdown: close the WebSockets still open (streams ended already when the broker
    closed), so that their clients reconnect later instead of waiting for a timeout."""
    app[SOCKETS].close_all(sockets.SERVICE_RESTART)


def _committed(listeners: list[EventListener]) -> EventListener:
    def committed(events: Sequence[Event]) -> None:
        for listener in listeners:
            listener(events)

    return committed


async def _storage(app: web.Application) -> AsyncIterator[None]:
    store = store_for(app[SETTINGS], app[NODE])
    await store.open(_committed(app[COMMITTED]))
    app[STORE] = store
    try:
        yield
    finally:
        await store.close()


async def _access(app: web.Application) -> AsyncIterator[None]:
    settings, store = app[SETTINGS], app[STORE]
    tokens = load_tokens(settings.api_tokens_file, settings.api_tokens)
    key = await store.secret("stream-token-key", lambda: secrets.token_bytes(32))
    metrics = {settings.metrics_token: "metrics"} if settings.metrics_token else {}
    app[ACCESS] = Access(ApiTokens(tokens), StreamTokens(key, settings.stream_token_ttl),
                         ApiTokens(metrics))
    yield


async def _webhooks(app: web.Application) -> AsyncIterator[None]:
    settings, store = app[SETTINGS], app[STORE]
    secret = settings.webhook_secret or await _stored_webhook_secret(store)
    sender = WebhookSender(settings, store, app[METRICS], secret)
    app[COMMITTED].append(lambda _events: sender.wake())  # the commit may have stored some
    app[WEBHOOKS], app[DELIVERIES] = sender, Deliveries(store, sender)
    sender.start()
    try:
        yield
    finally:
        await sender.close()


async def _engine(app: web.Application) -> AsyncIterator[None]:
    settings, store, broker, registry = app[SETTINGS], app[STORE], app[BROKER], app[JOB_TYPES]
    engine = Engine.create(settings, store, registry, app[METRICS], app[RESULTS])
    app[ENGINE], app[JOBS] = engine, engine.jobs
    app[ADMISSION] = Admission(settings, store, registry, app[METRICS], engine)
    app[STREAMS] = Streams(settings, store, broker, engine.jobs, lambda: engine.accepting)
    app[METRICS].watch(lambda: LiveState(
        running=engine.running, workers_alive=engine.workers_alive(),
        job_streams=broker.counts()[0], global_streams=broker.counts()[1],
        dropped=broker.dropped))
    await engine.start()
    try:
        yield
    finally:
        broker.close_all()
        await engine.stop()


async def _retention(app: web.Application) -> AsyncIterator[None]:
    retention = Retention(app[SETTINGS], app[STORE], app[RESULTS])
    app[RETENTION] = retention
    retention.start()
    try:
        yield
    finally:
        await retention.stop()


async def _stored_webhook_secret(store: Store) -> str:
    """The secret made and kept on first start; shown once so receivers can be set up."""
    made = new_secret()
    secret = (await store.secret("webhook-secret", made.encode)).decode()
    if secret == made:
        logs.show_once("generated the webhook signing secret; it is shown this once (or set "
                       "--webhook-secret)", "webhook_secret", secret)
    return secret

"""Typed keys of the application's components and of per-request state (no globals)."""

from __future__ import annotations

from aiohttp import web

from sse_jobs.config import Settings
from sse_jobs.engine.admission import Admission
from sse_jobs.engine.engine import Engine
from sse_jobs.engine.jobs import Jobs
from sse_jobs.engine.results import ResultFiles
from sse_jobs.engine.retention import Retention
from sse_jobs.jobs.registry import Registry
from sse_jobs.metrics import Metrics
from sse_jobs.store.base import EventListener, Store
from sse_jobs.streams.broker import Broker
from sse_jobs.streams.source import Streams
from sse_jobs.web.access import Access
from sse_jobs.web.sockets import Sockets
from sse_jobs.webhooks.deliveries import Deliveries
from sse_jobs.webhooks.sender import WebhookSender

SETTINGS = web.AppKey("settings", Settings)
NODE = web.AppKey("node", str)  # this process's name among the nodes sharing a database
METRICS = web.AppKey("metrics", Metrics)
JOB_TYPES = web.AppKey("job_types", Registry)
RESULTS = web.AppKey("results", ResultFiles)
# The store's listeners: each is called with the events of every commit, in commit order.
COMMITTED = web.AppKey("committed", list[EventListener])
STORE = web.AppKey("store", Store)
BROKER = web.AppKey("broker", Broker)
ACCESS = web.AppKey("access", Access)
JOBS = web.AppKey("jobs", Jobs)
ENGINE = web.AppKey("engine", Engine)
ADMISSION = web.AppKey("admission", Admission)
STREAMS = web.AppKey("streams", Streams)
RETENTION = web.AppKey("retention", Retention)
WEBHOOKS = web.AppKey("webhooks", WebhookSender)
DELIVERIES = web.AppKey("deliveries", Deliveries)
# The open WebSocket connections of every channel (closed with 1012 at shutdown).
SOCKETS = web.AppKey("sockets", Sockets)

REQUEST_ID = web.RequestKey("request_id", str)
# Whose jobs this request may see; None: any job its stream token names.
PRINCIPAL: web.RequestKey[str | None] = web.RequestKey("principal")
# The allowed origin of a cross-origin request (--cors-origin), echoed in the response.
CORS_ORIGIN = web.RequestKey("cors_origin", str)
# The status of the response whose headers went out (a stream's, before its body).
SENT_STATUS = web.RequestKey("sent_status", int)

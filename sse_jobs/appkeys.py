"""Typed keys of the aiohttp application and request state (no globals)."""

from __future__ import annotations

from aiohttp import web

from sse_jobs.access import Access
from sse_jobs.broker import Broker
from sse_jobs.config import Settings
from sse_jobs.engine import Engine
from sse_jobs.metrics import Metrics
from sse_jobs.store import Store
from sse_jobs.webhooks import WebhookSender

SETTINGS = web.AppKey("settings", Settings)
ENGINE = web.AppKey("engine", Engine)
BROKER = web.AppKey("broker", Broker)
STORE = web.AppKey("store", Store)
METRICS = web.AppKey("metrics", Metrics)
ACCESS = web.AppKey("access", Access)
WEBHOOKS = web.AppKey("webhooks", WebhookSender)

# Request state (aiohttp requests take string keys).
REQUEST_ID = "sse_jobs.request_id"
# Whose jobs this request may see; None: any job its stream token names.
PRINCIPAL = "sse_jobs.principal"

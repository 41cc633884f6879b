"""Operating endpoints and pages: health, metrics, the OpenAPI document, the dashboard."""

from __future__ import annotations

from pathlib import Path

import orjson
from aiohttp import web

from sse_jobs.metrics import CONTENT_TYPE as METRICS_TYPE
from sse_jobs.web import openapi
from sse_jobs.web.keys import ACCESS, ENGINE, JOB_TYPES, JOBS, METRICS, NODE, SETTINGS
from sse_jobs.web.middleware import Handler
from sse_jobs.web.resources import json_response

# Pages may run only their own scripts and talk only to this server.
PAGE_CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
            "connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'; "
            "form-action 'self'")


def add_routes(app: web.Application) -> None:
    app.add_routes([
        web.get("/healthz", healthz, allow_head=False),
        web.get("/metrics", metrics, allow_head=False),
        web.get("/openapi.json", openapi_document, allow_head=False),
        web.get("/docs", static_page("docs.html"), allow_head=False),
        web.get("/", static_page("index.html"), allow_head=False),
    ])
    app.router.add_static("/static/", static_dir())


def static_dir() -> Path:
    """``static/``: installed inside the package, or beside it in a source checkout."""
    package = Path(__file__).parent.parent
    installed = package / "static"
    return installed if installed.is_dir() else package.parent / "static"


def static_page(name: str) -> Handler:
    async def page(request: web.Request) -> web.StreamResponse:
        return web.FileResponse(static_dir() / name, headers={
            "Content-Security-Policy": PAGE_CSP, "Cache-Control": "no-cache"})

    return page


async def healthz(request: web.Request) -> web.Response:
    """Whether this node can do its work, and what it is: for load balancers (the status)
    and operators (which node, which database, how many workers)."""
    checks = await request.app[ENGINE].health()
    healthy = all(value in {"ok", "none"} for value in checks.values())
    settings = request.app[SETTINGS]
    node = {"role": "api+worker" if settings.workers else "api", "workers": settings.workers,
            "backend": "postgresql" if settings.postgres_url else "sqlite",
            "node": request.app[NODE]}
    return json_response({"status": "ok" if healthy else "unavailable", **checks, **node},
                         200 if healthy else 503)


async def metrics(request: web.Request) -> web.Response:
    request.app[ACCESS].metrics(request.headers.get("Authorization"))
    registry = request.app[METRICS]
    registry.set_job_counts(await request.app[JOBS].counts())
    return web.Response(body=registry.render(), headers={"Content-Type": METRICS_TYPE})


async def openapi_document(request: web.Request) -> web.Response:
    return web.Response(body=orjson.dumps(openapi.build(request.app[JOB_TYPES])),
                        content_type="application/json")

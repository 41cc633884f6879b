"""Running the server: bind, announce, and shut down gracefully on SIGTERM/SIGINT."""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import signal
import sys
from collections.abc import Callable

from aiohttp import web

from sse_jobs import logs
from sse_jobs.auth import TokenFileError, load_tokens
from sse_jobs.config import Settings
from sse_jobs.errors import SseJobsError
from sse_jobs.web import create_app, load_job_modules
from sse_jobs.web.keys import BROKER, ENGINE

log = logging.getLogger(__name__)

# Time the HTTP server gives open requests once the engine has stopped.
HTTP_SHUTDOWN_TIMEOUT = 5.0


AppFactory = Callable[[Settings], web.Application]


def run(settings: Settings, app_factory: AppFactory = create_app) -> int:
    """``sse-jobs serve``: run until SIGTERM or SIGINT, then exit 0. ``app_factory``
    builds the application (an embedding may add routes to it)."""
    logs.configure(settings.log_level, settings.log_format)
    try:
        tokens = load_tokens(settings.api_tokens_file, settings.api_tokens)
    except TokenFileError as exc:
        print(f"sse-jobs: API tokens: {exc}", file=sys.stderr)
        return 2
    if not tokens and not settings.loopback_only and not settings.insecure:
        print(f"sse-jobs: refusing to listen on {settings.host} with no API tokens configured; "
              "anyone who can reach it could run jobs. Configure --api-tokens-file, bind "
              "127.0.0.1, or pass --insecure if something else guards this address.",
              file=sys.stderr)
        return 2
    # Like `python -m`, let --jobs name modules in the working directory; the worker
    # processes inherit this path.
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        load_job_modules(settings.jobs)
    except ImportError as exc:
        print(f"sse-jobs: cannot import a --jobs module: {exc}", file=sys.stderr)
        return 2
    try:
        asyncio.run(serve(settings, app_factory))
    except SseJobsError as exc:
        print(f"sse-jobs: {exc.detail}", file=sys.stderr)
        return 1
    return 0


async def serve(settings: Settings, app_factory: AppFactory = create_app) -> None:
    runner = web.AppRunner(app_factory(settings), handler_cancellation=True,
                           shutdown_timeout=HTTP_SHUTDOWN_TIMEOUT,
                           access_log=None)  # the request_context middleware logs requests
    try:
        await runner.setup()
        # Everything alive now lives as long as the server: keep it out of the collector's
        # full passes, which otherwise pause the loop for tens of milliseconds under load.
        gc.freeze()
        site = web.TCPSite(runner, settings.host, settings.port)
        await site.start()
        port = runner.addresses[0][1]
        # Handlers first: whoever reads the announcement may send SIGTERM at once.
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)
        host = f"[{settings.host}]" if ":" in settings.host else settings.host  # IPv6
        print(f"sse-jobs listening on http://{host}:{port}", flush=True)
        await stop.wait()
        log.info("shutting down")
        await drain(runner.app)
    finally:
        await runner.cleanup()


async def drain(app: web.Application) -> None:
    """Stop taking jobs (503), end streams so clients resume elsewhere or later, and give
    running jobs their grace period — while the HTTP server still answers."""
    app[ENGINE].accepting = False
    app[BROKER].close_all()
    await app[ENGINE].stop()

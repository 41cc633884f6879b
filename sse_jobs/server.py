"""Running a node: ``sse-jobs serve`` (an API node, with workers unless ``--workers 0``)
binds, announces and serves; ``sse-jobs worker`` (a worker node, no HTTP) only runs jobs.
Both shut down gracefully on SIGTERM/SIGINT (contract sections 1, 8 and 9)."""

from __future__ import annotations

import asyncio
import errno
import gc
import logging
import os
import signal
import socket
import sys
from collections.abc import Callable, Coroutine
from typing import Any

from aiohttp import web

from sse_jobs import logs
from sse_jobs.auth import TokenFileError, load_tokens
from sse_jobs.config import Settings
from sse_jobs.engine.engine import Engine
from sse_jobs.engine.results import ResultFiles
from sse_jobs.errors import SseJobsError
from sse_jobs.ids import node_name
from sse_jobs.jobs import REGISTRY
from sse_jobs.metrics import Metrics
from sse_jobs.store import store_for
from sse_jobs.web import create_app, load_job_modules
from sse_jobs.web.connections import ConnectionGuard, fit_open_files
from sse_jobs.web.keys import BROKER, ENGINE, METRICS

log = logging.getLogger(__name__)

# Time the HTTP server gives open requests once the engine has stopped.
HTTP_SHUTDOWN_TIMEOUT = 5.0
LISTEN_BACKLOG = 128  # aiohttp's default
# Below this many connections a server is not worth starting; the limit must be raised.
MIN_CONNECTIONS = 64


AppFactory = Callable[[Settings], web.Application]


def run(settings: Settings, app_factory: AppFactory = create_app) -> int:
    """``sse-jobs serve``: run until SIGTERM or SIGINT, then exit 0. ``app_factory``
    builds the application (an embedding may add routes to it)."""
    logs.configure(settings.log_level, settings.log_format)
    try:
        tokens = load_tokens(settings.api_tokens_file, settings.api_tokens)
    except TokenFileError as exc:
        return _refuse(f"API tokens: {exc}")
    if not tokens and not settings.loopback_only and not settings.insecure:
        return _refuse(f"refusing to listen on {settings.host} with no API tokens configured; "
                       "anyone who can reach it could run jobs. Configure --api-tokens-file, "
                       "bind 127.0.0.1, or pass --insecure if something else guards this "
                       "address.")
    if settings.postgres_url is None and not settings.sqlite_path.parent.is_dir():
        # Made silently, a mistyped path would hold a new, empty database.
        return _refuse(f"error: argument --db: the directory {settings.sqlite_path.parent} "
                       "does not exist; create it, or name a file in a directory that does")
    connections = fit_open_files(settings.connection_limit, settings.workers)
    if connections < settings.connection_limit:
        if settings.max_connections is not None or connections < MIN_CONNECTIONS:
            return _refuse(f"error: argument --max-connections: {settings.connection_limit} "
                           f"connections need more open files than this process may have "
                           f"(ulimit -n: {connections} connections fit); raise the hard "
                           "limit or lower --max-connections")
        log.warning("the open-file limit allows %d connections, not %d: serving at most %d "
                    "(raise ulimit -n, or set --max-connections)",
                    connections, settings.connection_limit, connections)
    # Bound first: a port in use is one clear line before the database is migrated or a
    # generated secret is shown.
    try:
        sock = listen(settings.host, settings.port)
    except OSError as exc:
        reason = ("the address is already in use" if exc.errno == errno.EADDRINUSE
                  else exc.strerror or str(exc))
        print(f"sse-jobs: cannot listen on {settings.host}:{settings.port}: {reason}",
              file=sys.stderr)
        return 1
    with sock:
        return _run_node(settings, serve(settings, app_factory, sock, connections))


def listen(host: str, port: int) -> socket.socket:
    """A listening TCP socket on ``host``:``port`` (0: a free port)."""
    family, _, _, _, address = socket.getaddrinfo(
        host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0]
    return socket.create_server(address[:2], family=family)  # serve() sets the backlog


def run_worker(settings: Settings) -> int:
    """``sse-jobs worker``: run jobs for the API nodes of a shared database until SIGTERM
    or SIGINT, then exit 0."""
    logs.configure(settings.log_level, settings.log_format)
    if settings.postgres_url is None:
        return _refuse("a worker node takes its jobs from a database it shares with API "
                       "nodes: --db postgresql://... (a SQLite file has one server, which "
                       "runs its own jobs)")
    if settings.workers == 0:
        return _refuse("a worker node needs --workers 1 or more")
    return _run_node(settings, work(settings))


def _run_node(settings: Settings, main: Coroutine[Any, Any, None]) -> int:
    # Like `python -m`, let --jobs name modules in the working directory; the worker
    # processes inherit this path.
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        load_job_modules(settings.jobs)
    except ImportError as exc:
        main.close()
        return _refuse(f"cannot import a --jobs module: {exc}")
    try:
        asyncio.run(main)
    except SseJobsError as exc:
        print(f"sse-jobs: {exc.detail}", file=sys.stderr)
        return 1
    return 0


def _refuse(message: str) -> int:
    print(f"sse-jobs: {message}", file=sys.stderr)
    return 2


async def serve(settings: Settings, app_factory: AppFactory, sock: socket.socket,
                connections: int) -> None:
    """Serve on ``sock`` (bound by ``run``), at most ``connections`` at once."""
    runner = web.AppRunner(app_factory(settings), handler_cancellation=True,
                           shutdown_timeout=HTTP_SHUTDOWN_TIMEOUT,
                           access_log=None)  # the handle_request middleware logs requests
    listener: asyncio.Server | None = None
    try:
        await runner.setup()
        assert runner.server is not None
        guard = ConnectionGuard(runner.server, limit=connections,
                                header_timeout=settings.header_timeout,
                                metrics=runner.app[METRICS])
        # Everything alive now lives as long as the server: keep it out of the collector's
        # full passes, which otherwise pause the loop for tens of milliseconds under load.
        gc.freeze()
        # The guard wraps each connection, so the socket is served here rather than by an
        # aiohttp site; aiohttp's runner still owns the connections and their shutdown.
        listener = await asyncio.get_running_loop().create_server(guard, sock=sock,
                                                                  backlog=LISTEN_BACKLOG)
        port = sock.getsockname()[1]
        stop = _stop_on_signals()  # first: whoever reads the line may send SIGTERM at once
        host = f"[{settings.host}]" if ":" in settings.host else settings.host  # IPv6
        print(f"sse-jobs listening on http://{host}:{port}", flush=True)
        await stop.wait()
        log.info("shutting down")
        await drain(runner.app)
    finally:
        if listener is not None:
            listener.close()
        await runner.cleanup()


async def work(settings: Settings) -> None:
    """A worker node: the store and the engine, no HTTP and no event fan-out."""
    store = store_for(settings, node_name())
    await store.open(None)
    try:
        engine = Engine.create(settings, store, REGISTRY, Metrics(),
                               ResultFiles(settings.results_path))
        await engine.start()
        try:
            stop = _stop_on_signals()
            print("sse-jobs worker ready", flush=True)
            await stop.wait()
            log.info("shutting down")
        finally:
            await engine.stop()
    finally:
        await store.close()


def _stop_on_signals() -> asyncio.Event:
    """An event set on SIGTERM or SIGINT: the start of a graceful shutdown."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    return stop


async def drain(app: web.Application) -> None:
    """Stop taking jobs (503), end streams so clients resume elsewhere or later, and give
    running jobs their grace period — while the HTTP server still answers."""
    app[ENGINE].accepting = False
    app[BROKER].close_all()
    await app[ENGINE].stop()

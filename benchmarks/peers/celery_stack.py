"""Running the Celery peer for one benchmark: ``redis-server`` on a free port of
127.0.0.1, a Celery worker (``--concurrency 2 --pool prefork``, as ours has
``--workers 2``) and the ``celery_web`` front, each a subprocess, all stopped on the way
out whatever happened.

``redis-server`` runs with its built-in defaults and no config file: no append-only file,
RDB snapshots after 3600 s / 1 change, 300 s / 100 or 60 s / 10,000 and at a clean
shutdown (into the benchmark's work directory). A crash of Redis loses everything since
the last snapshot: queued tasks, results, and anything in flight on pub/sub.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import shutil
import signal
import socket
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass

from benchmarks.common import Options, Spawned, spawn

STARTUP_TIMEOUT = 30.0
WORKER = ["-m", "celery", "-A", "benchmarks.peers.celery_app", "worker", "--concurrency",
          "2", "--pool", "prefork", "--loglevel", "warning", "--without-gossip",
          "--without-mingle", "--without-heartbeat"]


def unavailable() -> str | None:
    """Why the Celery peer cannot run on this machine, or None if it can."""
    for module in ("celery", "redis"):
        if importlib.util.find_spec(module) is None:
            return f"{module} is not installed (pip install -e '.[bench]')"
    if shutil.which("redis-server") is None:
        return "redis-server is not installed (apt-get install -y redis-server)"
    return None


def skip_message(reason: str) -> str:
    return f"  SKIPPED the Celery peer: {reason}; sse-jobs is measured without it"


@dataclass
class CeleryPeer:
    url: str  # the HTTP front
    redis_url: str
    web: Spawned
    worker: Spawned


@contextlib.contextmanager
def running(opts: Options, name: str) -> Iterator[CeleryPeer]:
    """Redis, the worker and the front; the worker has not necessarily taken a task yet
    (``clients.celery_run`` a ``noop`` to warm it up)."""
    started: list[Spawned] = []
    try:
        redis_url, server = _start_redis(opts, name)
        started.append(server)
        env = {"BENCH_REDIS_URL": redis_url}
        worker = spawn([sys.executable, *WORKER], opts.workdir / f"{name}-worker.log",
                       announce=None, env=env)
        started.append(worker)
        web = spawn([sys.executable, "-m", "benchmarks.peers.celery_web", "--port", "0"],
                    opts.workdir / f"{name}-web.log", announce="celery-web listening on",
                    env=env)
        started.append(web)
        yield CeleryPeer(web.url, redis_url, web, worker)
    finally:
        for process in reversed(started):
            _stop(process)


def _start_redis(opts: Options, name: str) -> tuple[str, Spawned]:
    port = _free_port()
    command = ["redis-server", "--port", str(port), "--bind", "127.0.0.1",
               "--dir", str(opts.workdir), "--dbfilename", f"{name}.rdb",
               "--logfile", str(opts.workdir / f"{name}-redis.log")]
    server = spawn(command, opts.workdir / f"{name}-redis.err", announce=None)
    url = f"redis://127.0.0.1:{port}/0"
    try:
        _wait_for_redis(port, server)
    except BaseException:
        _stop(server)
        raise
    return url, server


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _wait_for_redis(port: int, server: Spawned) -> None:
    import redis

    client = redis.Redis(port=port, socket_timeout=1)
    deadline = time.monotonic() + STARTUP_TIMEOUT
    try:
        while time.monotonic() < deadline and server.proc.poll() is None:
            with contextlib.suppress(redis.ConnectionError):
                if client.ping():
                    return
            time.sleep(0.02)
    finally:
        client.close()
    raise RuntimeError(f"redis-server on port {port} did not answer; see {server.log_path}")


def _stop(process: Spawned) -> None:
    """Stop the process, then whatever of its group is left (the prefork pool's
    children, should the worker's main process have had to be killed)."""
    process.stop()
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)

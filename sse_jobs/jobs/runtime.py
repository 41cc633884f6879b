"""What runs inside a worker process: the pool's initializer and the call wrapper.

A second pipe is the lifeline: the server holds its only write end and never writes, so a
worker reads end-of-file exactly when the server is gone, even after kill -9, and exits
instead of running an orphaned attempt to its end (the next server runs it again).

Imports only the job author's API: a worker never loads the server.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import traceback
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any

import orjson
from pydantic import BaseModel

from sse_jobs.errors import JobCancelled
from sse_jobs.jobs import channel
from sse_jobs.jobs.context import JobContext
from sse_jobs.jobs.registry import REGISTRY

ORPHANED_EXIT_CODE = 70


def init_worker(progress: Connection, cancel_flags: Any, lifeline: Connection) -> None:
    """Pool initializer: attach to the progress pipe and the cancel flags, and watch the
    lifeline."""
    # Ctrl-C reaches the whole foreground process group; the server, not the job, decides
    # what happens to a running attempt on shutdown.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    channel.attach(progress.fileno(), cancel_flags)
    threading.Thread(target=_exit_when_server_is_gone, args=(lifeline.fileno(),),
                     name="lifeline", daemon=True).start()
    channel.send(["w", os.getpid()])  # lets the server count live workers


def _exit_when_server_is_gone(lifeline_fd: int) -> None:
    with contextlib.suppress(OSError):
        os.read(lifeline_fd, 1)  # returns only at end-of-file: the server has exited
    os._exit(ORPHANED_EXIT_CODE)


@dataclass(frozen=True, slots=True)
class WorkerCall:
    """Everything a worker needs to run one attempt; plain data, cheap to pickle."""

    job_id: str
    attempt: int
    type_name: str
    module: str
    params: dict[str, Any]
    slot: int
    result_dir: str


def run_attempt(call: WorkerCall, debug: bool) -> tuple[Any, ...]:
    """Run one attempt and describe how it ended; never raises, so any exception travels.

    Returns ``("ok", result_json, result_file)``, ``("cancelled",)`` or
    ``("error", exception_class, message, traceback_or_None)``.
    """
    # It starts now, not when it was handed to the pool: the server records the attempt's
    # start (its `processing` event) on this frame.
    channel.send(["s", call.job_id, call.attempt])
    ctx = JobContext(call.job_id, call.attempt, slot=call.slot, result_dir=call.result_dir)
    try:
        job_type = REGISTRY.load(call.module, call.type_name)
        params = job_type.params.model_validate(call.params)
        value = job_type.func(ctx, params)
        if isinstance(value, BaseModel):
            value = value.model_dump(mode="json")
        return ("ok", orjson.dumps(value), ctx.result_file)
    except JobCancelled:
        return ("cancelled",)
    except Exception as exc:  # noqa: BLE001 - every failure of job code is reported, not raised
        return ("error", type(exc).__name__, str(exc)[:2000],
                traceback.format_exc() if debug else None)

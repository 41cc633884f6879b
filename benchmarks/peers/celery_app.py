"""The Celery peer's tasks: the jobs of ``benchmarks/jobs.py`` run by a Celery worker,
with Redis as broker and result backend, each publishing its events on Redis pub/sub.

    BENCH_REDIS_URL=redis://127.0.0.1:6379/0 \\
        celery -A benchmarks.peers.celery_app worker --concurrency 2 --pool prefork

This is what one builds by hand to turn long requests into jobs with progress streams
(``celery_web.py`` is the HTTP front). A task publishes JSON events shaped like ours
(``job_id``, ``seq``, ``event``, ``state``, ``at`` and the event's fields) on the channel
``job:<id>``: ``processing`` from ``before_start``, ``progress`` from the job function,
``completed`` (with the result) or ``failed`` from ``on_success``/``on_failure``, which
Celery calls *after* it has stored the outcome in the result backend; so ``completed``
means "stored in Redis", as our ``completed`` means "committed to SQLite".

Settings, chosen to match sse-jobs' delivery semantics rather than Celery's defaults:

- ``task_acks_late=True`` and ``task_reject_on_worker_lost=True``: a task is acknowledged
  after it has run, so one whose worker process dies is delivered again (at-least-once,
  as sse-jobs runs an interrupted attempt again). With Celery's default (ack before
  running) a crash loses the task: at-most-once.
- ``worker_prefetch_multiplier=1``: the worker reserves at most one task per process
  (2 with ``--concurrency 2``), as sse-jobs claims a job only for a free worker slot. The
  default, 4, lets one process hold tasks that an idle one could run; with
  ``acks_late`` each reserved task stays unacknowledged until it has run.
- The worker runs with ``--without-gossip --without-mingle --without-heartbeat``: these
  coordinate several workers, of which there is one here, and cost broker traffic.

What this peer does not guarantee, compared with sse-jobs:

- **Events published while nobody listens are lost.** Redis pub/sub stores nothing
  (``PUBLISH`` returns the number of receivers, here often 0): a subscriber that connects
  after ``processing`` or some ``progress`` never sees them, and one that reconnects
  misses whatever was published meanwhile. There is no ``Last-Event-ID`` resume, no
  replay, and no gap-free sequence a client could check: ``seq`` counts the messages one
  attempt published, restarts at 1 when a task is delivered again, and nothing tells a
  subscriber it missed one. A client that must see ``processing`` has to subscribe
  before it submits (``celery_web`` lets it choose the job id for that).
- **Queued work is not durable.** The benchmark runs ``redis-server`` with its built-in
  defaults: no append-only file, RDB snapshots only after 3600 s with 1 change, 300 s
  with 100 or 60 s with 10,000, and on a clean shutdown. A ``202`` means the task is in
  Redis's memory; a crash of Redis (``kill -9``, power loss) loses every task queued,
  every unacknowledged task and every result since the last snapshot. sse-jobs fsyncs
  each job before answering ``202``.
- **Redelivery after a crash is slow.** With ``acks_late``, a task held by a worker
  whose main process is killed outright stays in Redis's ``unacked`` set until the
  broker's ``visibility_timeout`` (1 hour by default) has passed (a killed pool process
  is handled at once: its task is delivered again). A task delivered again runs and
  publishes its events again.
- **No job state to ask for** besides the result backend's own (``PENDING`` for both a
  queued task and an unknown id, since ``task_track_started`` is off by default);
  results expire after ``result_expires`` (1 day).
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, cast

import orjson
import redis
from celery import Celery, Task
from pydantic import BaseModel

from benchmarks import jobs
from sse_jobs import JobContext

REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")
TERMINAL = frozenset({"completed", "failed"})

app = Celery("bench", broker=REDIS_URL, backend=REDIS_URL)
app.conf.update(
    task_acks_late=True,
    task_reject_on_worker_lost=True,
    worker_prefetch_multiplier=1,
    broker_connection_retry_on_startup=True,
)


def channel(job_id: str) -> str:
    return f"job:{job_id}"


@functools.cache
def _client(pid: int) -> redis.Redis:
    # Keyed by pid: a client made before the prefork pool forks must not be shared.
    return redis.Redis.from_url(REDIS_URL)


_seqs: dict[str, int] = {}


def publish(job_id: str, event: str, state: str, **fields: Any) -> None:
    """One event of the job on its channel; ``seq`` counts this attempt's events."""
    seq = _seqs[job_id] = _seqs.get(job_id, 0) + 1
    if event in TERMINAL:
        del _seqs[job_id]
    data = {"job_id": job_id, "seq": seq, "event": event, "state": state,
            "at": datetime.now(UTC).isoformat(), **fields}
    _client(os.getpid()).publish(channel(job_id), orjson.dumps(data))


class Progress:
    """The part of ``JobContext`` the benchmark jobs use: ``progress``."""

    def __init__(self, job_id: str) -> None:
        self.job_id = job_id

    def progress(self, percent: float, message: str | None = None) -> None:
        publish(self.job_id, "progress", "processing", progress=percent, message=message,
                eta=None)


class JobTask(Task):  # type: ignore[misc]  # celery has no type hints
    """Publishes the job's lifecycle around the job function."""

    def before_start(self, task_id: str, args: Any, kwargs: Any) -> None:
        publish(task_id, "processing", "processing")

    def on_success(self, retval: Any, task_id: str, args: Any, kwargs: Any) -> None:
        publish(task_id, "completed", "completed", result=retval)

    def on_failure(self, exc: BaseException, task_id: str, args: Any, kwargs: Any,
                   einfo: Any) -> None:
        publish(task_id, "failed", "failed",
                error={"type": "exception", "message": str(exc),
                       "exception": type(exc).__name__})


JobFunction = Callable[[JobContext, Any], Any]


def _task(name: str, function: JobFunction, params: type[BaseModel]) -> Any:
    def run(self: JobTask, **kwargs: Any) -> Any:
        # the job functions touch nothing of their context but ``progress``
        return function(cast(JobContext, Progress(self.request.id)), params(**kwargs))

    return app.task(run, base=JobTask, bind=True, name=name)


JOBS: dict[str, tuple[JobFunction, type[BaseModel]]] = {
    "noop": (jobs.noop, jobs.NoopParams), "ticker": (jobs.ticker, jobs.TickerParams)}
TASKS: dict[str, Any] = {name: _task(name, function, params)
                         for name, (function, params) in JOBS.items()}

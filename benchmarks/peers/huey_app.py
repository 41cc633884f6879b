"""The Huey peer: ``SqliteHuey`` with a trivial task, run by Huey's own consumer in
process-worker mode, as Huey's documentation runs it:

    BENCH_HUEY_DB=/tmp/huey.db huey_consumer benchmarks.peers.huey_app.huey -w 2 -k process

``fsync=True`` sets ``PRAGMA synchronous = FULL``, the durability sse-jobs runs with.
"""

from __future__ import annotations

import os

from huey import SqliteHuey

huey = SqliteHuey("bench", filename=os.environ.get("BENCH_HUEY_DB", "huey-bench.db"),
                  fsync=True)


@huey.task()
def noop(n: int) -> int:
    """The trivial job: return n (so a result is stored, as sse-jobs stores one)."""
    return n

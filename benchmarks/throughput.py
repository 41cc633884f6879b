"""Job throughput: N trivial jobs submitted over HTTP until all are ``completed``
(persisted), against Huey with ``SqliteHuey`` and 2 process workers on the same machine.

Ours: a load-generator process follows ``/api/v1/events``, submits ``noop`` jobs with 16
requests in flight, and stops the clock at the last ``completed`` event (sent only after
its commit). Huey: a load-generator process enqueues the same number of ``noop`` tasks
(straight into SQLite: no HTTP in front of Huey, which favours Huey) while Huey's consumer
runs with ``-w 2 -k process``, and stops the clock when all results are stored. Both use
SQLite in WAL mode with ``synchronous = FULL``; both servers start fresh each round.
"""

from __future__ import annotations

import asyncio
import sys
from typing import Any

from benchmarks import clients
from benchmarks.common import (
    ClientGroup,
    Options,
    Spawned,
    fmt_spread,
    ratios,
    session,
    spawn,
    spread,
    start_ours,
    submit,
    wait_state,
)

NAME = "throughput"
QUESTION = ("2,000 trivial jobs submitted over HTTP until all are completed (persisted): "
            "sse-jobs with 2 workers vs Huey (SqliteHuey, 2 process workers)")
TARGET = 2.0
CONCURRENCY = 16
# Huey's polling: it sleeps when the queue is empty; start at 1 ms, grow 5 %, cap at 10 ms
# (its defaults are 100 ms and 10 s), so polling does not slow it down here.
HUEY_POLLING = ["-d", "0.001", "-b", "1.05", "-m", "0.01"]


def huey_available() -> bool:
    try:
        import huey  # noqa: F401
    except ImportError:
        return False
    return True


def run(opts: Options) -> dict[str, Any]:
    jobs = 200 if opts.quick else 2000
    rounds = 1 if opts.quick else opts.rounds
    with_huey = huey_available()
    if not with_huey:
        opts.log("  SKIPPED the Huey peer: huey is not installed (pip install huey, or "
                 "pip install -e '.[test]'); sse-jobs is measured alone")
    per_round: list[dict[str, Any]] = []
    errors: list[str] = []
    for index in range(rounds):
        row: dict[str, Any] = {"round": index + 1}
        row["ours"] = asyncio.run(_ours(opts, index, jobs))
        row["ours"]["jobs_per_s"] = jobs / row["ours"]["seconds"]
        errors += row["ours"]["errors"]
        if with_huey:
            row["huey"] = asyncio.run(_huey(opts, index, jobs))
            row["huey"]["jobs_per_s"] = jobs / row["huey"]["seconds"]
            errors += row["huey"]["errors"]
        opts.log(f"  round {index + 1}: ours {row['ours']['jobs_per_s']:.0f} jobs/s"
                 + (f", Huey {row['huey']['jobs_per_s']:.0f} jobs/s" if with_huey else ""))
        per_round.append(row)
    ours = [r["ours"]["jobs_per_s"] for r in per_round]
    result: dict[str, Any] = {
        "question": QUESTION, "command": "python -m benchmarks throughput",
        "params": {"jobs": jobs, "rounds": rounds, "workers": 2,
                   "submit_concurrency": CONCURRENCY, "huey_consumer": HUEY_POLLING},
        "rounds": per_round, "errors": errors[:20],
        "ours_jobs_per_s": spread(ours),
        "ours_submit_p99_ms": spread([r["ours"]["submit_p99_ms"] for r in per_round]),
    }
    headline: dict[str, Any] = {"figure": "jobs/s, submit over HTTP to all completed",
                "ours": fmt_spread(result["ours_jobs_per_s"]), "target": f">= {TARGET:g}x Huey"}
    if with_huey:
        huey = [r["huey"]["jobs_per_s"] for r in per_round]
        result["huey_jobs_per_s"] = spread(huey)
        result["ratio"] = spread(ratios(ours, huey))
        result["met"] = result["ratio"]["median"] >= TARGET
        headline |= {"peer": "Huey " + fmt_spread(result["huey_jobs_per_s"]),
                     "ratio": fmt_spread(result["ratio"], "x"), "met": result["met"]}
    else:
        result["skipped"] = ["huey is not installed"]
        headline |= {"peer": "Huey: skipped (not installed)", "met": None}
    result["headline"] = [headline]
    return result


async def _ours(opts: Options, index: int, jobs: int) -> dict[str, Any]:
    server = start_ours(opts, f"throughput-ours-{index}")
    try:
        async with session() as http:  # warm-up: the pool's workers are up
            job = await submit(http, server.url, "noop", {"n": -1})
            await wait_state(http, server.url, job["id"], {"completed"}, 60)
        group = ClientGroup(clients.throughput_ours, [clients.ThroughputSpec(
            server.url, jobs, CONCURRENCY, timeout=60 if opts.quick else 300)])
        try:
            result: dict[str, Any]
            (result,) = await group.expect("done", 330)
        finally:
            group.close()
        result["server_cpu_s"] = server.cpu_seconds()
        return result
    finally:
        server.stop()


async def _huey(opts: Options, index: int, jobs: int) -> dict[str, Any]:
    db = opts.workdir / f"throughput-huey-{index}.db"
    consumer = _start_consumer(opts, index, db)
    try:
        # warm-up, as for ours: one task through the consumer before the clock starts
        group = ClientGroup(clients.throughput_huey, [clients.HueySpec(str(db), 1, 60)])
        try:
            await group.expect("done", 90)
        finally:
            group.close()
        group = ClientGroup(clients.throughput_huey, [clients.HueySpec(
            str(db), jobs, timeout=60 if opts.quick else 300)])
        try:
            result: dict[str, Any]
            (result,) = await group.expect("done", 330)
        finally:
            group.close()
        return result
    finally:
        consumer.stop()


def _start_consumer(opts: Options, index: int, db: Any) -> Spawned:
    command = [sys.executable, "-m", "huey.bin.huey_consumer", "benchmarks.peers.huey_app.huey",
               "-w", "2", "-k", "process", "-n", "-q", *HUEY_POLLING]
    return spawn(command, opts.workdir / f"throughput-huey-{index}.log", announce=None,
                 env={"BENCH_HUEY_DB": str(db)})

"""Job throughput: N trivial jobs submitted over HTTP until all are ``completed``
(persisted), against Huey with ``SqliteHuey`` and 2 process workers, and against the
hand-built Celery + Redis peer with 2 prefork workers, on the same machine.

Ours: a load-generator process follows ``/api/v1/events``, submits ``noop`` jobs with 16
requests in flight, and stops the clock at the last ``completed`` event (sent only after
its commit). Huey: a load-generator process enqueues the same number of ``noop`` tasks
(straight into SQLite: no HTTP in front of Huey, which favours Huey) while Huey's consumer
runs with ``-w 2 -k process``, and stops the clock when all results are stored. Both use
SQLite in WAL mode with ``synchronous = FULL``; both servers start fresh each round.

Celery (``peers/celery_app.py``, ``peers/celery_web.py``; fresh Redis, worker and front
each round): a load-generator process POSTs the same ``noop`` jobs to the peer's HTTP
front, 16 in flight, and stops the clock at the last ``completed`` message on Redis
pub/sub, which the task publishes after Celery has stored its result in the backend
(the counterpart of our ``completed``-after-commit, though Redis keeps it in memory, not
fsynced). It follows them with one pattern subscription on Redis, not through the
front's SSE, because the front streams one job per connection: 2,000 streams would
measure the front's connection handling, and skipping the SSE hop favours the peer.
Then every job's messages (``processing``, ``completed``) and stored result are checked.
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
from benchmarks.peers import celery_stack

NAME = "throughput"
QUESTION = ("2,000 trivial jobs submitted over HTTP until all are completed (persisted): "
            "sse-jobs with 2 workers vs Huey (SqliteHuey, 2 process workers) and vs "
            "Celery + Redis (2 prefork workers, an aiohttp front)")
TARGET = 2.0
CONCURRENCY = 16
# Huey's polling: it sleeps when the queue is empty; start at 1 ms, grow 5 %, cap at 10 ms
# (its defaults are 100 ms and 10 s), so polling does not slow it down here.
HUEY_POLLING = ["-d", "0.001", "-b", "1.05", "-m", "0.01"]
LABELS = {"ours": "ours", "ours_bulk": "ours, bulk", "huey": "Huey", "celery": "Celery"}
BULK = 100  # jobs a bulk submission


def huey_available() -> bool:
    try:
        import huey  # noqa: F401
    except ImportError:
        return False
    return True


def run(opts: Options) -> dict[str, Any]:
    jobs = 200 if opts.quick else 2000
    rounds = 1 if opts.quick else opts.rounds
    skipped = {"huey": None if huey_available() else "huey is not installed",
               "celery": celery_stack.unavailable()}
    if skipped["huey"] is not None:
        opts.log("  SKIPPED the Huey peer: huey is not installed (pip install huey, or "
                 "pip install -e '.[test]'); sse-jobs is measured alone")
    if skipped["celery"] is not None:
        opts.log(celery_stack.skip_message(skipped["celery"]))
    measures = {"ours": _ours, "ours_bulk": _ours_bulk, "huey": _huey, "celery": _celery}
    systems = {name: measure for name, measure in measures.items() if not skipped.get(name)}
    per_round = [_round(opts, index, jobs, systems) for index in range(rounds)]
    result: dict[str, Any] = {
        "question": QUESTION, "command": "python -m benchmarks throughput",
        "params": {"jobs": jobs, "rounds": rounds, "workers": 2,
                   "submit_concurrency": CONCURRENCY, "huey_consumer": HUEY_POLLING,
                   "celery_worker": celery_stack.WORKER[2:]},
        "rounds": per_round,
        "errors": [e for r in per_round for s in systems for e in r[s]["errors"]][:20],
        "ours_jobs_per_s": spread([r["ours"]["jobs_per_s"] for r in per_round]),
        "ours_submit_p99_ms": spread([r["ours"]["submit_p99_ms"] for r in per_round]),
    }
    result["headline"] = [_against(result, per_round, peer, skipped[peer])
                          for peer in ("huey", "celery")]
    result["headline"].append(_bulk(result, per_round, skipped["huey"]))
    if skipped["huey"] is None:
        result["met"] = result["ratio"]["median"] >= TARGET
    else:
        result["skipped"] = [skipped["huey"]]
    if skipped["celery"] is not None:  # apart from "skipped", which has always been Huey's
        result["celery_skipped"] = skipped["celery"]
    return result


def _round(opts: Options, index: int, jobs: int, systems: dict[str, Any]) -> dict[str, Any]:
    """One round: each system in turn, each on fresh servers."""
    row: dict[str, Any] = {"round": index + 1}
    for system, measure in systems.items():
        row[system] = asyncio.run(measure(opts, index, jobs))
        row[system]["jobs_per_s"] = jobs / row[system]["seconds"]
    opts.log(f"  round {index + 1}: " + ", ".join(
        f"{LABELS[system]} {row[system]['jobs_per_s']:.0f} jobs/s" for system in systems))
    return row


def _against(result: dict[str, Any], per_round: list[dict[str, Any]], peer: str,
             skipped: str | None) -> dict[str, Any]:
    """The headline row ours vs ``peer``; fills in the peer's figures in ``result``
    (Huey's ratio is ``ratio``, as before the Celery peer)."""
    target = f">= {TARGET:g}x Huey" if peer == "huey" else "-"
    headline: dict[str, Any] = {"figure": "jobs/s, submit over HTTP to all completed",
                                "ours": fmt_spread(result["ours_jobs_per_s"]),
                                "target": target, "met": None}
    if skipped is not None:
        return headline | {"peer": f"{LABELS[peer]}: skipped (not installed)"}
    rates = [r[peer]["jobs_per_s"] for r in per_round]
    ratio = spread(ratios([r["ours"]["jobs_per_s"] for r in per_round], rates))
    result[f"{peer}_jobs_per_s"] = spread(rates)
    result["ratio" if peer == "huey" else f"{peer}_ratio"] = ratio
    headline |= {"peer": f"{LABELS[peer]} " + fmt_spread(result[f"{peer}_jobs_per_s"]),
                 "ratio": fmt_spread(ratio, "x")}
    if peer == "huey":
        headline["met"] = ratio["median"] >= TARGET
    return headline


def _bulk(result: dict[str, Any], per_round: list[dict[str, Any]],
          huey_skipped: str | None) -> dict[str, Any]:
    """The headline row of bulk submissions (ours only: neither peer's front has any),
    against Huey, whose load generator enqueues straight into its database."""
    rates = [r["ours_bulk"]["jobs_per_s"] for r in per_round]
    result["ours_bulk_jobs_per_s"] = spread(rates)
    headline: dict[str, Any] = {
        "figure": f"jobs/s, bulk submissions of {BULK} over HTTP to all completed",
        "ours": fmt_spread(result["ours_bulk_jobs_per_s"]), "target": "-", "met": None}
    if huey_skipped is not None:
        return headline | {"peer": "Huey: skipped (not installed)"}
    ratio = spread(ratios(rates, [r["huey"]["jobs_per_s"] for r in per_round]))
    result["bulk_ratio"] = ratio
    return headline | {"peer": "Huey " + fmt_spread(result["huey_jobs_per_s"]),
                       "ratio": fmt_spread(ratio, "x")}


async def _ours_bulk(opts: Options, index: int, jobs: int) -> dict[str, Any]:
    return await _ours(opts, index, jobs, batch=BULK)


async def _ours(opts: Options, index: int, jobs: int, batch: int = 1) -> dict[str, Any]:
    server = start_ours(opts, f"throughput-ours-{index}-{batch}")
    try:
        async with session() as http:  # warm-up: the pool's workers are up
            job = await submit(http, server.url, "noop", {"n": -1})
            await wait_state(http, server.url, job["id"], {"completed"}, 60)
        group = ClientGroup(clients.throughput_ours, [clients.ThroughputSpec(
            server.url, jobs, CONCURRENCY, timeout=60 if opts.quick else 300, batch=batch)])
        try:
            result: dict[str, Any] = (await group.expect("done", 330))[0]
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
            result: dict[str, Any] = (await group.expect("done", 330))[0]
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


async def _celery(opts: Options, index: int, jobs: int) -> dict[str, Any]:
    with celery_stack.running(opts, f"throughput-celery-{index}") as peer:
        async with session() as http:  # warm-up, as for ours
            await clients.celery_run(http, peer.url, "noop", {"n": -1}, "completed", 60)
        group = ClientGroup(clients.throughput_celery, [clients.CeleryThroughputSpec(
            peer.url, peer.redis_url, jobs, CONCURRENCY, timeout=60 if opts.quick else 300)])
        try:
            result: dict[str, Any] = (await group.expect("done", 330))[0]
        finally:
            group.close()
        result["front_cpu_s"] = peer.web.cpu_seconds()
        return result

"""Scale-out on PostgreSQL: job throughput with 1, 2 and 4 worker processes, beside the
SQLite default in the same run; and fan-out to subscribers on another node than the
writer, beside subscribers on the writer's own node.

PostgreSQL is a throwaway cluster of the machine's own binaries (``benchmarks/postgres.py``)
with its default durability (``fsync`` and ``synchronous_commit`` on), as SQLite runs with
``synchronous = FULL``: every commit is on disk before its event goes out.

- **throughput**: one API node (``serve --workers 0``) takes the jobs, one worker node
  (``sse-jobs worker --workers N``) runs them; the load generator is the throughput
  benchmark's (submits ``noop`` jobs over HTTP, 16 in flight, follows the API node's
  global stream to the last ``completed``). The SQLite row is ``serve --workers 2``.
- **fan-out across nodes**: the ``ticker`` job runs on a node with workers (the writer);
  its subscribers sit either on that node or on an API node with none, so every event
  they get has crossed the database (NOTIFY, then a read of the events table).
"""

from __future__ import annotations

import asyncio
import sys
from typing import Any

from benchmarks import clients, postgres
from benchmarks.common import (
    ClientGroup,
    Options,
    Spawned,
    fmt,
    fmt_spread,
    ratios,
    session,
    spawn,
    spread,
    start_ours,
    submit,
    wait_state,
)
from benchmarks.fanout import fan_out_phase

NAME = "scaleout"
QUESTION = ("PostgreSQL: 2,000 jobs through one API node and a worker node of 1, 2 and 4 "
            "processes (SQLite with 2 beside it); fan-out to 500 subscribers on another node "
            "than the writer, beside subscribers on the writer's node")
WORKERS = (1, 2, 4)
CONCURRENCY = 16
SUBSCRIBERS = 500
PACED_EVENTS, PACED_INTERVAL = 200, 0.05


def run(opts: Options) -> dict[str, Any]:
    if postgres.binaries() is None:
        opts.log("  SKIPPED: PostgreSQL is not installed (apt-get install postgresql)")
        return {"question": QUESTION, "skipped": ["PostgreSQL is not installed"],
                "errors": [], "headline": [{"figure": "scale-out on PostgreSQL",
                                            "ours": "skipped (no PostgreSQL)", "met": None}]}
    jobs = 50 if opts.quick else 2000
    workers = WORKERS[1:2] if opts.quick else WORKERS
    rounds = 1 if opts.quick else opts.rounds
    subscribers = 50 if opts.quick else SUBSCRIBERS
    paced = (30, 0.02) if opts.quick else (PACED_EVENTS, PACED_INTERVAL)
    cluster = postgres.start(durable=True)
    per_round: list[dict[str, Any]] = []
    errors: list[str] = []
    try:
        for index in range(rounds):
            row = _round(opts, cluster, index, jobs, workers, subscribers, paced)
            errors += row.pop("errors")
            opts.log(f"  round {index + 1}: jobs/s sqlite(2) {fmt(row['sqlite_2'])}, "
                     + ", ".join(f"postgres({w}) {fmt(row[f'postgres_{w}'])}" for w in workers)
                     + f"; paced p99 ms same node {fmt(row['same_node']['p99_ms'])}, "
                     f"other node {fmt(row['other_node']['p99_ms'])}")
            per_round.append(row)
    finally:
        cluster.stop()
    return _summary(per_round, {"jobs": jobs, "rounds": rounds, "workers": workers,
                                "subscribers": subscribers, "paced_events": paced[0],
                                "paced_interval_s": paced[1],
                                "submit_concurrency": CONCURRENCY}, errors)


def _round(opts: Options, cluster: postgres.Cluster, index: int, jobs: int,
           worker_counts: tuple[int, ...], subscribers: int,
           paced: tuple[int, float]) -> dict[str, Any]:
    row: dict[str, Any] = {"round": index + 1, "errors": []}
    sqlite = start_ours(opts, f"scaleout-sqlite-{index}")
    try:
        row["sqlite_2"] = _throughput(sqlite, jobs, row["errors"])
    finally:
        sqlite.stop()
    for workers in worker_counts:
        url = cluster.create_database(f"throughput_{index}_{workers}")
        api = start_ours(opts, f"scaleout-api-{index}-{workers}", db=url, workers=0)
        worker = _start_worker(opts, f"scaleout-worker-{index}-{workers}", url, workers)
        try:
            row[f"postgres_{workers}"] = _throughput(api, jobs, row["errors"])
        finally:
            worker.stop()
            api.stop()
    url = cluster.create_database(f"fanout_{index}")
    writer = start_ours(opts, f"scaleout-writer-{index}", "--progress-rate", "0", db=url,
                        workers=1)
    other = start_ours(opts, f"scaleout-other-{index}", db=url, workers=0)
    try:
        for key, subscribed in (("same_node", writer), ("other_node", other)):
            figures = asyncio.run(fan_out_phase(
                opts, writer, "job", subscribers, paced[0], paced[1],
                f"scaleout-{index}-{key}", subscribe_to=subscribed))
            row["errors"] += [f"{key}: {e}" for e in figures.pop("errors")]
            row[key] = figures
    finally:
        other.stop()
        writer.stop()
    return row


def _throughput(api: Spawned, jobs: int, errors: list[str]) -> float:
    async def measure() -> dict[str, Any]:
        async with session() as http:  # warm-up: a job through the workers
            job = await submit(http, api.url, "noop", {"n": -1})
            await wait_state(http, api.url, job["id"], {"completed"}, 60)
        group = ClientGroup(clients.throughput_ours, [clients.ThroughputSpec(
            api.url, jobs, CONCURRENCY, timeout=300)])
        try:
            result: dict[str, Any]
            (result,) = await group.expect("done", 330)
        finally:
            group.close()
        return result

    result = asyncio.run(measure())
    errors += result["errors"]
    return float(jobs / result["seconds"])


def _start_worker(opts: Options, name: str, url: str, workers: int) -> Spawned:
    command = [sys.executable, "-m", "sse_jobs", "worker", "--db", url,
               "--workers", str(workers), "--jobs", "benchmarks.jobs", "--log-level", "warning",
               "--results-dir", str(opts.workdir / "results")]
    return spawn(command, opts.workdir / f"{name}.log", announce="sse-jobs worker ready")


def _summary(per_round: list[dict[str, Any]], params: dict[str, Any],
             errors: list[str]) -> dict[str, Any]:
    def column(key: str) -> list[float]:
        return [r[key] for r in per_round]

    sqlite = column("sqlite_2")
    result: dict[str, Any] = {"question": QUESTION, "command": "python -m benchmarks scaleout",
                              "params": params, "rounds": per_round, "errors": errors[:20],
                              "sqlite_2_jobs_per_s": spread(sqlite)}
    headline = []
    for workers in params["workers"]:
        rates = column(f"postgres_{workers}")
        result[f"postgres_{workers}_jobs_per_s"] = spread(rates)
        result[f"postgres_{workers}_ratio"] = spread(ratios(rates, sqlite))
        headline.append({
            "figure": f"jobs/s, PostgreSQL, API node + worker node of {workers}",
            "ours": fmt_spread(result[f"postgres_{workers}_jobs_per_s"]),
            "peer": "SQLite, 2 workers " + fmt_spread(result["sqlite_2_jobs_per_s"]),
            "ratio": fmt_spread(result[f"postgres_{workers}_ratio"], "x"), "met": None})
    for key in ("same_node", "other_node"):
        result[key] = {name: spread([r[key][name] for r in per_round])
                       for name in ("p50_ms", "p99_ms", "delivered_per_s")}
    result["other_node_p99_ratio"] = spread(ratios(
        [r["other_node"]["p99_ms"] for r in per_round],
        [r["same_node"]["p99_ms"] for r in per_round]))
    headline.append({
        "figure": f"p99 publish-to-receive (ms), {params['subscribers']} subscribers on "
                  "another node than the writer, paced",
        "ours": fmt_spread(result["other_node"]["p99_ms"]),
        "peer": "subscribers on the writer's node " + fmt_spread(result["same_node"]["p99_ms"]),
        "ratio": fmt_spread(result["other_node_p99_ratio"], "x"), "met": None})
    result["headline"] = headline
    return result

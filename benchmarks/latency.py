"""Latency at a steady load: ``noop`` jobs submitted at 50 a second for 60 s, on a fixed
schedule (each POST at its time, whatever the earlier ones are doing), to sse-jobs and to
the hand-built Celery + Redis peer (``peers/celery_app.py``, ``peers/celery_web.py``),
each with 2 worker processes, in the same run.

Measured in a load-generator process, from the moment a job's POST is sent to the arrival
of its ``processing`` and of its ``completed`` event over SSE, p50 and p99:

- ours: one ``GET /api/v1/events`` (the global stream), opened before the clock starts;
  every job must show ``queued, processing, completed`` with seqs 1, 2, 3;
- the peer: ``GET /jobs/{id}/events`` for each job, opened 0.25 s before its POST with an
  id the client chose, because pub/sub replays nothing: a stream opened after the
  ``202`` would miss a fast job's ``processing``. Every job must show ``processing,
  completed``. Opening streams costs the peer's front, not the timed path.

Every job must complete. ``max_slip_ms``: how late the POSTs went out against the
schedule; ``front_cpu_s``: CPU time of our server process, or of the peer's HTTP front
(its worker processes and Redis not counted).
"""

from __future__ import annotations

import asyncio
from typing import Any

from benchmarks import clients
from benchmarks.common import (
    ClientGroup,
    Options,
    Spawned,
    fmt,
    fmt_spread,
    percentile,
    ratios,
    session,
    spread,
    start_ours,
    submit,
    wait_state,
)
from benchmarks.peers import celery_stack

NAME = "latency"
QUESTION = ("noop jobs at a steady 50/s for 60 s: submit-to-processing and "
            "submit-to-completed latency over SSE, sse-jobs vs Celery + Redis pub/sub")
RATE = 50.0
FIGURES = [(event, q) for event in ("processing", "completed") for q in (50, 99)]


def run(opts: Options) -> dict[str, Any]:
    seconds = 3.0 if opts.quick else 60.0
    rounds = 1 if opts.quick else max(1, opts.rounds // 3)
    skipped = celery_stack.unavailable()
    if skipped is not None:
        opts.log(celery_stack.skip_message(skipped))
    measures = {"ours": _ours, **({"celery": _celery} if skipped is None else {})}
    per_round: list[dict[str, Any]] = []
    errors: list[str] = []
    for index in range(rounds):
        row: dict[str, Any] = {"round": index + 1}
        for system, measure in measures.items():
            row[system] = asyncio.run(measure(opts, index, seconds))
            errors += [f"{system}: {e}" for e in row[system].pop("errors")]
        opts.log(f"  round {index + 1}: " + "; ".join(
            f"{system} {_describe(row[system])}" for system in measures))
        per_round.append(row)
    return _summary(per_round, seconds, errors, skipped)


def _describe(figures: dict[str, Any]) -> str:
    return ", ".join(f"{event} p{q} {fmt(figures[f'{event}_p{q}_ms'])} ms"
                     for event, q in FIGURES)


def _summary(per_round: list[dict[str, Any]], seconds: float, errors: list[str],
             skipped: str | None) -> dict[str, Any]:
    result: dict[str, Any] = {
        "question": QUESTION, "command": "python -m benchmarks latency",
        "params": {"rate": RATE, "seconds": seconds, "rounds": len(per_round), "workers": 2,
                   "job": "noop", "celery_stream_lead_s": clients.LEAD},
        "rounds": per_round, "errors": errors[:20]}
    headline = []
    for event, q in FIGURES:
        key = f"{event}_p{q}_ms"
        ours = [r["ours"][key] for r in per_round]
        result[f"ours_{key}"] = spread(ours)
        row: dict[str, Any] = {"figure": f"submit-to-{event} p{q} (ms), {RATE:g} jobs/s",
                               "ours": fmt_spread(result[f"ours_{key}"]), "target": "-",
                               "met": None}
        if skipped is None:
            peer = [r["celery"][key] for r in per_round]
            result[f"celery_{key}"] = spread(peer)
            result[f"ratio_{key}"] = spread(ratios(ours, peer))
            row |= {"peer": "Celery " + fmt_spread(result[f"celery_{key}"]),
                    "ratio": fmt_spread(result[f"ratio_{key}"], "x")}
        else:
            row["peer"] = "Celery: skipped (not installed)"
        headline.append(row)
    if skipped is not None:
        result["skipped"] = [skipped]
    result["headline"] = headline
    return result


async def _ours(opts: Options, index: int, seconds: float) -> dict[str, Any]:
    server = start_ours(opts, f"latency-ours-{index}")
    try:
        async with session() as http:  # warm-up: the pool's workers are up
            job = await submit(http, server.url, "noop", {"n": -1})
            await wait_state(http, server.url, job["id"], {"completed"}, 60)
        return await _measure(opts, server, clients.latency_ours, server.url, seconds)
    finally:
        server.stop()


async def _celery(opts: Options, index: int, seconds: float) -> dict[str, Any]:
    with celery_stack.running(opts, f"latency-celery-{index}") as peer:
        async with session() as http:  # warm-up, and the worker is up
            await clients.celery_run(http, peer.url, "noop", {"n": -1}, "completed", 60)
        return await _measure(opts, peer.web, clients.latency_celery, peer.url, seconds)


async def _measure(opts: Options, server: Spawned, target: Any, url: str,
                   seconds: float) -> dict[str, Any]:
    timeout = seconds + 60
    group = ClientGroup(target, [clients.LatencySpec(url, RATE, seconds, timeout)])
    try:
        await group.expect("ready", 60)
        cpu = server.cpu_seconds()
        group.send(("go", None))
        (raw,) = await group.expect("done", timeout + 30)
        cpu = server.cpu_seconds() - cpu
    finally:
        group.close()
    figures = {f"{event}_p{q}_ms": 1000 * percentile(raw[f"{event}_s"], q)
               for event, q in FIGURES}
    return {**figures, "jobs": raw["jobs"], "timed": raw["timed"],
            "max_slip_ms": raw["max_slip_ms"], "front_cpu_s": cpu, "errors": raw["errors"]}

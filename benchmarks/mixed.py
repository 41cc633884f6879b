"""Mixed load: 500 subscribers + 20 submissions/s of ``sleep`` jobs for 60 s. No peer.

The 500 subscribers follow the global stream (``/api/v1/events``, the dashboard case:
every event of every job reaches every one of them), spread over two load-generator
processes. A third process submits ``sleep`` jobs (0.05 s, 2 steps: queued, processing,
two progress events, completed) on a fixed schedule of 20 a second, whatever the answers
take, and times every request. Default server settings (progress coalesced to 10/s).

Checked while measuring: every submission is accepted (202); every subscriber sees
consecutive global ids and, for every job, consecutive seqs; every subscriber sees every
job complete, and all see the same number of events. The stream ends with a final
``noop`` job submitted once nothing is queued or running.
"""

from __future__ import annotations

import asyncio
from typing import Any

from benchmarks import clients
from benchmarks.common import (
    ClientGroup,
    Options,
    fmt,
    fmt_spread,
    loop_lag,
    session,
    split,
    spread,
    start_ours,
)

NAME = "mixed"
QUESTION = "500 subscribers + 20 submissions/s of sleep jobs for 60 s"
END_RESULT = -424242
TARGET_P99_MS = 50.0
SUBSCRIBER_PROCESSES = 2


def run(opts: Options) -> dict[str, Any]:
    subscribers = 50 if opts.quick else 500
    seconds = 5.0 if opts.quick else 60.0
    rate = 20.0
    rounds = 1 if opts.quick else max(1, opts.rounds // 3)
    per_round: list[dict[str, Any]] = []
    errors: list[str] = []
    for index in range(rounds):
        row = asyncio.run(_round(opts, index, subscribers, rate, seconds))
        errors += row.pop("errors")
        opts.log(f"  round {index + 1}: submit p50 {fmt(row['submit_p50_ms'])} ms, p99 "
                 f"{fmt(row['submit_p99_ms'])} ms; {row['submitted']} jobs, "
                 f"{row['events_per_subscriber']} events to each of {subscribers} "
                 f"subscribers; loop lag max {fmt(row['loop_lag']['max_ms'])} ms")
        per_round.append(row)
    p99 = [r["submit_p99_ms"] for r in per_round]
    result: dict[str, Any] = {
        "question": QUESTION, "command": "python -m benchmarks mixed",
        "params": {"subscribers": subscribers, "rate": rate, "seconds": seconds,
                   "job": {"type": "sleep", "params": {"seconds": 0.05, "steps": 2}},
                   "rounds": rounds},
        "rounds": per_round, "errors": errors[:20], "submit_p99_ms": spread(p99),
        "submit_p50_ms": spread([r["submit_p50_ms"] for r in per_round]),
        "error_count": sum(r["error_count"] for r in per_round),
        "gap_count": sum(r["gap_count"] for r in per_round),
    }
    result["met"] = (not errors and result["submit_p99_ms"]["median"] < TARGET_P99_MS)
    result["headline"] = [
        {"figure": "errors / gaps, 500 subscribers + 20 submissions/s for 60 s",
         "ours": f"{result['error_count']} / {result['gap_count']}", "target": "0 / 0",
         "met": not errors},
        {"figure": "p99 submit latency (ms) under that load",
         "ours": fmt_spread(result["submit_p99_ms"]), "target": f"< {TARGET_P99_MS:g}",
         "met": result["submit_p99_ms"]["median"] < TARGET_P99_MS},
    ]
    return result


async def _round(opts: Options, index: int, subscribers: int, rate: float,
                 seconds: float) -> dict[str, Any]:
    server = start_ours(opts, f"mixed-{index}")
    timeout = seconds + 120
    try:
        url = f"{server.url}/api/v1/events"
        specs = [clients.SubscribeSpec(url, n, timeout, end_result=END_RESULT, job_seq=True)
                 for n in split(subscribers, SUBSCRIBER_PROCESSES)]
        group = ClientGroup(clients.subscribers, specs)
        submitter = ClientGroup(clients.submitter, [clients.SubmitSpec(
            server.url, rate, seconds, {"seconds": 0.05, "steps": 2}, END_RESULT, timeout)])
        try:
            ready = await group.expect("ready", 60)
            await submitter.expect("ready", 60)
            async with session() as http:
                await loop_lag(http, server.url, reset=True)
                cpu = server.cpu_seconds()
                submitter.send(("go", None))
                (submitted,) = await submitter.expect("done", timeout)
                cpu = server.cpu_seconds() - cpu
                lag = await loop_lag(http, server.url, reset=False)
            tally = clients.merge(await group.expect("done", timeout))
        finally:
            group.close()
            submitter.close()
    finally:
        server.stop()
    errors = [f"submitter: {e}" for e in submitted["errors"]] + list(tally["errors"])
    connected = sum(r["connected"] for r in ready)
    if connected != subscribers:
        errors.append(f"only {connected} of {subscribers} subscribers connected")
    if tally["finished"] != subscribers:
        errors.append(f"only {tally['finished']} of {subscribers} subscribers saw the end")
    jobs = submitted["accepted"] + 1
    if tally["completed"] != {jobs: subscribers}:
        errors.append(f"completed jobs seen per subscriber {tally['completed']}, "
                      f"expected {jobs} by each")
    if len(tally["counts"]) != 1:
        errors.append(f"subscribers saw different numbers of events: {tally['counts']}")
    gaps = sum(1 for e in tally["errors"] if " after " in e)
    return {"round": index + 1, "submitted": submitted["submitted"],
            "accepted": submitted["accepted"], "submit_seconds": submitted["seconds"],
            "submit_p50_ms": submitted["p50_ms"], "submit_p99_ms": submitted["p99_ms"],
            "submit_max_ms": submitted["max_ms"],
            "events_per_subscriber": next(iter(tally["counts"]), 0),
            "deliveries": tally["events"], "server_cpu_s": cpu, "loop_lag": lag,
            "error_count": submitted["error_count"] + tally["error_count"],
            "gap_count": gaps, "errors": errors}

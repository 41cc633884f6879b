"""Resume: a client reconnecting with ``Last-Event-ID: 0`` to a job with 100,000 events.
No peer (a broadcast server without storage cannot replay); the target is absolute.

A ``flood`` job stores 100,000 progress events (``--progress-rate 0``; not timed). Each
round, a load-generator process reconnects with ``Last-Event-ID: 0`` and reads the whole
stream with our parser, checking ids 1..E+3 in order; the clock runs from the request to
the terminal event, parsing included (our parser reads about 300,000 events/s on this
machine, so the client is not what limits the figure).
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any

from benchmarks.common import (
    ClientGroup,
    Options,
    fmt,
    fmt_spread,
    session,
    spread,
    start_ours,
    submit,
    wait_state,
)
from sse_jobs.eventstream import EventStreamParser

NAME = "resume"
QUESTION = "a client reconnecting with Last-Event-ID: 0 to a job with 100,000 events"
TARGET = 100_000.0


def run(opts: Options) -> dict[str, Any]:
    events = 5000 if opts.quick else 100_000
    rounds = 1 if opts.quick else max(opts.rounds, 3)
    server = start_ours(opts, "resume", "--progress-rate", "0")
    per_round: list[dict[str, Any]] = []
    errors: list[str] = []
    try:
        job_id = asyncio.run(_make_job(server.url, events))
        for index in range(rounds):
            group = ClientGroup(replay, [ReplaySpec(
                f"{server.url}/api/v1/jobs/{job_id}/events", events + 3, 120)])
            try:
                (row,) = asyncio.run(group.expect("done", 150))
            finally:
                group.close()
            errors += row.pop("errors")
            row["round"] = index + 1
            opts.log(f"  round {index + 1}: {fmt(row['events_per_s'])} events/s replayed")
            per_round.append(row)
    finally:
        server.stop()
    rates = [r["events_per_s"] for r in per_round]
    result: dict[str, Any] = {
        "question": QUESTION, "command": "python -m benchmarks resume",
        "params": {"events": events + 3, "rounds": rounds}, "rounds": per_round,
        "errors": errors[:20], "events_per_s": spread(rates),
    }
    result["met"] = result["events_per_s"]["median"] >= TARGET
    result["headline"] = [{
        "figure": f"events/s replayed from Last-Event-ID: 0, {events + 3:,} events",
        "ours": fmt_spread(result["events_per_s"]), "target": f">= {TARGET:,.0f}/s",
        "met": result["met"]}]
    return result


async def _make_job(url: str, events: int) -> str:
    async with session() as http:
        job = await submit(http, url, "flood", {"events": events})
        await wait_state(http, url, job["id"], {"completed"}, 300, interval=0.1)
        job_id: str = job["id"]
        return job_id


@dataclass
class ReplaySpec:
    url: str
    expect: int
    timeout: float


async def replay(spec: ReplaySpec, conn: Connection) -> None:
    """Read the whole stream from ``Last-Event-ID: 0`` and check every id is there."""
    errors: list[str] = []
    last = count = 0
    parser = EventStreamParser()
    async with session() as http, asyncio.timeout(spec.timeout):
        started = time.perf_counter()
        async with http.get(spec.url, headers={"Last-Event-ID": "0"}) as response:
            if response.status != 200:
                errors.append(f"status {response.status}")
            async for chunk in response.content.iter_any():
                for event in parser.feed(chunk):
                    ident = int(event.id or -1)
                    if ident != last + 1:
                        errors.append(f"id {ident} after {last}")
                    last, count = ident, count + 1
        finished = time.perf_counter()
    if count != spec.expect:
        errors.append(f"replayed {count} events, expected {spec.expect}")
    conn.send(("done", {"events": count, "seconds": finished - started,
                        "events_per_s": count / (finished - started),
                        "errors": errors[:20]}))

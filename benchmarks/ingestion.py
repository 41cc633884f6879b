"""Progress ingestion: two jobs call ``ctx.progress`` as fast as they can with coalescing
off (``--progress-rate 0``); stored events/s, against raw ``sqlite3`` batched inserts of
the same rows, and the event loop's worst stall while it happens.

Ours: two ``flood`` jobs of E events each run at once on the 2 workers; the rate is
2E / (last ``finished_at`` - first ``started_at``), the server's own clock, and every one
of the events must be stored (each job's ``last_event_id`` is E + 3). The server's loop
lag (a task asking to wake every 5 ms, see ``benchmarks.serve``) is read over the same
window. Raw: a separate process inserts the same number of rows of the same shape
(``events`` table of the same schema, same pragmas: WAL, ``synchronous = FULL``) with
``executemany`` in transactions of 1,000 rows; the rows are built before the clock starts,
so this is SQLite's own ceiling for these rows.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from benchmarks.common import (
    ClientGroup,
    Options,
    fmt,
    fmt_spread,
    get_job,
    loop_lag,
    ratios,
    session,
    spread,
    start_ours,
    submit,
    wait_state,
)

NAME = "ingestion"
QUESTION = ("two jobs calling ctx.progress as fast as they can, --progress-rate 0: stored "
            "events/s vs raw sqlite3 batched inserts of the same rows; loop lag")
RAW_BATCH = 1000
TARGET_RATIO = 0.5
TARGET_LAG_MS = 20.0


def run(opts: Options) -> dict[str, Any]:
    events = 5000 if opts.quick else 100_000
    rounds = 1 if opts.quick else opts.rounds
    per_round: list[dict[str, Any]] = []
    errors: list[str] = []
    server = start_ours(opts, "ingestion", "--progress-rate", "0")
    try:
        for index in range(rounds):
            ours = asyncio.run(_ours(server.url, events, 60 if opts.quick else 300))
            errors += ours.pop("errors")
            raw = _raw(opts.workdir / f"ingestion-raw-{index}.db", ours["stored"])
            row = {"round": index + 1, "ours": ours, "raw": raw}
            opts.log(f"  round {index + 1}: ours {fmt(ours['events_per_s'])} events/s, raw "
                     f"{fmt(raw['events_per_s'])} events/s; loop lag max "
                     f"{fmt(ours['loop_lag']['max_ms'])} ms")
            per_round.append(row)
    finally:
        server.stop()
    ours_rate = [r["ours"]["events_per_s"] for r in per_round]
    raw_rate = [r["raw"]["events_per_s"] for r in per_round]
    lag = [r["ours"]["loop_lag"]["max_ms"] for r in per_round]
    result: dict[str, Any] = {
        "question": QUESTION, "command": "python -m benchmarks ingestion",
        "params": {"events_per_job": events, "jobs": 2, "raw_batch": RAW_BATCH,
                   "rounds": rounds},
        "rounds": per_round, "errors": errors[:20],
        "ours_events_per_s": spread(ours_rate), "raw_events_per_s": spread(raw_rate),
        "ratio": spread(ratios(ours_rate, raw_rate)), "loop_lag_max_ms": spread(lag),
    }
    result["rate_met"] = result["ratio"]["median"] >= TARGET_RATIO
    result["lag_met"] = max(lag) <= TARGET_LAG_MS
    result["met"] = result["rate_met"] and result["lag_met"]
    result["headline"] = [
        {"figure": "stored progress events/s, 2 jobs, --progress-rate 0",
         "ours": fmt_spread(result["ours_events_per_s"]),
         "peer": "raw sqlite3 " + fmt_spread(result["raw_events_per_s"]),
         "ratio": fmt_spread(result["ratio"], "x"), "target": f">= {TARGET_RATIO}x",
         "met": result["rate_met"]},
        {"figure": "worst event-loop stall while ingesting (ms)",
         "ours": fmt_spread(result["loop_lag_max_ms"]), "target": f"never > {TARGET_LAG_MS:g}",
         "met": result["lag_met"]},
    ]
    return result


def _at(text: str) -> float:
    return datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC).timestamp()


async def _ours(url: str, events: int, within: float) -> dict[str, Any]:
    async with session() as http:
        await loop_lag(http, url, reset=True)
        jobs = [await submit(http, url, "flood", {"events": events}) for _ in range(2)]
        finished = [await wait_state(http, url, job["id"], {"completed", "failed"}, within,
                                     interval=0.1) for job in jobs]
        lag = await loop_lag(http, url, reset=True)
        finished = [await get_job(http, url, job["id"]) for job in jobs]
    errors = []
    for job in finished:
        if job["state"] != "completed" or job["last_event_id"] != events + 3:
            errors.append(f"job {job['id']} is {job['state']} with last_event_id "
                          f"{job['last_event_id']}, expected completed and {events + 3}")
    seconds = (max(_at(j["finished_at"]) for j in finished)
               - min(_at(j["started_at"]) for j in finished))
    stored = sum(j["last_event_id"] - 3 for j in finished)
    return {"stored": stored, "seconds": seconds, "events_per_s": stored / seconds,
            "loop_lag": lag, "errors": errors}


def _raw(db: Path, rows: int) -> dict[str, Any]:
    group = ClientGroup(raw_inserts, [RawSpec(str(db), rows, RAW_BATCH)])
    try:
        (result,) = asyncio.run(group.expect("done", 300))
    finally:
        group.close()
    return dict(result)


@dataclass
class RawSpec:
    db: str
    rows: int
    batch: int


async def raw_inserts(spec: RawSpec, conn: Connection) -> None:
    """The peer, in its own process: batched ``executemany`` of event rows."""
    conn.send(("done", await asyncio.to_thread(_insert, spec)))


def _insert(spec: RawSpec) -> dict[str, Any]:
    from sse_jobs.events import EventDraft, event_data
    from sse_jobs.states import EventName
    from sse_jobs.store.sql import load_migrations
    from sse_jobs.store.sqlite.store import PRAGMAS, Q

    db = sqlite3.connect(spec.db, isolation_level=None)
    for pragma in PRAGMAS:
        db.execute(pragma)
    for _version, script in load_migrations("sse_jobs.store.sqlite"):
        db.executescript(script)
    now = time.time()
    job = "01M890GNM18S4HXAG82Y76K6K5"
    rows = [(n, job, n, "progress", event_data(job, n, EventDraft(EventName.PROGRESS, now, {
                "progress": 100 * n / spec.rows, "message": f"{n}", "eta": 1.0})))
            for n in range(1, spec.rows + 1)]
    started = time.perf_counter()
    for offset in range(0, len(rows), spec.batch):
        db.execute("BEGIN IMMEDIATE")
        db.executemany(Q["insert_event"], rows[offset:offset + spec.batch])
        db.execute("COMMIT")
    seconds = time.perf_counter() - started
    stored = db.execute("SELECT count(*) FROM events").fetchone()[0]
    db.close()
    return {"stored": stored, "seconds": seconds, "events_per_s": stored / seconds}

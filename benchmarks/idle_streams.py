"""Idle streams: N concurrent SSE connections to one server process; memory per
connection, against the bare aiohttp-sse broadcast server.

Each round starts a fresh server, opens one stream and closes it (warm-up), reads the
server's RSS, opens N streams from several load-generator processes (N / 2,500 of them),
waits until every one has its first bytes and the RSS has settled, reads the RSS again,
and charges the difference to the N connections. Then one event and the end event are
sent, and every stream must receive them: all N were live, not just accepted.

Ours: N subscribers of one running job's stream (``ticker`` waiting for its go file);
each gets the replayed ``queued`` and ``processing``, then ``progress`` and ``completed``.
Bare: N subscribers of ``/events``; each gets one ``progress`` and the ``completed``.

10,000 connections need more open files than the usual soft limit of 1,024: this
benchmark raises RLIMIT_NOFILE to the hard limit (20,000 here) in its own process, which
the servers and the load generators inherit.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from benchmarks import clients
from benchmarks.common import (
    ClientGroup,
    Options,
    Spawned,
    fmt_spread,
    raise_nofile,
    ratios,
    session,
    split,
    spread,
    start_bare,
    start_ours,
    submit,
    wait_state,
)

NAME = "idle_streams"
QUESTION = ("10,000 concurrent idle SSE connections to one process: RSS per connection, "
            "sse-jobs vs bare aiohttp-sse")
PER_PROCESS = 2500
TARGET_RATIO = 1.2
TARGET_BYTES = 20 * 1024
SETTLE = 3.0


def run(opts: Options) -> dict[str, Any]:
    connections = 200 if opts.quick else 10_000
    rounds = 1 if opts.quick else opts.rounds
    soft, _hard = raise_nofile(opts.log)
    if soft < connections + 1000:
        opts.log(f"  only {soft} open files allowed: using {soft - 1000} connections")
        connections = soft - 1000
    processes = max(2, -(-connections // PER_PROCESS))
    per_round: list[dict[str, Any]] = []
    errors: list[str] = []
    for index in range(rounds):
        row: dict[str, Any] = {"round": index + 1}
        for system in ("bare", "ours"):
            figures = asyncio.run(_measure(opts, system, connections, processes, index))
            errors += [f"{system}: {e}" for e in figures.pop("errors")]
            row[system] = figures
        opts.log(f"  round {index + 1}: bytes/connection bare {row['bare']['bytes_per_conn']:.0f}"
                 f", ours {row['ours']['bytes_per_conn']:.0f}; connect time bare "
                 f"{row['bare']['connect_s']:.1f}s, ours {row['ours']['connect_s']:.1f}s")
        per_round.append(row)
    ours = [r["ours"]["bytes_per_conn"] for r in per_round]
    bare = [r["bare"]["bytes_per_conn"] for r in per_round]
    result: dict[str, Any] = {
        "question": QUESTION, "command": "python -m benchmarks idle_streams",
        "params": {"connections": connections, "client_processes": processes,
                   "rounds": rounds, "nofile": soft},
        "rounds": per_round, "errors": errors[:20],
        "ours_bytes_per_conn": spread(ours), "bare_bytes_per_conn": spread(bare),
        "ratio": spread(ratios(ours, bare)),
        "ours_connect_s": spread([r["ours"]["connect_s"] for r in per_round]),
        "bare_connect_s": spread([r["bare"]["connect_s"] for r in per_round]),
    }
    result["met"] = (result["ratio"]["median"] <= TARGET_RATIO
                     and result["ours_bytes_per_conn"]["median"] <= TARGET_BYTES)
    kib = {k: v / 1024 if k != "n" else v for k, v in result["ours_bytes_per_conn"].items()}
    bare_kib = {k: v / 1024 if k != "n" else v for k, v in result["bare_bytes_per_conn"].items()}
    result["headline"] = [{
        "figure": f"RSS per idle connection (KiB), {connections:,} connections",
        "ours": fmt_spread(kib), "peer": "bare " + fmt_spread(bare_kib),
        "ratio": fmt_spread(result["ratio"], "x"), "target": "<= 1.2x and <= 20 KB",
        "met": result["met"]}]
    return result


async def _measure(opts: Options, system: str, connections: int, processes: int,
                   index: int) -> dict[str, Any]:
    timeout = 60.0 if opts.quick else 300.0
    server = (start_bare if system == "bare" else start_ours)(opts, f"idle-{system}-{index}")
    try:
        async with session() as http:
            if system == "bare":
                url, expect = f"{server.url}/events", 2
            else:
                go = opts.workdir / f"idle-go-{index}"
                job = await submit(http, server.url, "ticker",
                                   {"events": 1, "go_file": str(go)})
                await wait_state(http, server.url, job["id"], {"processing"}, 60)
                url, expect = f"{server.url}/api/v1/jobs/{job['id']}/events", 4
            await _warm_up(http, url, server)
        await asyncio.sleep(1.0)
        before = server.rss_kb()
        specs = [clients.SubscribeSpec(url, n, timeout, expect=expect, connect_concurrency=50)
                 for n in split(connections, processes)]
        began = time.monotonic()
        group = ClientGroup(clients.subscribers, specs)
        try:
            ready = await group.expect("ready", timeout)
            connect_s = time.monotonic() - began
            await asyncio.sleep(SETTLE)
            after = server.rss_kb()
            await _end(opts, server, system, index, timeout)
            tally = clients.merge(await group.expect("done", timeout))
        finally:
            group.close()
    finally:
        server.stop()
    connected = sum(r["connected"] for r in ready)
    errors = list(tally["errors"])
    if connected != connections:
        errors.append(f"only {connected} of {connections} connections opened")
    if tally["finished"] != connections:
        errors.append(f"only {tally['finished']} of {connections} streams got every event")
    return {"connections": connected, "rss_before_kb": before, "rss_after_kb": after,
            "bytes_per_conn": (after - before) * 1024 / max(1, connected),
            "connect_s": connect_s, "errors": errors}


async def _warm_up(http: Any, url: str, server: Spawned) -> None:
    """One stream opened and closed, so first-use allocations are not charged to N."""
    async with http.get(url) as response:
        await response.content.readany()
    await asyncio.sleep(0.2)


async def _end(opts: Options, server: Spawned, system: str, index: int,
               within: float) -> None:
    if system == "bare":
        publisher = ClientGroup(clients.publisher,
                                [clients.PublishSpec(server.url, 1, 0.0, within)])
        try:
            await publisher.expect("ready", within)
            publisher.send(("go", None))
            await publisher.expect("done", within)
        finally:
            publisher.close()
    else:
        (opts.workdir / f"idle-go-{index}").touch()

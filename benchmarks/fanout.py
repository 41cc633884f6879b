"""Fan-out: S SSE subscribers on one job (and, separately, on the global stream) while the
job reports E progress events; against a bare aiohttp-sse broadcast server (no storage).

Ours runs with ``--progress-rate 0``, so every event is stored before it is sent. The
source is the ``ticker`` job in a worker process, which waits until every subscriber is
connected, then calls ``ctx.progress`` with its ``time.time()`` in the message. The
peer's source is a publisher process POSTing the same events to ``/publish``.

Two phases per system and round:
- **burst**: the E events as fast as the source can: delivered events/s =
  S x (E + 1) / (last receipt - first publish), the +1 being the terminal event;
- **paced**: 300 events at 20 a second, below saturation: publish-to-receive latency
  (message ``time.time()`` to the chunk's arrival at the subscriber), p50/p99.
Latency under a burst is only the backlog draining, so it is not a latency figure.

A second section puts 100 subscribers on one job's stream, ours against the hand-built
Celery + Redis peer (``peers/celery_app.py``, ``peers/celery_web.py``), same phases. The
peer's source is the same ``ticker`` job run by a Celery worker, publishing each event on
the job's Redis channel; each subscriber's SSE stream in the peer's front holds its own
Redis subscription, so Redis does the fan-out and the front forwards. The job is running
(``processing`` already published) before anyone subscribes, so each peer stream gets the
E progress events and ``completed``, with consecutive ids (its seqs). Nothing is stored:
the peer's figures are those of a stream that cannot resume.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
from pathlib import Path
from typing import Any

import aiohttp

from benchmarks import clients
from benchmarks.common import (
    ClientGroup,
    Options,
    Spawned,
    fmt,
    fmt_spread,
    loop_lag,
    percentile,
    ratios,
    session,
    split,
    spread,
    start_bare,
    start_ours,
    submit,
    wait_state,
)
from benchmarks.peers import celery_stack

NAME = "fanout"
QUESTION = ("1,000 SSE subscribers on one job (and on the global stream), 1,000 progress "
            "events: sse-jobs storing every event vs a bare aiohttp-sse broadcast server; "
            "100 on one job's stream vs Celery + Redis pub/sub")
CLIENT_PROCESSES = 2  # 1 with --quick: each process spends ~1.4 s CPU importing
TARGET_RATE = 0.9
TARGET_P99_RATIO = 1.2
TARGET_P99_MS = 50.0
PACED_EVENTS = 300
SMALL = 100  # subscribers in the section against the Celery peer


def run(opts: Options) -> dict[str, Any]:
    subscribers = 50 if opts.quick else 1000
    small = min(SMALL, subscribers)
    events = 100 if opts.quick else 1000
    # paced: 20 events/s (20,000 deliveries/s with 1,000 subscribers), well below what
    # either server can push on this machine, so the latency is not a backlog draining
    paced_events, interval = (50, 0.02) if opts.quick else (PACED_EVENTS, 0.05)
    rounds = 1 if opts.quick else opts.rounds
    params = {"subscribers": subscribers, "events": events, "paced_events": paced_events,
              "paced_interval_s": interval, "small_subscribers": small,
              "client_processes": _client_processes(opts), "rounds": rounds}
    skipped = celery_stack.unavailable()
    if skipped is not None:
        opts.log(celery_stack.skip_message(skipped))
    phases = [("burst", events, 0.0), ("paced", paced_events, interval)]
    plan = [("", system, subscribers) for system in ("bare", "job", "global")]
    if skipped is None:  # with --quick, ours' 50 subscribers serve both sections
        plan += [("small_", system, small) for system in ("job", "celery")
                 if system == "celery" or small != subscribers]
    per_round: list[dict[str, Any]] = []
    errors: list[str] = []
    with contextlib.ExitStack() as stack:
        servers = _start(opts, stack, with_celery=skipped is None)
        for index in range(rounds):
            row = _round(opts, index, servers, plan, phases, errors)
            if skipped is None and small == subscribers:
                row |= {f"small_job_{phase}": row[f"job_{phase}"] for phase, _, _ in phases}
            _log_round(opts, row)
            per_round.append(row)
    return _summary(per_round, params, errors, skipped)


def _client_processes(opts: Options) -> int:
    return 1 if opts.quick else CLIENT_PROCESSES


def _start(opts: Options, stack: contextlib.ExitStack, *,
           with_celery: bool) -> dict[str, Spawned]:
    """The server each system is measured on, for the whole benchmark; stopped by
    ``stack``, whatever happens."""
    servers = {"bare": start_bare(opts, "fanout-bare")}
    stack.callback(servers["bare"].stop)
    servers["job"] = servers["global"] = start_ours(opts, "fanout-ours",
                                                    "--progress-rate", "0")
    stack.callback(servers["job"].stop)
    if with_celery:
        servers["celery"] = _celery_front(opts, stack)
    return servers


def _round(opts: Options, index: int, servers: dict[str, Spawned],
           plan: list[tuple[str, str, int]], phases: list[tuple[str, int, float]],
           errors: list[str]) -> dict[str, Any]:
    """Every (system, subscribers) of ``plan`` through every phase; errors to ``errors``."""
    row: dict[str, Any] = {"round": index + 1}
    for prefix, system, subscribers in plan:
        for phase, events, interval in phases:
            figures = asyncio.run(fan_out_phase(opts, servers[system], system, subscribers,
                                                events, interval,
                                                f"{index}-{prefix}{system}-{phase}"))
            errors += [f"{prefix}{system}/{phase}: {e}" for e in figures.pop("errors")]
            row[f"{prefix}{system}_{phase}"] = figures
    return row


def _celery_front(opts: Options, stack: contextlib.ExitStack) -> Spawned:
    """The Celery peer for the whole benchmark, warmed up; stopped with ``stack``."""
    peer = stack.enter_context(celery_stack.running(opts, "fanout-celery"))

    async def warm_up() -> None:
        async with session() as http:
            await clients.celery_run(http, peer.url, "noop", {"n": -1}, "completed", 60)

    asyncio.run(warm_up())
    return peer.web


def _log_round(opts: Options, row: dict[str, Any]) -> None:
    opts.log(f"  round {row['round']}: delivered/s bare "
             f"{fmt(row['bare_burst']['delivered_per_s'])}, job "
             f"{fmt(row['job_burst']['delivered_per_s'])}, global "
             f"{fmt(row['global_burst']['delivered_per_s'])}; paced p99 ms bare "
             f"{fmt(row['bare_paced']['p99_ms'])}, job "
             f"{fmt(row['job_paced']['p99_ms'])}, global "
             f"{fmt(row['global_paced']['p99_ms'])}")
    if "small_celery_burst" in row:
        opts.log(f"  round {row['round']}, second section: delivered/s job "
                 f"{fmt(row['small_job_burst']['delivered_per_s'])}, Celery "
                 f"{fmt(row['small_celery_burst']['delivered_per_s'])}; paced p99 ms job "
                 f"{fmt(row['small_job_paced']['p99_ms'])}, Celery "
                 f"{fmt(row['small_celery_paced']['p99_ms'])}")


def _summary(per_round: list[dict[str, Any]], params: dict[str, Any],
             errors: list[str], skipped: str | None) -> dict[str, Any]:
    def figure(key: str, name: str) -> list[float]:
        return [r[key][name] for r in per_round]

    result: dict[str, Any] = {"question": QUESTION, "command": "python -m benchmarks fanout",
                              "params": params, "rounds": per_round, "errors": errors[:20]}
    bare_rate = figure("bare_burst", "delivered_per_s")
    bare_p99 = figure("bare_paced", "p99_ms")
    result["bare"] = {"delivered_per_s": spread(bare_rate), "p99_ms": spread(bare_p99),
                      "p50_ms": spread(figure("bare_paced", "p50_ms"))}
    headline = []
    for system, label in (("job", "one job's stream"), ("global", "the global stream")):
        rate = figure(f"{system}_burst", "delivered_per_s")
        p99 = figure(f"{system}_paced", "p99_ms")
        entry: dict[str, Any] = {
            "delivered_per_s": spread(rate), "rate_ratio": spread(ratios(rate, bare_rate)),
            "p50_ms": spread(figure(f"{system}_paced", "p50_ms")),
            "p99_ms": spread(p99), "p99_ratio": spread(ratios(p99, bare_p99))}
        entry["rate_met"] = entry["rate_ratio"]["median"] >= TARGET_RATE
        entry["p99_met"] = (entry["p99_ratio"]["median"] <= TARGET_P99_RATIO
                            and entry["p99_ms"]["median"] < TARGET_P99_MS)
        result[system] = entry
        headline += [
            {"figure": f"delivered events/s, {params['subscribers']} subscribers on {label}",
             "ours": fmt_spread(entry["delivered_per_s"]),
             "peer": "bare " + fmt_spread(result["bare"]["delivered_per_s"]),
             "ratio": fmt_spread(entry["rate_ratio"], "x"), "target": f">= {TARGET_RATE}x",
             "met": entry["rate_met"]},
            {"figure": f"p99 publish-to-receive latency (ms), paced, on {label}",
             "ours": fmt_spread(entry["p99_ms"]),
             "peer": "bare " + fmt_spread(result["bare"]["p99_ms"]),
             "ratio": fmt_spread(entry["p99_ratio"], "x"),
             "target": f"<= {TARGET_P99_RATIO}x and < {TARGET_P99_MS:g} ms",
             "met": entry["p99_met"]},
        ]
    result["met"] = all(result[s]["rate_met"] and result[s]["p99_met"]
                        for s in ("job", "global"))
    if skipped is None:
        headline += _celery_summary(result, per_round)
    else:
        result["skipped"] = [skipped]
    result["headline"] = headline
    return result


def _celery_summary(result: dict[str, Any], per_round: list[dict[str, Any]]) -> list[Any]:
    """Ours vs the Celery peer, 100 subscribers on one job's stream: figures and rows."""
    subscribers = result["params"]["small_subscribers"]
    def figure(key: str, name: str) -> list[float]:
        return [r[key][name] for r in per_round]

    rows = []
    for name, phase, label in (("delivered_per_s", "burst", "delivered events/s"),
                               ("p99_ms", "paced", "p99 publish-to-receive latency (ms), paced")):
        ours, peer = figure(f"small_job_{phase}", name), figure(f"small_celery_{phase}", name)
        entry = {"ours": spread(ours), "celery": spread(peer),
                 "ratio": spread(ratios(ours, peer))}
        result[f"small_{name}"] = entry
        rows.append({"figure": f"{label}, {subscribers} subscribers on one job's stream",
                     "ours": fmt_spread(entry["ours"]),
                     "peer": "Celery " + fmt_spread(entry["celery"]),
                     "ratio": fmt_spread(entry["ratio"], "x"), "target": "-", "met": None})
    return rows


async def fan_out_phase(opts: Options, server: Spawned, system: str, subscribers: int,
                        events: int, interval: float, tag: str, *,
                        subscribe_to: Spawned | None = None) -> dict[str, Any]:
    """One system, one phase: connect everyone, start the source, wait for every end.
    ``subscribe_to``: another node of the same database, where the subscribers connect."""
    timeout = 60.0 if opts.quick else 180.0
    reader = subscribe_to or server
    async with session() as http:
        publisher = None
        if system == "bare":
            url, expect, end_job = f"{server.url}/events", events + 1, None
            publisher = ClientGroup(clients.publisher, [clients.PublishSpec(
                server.url, events, interval, timeout)])
        else:
            go = opts.workdir / f"go-{tag}"
            url, expect, end_job = await _start_ticker(http, server, reader, system, events,
                                                       interval, go)
        specs = [clients.SubscribeSpec(url, n, timeout, end_job=end_job, expect=expect,
                                       latency=True)
                 for n in split(subscribers, _client_processes(opts))]
        group = ClientGroup(clients.subscribers, specs)
        try:
            ready = await group.expect("ready", timeout)
            if publisher is not None:
                await publisher.expect("ready", timeout)
            connected = sum(r["connected"] for r in ready)
            await loop_lag(http, reader.url, reset=True)
            cpu_before = reader.cpu_seconds()
            if publisher is not None:
                publisher.send(("go", None))
            else:
                go.touch()
            tallies = await group.expect("done", timeout + 30)
            cpu = reader.cpu_seconds() - cpu_before
            lag = await loop_lag(http, reader.url, reset=False)
            if publisher is not None:
                await publisher.expect("done", timeout)
        finally:
            group.close()
            if publisher is not None:
                publisher.close()
    return _figures(clients.merge(tallies), subscribers, events, connected, cpu, lag)


async def _start_ticker(http: aiohttp.ClientSession, server: Spawned, reader: Spawned,
                        system: str, events: int, interval: float,
                        go: Path) -> tuple[str, int, str | None]:
    """Start a ``ticker`` job on ``server`` that waits for ``go``, once it is running: the
    stream to follow (on ``reader``), the events each subscriber must get, and the job
    whose end ends it."""
    params = {"events": events, "interval": interval, "go_file": str(go)}
    if system == "celery":  # nothing to replay: the progress events and the end
        job_id = await clients.celery_run(http, server.url, "ticker", params, "processing", 60)
        return f"{server.url}/jobs/{job_id}/events", events + 1, None
    job = await submit(http, server.url, "ticker", params)
    await wait_state(http, server.url, job["id"], {"processing"}, 60)
    if system == "job":  # replays queued and processing, then live
        return f"{reader.url}/api/v1/jobs/{job['id']}/events", events + 3, None
    # the global stream starts at the next event: the first progress
    return f"{reader.url}/api/v1/events", events + 1, job["id"]


def _figures(tally: dict[str, Any], subscribers: int, events: int, connected: int,
             cpu: float, lag: dict[str, Any]) -> dict[str, Any]:
    live = subscribers * (events + 1)  # progress events and the terminal one
    seconds = tally["last_recv"] - tally["first_publish"]
    latencies = tally["latencies"]
    errors = list(tally["errors"])
    if connected != subscribers:
        errors.append(f"only {connected} of {subscribers} subscribers connected")
    if tally["finished"] != subscribers:
        errors.append(f"only {tally['finished']} of {subscribers} subscribers got every event")
    if len(latencies) != subscribers * events:
        errors.append(f"{len(latencies)} progress deliveries, expected {subscribers * events}")
    return {"delivered_per_s": live / seconds if seconds > 0 else math.nan,
            "seconds": seconds, "deliveries": len(latencies),
            "p50_ms": 1000 * percentile(latencies, 50),
            "p99_ms": 1000 * percentile(latencies, 99),
            "max_ms": 1000 * max(latencies, default=math.nan),
            "server_cpu_s": cpu, "loop_lag_max_ms": lag["max_ms"], "errors": errors}

"""Channels: one job's progress fanned out to S WebSocket subscribers (``/ws``) beside S
SSE subscribers (``/events``) of the same server, in the same run.

The source is the ``ticker`` job (as in ``fanout``), with ``--progress-rate 0`` so every
event is stored before it is sent. The SSE subscribers are ``clients.subscribers``; the
WebSocket subscribers are aiohttp's WebSocket client, and they check the same things:
consecutive ids from 1 (the replay of ``queued`` and ``processing``, then live), and the
terminal event. Per channel and round:
- **burst**: E events as fast as the job reports them: delivered events/s =
  S x (E + 1) / (last receipt - first publish);
- **paced**: 300 events at 20 a second: publish-to-receive latency, p50/p99.
The SSE figure is the peer: a WebSocket costs a frame header where SSE costs a chunk
header, and both channels share the broker, so the target is parity.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any

import aiohttp
import orjson

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
    start_ours,
    submit,
    wait_state,
)

NAME = "channels"
QUESTION = ("1,000 WebSocket subscribers on one job beside 1,000 SSE subscribers, 1,000 "
            "progress events: the WebSocket channel vs the SSE channel of the same server")
CLIENT_PROCESSES = 2
TARGET_RATE = 0.8
TARGET_P99_RATIO = 1.25
PACED_EVENTS = 300
CHANNELS = ("sse", "ws")


def run(opts: Options) -> dict[str, Any]:
    subscribers = 50 if opts.quick else 1000
    events = 100 if opts.quick else 1000
    paced_events, interval = (50, 0.02) if opts.quick else (PACED_EVENTS, 0.05)
    rounds = 1 if opts.quick else opts.rounds
    params = {"subscribers": subscribers, "events": events, "paced_events": paced_events,
              "paced_interval_s": interval, "client_processes": CLIENT_PROCESSES,
              "rounds": rounds}
    ours = start_ours(opts, "channels", "--progress-rate", "0")
    per_round: list[dict[str, Any]] = []
    errors: list[str] = []
    try:
        for index in range(rounds):
            row: dict[str, Any] = {"round": index + 1}
            for channel in CHANNELS:
                for phase, count, pace in (("burst", events, 0.0),
                                           ("paced", paced_events, interval)):
                    figures = asyncio.run(_phase(opts, ours, channel, subscribers, count,
                                                 pace, f"{index}-{channel}-{phase}"))
                    errors += [f"{channel}/{phase}: {e}" for e in figures.pop("errors")]
                    row[f"{channel}_{phase}"] = figures
            opts.log(f"  round {index + 1}: delivered/s sse "
                     f"{fmt(row['sse_burst']['delivered_per_s'])}, ws "
                     f"{fmt(row['ws_burst']['delivered_per_s'])}; paced p99 ms sse "
                     f"{fmt(row['sse_paced']['p99_ms'])}, ws {fmt(row['ws_paced']['p99_ms'])}")
            per_round.append(row)
    finally:
        ours.stop()
    return _summary(per_round, params, errors)


def _summary(per_round: list[dict[str, Any]], params: dict[str, Any],
             errors: list[str]) -> dict[str, Any]:
    def figure(key: str, name: str) -> list[float]:
        return [r[key][name] for r in per_round]

    result: dict[str, Any] = {"question": QUESTION, "command": "python -m benchmarks channels",
                              "params": params, "rounds": per_round, "errors": errors[:20]}
    for channel in CHANNELS:
        result[channel] = {
            "delivered_per_s": spread(figure(f"{channel}_burst", "delivered_per_s")),
            "p50_ms": spread(figure(f"{channel}_paced", "p50_ms")),
            "p99_ms": spread(figure(f"{channel}_paced", "p99_ms")),
            "server_cpu_s": spread(figure(f"{channel}_burst", "server_cpu_s"))}
    rate = ratios(figure("ws_burst", "delivered_per_s"), figure("sse_burst", "delivered_per_s"))
    p99 = ratios(figure("ws_paced", "p99_ms"), figure("sse_paced", "p99_ms"))
    ws = result["ws"]
    ws["rate_ratio"], ws["p99_ratio"] = spread(rate), spread(p99)
    ws["rate_met"] = ws["rate_ratio"]["median"] >= TARGET_RATE
    ws["p99_met"] = ws["p99_ratio"]["median"] <= TARGET_P99_RATIO
    result["met"] = ws["rate_met"] and ws["p99_met"]
    count = params["subscribers"]
    result["headline"] = [
        {"figure": f"delivered events/s, {count} WebSocket subscribers on one job",
         "ours": fmt_spread(ws["delivered_per_s"]),
         "peer": "SSE " + fmt_spread(result["sse"]["delivered_per_s"]),
         "ratio": fmt_spread(ws["rate_ratio"], "x"), "target": f">= {TARGET_RATE}x",
         "met": ws["rate_met"]},
        {"figure": "p99 publish-to-receive latency (ms), paced, WebSocket",
         "ours": fmt_spread(ws["p99_ms"]), "peer": "SSE " + fmt_spread(result["sse"]["p99_ms"]),
         "ratio": fmt_spread(ws["p99_ratio"], "x"), "target": f"<= {TARGET_P99_RATIO}x",
         "met": ws["p99_met"]},
    ]
    return result


async def _phase(opts: Options, server: Spawned, channel: str, subscribers: int, events: int,
                 interval: float, tag: str) -> dict[str, Any]:
    """One channel, one phase: connect everyone, start the job's events, wait for every end."""
    timeout = 60.0 if opts.quick else 180.0
    async with session() as http:
        go = opts.workdir / f"go-{tag}"
        job = await submit(http, server.url, "ticker", {
            "events": events, "interval": interval, "go_file": str(go)})
        await wait_state(http, server.url, job["id"], {"processing"}, 60)
        url = f"{server.url}/api/v1/jobs/{job['id']}/{'events' if channel == 'sse' else 'ws'}"
        target = clients.subscribers if channel == "sse" else ws_subscribers
        specs = [clients.SubscribeSpec(url, n, timeout, expect=events + 3, latency=True)
                 for n in split(subscribers, CLIENT_PROCESSES)]
        group = ClientGroup(target, specs)
        try:
            ready = await group.expect("ready", timeout)
            connected = sum(r["connected"] for r in ready)
            await loop_lag(http, server.url, reset=True)
            cpu_before = server.cpu_seconds()
            go.touch()
            tallies = await group.expect("done", timeout + 30)
            cpu = server.cpu_seconds() - cpu_before
            lag = await loop_lag(http, server.url, reset=False)
        finally:
            group.close()
    return _figures(clients.merge(tallies), subscribers, events, connected, cpu, lag)


def _figures(tally: dict[str, Any], subscribers: int, events: int, connected: int,
             cpu: float, lag: dict[str, Any]) -> dict[str, Any]:
    seconds = tally["last_recv"] - tally["first_publish"]
    latencies = tally["latencies"]
    errors = list(tally["errors"])
    if connected != subscribers:
        errors.append(f"only {connected} of {subscribers} subscribers connected")
    if tally["finished"] != subscribers:
        errors.append(f"only {tally['finished']} of {subscribers} subscribers got every event")
    if len(latencies) != subscribers * events:
        errors.append(f"{len(latencies)} progress deliveries, expected {subscribers * events}")
    live = subscribers * (events + 1)  # progress events and the terminal one
    return {"delivered_per_s": live / seconds if seconds > 0 else math.nan,
            "seconds": seconds, "deliveries": len(latencies),
            "p50_ms": 1000 * percentile(latencies, 50),
            "p99_ms": 1000 * percentile(latencies, 99),
            "max_ms": 1000 * max(latencies, default=math.nan),
            "server_cpu_s": cpu, "loop_lag_max_ms": lag["max_ms"], "errors": errors}


# -- WebSocket subscribers (a load-generator process) -------------------------------------


@dataclass
class _Seen:
    """One socket's correctness: ids 1, 2, 3, ... and the terminal event at the end."""

    last: int = 0
    count: int = 0
    ended: bool = False


async def ws_subscribers(spec: clients.SubscribeSpec, conn: Connection) -> None:
    """``clients.subscribers`` for the WebSocket channel: ``spec.count`` sockets, ``ready``
    once all are open, ``done`` with the same tally once each saw its terminal event."""
    tally = clients.Tally(spec.count)
    deadline = time.monotonic() + spec.timeout
    async with session() as http:
        gate = asyncio.Semaphore(spec.connect_concurrency)
        tasks = [asyncio.create_task(_ws_subscribe(http, spec, tally, gate))
                 for _ in range(spec.count)]
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(tally.all_connected.wait(), deadline - time.monotonic())
        conn.send(("ready", {"connected": tally.connected, "refused": tally.refused}))
        _done, pending = await asyncio.wait(tasks, timeout=max(0.1, deadline - time.monotonic()))
        if pending:
            tally.fail(f"{len(pending)} subscribers had not finished after {spec.timeout}s")
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
    conn.send(("done", tally.result()))


async def _ws_subscribe(http: aiohttp.ClientSession, spec: clients.SubscribeSpec,
                        tally: clients.Tally, gate: asyncio.Semaphore) -> None:
    seen = _Seen()
    await gate.acquire()
    try:
        ws = await http.ws_connect(spec.url, autoping=True)
    except (aiohttp.ClientError, OSError) as exc:
        gate.release()
        tally.settle(False)
        tally.fail(f"{type(exc).__name__}: {exc}")
        return
    gate.release()
    tally.settle(True)
    try:
        async for message in ws:
            if message.type is not aiohttp.WSMsgType.TEXT:
                break
            _take(orjson.loads(message.data), time.time(), seen, spec, tally)
            if seen.ended:
                break
        if not seen.ended:
            tally.fail(f"the server closed the socket ({ws.close_code}) before the end event")
    except (aiohttp.ClientError, OSError, ValueError, KeyError) as exc:
        tally.fail(f"{type(exc).__name__}: {exc}")
    finally:
        await ws.close()
        tally.events += seen.count
        tally.counts[seen.count] += 1
        if seen.ended:
            tally.finished += 1
            if spec.expect is not None and seen.count != spec.expect:
                tally.fail(f"got {seen.count} events, expected {spec.expect}")


def _take(frame: dict[str, Any], now: float, seen: _Seen, spec: clients.SubscribeSpec,
          tally: clients.Tally) -> None:
    if frame["id"] != seen.last + 1:
        tally.fail(f"id {frame['id']} after {seen.last}")
    seen.last = frame["id"]
    seen.count += 1
    name = frame["event"]
    if spec.latency and name == "progress":
        sent = float(frame["data"]["message"].split()[1])
        tally.first_publish = min(tally.first_publish, sent)
        tally.latencies.append(now - sent)
    if name in clients.TERMINAL:
        tally.last_recv = max(tally.last_recv, now)
        seen.ended = True

"""Job types for the benchmarks; the servers load them with ``--jobs benchmarks.jobs``."""

from __future__ import annotations

import os
import time

from pydantic import BaseModel, Field

from sse_jobs import JobContext, job


class NoopParams(BaseModel):
    n: int = 0


@job("noop", params=NoopParams, max_attempts=1, description="Return n at once")
def noop(ctx: JobContext, params: NoopParams) -> int:
    return params.n


class FloodParams(BaseModel):
    events: int = Field(100_000, ge=1, le=10_000_000)


@job("flood", params=FloodParams, max_attempts=1, timeout=3600,
     description="Call ctx.progress as fast as it can, `events` times")
def flood(ctx: JobContext, params: FloodParams) -> int:
    total = params.events
    for i in range(1, total + 1):
        ctx.progress(100 * i / total, f"{i}")
    return total


class TickerParams(BaseModel):
    events: int = Field(1000, ge=1, le=1_000_000)
    interval: float = Field(0.0, ge=0, description="seconds between events; 0 = a burst")
    go_file: str = Field(description="start once this file exists")
    wait: float = Field(600.0, gt=0, description="give up waiting for go_file after this")


@job("ticker", params=TickerParams, max_attempts=1, timeout=3600,
     description="Wait for a go file, then report progress `events` times, each message "
                 "carrying its time.time() for publish-to-receive latency")
def ticker(ctx: JobContext, params: TickerParams) -> int:
    deadline = time.monotonic() + params.wait
    while not os.path.exists(params.go_file):
        if time.monotonic() > deadline:
            raise TimeoutError(f"{params.go_file} did not appear")
        time.sleep(0.001)
    start = time.monotonic()
    for i in range(1, params.events + 1):
        if params.interval:
            pause = start + i * params.interval - time.monotonic()
            if pause > 0:
                time.sleep(pause)
        ctx.progress(100 * i / params.events, f"{i} {time.time():.6f}")
    return params.events

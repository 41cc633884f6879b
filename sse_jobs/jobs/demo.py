"""The built-in demo job types: ``sleep``, ``primes``, ``report`` and ``fail``; the server loads
this module (``sse_jobs.server.load_job_modules``), a job author never needs to."""

from __future__ import annotations

import csv
import math
import random
import time

from pydantic import BaseModel, ConfigDict, Field

from sse_jobs.jobs import JobContext, job


class SleepParams(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    seconds: float = Field(5.0, ge=0, le=86400, description="total time to wait")
    steps: int = Field(10, ge=1, le=100_000, description="progress events along the way")


# Three attempts, as the other demo types: a job running when its server is killed runs
# again after the restart.
@job("sleep", params=SleepParams, timeout=86400, max_attempts=3,
     description="Wait for a while, reporting progress at each step")
def sleep(ctx: JobContext, params: SleepParams) -> dict[str, float]:
    pause = params.seconds / params.steps
    for step in range(1, params.steps + 1):
        time.sleep(pause)
        ctx.progress(100 * step / params.steps, f"step {step}/{params.steps}")
    return {"slept": params.seconds}


SIEVE_CHUNK = 1 << 22


class PrimesParams(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    limit: int = Field(1_000_000, ge=2, le=2_000_000_000, description="count primes below this")
    segments: int = Field(10, ge=1, le=10_000, description="progress events along the way")


@job("primes", params=PrimesParams, timeout=3600, max_attempts=3,
     description="Count the primes below a limit with a segmented sieve (CPU-bound)")
def primes(ctx: JobContext, params: PrimesParams) -> dict[str, int]:
    limit = params.limit
    root = math.isqrt(limit - 1) + 1
    base = _small_primes(root)
    count = sum(1 for p in base if p < limit)
    low = root
    span = max(1, -(-(limit - root) // params.segments))
    for segment in range(1, params.segments + 1):
        high = min(limit, low + span)
        # Sieve in chunks of at most SIEVE_CHUNK numbers to keep memory flat for big limits.
        for chunk_low in range(low, high, SIEVE_CHUNK):
            count += _count_segment(chunk_low, min(high, chunk_low + SIEVE_CHUNK), base)
        low = high
        ctx.progress(100 * segment / params.segments, f"sieved segment {segment}/{params.segments}")
    return {"limit": limit, "count": count}


def _small_primes(bound: int) -> list[int]:
    sieve = bytearray([1]) * bound
    sieve[:2] = b"\x00\x00"[: min(2, bound)]
    for n in range(2, math.isqrt(bound - 1) + 1 if bound > 1 else 0):
        if sieve[n]:
            sieve[n * n :: n] = bytes(len(range(n * n, bound, n)))
    return [n for n in range(bound) if sieve[n]]


def _count_segment(low: int, high: int, base: list[int]) -> int:
    sieve = bytearray([1]) * (high - low)
    for p in base:
        if p * p >= high:
            break
        start = max(p * p, -(-low // p) * p)
        sieve[start - low :: p] = bytes(len(range(start, high, p)))
    return sieve.count(1)


class ReportParams(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    rows: int = Field(1000, ge=1, le=1_000_000, description="rows in the CSV report")
    seed: int = Field(0, description="random seed, so a report can be reproduced")


@job("report", params=ReportParams, timeout=3600, max_attempts=3,
     description="Write a CSV report, downloadable from the job's result link")
def report(ctx: JobContext, params: ReportParams) -> dict[str, object]:
    rng = random.Random(params.seed)  # noqa: S311 - demo data, not security
    total = 0.0
    step = max(1, params.rows // 20)
    with ctx.result_path("report.csv").open("w", newline="") as out:
        writer = csv.writer(out)
        writer.writerow(["row", "region", "amount"])
        for row in range(1, params.rows + 1):
            amount = round(rng.uniform(1, 1000), 2)
            total += amount
            writer.writerow([row, rng.choice(["north", "south", "east", "west"]), amount])
            if row % step == 0 or row == params.rows:
                ctx.progress(100 * row / params.rows, f"wrote {row}/{params.rows} rows")
    return {"rows": params.rows, "total": round(total, 2), "file": "report.csv"}


class FailParams(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    steps: int = Field(3, ge=0, le=1000, description="progress events before it fails")
    seconds: float = Field(1.0, ge=0, le=3600, description="total time before it fails")


@job("fail", params=FailParams, timeout=3600, max_attempts=1,
     description="Report progress, then raise: what a failed job looks like")
def fail(ctx: JobContext, params: FailParams) -> None:
    for step in range(1, params.steps + 1):
        time.sleep(params.seconds / params.steps)
        ctx.progress(100 * step / (params.steps + 1), f"step {step}/{params.steps}")
    raise RuntimeError(f"failed on purpose after {params.steps} steps")

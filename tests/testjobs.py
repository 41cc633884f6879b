"""Job types used by the tests; loaded with ``--jobs testjobs`` (tests/ is on sys.path)."""

from __future__ import annotations

import os
import signal
import sys
import time
from typing import Any

from pydantic import BaseModel, Field

from sse_jobs import JobContext, job


class EchoParams(BaseModel):
    value: Any = None


@job("echo", params=EchoParams, max_attempts=1, description="Return the value it was given")
def echo(ctx: JobContext, params: EchoParams) -> Any:
    return params.value


class FlakyParams(BaseModel):
    failures: int = Field(1, ge=0)


@job("flaky", params=FlakyParams, max_attempts=3, description="Fail the first N attempts")
def flaky(ctx: JobContext, params: FlakyParams) -> dict[str, int]:
    if ctx.attempt <= params.failures:
        raise ValueError(f"attempt {ctx.attempt} fails on purpose")
    return {"attempt": ctx.attempt}


class SpinParams(BaseModel):
    seconds: float = 30.0


@job("spin", params=SpinParams, max_attempts=1, description="Burn CPU, ignoring cancellation")
def spin(ctx: JobContext, params: SpinParams) -> str:
    deadline = time.monotonic() + params.seconds
    while time.monotonic() < deadline:
        sum(range(10_000))
    return "spun"


class PoliteParams(BaseModel):
    seconds: float = 30.0


@job("polite", params=PoliteParams, max_attempts=1, description="Stop when asked to")
def polite(ctx: JobContext, params: PoliteParams) -> str:
    deadline = time.monotonic() + params.seconds
    while time.monotonic() < deadline:
        time.sleep(0.01)
        ctx.progress(50, "waiting to be cancelled")
    return "not cancelled"


@job("single", params=PoliteParams, max_attempts=1, concurrency=1,
     description="As polite, and only one at a time")
def single(ctx: JobContext, params: PoliteParams) -> str:
    return polite(ctx, params)


class CrashParams(BaseModel):
    times: int = Field(1, ge=0, description="attempts that crash before one succeeds")


@job("crash", params=CrashParams, max_attempts=2, description="Kill its own worker process")
def crash(ctx: JobContext, params: CrashParams) -> str:
    if ctx.attempt <= params.times:
        os.kill(os.getpid(), signal.SIGKILL)
    return "survived"


class ChattyParams(BaseModel):
    events: int = Field(100, ge=1)
    pause: float = Field(0.0, ge=0)
    message_size: int = Field(10, ge=0, le=500)


@job("chatty", params=ChattyParams, max_attempts=1, description="Report progress many times")
def chatty(ctx: JobContext, params: ChattyParams) -> dict[str, int]:
    filler = "x" * params.message_size
    for i in range(1, params.events + 1):
        ctx.progress(100 * i / params.events, f"{i} {filler}")
        if params.pause:
            time.sleep(params.pause)
    return {"events": params.events}


class FileParams(BaseModel):
    name: str = "out.txt"
    content: str = "hello"


@job("write_file", params=FileParams, max_attempts=1, description="Write a named result file")
def write_file(ctx: JobContext, params: FileParams) -> dict[str, str]:
    ctx.result_path(params.name).write_text(params.content)
    return {"name": params.name}


class SmuggleParams(BaseModel):
    how: str = "name"  # "name": a result_file set by hand; "link": a symlink out


@job("smuggle", params=SmuggleParams, max_attempts=1,
     description="Point its result at a file outside its result directory")
def smuggle(ctx: JobContext, params: SmuggleParams) -> str:
    if params.how == "link":
        os.symlink("/etc/passwd", ctx.result_path("passwd"))
    else:
        ctx.result_file = "../" * 16 + "etc/passwd"  # past the name check of result_path
    return params.how


class NapParams(BaseModel):
    seconds: float = 30.0


@job("nap", params=NapParams, max_attempts=2,
     description="First attempt reports its worker pid and sleeps; later ones return at once")
def nap(ctx: JobContext, params: NapParams) -> dict[str, int]:
    if ctx.attempt == 1:
        ctx.progress(1, f"pid {os.getpid()}")
        deadline = time.monotonic() + params.seconds
        while time.monotonic() < deadline:
            time.sleep(0.05)
            ctx.progress(1, f"pid {os.getpid()}")
    return {"attempt": ctx.attempt}


class NoParams(BaseModel):
    pass


@job("loaded_modules", params=NoParams, max_attempts=1,
     description="The modules of sse-jobs and its server stack its worker process has loaded")
def loaded_modules(ctx: JobContext, params: NoParams) -> list[str]:
    return sorted(m for m in sys.modules if m.split(".")[0] in {
        "sse_jobs", "aiohttp", "aiosqlite", "prometheus_client", "standardwebhooks"})

"""Shared pieces of the benchmarks: servers as subprocesses, load-generator processes,
loop-lag measurement, statistics, the results table and the JSON file."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import math
import multiprocessing
import os
import resource
import selectors
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Coroutine, Iterator, Sequence
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import aiohttp
import orjson

REPO = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).resolve().parent / "results.json"
STARTUP_TIMEOUT = 60.0
STOP_TIMEOUT = 30.0
CLK_TCK = os.sysconf("SC_CLK_TCK")


@dataclass
class Options:
    """How a benchmark runs: ``quick`` means seconds and small N (the test suite's mode)."""

    quick: bool = False
    rounds: int = 3
    workdir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="sse-bench-")))
    log: Callable[[str], None] = field(default=lambda text: print(text, flush=True))


# -- statistics ---------------------------------------------------------------------------


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0-100) by linear interpolation; NaN for no values."""
    if not values:
        return math.nan
    ordered = sorted(values)
    position = (len(ordered) - 1) * q / 100
    low = math.floor(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def spread(values: Sequence[float]) -> dict[str, float]:
    """Median and min-max of one figure over the rounds."""
    clean = [v for v in values if not math.isnan(v)]
    if not clean:
        return {"median": math.nan, "min": math.nan, "max": math.nan, "n": 0}
    return {"median": statistics.median(clean), "min": min(clean), "max": max(clean),
            "n": len(clean)}


def ratios(ours: Sequence[float], peer: Sequence[float]) -> list[float]:
    """Per-round ratios ours/peer: each round's figures were measured side by side."""
    return [o / p if p else math.nan for o, p in zip(ours, peer, strict=True)]


def fmt(value: float, digits: int = 3) -> str:
    """A number for the table: 3 significant digits, thousands separated."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    return f"{value:.{digits}g}"


def fmt_spread(figure: dict[str, float], unit: str = "") -> str:
    return (f"{fmt(figure['median'])}{unit} ({fmt(figure['min'])}-{fmt(figure['max'])})"
            if figure["n"] > 1 else f"{fmt(figure['median'])}{unit}")


# -- processes ----------------------------------------------------------------------------


@dataclass
class Spawned:
    """A server running as a subprocess: its URL, and its log file."""

    proc: subprocess.Popen[bytes]
    url: str
    log_path: Path

    @property
    def pid(self) -> int:
        return self.proc.pid

    def rss_kb(self) -> int:
        return rss_kb(self.proc.pid)

    def cpu_seconds(self) -> float:
        return cpu_seconds(self.proc.pid)

    def stop(self, timeout: float = STOP_TIMEOUT) -> int | None:
        """SIGTERM (graceful shutdown), then SIGKILL if it has not exited within ``timeout``."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        return self.proc.returncode


def spawn(command: Sequence[str], log_path: Path, *, announce: str | None,
          env: dict[str, str] | None = None) -> Spawned:
    """Start ``command`` from the repository root; with ``announce``, wait for the stdout
    line containing it and take the URL at its end."""
    environment = {**os.environ, "PYTHONPATH": os.pathsep.join(
        filter(None, [str(REPO), os.environ.get("PYTHONPATH", "")])), **(env or {})}
    with log_path.open("wb") as log:
        proc = subprocess.Popen(list(command), cwd=REPO, stdout=subprocess.PIPE, stderr=log,
                                env=environment, start_new_session=True)
    if announce is None:
        return Spawned(proc, "", log_path)
    assert proc.stdout is not None
    deadline = time.monotonic() + STARTUP_TIMEOUT
    with selectors.DefaultSelector() as selector:
        selector.register(proc.stdout, selectors.EVENT_READ)
        while time.monotonic() < deadline:
            if not selector.select(max(0.0, deadline - time.monotonic())):
                break
            line = proc.stdout.readline().decode()
            if not line:
                break
            if announce in line:
                return Spawned(proc, line.split()[-1].strip(), log_path)
    proc.kill()
    proc.wait()
    raise RuntimeError(f"{command[:4]} did not announce itself; see {log_path}:\n"
                       + log_path.read_text()[-2000:])


def start_ours(opts: Options, name: str, *extra: str, workers: int = 2) -> Spawned:
    """Our server, as ``sse-jobs serve`` runs it, plus the loop-lag probe of
    ``benchmarks.serve``; logs at ``warning`` (as the peers do) so logging costs nothing."""
    db = opts.workdir / f"{name}.db"
    command = [sys.executable, "-m", "benchmarks.serve", "--port", "0", "--db", str(db),
               "--workers", str(workers), "--jobs", "benchmarks.jobs",
               "--log-level", "warning", *extra]
    return spawn(command, opts.workdir / f"{name}.log", announce="sse-jobs listening on")


def start_bare(opts: Options, name: str) -> Spawned:
    command = [sys.executable, "-m", "benchmarks.peers.bare_sse", "--port", "0"]
    return spawn(command, opts.workdir / f"{name}.log", announce="bare-sse listening on")


def rss_kb(pid: int) -> int:
    """Resident set size of one process, from /proc (Linux)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for pid {pid}")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of one process (all its threads, not its children)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def raise_nofile(log: Callable[[str], None]) -> tuple[int, int]:
    """Raise this process's open-file limit to its hard limit; children inherit it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        log(f"  raised RLIMIT_NOFILE from {soft} to {hard} (the servers and load "
            "generators inherit it)")
    else:
        log(f"  RLIMIT_NOFILE is already at its hard limit, {hard}")
    return resource.getrlimit(resource.RLIMIT_NOFILE)


# -- load-generator processes -------------------------------------------------------------

ClientMain = Callable[[Any, Connection], Coroutine[Any, Any, None]]


def _client_entry(target: ClientMain, spec: Any, conn: Connection) -> None:
    try:
        asyncio.run(target(spec, conn))
    except BaseException:  # noqa: BLE001 - report any failure to the driver, then exit
        with contextlib.suppress(Exception):
            conn.send(("error", traceback.format_exc()))
    finally:
        conn.close()


class ClientGroup:
    """Load generators in separate processes (``spawn``: nothing inherited from the driver).

    Each runs ``target(spec, conn)`` and talks to the driver over ``conn`` with
    ``(kind, payload)`` messages, e.g. ``("ready", ...)`` then ``("done", result)``.
    """

    def __init__(self, target: ClientMain, specs: Sequence[Any]) -> None:
        context = multiprocessing.get_context("spawn")
        self.conns: list[Connection] = []
        self.procs: list[multiprocessing.process.BaseProcess] = []
        for spec in specs:
            parent, child = context.Pipe()
            proc = context.Process(target=_client_entry, args=(target, spec, child),
                                   daemon=True)
            proc.start()
            child.close()
            self.conns.append(parent)
            self.procs.append(proc)

    async def expect(self, kind: str, within: float) -> list[Any]:
        """Wait for message ``kind`` from every process; raise on an error or after
        ``within`` seconds."""
        return await asyncio.to_thread(self._expect, kind, within)

    def _expect(self, kind: str, timeout: float) -> list[Any]:
        deadline = time.monotonic() + timeout
        payloads = []
        for index, conn in enumerate(self.conns):
            remaining = max(0.0, deadline - time.monotonic())
            try:
                ready = conn.poll(remaining)
            except EOFError:
                ready = True
            if not ready:
                raise TimeoutError(f"load generator {index} sent no {kind!r} within {timeout}s")
            try:
                got, payload = conn.recv()
            except EOFError:
                raise RuntimeError(f"load generator {index} died") from None
            if got == "error":
                raise RuntimeError(f"load generator {index} failed:\n{payload}")
            if got != kind:
                raise RuntimeError(f"load generator {index} sent {got!r}, not {kind!r}")
            payloads.append(payload)
        return payloads

    def send(self, message: Any) -> None:
        for conn in self.conns:
            conn.send(message)

    def close(self) -> None:
        for proc in self.procs:
            proc.join(5)
            if proc.is_alive():
                proc.terminate()
                proc.join(5)
        for conn in self.conns:
            conn.close()


async def recv(conn: Connection, within: float) -> Any:
    """In a load generator: the driver's next message, waiting at most ``within`` s."""
    if not await asyncio.to_thread(conn.poll, within):
        raise TimeoutError(f"no word from the driver within {within}s")
    return conn.recv()


def split(total: int, parts: int) -> list[int]:
    """``total`` as ``parts`` near-equal positive counts."""
    parts = max(1, min(parts, total))
    return [total // parts + (1 if i < total % parts else 0) for i in range(parts)]


# -- talking to our server ----------------------------------------------------------------


def session(connections: int = 0) -> aiohttp.ClientSession:
    return aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=connections),
        timeout=aiohttp.ClientTimeout(total=None, sock_connect=30))


async def submit(http: aiohttp.ClientSession, url: str, type_: str,
                 params: dict[str, Any]) -> dict[str, Any]:
    async with http.post(f"{url}/api/v1/jobs", json={"type": type_, "params": params}) as r:
        if r.status != 202:
            raise RuntimeError(f"submit {type_}: {r.status} {await r.text()}")
        job: dict[str, Any] = await r.json()
        return job


async def get_job(http: aiohttp.ClientSession, url: str, job_id: str) -> dict[str, Any]:
    async with http.get(f"{url}/api/v1/jobs/{job_id}") as r:
        r.raise_for_status()
        job: dict[str, Any] = await r.json()
        return job


async def wait_state(http: aiohttp.ClientSession, url: str, job_id: str,
                     states: set[str], within: float, interval: float = 0.05) -> dict[str, Any]:
    """Poll a job until it is in one of ``states``; at most ``within`` seconds."""
    async with asyncio.timeout(within):
        while True:
            job = await get_job(http, url, job_id)
            if job["state"] in states:
                return job
            await asyncio.sleep(interval)


async def loop_lag(http: aiohttp.ClientSession, url: str, *, reset: bool) -> dict[str, Any]:
    """The server's loop-lag figures since the last reset (``benchmarks.serve`` adds this)."""
    async with http.get(f"{url}/_bench/lag", params={"reset": "1" if reset else "0"}) as r:
        r.raise_for_status()
        lag: dict[str, Any] = await r.json()
        return lag


# -- loop lag ----------------------------------------------------------------------------


class LoopLag:
    """Measures event-loop lag: a task asks to wake every ``interval`` seconds and records
    how late it actually woke. A lag of L ms means some callback held the loop ~L ms."""

    def __init__(self, interval: float = 0.005) -> None:
        self.interval = interval
        self._lags: list[float] = []
        self._task: asyncio.Task[None] | None = None
        self._since = time.monotonic()
        self._gc_began = 0.0
        self._gc_pauses: list[tuple[int, float]] = []  # (generation, seconds)

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="loop-lag")
        gc.callbacks.append(self._on_gc)

    def _on_gc(self, phase: str, info: dict[str, int]) -> None:
        """Garbage-collector pauses hold the loop too; time each one."""
        if phase == "start":
            self._gc_began = time.perf_counter()
        else:
            self._gc_pauses.append((info["generation"], time.perf_counter() - self._gc_began))

    async def stop(self) -> None:
        with contextlib.suppress(ValueError):
            gc.callbacks.remove(self._on_gc)
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            before = loop.time()
            await asyncio.sleep(self.interval)
            self._lags.append(max(0.0, loop.time() - before - self.interval))

    def report(self, *, reset: bool) -> dict[str, Any]:
        lags = self._lags
        result = {"samples": len(lags), "seconds": time.monotonic() - self._since,
                  "max_ms": 1000 * max(lags, default=0.0),
                  "p99_ms": 1000 * percentile(lags, 99) if lags else 0.0,
                  "over_20ms": sum(1 for lag in lags if lag > 0.020),
                  "worst": sorted((round(1000 * lag, 1) for lag in lags), reverse=True)[:10],
                  "gc": {f"gen{g}": {"count": sum(1 for gen, _ in self._gc_pauses if gen == g),
                                     "max_ms": 1000 * max((p for gen, p in self._gc_pauses
                                                           if gen == g), default=0.0)}
                         for g in range(3)}}
        if reset:
            self._gc_pauses = []
            self._lags = []
            self._since = time.monotonic()
        return result


def add_lag_route(app: Any) -> None:
    """Give an aiohttp app ``GET /_bench/lag?reset=1`` and a loop-lag probe for its life."""
    from aiohttp import web

    key = web.AppKey("bench_loop_lag", LoopLag)

    async def lifecycle(app: web.Application) -> Any:
        probe = app[key] = LoopLag()
        probe.start()
        yield
        await probe.stop()

    async def lag(request: web.Request) -> web.Response:
        reset = request.query.get("reset") == "1"
        return web.Response(body=orjson.dumps(request.app[key].report(reset=reset)),
                            content_type="application/json")

    app.cleanup_ctx.insert(0, lifecycle)
    app.router.add_get("/_bench/lag", lag)


# -- results ------------------------------------------------------------------------------


def machine() -> dict[str, Any]:
    """What the numbers were measured on."""
    import platform

    cpu = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    memory_kb = 0
    with contextlib.suppress(OSError, ValueError, IndexError):
        memory_kb = int(Path("/proc/meminfo").read_text().split()[1])
    import aiohttp as aiohttp_module

    return {"cpus": os.cpu_count(), "cpu": cpu, "memory_gib": round(memory_kb / 2**20, 1),
            "kernel": platform.release(), "python": platform.python_version(),
            "aiohttp": aiohttp_module.__version__,
            "nofile": list(resource.getrlimit(resource.RLIMIT_NOFILE)),
            "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}


def write_results(path: Path, results: dict[str, Any]) -> None:
    """Merge this run's benchmarks into the JSON file (other benchmarks' entries stay)."""
    existing: dict[str, Any] = {}
    if path.exists():
        with contextlib.suppress(ValueError):
            existing = orjson.loads(path.read_bytes())
    merged = {"machine": machine(), "benchmarks": {**existing.get("benchmarks", {}),
                                                   **results}}
    path.write_bytes(orjson.dumps(merged, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS)
                     + b"\n")


def table(results: dict[str, Any]) -> str:
    """The headline table: one row per figure with a target."""
    lines = ["| benchmark | figure | ours | peer | ratio (median, min-max) | target | met |",
             "|---|---|---|---|---|---|---|"]
    for name, result in results.items():
        for row in result.get("headline", []):
            met = {True: "yes", False: "**no**", None: "-"}[row.get("met")]
            lines.append(f"| {name} | {row['figure']} | {row.get('ours', '-')} | "
                         f"{row.get('peer', '-')} | {row.get('ratio', '-')} | "
                         f"{row.get('target', '-')} | {met} |")
    return "\n".join(lines)


def checks_passed(result: dict[str, Any]) -> bool:
    return not result.get("errors")


@contextlib.contextmanager
def stopping(*servers: Spawned) -> Iterator[None]:
    try:
        yield
    finally:
        for server in servers:
            server.stop()

"""Load generators. Each runs in its own process (see ``common.ClientGroup``), talks to
127.0.0.1 only, is bounded in count and time, and checks correctness while it measures:
every subscriber must get every event id, in order, with no gap and no duplicate."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import math
import time
import uuid
from array import array
from collections import Counter
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from typing import TYPE_CHECKING, Any, TypeVar

import aiohttp
import orjson

from benchmarks.common import percentile, recv, session, submit
from sse_jobs.eventstream import EventStreamParser

if TYPE_CHECKING:  # the Celery peer's packages are optional (the bench extra)
    import redis.asyncio as aioredis

TERMINAL = frozenset({"completed", "failed", "cancelled"})
MAX_ERRORS = 20
T = TypeVar("T")


# -- subscribers --------------------------------------------------------------------------


@dataclass
class SubscribeSpec:
    """``count`` subscribers of ``url`` in one process."""

    url: str
    count: int
    timeout: float
    headers: dict[str, str] = field(default_factory=dict)
    end_job: str | None = None  # stop at this job's terminal event (None: any terminal)
    expect: int | None = None  # events each subscriber must receive, replay included
    connect_concurrency: int = 100
    latency: bool = False  # progress messages carry "i time.time()"
    job_seq: bool = False  # global stream: also check every job's seq is contiguous
    end_result: int | None = None  # stop at the first completed event with this result


class Tally:
    """What one process's subscribers saw."""

    def __init__(self, count: int) -> None:
        self.count = count
        self.connected = 0
        self.refused = 0
        self.finished = 0
        self.events = 0
        self.counts: Counter[int] = Counter()
        self.completed: Counter[int] = Counter()
        self.errors: list[str] = []
        self.error_count = 0
        self.first_publish = math.inf
        self.last_recv = 0.0
        self.latencies = array("d")
        self.all_connected = asyncio.Event()

    def fail(self, message: str) -> None:
        self.error_count += 1
        if len(self.errors) < MAX_ERRORS:
            self.errors.append(message)

    def settle(self, connected: bool) -> None:
        if connected:
            self.connected += 1
        else:
            self.refused += 1
        if self.connected + self.refused >= self.count:
            self.all_connected.set()

    def result(self) -> dict[str, Any]:
        return {"subscribers": self.count, "connected": self.connected,
                "finished": self.finished, "events": self.events,
                "counts": dict(self.counts), "completed": dict(self.completed),
                "errors": self.errors,
                "error_count": self.error_count, "first_publish": self.first_publish,
                "last_recv": self.last_recv, "latencies": self.latencies.tobytes()}


class _Checker:
    """One stream's correctness: consecutive ids; with ``job_seq``, each job's seq too."""

    def __init__(self, spec: SubscribeSpec, tally: Tally) -> None:
        self.spec, self.tally = spec, tally
        self.last: int | None = None
        self.count = 0
        self.completed = 0
        self.seqs: dict[str, int] = {}
        self.ended = False

    def take(self, event: Any, now: float) -> None:
        tally = self.tally
        ident = int(event.id) if event.id is not None else -1
        if self.last is not None and ident != self.last + 1:
            tally.fail(f"id {ident} after {self.last}")
        self.last = ident
        self.count += 1
        name = event.event
        need_data = self.spec.job_seq or name in TERMINAL or (
            self.spec.latency and name == "progress")
        if not need_data:
            return
        data = orjson.loads(event.data)
        if self.spec.latency and name == "progress":
            sent = float(data["message"].split()[1])
            tally.first_publish = min(tally.first_publish, sent)
            tally.latencies.append(now - sent)
        if self.spec.job_seq:
            job, seq = data["job_id"], data["seq"]
            previous = self.seqs.get(job)
            if previous is not None and seq != previous + 1:
                tally.fail(f"job {job}: seq {seq} after {previous}")
            self.seqs[job] = seq
        if name == "completed":
            self.completed += 1
        if name not in TERMINAL:
            return
        if self.spec.end_result is not None:
            self.ended = name == "completed" and data["result"] == self.spec.end_result
        elif self.spec.end_job in (None, data["job_id"]):
            self.ended = True


async def _subscribe(http: aiohttp.ClientSession, spec: SubscribeSpec, tally: Tally,
                     gate: asyncio.Semaphore) -> None:
    """One subscriber: connect (at most ``connect_concurrency`` at a time), read and check
    every event until the end event."""
    check = _Checker(spec, tally)
    await gate.acquire()
    connecting = True
    try:
        async with http.get(spec.url, headers=spec.headers) as response:
            if response.status != 200:
                tally.fail(f"status {response.status}")
                return
            parser = EventStreamParser()
            async for chunk in response.content.iter_any():
                now = time.time()
                if connecting:
                    connecting = False
                    gate.release()
                    tally.settle(True)
                for event in parser.feed(chunk):
                    check.take(event, now)
                    if check.ended:
                        break
                if check.ended:
                    tally.last_recv = max(tally.last_recv, now)
                    break
            if not check.ended:
                tally.fail("the server ended the stream before the end event")
    except (aiohttp.ClientError, OSError, ValueError, KeyError) as exc:
        tally.fail(f"{type(exc).__name__}: {exc}")
    finally:
        if connecting:
            gate.release()
            tally.settle(False)
        tally.events += check.count
        tally.counts[check.count] += 1
        tally.completed[check.completed] += 1
        if check.ended:
            tally.finished += 1
            if spec.expect is not None and check.count != spec.expect:
                tally.fail(f"got {check.count} events, expected {spec.expect}")


async def subscribers(spec: SubscribeSpec, conn: Connection) -> None:
    """Open ``spec.count`` streams; say ``ready`` once all are open; say ``done`` with the
    tally once every one has seen its end event (or ``spec.timeout`` has passed)."""
    tally = Tally(spec.count)
    deadline = time.monotonic() + spec.timeout
    async with session() as http:
        gate = asyncio.Semaphore(spec.connect_concurrency)
        tasks = [asyncio.create_task(_subscribe(http, spec, tally, gate))
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


def merge(tallies: list[dict[str, Any]]) -> dict[str, Any]:
    """Several processes' tallies as one; latencies in seconds, as an array."""
    latencies = array("d")
    for tally in tallies:
        latencies.frombytes(tally["latencies"])
    counts: Counter[int] = Counter()
    completed: Counter[int] = Counter()
    for tally in tallies:
        counts.update({int(k): v for k, v in tally["counts"].items()})
        completed.update({int(k): v for k, v in tally["completed"].items()})
    errors = [e for tally in tallies for e in tally["errors"]][:MAX_ERRORS]
    return {
        "subscribers": sum(t["subscribers"] for t in tallies),
        "connected": sum(t["connected"] for t in tallies),
        "finished": sum(t["finished"] for t in tallies),
        "events": sum(t["events"] for t in tallies),
        "counts": dict(counts), "completed": dict(completed), "errors": errors,
        "error_count": sum(t["error_count"] for t in tallies),
        "first_publish": min(t["first_publish"] for t in tallies),
        "last_recv": max(t["last_recv"] for t in tallies), "latencies": latencies,
    }


# -- publisher for the bare peer ----------------------------------------------------------


@dataclass
class PublishSpec:
    url: str
    events: int
    interval: float
    timeout: float


async def publisher(spec: PublishSpec, conn: Connection) -> None:
    """POST ``events`` progress events to the bare peer, paced like the ``ticker`` job
    (one in flight; each message carries its ``time.time()``), then a ``completed``."""
    async with session(1) as http:
        conn.send(("ready", None))
        await recv(conn, spec.timeout)
        start = time.monotonic()
        async with asyncio.timeout(spec.timeout):
            for i in range(1, spec.events + 1):
                if spec.interval:
                    pause = start + i * spec.interval - time.monotonic()
                    if pause > 0:
                        await asyncio.sleep(pause)
                data = {"job_id": "bare", "seq": i, "event": "progress", "state": "processing",
                        "at": None, "progress": 100 * i / spec.events,
                        "message": f"{i} {time.time():.6f}", "eta": None}
                await _post(http, f"{spec.url}/publish?event=progress", data)
            await _post(http, f"{spec.url}/publish?event=completed",
                        {"job_id": "bare", "event": "completed", "state": "completed"})
    conn.send(("done", None))


async def _post(http: aiohttp.ClientSession, url: str, data: dict[str, Any]) -> None:
    async with http.post(url, data=orjson.dumps(data)) as response:
        response.raise_for_status()
        await response.read()


# -- job throughput -----------------------------------------------------------------------


@dataclass
class ThroughputSpec:
    url: str
    jobs: int
    concurrency: int
    timeout: float
    batch: int = 1  # jobs a request: above 1, bulk submissions (a JSON array)


async def throughput_ours(spec: ThroughputSpec, conn: Connection) -> None:
    """Follow the global stream, submit ``jobs`` noop jobs over HTTP (``concurrency`` in
    flight), and stop the clock at the last ``completed`` event: events are sent only
    after their commit, so that is when the last job is persisted as completed."""
    async with session() as http, asyncio.timeout(spec.timeout), http.get(
            f"{spec.url}/api/v1/events") as stream:
        parser = EventStreamParser()
        first = await stream.content.readany()
        parser.feed(first)  # the stream is subscribed once its first bytes arrive
        events: dict[str, list[Seen]] = {}
        errors: list[str] = []
        reader = asyncio.create_task(_read_until_completed(stream, parser, spec.jobs, events,
                                                           errors))
        latencies: list[float] = []
        gate = asyncio.Semaphore(spec.concurrency)
        started = time.perf_counter()
        endpoint = f"{spec.url}/api/v1/jobs"
        if spec.batch > 1:
            batches = await asyncio.gather(*(
                _submit_many(http, endpoint, range(first, min(spec.jobs, first + spec.batch)),
                             gate, latencies) for first in range(0, spec.jobs, spec.batch)))
            ids = [job_id for batch in batches for job_id in batch]
        else:
            ids = await asyncio.gather(*(_submit(http, endpoint, i, gate, latencies)
                                         for i in range(spec.jobs)))
        submitted = time.perf_counter()
        finished = await reader
    errors += _check_sequences(ids, events, OURS_SEQUENCE)
    conn.send(("done", {"seconds": finished - started, "submit_seconds": submitted - started,
                        "submit_p50_ms": 1000 * percentile(latencies, 50),
                        "submit_p99_ms": 1000 * percentile(latencies, 99),
                        "jobs": len(set(ids)), "errors": errors[:MAX_ERRORS]}))


async def _submit(http: aiohttp.ClientSession, endpoint: str, n: int,
                  gate: asyncio.Semaphore, latencies: list[float]) -> str:
    """POST one ``noop`` job to ``endpoint`` (ours and the Celery peer take the same body)."""
    async with gate:
        begin = time.perf_counter()
        async with http.post(endpoint, json={"type": "noop", "params": {"n": n}}) as response:
            body = await response.json()
            if response.status != 202:
                raise RuntimeError(f"submit: {response.status} {body}")
        latencies.append(time.perf_counter() - begin)
        job_id: str = body["id"]
        return job_id


async def _submit_many(http: aiohttp.ClientSession, endpoint: str, numbers: range,
                       gate: asyncio.Semaphore, latencies: list[float]) -> list[str]:
    """POST ``noop`` jobs as one bulk submission; every one must be stored (202)."""
    async with gate:
        begin = time.perf_counter()
        body = [{"type": "noop", "params": {"n": n}} for n in numbers]
        async with http.post(endpoint, json=body) as response:
            answer = await response.json()
            if response.status != 207 or any(r["status"] != 202 for r in answer["results"]):
                raise RuntimeError(f"bulk submit: {response.status} {str(answer)[:300]}")
        latencies.append(time.perf_counter() - begin)
        return [result["job"]["id"] for result in answer["results"]]


Seen = tuple[int, str, float]  # an event of a job: seq, name, when it arrived (perf_counter)
OURS_SEQUENCE = [(1, "queued"), (2, "processing"), (3, "completed")]


def _check_sequences(ids: list[str], events: dict[str, list[Seen]],
                     expected: list[tuple[int, str]]) -> list[str]:
    """Every job's events, by seq and name, must be exactly ``expected``."""
    errors = []
    for job_id in ids:
        seen = [(seq, name) for seq, name, _ in events.get(job_id, [])]
        if seen != expected:
            errors.append(f"job {job_id} events {seen}")
    return errors


async def _read_until_completed(stream: aiohttp.ClientResponse, parser: EventStreamParser,
                                jobs: int, events: dict[str, list[Seen]],
                                errors: list[str]) -> float:
    """Read our global stream until ``jobs`` jobs have ended; note when each event came."""
    completed, last = 0, None
    async for chunk in stream.content.iter_any():
        now = time.perf_counter()
        for event in parser.feed(chunk):
            ident = int(event.id or -1)
            if last is not None and ident != last + 1:
                errors.append(f"global id {ident} after {last}")
            last = ident
            data = orjson.loads(event.data)
            events.setdefault(data["job_id"], []).append((data["seq"], event.event, now))
            if event.event == "completed":
                completed += 1
            elif event.event in TERMINAL:
                errors.append(f"job {data['job_id']} {event.event}")
                completed += 1
        if completed >= jobs:
            return time.perf_counter()
    raise RuntimeError("the global stream ended early")


@dataclass
class HueySpec:
    db: str
    jobs: int
    timeout: float


async def throughput_huey(spec: HueySpec, conn: Connection) -> None:
    """Enqueue ``jobs`` noop tasks into SqliteHuey and stop the clock when all their
    results are stored (polled every 5 ms); then check every result."""
    conn.send(("done", await asyncio.to_thread(_huey_run, spec)))


def _huey_run(spec: HueySpec) -> dict[str, Any]:
    import os

    os.environ["BENCH_HUEY_DB"] = spec.db
    from benchmarks.peers import huey_app

    storage = huey_app.huey.storage
    deadline = time.monotonic() + spec.timeout
    started = time.perf_counter()
    handles = [huey_app.noop(n) for n in range(spec.jobs)]
    enqueued = time.perf_counter()
    while storage.result_store_size() < spec.jobs:
        if time.monotonic() > deadline:
            raise TimeoutError(f"Huey stored {storage.result_store_size()} of {spec.jobs}")
        time.sleep(0.005)
    finished = time.perf_counter()
    values = [handle.get() for handle in handles]
    errors = [] if values == list(range(spec.jobs)) else ["Huey results differ from inputs"]
    return {"seconds": finished - started, "submit_seconds": enqueued - started,
            "jobs": spec.jobs, "errors": errors}


# -- steady submissions -------------------------------------------------------------------


@dataclass
class SubmitSpec:
    url: str
    rate: float  # submissions a second, open loop: each on schedule, not after the last
    seconds: float
    params: dict[str, Any]
    end_result: int  # the result of the final noop job that ends the subscribers' streams
    timeout: float


async def submitter(spec: SubmitSpec, conn: Connection) -> None:
    """Submit ``sleep`` jobs at ``rate`` a second for ``seconds``, timing each request;
    then wait until every one has ended and submit the end-marker ``noop`` job."""
    latencies: list[float] = []
    ids: list[str] = []
    errors: list[str] = []
    total = round(spec.rate * spec.seconds)
    async with session() as http:
        conn.send(("ready", None))
        await recv(conn, spec.timeout)
        start, elapsed = time.monotonic(), math.nan
        try:
            await _submit_all(http, spec, total, latencies, errors, ids, start)
            elapsed = time.monotonic() - start
            for job_id in ids:
                while not await _ended(http, spec.url, job_id):
                    if time.monotonic() - start > spec.timeout:
                        raise TimeoutError(f"job {job_id} had not ended after {spec.timeout}s")
                    await asyncio.sleep(0.1)
            await _timed_submit(http, spec.url, "noop", {"n": spec.end_result}, [], errors, [])
        except TimeoutError as exc:
            errors.append(f"timed out: {exc}")
    conn.send(("done", {"submitted": total, "seconds": elapsed,
                        "p50_ms": 1000 * percentile(latencies, 50),
                        "p99_ms": 1000 * percentile(latencies, 99),
                        "max_ms": 1000 * max(latencies, default=math.nan),
                        "accepted": len(latencies), "errors": errors[:MAX_ERRORS],
                        "error_count": len(errors)}))


async def _submit_all(http: aiohttp.ClientSession, spec: SubmitSpec, total: int,
                      latencies: list[float], errors: list[str], ids: list[str],
                      start: float) -> None:
    async with asyncio.timeout(spec.timeout):
        tasks = []
        for i in range(total):
            pause = start + i / spec.rate - time.monotonic()
            if pause > 0:
                await asyncio.sleep(pause)
            tasks.append(asyncio.create_task(_timed_submit(
                http, spec.url, "sleep", spec.params, latencies, errors, ids)))
        await asyncio.gather(*tasks)


async def _timed_submit(http: aiohttp.ClientSession, url: str, type_: str,
                        params: dict[str, Any], latencies: list[float],
                        errors: list[str], ids: list[str]) -> None:
    begin = time.perf_counter()
    try:
        async with http.post(f"{url}/api/v1/jobs",
                             json={"type": type_, "params": params}) as response:
            body = await response.read()
            if response.status != 202:
                errors.append(f"submit: status {response.status} {body[:200]!r}")
                return
            ids.append(orjson.loads(body)["id"])
    except (aiohttp.ClientError, OSError) as exc:
        errors.append(f"submit: {type(exc).__name__}: {exc}")
        return
    latencies.append(time.perf_counter() - begin)


async def _ended(http: aiohttp.ClientSession, url: str, job_id: str) -> bool:
    async with http.get(f"{url}/api/v1/jobs/{job_id}") as response:
        body = await response.json()
        return body["state"] in TERMINAL


# -- the Celery peer ----------------------------------------------------------------------

CELERY_SEQUENCE = [(1, "processing"), (2, "completed")]


async def celery_submit(http: aiohttp.ClientSession, url: str, type_: str,
                        params: dict[str, Any], job_id: str | None = None) -> str:
    """Submit a job to the Celery peer's front; ``job_id`` chooses its id."""
    body = {"type": type_, "params": params, **({"id": job_id} if job_id else {})}
    async with http.post(f"{url}/jobs", json=body) as response:
        if response.status != 202:
            raise RuntimeError(f"submit {type_}: {response.status} {await response.text()}")
        answer = await response.json()
        submitted: str = answer["id"]
        return submitted


async def celery_run(http: aiohttp.ClientSession, url: str, type_: str,
                     params: dict[str, Any], until: str, within: float) -> str:
    """Subscribe to a new job's stream, submit the job, read until its ``until`` event."""
    job_id = uuid.uuid4().hex
    async with asyncio.timeout(within), http.get(f"{url}/jobs/{job_id}/events") as stream:
        parser = EventStreamParser()
        parser.feed(await stream.content.readany())  # the first bytes: subscribed
        await celery_submit(http, url, type_, params, job_id)
        async for chunk in stream.content.iter_any():
            for event in parser.feed(chunk):
                if event.event == until:
                    return job_id
                if event.event in TERMINAL:
                    raise RuntimeError(f"job {job_id} {event.event}: {event.data}")
    raise RuntimeError(f"the stream of job {job_id} ended before {until!r}")


@dataclass
class CeleryThroughputSpec:
    url: str
    redis_url: str
    jobs: int
    concurrency: int
    timeout: float


async def throughput_celery(spec: CeleryThroughputSpec, conn: Connection) -> None:
    """Follow every job's channel, submit ``jobs`` noop jobs to the front over HTTP
    (``concurrency`` in flight) and stop the clock at the last ``completed`` message,
    which the task publishes once its result is stored; then check every job's messages
    and stored result. The front streams one job per connection, so the load generator
    follows all of them with one pattern subscription on Redis (``job:*``): our global
    stream's counterpart, without the SSE hop, which favours the peer."""
    import redis.asyncio as aioredis

    client = aioredis.Redis.from_url(spec.redis_url)
    pubsub = client.pubsub()
    events: dict[str, list[Seen]] = {}
    latencies: list[float] = []
    try:
        async with asyncio.timeout(spec.timeout), session() as http:
            await pubsub.psubscribe("job:*")
            await _confirmed(pubsub, "psubscribe")
            reader = asyncio.create_task(_read_channels(pubsub, spec.jobs, events))
            gate = asyncio.Semaphore(spec.concurrency)
            started = time.perf_counter()
            ids = await asyncio.gather(*(_submit(http, f"{spec.url}/jobs", i, gate, latencies)
                                         for i in range(spec.jobs)))
            submitted = time.perf_counter()
            finished = await reader
            errors = (_check_sequences(ids, events, CELERY_SEQUENCE)
                      + await _check_results(client, ids))
    finally:
        await pubsub.aclose()  # type: ignore[no-untyped-call]  # unannotated in redis-py
        await client.aclose()
    conn.send(("done", {"seconds": finished - started, "submit_seconds": submitted - started,
                        "submit_p50_ms": 1000 * percentile(latencies, 50),
                        "submit_p99_ms": 1000 * percentile(latencies, 99),
                        "jobs": len(set(ids)), "errors": errors[:MAX_ERRORS]}))


async def _confirmed(pubsub: aioredis.client.PubSub, kind: str) -> None:
    """Wait for Redis to confirm a (p)subscribe: from then on no message is missed."""
    while True:
        message = await pubsub.get_message(timeout=10)
        if message is not None and message["type"] == kind:
            return


async def _read_channels(pubsub: aioredis.client.PubSub, jobs: int,
                         events: dict[str, list[Seen]]) -> float:
    completed = 0
    async for message in pubsub.listen():
        if message["type"] != "pmessage":
            continue
        now = time.perf_counter()
        data = orjson.loads(message["data"])
        events.setdefault(data["job_id"], []).append((data["seq"], data["event"], now))
        if data["event"] in TERMINAL:
            completed += 1
            if completed >= jobs:
                return now
    raise RuntimeError("the pattern subscription ended early")


async def _check_results(client: aioredis.Redis, ids: list[str]) -> list[str]:
    """Job ``n``'s result in the backend must be ``SUCCESS``, ``n``."""
    from benchmarks.peers.celery_app import app

    backend = app.backend
    stored = await client.mget([backend.get_key_for_task(job_id) for job_id in ids])
    errors = []
    for n, (job_id, raw) in enumerate(zip(ids, stored, strict=True)):
        meta = backend.decode_result(raw) if raw is not None else {"status": "missing"}
        if meta["status"] != "SUCCESS" or meta["result"] != n:
            errors.append(f"job {job_id}: stored {meta['status']} {meta.get('result')!r}, "
                          f"expected SUCCESS {n}")
    return errors


# -- latency at a steady rate -------------------------------------------------------------

LEAD = 0.25  # the Celery peer: each job's stream is opened this long before it is submitted


@dataclass
class LatencySpec:
    url: str
    rate: float  # submissions a second, open loop: each on schedule, not after the last
    seconds: float
    timeout: float


Timed = tuple[float, float, float]  # submit-to-processing, submit-to-completed, slip (s)


async def latency_ours(spec: LatencySpec, conn: Connection) -> None:
    """Follow the global stream; submit ``noop`` jobs on schedule; time each job's
    ``processing`` and ``completed`` events from the moment its POST was sent."""
    total = round(spec.rate * spec.seconds)
    events: dict[str, list[Seen]] = {}
    errors: list[str] = []
    async with session() as http, http.get(f"{spec.url}/api/v1/events") as stream:
        parser = EventStreamParser()
        parser.feed(await stream.content.readany())  # the first bytes: subscribed
        conn.send(("ready", None))
        await recv(conn, spec.timeout)
        async with asyncio.timeout(spec.timeout):
            reader = asyncio.create_task(_read_until_completed(stream, parser, total, events,
                                                               errors))
            submitted = await _on_schedule(spec, 0.0, functools.partial(_post_ours, http, spec))
            await reader
    ids = [job_id for job_id, _sent, _slip in submitted]
    errors += _check_sequences(ids, events, OURS_SEQUENCE)
    timed = [(events[job_id][1][2] - sent, events[job_id][2][2] - sent, slip)
             for job_id, sent, slip in submitted if len(events.get(job_id, [])) == 3]
    conn.send(("done", _latency_result(total, timed, errors)))


async def _post_ours(http: aiohttp.ClientSession, spec: LatencySpec, n: int,
                     at: float) -> tuple[str, float, float]:
    sent = time.perf_counter()
    job = await submit(http, spec.url, "noop", {"n": n})
    return job["id"], sent, sent - at


async def latency_celery(spec: LatencySpec, conn: Connection) -> None:
    """Submit ``noop`` jobs to the Celery peer on schedule, each with its own stream
    opened ``LEAD`` seconds before (the peer replays nothing, so a stream opened after
    the ``202`` could miss ``processing``); time each job's ``processing`` and
    ``completed`` from the moment its POST was sent."""
    total = round(spec.rate * spec.seconds)
    async with session() as http:
        conn.send(("ready", None))
        await recv(conn, spec.timeout)
        async with asyncio.timeout(spec.timeout):
            outcomes = await _on_schedule(spec, LEAD, functools.partial(_celery_job, http, spec))
    errors = [f"job {n}: events {[name for name, _ in seen]}"
              for n, (seen, _sent, _slip) in enumerate(outcomes)
              if [name for name, _ in seen] != ["processing", "completed"]]
    timed = [(seen[0][1] - sent, seen[1][1] - sent, slip)
             for seen, sent, slip in outcomes if len(seen) == 2]
    conn.send(("done", _latency_result(total, timed, errors)))


async def _celery_job(http: aiohttp.ClientSession, spec: LatencySpec, n: int,
                      at: float) -> tuple[list[tuple[str, float]], float, float]:
    """One job: open its stream, wait for ``at``, submit, read to its end."""
    job_id = uuid.uuid4().hex
    async with http.get(f"{spec.url}/jobs/{job_id}/events") as stream:
        parser = EventStreamParser()
        parser.feed(await stream.content.readany())  # the first bytes: subscribed
        reader = asyncio.create_task(_read_job(stream, parser))
        try:
            await asyncio.sleep(max(0.0, at - time.perf_counter()))
            sent = time.perf_counter()
            await celery_submit(http, spec.url, "noop", {"n": n}, job_id)
            return await reader, sent, sent - at
        finally:
            reader.cancel()


async def _read_job(stream: aiohttp.ClientResponse,
                    parser: EventStreamParser) -> list[tuple[str, float]]:
    """One job's events, each with when it arrived, up to the terminal one."""
    seen = []
    async for chunk in stream.content.iter_any():
        now = time.perf_counter()
        for event in parser.feed(chunk):
            seen.append((event.event, now))
            if event.event in TERMINAL:
                return seen
    return seen


async def _on_schedule(spec: LatencySpec, lead: float,
                       job: Callable[[int, float], Coroutine[Any, Any, T]]) -> list[T]:
    """Start ``job(n, at)`` at ``at - lead``, for ``at`` = start + n / rate: an open loop,
    each job on its schedule whatever the earlier ones are doing."""
    start = time.perf_counter() + lead
    tasks: list[asyncio.Task[T]] = []
    for n in range(round(spec.rate * spec.seconds)):
        at = start + n / spec.rate
        pause = at - lead - time.perf_counter()
        if pause > 0:
            await asyncio.sleep(pause)
        tasks.append(asyncio.create_task(job(n, at)))
    return await asyncio.gather(*tasks)


def _latency_result(total: int, timed: list[Timed], errors: list[str]) -> dict[str, Any]:
    if len(timed) != total:
        errors.append(f"{len(timed)} of {total} jobs were seen processing and completed")
    return {"jobs": total, "timed": len(timed),
            "processing_s": [t[0] for t in timed], "completed_s": [t[1] for t in timed],
            "max_slip_ms": 1000 * max((t[2] for t in timed), default=math.nan),
            "errors": errors[:MAX_ERRORS], "error_count": len(errors)}

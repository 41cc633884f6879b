"""A Python client for the sse-jobs API whose event streams never lose an event.

``Client`` is async (aiohttp); ``SyncClient`` runs it on a private event loop for code that
has none. Answers are the contract's pydantic models (``Job``, ``JobList``, ``JobTypes``).

``Client.events`` follows a job's stream like a careful ``EventSource``: after a drop it
waits the server's ``retry:`` time and reconnects with ``Last-Event-ID``, backs off
exponentially with jitter while the server is down, skips anything it already yielded,
and stops after the terminal event or a ``204``. ``Client.wait`` uses the stream and
falls back to polling when no stream gets through (a proxy that buffers or refuses it).

Exceptions::

    SseJobsClientError
    ├── ApiError               the server answered with an error: status, title, detail, errors
    │   └── StreamUnavailable  a stream request got no event stream (a proxy in the way)
    └── Unreachable            no answer at all: refused, reset, timed out

Every pause is bounded by ``Backoff.max_delay``; bound a whole wait with ``asyncio.timeout``
(``SyncClient`` takes a ``timeout``), which raises the built-in ``TimeoutError``.
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import os
import time
from collections.abc import (
    AsyncGenerator,
    AsyncIterator,
    Awaitable,
    Coroutine,
    Iterator,
    Mapping,
    Sequence,
)
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar, overload
from urllib.parse import urljoin

import aiohttp
import orjson
from pydantic import BaseModel, ValidationError

from sse_jobs import __version__
from sse_jobs.backoff import Backoff
from sse_jobs.eventstream import EventStreamParser, ServerSentEvent
from sse_jobs.models import BulkResult, BulkResults, FieldError, Job, JobList, JobTypes, Problem
from sse_jobs.paths import API
from sse_jobs.states import TERMINAL_STATES

__all__ = [
    "DEFAULT_URL",
    "ApiError",
    "Backoff",
    "Client",
    "JobEvent",
    "ResultBody",
    "SseJobsClientError",
    "StreamUnavailable",
    "SyncClient",
    "Unreachable",
]

DEFAULT_URL = "http://127.0.0.1:8080"
TERMINAL = frozenset(state.value for state in TERMINAL_STATES)
# Answers that say "not now" rather than "no": retried after a pause.
TRANSIENT = frozenset({408, 425, 429, 500, 502, 503, 504})
EVENT_STREAM = "text/event-stream"
_Model = TypeVar("_Model", bound=BaseModel)
_T = TypeVar("_T")


class SseJobsClientError(Exception):
    """Base of every error the client raises."""


class ApiError(SseJobsClientError):
    """The server (or a proxy before it) answered with an error, an RFC 9457 problem."""

    def __init__(self, status: int, title: str, detail: str,
                 errors: Sequence[FieldError] = (), *, retry_after: float | None = None,
                 type: str | None = None) -> None:
        self.status, self.title, self.detail = status, title, detail
        self.errors = list(errors)
        self.retry_after, self.type = retry_after, type
        super().__init__(str(self))

    def __str__(self) -> str:
        fields = "".join(f"; {e.field}: {e.message}" for e in self.errors)
        return f"{self.status} {self.title}: {self.detail}{fields}"


class StreamUnavailable(ApiError):
    """A stream request was answered, but not with an event stream, or with one that
    brought nothing at all (held back by a proxy that buffers)."""


class Unreachable(SseJobsClientError):
    """No answer from the server: connection refused or reset, or a timeout."""

    def __init__(self, url: str, reason: BaseException | str) -> None:
        self.url = url
        if isinstance(reason, str):
            text = reason
        elif isinstance(reason, OSError) and reason.errno:  # "Connection refused", not a repr
            text = os.strerror(reason.errno)
        else:
            text = str(reason) or type(reason).__name__
        self.reason = text
        super().__init__(f"cannot reach the server at {url}: {text}")


@dataclass(frozen=True, slots=True)
class JobEvent:
    """One event of a job's stream: its id (the job's sequence), name and JSON data."""

    id: int
    event: str
    data: dict[str, Any]

    @property
    def terminal(self) -> bool:
        return self.event in TERMINAL

    @property
    def state(self) -> str:
        return str(self.data.get("state", ""))


@dataclass(frozen=True, slots=True)
class ResultBody:
    """A completed job's result as the server sent it: its bytes and content type."""

    body: bytes
    content_type: str

    @property
    def is_json(self) -> bool:
        """Whether it is the job's JSON result rather than a file it wrote."""
        return self.content_type == "application/json"


@dataclass
class _Resume:
    """Where a followed stream stands, across its connections."""

    last: int  # the id of the last event yielded
    retry: float | None = None  # the server's ``retry:``, in seconds
    failures: int = 0  # connections in a row that brought no new event
    floor: float = 0.0  # a Retry-After for the next pause
    done: bool = False
    down_since: float | None = None  # when the server stopped giving a usable answer
    error: BaseException | str | None = None

    def lost(self, error: BaseException | str, *, fresh: bool = False,
             retry_after: float | None = None) -> None:
        """A connection ended before the terminal event; ``fresh``: it brought new events."""
        self.error, self.floor = error, retry_after or 0.0
        self.failures = 0 if fresh else self.failures + 1
        if not fresh and self.down_since is None:
            self.down_since = time.monotonic()

    def reached(self) -> None:
        self.down_since, self.floor = None, 0.0


class Client:
    """An async client of one sse-jobs server: ``async with Client(url) as client: ...``."""

    def __init__(
        self,
        url: str = DEFAULT_URL,
        *,
        token: str | None = None,
        timeout: float = 30.0,
        read_timeout: float = 60.0,
        give_up_after: float = 300.0,
        backoff: Backoff | None = None,
        session: aiohttp.ClientSession | None = None,
    ) -> None:
        """``timeout`` bounds each request; a stream silent for ``read_timeout`` (the server
        pings every 15 s) counts as dropped, and one that sent nothing at all in that time
        as held back by a buffering proxy (``wait`` then polls); following a job raises
        ``Unreachable`` once the server has not answered usefully for ``give_up_after``
        seconds."""
        self.url = url.rstrip("/")
        self.token = token
        self.timeout, self.read_timeout, self.give_up_after = timeout, read_timeout, give_up_after
        self.backoff = backoff or Backoff()
        self._session_given = session
        self._own_session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> Client:
        return self

    async def __aexit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.close()

    async def close(self) -> None:
        """Close the HTTP session this client made (a session passed in is left open)."""
        if self._own_session is not None:
            await self._own_session.close()
            self._own_session = None

    # -- the API ----------------------------------------------------------------------

    async def submit(
        self, type: str, params: Mapping[str, Any] | None = None, *,
        priority: int | None = None,
        timeout: float | None = None,  # noqa: ASYNC109 - the job's own timeout, not this call's
        max_attempts: int | None = None, callback_url: str | None = None,
        callback_events: str | None = None, idempotency_key: str | None = None,
        run_at: datetime | str | None = None, delay: float | None = None,
        tags: Sequence[str] | None = None,
    ) -> Job:
        """Submit a job; with ``idempotency_key`` a retried submission returns the same job.

        ``run_at`` (a datetime with a timezone, or an ISO 8601 string with an offset) or
        ``delay`` (seconds) makes it wait before it starts; ``tags`` label it."""
        optional = {"priority": priority, "timeout": timeout, "max_attempts": max_attempts,
                    "callback_url": callback_url, "callback_events": callback_events,
                    "run_at": run_at.isoformat() if isinstance(run_at, datetime) else run_at,
                    "delay": delay, "tags": None if tags is None else list(tags)}
        body = {"type": type, "params": dict(params or {}),
                **{k: v for k, v in optional.items() if v is not None}}
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else {}
        return await self._model(Job, "POST", "/jobs", json=body, headers=headers)

    async def submit_many(self, jobs: Sequence[Mapping[str, Any]]) -> list[Job | ApiError]:
        """Submit several jobs in one request, stored in one transaction: for each, in
        order, its ``Job``, or the ``ApiError`` that refused it. Each item is a submission
        body (``type``, ``params``, ``priority``, ..., and its own ``idempotency_key``)."""
        async with self._open("POST", self.url + API + "/jobs", json=list(jobs)) as response:
            answer = _parse(BulkResults, response.status, await response.read())
        return [result.job if result.job is not None else _item_error(result)
                for result in answer.results]

    async def rerun(self, job_id: str) -> Job:
        """Run a failed or cancelled job again: the new job (its ``rerun_of`` names the
        old one, which stays as it is)."""
        return await self._model(Job, "POST", f"/jobs/{job_id}/rerun")

    async def get(self, job_id: str) -> Job:
        """The job as it is now."""
        return await self._model(Job, "GET", f"/jobs/{job_id}")

    async def list(
        self, *, state: str | Sequence[str] | None = None, type: str | Sequence[str] | None = None,
        limit: int | None = None, cursor: str | None = None,
        tag: str | Sequence[str] | None = None,
    ) -> JobList:
        """One page of jobs, newest first; pass ``next`` back as ``cursor`` for the next.
        ``tag``: only the jobs that have it (several: all of them)."""
        query = {"state": _csv(state), "type": _csv(type), "tag": _csv(tag),
                 "limit": None if limit is None else str(limit), "cursor": cursor}
        params = {k: v for k, v in query.items() if v}
        return await self._model(JobList, "GET", "/jobs", params=params)

    async def cancel(self, job_id: str) -> Job:
        """Cancel a job: a queued one at once, a running one is asked to stop."""
        return await self._model(Job, "POST", f"/jobs/{job_id}/cancel")

    async def delete(self, job_id: str) -> None:
        """Remove a finished job with its events and result files."""
        async with self._open("DELETE", self.url + API + f"/jobs/{job_id}"):
            pass

    async def job_types(self) -> JobTypes:
        """The registered job types with their params' JSON Schema and defaults."""
        return await self._model(JobTypes, "GET", "/job-types")

    async def result(self, job_id: str) -> ResultBody:
        """A completed job's result in memory, with its content type (JSON or a file's)."""
        async with self._open("GET", self.url + API + f"/jobs/{job_id}/result") as response:
            return ResultBody(await response.read(), response.content_type)

    @overload
    async def download_result(self, job_id: str) -> bytes: ...

    @overload
    async def download_result(self, job_id: str, dest: str | os.PathLike[str]) -> Path: ...

    async def download_result(
        self, job_id: str, dest: str | os.PathLike[str] | None = None
    ) -> bytes | Path:
        """A completed job's result: its bytes, or written to ``dest`` chunk by chunk
        (result files may be large)."""
        async with self._open("GET", self.url + API + f"/jobs/{job_id}/result") as response:
            if dest is None:
                return await response.read()
            path = Path(dest)
            out = await asyncio.to_thread(path.open, "wb")
            try:
                async for chunk in response.content.iter_chunked(1 << 16):
                    await asyncio.to_thread(out.write, chunk)
            finally:
                await asyncio.to_thread(out.close)
            return path

    # -- following a job --------------------------------------------------------------

    async def events(
        self, job: str | Job, *, after: int = 0
    ) -> AsyncGenerator[JobEvent, None]:
        """Each event of ``job`` with an id above ``after``, exactly once and in order, until
        the terminal one; survives dropped connections and server restarts. Bound it with
        ``asyncio.timeout`` when it must end by a deadline."""
        current = job if isinstance(job, Job) else await self.get(job)
        stream = self._follow(current.links.events, after, strict=False)
        async with contextlib.aclosing(stream):
            async for event in stream:
                yield event

    async def wait(self, job: str | Job) -> Job:
        """The job once it has finished. Follows its stream; polls ``GET /jobs/ID`` instead
        when no event stream gets through (a proxy that buffers or refuses it). Bound it
        with ``asyncio.timeout`` when it must end by a deadline."""
        current = job if isinstance(job, Job) else await self.get(job)
        if current.state in TERMINAL:
            return current
        stream = self._follow(current.links.events, current.last_event_id, strict=True)
        with contextlib.suppress(StreamUnavailable):
            async with contextlib.aclosing(stream):
                async for _event in stream:
                    pass
        return await self._poll(current.id)

    async def _follow(
        self, link: str, after: int, *, strict: bool
    ) -> AsyncGenerator[JobEvent, None]:
        """Connect, yield what is new, pause, reconnect with ``Last-Event-ID``, until done.
        ``strict``: raise ``StreamUnavailable`` on any answer that is not a stream."""
        state = _Resume(last=after)
        while True:
            connection = self._connect(urljoin(self.url, link), state, strict=strict)
            async with contextlib.aclosing(connection):
                async for event in connection:
                    yield event
            if state.done:
                return
            await self._pause(state)

    async def _connect(
        self, url: str, state: _Resume, *, strict: bool
    ) -> AsyncGenerator[JobEvent, None]:
        """One connection to the stream: yields events not yet seen; notes in ``state``
        how it ended. ``strict``: a stream that sends nothing, not even the ``retry:``
        the server sends first, raises ``StreamUnavailable`` (something buffers it)."""
        headers = {"Accept": EVENT_STREAM, "Cache-Control": "no-cache"}
        if state.last:
            headers["Last-Event-ID"] = str(state.last)
        fresh = received = False
        try:
            async with self._session().get(url, headers=self._headers(headers),
                                           timeout=self._stream_timeout()) as response:
                if not await self._usable(response, state, strict=strict):
                    return
                parser = EventStreamParser()
                async for chunk in response.content.iter_any():
                    received = True
                    events = parser.feed(chunk)
                    if parser.retry is not None:
                        state.retry = parser.retry / 1000
                    for event in map(_job_event, events):
                        if event.id <= state.last:
                            continue  # already yielded: a replay overlapped
                        state.last, fresh = event.id, True
                        yield event
                        if event.terminal:
                            state.done = True
                            return
            # An end without the terminal event: the server is shutting down, or a proxy.
            state.lost("the stream ended before the job finished", fresh=fresh)
            state.down_since = None
        except (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError, TimeoutError) as exc:
            if strict and not received and isinstance(exc, TimeoutError):
                raise StreamUnavailable(200, "Stream held back", f"nothing arrived on {url} "
                                        f"within {self.read_timeout:g}s: a proxy may be "
                                        "buffering the stream") from None
            state.lost(exc, fresh=fresh)

    async def _usable(self, response: aiohttp.ClientResponse, state: _Resume, *,
                      strict: bool) -> bool:
        """Whether ``response`` is an event stream to read; 204 ends the following."""
        if response.status == 204 or (
                response.status == 200 and response.content_type == EVENT_STREAM):
            state.reached()
            state.done = response.status == 204
            return not state.done
        error = await _api_error(response)
        if response.status in TRANSIENT and not strict:
            state.lost(error, retry_after=error.retry_after)
            return False
        if error.type is not None and 400 <= response.status < 500 and response.status != 429:
            raise error  # the server's own answer, e.g. 404 unknown job or 401
        raise StreamUnavailable(error.status, error.title,
                                f"no event stream at {response.url.path}: {error.detail}",
                                retry_after=error.retry_after)

    async def _pause(self, state: _Resume) -> None:
        """Wait before reconnecting: the server's ``retry:`` after a drop, growing with
        each failure in a row; give up when the server has been gone too long."""
        if state.down_since is not None and (
                time.monotonic() - state.down_since > self.give_up_after):
            raise Unreachable(self.url, state.error or "no usable answer")
        base = state.retry if state.retry is not None else self.backoff.base
        delay = self.backoff.delay(state.failures, base=base,
                                   floor=max(state.retry or 0.0, state.floor))
        await asyncio.sleep(delay)

    async def _poll(self, job_id: str) -> Job:
        """``GET /jobs/ID`` until the job has finished, pausing at least its ``Retry-After``
        and longer after each answer (exponential backoff with jitter)."""
        tries, down_since = 0, None
        while True:
            floor = 0.0
            try:
                job, retry_after = await self._get_with_hint(job_id)
                if job.state in TERMINAL:
                    return job
                floor, down_since = retry_after, None
            except ApiError as exc:
                if exc.status not in TRANSIENT:
                    raise
                floor = exc.retry_after or 0.0
            except Unreachable:
                down_since = down_since or time.monotonic()
                if time.monotonic() - down_since > self.give_up_after:
                    raise
            await asyncio.sleep(self.backoff.delay(tries, floor=floor))
            tries += 1

    async def _get_with_hint(self, job_id: str) -> tuple[Job, float]:
        async with self._open("GET", self.url + API + f"/jobs/{job_id}") as response:
            body = await response.read()
            return _parse(Job, response.status, body), _retry_after(response.headers) or 0.0

    # -- HTTP -------------------------------------------------------------------------

    def _session(self) -> aiohttp.ClientSession:
        if self._session_given is not None:
            return self._session_given
        if self._own_session is None:
            self._own_session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=self.timeout),
                headers={"User-Agent": f"sse-jobs-client/{__version__}"})
        return self._own_session

    def _headers(self, extra: Mapping[str, str] | None = None) -> dict[str, str]:
        headers = dict(extra or {})
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        return headers

    def _stream_timeout(self) -> aiohttp.ClientTimeout:
        return aiohttp.ClientTimeout(total=None, sock_connect=self.timeout,
                                     sock_read=self.read_timeout)

    @contextlib.asynccontextmanager
    async def _open(self, method: str, url: str, *, headers: Mapping[str, str] | None = None,
                    **kwargs: Any) -> AsyncIterator[aiohttp.ClientResponse]:
        """A response with a 2xx status; an error status raises ``ApiError``, no answer
        ``Unreachable``."""
        try:
            async with self._session().request(method, url, headers=self._headers(headers),
                                               **kwargs) as response:
                if response.status >= 400:
                    raise await _api_error(response)
                yield response
        except (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError, TimeoutError) as exc:
            raise Unreachable(self.url, exc) from exc

    async def _model(self, model: type[_Model], method: str, path: str, **kwargs: Any) -> _Model:
        async with self._open(method, self.url + API + path, **kwargs) as response:
            return _parse(model, response.status, await response.read())


class SyncClient:
    """``Client`` for code without an event loop: each call runs on a private loop."""

    def __init__(self, url: str = DEFAULT_URL, **options: Any) -> None:
        self._runner = asyncio.Runner()
        self._client = Client(url, **options)

    def __enter__(self) -> SyncClient:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        """Close the HTTP session and the private event loop."""
        self._runner.run(self._client.close())
        self._runner.close()

    def _run(self, call: Coroutine[Any, Any, _T]) -> _T:
        return self._runner.run(call)

    def submit(self, type: str, params: Mapping[str, Any] | None = None, **fields: Any) -> Job:
        """See ``Client.submit``."""
        return self._run(self._client.submit(type, params, **fields))

    def submit_many(self, jobs: Sequence[Mapping[str, Any]]) -> list[Job | ApiError]:
        """See ``Client.submit_many``."""
        return self._run(self._client.submit_many(jobs))

    def rerun(self, job_id: str) -> Job:
        """See ``Client.rerun``."""
        return self._run(self._client.rerun(job_id))

    def get(self, job_id: str) -> Job:
        """See ``Client.get``."""
        return self._run(self._client.get(job_id))

    def cancel(self, job_id: str) -> Job:
        """See ``Client.cancel``."""
        return self._run(self._client.cancel(job_id))

    def delete(self, job_id: str) -> None:
        """See ``Client.delete``."""
        self._run(self._client.delete(job_id))

    def job_types(self) -> JobTypes:
        """See ``Client.job_types``."""
        return self._run(self._client.job_types())

    def result(self, job_id: str) -> ResultBody:
        """See ``Client.result``."""
        return self._run(self._client.result(job_id))

    @overload
    def download_result(self, job_id: str) -> bytes: ...

    @overload
    def download_result(self, job_id: str, dest: str | os.PathLike[str]) -> Path: ...

    def download_result(self, job_id: str, dest: str | os.PathLike[str] | None = None
                        ) -> bytes | Path:
        """See ``Client.download_result``."""
        if dest is None:
            return self._run(self._client.download_result(job_id))
        return self._run(self._client.download_result(job_id, dest))

    def wait(self, job: str | Job, *, timeout: float | None = None) -> Job:
        """See ``Client.wait``; raises ``TimeoutError`` after ``timeout`` seconds."""
        return self._run(_within(timeout, self._client.wait(job)))

    def events(self, job: str | Job, *, after: int = 0, timeout: float | None = None
               ) -> Iterator[JobEvent]:
        """See ``Client.events``; raises ``TimeoutError`` once ``timeout`` seconds have
        passed. Close the iterator (or exhaust it) to end the stream."""
        deadline = None if timeout is None else time.monotonic() + timeout
        stream = self._client.events(job, after=after)
        try:
            while True:
                left = None if deadline is None else max(0.0, deadline - time.monotonic())
                try:
                    yield self._run(_within(left, anext(stream)))
                except StopAsyncIteration:
                    return
        finally:
            self._run(stream.aclose())

    def list(self, **filters: Any) -> JobList:
        """See ``Client.list``."""
        return self._run(self._client.list(**filters))


async def _within(seconds: float | None, step: Awaitable[_T]) -> _T:
    async with asyncio.timeout(seconds):
        return await step


def _csv(value: str | Sequence[str] | None) -> str | None:
    if value is None or isinstance(value, str):
        return value
    return ",".join(value)


def _job_event(sse: ServerSentEvent) -> JobEvent:
    data = orjson.loads(sse.data)
    seq = int(sse.id) if sse.id and sse.id.isdigit() else int(data.get("seq", 0))
    return JobEvent(id=seq, event=sse.event, data=data)


def _parse(model: type[_Model], status: int, body: bytes) -> _Model:
    try:
        return model.model_validate_json(body)
    except ValidationError as exc:
        raise ApiError(status, "Unexpected Response",
                       f"the answer is not a {model.__name__}: {exc.errors()[0]['msg']}"
                       ) from None


def _item_error(result: BulkResult) -> ApiError:
    problem = result.problem
    if problem is None:
        return ApiError(result.status, "Error", "the server gave no reason")
    return ApiError(result.status, problem.title, problem.detail, problem.errors or (),
                    type=problem.type)


def _retry_after(headers: Mapping[str, str]) -> float | None:
    """``Retry-After`` in seconds: delay-seconds or an HTTP date (RFC 9110 section 10.2.3)."""
    raw = headers.get("Retry-After", "").strip()
    if not raw:
        return None
    if raw.isascii() and raw.isdigit():
        return float(raw)
    try:
        when = email.utils.parsedate_to_datetime(raw)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


async def _api_error(response: aiohttp.ClientResponse) -> ApiError:
    """The error a response stands for: its problem document, or whatever a proxy sent."""
    body = await response.read()
    retry_after = _retry_after(response.headers)
    if response.content_type in ("application/problem+json", "application/json"):
        try:
            problem = Problem.model_validate_json(body)
        except ValidationError:
            pass
        else:
            return ApiError(response.status, problem.title, problem.detail,
                            problem.errors or (), retry_after=retry_after, type=problem.type)
    text = body.decode("utf-8", "replace").strip()[:200] or f"HTTP {response.status}"
    return ApiError(response.status, response.reason or "Error", text, retry_after=retry_after)

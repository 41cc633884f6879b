"""The Celery peer's HTTP front: aiohttp + aiohttp-sse, the hand-built way.

- ``POST /jobs`` with ``{"type": ..., "params": ..., "id": optional}``: validates the
  params with the same pydantic models as sse-jobs, calls ``apply_async`` and answers
  ``202 {"id": ...}``. ``apply_async`` blocks: Celery's Redis result backend
  ``SUBSCRIBE``s to the task's result channel, kombu ``LPUSH``es the message, and the
  dropped ``AsyncResult`` ``UNSUBSCRIBE``s (three loopback commands, seen with
  ``MONITOR``); it is called on the event loop, as most such fronts do. The
  optional ``id`` lets a client subscribe *before* it submits, the only way not to miss
  a fast job's first events over pub/sub (see ``celery_app``).
- ``GET /jobs/{id}/events``: an SSE stream that subscribes to the job's Redis channel
  (one Redis connection per stream; Redis does the fan-out), looks up the result
  backend, and then sends ``retry:`` (so a client's first bytes mean "subscribed"). A
  job that had already ended gets its outcome from the backend, so that its stream ends
  rather than waits forever, but nothing of what it published. Otherwise each message
  is forwarded as an event with ``id: seq`` until ``completed`` or ``failed``. Pings
  every 15 s, as sse-jobs.

What this front does not guarantee compared with sse-jobs is in ``celery_app``'s
docstring: nothing is replayed, a late or reconnecting subscriber silently misses
events, and a ``202`` is only as durable as Redis's memory.

    BENCH_REDIS_URL=redis://127.0.0.1:6379/0 python -m benchmarks.peers.celery_web --port 0
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import sys
import uuid
from typing import Any

import orjson
import redis.asyncio as aioredis
from aiohttp import web
from aiohttp_sse import EventSourceResponse
from redis.exceptions import ConnectionError as RedisConnectionError

from benchmarks.common import add_lag_route
from benchmarks.peers import celery_app

HEARTBEAT = 15.0
SEND_TIMEOUT = 30.0
SUBSCRIBE_TIMEOUT = 10.0
# redis-py's pool allows 100 connections by default, and every stream holds one
MAX_REDIS_CONNECTIONS = 10_000
MAX_STREAM_SECONDS = 3600.0
RETRY = b"retry: 3000\n\n"
REDIS = web.AppKey("redis", aioredis.Redis)


async def submit(request: web.Request) -> web.Response:
    try:
        body = orjson.loads(await request.read())
        _function, model = celery_app.JOBS[body["type"]]
        params = model.model_validate(body.get("params") or {})
    except (ValueError, KeyError, TypeError) as exc:  # pydantic's ValidationError too
        raise web.HTTPBadRequest(text=f"{type(exc).__name__}: {exc}") from None
    job_id = str(body.get("id") or uuid.uuid4().hex)
    celery_app.TASKS[body["type"]].apply_async(kwargs=params.model_dump(), task_id=job_id)
    return web.json_response({"id": job_id}, status=202)


async def events(request: web.Request) -> web.StreamResponse:
    job_id = request.match_info["id"]
    pubsub = request.app[REDIS].pubsub()
    response = EventSourceResponse(ping_interval=HEARTBEAT, send_timeout=SEND_TIMEOUT, sep="\n")
    try:
        await _subscribe(pubsub, celery_app.channel(job_id))
        outcome = await _stored_outcome(request.app[REDIS], job_id)
        await response.prepare(request)
        await response.write(RETRY)
        if outcome is not None:
            await response.send(orjson.dumps(outcome).decode(), event=outcome["event"])
        else:
            await _forward(pubsub, response)
    except (ConnectionResetError, TimeoutError):
        pass
    except RedisConnectionError as exc:
        logging.warning("stream of job %s ended: Redis: %s", job_id, exc)
    finally:
        await pubsub.aclose()  # type: ignore[no-untyped-call]  # unannotated in redis-py
        if response.prepared:
            response.stop_streaming()
            with contextlib.suppress(Exception):
                await response.wait()
    return response


async def _subscribe(pubsub: aioredis.client.PubSub, name: str) -> None:
    """Subscribe and wait for Redis to confirm it: from then on nothing is missed."""
    await pubsub.subscribe(name)
    async with asyncio.timeout(SUBSCRIBE_TIMEOUT):
        while True:
            message = await pubsub.get_message(timeout=SUBSCRIBE_TIMEOUT)
            if message is not None and message["type"] == "subscribe":
                return


async def _stored_outcome(client: aioredis.Redis, job_id: str) -> dict[str, Any] | None:
    """The job's ``completed``/``failed`` event from the result backend, if it has ended."""
    backend = celery_app.app.backend
    raw = await client.get(backend.get_key_for_task(job_id))
    if raw is None:
        return None
    meta = backend.decode_result(raw)
    if meta["status"] == "SUCCESS":
        return {"job_id": job_id, "event": "completed", "state": "completed",
                "result": meta["result"]}
    if meta["status"] == "FAILURE":
        return {"job_id": job_id, "event": "failed", "state": "failed",
                "error": {"type": "exception", "message": str(meta["result"])}}
    return None


async def _forward(pubsub: aioredis.client.PubSub, response: EventSourceResponse) -> None:
    async with asyncio.timeout(MAX_STREAM_SECONDS):
        async for message in pubsub.listen():
            if message["type"] != "message":
                continue
            data: bytes = message["data"]
            head = orjson.loads(data)
            await response.send(data.decode(), id=str(head["seq"]), event=head["event"])
            if head["event"] in celery_app.TERMINAL:
                return


def create_app() -> web.Application:
    app = web.Application()
    app.router.add_post("/jobs", submit)
    app.router.add_get("/jobs/{id}/events", events)
    add_lag_route(app)

    async def redis_client(app: web.Application) -> Any:
        app[REDIS] = aioredis.Redis.from_url(celery_app.REDIS_URL,
                                             max_connections=MAX_REDIS_CONNECTIONS)
        yield
        await app[REDIS].aclose()

    app.cleanup_ctx.append(redis_client)
    return app


async def serve(host: str, port: int) -> None:
    runner = web.AppRunner(create_app(), handler_cancellation=True, shutdown_timeout=5)
    await runner.setup()
    try:
        await web.TCPSite(runner, host, port).start()
        print(f"celery-web listening on http://{host}:{runner.addresses[0][1]}", flush=True)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)
        await stop.wait()
    finally:
        await runner.cleanup()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8091)
    args = parser.parse_args()
    asyncio.run(serve(args.host, args.port))
    return 0


if __name__ == "__main__":
    sys.exit(main())

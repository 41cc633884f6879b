"""The bare peer: an aiohttp + aiohttp-sse broadcast server with no storage.

What one writes when one needs only "push this to every open EventSource": a set of
per-subscriber bounded queues, ``POST /publish`` puts the event into each, and each
subscriber's handler sends its queue with ``EventSourceResponse.send`` (the idiomatic
aiohttp-sse loop, one write per event). Nothing is stored, so there is no resume and no
replay. Like sse-jobs it starts each stream with ``retry:``, pings every 15 s, drops a
subscriber whose queue of 1024 events is full, and serves ``GET /_bench/lag``.

    python -m benchmarks.peers.bare_sse --port 0   # prints "bare-sse listening on http://..."
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys

from aiohttp import web
from aiohttp_sse import EventSourceResponse

from benchmarks.common import add_lag_route

QUEUE_SIZE = 1024
HEARTBEAT = 15.0
SEND_TIMEOUT = 30.0
RETRY = b"retry: 3000\n\n"

Item = tuple[int, str, str]
SUBSCRIBERS: web.AppKey[set[asyncio.Queue[Item | None]]] = web.AppKey("subscribers")
COUNTER: web.AppKey[list[int]] = web.AppKey("counter")


async def events(request: web.Request) -> web.StreamResponse:
    """One subscriber: its queue joins the broadcast set until it leaves or falls behind."""
    queue: asyncio.Queue[Item | None] = asyncio.Queue(QUEUE_SIZE)
    subscribers: set[asyncio.Queue[Item | None]] = request.app[SUBSCRIBERS]
    subscribers.add(queue)
    response = EventSourceResponse(ping_interval=HEARTBEAT, send_timeout=SEND_TIMEOUT, sep="\n")
    try:
        await response.prepare(request)
        await response.write(RETRY)
        while (item := await queue.get()) is not None:
            seq, name, data = item
            await response.send(data, id=str(seq), event=name)
    except (ConnectionResetError, TimeoutError):
        pass
    finally:
        subscribers.discard(queue)
        if response.prepared:
            response.stop_streaming()
            with contextlib.suppress(Exception):
                await response.wait()
    return response


async def publish(request: web.Request) -> web.Response:
    """Broadcast the body (one line of JSON) as one event named ``?event=`` (message)."""
    data = (await request.read()).decode()
    name = request.query.get("event", "message")
    counter = request.app[COUNTER]
    counter[0] += 1
    item = (counter[0], name, data)
    subscribers = request.app[SUBSCRIBERS]
    for queue in list(subscribers):
        try:
            queue.put_nowait(item)
        except asyncio.QueueFull:  # a slow reader: end its stream rather than buffer more
            subscribers.discard(queue)
            queue.get_nowait()
            queue.put_nowait(None)
    return web.json_response({"id": counter[0]})


def create_app() -> web.Application:
    app = web.Application()
    app[SUBSCRIBERS] = set()
    app[COUNTER] = [0]
    app.router.add_get("/events", events)
    app.router.add_post("/publish", publish)
    add_lag_route(app)

    async def close_streams(app: web.Application) -> None:
        for queue in app[SUBSCRIBERS]:
            with contextlib.suppress(asyncio.QueueFull):
                queue.put_nowait(None)

    app.on_shutdown.append(close_streams)
    return app


async def serve(host: str, port: int) -> None:
    runner = web.AppRunner(create_app(), handler_cancellation=True, shutdown_timeout=5)
    await runner.setup()
    try:
        await web.TCPSite(runner, host, port).start()
        print(f"bare-sse listening on http://{host}:{runner.addresses[0][1]}", flush=True)
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
    parser.add_argument("--port", type=int, default=8090)
    args = parser.parse_args()
    asyncio.run(serve(args.host, args.port))
    return 0


if __name__ == "__main__":
    sys.exit(main())

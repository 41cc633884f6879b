"""The client sub-commands of ``sse-jobs``: submit, watch, jobs, show, cancel, rerun, delete,
result, types.

Exit codes: 0 completed (or done), 1 failed (or the server refused the request),
2 usage (also a request the server found invalid: 400, 422), 3 cancelled,
4 cannot reach the server. Errors are one line on stderr, never a traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import sys
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any, Protocol

import orjson
from pydantic import BaseModel
from rich.console import Console
from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn
from yarl import URL

from sse_jobs.client.api import DEFAULT_URL, ApiError, Client, JobEvent, Unreachable
from sse_jobs.models import Job

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_CANCELLED, EXIT_UNREACHABLE = 0, 1, 2, 3, 4
EXIT_INTERRUPTED = 130
EXIT_FOR_STATE = {"completed": EXIT_OK, "failed": EXIT_FAILED, "cancelled": EXIT_CANCELLED}
URL_ENV, TOKEN_ENV = "SSE_JOBS_URL", "SSE_JOBS_TOKEN"
SHOWN_RESULT = 200  # characters of a result shown in a line; the rest is at `result`

Command = Callable[[Client, argparse.Namespace], Awaitable[int]]
if TYPE_CHECKING:
    SubParsers = argparse._SubParsersAction[argparse.ArgumentParser]


# -- the commands -----------------------------------------------------------------------


async def submit(client: Client, args: argparse.Namespace) -> int:
    """Submit a job and print its id, or follow it to the end with ``--follow``."""
    job = await client.submit(args.type, dict(args.params), priority=args.priority,
                              timeout=args.timeout, max_attempts=args.max_attempts,
                              callback_url=args.callback_url,
                              idempotency_key=args.idempotency_key)
    if args.follow:
        return await follow(client, job, args.json)
    print(_json(job) if args.json else job.id, flush=True)
    return EXIT_OK


async def watch(client: Client, args: argparse.Namespace) -> int:
    """Show a job's events from the first to the last; the exit code tells how it ended."""
    return await follow(client, await client.get(args.id), args.json)


async def jobs(client: Client, args: argparse.Namespace) -> int:
    """List jobs, newest first: a table, or one JSON object a line with ``--json``."""
    page = await client.list(state=args.state, type=args.type, limit=args.limit,
                             cursor=args.cursor)
    if args.json:
        for job in page.jobs:
            print(_json(job))
    else:
        print(f"{'ID':<26}  {'TYPE':<12}  {'STATE':<10}  {'DONE':>5}  CREATED")
        for job in page.jobs:
            created = job.created_at.strftime("%Y-%m-%d %H:%M:%S")
            print(f"{job.id:<26}  {job.type:<12}  {job.state:<10}  {job.progress:>4.0f}%  "
                  f"{created}  {job.message or ''}".rstrip())
    if page.next:
        print(f"more: --cursor {page.next}", file=sys.stderr)
    return EXIT_OK


async def show(client: Client, args: argparse.Namespace) -> int:
    """Print a job's resource as one line of JSON, the way the API returns it."""
    print(_json(await client.get(args.id)), flush=True)
    return EXIT_OK


async def cancel(client: Client, args: argparse.Namespace) -> int:
    """Cancel a job: a queued one at once, a running one is asked to stop."""
    job = await client.cancel(args.id)
    word = "cancelled" if job.state == "cancelled" else "cancelling"
    print(_json(job) if args.json else f"{job.id} {word}", flush=True)
    return EXIT_OK


async def rerun(client: Client, args: argparse.Namespace) -> int:
    """Submit a failed or cancelled job again, as a new job: print the new job's id."""
    job = await client.rerun(args.id)
    print(_json(job) if args.json else job.id, flush=True)
    return EXIT_OK


async def delete(client: Client, args: argparse.Namespace) -> int:
    """Remove a finished job with its events and result files."""
    await client.delete(args.id)
    print(f"{args.id} deleted", flush=True)
    return EXIT_OK


async def result(client: Client, args: argparse.Namespace) -> int:
    """Download a completed job's result to ``-o FILE``, or write it to stdout."""
    if args.output is not None:
        await client.download_result(args.id, args.output)
        return EXIT_OK
    found = await client.result(args.id)
    body = found.body
    sys.stdout.buffer.write(body)
    # A JSON result is a line of text, so it ends like one; a file's bytes are left as
    # they are in a pipe (they may be binary), with a newline added only on a terminal.
    if not body.endswith(b"\n") and (found.is_json or sys.stdout.isatty()):
        sys.stdout.buffer.write(b"\n")
    sys.stdout.flush()
    return EXIT_OK


async def types(client: Client, args: argparse.Namespace) -> int:
    """List the job types the server runs, with their parameters."""
    found = await client.job_types()
    for info in found.job_types:
        if args.json:
            print(_json(info))
            continue
        print(f"{info.name}  {info.description}")
        for name, schema in info.params_schema.get("properties", {}).items():
            default = f", default {schema['default']!r}" if "default" in schema else ""
            print(f"    {name} ({schema.get('type', 'any')}{default})  "
                  f"{schema.get('description', '')}".rstrip())
    return EXIT_OK


# -- following a job --------------------------------------------------------------------


async def follow(client: Client, job: Job, as_json: bool) -> int:
    """Show each event of ``job`` until it finishes; the exit code follows its outcome."""
    shown = _renderer(job, as_json)
    outcome: str | None = None
    try:
        async with contextlib.aclosing(client.events(job)) as events:
            async for event in events:
                shown.show(event)
                if event.terminal:
                    outcome = event.state
    finally:
        shown.close()
    if outcome is None:  # a 204: the stream had nothing left to send
        outcome = (await client.get(job.id)).state
    return EXIT_FOR_STATE.get(outcome, EXIT_FAILED)


class Renderer(Protocol):
    def show(self, event: JobEvent) -> None: ...

    def close(self) -> None: ...


def _renderer(job: Job, as_json: bool) -> Renderer:
    if as_json:
        return JsonLines()
    if sys.stdout.isatty():
        return ProgressBar(job)
    print(f"job {job.id} ({job.type})", flush=True)
    return PlainLines()


class JsonLines:
    """One JSON object a line, each the event's data as the stream sent it: for scripts."""

    def show(self, event: JobEvent) -> None:
        print(orjson.dumps(event.data).decode(), flush=True)

    def close(self) -> None:
        pass


class PlainLines:
    """One readable line an event, for logs and pipes."""

    def show(self, event: JobEvent) -> None:
        print(f"{event.id:>4} {event.event:<10} {describe(event)}".rstrip(), flush=True)

    def close(self) -> None:
        pass


class ProgressBar:
    """A live bar with percentage, message and ETA, for a terminal."""

    def __init__(self, job: Job) -> None:
        self.console = Console()
        self.progress = Progress(
            TextColumn("[bold]{task.description}"), BarColumn(), TaskProgressColumn(),
            TextColumn("{task.fields[eta]}"),
            TextColumn("{task.fields[message]}", markup=False),  # a job's text, not markup
            console=self.console)
        self.task = self.progress.add_task(f"{job.type} {job.id}", total=100,
                                           completed=int(job.progress), eta="", message=job.state)
        self.progress.start()

    def show(self, event: JobEvent) -> None:
        data = event.data
        message = (data.get("message") or "") if event.event == "progress" else event.event
        completed = 100.0 if event.event == "completed" else data.get("progress")
        eta = data.get("eta")
        self.progress.update(self.task, completed=completed, message=message,
                             eta=f"ETA {_duration(eta)}" if eta is not None else "")
        if event.terminal:
            self.progress.stop()
            self.console.print(f"{event.event}: {describe(event)}", markup=False)

    def close(self) -> None:
        self.progress.stop()


def describe(event: JobEvent) -> str:
    """What an event says, in a few words."""
    data = event.data
    if event.event == "queued":
        return f"position {data['position']}" if data.get("position") else ""
    if event.event == "processing":
        return f"attempt {data.get('attempt', '?')}"
    if event.event == "progress":
        eta = f" (ETA {_duration(data['eta'])})" if data.get("eta") is not None else ""
        return f"{data.get('progress', 0):.0f}% {data.get('message') or ''}".rstrip() + eta
    if event.event in {"failed", "retrying"}:
        error = data.get("error") or {}
        then = f"; next: attempt {data.get('attempt')} at {data.get('retry_at')}" if (
            event.event == "retrying") else ""
        return f"{error.get('type', 'error')}: {error.get('message', '')}{then}"
    if event.event == "cancelled":
        return str((data.get("error") or {}).get("message") or "")
    if event.event == "completed":
        shown = orjson.dumps(data.get("result")).decode()
        return shown if len(shown) <= SHOWN_RESULT else f"result at {data.get('result_url')}"
    return ""


def _duration(seconds: float) -> str:
    whole = max(0, round(seconds))
    hours, rest = divmod(whole, 3600)
    if hours:
        return f"{hours}h{rest // 60:02d}m"
    return f"{rest // 60}m{rest % 60:02d}s" if rest >= 60 else f"{rest}s"


def _json(model: BaseModel) -> str:
    return orjson.dumps(model.model_dump(mode="json")).decode()


# -- the command line -------------------------------------------------------------------


def parse_param(text: str) -> tuple[str, Any]:
    """``KEY=VALUE`` from ``-p``: the value is JSON when it parses (``5``, ``true``,
    ``{"a": 1}``), else the text itself."""
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, not {text!r}")
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError:
        value = raw
    return key.strip(), value


def add_commands(commands: SubParsers) -> None:
    """Add the client sub-commands to ``sse-jobs``."""
    server, as_json = _server_options(), _json_option()
    add = _adder(commands, server)
    p = add("submit", submit, "submit a job", as_json)
    p.add_argument("type", help="the job type (see `sse-jobs types`)")
    p.add_argument("-p", "--param", dest="params", action="append", default=[],
                   type=parse_param, metavar="KEY=VALUE",
                   help="a parameter; the value is JSON when it parses, else a string")
    p.add_argument("--priority", type=int, help="higher runs first (-1000 to 1000)")
    p.add_argument("--timeout", type=float, help="seconds an attempt may run")
    p.add_argument("--max-attempts", type=int, help="attempts before the job fails")
    p.add_argument("--idempotency-key", help="a retry with the same key returns the same job")
    p.add_argument("--callback-url", metavar="URL",
                   help="the server POSTs a signed webhook here when the job ends")
    p.add_argument("-f", "--follow", action="store_true",
                   help="show progress until the job finishes; the exit code tells how")
    add("watch", watch, "follow a job until it finishes", as_json).add_argument("id")
    p = add("jobs", jobs, "list jobs, newest first", as_json)
    p.add_argument("--state", action="append",
                   help="queued, processing, completed, failed or cancelled (repeatable)")
    p.add_argument("--type", action="append", help="only jobs of this type (repeatable)")
    p.add_argument("--limit", type=int, default=20, help="jobs to show (default 20)")
    p.add_argument("--cursor", help="the next page, as printed after a full one")
    add("show", show, "print a job as JSON").add_argument("id")
    add("cancel", cancel, "cancel a job", as_json).add_argument("id")
    add("rerun", rerun, "submit a failed or cancelled job again", as_json).add_argument("id")
    add("delete", delete, "remove a finished job and its results").add_argument("id")
    p = add("result", result, "download a completed job's result")
    p.add_argument("id")
    p.add_argument("-o", "--output", metavar="FILE", help="write to FILE, not stdout")
    add("types", types, "list the job types and their parameters", as_json)


def _adder(commands: SubParsers, server: argparse.ArgumentParser
           ) -> Callable[..., argparse.ArgumentParser]:
    def add(name: str, command: Command, help_text: str,
            *parents: argparse.ArgumentParser) -> argparse.ArgumentParser:
        parser = commands.add_parser(name, help=help_text, parents=[server, *parents],
                                     description=f"{help_text[0].upper()}{help_text[1:]}.",
                                     epilog=EPILOG,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
        parser.set_defaults(command_function=command)
        return parser

    return add


EPILOG = ("exit codes: 0 completed or done, 1 failed or refused, 2 usage or invalid request, "
          "3 cancelled, 4 cannot reach the server")


def _server_options() -> argparse.ArgumentParser:
    options = argparse.ArgumentParser(add_help=False)
    options.add_argument("--url", help=f"the server [{URL_ENV}; default {DEFAULT_URL}]")
    options.add_argument("--token", help=f"API token, sent as a Bearer token [{TOKEN_ENV}]")
    return options


def _json_option() -> argparse.ArgumentParser:
    options = argparse.ArgumentParser(add_help=False)
    options.add_argument("--json", action="store_true", help="JSON out, one object a line")
    return options


def run(args: argparse.Namespace, environ: Mapping[str, str]) -> int:
    """Run the client sub-command in ``args``; failures become one line on stderr and the
    exit code the module docstring lists."""
    url = args.url or environ.get(URL_ENV) or DEFAULT_URL
    if not _http_url(url):
        return _fail(f"not an http(s) URL: {url!r}", EXIT_USAGE)
    token = args.token or environ.get(TOKEN_ENV) or None
    try:
        return asyncio.run(_call(args.command_function, args, url, token))
    except Unreachable as exc:
        return _fail(str(exc), EXIT_UNREACHABLE)
    except ApiError as exc:
        return _fail(str(exc), EXIT_USAGE if exc.status in {400, 422} else EXIT_FAILED)
    except BrokenPipeError:  # e.g. `| head -1`: the reader has all it wanted
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_FAILED
    except OSError as exc:  # e.g. -o FILE in a directory that does not exist
        return _fail(str(exc), EXIT_FAILED)
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED


async def _call(command: Command, args: argparse.Namespace, url: str, token: str | None) -> int:
    async with Client(url, token=token) as client:
        return await command(client, args)


def _http_url(text: str) -> bool:
    try:
        url = URL(text)
    except ValueError:
        return False
    return url.scheme in {"http", "https"} and bool(url.host)


def _fail(message: str, code: int) -> int:
    print(f"sse-jobs: {message}", file=sys.stderr)
    return code

"""The ``sse-jobs`` command."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from sse_jobs import __version__, config
from sse_jobs.client import commands as client_commands


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="sse-jobs", description="Long-running requests as jobs with live SSE progress.")
    parser.add_argument("--version", action="version", version=f"sse-jobs {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    config.build_parser(commands.add_parser(
        "serve", help="run the server (an API node)", description="Run the sse-jobs server: "
        "the API, and a pool of workers unless --workers 0."))
    config.build_parser(commands.add_parser(
        "worker", help="run a worker node (PostgreSQL)", description="Run jobs for the API "
        "nodes sharing a PostgreSQL database (--db postgresql://...): no HTTP."))
    client_commands.add_commands(commands)
    args = parser.parse_args(argv)
    if args.command in {"serve", "worker"}:
        from sse_jobs import server  # the client sub-commands need none of the server

        settings = config.settings_from(args, environ=_environ())
        return server.run(settings) if args.command == "serve" else server.run_worker(settings)
    return client_commands.run(args, _environ())


def _environ() -> dict[str, str]:
    import os

    return dict(os.environ)


if __name__ == "__main__":
    sys.exit(main())

"""The ``sse-jobs`` command."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from sse_jobs import config
from sse_jobs.client import commands as client_commands


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="sse-jobs", description="Long-running requests as jobs with live SSE progress.")
    commands = parser.add_subparsers(dest="command", required=True)
    config.build_parser(commands.add_parser(
        "serve", help="run the server", description="Run the sse-jobs server."))
    client_commands.add_commands(commands)
    args = parser.parse_args(argv)
    if args.command == "serve":
        from sse_jobs import server  # the client sub-commands need none of the server

        return server.run(config.settings_from(args, environ=_environ()))
    return client_commands.run(args, _environ())


def _environ() -> dict[str, str]:
    import os

    return dict(os.environ)


if __name__ == "__main__":
    sys.exit(main())

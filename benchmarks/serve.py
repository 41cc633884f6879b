"""``sse-jobs serve`` with a loop-lag probe: ``python -m benchmarks.serve [serve flags]``.

Exactly the product's server (``sse_jobs.server.run``, as ``sse-jobs serve`` runs it),
except that the application also gets ``GET /_bench/lag``, served by a task that asks to
wake every 5 ms and records how late it woke.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from aiohttp import web

from benchmarks.common import add_lag_route
from sse_jobs import server
from sse_jobs.config import Settings, load_settings
from sse_jobs.web import create_app


def with_lag_probe(settings: Settings) -> web.Application:
    app = create_app(settings)
    add_lag_route(app)
    return app


def main(argv: Sequence[str] | None = None) -> int:
    settings = load_settings(sys.argv[1:] if argv is None else argv)
    return server.run(settings, with_lag_probe)


if __name__ == "__main__":
    sys.exit(main())

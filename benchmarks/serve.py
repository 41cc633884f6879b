"""``sse-jobs serve`` with a loop-lag probe: ``python -m benchmarks.serve [serve flags]``.

Exactly the product's command (``sse_jobs.cli.main(["serve", ...])``), except that the
application also gets ``GET /_bench/lag``, served by a task that asks to wake every 5 ms
and records how late it woke. The product itself is not changed.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any

from benchmarks.common import add_lag_route
from sse_jobs import cli, server


def main(argv: Sequence[str] | None = None) -> int:
    make_app = server.create_app

    def create_app(settings: Any) -> Any:
        app = make_app(settings)
        add_lag_route(app)
        return app

    server.create_app = create_app  # type: ignore[assignment]
    return cli.main(["serve", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    sys.exit(main())

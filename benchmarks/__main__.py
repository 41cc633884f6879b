"""``python -m benchmarks all|NAME... [--quick] [--rounds N] [--out FILE]``.

Runs the benchmarks from the repository root, prints the headline table and writes the
figures as JSON (``benchmarks/results.json`` for a full run; a ``--quick`` run writes
only where ``--out`` says, so the smoke run of the test suite leaves the table alone).
Exits 1 when a correctness check failed; a missed performance target is reported, not
an error.
"""

from __future__ import annotations

import argparse
import importlib
import shutil
import sys
import time
from pathlib import Path
from typing import Any

from benchmarks.common import RESULTS, Options, checks_passed, table, write_results

NAMES = ["throughput", "latency", "fanout", "channels", "idle_streams", "ingestion", "resume",
         "mixed", "scaleout"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    parser.add_argument("names", nargs="+", metavar="NAME", choices=["all", *NAMES],
                        help="all, or one or more of: " + ", ".join(NAMES))
    parser.add_argument("--quick", action="store_true",
                        help="seconds and small N: a smoke run that checks correctness only")
    parser.add_argument("--rounds", type=int, default=3, help="rounds per benchmark (3)")
    parser.add_argument("--out", type=Path, default=None,
                        help=f"JSON file to write (default: {RESULTS} unless --quick)")
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    args = parser.parse_args(argv)
    names = NAMES if "all" in args.names else list(dict.fromkeys(args.names))
    opts = Options(quick=args.quick, rounds=max(1, args.rounds))
    results: dict[str, Any] = {}
    failed = []
    try:
        for name in names:
            module = importlib.import_module(f"benchmarks.{name}")
            opts.log(f"== {name}: {module.QUESTION}")
            began = time.monotonic()
            result = module.run(opts)
            result["wall_seconds"] = round(time.monotonic() - began, 1)
            result["quick"] = opts.quick
            results[name] = result
            if not checks_passed(result):
                failed.append(name)
                opts.log(f"  CORRECTNESS CHECK FAILED: {result['errors'][:5]}")
            opts.log(f"  ({result['wall_seconds']} s)")
    finally:
        if args.keep:
            opts.log(f"work directory kept: {opts.workdir}")
        else:
            shutil.rmtree(opts.workdir, ignore_errors=True)
    print()
    print(table(results))
    out = args.out if args.out is not None else (None if args.quick else RESULTS)
    if out is not None:
        write_results(out, results)
        print(f"\nwritten to {out}")
    if failed:
        print(f"\ncorrectness checks failed in: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

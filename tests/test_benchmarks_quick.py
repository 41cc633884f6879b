"""Smoke runs of every benchmark (``python -m benchmarks NAME --quick``), so the
benchmarks never rot: each must complete within seconds and pass its own correctness
checks (every subscriber got every event id, in order; every job completed). Performance
is not asserted here; the full runs are not part of CI (see benchmarks/README.md).

Deselect with ``-m 'not benchmarks'``.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import orjson
import pytest

REPO = Path(__file__).resolve().parent.parent
NAMES = ["throughput", "latency", "fanout", "channels", "idle_streams", "ingestion", "resume",
         "mixed", "scaleout"]

pytestmark = pytest.mark.benchmarks


@pytest.mark.parametrize("name", NAMES)
def test_quick_benchmark_completes_and_checks_pass(name: str, tmp_path: Path) -> None:
    out = tmp_path / "results.json"
    run = subprocess.run(
        [sys.executable, "-m", "benchmarks", name, "--quick", "--out", str(out)],
        check=False, cwd=REPO, capture_output=True, text=True, timeout=110)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    result = orjson.loads(out.read_bytes())["benchmarks"][name]
    assert result["quick"] is True
    assert result["errors"] == []
    assert result["headline"], "a benchmark reports at least one headline figure"
    if name == "throughput" and importlib.util.find_spec("huey") is None:
        assert result["skipped"] == ["huey is not installed"]
        assert "SKIPPED the Huey peer" in run.stdout

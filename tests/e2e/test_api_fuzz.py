"""Schemathesis generates requests from /openapi.json against a live server process."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import SpawnServer

# Every check but positive_data_acceptance: a request can match the schema and still be
# refused by design (an Idempotency-Key reused with another body is a 422).
CHECKS = ("not_a_server_error,status_code_conformance,content_type_conformance,"
          "response_headers_conformance,response_schema_conformance,"
          "negative_data_rejection,missing_required_header,unsupported_method,"
          "allow_header_conformance,use_after_free,ensure_resource_availability")


ST = shutil.which("st", path=os.pathsep.join([str(Path(sys.executable).parent),
                                              os.environ.get("PATH", "")]))


@pytest.mark.skipif(ST is None, reason="schemathesis is not installed")
def test_generated_requests_get_no_5xx_and_match_the_schema(
    spawn_server: SpawnServer, tmp_path: Path
) -> None:
    # Built-in job types only, one worker: fuzzed jobs queue up instead of hogging the CPU.
    server = spawn_server("--workers", "1", test_jobs=False)
    done = subprocess.run(
        [str(ST), "run", f"{server.url}/openapi.json",
         "--checks", CHECKS, "--max-examples", "30", "--seed", "20261125",
         # Streams are long-lived by design and have their own tests.
         "--exclude-path-regex", "(events|ws)$", "--request-timeout", "10"],
        capture_output=True, text=True, timeout=100, check=False, cwd=tmp_path)
    assert done.returncode == 0, done.stdout[-6000:] + done.stderr[-2000:]

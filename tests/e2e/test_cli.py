"""The ``sse-jobs`` client sub-commands as a user runs them: real processes against a real
server, exit codes, JSON lines parsed back, and the progress bar in a pseudo-terminal."""

from __future__ import annotations

import http.server
import os
import queue
import selectors
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pexpect
import pytest

import sse_jobs as sse_jobs_package
from conftest import TESTS, SpawnServer, _first_line

ROOT = TESTS.parent
TOKEN = "alice-token-0123456789abcdef"
# The environment of every command: the checkout importable, no stray client settings.
BASE_ENV = {k: v for k, v in os.environ.items() if k not in {"SSE_JOBS_URL", "SSE_JOBS_TOKEN"}}
BASE_ENV["PYTHONPATH"] = os.pathsep.join([str(ROOT), str(TESTS)])


@pytest.fixture(scope="module")
def url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """One server process for the module's commands (each test makes its own jobs)."""
    db = tmp_path_factory.mktemp("cli") / "jobs.db"
    proc = subprocess.Popen(
        [sys.executable, "-m", "sse_jobs", "serve", "--port", "0", "--db", str(db),
         "--workers", "2", "--jobs", "testjobs", "--progress-rate", "0"],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=BASE_ENV)
    line = _first_line(proc, timeout=30)
    assert line.startswith("sse-jobs listening on http://127.0.0.1:"), line
    yield line.split()[-1]
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=30)
    assert proc.stdout is not None
    proc.stdout.close()


def sse_jobs(*args: str, env: dict[str, str] | None = None
             ) -> subprocess.CompletedProcess[str]:
    """Run ``sse-jobs ARGS`` to the end (at most 60 s)."""
    return subprocess.run([sys.executable, "-m", "sse_jobs", *args], capture_output=True,
                          text=True, timeout=60, env={**BASE_ENV, **(env or {})}, check=False)


def lines_of_json(text: str) -> list[dict[str, Any]]:
    return [orjson.loads(line) for line in text.splitlines()]


def read_line(proc: subprocess.Popen[str], timeout: float = 20.0) -> str:
    assert proc.stdout is not None
    with selectors.DefaultSelector() as selector:
        selector.register(proc.stdout, selectors.EVENT_READ)
        assert selector.select(timeout), "no output in time"
    return proc.stdout.readline()


def test_submit_follow_json_lines_parse_back_and_exit_0(url: str) -> None:
    done = sse_jobs("submit", "sleep", "-p", "seconds=0.3", "-p", "steps=3", "--follow",
                    "--json", "--url", url)

    assert done.returncode == 0, done.stderr
    events = lines_of_json(done.stdout)
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
    assert [e["event"] for e in events] == ["queued", "processing", "progress", "progress",
                                            "progress", "completed"]
    assert len({e["job_id"] for e in events}) == 1
    assert [e["progress"] for e in events[2:5]] == pytest.approx([100 / 3, 200 / 3, 100])
    assert events[-1]["result"] == {"slept": 0.3}


def test_submit_prints_the_id_and_watch_follows_it_in_plain_lines(url: str) -> None:
    submitted = sse_jobs("submit", "chatty", "-p", "events=3", "-p", "message_size=0",
                         "--url", url)
    job_id = submitted.stdout.strip()
    watched = sse_jobs("watch", job_id, "--url", url)  # stdout is a pipe: plain lines

    assert submitted.returncode == 0, submitted.stderr
    assert len(job_id) == 26
    assert watched.returncode == 0, watched.stderr
    lines = watched.stdout.splitlines()
    assert lines[0] == f"job {job_id} (chatty)"
    assert lines[1].split()[:2] == ["1", "queued"]
    assert any(line.split()[1:3] == ["progress", "67%"] for line in lines[1:])
    assert lines[-1].split()[1:] == ["completed", '{"events":3}']
    assert "\x1b[" not in watched.stdout  # no terminal codes in a pipe


def test_a_failed_job_exits_1(url: str) -> None:
    done = sse_jobs("submit", "flaky", "-p", "failures=1", "--max-attempts", "1", "--follow",
                    "--url", url)

    assert done.returncode == 1
    assert "failed" in done.stdout.splitlines()[-1]
    assert "attempt 1 fails on purpose" in done.stdout


def test_cancel_exits_0_and_the_watcher_exits_3(url: str) -> None:
    job_id = sse_jobs("submit", "polite", "-p", "seconds=30", "--url", url).stdout.strip()
    watcher = subprocess.Popen(
        [sys.executable, "-m", "sse_jobs", "watch", job_id, "--json", "--url", url],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=BASE_ENV)
    try:
        assert orjson.loads(read_line(watcher))["event"] == "queued"  # it is following
        cancelled = sse_jobs("cancel", job_id, "--url", url)
        assert watcher.wait(timeout=30) == 3
    finally:
        if watcher.poll() is None:
            watcher.kill()
        watcher.communicate(timeout=10)
    again = sse_jobs("cancel", job_id, "--json", "--url", url)
    result = sse_jobs("result", job_id, "--url", url)

    assert cancelled.returncode == 0, cancelled.stderr
    assert cancelled.stdout.split()[0] == job_id
    assert again.returncode == 0
    assert orjson.loads(again.stdout)["state"] == "cancelled"
    assert result.returncode == 1  # 409: a cancelled job has no result
    assert result.stderr.startswith("sse-jobs: 409 Conflict:")


def test_jobs_lists_by_state_in_a_table_and_as_json(url: str) -> None:
    job_id = sse_jobs("submit", "echo", "-p", "value=1", "--follow", "--json",
                      "--url", url).stdout.splitlines()[0]
    job_id = orjson.loads(job_id)["job_id"]
    table = sse_jobs("jobs", "--state", "completed", "--url", url)
    as_json = sse_jobs("jobs", "--state", "completed", "--type", "echo", "--json", "--url", url)

    assert table.returncode == 0, table.stderr
    assert table.stdout.splitlines()[0].split() == ["ID", "TYPE", "STATE", "DONE", "CREATED"]
    assert any(line.startswith(job_id) for line in table.stdout.splitlines())
    assert as_json.returncode == 0
    listed = lines_of_json(as_json.stdout)
    assert job_id in [job["id"] for job in listed]
    assert {job["state"] for job in listed} == {"completed"}
    assert {job["type"] for job in listed} == {"echo"}


def test_result_goes_to_stdout_or_to_a_file(url: str, tmp_path: Path) -> None:
    events = sse_jobs("submit", "write_file", "-p", "name=notes.txt", "-p", "content=hi there",
                      "--follow", "--json", "--url", url)
    job_id = lines_of_json(events.stdout)[0]["job_id"]
    echoed = sse_jobs("submit", "echo", "-p", 'value={"a": [1, true]}', "--follow", "--json",
                      "--url", url)
    echo_id = lines_of_json(echoed.stdout)[0]["job_id"]
    printed = sse_jobs("result", job_id, "--url", url)
    saved = sse_jobs("result", job_id, "-o", str(tmp_path / "copy.txt"), "--url", url)
    as_json = sse_jobs("result", echo_id, "--url", url)

    assert printed.returncode == 0, printed.stderr
    assert printed.stdout == "hi there"
    assert saved.returncode == 0
    assert (tmp_path / "copy.txt").read_text() == "hi there"
    assert orjson.loads(as_json.stdout) == {"a": [1, True]}  # -p values parse as JSON


def test_types_lists_names_and_params(url: str) -> None:
    plain = sse_jobs("types", "--url", url)
    as_json = sse_jobs("types", "--json", "--url", url)

    assert plain.returncode == 0, plain.stderr
    assert "sleep  Wait for a while, reporting progress at each step" in plain.stdout
    assert "    seconds (number, default 5.0)  total time to wait" in plain.stdout
    assert as_json.returncode == 0
    assert {"sleep", "echo", "chatty"} <= {t["name"] for t in lines_of_json(as_json.stdout)}


@pytest.mark.parametrize("args", [
    ["submit"],                                          # no job type
    ["submit", "sleep", "-p", "seconds"],                # not KEY=VALUE
    ["submit", "sleep", "-p", "seconds=-1"],             # the server's 422
    ["submit", "nosuchtype"],                            # the server's 422
    ["watch"],                                           # no id
    ["jobs", "--limit", "many"],
    ["fly"],                                             # no such command
])
def test_usage_errors_exit_2(url: str, args: list[str]) -> None:
    done = sse_jobs(*args, *(["--url", url] if args[0] in {"submit", "jobs"} else []))

    assert done.returncode == 2
    assert "Traceback" not in done.stderr


def test_a_url_that_is_no_url_exits_2() -> None:
    done = sse_jobs("jobs", "--url", "localhost:8080")
    assert done.returncode == 2
    assert done.stderr == "sse-jobs: not an http(s) URL: 'localhost:8080'\n"


@pytest.mark.parametrize("args", [["jobs"], ["submit", "sleep", "--follow"], ["watch", "X"],
                                  ["cancel", "X"], ["result", "X"], ["types"]])
def test_no_server_exits_4_with_one_line(args: list[str]) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # closed again below: nothing listens there
    done = sse_jobs(*args, env={"SSE_JOBS_URL": f"http://127.0.0.1:{port}"})

    assert done.returncode == 4
    assert done.stderr == (f"sse-jobs: cannot reach the server at http://127.0.0.1:{port}: "
                           "Connection refused\n")


def test_url_and_token_come_from_the_environment(spawn_server: SpawnServer) -> None:
    server = spawn_server(env={"SSE_JOBS_API_TOKENS": f"alice:{TOKEN}"})
    env = {"SSE_JOBS_URL": server.url, "SSE_JOBS_TOKEN": TOKEN}
    followed = sse_jobs("submit", "echo", "-p", "value=ok", "--follow", "--json", env=env)
    anonymous = sse_jobs("types", env={"SSE_JOBS_URL": server.url})
    flagged = sse_jobs("types", "--token", TOKEN, env={"SSE_JOBS_URL": server.url})

    assert followed.returncode == 0, followed.stderr
    assert lines_of_json(followed.stdout)[-1]["result"] == "ok"  # via the tokened link
    assert anonymous.returncode == 1
    assert anonymous.stderr.startswith("sse-jobs: 401 Unauthorized:")
    assert flagged.returncode == 0


def test_progress_bar_in_a_pseudo_terminal_shows_percentage_eta_and_message(url: str) -> None:
    child = pexpect.spawn(
        sys.executable, ["-m", "sse_jobs", "submit", "sleep", "-p", "seconds=1.5",
                         "-p", "steps=6", "--follow", "--url", url],
        env={**BASE_ENV, "TERM": "xterm-256color"}, dimensions=(24, 120), timeout=30,
        encoding="utf-8")
    try:
        child.expect(r"sleep [0-9A-Z]{26}")
        child.expect(r"\b(50|67|83)%")  # a percentage while the job runs
        child.expect(r"ETA [0-2]s")  # the server's estimate: about a second is left
        child.expect("step [3-5]/6")  # with its message
        child.expect(r"100%")
        child.expect("completed: ")
        child.expect(pexpect.EOF)
    finally:
        child.close()

    assert child.exitstatus == 0


def test_version_prints_the_package_version() -> None:
    done = subprocess.run([sys.executable, "-m", "sse_jobs", "--version"], capture_output=True,
                          timeout=60, env=BASE_ENV, check=False)

    assert done.returncode == 0
    assert done.stdout == f"sse-jobs {sse_jobs_package.__version__}\n".encode()


def test_a_json_result_on_stdout_ends_with_a_newline(url: str) -> None:
    followed = sse_jobs("submit", "echo", "-p", 'value={"a": [1, true]}', "--follow", "--json",
                        "--url", url)
    job_id = lines_of_json(followed.stdout)[0]["job_id"]
    done = subprocess.run([sys.executable, "-m", "sse_jobs", "result", job_id, "--url", url],
                          capture_output=True, timeout=60, env=BASE_ENV, check=False)

    assert done.returncode == 0, done.stderr
    assert done.stdout == b'{"a":[1,true]}\n'


def test_show_prints_the_job_resource_as_one_json_line(url: str) -> None:
    followed = sse_jobs("submit", "echo", "-p", "value=7", "--follow", "--json", "--url", url)
    job_id = lines_of_json(followed.stdout)[0]["job_id"]
    shown = sse_jobs("show", job_id, "--url", url)
    missing = sse_jobs("show", "0" * 26, "--url", url)

    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.endswith("}\n")
    assert shown.stdout.count("\n") == 1
    job = orjson.loads(shown.stdout)
    assert (job["id"], job["type"], job["state"], job["result"]) == (job_id, "echo",
                                                                     "completed", 7)
    assert job["links"]["self"] == f"/api/v1/jobs/{job_id}"
    assert missing.returncode == 1
    assert missing.stderr.startswith("sse-jobs: 404 Not Found:")


def test_delete_removes_a_finished_job_and_refuses_a_running_one(url: str) -> None:
    followed = sse_jobs("submit", "echo", "-p", "value=1", "--follow", "--json", "--url", url)
    done_id = lines_of_json(followed.stdout)[0]["job_id"]
    running_id = sse_jobs("submit", "polite", "-p", "seconds=30", "--url", url).stdout.strip()
    deleted = sse_jobs("delete", done_id, "--url", url)
    gone = sse_jobs("show", done_id, "--url", url)
    refused = sse_jobs("delete", running_id, "--url", url)
    sse_jobs("cancel", running_id, "--url", url)

    assert deleted.returncode == 0, deleted.stderr
    assert deleted.stdout == f"{done_id} deleted\n"
    assert gone.returncode == 1
    assert gone.stderr.startswith("sse-jobs: 404 Not Found:")
    assert refused.returncode == 1
    assert refused.stderr.startswith("sse-jobs: 409 Conflict:")


def test_a_cancelled_job_shows_the_reason(url: str) -> None:
    job_id = sse_jobs("submit", "polite", "-p", "seconds=30", "--url", url).stdout.strip()
    watcher = subprocess.Popen(
        [sys.executable, "-m", "sse_jobs", "watch", job_id, "--url", url],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=BASE_ENV)
    try:
        assert read_line(watcher) == f"job {job_id} (polite)\n"
        assert read_line(watcher).split()[:2] == ["1", "queued"]  # it is following
        sse_jobs("cancel", job_id, "--url", url)
        out, _err = watcher.communicate(timeout=30)
    finally:
        if watcher.poll() is None:
            watcher.kill()
            watcher.communicate(timeout=10)

    assert watcher.returncode == 3
    assert out.splitlines()[-1].split(None, 2)[1:] == ["cancelled", "cancelled on request"]


def test_rerun_submits_a_failed_job_again(url: str) -> None:
    failed = sse_jobs("submit", "flaky", "-p", "failures=1", "--max-attempts", "1", "--follow",
                      "--json", "--url", url)
    job_id = lines_of_json(failed.stdout)[0]["job_id"]
    rerun = sse_jobs("rerun", job_id, "--json", "--url", url)
    assert rerun.returncode == 0, rerun.stderr
    again = orjson.loads(rerun.stdout)
    assert again["id"] != job_id
    assert again["rerun_of"] == job_id
    assert (again["type"], again["params"]) == ("flaky", {"failures": 1})


def test_rerun_of_an_unknown_job_exits_1_with_one_line(url: str) -> None:
    done = sse_jobs("rerun", "0" * 26, "--url", url)

    assert done.returncode == 1
    assert done.stderr.startswith("sse-jobs: 404 Not Found:")
    assert done.stderr.count("\n") == 1


def test_submit_sends_the_callback_url(url: str, spawn_server: SpawnServer) -> None:
    refused = sse_jobs("submit", "echo", "-p", "value=1", "--callback-url",
                       "http://127.0.0.1:9/hook", "--url", url)
    with _Receiver() as receiver:
        server = spawn_server("--webhook-allow-private")
        followed = sse_jobs("submit", "echo", "-p", "value=1", "--callback-url", receiver.url,
                            "--follow", "--json", "--url", server.url)
        delivered = receiver.next(timeout=20)

    assert refused.returncode == 2  # 422: the server saw the URL and refused a loopback one
    assert "callback_url" in refused.stderr
    assert followed.returncode == 0, followed.stderr
    job_id = lines_of_json(followed.stdout)[0]["job_id"]
    assert (delivered["type"], delivered["job_id"]) == ("job.completed", job_id)


class _Receiver:
    """A webhook receiver on loopback (the outside world): records each POSTed body."""

    def __init__(self) -> None:
        self.bodies: queue.Queue[dict[str, Any]] = queue.Queue()
        received = self.bodies

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                received.put(orjson.loads(self.rfile.read(length)))
                self.send_response(204)
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/hook"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> _Receiver:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=10)

    def next(self, timeout: float) -> dict[str, Any]:
        return self.bodies.get(timeout=timeout)

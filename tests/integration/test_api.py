"""The HTTP API against a real in-process server: every status code of the contract, its
problem+json body and headers, idempotency, listing, cancel, delete, results, job types."""

from __future__ import annotations

import asyncio
import csv
import gzip
import io
import logging
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import aiohttp
import orjson
import pytest
from yarl import URL

from conftest import MakeServer, Server, Submit
from sse_client import TERMINAL, StreamRead, read_stream
from sse_jobs.web.keys import ENGINE

PROBLEM = "application/problem+json"
UNKNOWN_ID = "01ARZ3NDEKTSV4RRFFQ69G5FAV"  # well formed, never handed out by a server
# Reason phrases: RFC 9110 names, and the older names some stacks still use.
TITLES: dict[int, set[str]] = {
    400: {"Bad Request"},
    404: {"Not Found"},
    405: {"Method Not Allowed"},
    409: {"Conflict"},
    413: {"Content Too Large", "Request Entity Too Large", "Payload Too Large"},
    415: {"Unsupported Media Type"},
    422: {"Unprocessable Content", "Unprocessable Entity"},
    503: {"Service Unavailable"},
}
JSON = {"Content-Type": "application/json"}


# -- helpers ------------------------------------------------------------------------------


async def problem_of(response: aiohttp.ClientResponse, status: int) -> dict[str, Any]:
    """Assert ``response`` is an RFC 9457 problem with ``status``; return its body."""
    text = await response.text()
    assert response.status == status, text
    assert response.content_type == PROBLEM, response.headers
    body: dict[str, Any] = orjson.loads(text)
    assert body["status"] == status
    assert body["title"] in TITLES[status]
    assert isinstance(body["type"], str)
    assert ":" in body["type"], body["type"]  # an absolute URI (or about:blank)
    assert isinstance(body["detail"], str)
    assert body["detail"].strip(), body
    return body


def assert_errors(body: dict[str, Any]) -> list[dict[str, Any]]:
    """The 422 ``errors`` list: non-empty, each a (field, message) pair of strings."""
    errors = body["errors"]
    assert isinstance(errors, list)
    assert errors
    for error in errors:
        assert isinstance(error["field"], str)
        assert error["field"]
        assert isinstance(error["message"], str)
        assert error["message"]
    return errors


async def post_raw(http: aiohttp.ClientSession, server: Server, data: bytes | str,
                   headers: dict[str, str] | None = None) -> aiohttp.ClientResponse:
    return await http.post(server.api("/jobs"), data=data,
                           headers=JSON if headers is None else headers)


async def job_count(http: aiohttp.ClientSession, server: Server) -> int:
    async with http.get(server.api("/jobs?limit=500")) as response:
        assert response.status == 200
        body = await response.json()
        assert body["next"] is None
        return len(body["jobs"])


async def get_job(http: aiohttp.ClientSession, server: Server, job_id: str) -> dict[str, Any]:
    async with http.get(server.api(f"/jobs/{job_id}")) as response:
        assert response.status == 200, await response.text()
        job: dict[str, Any] = await response.json()
        return job


async def finished(http: aiohttp.ClientSession, server: Server, job_id: str) -> StreamRead:
    """Follow the job's stream until its terminal event."""
    read = await read_stream(http, server.api(f"/jobs/{job_id}/events"))
    assert read.status == 200
    assert read.names[-1] in TERMINAL, read.names
    return read


async def processing(http: aiohttp.ClientSession, server: Server, job_id: str) -> None:
    """Wait (on its stream) until the job's attempt has started."""
    read = await read_stream(http, server.api(f"/jobs/{job_id}/events"), max_events=2,
                             until_terminal=False)
    assert read.names[:2] == ["queued", "processing"]  # its first progress may share the chunk


async def occupy(http: aiohttp.ClientSession, server: Server, submit: Submit) -> str:
    """A ``polite`` job that holds a worker until it is cancelled; returns its id."""
    job = await submit(server, "polite", {"seconds": 120})
    await processing(http, server, job["id"])
    return str(job["id"])


async def release(http: aiohttp.ClientSession, server: Server, job_id: str) -> None:
    """Cancel a job started by ``occupy`` and wait until it has stopped."""
    async with http.post(server.api(f"/jobs/{job_id}/cancel")) as response:
        assert response.status in {200, 202}, await response.text()
    assert (await finished(http, server, job_id)).names[-1] == "cancelled"


async def completed(http: aiohttp.ClientSession, server: Server, submit: Submit,
                    type_: str, params: dict[str, Any]) -> dict[str, Any]:
    job = await submit(server, type_, params)
    assert (await finished(http, server, job["id"])).names[-1] == "completed"
    return await get_job(http, server, job["id"])


async def failed(http: aiohttp.ClientSession, server: Server, submit: Submit) -> dict[str, Any]:
    job = await submit(server, "flaky", {"failures": 5}, max_attempts=1)
    assert (await finished(http, server, job["id"])).names[-1] == "failed"
    return await get_job(http, server, job["id"])


# -- 400 malformed JSON -------------------------------------------------------------------


@pytest.mark.parametrize("raw", [
    b"{", b"", b"   ", b'{"type": "sleep",}', b"{'type': 'sleep'}", b"nul", b"\xff\xfe\xfd",
    b'{"type": "sleep"} trailing', b"NaN",
    b'{"type": "sleep", "params": {"seconds": 1e400}}',
], ids=["open-brace", "empty", "blank", "trailing-comma", "single-quotes", "nul", "not-utf8",
        "trailing-garbage", "nan", "infinite-number"])
async def test_malformed_json_body_is_400(
    server: Server, http: aiohttp.ClientSession, raw: bytes
) -> None:
    async with await post_raw(http, server, raw) as response:
        body = await problem_of(response, 400)
    assert "JSON" in body["detail"]
    assert await job_count(http, server) == 0


@pytest.mark.parametrize(("encoding", "raw"), [
    ("gzip", b'{"type": "echo", "params": {}}'),
    ("deflate", b'{"type": "echo", "params": {}}'),
    ("gzip", gzip.compress(b'{"type": "echo", "params": {}}')[:-12]),
    ("gzip", b"\x1f\x8b\x08\x00garbage"),
], ids=["gzip-plain-body", "deflate-plain-body", "gzip-truncated", "gzip-bad-stream"])
async def test_a_body_that_does_not_match_its_content_encoding_is_400(
    server: Server, http: aiohttp.ClientSession, encoding: str, raw: bytes,
    caplog: pytest.LogCaptureFixture
) -> None:
    headers = {**JSON, "Content-Encoding": encoding}
    async with await post_raw(http, server, raw, headers) as response:
        body = await problem_of(response, 400)
    assert body["detail"].startswith(("the body could not be read", "the body is not valid JSON"))
    assert await job_count(http, server) == 0
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == []


async def test_a_gzip_body_is_read(server: Server, http: aiohttp.ClientSession) -> None:
    raw = gzip.compress(b'{"type": "echo", "params": {"value": 1}}')
    async with await post_raw(http, server, raw, {**JSON, "Content-Encoding": "gzip"}) as response:
        assert response.status == 202


async def test_unclosed_deep_json_is_refused_without_a_job(
    server: Server, http: aiohttp.ClientSession
) -> None:
    """Malformed *and* too deep: newer orjson stops at its depth limit before it sees the
    missing brackets (422, too deep), older ones report the malformation (400)."""
    async with await post_raw(http, server, b"[" * 5000) as response:
        assert response.status in {400, 422}
        assert response.content_type == "application/problem+json"
    assert await job_count(http, server) == 0


# -- 400 bad query values -------------------------------------------------------------------


@pytest.mark.parametrize(("query", "name"), [
    ("limit=0", "limit"), ("limit=-1", "limit"), ("limit=501", "limit"),
    ("limit=abc", "limit"), ("limit=1.5", "limit"), ("limit=1e2", "limit"),
    ("limit=%EF%BC%99", "limit"), ("limit=%00", "limit"),
    ("limit=99999999999999999999", "limit"),
    ("state=bogus", "bogus"), ("state=queued,bogus", "bogus"),
    ("state=queued&state=QUEUED", "QUEUED"),
    ("cursor=bogus", "cursor"), ("cursor=..%2F..%2Fetc", "cursor"),
    ("cursor=" + "U" * 26, "cursor"),
])
async def test_bad_list_query_values_are_400(
    server: Server, http: aiohttp.ClientSession, query: str, name: str
) -> None:
    async with http.get(URL(server.api(f"/jobs?{query}"), encoded=True)) as response:
        body = await problem_of(response, 400)
    assert name in body["detail"]


# -- 404 ------------------------------------------------------------------------------------


@pytest.mark.parametrize("job_id", [
    UNKNOWN_ID, "..%2Fetc", "..%2F..%2Fetc%2Fpasswd", "not-a-job", "U" * 26, "0" * 27,
    "%00", "%E2%98%83",
])
@pytest.mark.parametrize(("method", "suffix"), [
    ("GET", ""), ("GET", "/events"), ("GET", "/result"), ("POST", "/cancel"), ("DELETE", ""),
])
async def test_unknown_job_is_404(
    server: Server, http: aiohttp.ClientSession, job_id: str, method: str, suffix: str
) -> None:
    url = URL(server.api(f"/jobs/{job_id}{suffix}"), encoded=True)
    async with http.request(method, url) as response:
        body = await problem_of(response, 404)
    assert body["detail"]


async def test_unknown_job_detail_names_the_id(
    server: Server, http: aiohttp.ClientSession
) -> None:
    async with http.get(server.api(f"/jobs/{UNKNOWN_ID}")) as response:
        body = await problem_of(response, 404)
    assert UNKNOWN_ID in body["detail"]


@pytest.mark.parametrize("path", [
    "/api/v1/nope", "/api/v2/jobs", "/nope", "/api/v1/jobs/x/y/z", "/api/v1/jobs/%2e%2e/etc",
])
async def test_unknown_route_is_404(
    server: Server, http: aiohttp.ClientSession, path: str
) -> None:
    async with http.get(URL(server.url + path, encoded=True)) as response:
        await problem_of(response, 404)


# -- 405 ------------------------------------------------------------------------------------


@pytest.mark.parametrize(("method", "path", "allowed"), [
    ("PUT", "/jobs", {"GET", "POST"}),
    ("DELETE", "/jobs", {"GET", "POST"}),
    ("PATCH", "/jobs", {"GET", "POST"}),
    ("PUT", f"/jobs/{UNKNOWN_ID}", {"GET", "DELETE"}),
    ("POST", f"/jobs/{UNKNOWN_ID}", {"GET", "DELETE"}),
    ("GET", f"/jobs/{UNKNOWN_ID}/cancel", {"POST"}),
    ("POST", "/job-types", {"GET"}),
])
async def test_wrong_method_is_405_with_allow(
    server: Server, http: aiohttp.ClientSession, method: str, path: str, allowed: set[str]
) -> None:
    async with http.request(method, server.api(path), json={}) as response:
        body = await problem_of(response, 405)
        allow = {part.strip() for part in response.headers["Allow"].split(",")}
    assert allow == allowed
    assert method in body["detail"]


# -- 409 ------------------------------------------------------------------------------------


async def test_cancel_of_completed_or_failed_job_is_409(
    server: Server, submit: Submit, http: aiohttp.ClientSession
) -> None:
    done = await completed(http, server, submit, "echo", {"value": 1})
    broken = await failed(http, server, submit)
    for job, state in ((done, "completed"), (broken, "failed")):
        async with http.post(server.api(f"/jobs/{job['id']}/cancel")) as response:
            body = await problem_of(response, 409)
        assert state in body["detail"]
        after = await get_job(http, server, job["id"])
        assert after["state"] == state
        assert after["last_event_id"] == job["last_event_id"]


async def test_delete_of_queued_or_processing_job_is_409(
    make_server: MakeServer, submit: Submit, http: aiohttp.ClientSession
) -> None:
    server = await make_server(workers=1)
    busy = await occupy(http, server, submit)
    waiting = await submit(server, "echo", {"value": 1})
    for job_id, state in ((busy, "processing"), (waiting["id"], "queued")):
        async with http.delete(server.api(f"/jobs/{job_id}")) as response:
            body = await problem_of(response, 409)
        assert state in body["detail"]
        assert (await get_job(http, server, job_id))["state"] == state
    await release(http, server, busy)
    assert (await finished(http, server, waiting["id"])).names[-1] == "completed"


async def test_result_of_job_not_completed_is_409(
    make_server: MakeServer, submit: Submit, http: aiohttp.ClientSession
) -> None:
    server = await make_server(workers=1)
    broken = await failed(http, server, submit)
    busy = await occupy(http, server, submit)
    waiting = await submit(server, "echo", {"value": 1})
    for job_id, state in ((busy, "processing"), (waiting["id"], "queued"),
                          (broken["id"], "failed")):
        async with http.get(server.api(f"/jobs/{job_id}/result")) as response:
            body = await problem_of(response, 409)
        assert state in body["detail"]
    await release(http, server, busy)
    async with http.get(server.api(f"/jobs/{busy}/result")) as response:
        body = await problem_of(response, 409)
    assert "cancelled" in body["detail"]
    assert (await finished(http, server, waiting["id"])).names[-1] == "completed"


# -- 413 ------------------------------------------------------------------------------------


async def test_body_larger_than_max_body_is_413(
    make_server: MakeServer, http: aiohttp.ClientSession
) -> None:
    server = await make_server(max_body=1024)
    big = orjson.dumps({"type": "echo", "params": {"value": "x" * 2000}})
    async with await post_raw(http, server, big) as response:
        body = await problem_of(response, 413)
    assert "1024" in body["detail"]

    async def chunked() -> AsyncIterator[bytes]:  # no Content-Length: counted as it arrives
        yield b'{"type": "echo", "params": {"value": "'
        for _ in range(8):
            yield b"x" * 500
        yield b'"}}'

    async with http.post(server.api("/jobs"), data=chunked(), headers=JSON) as response:
        await problem_of(response, 413)

    small = orjson.dumps({"type": "echo", "params": {"value": "x" * 500}})
    async with await post_raw(http, server, small) as response:
        assert response.status == 202, await response.text()
    assert await job_count(http, server) == 1


# -- 415 ------------------------------------------------------------------------------------


@pytest.mark.parametrize("content_type", [
    "text/plain", None, "application/x-www-form-urlencoded", "multipart/form-data; boundary=x",
    "application/xml", "text/json-ish",
])
async def test_non_json_content_type_is_415(
    server: Server, http: aiohttp.ClientSession, content_type: str | None
) -> None:
    data = orjson.dumps({"type": "echo", "params": {"value": 1}})
    if content_type is None:
        response = await http.post(server.api("/jobs"), data=data,
                                   skip_auto_headers=["Content-Type"])
    else:
        response = await post_raw(http, server, data, {"Content-Type": content_type})
    async with response:
        body = await problem_of(response, 415)
    assert "application/json" in body["detail"]
    assert await job_count(http, server) == 0


async def test_json_content_type_with_charset_is_accepted(
    server: Server, http: aiohttp.ClientSession
) -> None:
    data = orjson.dumps({"type": "echo", "params": {"value": 1}})
    headers = {"Content-Type": "application/json; charset=utf-8"}
    async with await post_raw(http, server, data, headers) as response:
        assert response.status == 202, await response.text()


# -- 422 ------------------------------------------------------------------------------------


@pytest.mark.parametrize("type_", ["no-such-type", "SLEEP", "sleep ", "sleep\u0000", "\u2603"])
async def test_unknown_job_type_is_422(
    server: Server, http: aiohttp.ClientSession, type_: str
) -> None:
    async with http.post(server.api("/jobs"), json={"type": type_, "params": {}}) as response:
        body = await problem_of(response, 422)
    errors = assert_errors(body)
    assert [e["field"] for e in errors] == ["type"]
    assert "sleep" in errors[0]["message"]  # names the registered types
    assert await job_count(http, server) == 0


async def test_invalid_params_is_422_naming_the_field(
    server: Server, http: aiohttp.ClientSession
) -> None:
    async with http.post(server.api("/jobs"),
                         json={"type": "sleep", "params": {"seconds": -1}}) as response:
        body = await problem_of(response, 422)
    assert [e["field"] for e in assert_errors(body)] == ["params.seconds"]
    assert "sleep" in body["detail"]

    async with http.post(server.api("/jobs"), json={
        "type": "sleep", "params": {"seconds": "soon", "steps": 0}}) as response:
        body = await problem_of(response, 422)
    assert sorted(e["field"] for e in assert_errors(body)) == ["params.seconds", "params.steps"]
    assert await job_count(http, server) == 0


async def test_extra_top_level_field_is_422(
    server: Server, http: aiohttp.ClientSession
) -> None:
    async with http.post(server.api("/jobs"), json={
        "type": "echo", "params": {}, "colour": "blue"}) as response:
        body = await problem_of(response, 422)
    assert [e["field"] for e in assert_errors(body)] == ["colour"]


async def test_missing_type_is_422(server: Server, http: aiohttp.ClientSession) -> None:
    async with http.post(server.api("/jobs"), json={"params": {}}) as response:
        body = await problem_of(response, 422)
    assert [e["field"] for e in assert_errors(body)] == ["type"]


# An array is a bulk submission (tests/integration/test_bulk.py): an empty one is refused
# whole, as one nested too deep is; one of items that are no submissions is a 207.
@pytest.mark.parametrize("raw", [b'"x"', b"null", b"1", b"true", b"[]",
                                 b"[" * 5000 + b"]" * 5000])
async def test_json_that_is_not_an_object_is_422(
    server: Server, http: aiohttp.ClientSession, raw: bytes
) -> None:
    async with await post_raw(http, server, raw) as response:
        body = await problem_of(response, 422)
    assert_errors(body)
    assert await job_count(http, server) == 0


# -- 503 ------------------------------------------------------------------------------------


async def test_queue_full_is_503_with_retry_after(
    make_server: MakeServer, submit: Submit, http: aiohttp.ClientSession
) -> None:
    server = await make_server(max_queued=1, workers=1)
    busy = await occupy(http, server, submit)
    waiting = await submit(server, "echo", {"value": 1})
    async with http.post(server.api("/jobs"), json={"type": "echo",
                                                    "params": {"value": 2}}) as response:
        body = await problem_of(response, 503)
        assert int(response.headers["Retry-After"]) >= 1
    assert "full" in body["detail"]
    assert await job_count(http, server) == 2

    async with http.post(server.api(f"/jobs/{waiting['id']}/cancel")) as response:
        assert response.status == 200
    again = await submit(server, "echo", {"value": 3})  # room again
    await release(http, server, busy)
    assert (await finished(http, server, again["id"])).names[-1] == "completed"


async def test_shutting_down_is_503_with_retry_after(
    server: Server, submit: Submit, http: aiohttp.ClientSession
) -> None:
    job = await completed(http, server, submit, "echo", {"value": 1})
    engine = server.app[ENGINE]
    engine.accepting = False
    try:
        async with http.post(server.api("/jobs"), json={"type": "echo",
                                                        "params": {}}) as response:
            body = await problem_of(response, 503)
            assert int(response.headers["Retry-After"]) >= 1
        assert "shutting down" in body["detail"]
        async with http.get(server.api("/jobs")) as response:  # reads still work
            assert response.status == 200
            assert [j["id"] for j in (await response.json())["jobs"]] == [job["id"]]
    finally:
        engine.accepting = True
    await submit(server, "echo", {"value": 2})


# -- nasty input never gives a 500 --------------------------------------------------------


def nested(value: Any, depth: int) -> Any:
    for _ in range(depth):
        value = [value]
    return value


NASTY_BODIES: list[Any] = [
    {"type": "sleep", "params": {"seconds": "NaN"}},
    {"type": "sleep", "params": {"seconds": "inf"}},
    {"type": "sleep", "params": {"seconds": "-Infinity"}},
    {"type": "sleep", "params": {"seconds": 1e30}},
    {"type": "sleep", "params": {"steps": 2**63 - 1}},
    {"type": "sleep", "params": {"steps": -(2**63)}},
    {"type": "sleep", "params": {"seconds": nested(1, 200)}},
    {"type": nested("sleep", 200)},
    {"type": "sleep", "priority": nested(1, 200)},
    {"type": "sl\u0000eep"},
    {"type": "\u0000"},
    {"type": "\U0001F600"},
    {"type": "\u202esleep"},
    {"type": "x" * 10_000},
    {"type": ""},
    {"type": "sleep", "priority": 1001},
    {"type": "sleep", "priority": -1001},
    {"type": "sleep", "priority": 2**63 - 1},
    {"type": "sleep", "priority": 1.5},
    {"type": "sleep", "timeout": 0},
    {"type": "sleep", "timeout": -1},
    {"type": "sleep", "timeout": "NaN"},
    {"type": "sleep", "max_attempts": 0},
    {"type": "sleep", "max_attempts": 101},
    {"type": "sleep", "max_attempts": -1},
    {"type": 1}, {"type": None}, {"type": []}, {"type": {}}, {"type": 1.5},
    {"type": "sleep", "params": None}, {"type": "sleep", "params": []},
    {"type": "sleep", "params": "seconds=1"}, {"type": "sleep", "params": 1},
    {"type": "sleep", "priority": "high"}, {"type": "sleep", "priority": None},
    {"type": "sleep", "priority": []}, {"type": "sleep", "priority": {}},
    {"type": "sleep", "timeout": "soon"}, {"type": "sleep", "timeout": []},
    {"type": "sleep", "timeout": {}},
    {"type": "sleep", "max_attempts": "three"}, {"type": "sleep", "max_attempts": []},
    {"type": "sleep", "max_attempts": 1.5}, {"type": "sleep", "max_attempts": {}},
    {"type": "sleep", "params": {"seconds": {"$gt": 1}}},
    {"type": "sleep", "__proto__": {"admin": True}},
    {"": ""},
    {"type": "echo", "params": {"value": 1}, "id": UNKNOWN_ID},
    {"type": "echo", "params": {"value": 1}, "state": "completed"},
]
NASTY_RAW: list[bytes] = [
    b'{"type": "sleep", "params": {"seconds": 1000000000000000000000000000000}}',
    b'{"type": "sleep", "params": {"steps": 18446744073709551616}}',
    b'{"type": "sleep", "params": {"steps": -9223372036854775809}}',
    b'{"type": "primes", "params": {"limit": 1' + b"0" * 100 + b'}}',
    b'{"type": "sleep", "priority": 1' + b"0" * 30 + b'}',
    b'{"type": "sleep", "max_attempts": 1' + b"0" * 400 + b'}',
    b'{"type": "sleep", "timeout": 1' + b"0" * 400 + b'}',
    b"[" * 100_000,
    b'{"type": "sleep", "params": {"seconds": 1e99999}}',
    b'{"type": "sleep\\ud800"}',
    b'{"type": "sleep", "type": "primes", "params": {"limit": -5}}',
    b'\xef\xbb\xbf{"type": "sleep"}',
    b'{"type": "sleep"}\x00',
    b'{"type": "sleep", "params": {"seconds": 01}}',
    b'{"type": "sleep", "params": {"seconds": .5}}',
    b'{"type": "sleep", "params": {"seconds": 0x10}}',
    b'{"type": "sleep", "params": {"seconds": Infinity}}',
]


async def test_nasty_inputs_never_give_a_500_nor_create_a_job(
    server: Server, http: aiohttp.ClientSession
) -> None:
    before = await job_count(http, server)
    bodies = [orjson.dumps(b) for b in NASTY_BODIES] + NASTY_RAW
    for raw in bodies:
        async with await post_raw(http, server, raw) as response:
            text = await response.text()
            assert response.status in {400, 413, 415, 422}, (raw[:200], response.status, text)
            assert response.content_type == PROBLEM, raw[:200]
            assert orjson.loads(text)["status"] == response.status
    assert await job_count(http, server) == before == 0
    async with http.get(server.url + "/healthz") as response:
        assert response.status == 200


@pytest.mark.parametrize("depth", [65, 255, 256, 400, 10_000])
async def test_deeply_nested_params_value_is_not_a_500(
    server: Server, http: aiohttp.ClientSession, depth: int
) -> None:
    raw = b'{"type": "echo", "params": {"value": ' + b"[" * depth + b"]" * depth + b"}}"
    async with await post_raw(http, server, raw) as response:
        text = await response.text()
        assert response.status in {202, 400, 413, 422}, (response.status, text)
        if response.status != 202:
            assert response.content_type == PROBLEM


# -- Idempotency-Key ----------------------------------------------------------------------


async def test_idempotency_key_same_request_returns_the_same_job(
    server: Server, http: aiohttp.ClientSession
) -> None:
    body = {"type": "sleep", "params": {"seconds": 0.1, "steps": 2}, "priority": 3}
    headers = {"Idempotency-Key": "order-42"}
    async with http.post(server.api("/jobs"), json=body, headers=headers) as response:
        assert response.status == 202
        first = await response.json()
        assert response.headers["Location"] == f"/api/v1/jobs/{first['id']}"
    async with http.post(server.api("/jobs"), json=body, headers=headers) as response:
        assert response.status == 200
        second = await response.json()
        assert response.headers["Location"] == f"/api/v1/jobs/{first['id']}"
    assert second["id"] == first["id"]
    assert second["type"] == "sleep"
    # The same request spelled differently (key order, whitespace) is still the same request.
    respelled = b'{ "priority" : 3, "params": {"steps": 2, "seconds": 0.1}, "type": "sleep" }'
    async with await post_raw(http, server, respelled, {**JSON, **headers}) as response:
        assert response.status == 200
        assert (await response.json())["id"] == first["id"]
    assert await job_count(http, server) == 1
    # The replay of a finished job is the finished job.
    assert (await finished(http, server, first["id"])).names[-1] == "completed"
    async with http.post(server.api("/jobs"), json=body, headers=headers) as response:
        assert response.status == 200
        replay = await response.json()
    assert replay["id"] == first["id"]
    assert replay["state"] == "completed"


async def test_idempotency_key_with_another_body_is_422(
    server: Server, http: aiohttp.ClientSession
) -> None:
    headers = {"Idempotency-Key": "order-43"}
    async with http.post(server.api("/jobs"), json={"type": "echo", "params": {"value": 1}},
                         headers=headers) as response:
        assert response.status == 202
        first = await response.json()
    for other in ({"type": "echo", "params": {"value": 2}},
                  {"type": "echo", "params": {"value": 1}, "priority": 1},
                  {"type": "sleep", "params": {}}):
        async with http.post(server.api("/jobs"), json=other, headers=headers) as response:
            body = await problem_of(response, 422)
        assert [e["field"] for e in assert_errors(body)] == ["Idempotency-Key"]
    assert await job_count(http, server) == 1
    assert (await get_job(http, server, first["id"]))["params"] == {"value": 1}


async def test_different_idempotency_keys_make_different_jobs(
    server: Server, http: aiohttp.ClientSession
) -> None:
    body = {"type": "echo", "params": {"value": 1}}
    ids = []
    for key in ("a", "b", "A"):
        async with http.post(server.api("/jobs"), json=body,
                             headers={"Idempotency-Key": key}) as response:
            assert response.status == 202
            ids.append((await response.json())["id"])
    async with http.post(server.api("/jobs"), json=body) as response:  # no key: always new
        assert response.status == 202
        ids.append((await response.json())["id"])
    assert len(set(ids)) == 4
    assert await job_count(http, server) == 4


@pytest.mark.parametrize("key", ["k" * 300, "k" * 256, "", "caf\u00e9"])
async def test_invalid_idempotency_key_is_400(
    server: Server, http: aiohttp.ClientSession, key: str
) -> None:
    async with http.post(server.api("/jobs"), json={"type": "echo", "params": {}},
                         headers={"Idempotency-Key": key}) as response:
        body = await problem_of(response, 400)
    assert "Idempotency-Key" in body["detail"]
    assert await job_count(http, server) == 0


async def test_longest_idempotency_key_is_accepted(
    server: Server, http: aiohttp.ClientSession
) -> None:
    async with http.post(server.api("/jobs"), json={"type": "echo", "params": {}},
                         headers={"Idempotency-Key": "k" * 255}) as response:
        assert response.status == 202


async def test_concurrent_requests_with_one_idempotency_key_make_one_job(
    server: Server, http: aiohttp.ClientSession
) -> None:
    body = {"type": "echo", "params": {"value": "once"}}

    async def post() -> tuple[int, str]:
        async with http.post(server.api("/jobs"), json=body,
                             headers={"Idempotency-Key": "race"}) as response:
            return response.status, (await response.json())["id"]

    results = await asyncio.gather(*(post() for _ in range(20)))
    assert sorted(status for status, _ in results) == [200] * 19 + [202]
    assert len({job_id for _, job_id in results}) == 1
    assert await job_count(http, server) == 1


async def test_idempotent_retry_returns_the_job_even_when_the_queue_is_full(
    make_server: MakeServer, submit: Submit, http: aiohttp.ClientSession
) -> None:
    server = await make_server(max_queued=1, workers=1)
    busy = await occupy(http, server, submit)
    body = {"type": "echo", "params": {"value": 1}}
    headers = {"Idempotency-Key": "retry-me"}
    try:
        async with http.post(server.api("/jobs"), json=body, headers=headers) as response:
            assert response.status == 202
            first = await response.json()
        async with http.post(server.api("/jobs"), json=body, headers=headers) as response:
            assert response.status == 200, await response.text()
            assert (await response.json())["id"] == first["id"]
        other = {"type": "echo", "params": {"value": 2}}
        async with http.post(server.api("/jobs"), json=other, headers=headers) as response:
            await problem_of(response, 422)
        async with http.post(server.api("/jobs"), json=other,
                             headers={"Idempotency-Key": "new"}) as response:
            await problem_of(response, 503)
    finally:
        await release(http, server, busy)


# -- listing ----------------------------------------------------------------------------------


async def list_ids(http: aiohttp.ClientSession, server: Server, query: str = "") -> list[str]:
    async with http.get(server.api(f"/jobs{query}")) as response:
        assert response.status == 200, await response.text()
        assert response.content_type == "application/json"
        body = await response.json()
    assert set(body) == {"jobs", "next", "links"}
    assert re.fullmatch(r"/api/v1/events\?last_event_id=\d+", body["links"]["events"])
    return [job["id"] for job in body["jobs"]]


async def test_list_is_newest_first_with_default_and_max_limit(
    server: Server, submit: Submit, http: aiohttp.ClientSession
) -> None:
    assert await list_ids(http, server) == []
    ids = [(await submit(server, "echo", {"value": i}))["id"] for i in range(55)]
    assert ids == sorted(ids)  # ids sort by creation time
    newest_first = ids[::-1]

    async with http.get(server.api("/jobs")) as response:
        page = await response.json()
    assert [job["id"] for job in page["jobs"]] == newest_first[:50]
    assert page["next"] is not None
    assert page["jobs"][0]["params"] == {"value": 54}
    assert set(page["jobs"][0]["links"]) >= {"self", "events", "cancel", "result"}

    assert await list_ids(http, server, "?limit=500") == newest_first
    assert await list_ids(http, server, "?limit=") == newest_first[:50]
    assert await list_ids(http, server, "?limit=1") == newest_first[:1]
    async with http.get(server.api("/jobs?limit=501")) as response:
        body = await problem_of(response, 400)
    assert "500" in body["detail"]


async def test_list_filters_by_state_and_type(
    make_server: MakeServer, submit: Submit, http: aiohttp.ClientSession
) -> None:
    server = await make_server(workers=1)
    done = (await completed(http, server, submit, "echo", {"value": 1}))["id"]
    broken = (await failed(http, server, submit))["id"]
    busy = await occupy(http, server, submit)
    waiting = (await submit(server, "echo", {"value": 2}))["id"]
    stopped = (await submit(server, "sleep", {"seconds": 1}))["id"]
    async with http.post(server.api(f"/jobs/{stopped}/cancel")) as response:
        assert response.status == 200

    assert await list_ids(http, server) == [stopped, waiting, busy, broken, done]
    assert await list_ids(http, server, "?state=queued") == [waiting]
    assert await list_ids(http, server, "?state=processing") == [busy]
    assert await list_ids(http, server, "?state=completed") == [done]
    assert await list_ids(http, server, "?state=failed") == [broken]
    assert await list_ids(http, server, "?state=cancelled") == [stopped]
    assert await list_ids(http, server, "?state=completed&state=failed") == [broken, done]
    assert await list_ids(http, server, "?state=completed,failed,cancelled") == [
        stopped, broken, done]
    assert await list_ids(http, server, "?state=queued,processing&state=cancelled") == [
        stopped, waiting, busy]
    assert await list_ids(http, server, "?type=echo") == [waiting, done]
    assert await list_ids(http, server, "?type=flaky") == [broken]
    assert await list_ids(http, server, "?type=echo&type=polite") == [waiting, busy, done]
    assert await list_ids(http, server, "?type=echo,sleep") == [stopped, waiting, done]
    assert await list_ids(http, server, "?type=no-such-type") == []
    assert await list_ids(http, server, "?type=echo&state=completed") == [done]
    assert await list_ids(http, server, "?type=sleep&state=queued") == []
    assert await list_ids(http, server, "?state=completed&limit=1") == [done]

    await release(http, server, busy)
    assert (await finished(http, server, waiting)).names[-1] == "completed"


async def test_cursor_pagination_has_no_duplicates_or_gaps(
    server: Server, submit: Submit, http: aiohttp.ClientSession
) -> None:
    ids = [(await submit(server, "echo", {"value": i}))["id"] for i in range(7)]
    pages: list[list[str]] = []
    cursor: str | None = None
    for _ in range(4):
        query = "?limit=3" + (f"&cursor={cursor}" if cursor else "")
        async with http.get(server.api(f"/jobs{query}")) as response:
            assert response.status == 200
            body = await response.json()
        pages.append([job["id"] for job in body["jobs"]])
        cursor = body["next"]
        if cursor is None:
            break
        assert cursor == pages[-1][-1]
    assert [len(page) for page in pages] == [3, 3, 1]
    assert [job_id for page in pages for job_id in page] == ids[::-1]
    assert cursor is None

    # A cursor keeps its place while newer jobs arrive in front of it.
    async with http.get(server.api("/jobs?limit=3")) as response:
        first = await response.json()
    await submit(server, "echo", {"value": "newer"})
    assert await list_ids(http, server, f"?limit=3&cursor={first['next']}") == ids[::-1][3:6]
    # Exactly `limit` jobs left: the page is full and there is no next page.
    async with http.get(server.api(f"/jobs?limit=3&cursor={ids[3]}")) as response:
        last = await response.json()
    assert [job["id"] for job in last["jobs"]] == ids[2::-1]
    assert last["next"] is None


# -- GET job: Retry-After -----------------------------------------------------------------


async def test_get_job_has_retry_after_until_it_is_terminal(
    make_server: MakeServer, submit: Submit, http: aiohttp.ClientSession
) -> None:
    server = await make_server(workers=1)
    busy = await occupy(http, server, submit)
    waiting = await submit(server, "echo", {"value": 1})
    for job_id, state in ((busy, "processing"), (waiting["id"], "queued")):
        async with http.get(server.api(f"/jobs/{job_id}")) as response:
            assert response.status == 200
            assert (await response.json())["state"] == state
            assert response.headers["Retry-After"].isdigit()
            assert int(response.headers["Retry-After"]) >= 1
    await release(http, server, busy)
    assert (await finished(http, server, waiting["id"])).names[-1] == "completed"
    for job_id in (busy, waiting["id"]):
        async with http.get(server.api(f"/jobs/{job_id}")) as response:
            assert response.status == 200
            assert response.content_type == "application/json"
            assert "Retry-After" not in response.headers


# -- cancel -----------------------------------------------------------------------------------


async def test_cancel_queued_job_at_once(
    make_server: MakeServer, submit: Submit, http: aiohttp.ClientSession
) -> None:
    server = await make_server(workers=1)
    busy = await occupy(http, server, submit)
    waiting = await submit(server, "echo", {"value": 1})

    async with http.post(server.api(f"/jobs/{waiting['id']}/cancel")) as response:
        assert response.status == 200
        job = await response.json()
    assert job["id"] == waiting["id"]
    assert job["state"] == "cancelled"
    assert job["error"]["type"] == "cancelled"
    assert job["started_at"] is None
    assert job["finished_at"].endswith("Z")

    read = await read_stream(http, server.api(f"/jobs/{waiting['id']}/events"))
    assert read.names == ["queued", "cancelled"]
    assert read.ids == [1, 2]
    assert [d["state"] for d in read.data()] == ["queued", "cancelled"]
    assert read.closed_by_server or read.names[-1] == "cancelled"

    async with http.post(server.api(f"/jobs/{waiting['id']}/cancel")) as response:
        assert response.status == 200  # already cancelled
        again = await response.json()
    assert again["state"] == "cancelled"
    assert again["last_event_id"] == 2

    # It never runs: a later job on the one worker completes, and it is still cancelled.
    await release(http, server, busy)
    later = await completed(http, server, submit, "echo", {"value": 2})
    assert later["state"] == "completed"
    after = await get_job(http, server, waiting["id"])
    assert after["state"] == "cancelled"
    assert after["last_event_id"] == 2
    assert after["attempt"] == waiting["attempt"]


async def test_cancel_running_job_is_202_then_cancelled(
    make_server: MakeServer, submit: Submit, http: aiohttp.ClientSession
) -> None:
    server = await make_server(workers=1)
    busy = await occupy(http, server, submit)
    async with http.post(server.api(f"/jobs/{busy}/cancel")) as response:
        assert response.status == 202
        job = await response.json()
    assert job["id"] == busy
    assert job["state"] in {"processing", "cancelled"}
    read = await finished(http, server, busy)
    assert read.names[0:2] == ["queued", "processing"]
    assert read.names[-1] == "cancelled"
    assert read.ids == list(range(1, len(read.ids) + 1))
    async with http.post(server.api(f"/jobs/{busy}/cancel")) as response:
        assert response.status == 200
        assert (await response.json())["state"] == "cancelled"
    async with http.post(server.api(f"/jobs/{busy}/cancel")) as response:
        assert response.status == 200


# -- delete -------------------------------------------------------------------------------


async def test_delete_terminal_job(
    make_server: MakeServer, submit: Submit, http: aiohttp.ClientSession
) -> None:
    server = await make_server(workers=1)
    done = await completed(http, server, submit, "echo", {"value": 1})
    broken = await failed(http, server, submit)
    busy = await occupy(http, server, submit)
    await release(http, server, busy)
    keep = await completed(http, server, submit, "echo", {"value": 2})

    for job_id in (done["id"], broken["id"], busy):
        async with http.delete(server.api(f"/jobs/{job_id}")) as response:
            assert response.status == 204
            assert await response.read() == b""
        for suffix in ("", "/events", "/result"):
            async with http.get(server.api(f"/jobs/{job_id}{suffix}")) as response:
                await problem_of(response, 404)
        async with http.delete(server.api(f"/jobs/{job_id}")) as response:
            await problem_of(response, 404)
        async with http.post(server.api(f"/jobs/{job_id}/cancel")) as response:
            await problem_of(response, 404)
    assert await list_ids(http, server) == [keep["id"]]
    assert (await get_job(http, server, keep["id"]))["state"] == "completed"


async def test_delete_removes_result_files(
    server: Server, submit: Submit, http: aiohttp.ClientSession
) -> None:
    job = await completed(http, server, submit, "report", {"rows": 10})
    directory = server.settings.results_path / job["id"]
    assert (directory / "report.csv").is_file()
    async with http.delete(server.api(f"/jobs/{job['id']}")) as response:
        assert response.status == 204
    assert not directory.exists()
    async with http.get(server.api(f"/jobs/{job['id']}/result")) as response:
        await problem_of(response, 404)


# -- results ------------------------------------------------------------------------------


@pytest.mark.parametrize("value", [
    {"a": [1, 2.5, "x", None, True], "nested": {"b": {}}}, [1, "two"], "caf\u00e9 \u2603",
    0, None, False,
])
async def test_json_result(
    server: Server, submit: Submit, http: aiohttp.ClientSession, value: Any
) -> None:
    job = await completed(http, server, submit, "echo", {"value": value})
    assert job["result"] == value
    async with http.get(server.api(f"/jobs/{job['id']}/result")) as response:
        assert response.status == 200
        assert response.content_type == "application/json"
        assert orjson.loads(await response.read()) == value


async def test_large_result_is_served_at_its_link(
    server: Server, submit: Submit, http: aiohttp.ClientSession
) -> None:
    value = {"blob": "y" * 100_000}
    job = await completed(http, server, submit, "echo", {"value": value})
    assert job["result"] is None  # too large to embed
    async with http.get(server.url + job["links"]["result"]) as response:
        assert response.status == 200
        assert response.content_type == "application/json"
        assert orjson.loads(await response.read()) == value


async def test_report_result_is_a_csv_download(
    server: Server, submit: Submit, http: aiohttp.ClientSession
) -> None:
    job = await completed(http, server, submit, "report", {"rows": 25, "seed": 7})
    assert job["result"]["rows"] == 25
    async with http.get(server.url + job["links"]["result"]) as response:
        assert response.status == 200
        assert response.content_type == "text/csv"
        disposition = response.headers["Content-Disposition"]
        text = await response.text()
    assert disposition_of(disposition) == ("attachment", "report.csv")
    rows = list(csv.reader(io.StringIO(text)))
    assert rows[0] == ["row", "region", "amount"]
    assert len(rows) == 26
    assert [int(row[0]) for row in rows[1:]] == list(range(1, 26))
    assert {row[1] for row in rows[1:]} <= {"north", "south", "east", "west"}
    assert round(sum(float(row[2]) for row in rows[1:]), 2) == job["result"]["total"]


async def test_plain_result_file_is_served(
    server: Server, submit: Submit, http: aiohttp.ClientSession
) -> None:
    job = await completed(http, server, submit, "write_file",
                          {"name": "out.txt", "content": "hello, file"})
    async with http.get(server.api(f"/jobs/{job['id']}/result")) as response:
        assert response.status == 200
        assert response.content_type == "text/plain"
        assert await response.text() == "hello, file"


@pytest.mark.parametrize("name", ["../../etc/passwd", "ABSOLUTE", "..", "a/../../b",
                                  "..\\..\\x", ""])
async def test_result_file_name_escaping_its_directory_fails_the_job(
    server: Server, submit: Submit, http: aiohttp.ClientSession, tmp_path: Path, name: str
) -> None:
    if name == "ABSOLUTE":  # an absolute path, but one inside this test's directory
        name = str(tmp_path / "absolute.txt")
    job = await submit(server, "write_file", {"name": name, "content": "owned"})
    read = await finished(http, server, job["id"])
    assert read.names[-1] == "failed"
    final = await get_job(http, server, job["id"])
    assert final["state"] == "failed"
    assert final["error"]["type"] == "exception"
    assert repr(name) in final["error"]["message"]
    assert "Traceback" not in str(final["error"])
    async with http.get(server.api(f"/jobs/{job['id']}/result")) as response:
        await problem_of(response, 409)
    written = [p for p in tmp_path.rglob("*") if p.is_file() and p.read_bytes() == b"owned"]
    assert written == []


@pytest.mark.parametrize("how", ["name", "link"])
async def test_a_result_that_points_outside_its_directory_is_never_served(
    server: Server, submit: Submit, http: aiohttp.ClientSession, how: str
) -> None:
    job = await submit(server, "smuggle", {"how": how})
    read = await finished(http, server, job["id"])
    assert read.names[-1] == "completed"
    async with http.get(server.api(f"/jobs/{job['id']}/result")) as response:
        body = await response.read()
        assert response.status == 409
        assert response.content_type == "application/problem+json"
    assert b"root:" not in body


_TOKEN = r"[!#$%&'*+.^_`|~0-9A-Za-z-]+"
_QUOTED = r'"(?:[^"\\\x00-\x08\x0a-\x1f\x7f]|\\[^\x00-\x08\x0a-\x1f\x7f])*"'
_PARAM = re.compile(rf";[ \t]*({_TOKEN}\*?)[ \t]*=[ \t]*({_TOKEN}|{_QUOTED})[ \t]*")


def disposition_of(value: str) -> tuple[str, str | None]:
    """Parse a Content-Disposition value strictly (RFC 6266 / RFC 9110 quoted-string);
    return its type and file name (``filename*`` preferred), failing on any malformation."""
    kind = re.match(rf"[ \t]*({_TOKEN})[ \t]*", value)
    assert kind is not None, value
    params: dict[str, str] = {}
    position = kind.end()
    while position < len(value):
        param = _PARAM.match(value, position)
        assert param is not None, f"malformed Content-Disposition: {value!r}"
        name, raw = param.group(1).lower(), param.group(2)
        if raw.startswith('"'):
            raw = re.sub(r"\\(.)", r"\1", raw[1:-1])
        params[name] = raw
        position = param.end()
    if "filename*" in params:
        charset, _, encoded = params["filename*"].partition("'")
        assert charset.lower() == "utf-8", value
        return kind.group(1).lower(), unquote(encoded.partition("'")[2], errors="strict")
    return kind.group(1).lower(), params.get("filename")


@pytest.mark.parametrize("name", ["out.txt", "caf\u00e9 \u2603.csv", "x;filename=evil.txt",
                                  "back\\slash.txt"])
async def test_result_file_names_are_served_in_a_well_formed_header(
    server: Server, submit: Submit, http: aiohttp.ClientSession, name: str
) -> None:
    job = await submit(server, "write_file", {"name": name, "content": "named"})
    read = await finished(http, server, job["id"])
    if "\\" in name:  # a path separator on some systems; refusing it is fine too
        assert read.names[-1] in {"completed", "failed"}
    else:
        assert read.names[-1] == "completed"
    if read.names[-1] == "failed":
        return
    async with http.get(server.api(f"/jobs/{job['id']}/result")) as response:
        assert response.status == 200
        assert await response.read() == b"named"
        assert disposition_of(response.headers["Content-Disposition"]) == ("attachment", name)


async def test_result_file_name_with_a_quote_is_escaped(
    server: Server, submit: Submit, http: aiohttp.ClientSession
) -> None:
    job = await submit(server, "write_file", {"name": 'a"b.txt', "content": "named"})
    assert (await finished(http, server, job["id"])).names[-1] == "completed"
    async with http.get(server.api(f"/jobs/{job['id']}/result")) as response:
        assert response.status == 200
        assert disposition_of(response.headers["Content-Disposition"]) == ("attachment",
                                                                            'a"b.txt')


@pytest.mark.parametrize("name", ["lf\nname.txt", "cr\rname.txt", "esc\x1bname.txt",
                                  "del\x7fname.txt", "tab\there.txt"])
async def test_result_file_name_with_control_characters_never_breaks_the_result(
    server: Server, submit: Submit, http: aiohttp.ClientSession, name: str
) -> None:
    job = await submit(server, "write_file", {"name": name, "content": "named"})
    read = await finished(http, server, job["id"])
    if read.names[-1] == "failed":  # refusing such a name, like a path, is fine
        final = await get_job(http, server, job["id"])
        assert repr(name) in final["error"]["message"]
        return
    assert read.names[-1] == "completed"
    async with http.get(server.api(f"/jobs/{job['id']}/result")) as response:
        assert response.status == 200
        assert await response.read() == b"named"
        for char in "\r\n\x1b\x7f":
            assert char not in response.headers["Content-Disposition"]


# -- job types, health --------------------------------------------------------------------


async def test_job_types(server: Server, http: aiohttp.ClientSession) -> None:
    async with http.get(server.api("/job-types")) as response:
        assert response.status == 200
        assert response.content_type == "application/json"
        body = await response.json()
    types = {t["name"]: t for t in body["job_types"]}
    assert {"sleep", "primes", "report", "fail", "echo", "polite", "write_file"} <= set(types)
    for job_type in types.values():
        assert isinstance(job_type["description"], str)
        assert job_type["description"]
        schema = job_type["params_schema"]
        assert schema["type"] == "object"
        assert isinstance(schema["properties"], dict)
        assert set(job_type["defaults"]) == {"timeout", "max_attempts"}
        assert job_type["defaults"]["timeout"] > 0
        assert job_type["defaults"]["max_attempts"] >= 1
    assert set(types["sleep"]["params_schema"]["properties"]) == {"seconds", "steps"}
    assert set(types["primes"]["params_schema"]["properties"]) == {"limit", "segments"}
    assert set(types["report"]["params_schema"]["properties"]) == {"rows", "seed"}
    assert types["sleep"]["defaults"] == {"timeout": 86400, "max_attempts": 3}
    assert set(types["fail"]["params_schema"]["properties"]) == {"steps", "seconds"}
    assert types["fail"]["defaults"] == {"timeout": 3600, "max_attempts": 1}
    assert types["primes"]["defaults"] == {"timeout": 3600, "max_attempts": 3}
    assert types["report"]["defaults"] == {"timeout": 3600, "max_attempts": 3}
    assert types["echo"]["defaults"] == {"timeout": 600, "max_attempts": 1}


async def test_job_defaults_and_caps_apply_to_submissions(
    server: Server, submit: Submit, http: aiohttp.ClientSession
) -> None:
    job = await submit(server, "echo", {"value": 1})
    assert job["max_attempts"] == 1
    assert job["priority"] == 0
    job = await submit(server, "echo", {"value": 1}, max_attempts=4, priority=-7)
    assert job["max_attempts"] == 4
    assert job["priority"] == -7
    type_timeout = server.app[ENGINE].registry.get("echo").timeout  # type: ignore[union-attr]
    assert (await submit(server, "echo", {"value": 1}))["timeout"] == type_timeout
    assert (await submit(server, "echo", {"value": 1}, timeout=2.5))["timeout"] == 2.5
    capped = await submit(server, "echo", {"value": 1}, timeout=type_timeout * 10)
    assert capped["timeout"] == type_timeout  # a request never raises the type's maximum


async def test_healthz(server: Server, http: aiohttp.ClientSession) -> None:
    async with http.get(server.url + "/healthz") as response:
        assert response.status == 200
        assert response.content_type == "application/json"
        body = await response.json()
    assert body["status"] == "ok"


async def test_body_and_params_errors_come_in_one_answer(
    server: Server, http: aiohttp.ClientSession
) -> None:
    body = {"type": "sleep", "params": {"seconds": -1}, "priority": 5000}
    async with http.post(server.api("/jobs"), json=body) as response:
        assert response.status == 422
        fields = {e["field"] for e in (await response.json())["errors"]}
    assert fields == {"priority", "params.seconds"}

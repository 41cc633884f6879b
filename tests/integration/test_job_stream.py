"""A job's event stream: sequence, resume from every position, 204, heartbeats, curl."""

from __future__ import annotations

import asyncio
import shutil
import subprocess

import aiohttp
import pytest

from conftest import MakeServer, Server, Submit
from sse_client import read_stream
from sse_jobs.eventstream import EventStreamParser


async def finished(http: aiohttp.ClientSession, server: Server, job_id: str) -> list[int]:
    read = await read_stream(http, server.api(f"/jobs/{job_id}/events"))
    assert read.names[-1] in {"completed", "failed", "cancelled"}
    return read.ids


async def test_full_event_sequence_has_contiguous_ids(
    make_server: MakeServer, submit: Submit, http: aiohttp.ClientSession
) -> None:
    server = await make_server(progress_rate=0)
    job = await submit(server, "sleep", {"seconds": 0.2, "steps": 4})
    read = await read_stream(http, server.api(f"/jobs/{job['id']}/events"))

    assert read.status == 200
    assert read.headers["Content-Type"] == "text/event-stream; charset=utf-8"
    assert read.headers["Cache-Control"] == "no-cache"
    assert read.headers["X-Accel-Buffering"] == "no"
    assert read.retry == 3000
    assert read.names == ["queued", "processing", "progress", "progress", "progress",
                          "progress", "completed"]
    assert read.ids == [1, 2, 3, 4, 5, 6, 7]
    data = read.data()
    assert [d["seq"] for d in data] == read.ids
    assert all(d["job_id"] == job["id"] for d in data)
    assert [d["state"] for d in data] == ["queued", "processing", *["processing"] * 4,
                                          "completed"]
    assert [d["progress"] for d in data[2:6]] == [25.0, 50.0, 75.0, 100.0]
    assert data[5]["message"] == "step 4/4"
    assert data[6]["result"] == {"slept": 0.2}
    assert data[6]["result_url"] == f"/api/v1/jobs/{job['id']}/result"

    async with http.get(server.api(f"/jobs/{job['id']}")) as response:
        final = await response.json()
        assert response.status == 200
        assert "Retry-After" not in response.headers
    assert final["state"] == "completed"
    assert final["progress"] == 100.0
    assert final["last_event_id"] == 7
    assert final["attempt"] == 1
    assert final["result"] == {"slept": 0.2}
    assert final["finished_at"].endswith("Z")


async def test_resume_from_every_position_by_header_and_query(
    make_server: MakeServer, submit: Submit, http: aiohttp.ClientSession
) -> None:
    server = await make_server(progress_rate=0)
    job = await submit(server, "chatty", {"events": 8})
    url = server.api(f"/jobs/{job['id']}/events")
    everything = await finished(http, server, job["id"])
    last = everything[-1]
    assert everything == list(range(1, last + 1))

    for position in range(last):
        expected = list(range(position + 1, last + 1))
        by_header = await read_stream(http, url, headers={"Last-Event-ID": str(position)},
                                      until_terminal=False)
        by_query = await read_stream(http, f"{url}?last_event_id={position}",
                                     until_terminal=False)
        assert by_header.ids == expected, position
        assert by_query.ids == expected, position
        assert by_header.closed_by_server
        assert by_query.closed_by_server


async def test_reconnect_with_nothing_left_on_terminal_job_gets_204(
    server: Server, submit: Submit, http: aiohttp.ClientSession
) -> None:
    job = await submit(server, "echo", {"value": 1})
    ids = await finished(http, server, job["id"])
    url = server.api(f"/jobs/{job['id']}/events")
    attempts = (({"Last-Event-ID": str(ids[-1])}, ""), ({}, f"?last_event_id={ids[-1]}"))
    for headers, query in attempts:
        async with http.get(url + query, headers=headers) as response:
            assert response.status == 204
            assert await response.read() == b""


@pytest.mark.parametrize("bad_id", ["abc", "-1", "1e3", " ", "999999", "99999999999999999999"])
async def test_unusable_last_event_id_replays_from_the_first_event(
    server: Server, submit: Submit, http: aiohttp.ClientSession, bad_id: str
) -> None:
    job = await submit(server, "echo", {"value": 1})
    ids = await finished(http, server, job["id"])
    read = await read_stream(http, server.api(f"/jobs/{job['id']}/events"),
                             headers={"Last-Event-ID": bad_id})
    assert read.ids == ids


async def test_idle_stream_gets_heartbeat_comments(
    make_server: MakeServer, submit: Submit, http: aiohttp.ClientSession
) -> None:
    server = await make_server(heartbeat=0.1, workers=1)
    job = await submit(server, "polite", {"seconds": 5})
    read = await read_stream(http, server.api(f"/jobs/{job['id']}/events"), min_comments=3,
                             until_terminal=False)
    assert read.comments >= 3
    async with http.post(server.api(f"/jobs/{job['id']}/cancel")) as response:
        assert response.status == 202


async def test_replay_and_live_race_loses_and_repeats_nothing(
    make_server: MakeServer, submit: Submit, http: aiohttp.ClientSession
) -> None:
    """Clients join while events are being produced, each resuming from an id it has just
    seen stored: their replay and the live events overlap."""
    server = await make_server(progress_rate=0)
    job = await submit(server, "chatty", {"events": 400, "pause": 0.002})
    url = server.api(f"/jobs/{job['id']}/events")
    positions = {i * 7 for i in range(1, 16)}

    async def join(resume: int) -> tuple[int, list[int]]:
        read = await read_stream(http, url, headers={"Last-Event-ID": str(resume)})
        return resume, read.ids

    joiners = [asyncio.create_task(join(0))]
    parser = EventStreamParser()
    async with asyncio.timeout(30), http.get(url) as response:
        async for chunk in response.content.iter_any():
            for event in parser.feed(chunk):
                if int(event.id or 0) in positions:
                    joiners.append(asyncio.create_task(join(int(event.id or 0))))
    results = await asyncio.gather(*joiners)
    final = await finished(http, server, job["id"])

    assert sorted(resume for resume, _ in results) == [0, *sorted(positions)]
    for resume, received in results:
        assert received == list(range(resume + 1, final[-1] + 1)), resume


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
async def test_curl_follows_a_job_to_completion(server: Server, submit: Submit) -> None:
    job = await submit(server, "sleep", {"seconds": 0.3, "steps": 3})
    process = await asyncio.create_subprocess_exec(
        "curl", "-sN", "--max-time", "30", server.api(f"/jobs/{job['id']}/events"),
        stdout=subprocess.PIPE)
    output, _ = await asyncio.wait_for(process.communicate(), 40)
    assert process.returncode == 0
    events = EventStreamParser().feed(output)
    assert events[0].event == "queued"
    assert events[-1].event == "completed"
    assert [int(e.id or 0) for e in events] == list(range(1, len(events) + 1))
    assert output.startswith(b"retry: 3000\n\n")


async def test_global_stream_resumes_after_the_newest_job_is_deleted(
    server: Server, submit: Submit, http: aiohttp.ClientSession
) -> None:
    for value in (1, 2):
        job = await submit(server, "echo", {"value": value})
        await finished(http, server, job["id"])
    everything = await read_stream(http, server.api("/events?last_event_id=0"),
                                   until_terminal=False, max_events=6)
    last = everything.ids[-1]
    async with http.delete(server.api(f"/jobs/{job['id']}")) as response:
        assert response.status == 204
    resumed = asyncio.ensure_future(read_stream(
        http, server.api("/events"), headers={"Last-Event-ID": str(last)},
        until_terminal=False, max_events=1, timeout=15))
    fresh = await submit(server, "echo", {"value": 3})
    read = await resumed
    assert read.status == 200
    assert read.ids == [last + 1]  # nothing of the first job is replayed
    assert read.data()[0]["job_id"] == fresh["id"]

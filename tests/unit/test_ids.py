"""Job ids: 26 Crockford base32 characters, strictly increasing, cheap shape check."""

from __future__ import annotations

import threading
import time
from itertools import pairwise

import pytest

from sse_jobs import ids
from sse_jobs.ids import JobIdFactory, is_job_id

CROCKFORD = set("0123456789ABCDEFGHJKMNPQRSTVWXYZ")


def decode(job_id: str) -> int:
    alphabet = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
    value = 0
    for char in job_id:
        value = value * 32 + alphabet.index(char)
    return value


def test_shape() -> None:
    job_id = JobIdFactory().new()
    assert len(job_id) == 26
    assert set(job_id) <= CROCKFORD
    assert is_job_id(job_id)


def test_strictly_increasing_in_a_tight_loop() -> None:
    factory = JobIdFactory()
    made = [factory.new() for _ in range(10_000)]
    assert all(len(i) == 26 and set(i) <= CROCKFORD for i in made)
    assert all(a < b for a, b in pairwise(made))
    assert len(set(made)) == len(made)


def test_time_prefix_is_the_creation_millisecond() -> None:
    before = int(time.time() * 1000)
    job_id = JobIdFactory().new()
    after = int(time.time() * 1000)
    assert before <= decode(job_id) >> 80 <= after


def test_increasing_within_one_millisecond_and_when_the_clock_steps_back(
    monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = [1_800_000_000.0]
    monkeypatch.setattr(ids.time, "time", lambda: clock[0])
    factory = JobIdFactory()
    made = [factory.new() for _ in range(100)]  # all in the same millisecond
    clock[0] -= 3600  # the clock steps back an hour
    made += [factory.new() for _ in range(100)]
    assert all(a < b for a, b in pairwise(made))


def test_increasing_across_threads() -> None:
    factory = JobIdFactory()
    made: list[list[str]] = [[] for _ in range(4)]

    def work(out: list[str]) -> None:
        out.extend(factory.new() for _ in range(2_000))

    threads = [threading.Thread(target=work, args=(out,)) for out in made]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    everything = [i for out in made for i in out]
    assert len(set(everything)) == 8_000
    for out in made:
        assert all(a < b for a, b in pairwise(out))


def test_ids_from_later_factories_sort_later() -> None:
    first = JobIdFactory().new()
    time.sleep(0.002)
    assert JobIdFactory().new() > first


@pytest.mark.parametrize("text", [
    "", "0" * 25, "0" * 27, "01arz3ndektsv4rrffq69g5fav", "01ARZ3NDEKTSV4RRFFQ69G5FAI",
    "01ARZ3NDEKTSV4RRFFQ69G5FAL", "01ARZ3NDEKTSV4RRFFQ69G5FAO", "01ARZ3NDEKTSV4RRFFQ69G5FAU",
    "01ARZ3NDEKTSV4RRFFQ69G5FA-", "../../../../../etc/passwd0", "01ARZ3NDEKTSV4RRFFQ69G5F\u0100V",
    "01ARZ3NDEKTSV4RRFFQ69G5FA\u0000", " 1ARZ3NDEKTSV4RRFFQ69G5FAV", "\uff10" * 26,
])
def test_is_job_id_rejects(text: str) -> None:
    assert not is_job_id(text)


@pytest.mark.parametrize("text", ["01ARZ3NDEKTSV4RRFFQ69G5FAV", "0" * 26, "7" + "Z" * 25])
def test_is_job_id_accepts(text: str) -> None:
    assert is_job_id(text)

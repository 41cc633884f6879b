"""What every backend does the same way: records from database rows (each backend's
queries return the columns in the order these functions read them: see ``select_job`` in
its ``queries.sql``), progress grouped by attempt, and the error a refused change gets."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import orjson

from sse_jobs.errors import IllegalTransition, NotFound, SseJobsError
from sse_jobs.records import Change, Delivery, DeliveryAttempt, Event, JobRecord, ProgressUpdate
from sse_jobs.states import EventName, JobState


def job_record(row: Sequence[Any]) -> JobRecord:
    """A ``jobs`` row, with its JSON columns decoded."""
    return JobRecord(
        id=row[0], type=row[1], state=JobState(row[2]), params=orjson.loads(row[3]),
        priority=row[4], attempt=row[5], max_attempts=row[6], timeout=row[7],
        progress=row[8], message=row[9], created_at=row[10], started_at=row[11],
        finished_at=row[12], not_before=row[13],
        result=None if row[14] is None else bytes(row[14]), result_file=row[15],
        error=None if row[16] is None else orjson.loads(row[16]), last_event_id=row[17],
        cancel_requested=bool(row[18]), idempotency_key=row[19], request_hash=row[20],
        principal=row[21], callback_url=row[22], callback_events=row[23],
        rerun_of=row[24], run_at=row[25], tags=tuple(orjson.loads(row[26])),
    )


def event_record(row: Sequence[Any]) -> Event:
    """``id, job_id, seq, event, data, principal``."""
    return Event(row[0], row[1], row[2], EventName(row[3]), bytes(row[4]), row[5])


def delivery_record(row: Sequence[Any]) -> Delivery:
    return Delivery(*row)


def attempt_record(row: Sequence[Any]) -> DeliveryAttempt:
    return DeliveryAttempt(*row)


def by_attempt(updates: Sequence[ProgressUpdate]) -> dict[tuple[str, int], list[ProgressUpdate]]:
    """Progress updates grouped by (job, attempt), in their order: one row update each."""
    groups: dict[tuple[str, int], list[ProgressUpdate]] = {}
    for update in updates:
        groups.setdefault((update.job_id, update.attempt), []).append(update)
    return groups


def refusal(job_id: str, state: str | None, change: Change | None) -> SseJobsError:
    """Why ``change`` (None: the start of a reserved job) was not recorded, the job being
    in ``state`` (None: no such job)."""
    if state is None:
        return NotFound(f"job {job_id} does not exist")
    if change is None:
        return IllegalTransition(f"job {job_id} is {state} and not reserved here: it cannot "
                                 "start")
    if change.fence is not None and state == JobState.PROCESSING:
        return IllegalTransition(f"job {job_id} is no longer in attempt {change.fence.attempt} "
                                 "here (it was taken over, or its lease ran out)")
    return IllegalTransition(f"job {job_id} is {state}; it cannot become {change.name.value}")


def best(candidates: Sequence[Sequence[Any]], limit: int) -> list[str]:
    """The ids of the ``limit`` best of ``(id, priority)`` candidates: highest priority,
    then oldest (ids sort by creation time), first."""
    ranked = sorted({row[0]: row[1] for row in candidates}.items(),
                    key=lambda item: (-item[1], item[0]))
    return [job_id for job_id, _ in ranked[:limit]]


def rooms(limits: Mapping[str, int], busy: Mapping[str, int], limit: int) -> dict[str, int]:
    """Per limited type, how many more of its jobs may be reserved now (none left out)."""
    free = {name: min(limit, cap - busy.get(name, 0)) for name, cap in limits.items()}
    return {name: room for name, room in sorted(free.items()) if room > 0}

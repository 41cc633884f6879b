"""Reading and deleting stored jobs on behalf of a principal: what the API's reads are."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from sse_jobs.engine.results import ResultFiles
from sse_jobs.errors import BadRequest, Conflict, NotFound
from sse_jobs.ids import is_job_id
from sse_jobs.records import JobRecord
from sse_jobs.states import JobState
from sse_jobs.store.base import Store


@dataclass(frozen=True, slots=True)
class JobPage:
    """One page of a listing, newest first."""

    jobs: list[JobRecord]
    next: str | None  # the cursor of the following page; None on the last one
    # The newest global event id when the page was read: a client that follows the
    # global stream from here misses nothing that changes after the listing.
    last_event_id: int


class Jobs:
    """Jobs as a principal may see them: another principal's job is reported missing, not
    forbidden, so that nothing leaks."""

    def __init__(self, store: Store, results: ResultFiles) -> None:
        self._store = store
        self._results = results

    async def get(self, job_id: str, principal: str | None = None) -> JobRecord:
        """The job, if it exists and (when ``principal`` is given) belongs to ``principal``."""
        record = await self._store.get_job(job_id) if is_job_id(job_id) else None
        if record is None or (principal is not None and record.principal != principal):
            raise NotFound(f"no job with id {job_id!r}")
        return record

    async def page(self, principal: str | None, *, states: Sequence[JobState] = (),
                   types: Sequence[str] = (), cursor: str | None = None,
                   limit: int, tags: Sequence[str] = ()) -> JobPage:
        """Jobs newest first, filtered by state, type and tags (all of them), after
        ``cursor``."""
        if cursor is not None and not is_job_id(cursor):
            raise BadRequest("cursor is not one this server handed out")
        newest = await self._store.last_event_id()
        records = await self._store.list_jobs(principal=principal, states=states, types=types,
                                              before=cursor, limit=limit + 1, tags=tags)
        page = records[:limit]
        return JobPage(page, page[-1].id if len(records) > limit else None, newest)

    async def delete(self, job_id: str, principal: str | None = None) -> None:
        """Remove a finished job with its events, deliveries and result files."""
        record = await self.get(job_id, principal)
        if not record.state.terminal:
            raise Conflict(f"job {job_id} is {record.state.value}; cancel it first")
        if await self._store.delete_job(job_id):
            await self._results.remove(job_id)

    def result(self, record: JobRecord) -> Path | bytes:
        """A completed job's result: its file, or its JSON."""
        if record.state is not JobState.COMPLETED:
            raise Conflict(f"job {record.id} is {record.state.value}; "
                           "its result exists once it is completed")
        if record.result_file is None:
            return record.result or b"null"
        path = self._results.path_of(record)
        if path is None:
            raise Conflict(f"the result file of job {record.id} is no longer there")
        return path

    async def counts(self, principal: str | None = None) -> list[tuple[str, str, int]]:
        """How many jobs there are of each (type, state): of everyone, or of ``principal``."""
        return await self._store.job_counts(principal)

"""Retention (contract section 8): finished jobs, their events and result files are
removed once they are older than ``--retention``."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

from sse_jobs.config import Settings
from sse_jobs.engine.results import ResultFiles
from sse_jobs.errors import Unavailable
from sse_jobs.store.base import Store

log = logging.getLogger(__name__)

BATCH = 100
INTERVAL = 60.0


class Retention:
    """Owns the sweep loop: every minute (or sooner with a short retention)."""

    def __init__(self, settings: Settings, store: Store, results: ResultFiles) -> None:
        self._retention = settings.retention
        self._store = store
        self._results = results
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="retention")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _run(self) -> None:
        interval = min(INTERVAL, max(1.0, self._retention))
        while True:
            try:
                # On a shared store one node at a time sweeps (the others would only
                # race it for the same rows).
                if await self._store.hold("retention", 2 * interval):
                    await self.sweep()
            except Unavailable as exc:
                log.warning("retention sweep skipped: %s", exc.detail)
            await asyncio.sleep(interval)

    async def sweep(self) -> int:
        """Remove finished jobs older than the retention period, a small batch at a time."""
        removed = 0
        cutoff = time.time() - self._retention
        while batch := await self._store.finished_before(cutoff, BATCH):
            for job_id in batch:
                if await self._store.delete_job(job_id):
                    await self._results.remove(job_id)
                    removed += 1
            if len(batch) < BATCH:
                break
        if removed:
            log.info("retention: removed %d finished jobs", removed)
        return removed

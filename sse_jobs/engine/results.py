"""Job result files: one directory per job under the results root, never left by a path."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

from sse_jobs.records import JobRecord


class ResultFiles:
    """Where workers write result files, and how the server finds and removes them."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def path_of(self, record: JobRecord) -> Path | None:
        """The job's result file, if it has one inside its own result directory: a name
        or a symlink a job set up to point elsewhere is not served."""
        if record.result_file is None:
            return None
        directory = (self.root / record.id).resolve()
        path = (directory / record.result_file).resolve()
        return path if path.is_relative_to(directory) and path.is_file() else None

    async def remove(self, job_id: str) -> None:
        """Delete the job's result directory (off the event loop: it may be large)."""
        await asyncio.to_thread(shutil.rmtree, self.root / job_id, ignore_errors=True)

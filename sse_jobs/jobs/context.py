"""``JobContext``: a running job's handle on the server."""

from __future__ import annotations

import math
from pathlib import Path

from sse_jobs.errors import JobCancelled
from sse_jobs.jobs import channel


class JobContext:
    """Report progress, notice cancellation, write result files."""

    def __init__(self, job_id: str, attempt: int, *, slot: int = -1,
                 result_dir: str | Path = ".") -> None:
        self.job_id = job_id
        self.attempt = attempt
        self._slot = slot
        self._result_dir = Path(result_dir)
        self.result_file: str | None = None

    @property
    def cancelled(self) -> bool:
        """True once the job has been asked to stop; long loops should check it."""
        return channel.cancel_requested(self._slot)

    def progress(self, percent: float, message: str | None = None) -> None:
        """Report ``percent`` (0-100) done; raises ``JobCancelled`` if the job was cancelled."""
        value = float(percent)
        if math.isnan(value):
            raise ValueError("progress percent must be a number, not NaN")
        value = min(100.0, max(0.0, value))
        text = None if message is None else str(message)[:channel.MAX_MESSAGE_CHARS]
        channel.send(["p", self.job_id, self.attempt, value, text])
        if self.cancelled:
            raise JobCancelled(self.job_id)

    def result_path(self, name: str) -> Path:
        """A path for a result file called ``name``; its contents become the job's result."""
        if (not name or name in {".", ".."} or "/" in name or "\\" in name
                or not name.isprintable() or len(name) > 255):
            raise ValueError(f"result file name {name!r} must be a plain, printable file name")
        directory = self._result_dir / self.job_id
        directory.mkdir(parents=True, exist_ok=True)
        self.result_file = name
        return directory / name

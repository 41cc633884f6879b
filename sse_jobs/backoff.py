"""Exponential backoff with jitter: the one schedule of pauses between tries.

Job retries, webhook retries, waiting out storage trouble and the client's reconnects all
pause ``base * 2^n`` seconds, capped, with jitter so that many waiters do not return at
once. *Full* jitter picks uniformly below the cap (retries that may be spread widely);
*equal* jitter keeps at least half of it (reconnects that should not come back too soon).
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Literal

Jitter = Literal["full", "equal"]


@dataclass(frozen=True, kw_only=True)
class Backoff:
    """Pauses between tries: exponential from ``base``, with jitter, never over ``max_delay``."""

    base: float = 0.5
    max_delay: float = 30.0
    jitter: Jitter = "equal"

    def ceiling(self, failures: int, *, base: float | None = None) -> float:
        """The cap of the pause after ``failures`` failures in a row: ``base * 2^failures``."""
        start = self.base if base is None else base
        return min(self.max_delay, start * 2.0 ** min(failures, 64))

    def delay(self, failures: int, *, base: float | None = None, floor: float = 0.0) -> float:
        """Seconds to wait after ``failures`` failures in a row, jittered below the ceiling,
        at least ``floor`` (a ``Retry-After``, or the server's ``retry:``) and at most
        ``max_delay``."""
        ceiling = self.ceiling(failures, base=base)
        low = ceiling / 2 if self.jitter == "equal" else 0.0
        jittered = random.uniform(low, ceiling)  # noqa: S311 - spreading waiters, not crypto
        return min(self.max_delay, max(floor, jittered))

"""A token bucket: the one rate limiter (submissions per principal, fan-outs, progress).

The bucket holds at most ``burst`` tokens and refills at ``rate`` tokens a second. Taking
a token either succeeds at once or says how long until one is there, so callers can
answer ``Retry-After`` or schedule the held work for exactly then.
"""

from __future__ import annotations

import time
from collections.abc import Callable


class TokenBucket:
    """``rate`` tokens a second, at most ``burst`` at once; starts full."""

    __slots__ = ("_at", "_clock", "_level", "burst", "rate")

    def __init__(self, rate: float, burst: float = 1.0,
                 clock: Callable[[], float] = time.monotonic,
                 state: tuple[float, float] | None = None) -> None:
        """``state``: the ``(level, at)`` of a bucket kept elsewhere (a database row shared
        by several processes), ``at`` on ``clock``'s scale; by default it starts full."""
        if rate <= 0 or burst < 1:
            raise ValueError("a token bucket needs rate > 0 and burst >= 1")
        self.rate, self.burst, self._clock = rate, burst, clock
        self._level, self._at = state if state is not None else (burst, clock())

    def _refill(self) -> float:
        now = self._clock()
        self._level = min(self.burst, self._level + (now - self._at) * self.rate)
        self._at = now
        return self._level

    def take(self) -> float:
        """Take a token: 0.0 if there was one, else the seconds until there is (none taken)."""
        level = self._refill()
        if level >= 1.0:
            self._level = level - 1.0
            return 0.0
        return (1.0 - level) / self.rate

    def spend(self) -> None:
        """Take a token whether or not there is one (held work that goes out now), never
        going into debt: the next one is a full interval away at most."""
        self._level = max(0.0, self._refill() - 1.0)

    @property
    def state(self) -> tuple[float, float]:
        """``(level, at)``: what to keep to go on with this bucket later."""
        return self._level, self._at


class KeyedLimiter:
    """A token bucket per key: per principal, of which there are as many as API tokens."""

    def __init__(self, rate: float, burst: float,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._rate, self._burst, self._clock = rate, burst, clock
        self._buckets: dict[str, TokenBucket] = {}

    def take(self, key: str) -> float:
        """``TokenBucket.take`` on ``key``'s bucket."""
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = self._buckets[key] = TokenBucket(self._rate, self._burst, self._clock)
        return bucket.take()

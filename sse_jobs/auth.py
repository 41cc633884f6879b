"""Who is calling: API tokens, job-scoped stream tokens, and per-principal rate limits.

API tokens come from ``--api-tokens-file`` (``name:token`` a line) or
``SSE_JOBS_API_TOKENS`` (``name:token,name:token``). Only their SHA-256 digests are kept,
and a presented token is compared with every one of them in constant time.

EventSource and plain links cannot send an Authorization header, so job links carry a
*stream token* instead: ``<scope>.<expiry>.<HMAC-SHA256>`` with a key kept in the
database. A stream token grants reading one job's stream and result (scope ``job:<id>``)
or one principal's global stream (scope ``events:<name>``) until it expires, and nothing
else; it is never an API token.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from collections.abc import Iterable
from pathlib import Path

ANONYMOUS = ""  # the principal of every request when no API tokens are configured


class TokenFileError(ValueError):
    """The API tokens could not be read."""


def parse_tokens(lines: Iterable[str]) -> dict[str, str]:
    """``{token: name}`` from ``name:token`` lines; blank lines and ``#`` comments skipped."""
    tokens: dict[str, str] = {}
    for number, raw in enumerate(lines, start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        name, sep, token = line.partition(":")
        name, token = name.strip(), token.strip()
        if not sep or not name or len(token) < 16:
            raise TokenFileError(f"line {number}: expected name:token with a token of at "
                                 "least 16 characters")
        if token in tokens:
            raise TokenFileError(f"line {number}: token repeated")
        tokens[token] = name
    return tokens


def load_tokens(path: Path | None, inline: str | None) -> dict[str, str]:
    """The configured API tokens (file and environment together)."""
    lines: list[str] = []
    if path is not None:
        try:
            lines += path.read_text().splitlines()
        except OSError as exc:
            raise TokenFileError(f"cannot read {path}: {exc.strerror}") from None
    if inline:
        lines += inline.split(",")
    return parse_tokens(lines)


class ApiTokens:
    """Authenticates ``Authorization: Bearer`` tokens."""

    def __init__(self, tokens: dict[str, str]) -> None:
        self._digests = [(_digest(token), name) for token, name in tokens.items()]

    @property
    def enabled(self) -> bool:
        return bool(self._digests)

    def principal(self, authorization: str | None) -> str | None:
        """The principal a Bearer header belongs to, or None."""
        if not authorization or not authorization.lower().startswith("bearer "):
            return None
        presented = _digest(authorization[7:].strip())
        found = None
        for digest, name in self._digests:  # no early exit: time does not depend on which
            if hmac.compare_digest(presented, digest):
                found = name
        return found


class StreamTokens:
    """Signs and checks stream tokens with the server's key."""

    def __init__(self, key: bytes, ttl: float) -> None:
        self._key = key
        self._ttl = ttl

    def issue(self, scope: str, now: float | None = None) -> str:
        expires = int((now if now is not None else time.time()) + self._ttl)
        payload = f"{_b64(scope.encode())}.{expires}"
        return f"{payload}.{self._sign(payload)}"

    def scope(self, token: str | None, now: float | None = None) -> str | None:
        """The scope a valid, unexpired token grants, or None."""
        if not token or not token.isascii() or token.count(".") != 2:
            return None
        encoded_scope, expires, signature = token.split(".")
        payload = f"{encoded_scope}.{expires}"
        if not hmac.compare_digest(signature, self._sign(payload)):
            return None
        if not expires.isdigit() or int(expires) < (now if now is not None else time.time()):
            return None
        try:
            return base64.urlsafe_b64decode(encoded_scope + "=" * (-len(encoded_scope) % 4)
                                            ).decode()
        except (ValueError, UnicodeDecodeError):
            return None

    def _sign(self, payload: str) -> str:
        return _b64(hmac.new(self._key, payload.encode(), hashlib.sha256).digest())


def job_scope(job_id: str) -> str:
    return f"job:{job_id}"


def events_scope(principal: str) -> str:
    return f"events:{principal}"


class RateLimiter:
    """A token bucket per principal: ``per_minute`` submissions, refilled continuously."""

    def __init__(self, per_minute: int) -> None:
        self._capacity = float(per_minute)
        self._rate = per_minute / 60.0
        self._buckets: dict[str, tuple[float, float]] = {}  # principal -> (level, at)

    def take(self, principal: str, now: float | None = None) -> float:
        """Spend one submission; 0 if allowed, else the seconds until one is available."""
        now = time.monotonic() if now is None else now
        level, at = self._buckets.get(principal, (self._capacity, now))
        level = min(self._capacity, level + (now - at) * self._rate)
        if level < 1:
            self._buckets[principal] = (level, now)
            return (1 - level) / self._rate
        self._buckets[principal] = (level - 1, now)
        return 0.0


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

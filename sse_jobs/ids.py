"""Job ids: URL-safe, opaque, and sortable by creation time."""

from __future__ import annotations

import os
import secrets
import socket
import threading
import time

_ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"  # Crockford base32, as in ULID


class JobIdFactory:
    """Makes ULID-shaped ids (48-bit milliseconds + 80 random bits, 26 characters).

    Ids made by one factory are strictly increasing, even within one millisecond or if the
    clock steps back, so ``ORDER BY id`` is creation order and a cursor on the id is stable.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._last = 0

    def new(self) -> str:
        with self._lock:
            value = (int(time.time() * 1000) << 80) | secrets.randbits(80)
            if value <= self._last:
                value = self._last + 1
            self._last = value
        return _encode(value)


def _encode(value: int) -> str:
    chars = []
    for _ in range(26):
        chars.append(_ALPHABET[value & 31])
        value >>= 5
    return "".join(reversed(chars))


def is_job_id(text: str) -> bool:
    """Whether ``text`` has the shape of a job id (cheap check before touching storage)."""
    return len(text) == 26 and all(c in _ALPHABET for c in text)


def node_name() -> str:
    """This process's name among the nodes of a shared database: readable for an operator
    (host and pid), and unique even when a pid is reused."""
    return f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(3)}"

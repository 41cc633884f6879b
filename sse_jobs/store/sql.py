"""Named SQL queries, kept in ``.sql`` files beside each backend.

A file holds queries each headed by a ``-- name: NAME`` line, in the style of aiosql and
procrastinate's ``queries.sql``: the SQL reads as SQL, in one place per backend, and the
code refers to it by name. Nothing is ever formatted into a query: values are bound
parameters, lists travel as one array parameter.
"""

from __future__ import annotations

import re
from importlib import resources

_HEADER = re.compile(r"^-- name: ([a-z0-9_]+)\s*$", re.MULTILINE)


def load_queries(package: str, filename: str = "queries.sql") -> dict[str, str]:
    """``{name: sql}`` of the named queries in ``filename`` of ``package``."""
    text = resources.files(package).joinpath(filename).read_text(encoding="utf-8")
    parts = _HEADER.split(text)
    queries: dict[str, str] = {}
    for name, body in zip(parts[1::2], parts[2::2], strict=True):
        if name in queries:
            raise ValueError(f"{filename}: query {name!r} is defined twice")
        queries[name] = body.strip().removesuffix(";").strip()
    return queries


def load_migrations(package: str) -> list[tuple[int, str]]:
    """``(version, script)`` for each ``NNNN_name.sql`` in ``package``'s ``migrations``,
    in version order; the versions must run 1, 2, 3, ... without a gap."""
    folder = resources.files(package).joinpath("migrations")
    found = sorted((int(entry.name.split("_", 1)[0]), entry.read_text(encoding="utf-8"))
                   for entry in folder.iterdir() if entry.name.endswith(".sql"))
    if [version for version, _ in found] != list(range(1, len(found) + 1)):
        raise ValueError(f"{package} migrations must be numbered 1, 2, 3, ... without gaps")
    return found

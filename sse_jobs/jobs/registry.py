"""Job types: the ``@job`` decorator and the registry it fills.

A job type is a plain function ``fn(ctx, params)`` in an importable module. The worker
process imports that module by name, which runs the decorator again there, so the pool
only ever ships a module name, a type name and JSON params across the process boundary.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

from pydantic import BaseModel

if TYPE_CHECKING:
    from sse_jobs.jobs.context import JobContext

F = TypeVar("F", bound=Callable[..., Any])

MAX_TIMEOUT = 7 * 86400.0
_NAME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyz0123456789_-.")


@dataclass(frozen=True, slots=True)
class JobType:
    """A registered job type: what runs, how its params are validated, its limits."""

    name: str
    func: Callable[[JobContext, Any], Any]
    params: type[BaseModel]
    timeout: float
    max_attempts: int
    description: str
    concurrency: int | None = None  # at most this many attempts at once, on every node

    @property
    def module(self) -> str:
        return self.func.__module__

    def params_schema(self) -> dict[str, Any]:
        return self.params.model_json_schema()


class Registry:
    """Job types by name."""

    def __init__(self) -> None:
        self._types: dict[str, JobType] = {}

    def job(
        self,
        name: str,
        *,
        params: type[BaseModel],
        timeout: float = 600.0,
        max_attempts: int = 3,
        description: str = "",
        concurrency: int | None = None,
    ) -> Callable[[F], F]:
        """Register the decorated function as job type ``name``; the function is unchanged.

        ``concurrency``: at most that many of its attempts run at once, across every node
        of the database; None: as many as there are workers."""
        if not name or not set(name) <= _NAME_CHARS or len(name) > 64:
            raise ValueError(f"job type name {name!r}: use 1-64 of [a-z0-9_.-]")
        if not 0 < timeout <= MAX_TIMEOUT:
            raise ValueError(f"job type {name!r}: timeout must be in (0, {MAX_TIMEOUT:g}]")
        if not 1 <= max_attempts <= 100:
            raise ValueError(f"job type {name!r}: max_attempts must be in [1, 100]")
        if concurrency is not None and not 1 <= concurrency <= 10_000:
            raise ValueError(f"job type {name!r}: concurrency must be in [1, 10000] or None")

        def register(func: F) -> F:
            existing = self._types.get(name)
            if existing is not None and _qualified(existing.func) != _qualified(func):
                raise ValueError(f"job type {name!r} is already registered by "
                                 f"{_qualified(existing.func)}")
            self._types[name] = JobType(
                name=name, func=func, params=params, timeout=float(timeout),
                max_attempts=max_attempts, concurrency=concurrency,
                description=description or (func.__doc__ or "").strip().split("\n")[0],
            )
            return func

        return register

    def limits(self) -> dict[str, int]:
        """The concurrency limit of each type that has one."""
        return {t.name: t.concurrency for t in self._types.values() if t.concurrency is not None}

    def get(self, name: str) -> JobType | None:
        return self._types.get(name)

    def __iter__(self) -> Iterator[JobType]:
        return iter(sorted(self._types.values(), key=lambda t: t.name))

    def modules(self) -> list[str]:
        """The modules that define the registered types: what a worker imports."""
        return sorted({t.module for t in self._types.values()})

    def load(self, module: str, name: str) -> JobType:
        """The type ``name`` after importing ``module`` (how a worker process finds it)."""
        if name not in self._types:
            importlib.import_module(module)
        found = self._types.get(name)
        if found is None:
            raise LookupError(f"module {module!r} does not register job type {name!r}")
        return found


def _qualified(func: Callable[..., Any]) -> str:
    return f"{func.__module__}.{func.__qualname__}"


REGISTRY = Registry()
job = REGISTRY.job


"""The architecture, checked: no import cycles, no upward imports between layers, and the
job author's API and the client load no server code.

The layers, lowest first (``README.md``, "How it is built")::

    foundation   the contract's vocabulary: states, errors, events, records, models, ...
    jobs         the job author's API (what worker processes load)   } beside each other,
    client       the Python client and the client sub-commands       } neither sees the other
    store        storage backends
    domain       engine, streams, webhooks
    web          the HTTP layer
    entry        the server process and the command line
"""

from __future__ import annotations

import ast
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "sse_jobs"

FOUNDATION = {"auth", "backoff", "config", "errors", "events", "eventstream", "ids", "logs",
              "metrics", "models", "paths", "ratelimit", "records", "states"}
# layer -> the layers it may import (its own included)
MAY_IMPORT = {
    "foundation": {"foundation"},
    "jobs": {"foundation", "jobs"},
    "client": {"foundation", "client"},
    "store": {"foundation", "store"},
    "domain": {"foundation", "jobs", "store", "domain"},
    "web": {"foundation", "jobs", "store", "domain", "web"},
    "entry": {"foundation", "jobs", "client", "store", "domain", "web", "entry"},
}
SUBPACKAGES = {"jobs": "jobs", "client": "client", "store": "store", "engine": "domain",
               "streams": "domain", "webhooks": "domain", "web": "web"}


def module_names() -> dict[str, Path]:
    names = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        names[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return names


MODULES = module_names()


def layer(module: str) -> str:
    parts = module.split(".")
    if module == "sse_jobs" or parts[1] in FOUNDATION:
        return "foundation"
    if parts[1] in SUBPACKAGES:
        return SUBPACKAGES[parts[1]]
    return "entry"  # server, cli, __main__


def imports(module: str) -> Iterator[str]:
    """The sse_jobs modules ``module`` imports at run time (not only for type checkers)."""
    tree = ast.parse(MODULES[module].read_text())
    type_checking = {id(node) for block in ast.walk(tree) if isinstance(block, ast.If)
                     and isinstance(block.test, ast.Name) and block.test.id == "TYPE_CHECKING"
                     for stmt in block.body for node in ast.walk(stmt)}
    for node in ast.walk(tree):
        if id(node) in type_checking:
            continue
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names if alias.name.startswith("sse_jobs"))
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("sse_jobs"):
            for alias in node.names:
                submodule = f"{node.module}.{alias.name}"
                yield submodule if submodule in MODULES else str(node.module)


GRAPH = {module: sorted(set(imports(module)) - {module}) for module in MODULES}


@pytest.mark.parametrize("module", sorted(MODULES))
def test_no_module_imports_from_a_layer_above_its_own(module: str) -> None:
    allowed = MAY_IMPORT[layer(module)]
    upward = [target for target in GRAPH[module] if layer(target) not in allowed]
    assert upward == [], f"{module} ({layer(module)}) imports {upward}"


def test_there_is_no_import_cycle() -> None:
    cycles = [component for component in _strongly_connected(GRAPH) if len(component) > 1]
    assert cycles == []


def _strongly_connected(graph: dict[str, list[str]]) -> list[list[str]]:
    """Tarjan's algorithm, iteratively (no recursion limit to think about)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []
    for root in graph:
        if root in index:
            continue
        work = [(root, iter(graph[root]))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is None:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    component = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.append(member)
                        if member == node:
                            break
                    components.append(component)
            elif child not in index:
                index[child] = low[child] = len(index)
                stack.append(child)
                on_stack.add(child)
                work.append((child, iter(graph.get(child, []))))
            elif child in on_stack:
                low[node] = min(low[node], index[child])
    return components


def loaded_after(statement: str) -> set[str]:
    """The modules a fresh interpreter has loaded after running ``statement``."""
    probe = f"import sys\n{statement}\nprint('\\n'.join(sorted(sys.modules)))"
    done = subprocess.run([sys.executable, "-c", probe], check=True, capture_output=True,
                          text=True, timeout=60)
    return set(done.stdout.split())


SERVER_MODULES = ("sse_jobs.engine", "sse_jobs.store", "sse_jobs.streams", "sse_jobs.web",
                  "sse_jobs.webhooks", "sse_jobs.server", "aiohttp.web", "aiosqlite",
                  "pebble", "prometheus_client")


def server_code(loaded: set[str]) -> list[str]:
    return sorted(m for m in loaded if m.startswith(SERVER_MODULES))


def test_importing_the_package_loads_nothing_else_of_it() -> None:
    assert sorted(m for m in loaded_after("import sse_jobs") if m.startswith("sse_jobs")) == [
        "sse_jobs"]


def test_the_job_authors_api_loads_no_server_code() -> None:
    loaded = loaded_after("from sse_jobs import JobContext, job")
    assert server_code(loaded) == []
    assert "aiohttp" not in loaded
    assert {"sse_jobs.jobs", "sse_jobs.jobs.context", "sse_jobs.jobs.registry"} <= loaded
    assert "sse_jobs.jobs.demo" not in loaded  # the server loads the demo types


def test_the_client_loads_no_server_code() -> None:
    loaded = loaded_after("from sse_jobs import Client, SyncClient")
    assert server_code(loaded) == []
    assert "sse_jobs.jobs" not in loaded
    assert "sse_jobs.client.api" in loaded


def test_the_client_commands_load_no_server_code() -> None:
    assert server_code(loaded_after("import sse_jobs.cli")) == []

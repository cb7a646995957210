"""Which way the imports run (docs/design.md): read every module's imports with ``ast`` (those
under ``if TYPE_CHECKING:`` and inside functions too) and check the layer map below.

Three layers, each allowed to import only the ones under it:

- ``http``: what speaks HTTP (the ASGI app and its endpoints, the fronts, the server, the CLI).
- ``core``: what a request goes through (the model, the dialects, routing and failover, the
  providers and their transport).
- ``side``: the systems beside a request (gate, metering, observe, store, screening, rate limits,
  breaker and latency state, the finished request's record). A side system imports from the core
  only ``tokenrelay.model`` (the vocabulary every layer shares), ``tokenrelay.settings`` (the one
  settings tree, read at start-up, whose parts the side systems' own types make up) and the
  package root (its version): nothing that routes or relays, so it can be tested and replaced
  alone.

And no import cycle anywhere, not even one that only the type checker sees.

Run with ``TOKENRELAY_SRC=/other/checkout/src`` to check another tree (main, a branch).
"""

from __future__ import annotations

import ast
import os
from collections.abc import Iterator
from pathlib import Path

SRC = Path(os.environ.get("TOKENRELAY_SRC", Path(__file__).parent.parent / "src"))

# The layer map: a module belongs to the first entry that is it or a package above it.
LAYERS: dict[str, str] = {
    # HTTP: the ASGI app, its endpoints, the fronts' handlers, the server and the command line.
    "tokenrelay.__main__": "http",
    "tokenrelay.admin_http": "http",
    "tokenrelay.admin_openapi": "http",
    "tokenrelay.app": "http",
    "tokenrelay.cli": "http",
    "tokenrelay.commands": "http",  # the command line on click (cli starts serve without it)
    "tokenrelay.client": "http",
    "tokenrelay.count_tokens": "http",
    "tokenrelay.endpoints": "http",
    "tokenrelay.gemini_front": "http",
    "tokenrelay.gateway": "http",  # the composition root: only the HTTP layer knows it
    "tokenrelay.gc_schedule": "http",  # the server's garbage-collection clock
    "tokenrelay.edge": "http",  # our HTTP/1.1 server protocol, run by uvicorn's Server
    "tokenrelay.model_list": "http",
    "tokenrelay.path_errors": "http",
    "tokenrelay.relay": "http",
    "tokenrelay.relay_call": "http",
    "tokenrelay.response_store": "http",
    "tokenrelay.responses_api": "http",
    "tokenrelay.resume_http": "http",
    "tokenrelay.serve_command": "http",
    "tokenrelay.server": "http",
    "tokenrelay.simulator": "http",
    "tokenrelay.simulator_web": "http",  # aiohttp.web without aiohttp's client
    "tokenrelay.upgrades": "http",
    "tokenrelay.usage_http": "http",
    "tokenrelay.uvicorn_parts": "http",  # uvicorn's server without its command line
    "tokenrelay.workers": "http",
    # Core: the vocabulary, the dialects, routing, failover, the providers and their transport.
    "tokenrelay": "core",
    "tokenrelay.cache_relay": "core",  # a request's cache lookup, capture and store
    "tokenrelay.balance": "core",  # load balancing inside a route: failover asks it the order
    "tokenrelay.balance_settings": "core",  # its settings, read by settings
    "tokenrelay.cors": "core",  # CORS settings (part of the settings tree) and a lazy wrapper
    "tokenrelay.dialects": "core",
    "tokenrelay.failover": "core",
    "tokenrelay.hedging": "core",
    "tokenrelay.http_client": "core",
    "tokenrelay.http_limits": "core",  # the HTTP edge's settings (and CORS'), read by settings
    "tokenrelay.lean_imports": "core",  # a package without its __init__, for the start
    "tokenrelay.model": "core",
    "tokenrelay.providers": "core",
    "tokenrelay.router": "core",
    "tokenrelay.settings": "core",
    "tokenrelay.types": "core",
    # Side systems.
    "tokenrelay.admin": "side",  # orgs, users, keys, budgets, roles, the audit trail
    "tokenrelay.breaker": "side",
    "tokenrelay.cache": "side",  # the response cache: keys, entries, stores
    "tokenrelay.cooldown": "side",
    "tokenrelay.durations": "side",
    "tokenrelay.gate": "side",
    "tokenrelay.guard": "side",
    "tokenrelay.inflight": "side",
    "tokenrelay.latency": "side",
    "tokenrelay.metering": "side",
    "tokenrelay.observe": "side",
    "tokenrelay.ratelimit": "side",
    "tokenrelay.records": "side",
    "tokenrelay.resume": "side",
    "tokenrelay.screening": "side",
    "tokenrelay.shared_state": "side",
    "tokenrelay.store": "side",
}
ORDER = {"side": 0, "core": 1, "http": 2}  # a layer imports only its own and those below
SIDE_MAY_USE = {"tokenrelay", "tokenrelay.model", "tokenrelay.settings"}

# Edges that another change of issue 16 removes (its owner in the comment). Delete each entry
# once that change is merged: an entry whose edge is gone fails the test, so the list only shrinks.
PENDING: dict[tuple[str, str], str] = {}


def modules() -> dict[str, Path]:
    found: dict[str, Path] = {}
    for path in sorted((SRC / "tokenrelay").rglob("*.py")):
        parts = list(path.relative_to(SRC).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


def imports_of(name: str, path: Path, known: dict[str, Path]) -> set[str]:
    """Every tokenrelay module ``name`` imports anywhere in its file, as the longest known
    module name (``from tokenrelay.store import urls`` is ``tokenrelay.store.urls``)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    named: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            named.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            module = node.module or ""
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                module = ".".join([*base, module] if module else base)
            for alias in node.names:
                full = f"{module}.{alias.name}"
                named.add(full if full in known else module)
    found: set[str] = set()
    for module in named:
        while module and module not in known:
            module = module.rpartition(".")[0]
        if module.startswith("tokenrelay") and module != name:
            found.add(module)
    return found


def graph() -> dict[str, set[str]]:
    known = modules()
    return {name: imports_of(name, path, known) for name, path in known.items()}


def layer_of(module: str) -> str:
    name = module
    while name:
        if name in LAYERS:
            return LAYERS[name]
        name = name.rpartition(".")[0]
    raise AssertionError(f"{module} is in no layer: add it to LAYERS (and to docs/design.md)")


def cycles(edges: dict[str, set[str]]) -> Iterator[list[str]]:
    """The strongly connected components of more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()

    def visit(node: str) -> Iterator[list[str]]:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for other in sorted(edges.get(node, ())):
            if other not in index:
                yield from visit(other)
                low[node] = min(low[node], low[other])
            elif other in on_stack:
                low[node] = min(low[node], index[other])
        if low[node] == index[node]:
            component = []
            while True:
                other = stack.pop()
                on_stack.discard(other)
                component.append(other)
                if other == node:
                    break
            if len(component) > 1:
                yield sorted(component)

    for node in sorted(edges):
        if node not in index:
            yield from visit(node)


def violations(edges: dict[str, set[str]]) -> list[str]:
    """Every import that runs against the layer map, as ``importer -> imported: why``."""
    found = []
    for importer, imported in sorted((a, b) for a, targets in edges.items() for b in targets):
        mine, theirs = layer_of(importer), layer_of(imported)
        if mine == "side" and theirs == "core":
            if imported not in SIDE_MAY_USE:
                found.append(f"{importer} -> {imported}: a side system imports the core")
        elif ORDER[theirs] > ORDER[mine]:
            found.append(f"{importer} -> {imported}: {mine} imports {theirs}")
    return found


def pending_edges(edges: dict[str, set[str]]) -> set[tuple[str, str]]:
    return {(a, b) for a, b in PENDING if b in edges.get(a, set())}


def test_every_module_is_in_the_map() -> None:
    for module in graph():
        layer_of(module)


def test_no_import_cycle() -> None:
    edges = graph()
    for importer, imported in pending_edges(edges):
        edges[importer].discard(imported)
    found = list(cycles(edges))
    assert not found, "import cycles:\n" + "\n".join(" <-> ".join(c) for c in found)


def test_imports_run_down_the_layers() -> None:
    edges = graph()
    pending = {f"{a} -> {b}" for a, b in pending_edges(edges)}
    found = [line for line in violations(edges) if line.partition(":")[0] not in pending]
    assert not found, "imports against the layer map:\n" + "\n".join(found)


def test_pending_edges_still_exist() -> None:
    """A change that removed a pending edge must also remove its entry here."""
    gone = set(PENDING) - pending_edges(graph())
    assert not gone, f"remove from PENDING (their edge is gone): {sorted(gone)}"

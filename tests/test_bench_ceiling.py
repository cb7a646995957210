"""The server-ceiling bench still runs end to end (``--quick``: one round of 20 streams at c=10 per
server; no timing asserted: the figures live in BENCHMARKS.md). Granian is not a dependency: its
two servers are expected only where it is installed, and skipped with a message otherwise."""

from __future__ import annotations

import importlib.util

from tests.servers import run_bench


def test_server_ceiling_quick_run_relays_every_stream_on_every_server() -> None:
    result = run_bench("server_ceiling.py", "--quick", timeout=240)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    table = [[c.strip() for c in line.strip("|").split("|")] for line in result.stdout.splitlines()]
    rows = {cells[0]: cells for cells in table if len(cells) == 8}  # the first table's rows
    expected = ["direct", "edge", "httptools"]
    if importlib.util.find_spec("granian") is not None:
        expected += ["granian-rsgi", "granian-asgi"]
    else:
        assert "granian is not installed: granian-rsgi, granian-asgi skipped" in result.stdout
    assert "CPU per stream / edge's, same round" in result.stdout  # the paired table follows
    for name in expected:
        assert rows[name][1] == "10"  # the level
        assert rows[name][-1] == "0"  # every stream relayed all 64 tokens

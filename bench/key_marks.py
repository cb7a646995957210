"""What a request with a key or a JWT pays for the admin API's bookkeeping: noting the key's last
use (``gate.last_used``: a dict store; the write is batched off the request path) and reading
whether a JWT's org or user is disabled from the cache (``gate.tenants``).

    .venv/bin/python bench/key_marks.py
"""

from __future__ import annotations

import asyncio
import statistics
import time
from typing import TYPE_CHECKING, cast

from tokenrelay.gate.last_used import LastUsed
from tokenrelay.gate.tenants import TenantStates

if TYPE_CHECKING:
    from tokenrelay.store.database import Database

N = 200_000


def per_call(runs: list[float]) -> str:
    return f"{statistics.median(runs):.0f} ns"


async def main() -> None:
    nothing = cast("Database", None)  # neither touches the database on these paths
    last_used = LastUsed(nothing, interval=3600)
    tenants = TenantStates(nothing, ttl=3600)
    tenants._cache[("usr_1", "org_1")] = (time.monotonic() + 3600, None)
    marks, reads = [], []
    for _ in range(5):
        started = time.perf_counter_ns()
        for _ in range(N):
            last_used.mark("key_abcdefghijkl")
        marks.append((time.perf_counter_ns() - started) / N)
        started = time.perf_counter_ns()
        for _ in range(N):
            await tenants.disabled("usr_1", "org_1")
        reads.append((time.perf_counter_ns() - started) / N)
    last_used.pending.clear()
    await last_used.close()
    print(f"LastUsed.mark: {per_call(marks)} per request")
    print(f"TenantStates.disabled, cached: {per_call(reads)} per request")


if __name__ == "__main__":
    asyncio.run(main())

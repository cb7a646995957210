"""How much slower the same per-request code runs after the process sat idle: the gate's
first step (identity and the request limit) timed back to back, then after a pause of 1, 5 and
20 ms between calls (a stream's token gap, the simulator's first-token wait).

    .venv/bin/python bench/cold_gap.py

On an idle VM a paused process comes back to cold caches (and a vCPU that was halted), so the
added time to first token at concurrency 1 is mostly this, not the instructions (BENCHMARKS.md,
"Speed, round two").
"""

from __future__ import annotations

import asyncio
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from run import BODY, HEADERS, gateway_env  # bench/ is not a package
from tokenrelay.gate.identity import request_headers
from tokenrelay.gateway import Gateway
from tokenrelay.settings import load


async def main() -> None:
    gateway = Gateway(load(environ=gateway_env("http://127.0.0.1:9")))
    await gateway.start()
    raw = [(b"host", b"gw"), (b"content-length", b"%d" % len(BODY))]
    raw += [(name.encode(), value.encode()) for name, value in HEADERS.items()]
    headers = request_headers(raw)
    print("| pause between calls | gate: identity + request limit, median |\n| --- | --- |")
    try:
        for gap in (0.0, 0.001, 0.005, 0.02):
            times = []
            for _ in range(200):
                if gap:
                    await asyncio.sleep(gap)
                started = time.perf_counter()
                await gateway.gate.admit_caller(headers, "127.0.0.1")
                times.append((time.perf_counter() - started) * 1e6)
            print(f"| {gap * 1000:g} ms | {statistics.median(times):.1f} µs |")
    finally:
        await gateway.stop()


if __name__ == "__main__":
    asyncio.run(main())

"""What a rate-limit check costs a request: ``RateLimiter.check_requests`` in process and on a
local Redis, one rule and two (IP + route), over 1,000 IPs, every request allowed.

    .venv/bin/python bench/ratelimit.py [--n 20000] [--redis-url URL] [--loop uvloop|asyncio]

Without ``--redis-url`` it starts a throwaway redis-server (tests/redis_server.py) on a spare
port; it runs on uvloop, as ``tokenrelay serve`` does. "per call" is the time inside the call;
"loop/request" is wall time per request of a loop that yields to the event loop after each
call, as a server does, so background work the store schedules (and that the call itself does
not show) is counted too. The last row is limits' own ``MemoryStorage`` with the moving window,
measured the same way, for comparison.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from limits import parse
from limits.aio.storage import MemoryStorage
from limits.aio.strategies import MovingWindowRateLimiter

from tokenrelay.ratelimit import Decision, LimitSettings, RateLimiter, Rule, Subject

IPS = [Subject("ip", f"10.0.{i // 256}.{i % 256}") for i in range(1000)]


async def measure(n: int, call: Callable[[int], Awaitable[object]]) -> tuple[float, float, float]:
    """p50 and p99 µs per call, and µs of loop time per request."""
    for i in range(min(n, 2000)):  # warm up: scripts loaded, connections open
        await call(i)
    times = []
    started = time.perf_counter()
    for i in range(n):
        t0 = time.perf_counter_ns()
        await call(i)
        times.append(time.perf_counter_ns() - t0)
        await asyncio.sleep(0)
    loop = (time.perf_counter() - started) / n * 1e6
    times.sort()
    return times[len(times) // 2] / 1000, times[int(len(times) * 0.99)] / 1000, loop


async def run(n: int, url: str | None) -> None:
    baseline = statistics.median(
        [(await measure(n, lambda i: asyncio.sleep(0)))[2] for _ in range(3)]
    )
    print(f"n={n}, empty loop {baseline:.1f} µs/request (included in loop/request)\n")
    print("| store | rules | p50 µs | p99 µs | loop µs/request |")
    print("| --- | --- | ---: | ---: | ---: |")
    for name, store_url in [("in process", None), ("Redis (local)", url)]:
        if name.startswith("Redis") and store_url is None:
            print("| Redis | - | no redis-server | | |")
            continue
        limiter = RateLimiter.create(LimitSettings(redis_url=store_url, key_prefix="bench"))
        try:
            for label, route in [("1 (IP)", False), ("2 (IP + route)", True)]:

                def call(
                    i: int, route: bool = route, limiter: RateLimiter = limiter
                ) -> Awaitable[Decision]:
                    ip = IPS[i % len(IPS)]
                    rules = [Rule(ip, "1000000/minute")]
                    if route:
                        rules.append(Rule(ip, "1000000/minute", "fast"))
                    return limiter.check_requests(rules)

                p50, p99, loop = await measure(n, call)
                print(f"| {name} | {label} | {p50:.1f} | {p99:.1f} | {loop:.1f} |")
        finally:
            await limiter.close()

    storage = MemoryStorage()
    window = MovingWindowRateLimiter(storage)
    item = parse("1000000/minute")

    async def limits_call(i: int) -> object:
        ip = IPS[i % len(IPS)].id
        await storage.get_moving_window(item.key_for(ip), item.amount, item.get_expiry())
        return await window.hit(item, ip)

    p50, p99, loop = await measure(n, limits_call)
    print(f"| limits MemoryStorage | 1 (IP) | {p50:.1f} | {p99:.1f} | {loop:.1f} |")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=20000)
    parser.add_argument("--redis-url")
    parser.add_argument("--loop", choices=["uvloop", "asyncio"], default="uvloop")  # the server's
    args = parser.parse_args()
    server = None
    url = args.redis_url
    if url is None:
        from tests.redis_server import DEFAULT_BINARY, RedisServer

        if Path(DEFAULT_BINARY).exists():
            server = RedisServer(DEFAULT_BINARY)
            server.start()
            url = server.url
    try:
        if args.loop == "uvloop":
            import uvloop

            uvloop.run(run(args.n, url))
        else:
            asyncio.run(run(args.n, url))
    finally:
        if server is not None:
            server.close()


if __name__ == "__main__":
    main()

"""The response cache's numbers for BENCHMARKS.md: time to first token of a hit, a miss and a
direct request to the simulator, at c=1 and c=50; and the cost of the lookup on a miss, in
memory and with Redis (a private ``redis-server`` on a spare port), against one Redis round trip.

    PYTHONPATH=src .venv/bin/python bench/cache.py [--quick]

The simulator and the gateway run as separate processes (as bench/run.py does); this process is
the client. A "miss" asks a new question each time (looked up, answered upstream, stored); a
"hit" repeats a question already answered.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable

import aiohttp

from run import free_port, gateway_command, gateway_env, process, simulator_command
from tokenrelay.cache.service import ResponseCache
from tokenrelay.cache.settings import CacheSettings, CacheStoreSettings
from tokenrelay.cache.store import CacheStore, MemoryCache, RedisCache
from tokenrelay.gate.identity import Identity
from tokenrelay.model import Message, Request, TextPart
from tokenrelay.settings import TargetSettings

ROUTE = "cached"


def cache_env(sim_url: str) -> dict[str, str]:
    env = gateway_env(sim_url)
    env.update(
        {
            f"TOKENRELAY_ROUTES__{ROUTE.upper()}__TARGETS": "openai:gpt-5.5",
            f"TOKENRELAY_ROUTES__{ROUTE.upper()}__CACHE__MODE": "on",
            f"TOKENRELAY_ROUTES__{ROUTE.upper()}__CACHE__SAMPLED": "true",
        }
    )
    return env


def body(question: str, model: str) -> bytes:
    import msgspec

    messages = [{"role": "user", "content": question}]
    return msgspec.json.encode({"model": model, "stream": True, "messages": messages})


def numbered(prefix: str, model: str, i: int) -> bytes:
    return body(f"{prefix} {i}", model)


def cycled(bodies: list[bytes], i: int) -> bytes:
    return bodies[i % len(bodies)]


async def ttft_ms(session: aiohttp.ClientSession, url: str, data: bytes) -> float:
    started = time.perf_counter()
    headers = {"content-type": "application/json", "authorization": "Bearer bench"}
    async with session.post(url, data=data, headers=headers) as response:
        assert response.status == 200, await response.read()
        first = None
        async for _ in response.content.iter_any():
            if first is None:
                first = time.perf_counter()
    assert first is not None
    return (first - started) * 1000


async def measure(
    session: aiohttp.ClientSession, url: str, bodies: Callable[[int], bytes], n: int, c: int
) -> list[float]:
    out: list[float] = []
    for start in range(0, n, c):
        batch = [ttft_ms(session, url, bodies(i)) for i in range(start, min(start + c, n))]
        out.extend(await asyncio.gather(*batch))
    return out


def p(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def ttft_table(n: int) -> list[str]:
    sim_port, gw_port = free_port(), free_port()
    sim_url, gw_url = f"http://127.0.0.1:{sim_port}", f"http://127.0.0.1:{gw_port}"
    rows = ["| concurrency | path | TTFT p50 ms | p90 ms | p99 ms |", "|---|---|---|---|---|"]
    with (
        process(simulator_command(sim_port), dict(os.environ), sim_url),
        process(gateway_command(gw_port), cache_env(sim_url), gw_url),
    ):
        connector = aiohttp.TCPConnector(limit=200)
        async with aiohttp.ClientSession(connector=connector) as session:
            chat = gw_url + "/v1/chat/completions"
            await measure(session, chat, lambda i: body(f"warm {i}", ROUTE), 20, 10)
            for c in (1, 50):
                run = f"{c}-{time.time()}"
                # prime the hits: one answer per question, stored
                hot = [body(f"hit {run} {i % 10}", ROUTE) for i in range(10)]
                await measure(session, chat, hot.__getitem__, 10, 10)
                await asyncio.sleep(0.5)
                samples = {
                    "direct": await measure(
                        session,
                        sim_url + "/v1/chat/completions",
                        functools.partial(numbered, f"direct {run}", "gpt-5.5"),
                        n,
                        c,
                    ),
                    "miss": await measure(
                        session, chat, functools.partial(numbered, f"miss {run}", ROUTE), n, c
                    ),
                    "hit": await measure(session, chat, functools.partial(cycled, hot), n, c),
                }
                for name, values in samples.items():
                    rows.append(
                        f"| {c} | {name} | {statistics.median(values):.2f} | "
                        f"{p(values, 0.9):.2f} | {p(values, 0.99):.2f} |"
                    )
    return rows


async def lookup_cost_us(store: CacheStore, n: int) -> float:
    """The median cost of planning and looking up a request that misses, in microseconds."""
    cache = ResponseCache(store, CacheStoreSettings())
    settings = CacheSettings(mode="on", sampled=True)
    targets = [TargetSettings(provider="openai", model="gpt-5.5")]
    identity = Identity("key", "127.0.0.1", org="acme", key_id="k1")
    times = []
    for i in range(n):
        request = Request(
            dialect="openai",
            model=ROUTE,
            messages=[Message("user", [TextPart(f"Explain server-sent events, take {i}.")])],
            system="Be brief.",
            max_tokens=1024,
        )
        started = time.perf_counter_ns()
        plan = cache.plan(ROUTE, settings, targets, [], request, identity, {})
        assert plan is not None
        await cache.lookup(plan)
        times.append((time.perf_counter_ns() - started) / 1000)
    return statistics.median(times)


async def redis_round_trip_us(store: RedisCache, n: int) -> float:
    times = []
    for _ in range(n):
        started = time.perf_counter_ns()
        await store.client.ping()
        times.append((time.perf_counter_ns() - started) / 1000)
    return statistics.median(times)


async def lookup_table(n: int) -> list[str]:
    rows = ["| store | lookup on a miss, p50 µs | one Redis PING, p50 µs |", "|---|---|---|"]
    memory = MemoryCache(64 * 1024 * 1024)
    rows.append(f"| memory | {await lookup_cost_us(memory, n):.1f} | - |")
    binary = shutil.which("redis-server") or "/usr/bin/redis-server"
    port = free_port()
    folder = tempfile.mkdtemp(prefix="tokenrelay-bench-redis-")
    command = [binary, "--port", str(port), "--save", "", "--appendonly", "no", "--dir", folder]
    server = subprocess.Popen(  # noqa: ASYNC220 (once, before anything is measured)
        command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        await asyncio.sleep(0.3)
        redis = RedisCache.from_url(
            f"redis://127.0.0.1:{port}/0", timeout=1.0, prefix="bench", retry_interval=1.0
        )
        await redis_round_trip_us(redis, 50)  # connect, warm
        cost = await lookup_cost_us(redis, n)
        ping = await redis_round_trip_us(redis, n)
        rows.append(f"| redis (loopback) | {cost:.1f} | {ping:.1f} |")
        await redis.close()
    finally:
        server.terminate()
        server.wait(10)
        shutil.rmtree(folder, ignore_errors=True)
    return rows


async def main(quick: bool) -> None:
    runs: list[Callable[[], Awaitable[list[str]]]] = [
        lambda: lookup_table(200 if quick else 5000),
        lambda: ttft_table(100 if quick else 1000),
    ]
    for run in runs:
        print("\n".join(await run()), end="\n\n", flush=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small counts (a smoke run)")
    args = parser.parse_args()
    sys.exit(asyncio.run(main(args.quick)))

"""The response cache's numbers for BENCHMARKS.md: time to first token of a hit (replayed at the
original pace and at once), a miss and a direct request to the simulator, at c=1 and c=50, in
the same interleaved rounds; the saturation throughput of instant hits and the gateway's CPU per
hit; and the cost of the lookup on a miss, in memory and with Redis (a private ``redis-server``
on a spare port), against one Redis round trip.

    PYTHONPATH=src:bench .venv/bin/python bench/cache.py [--quick] [--rounds 3] [--part ttft]

Load as bench/run.py makes it: the simulator and the gateway run as separate processes, this
process is the client; every stream is read to its end (64 tokens, ~0.34 s upstream); c streams
at a time, the first wave's starts spread over one stream's length; the paths take turns round
by round. A "miss" asks a new question each time (looked up, answered upstream, stored); a hit
repeats a question already answered, on a route with ``replay = "paced"`` (the hit lasts as
long as the original: the same load shape as a miss) or ``replay = "instant"`` (the whole answer
in one write). Closed-loop instant hits at c=50 measure throughput, not latency: each hit is a
few hundred microseconds of the gateway's one event loop, so 50 at once queue.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import aiohttp
import msgspec

from run import (
    CHAT,
    HEADERS,
    SIM_KNOBS,
    Front,
    Sample,
    cpu_seconds,
    free_port,
    gateway_command,
    gateway_env,
    one_stream,
    pct,
    process,
    simulator_command,
)
from tokenrelay.cache.service import ResponseCache
from tokenrelay.cache.settings import CacheSettings, CacheStoreSettings
from tokenrelay.cache.store import CacheStore, MemoryCache, RedisCache
from tokenrelay.gate.identity import Identity
from tokenrelay.model import Message, Request, TextPart
from tokenrelay.settings import TargetSettings

INSTANT, PACED = "cached", "paced"  # two routes on the same target, one per replay setting
PATHS = ("direct", "miss", "hit paced", "hit instant")


def cache_env(sim_url: str) -> dict[str, str]:
    env = gateway_env(sim_url)
    for route, replay in ((INSTANT, "instant"), (PACED, "paced")):
        prefix = f"TOKENRELAY_ROUTES__{route.upper()}__"
        env[prefix + "TARGETS"] = "openai:gpt-5.5"
        env[prefix + "CACHE__MODE"] = "on"
        env[prefix + "CACHE__SAMPLED"] = "true"
        env[prefix + "CACHE__REPLAY"] = replay
    return env


def body(question: str, model: str) -> bytes:
    messages = [{"role": "user", "content": question}]
    return msgspec.json.encode({"model": model, "stream": True, "messages": messages})


def same(question: str, model: str, _: int) -> bytes:
    """Every stream asks ``question`` (a hit once it is stored)."""
    return body(question, model)


def numbered(prefix: str, model: str, i: int) -> bytes:
    """Stream ``i`` asks a question of its own (a miss)."""
    return body(f"{prefix} {i}", model)


@dataclass
class Path:
    """One way to the answer: its URL, the body of its i-th stream, what it measured."""

    url: str
    bodies: Callable[[int], bytes]
    sample: Sample = field(default_factory=Sample)


async def run_batch(
    session: aiohttp.ClientSession, path: Path, streams: int, concurrency: int, pid: int | None
) -> None:
    """bench/run.py's ``run_batch`` with a body per stream: ``streams`` streams, ``concurrency``
    at a time, the first wave's starts spread over one stream's length (the same schedule for
    every path); the gateway's CPU counted when ``pid`` is given."""
    gate = asyncio.Semaphore(concurrency)
    ramp = (SIM_KNOBS["ttft_ms"] + SIM_KNOBS["tokens"] * SIM_KNOBS["token_delay_ms"]) / 1000
    rng = random.Random(7)
    spread = concurrency > 1
    delays = [rng.uniform(0, ramp) if spread and i < concurrency else 0.0 for i in range(streams)]
    base = path.sample.streams

    async def guarded(i: int, delay: float) -> None:
        async with gate:
            await asyncio.sleep(delay)
            front = Front(CHAT.path, path.bodies(base + i), CHAT.marker, CHAT.empty)
            await one_stream(session, path.url, path.sample, HEADERS, front)

    cpu = cpu_seconds(pid) if pid is not None else 0.0
    started = time.perf_counter()
    await asyncio.gather(*(guarded(i, delay) for i, delay in enumerate(delays)))
    path.sample.wall += time.perf_counter() - started
    path.sample.streams += streams
    if pid is not None:
        path.sample.cpu += cpu_seconds(pid) - cpu


async def prime(session: aiohttp.ClientSession, gw_url: str, question: str) -> None:
    """One miss on each route, stored, so the same question is a hit from now on."""
    chat = gw_url + CHAT.path
    for route in (INSTANT, PACED):
        path = Path(chat, functools.partial(same, question, route))
        await run_batch(session, path, 1, 1, None)
    await asyncio.sleep(0.5)  # stored after the stream, in the background


async def ttft_table(
    session: aiohttp.ClientSession, sim_url: str, gw_url: str, pid: int, rounds: int
) -> list[str]:
    rows = [
        "| concurrency | path | streams | TTFT p50 ms | TTFT p99 ms | gateway CPU ms per stream"
        " | failures |",
        "|---|---|---|---|---|---|---|",
    ]
    chat = gw_url + CHAT.path
    hot = f"hot {time.time()}"
    await prime(session, gw_url, hot)
    for concurrency in (1, 50):
        run = f"{concurrency}-{time.time()}"
        paths = {
            "direct": Path(sim_url + CHAT.path, lambda i: body(f"direct {i}", "gpt-5.5")),
            "miss": Path(chat, functools.partial(numbered, f"miss {run}", INSTANT)),
            "hit paced": Path(chat, lambda i: body(hot, PACED)),
            "hit instant": Path(chat, lambda i: body(hot, INSTANT)),
        }
        streams = max(20, concurrency * 2)
        for turn in range(rounds):
            for name, path in paths.items():
                await run_batch(
                    session, path, streams, concurrency, None if name == "direct" else pid
                )
            print(f"  c={concurrency}: round {turn + 1} of {rounds} done", file=sys.stderr)
        for name, path in paths.items():
            sample = path.sample
            cpu = f"{sample.cpu / sample.streams * 1000:.2f}" if name != "direct" else "-"
            rows.append(
                f"| {concurrency} | {name} | {sample.streams} | {pct(sample.ttft, 50):.2f}"
                f" | {pct(sample.ttft, 99):.2f} | {cpu} | {sample.failures} |"
            )
    return rows


async def saturation_table(
    session: aiohttp.ClientSession, gw_url: str, pid: int, hits: int, concurrency: int = 50
) -> list[str]:
    """Instant hits as fast as they come back, ``concurrency`` at a time, no ramp: the
    gateway's throughput of hits and its CPU per hit (HTTP parsing and writing included)."""
    hot = f"saturate {time.time()}"
    await prime(session, gw_url, hot)
    path = Path(gw_url + CHAT.path, lambda i: body(hot, INSTANT))
    cpu = cpu_seconds(pid)
    started = time.perf_counter()
    gate = asyncio.Semaphore(concurrency)

    async def one(i: int) -> None:
        async with gate:
            front = Front(CHAT.path, path.bodies(i), CHAT.marker, CHAT.empty)
            await one_stream(session, path.url, path.sample, HEADERS, front)

    await asyncio.gather(*(one(i) for i in range(hits)))
    wall = time.perf_counter() - started
    used = cpu_seconds(pid) - cpu
    sample = path.sample
    return [
        "| instant hits, closed loop | hits | hits/s | gateway CPU µs per hit"
        " | gateway CPU busy | TTFT p50 / p99 ms | failures |",
        "|---|---|---|---|---|---|---|",
        f"| c={concurrency} | {hits} | {hits / wall:.0f} | {used / hits * 1e6:.0f}"
        f" | {used / wall:.0%} | {pct(sample.ttft, 50):.2f} / {pct(sample.ttft, 99):.2f}"
        f" | {sample.failures} |",
    ]


async def gateway_tables(rounds: int, hits: int, parts: set[str]) -> list[list[str]]:
    sim_port, gw_port = free_port(), free_port()
    sim_url, gw_url = f"http://127.0.0.1:{sim_port}", f"http://127.0.0.1:{gw_port}"
    tables = []
    env = dict(os.environ)
    with (
        process(simulator_command(sim_port), env, sim_url),
        process(gateway_command(gw_port), cache_env(sim_url), gw_url) as pid,
    ):
        connector = aiohttp.TCPConnector(limit=0)
        async with aiohttp.ClientSession(connector=connector) as session:
            warm = Path(gw_url + CHAT.path, lambda i: body(f"warm {i}", INSTANT))
            await run_batch(session, warm, 20, 10, None)  # pools, imports
            if "ttft" in parts:
                tables.append(await ttft_table(session, sim_url, gw_url, pid, rounds))
            if "saturation" in parts:
                tables.append(await saturation_table(session, gw_url, pid, hits))
    return tables


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
            model=INSTANT,
            messages=[Message("user", [TextPart(f"Explain server-sent events, take {i}.")])],
            system="Be brief.",
            max_tokens=1024,
        )
        started = time.perf_counter_ns()
        plan = cache.plan(INSTANT, settings, targets, [], request, identity, {})
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


async def main(quick: bool, rounds: int, parts: set[str]) -> None:
    if "lookup" in parts:
        print("\n".join(await lookup_table(200 if quick else 5000)), end="\n\n", flush=True)
    hits = 500 if quick else 5000
    for table in await gateway_tables(1 if quick else rounds, hits, parts):
        print("\n".join(table), end="\n\n", flush=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--quick", action="store_true", help="one round, small counts (a smoke run)"
    )
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds per level")
    parser.add_argument(
        "--part",
        action="append",
        choices=["lookup", "ttft", "saturation"],
        help="only these tables (default: all)",
    )
    args = parser.parse_args()
    parts = set(args.part or ["lookup", "ttft", "saturation"])
    sys.exit(asyncio.run(main(args.quick, args.rounds, parts)))

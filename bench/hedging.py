"""Time to first token with a primary that is slow now and then, without and with hedging: the
same requests through four routes that differ only in their hedge setting, interleaved round by
round in one run.

    .venv/bin/python bench/hedging.py [--quick] [--slow-fraction 0.1] [--slow-ms 1000]

The primary (OpenAI dialect on the simulator) makes ``slow_fraction`` of its requests, drawn at
random, wait ``slow_ms`` before the first token; the fallback (Anthropic dialect, same simulator)
is always fast. Besides the percentiles it reports how often a hedge started and how many
upstream requests each client request cost.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sys
import time
from dataclasses import dataclass, field

import aiohttp
import msgspec

from run import (
    HEADERS,
    SIM_KNOBS,
    free_port,
    gateway_command,
    gateway_env,
    pct,
    process,
    simulator_command,
)

ROUTES = {
    "no-hedge": {},
    "hedge-p95": {"HEDGE": "true"},
    "hedge-p80": {"HEDGE": "true", "HEDGE_QUANTILE": "0.8"},
    "hedge-100ms": {"HEDGE": "true", "HEDGE_DELAY": "0.1"},
}


@dataclass
class Sample:
    ttft: list[float] = field(default_factory=list)
    hedged: int = 0
    failures: int = 0


def routes_env(slow_fraction: float, slow_ms: float) -> dict[str, str]:
    primary = {
        "provider": "openai",
        "model": "gpt-5.5",
        "headers": {"x-sim-slow-fraction": str(slow_fraction), "x-sim-slow-ttft-ms": str(slow_ms)},
    }
    fallback = {"provider": "anthropic", "model": "claude-sonnet-5-5"}
    targets = msgspec.json.encode([primary, fallback]).decode()
    env = {}
    for name, settings in ROUTES.items():
        prefix = f"TOKENRELAY_ROUTES__{name.upper().replace('-', '_')}__"
        env[prefix + "TARGETS"] = targets
        for key, value in settings.items():
            env[prefix + key] = value
    return env


def body(route: str) -> bytes:
    return msgspec.json.encode(
        {
            "model": route.upper().replace("-", "_").lower(),
            "stream": True,
            "messages": [{"role": "user", "content": "Explain hedged requests in a paragraph."}],
        }
    )


async def one(session: aiohttp.ClientSession, url: str, route: str, sample: Sample) -> None:
    started = time.perf_counter()
    async with session.post(url, data=body(route), headers=HEADERS) as response:
        if response.status != 200:
            sample.failures += 1
            await response.read()
            return
        async for chunk in response.content.iter_any():
            if b'"content":"' in chunk:
                sample.ttft.append((time.perf_counter() - started) * 1000)
                break
        await response.read()
        if "hedged_out" in response.headers.get("x-tokenrelay-attempts", ""):
            sample.hedged += 1


async def measure(url: str, sim_url: str, requests: int, concurrency: int) -> tuple[str, int]:
    samples = {route: Sample() for route in ROUTES}
    upstream: dict[str, int] = {}
    rng = random.Random(11)
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
        gate = asyncio.Semaphore(concurrency)

        async def guarded(route: str, sample: Sample) -> None:
            async with gate:
                await asyncio.sleep(rng.uniform(0, 0.02))
                await one(session, url, route, sample)

        for route in ROUTES:  # warm-up: pools, and the 20 observations a percentile needs
            await asyncio.gather(*(guarded(route, Sample()) for _ in range(40)))
        rounds = 5
        for _ in range(rounds):
            for route, sample in samples.items():
                await session.post(sim_url + "/stats/reset")
                per_round = requests // rounds
                await asyncio.gather(*(guarded(route, sample) for _ in range(per_round)))
                async with session.get(sim_url + "/stats") as stats:
                    counts = (await stats.json())["requests"]
                upstream[route] = upstream.get(route, 0) + sum(counts.values())
    lines = [
        "| route | requests | TTFT p50 (ms) | p90 | p99 | max | hedged | upstream requests per"
        " request | failures |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for route, sample in samples.items():
        n = len(sample.ttft) + sample.failures
        lines.append(
            f"| {route} | {n} | {pct(sample.ttft, 50):.1f} | {pct(sample.ttft, 90):.1f}"
            f" | {pct(sample.ttft, 99):.1f} | {max(sample.ttft, default=float('nan')):.1f}"
            f" | {sample.hedged / max(1, n):.1%} | {upstream[route] / max(1, n):.2f}"
            f" | {sample.failures} |"
        )
    return "\n".join(lines), sum(sample.failures for sample in samples.values())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small counts: a smoke run")
    parser.add_argument("--requests", type=int, default=1000, help="per route")
    parser.add_argument("--concurrency", type=int, default=20)
    parser.add_argument("--slow-fraction", type=float, default=0.1)
    parser.add_argument("--slow-ms", type=float, default=1000)
    args = parser.parse_args()
    requests = 50 if args.quick else args.requests
    sim_port, gateway_port = free_port(), free_port()
    sim_url = f"http://127.0.0.1:{sim_port}"
    gateway_url = f"http://127.0.0.1:{gateway_port}"
    env = {**gateway_env(sim_url), **routes_env(args.slow_fraction, args.slow_ms)}
    print(
        f"simulator: {SIM_KNOBS}; primary slow {args.slow_fraction:.0%} of the time "
        f"({args.slow_ms:g} ms to first token); {requests} requests per route, "
        f"concurrency {args.concurrency}",
        file=sys.stderr,
    )
    with (
        process(simulator_command(sim_port), env, sim_url),
        process(gateway_command(gateway_port), env, gateway_url),
    ):
        table, failures = asyncio.run(
            measure(gateway_url + "/v1/chat/completions", sim_url, requests, args.concurrency)
        )
    print(table)
    if failures:
        raise SystemExit(f"{failures} requests failed; the figures above are not comparable")


if __name__ == "__main__":
    main()

"""What load balancing costs a request, in one process: the router's walk to an open stream
(``Router.open_stream``, the stream then closed) over three targets whose upstream answers at
once, for an ungrouped route and for one group of three under each strategy.

    PYTHONPATH=src .venv/bin/python bench/balance.py

Run it with ``PYTHONPATH`` on a tree without load balancing too (it then times the ungrouped
route only): the two ungrouped figures show what the feature costs a route that does not use it.
The figure is the median of several repetitions, in microseconds per request.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from collections.abc import AsyncGenerator, Mapping

import msgspec

from tokenrelay.http_client import UpstreamPool
from tokenrelay.model import Event, Finish, Message, Request, TextDelta, TextPart
from tokenrelay.providers import Endpoint, Provider
from tokenrelay.router import Router
from tokenrelay.settings import ProviderSettings, RouteSettings, Settings, TargetSettings

GROUPED = "group" in TargetSettings.__struct_fields__
STRATEGIES = ("weighted", "least_busy", "latency", "prefix_affinity")
NAMES = ("d1", "d2", "d3")


class Instant(Provider):
    """An upstream whose answer is there at once: what is timed is the gateway's own work."""

    async def stream(
        self, body: bytes, headers: Mapping[str, str], endpoint: Endpoint | None = None
    ) -> AsyncGenerator[list[Event], None]:
        yield [TextDelta("ok"), Finish("stop")]


def settings() -> Settings:
    routes = {
        "plain": RouteSettings(targets=[TargetSettings(provider=n, model="m") for n in NAMES])
    }
    if GROUPED:
        for strategy in STRATEGIES:
            targets = [TargetSettings(provider=n, model="m", group="g") for n in NAMES]
            routes[strategy] = msgspec.convert(
                {"targets": targets, "groups": {"g": {"strategy": strategy}}},
                RouteSettings,
                from_attributes=True,
            )
    providers = {n: ProviderSettings(kind="openai", base_url="http://x.invalid") for n in NAMES}
    return Settings(providers=providers, routes=routes)


async def per_request_us(router: Router, name: str, n: int = 5000, repeats: int = 7) -> float:
    route = router.routes[name]
    times = []
    for _ in range(repeats):
        started = time.perf_counter_ns()
        for _ in range(n):
            request = Request(
                dialect="openai", model=name, messages=[Message("user", [TextPart("hi")])]
            )
            opened = await router.open_stream(route, request, {})
            await opened.events.aclose()
            getattr(opened, "release", lambda: None)()
        times.append((time.perf_counter_ns() - started) / n / 1000)
    return statistics.median(times)


async def main() -> None:
    config = settings()
    pool = UpstreamPool()
    providers = {n: Instant(n, p, pool, idle_timeout=60.0) for n, p in config.providers.items()}
    router = Router(config, providers)
    for name in router.routes:
        print(f"{name:16s} {await per_request_us(router, name):7.1f} µs per request")
    await pool.close()


if __name__ == "__main__":
    asyncio.run(main())

"""Scaling out on one machine: 1, 2 and 3 tokenrelay instances sharing the machine's Redis (and
so one rate-limit window, one breaker), each on its own port, the client spreading streams over
them round robin as a load balancer would; direct to the simulator in the same rounds.

    .venv/bin/python bench/scaling.py [--levels 50,200] [--rounds 2]

Reports streams per second and added time to first token (p50, p99) per instance count and
concurrency. On a 2-core machine the client, the simulator and every instance share the two
cores, so this shows how instances share a machine, not how they would scale across hosts.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import secrets
import sys
import time
from collections.abc import Iterator

import aiohttp

from run import (
    HEADERS,
    SIM_KNOBS,
    Sample,
    compile_bytecode,
    free_port,
    gateway_command,
    gateway_env,
    one_stream,
    pct,
    process,
    simulator_command,
)

REDIS = "redis://127.0.0.1:6379/0"


@contextlib.contextmanager
def instances(count: int, sim_url: str) -> Iterator[list[str]]:
    env = gateway_env(sim_url)
    env["TOKENRELAY_REDIS_URL"] = REDIS
    env["TOKENRELAY_LIMITS__KEY_PREFIX"] = f"tokenrelay-bench-{secrets.token_hex(4)}"
    env["TOKENRELAY_LIMITS__REDIS_TIMEOUT"] = "5"  # loops lag under saturation; see the README
    with contextlib.ExitStack() as stack:
        urls = []
        for _ in range(count):
            port = free_port()
            url = f"http://127.0.0.1:{port}"
            stack.enter_context(process(gateway_command(port), env, url))
            urls.append(url)
        yield urls


async def batch(
    session: aiohttp.ClientSession, urls: list[str], streams: int, concurrency: int
) -> Sample:
    """``streams`` streams, ``concurrency`` at a time, spread over ``urls`` round robin, the
    first wave's starts spread over one stream's length as bench/run.py does."""
    sample = Sample()
    gate = asyncio.Semaphore(concurrency)
    ramp = (SIM_KNOBS["ttft_ms"] + SIM_KNOBS["tokens"] * SIM_KNOBS["token_delay_ms"]) / 1000
    targets = itertools.cycle(urls)

    async def one(delay: float, url: str) -> None:
        async with gate:
            await asyncio.sleep(delay)
            await one_stream(session, url + "/v1/chat/completions", sample, HEADERS)

    delays = [i * ramp / concurrency if i < concurrency else 0.0 for i in range(streams)]
    started = time.perf_counter()
    await asyncio.gather(*(one(d, next(targets)) for d in delays))
    sample.wall = time.perf_counter() - started
    sample.streams = streams
    return sample


async def measure(sim_url: str, counts: list[int], levels: list[int], rounds: int) -> list[str]:
    lines = [
        "| instances | concurrency | streams/s direct / tokenrelay | added TTFT p50 / p99 |"
        " failures |",
        "| --- | --- | --- | --- | --- |",
    ]
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
        for count in counts:
            with instances(count, sim_url) as urls:
                await batch(session, urls, 40, 20)  # warm every instance
                for concurrency in levels:
                    streams = concurrency * 2
                    direct, through = Sample(), Sample()
                    for _ in range(rounds):
                        for target, into in (([sim_url], direct), (urls, through)):
                            got = await batch(session, target, streams, concurrency)
                            into.ttft += got.ttft
                            into.wall += got.wall
                            into.streams += got.streams
                            into.failures += got.failures
                    lines.append(
                        f"| {count} | {concurrency} | {direct.streams / direct.wall:.0f} / "
                        f"{through.streams / through.wall:.0f} | "
                        f"{pct(through.ttft, 50) - pct(direct.ttft, 50):+.1f} / "
                        f"{pct(through.ttft, 99) - pct(direct.ttft, 99):+.1f} ms | "
                        f"{direct.failures} / {through.failures} |"
                    )
                    print(f"  {count} instance(s), c={concurrency}: done", file=sys.stderr)
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--levels", default="50,200")
    parser.add_argument("--instances", default="1,2,3")
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    compile_bytecode()
    sim_port = free_port()
    sim_url = f"http://127.0.0.1:{sim_port}"
    with process(simulator_command(sim_port), gateway_env(sim_url), sim_url):
        lines = asyncio.run(
            measure(
                sim_url,
                [int(n) for n in args.instances.split(",")],
                [int(c) for c in args.levels.split(",")],
                args.rounds,
            )
        )
    print("\n".join(lines))


if __name__ == "__main__":
    main()

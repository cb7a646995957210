"""How soon a Stop (``DELETE /v1/streams/{id}``) on a resumable route stops the upstream: sent to
the instance running the stream, and to another instance sharing Redis (the cancel goes through
``{prefix}:resume:cancel:{instance}``, which the owner waits on with ``BLPOP``).

    PYTHONPATH=src .venv/bin/python bench/resume_cancel.py [--runs 30]

The simulator, a private ``redis-server`` and two gateways run as separate processes; this
process is the client. Each run starts a long stream on the first gateway, reads 5 events,
closes the connection (the page's fetch aborted: the stream goes on for its grace), then sends
the DELETE; the delay is from just before the DELETE is sent to the moment the simulator sees
its connection close (both clocks are the machine's monotonic clock).
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack

import aiohttp
import msgspec

from run import free_port, gateway_command, gateway_env, process, simulator_command
from tokenrelay.dialects.sse import SSEParser

TARGET = [
    {
        "provider": "anthropic",
        "model": "claude-sonnet-5-5",
        "headers": {"x-sim-tokens": "2000", "x-sim-token-delay-ms": "10"},
    }
]
BODY = msgspec.json.encode(
    {
        "model": "resumable",
        "max_tokens": 4000,
        "stream": True,
        "messages": [{"role": "user", "content": "A long story"}],
    }
)


def resume_env(sim_url: str, redis_url: str, name: str) -> dict[str, str]:
    env = gateway_env(sim_url)
    env.update(
        {
            "TOKENRELAY_ROUTES__RESUMABLE__TARGETS": msgspec.json.encode(TARGET).decode(),
            "TOKENRELAY_ROUTES__RESUMABLE__RESUME__GRACE": "30",
            "TOKENRELAY_REDIS_URL": redis_url,
            "TOKENRELAY_LIMITS__KEY_PREFIX": "bench-resume-cancel",
            "TOKENRELAY_DATABASE_URL": f"sqlite:///{tempfile.gettempdir()}/bench-cancel-{name}.db",
        }
    )
    return env


async def one_cancel(http: aiohttp.ClientSession, owner: str, via: str, sim_url: str) -> float:
    """ms from the DELETE sent (to ``via``) to the upstream closed, for a stream on ``owner``."""
    await http.post(sim_url + "/stats/reset")
    response = await http.post(
        owner + "/v1/messages", data=BODY, headers={"content-type": "application/json"}
    )
    stream_id = response.headers["x-tokenrelay-stream-id"]
    parser, seen = SSEParser(), 0
    async for chunk in response.content.iter_any():
        seen += len(parser.feed(chunk))
        if seen >= 5:
            break
    response.close()
    await asyncio.sleep(0.1)  # the stream is detached now, generating for its grace
    sent = time.monotonic()
    async with http.delete(f"{via}/v1/streams/{stream_id}") as deleted:
        assert deleted.status == 204, await deleted.text()
    for _ in range(500):
        async with http.get(sim_url + "/stats") as stats_response:
            stats = await stats_response.json()
        if stats["disconnects"]:
            return float((stats["disconnects"][-1]["at_monotonic"] - sent) * 1000)
        await asyncio.sleep(0.002)
    return float("nan")


async def measure(one: str, two: str, sim_url: str, runs: int) -> list[str]:
    rows = ["| DELETE sent to | runs | p50 ms | max ms |", "| --- | ---: | ---: | ---: |"]
    async with aiohttp.ClientSession() as http:
        for label, via in (("the instance running the stream", one), ("another instance", two)):
            delays = [await one_cancel(http, one, via, sim_url) for _ in range(runs)]
            rows.append(
                f"| {label} | {runs} | {statistics.median(delays):.1f} | {max(delays):.1f} |"
            )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=30)
    args = parser.parse_args()
    binary = shutil.which("redis-server") or "/usr/bin/redis-server"
    folder = tempfile.mkdtemp(prefix="tokenrelay-bench-redis-")
    redis_port, sim_port, one_port, two_port = (free_port() for _ in range(4))
    command = [binary, "--port", str(redis_port), "--save", "", "--appendonly", "no"]
    redis = subprocess.Popen(
        [*command, "--dir", folder], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    sim_url = f"http://127.0.0.1:{sim_port}"
    redis_url = f"redis://127.0.0.1:{redis_port}/0"
    one, two = f"http://127.0.0.1:{one_port}", f"http://127.0.0.1:{two_port}"
    try:
        with ExitStack() as stack:
            stack.enter_context(process(simulator_command(sim_port), gateway_env(sim_url), sim_url))
            for port, url, name in ((one_port, one, "one"), (two_port, two, "two")):
                env = resume_env(sim_url, redis_url, name)
                stack.enter_context(process(gateway_command(port), env, url))
            rows = asyncio.run(measure(one, two, sim_url, args.runs))
        print("\n".join(rows), flush=True)
    finally:
        redis.terminate()
        redis.wait(10)
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())

"""One cache hit's CPU inside the gateway, without HTTP: the ASGI app called directly (as
uvicorn calls it) for a few thousand hits of one stored answer, timed with the process's CPU
clock, optionally under cProfile.

    PYTHONPATH=src .venv/bin/python bench/cache_profile.py [--hits 3000] [--profile]

The simulator answers the one miss that fills the cache (in this process, on loopback); every
other request is a hit on the Chat Completions front, streamed, ``replay = "instant"``. The
figure excludes the HTTP server's parsing and the socket writes, which a hit shares with every
other request.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import pstats
import statistics
import sys
import tempfile
import time
from collections.abc import MutableMapping
from typing import Any

import msgspec

from tokenrelay.app import create_app
from tokenrelay.settings import load
from tokenrelay.simulator import SimulatorSettings, start

BODY = msgspec.json.encode(
    {
        "model": "cached",
        "stream": True,
        "messages": [{"role": "user", "content": "Explain server-sent events in one paragraph."}],
    }
)
HEADERS = [
    (b"host", b"127.0.0.1"),
    (b"content-type", b"application/json"),
    (b"authorization", b"Bearer bench"),
    (b"content-length", str(len(BODY)).encode()),
]


def environ(sim_url: str, scratch: str) -> dict[str, str]:
    return {
        "TOKENRELAY_PROVIDERS__OPENAI__BASE_URL": sim_url + "/v1",
        "TOKENRELAY_PROVIDERS__OPENAI__API_KEY": "bench",
        "TOKENRELAY_LOG_LEVEL": "warning",
        "TOKENRELAY_ANONYMOUS_LIMIT": "100000000/minute",
        "TOKENRELAY_DATABASE_URL": f"sqlite:///{scratch}/bench.db",
        "TOKENRELAY_ROUTES__CACHED__TARGETS": "openai:gpt-5.5",
        "TOKENRELAY_ROUTES__CACHED__CACHE__MODE": "on",
        "TOKENRELAY_ROUTES__CACHED__CACHE__SAMPLED": "true",
    }


async def one_request(app: Any) -> list[dict[str, Any]]:
    """The request through the ASGI app; the messages it sent."""
    sent: list[dict[str, Any]] = []
    done = asyncio.Event()
    requested = False

    async def receive() -> dict[str, Any]:
        nonlocal requested
        if not requested:
            requested = True
            return {"type": "http.request", "body": BODY, "more_body": False}
        await done.wait()
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/v1/chat/completions",
        "raw_path": b"/v1/chat/completions",
        "query_string": b"",
        "root_path": "",
        "headers": HEADERS,
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8080),
    }
    await app(scope, receive, send)
    done.set()
    return sent


async def run(hits: int, profile: bool) -> None:
    sim = await start(SimulatorSettings(ttft_ms=1, tokens=64, token_delay_ms=0))
    scratch = tempfile.mkdtemp(prefix="tokenrelay-cache-profile-")
    app = create_app(load(environ=environ(sim.url, scratch)))
    lifespan: asyncio.Queue[dict[str, str]] = asyncio.Queue()
    await lifespan.put({"type": "lifespan.startup"})
    started = asyncio.Event()

    async def lifespan_send(message: MutableMapping[str, Any]) -> None:
        if message["type"] == "lifespan.startup.complete":
            started.set()

    life = asyncio.create_task(app({"type": "lifespan"}, lifespan.get, lifespan_send))
    await started.wait()
    try:
        await one_request(app)  # the miss that stores the answer
        assert app.gateway.cache is not None
        await app.gateway.cache.idle()
        for _ in range(200):  # warm
            sent = await one_request(app)
        head = sent[0]["headers"]
        assert (b"x-tokenrelay-cache", b"hit") in head, head
        body = b"".join(m.get("body", b"") for m in sent[1:])
        print(f"a hit: {len(sent)} sends, {len(body)} bytes", file=sys.stderr)
        profiler = cProfile.Profile() if profile else None
        rounds = []
        for _ in range(5):
            if profiler is not None:
                profiler.enable()
            cpu = time.process_time()
            for _ in range(hits // 5):
                await one_request(app)
            rounds.append((time.process_time() - cpu) / (hits // 5) * 1e6)
            if profiler is not None:
                profiler.disable()
        print(
            f"CPU per hit (in-process, no HTTP): median {statistics.median(rounds):.0f} µs,"
            f" min {min(rounds):.0f} µs"
            f" of 5 rounds ({', '.join(f'{r:.0f}' for r in rounds)})"
        )
        if profiler is not None:
            stats = pstats.Stats(profiler)
            stats.sort_stats("tottime").print_stats(35)
            stats.sort_stats("cumulative").print_stats(60)
    finally:
        await lifespan.put({"type": "lifespan.shutdown"})
        await life
        await sim.stop()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hits", type=int, default=3000)
    parser.add_argument("--profile", action="store_true", help="print cProfile's top functions")
    args = parser.parse_args()
    asyncio.run(run(args.hits, args.profile))

"""What the gate adds to a request's time to first token: ``Gate.admit`` + ``Gate.settle`` for
typical requests, in process, on the built-in default route (identity, the in-process limiter,
the 2000-character cap and the block-mode screen).

    .venv/bin/python bench/gate.py [--requests 2000]
"""

from __future__ import annotations

import argparse
import asyncio
import random
import tempfile
import time

import msgspec

from tokenrelay.dialects import openai as dialect
from tokenrelay.gate.gatekeeper import Gate
from tokenrelay.model import Usage
from tokenrelay.providers import UpstreamPool, build_providers
from tokenrelay.router import Router
from tokenrelay.settings import load

WORDS = [
    "please",
    "summarise",
    "the",
    "attached",
    "report",
    "and",
    "list",
    "the",
    "three",
    "main",
    "risks",
    "for",
    "the",
    "project",
    "team",
    "with",
    "one",
    "sentence",
    "each",
    "about",
    "the",
    "budget",
    "the",
    "schedule",
    "and",
    "the",
    "vendor",
    "contract",
    "terms",
]


def body(text: str) -> bytes:
    return msgspec.json.encode(
        {"model": "default", "messages": [{"role": "user", "content": text}], "stream": True}
    )


def prompt(chars: int, rng: random.Random) -> str:
    out: list[str] = []
    while sum(len(word) + 1 for word in out) < chars:
        out.append(rng.choice(WORDS))
    return " ".join(out)[:chars]


async def measure(requests: int) -> None:
    scratch = tempfile.mkdtemp(prefix="tokenrelay-bench-")
    settings = load(
        environ={
            "TOKENRELAY_ANONYMOUS_LIMIT": "100000000/minute",
            "TOKENRELAY_DATABASE_URL": f"sqlite:///{scratch}/gate.db",
        }
    )
    pool = UpstreamPool()
    router = Router(settings, build_providers(dict(settings.providers), pool, 60))
    gate = Gate.create(settings)
    rng = random.Random(3)
    cases = {
        "short prompt (60 chars)": [prompt(60, rng) for _ in range(requests)],
        "2000-character prompt": [prompt(2000, rng) for _ in range(requests)],
    }
    headers = {"content-type": "application/json"}
    print("| request | gate p50 (µs) | p99 (µs) |\n| --- | --- | --- |")
    for name, texts in cases.items():
        timings = []
        for i, text in enumerate(texts):
            request = dialect.parse_request(body(text))
            route = router.resolve(request)
            peer = f"10.0.{i % 250}.{i % 200}"
            started = time.perf_counter()
            admission = await gate.admit(route, request, headers, peer)
            await gate.settle(admission, Usage(input_tokens=20, output_tokens=64))
            timings.append((time.perf_counter() - started) * 1e6)
        timings.sort()
        p50, p99 = timings[len(timings) // 2], timings[int(len(timings) * 0.99)]
        print(f"| {name} | {p50:.0f} | {p99:.0f} |")
    await gate.close()
    await pool.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=2000)
    args = parser.parse_args()
    asyncio.run(measure(args.requests))


if __name__ == "__main__":
    main()

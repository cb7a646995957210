"""What the pull-based relay's machinery costs per token, apart from the work: a chunk arriving
in a protocol callback wakes the request's task through a future, the task resumes through its
chain of coroutines (uvicorn's ``run_asgi``, ``Dispatch``, the endpoint, ``RelayCall.run``,
``_serve``, ``_stream``) and the provider's async generator, then writes; against the same
chunk handled where it arrives, in the callback (a push-based relay's shape).

    .venv/bin/python bench/wakeup_chain.py

Both sides do no work on the chunk and write nowhere; each next chunk is scheduled with
``call_soon`` once the previous one is handled, as the event loop delivers reads. On uvloop.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from collections.abc import AsyncIterator, Callable

import uvloop

TOKENS = 50_000
CHUNK = b"data: {}\n\n"


class Source:
    """Stands in for ``http_client._Connection``: chunks land in ``feed``, a waiter is woken."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.chunks: list[bytes] = []
        self.waiter: asyncio.Future[None] | None = None
        self.left = TOKENS

    def feed(self) -> None:
        self.chunks.append(CHUNK)
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def next_chunk(self) -> bytes | None:
        while not self.chunks:
            if self.left == 0:
                return None
            self.waiter = self.loop.create_future()
            await self.waiter
            self.waiter = None
        data = self.chunks.pop()
        return data


async def provider(source: Source) -> AsyncIterator[list[bytes]]:
    while (chunk := await source.next_chunk()) is not None:
        yield [chunk]


async def relay(source: Source, sink: Callable[[bytes], None]) -> None:
    events = provider(source)
    loop = source.loop
    while True:
        source.left -= 1
        if source.left >= 0:
            loop.call_soon(source.feed)  # the next read, once this one is handled
        try:
            batch = await anext(events)
        except StopAsyncIteration:
            return
        for chunk in batch:
            sink(chunk)


async def nest(depth: int, source: Source, sink: Callable[[bytes], None]) -> None:
    if depth == 0:
        await relay(source, sink)
    else:
        await nest(depth - 1, source, sink)


async def pull(depth: int) -> float:
    source = Source(asyncio.get_running_loop())
    started = time.perf_counter()
    await nest(depth, source, lambda chunk: None)
    return (time.perf_counter() - started) / TOKENS * 1e6


async def push() -> float:
    loop = asyncio.get_running_loop()
    done = loop.create_future()
    left = TOKENS

    def sink(chunk: bytes) -> None:
        pass

    def feed() -> None:
        nonlocal left
        sink(CHUNK)  # handled where it arrived
        left -= 1
        if left:
            loop.call_soon(feed)
        else:
            done.set_result(None)

    started = time.perf_counter()
    loop.call_soon(feed)
    await done
    return (time.perf_counter() - started) / TOKENS * 1e6


def main() -> None:
    rows: dict[str, list[float]] = {"push (callback)": [], "pull, 0 frames above": []}
    rows["pull, 6 frames above (as served)"] = []
    for _ in range(5):
        rows["push (callback)"].append(uvloop.run(push()))
        rows["pull, 0 frames above"].append(uvloop.run(pull(0)))
        rows["pull, 6 frames above (as served)"].append(uvloop.run(pull(6)))
    print("| per token | µs (median of 5 x 50,000) |\n| --- | --- |")
    for name, values in rows.items():
        print(f"| {name} | {statistics.median(values):.2f} |")


if __name__ == "__main__":
    main()

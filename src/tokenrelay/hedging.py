"""Hedged attempts: start the next contender when the current one has produced no content after
a delay (or has already failed), serve whichever produces content first, and cancel the rest at
once so their upstream connections close and nothing keeps generating."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncGenerator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from tokenrelay.model import Error, Event

K = TypeVar("K")
Stream = tuple[Any, list[Event]]  # (the event generator, the events read so far)
Outcome = tuple[Stream, None] | tuple[None, Error]


@dataclass(slots=True)
class Contender(Generic[K]):
    key: K
    start: Callable[[], Awaitable[Outcome]]


@dataclass(slots=True)
class Loser(Generic[K]):
    key: K
    ms: float  # how long it ran before it was cancelled


@dataclass(slots=True)
class Result(Generic[K]):
    """A contender that finished: with a stream (the winner, ``cancelled`` lists the others,
    already closed) or with an error (the race goes on while others run or wait)."""

    key: K
    started: float
    stream: Stream | None = None
    error: Error | None = None
    cancelled: list[Loser[K]] = field(default_factory=list)


async def race(contenders: Sequence[Contender[K]], delay: float) -> AsyncGenerator[Result[K], None]:
    """Yield each contender's result as it finishes, ending after the first stream. Contender
    ``i + 1`` starts ``delay`` seconds after contender ``i``, or at once when none is running.
    Closing the generator early cancels whatever still runs."""
    running: dict[asyncio.Task[Outcome], tuple[K, float]] = {}
    waiting = list(contenders)
    last_start = 0.0

    def launch() -> None:
        nonlocal last_start
        contender = waiting.pop(0)
        last_start = time.perf_counter()
        running[asyncio.ensure_future(contender.start())] = (contender.key, last_start)

    launch()
    try:
        while running or waiting:
            if not running:
                launch()
                continue
            timeout = None
            if waiting:
                timeout = max(0.0, delay - (time.perf_counter() - last_start))
            done, _ = await asyncio.wait(
                running, timeout=timeout, return_when=asyncio.FIRST_COMPLETED
            )
            if not done:
                launch()
                continue
            # Report failures first, so a winner finishing in the same instant still wins.
            finished = sorted(done, key=lambda task: task.result()[0] is not None)
            for task in finished:
                key, started = running.pop(task)
                stream, error = task.result()
                if stream is None:
                    yield Result(key, started, error=error)
                    continue
                cancelled = await _cancel(running)
                yield Result(key, started, stream=stream, cancelled=cancelled)
                return
    finally:
        await _cancel(running)


async def _cancel(running: dict[asyncio.Task[Outcome], tuple[K, float]]) -> list[Loser[K]]:
    """Cancel every running contender and wait until each has closed its upstream; a stream
    that arrived in the meantime is closed as well."""
    if not running:
        return []
    now = time.perf_counter()
    tasks = list(running)
    losers = [Loser(key, (now - started) * 1000) for key, started in running.values()]
    running.clear()
    for task in tasks:
        task.cancel()
    for outcome in await asyncio.gather(*tasks, return_exceptions=True):
        if isinstance(outcome, tuple) and outcome[0] is not None:
            await outcome[0][0].aclose()
    return losers

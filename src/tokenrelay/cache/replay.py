"""A hit's answer as the relay reads a live one: event batches, at once or at the original pace."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncGenerator

from tokenrelay.cache.entry import Answer
from tokenrelay.model import Event


async def replay(answer: Answer, *, start: int = 1) -> AsyncGenerator[list[Event], None]:
    """The answer's batches from ``start`` on (the relay sends the first one itself), each
    when its original offset from the first has passed."""
    began = time.monotonic()
    for at, events in answer.batches[start:]:
        wait = at - (time.monotonic() - began)
        if wait > 0:
            await asyncio.sleep(wait)
        yield list(events)


async def nothing() -> AsyncGenerator[list[Event], None]:
    """No batches after the first: an instant hit's ``pending`` holds the whole answer."""
    return
    yield  # an async generator (the relay closes it like any other)

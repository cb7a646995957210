"""A hit's answer as the relay reads a live one: event batches, at once or at the original pace."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncGenerator

from tokenrelay.cache.entry import Entry, events_of
from tokenrelay.model import Event


async def replay(entry: Entry, *, paced: bool, start: int = 1) -> AsyncGenerator[list[Event], None]:
    """The entry's batches from ``start`` on (the relay sends the first one itself); ``paced``
    waits until each batch's original offset from the first."""
    began = time.monotonic()
    for batch in entry.batches[start:]:
        if paced:
            wait = batch.at - (time.monotonic() - began)
            if wait > 0:
                await asyncio.sleep(wait)
        yield events_of(batch)

"""A lighter ``asyncio.Event`` for what a connection or a stream waits on once at most: an
``asyncio.Event`` allocates a 64-slot deque (about 600 bytes) for its waiters up front, and a
process holding ten thousand slow streams holds one per stream (BENCHMARKS.md, "Ten thousand
slow streams").
"""

from __future__ import annotations

import asyncio


class Signal:
    """``asyncio.Event``'s ``set``, ``clear``, ``is_set`` and ``wait``, holding its waiters'
    futures only while there are any (usually one: the app's ``receive``)."""

    __slots__ = ("_value", "_waiters")

    def __init__(self) -> None:
        self._value = False
        self._waiters: list[asyncio.Future[None]] | None = None

    def is_set(self) -> bool:
        return self._value

    def set(self) -> None:
        if not self._value:
            self._value = True
            waiters, self._waiters = self._waiters, None
            for waiter in waiters or ():
                if not waiter.done():
                    waiter.set_result(None)

    def clear(self) -> None:
        self._value = False

    async def wait(self) -> bool:
        if self._value:
            return True
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if self._waiters is None:
            self._waiters = [waiter]
        else:
            self._waiters.append(waiter)
        try:
            await waiter
        finally:
            if self._waiters is not None and waiter in self._waiters:
                self._waiters.remove(waiter)
                if not self._waiters:
                    self._waiters = None
        return True

"""Leaner stand-ins for three of the objects uvicorn's httptools protocol makes per connection,
used by ``http_edge``: with ten thousand slow streams on one process every byte of them counts
ten thousand times (BENCHMARKS.md, "Ten thousand slow streams").

An empty ``collections.deque`` allocates a 64-slot block (about 600 bytes) and an
``asyncio.Event`` holds one for its waiters; a connection had three of them: the queue of
pipelined requests (almost always empty), the write flow control's Event (waited on only when
the client reads slower than the stream writes) and the request cycle's message Event (one
waiter: the app's ``receive``). Each is replaced by what the same calls need.
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.flow_control import FlowControl


class Pipeline(list[Any]):
    """The pipelined requests waiting behind the one being answered: ``appendleft`` and ``pop``,
    as uvicorn calls them on its deque."""

    __slots__ = ()

    def appendleft(self, item: Any) -> None:
        self.insert(0, item)


class LazyFlowControl(FlowControl):
    """uvicorn's write flow control, with its Event made only when a write first has to wait."""

    def __init__(self, transport: asyncio.Transport) -> None:
        self._transport = transport
        self.read_paused = False
        self.write_paused = False
        self._is_writable_event: asyncio.Event | None = None  # type: ignore[assignment]

    async def drain(self) -> None:
        event = self._is_writable_event
        if event is None:
            event = self._is_writable_event = asyncio.Event()
            if not self.write_paused:
                event.set()
        await event.wait()

    def pause_writing(self) -> None:
        if not self.write_paused:
            self.write_paused = True
            if self._is_writable_event is not None:
                self._is_writable_event.clear()

    def resume_writing(self) -> None:
        if self.write_paused:
            self.write_paused = False
            if self._is_writable_event is not None:
                self._is_writable_event.set()


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

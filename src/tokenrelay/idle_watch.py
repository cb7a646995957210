"""Idle timeouts for thousands of upstream streams on one timer of the event loop.

A stream that sends nothing for ``idle`` seconds is ended with a ``TimeoutError``. Each stream's
``IdleWatch`` only stores the time of its last chunk; an ``IdleWatches`` keeps the watches in a
heap by when they would expire and arms one loop timer for the earliest. When it fires, a watch
whose stream sent something since is put back at its new due time, one that did not is failed:
the same moment a timer per stream would have fired (the last chunk + ``idle``), without a
``TimerHandle`` (with its context copy, libuv timer and bound callback: about 0.5 KB and four
tracked objects) for every open stream.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import logging
import math
from typing import Protocol

log = logging.getLogger("tokenrelay.providers")

# Ended watches stay in the heap until they surface; it is rebuilt once they are this many and
# more than the live ones, so a busy gateway's heap stays within twice its open streams.
_COMPACT_AT = 1024


class Failing(Protocol):
    """What a watch ends: the upstream response (``http_client.Response.fail``)."""

    def fail(self, error: BaseException) -> None: ...


class IdleWatch:
    """One stream's: ``last`` is the loop time of its latest chunk (the stream sets it)."""

    __slots__ = ("last", "response")

    def __init__(self, response: Failing, now: float) -> None:
        self.response: Failing | None = response  # None once the stream ended
        self.last = now


class IdleWatches:
    """Every stream of one loop with the same ``idle`` seconds, on a single timer."""

    __slots__ = ("_at", "_count", "_ended", "_handle", "_heap", "clock", "idle", "loop")

    def __init__(self, loop: asyncio.AbstractEventLoop, idle: float) -> None:
        self.loop = loop
        self.idle = idle
        self.clock = loop.time  # the loop's clock, as its timers use; one bound method for all
        self._heap: list[tuple[float, int, IdleWatch]] = []  # (due, tie-break, watch)
        self._count = itertools.count()
        self._handle: asyncio.TimerHandle | None = None
        self._at = math.inf  # when the armed timer fires
        self._ended = 0  # ended watches still in the heap

    def watch(self, response: Failing) -> IdleWatch:
        """Start watching ``response``'s stream: it fails ``idle`` seconds after its last chunk
        unless ``end`` is called first."""
        watch = IdleWatch(response, self.clock())
        due = watch.last + self.idle
        heapq.heappush(self._heap, (due, next(self._count), watch))
        if due < self._at:
            self._arm(due)
        return watch

    def end(self, watch: IdleWatch) -> None:
        """The stream is over (or it is being closed): never fail it."""
        if watch.response is None:
            return
        watch.response = None
        self._ended += 1
        if self._ended > _COMPACT_AT and self._ended * 2 > len(self._heap):
            self._heap = [entry for entry in self._heap if entry[2].response is not None]
            heapq.heapify(self._heap)
            self._ended = 0

    def _arm(self, at: float) -> None:
        if self._handle is not None:
            self._handle.cancel()
        self._at = at
        self._handle = self.loop.call_at(at, self._sweep)

    def _sweep(self) -> None:
        self._handle, self._at = None, math.inf
        now = self.clock()
        heap, idle = self._heap, self.idle
        while heap and heap[0][0] <= now:
            watch = heapq.heappop(heap)[2]
            response = watch.response
            if response is None:
                self._ended -= 1
                continue
            due = watch.last + idle
            if now >= due:
                watch.response = None
                try:
                    response.fail(TimeoutError())
                except Exception:  # one stream's failure must not stop the others' timer
                    log.exception("ending an idle upstream stream failed")
            else:  # it sent something since: back in at its new time
                heapq.heappush(heap, (due, next(self._count), watch))
        while heap and heap[0][2].response is None:  # arm for a live stream, not an ended one
            heapq.heappop(heap)
            self._ended -= 1
        if heap:
            self._arm(heap[0][0])

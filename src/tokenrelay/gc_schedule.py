"""Full garbage collections on a clock instead of on allocation counts, under ``tokenrelay serve``.

CPython collects its oldest generation whenever a quarter more objects have survived into it
since the last time. Every stream in flight holds about 150 tracked objects (coroutines, tasks,
futures, protocol objects) that live as long as it does, so with 10,000 slow streams a process
holds 1.5 million, and a new quarter of them arrives every few thousand new streams: on the
2-core test machine each such collection stopped the event loop for about one second, every
few seconds (the slow-streams bench, BENCHMARKS.md). Here:

- what start-up built is frozen (``gc.freeze``): it lives as long as the process, so no
  collection scans it again;
- the young generations are collected as CPython does (cheap: they hold only new objects);
- the oldest is collected every ``gc_full_interval`` seconds (60 by default) by a timer,
  so a long pause, when there are that many objects, comes once a minute rather than every few
  seconds; what a stream leaves behind is freed by reference counting, not by this;
- a full collection that frees (next to) nothing doubles the wait before the next, up to
  ``STRETCH`` times the interval; one that frees more brings it back. A stream makes no cycles,
  open or ended (``bench/stream_memory.py --garbage``: 0 unreachable objects with 1,000 open
  and after they ended), so under a steady load the pauses come every few minutes.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import time

log = logging.getLogger("tokenrelay.gc")

_NEVER = 1 << 30  # young collections between two automatic full ones: never
# Fewer unreachable objects than this is a quiet collection (a cycle or two, not a leak).
QUIET = 10_000
# The longest wait between two full collections, in intervals: what cycles a new code path
# might start making stay at most this long (and the next collection shortens it again).
STRETCH = 5


class FullCollections:
    """The timer that collects the oldest generation every ``every`` seconds (longer while the
    collections find nothing) until ``close()``."""

    def __init__(self, every: float) -> None:
        self.every = every
        self.wait = every  # until the next full collection: every .. every * STRETCH
        self.found = 0  # unreachable objects the last one freed
        self.collections = 0
        self.last_pause = 0.0
        self._loop = asyncio.get_running_loop()
        self._threshold = gc.get_threshold()
        gc.collect()  # start-up's own garbage, before what is left is frozen
        gc.freeze()
        young, middle, _ = self._threshold
        gc.set_threshold(young, middle, _NEVER)
        self._handle: asyncio.TimerHandle | None = self._loop.call_later(every, self._collect)

    def _collect(self) -> None:
        started = time.perf_counter()
        found = self.found = gc.collect()
        self.last_pause = time.perf_counter() - started
        self.collections += 1
        quiet = found < QUIET
        self.wait = min(self.wait * 2, self.every * STRETCH) if quiet else self.every
        log.debug(
            "full collection: %d unreachable, %.1f ms; the next in %g s",
            found,
            self.last_pause * 1000,
            self.wait,
        )
        self._handle = self._loop.call_later(self.wait, self._collect)

    def close(self) -> None:
        """CPython's own schedule again (the frozen objects stay frozen: they are start-up's)."""
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
            gc.set_threshold(*self._threshold)


def install(every: float) -> FullCollections | None:
    """Start the schedule in the running loop; ``every`` <= 0 leaves CPython's own."""
    if every <= 0:
        return None
    return FullCollections(every)

"""Event-loop lag: how late the loop runs a callback that asked to run at a given time. Every
stream of a process shares one loop, so its lag is the delay every token and every new request
waits behind the others' work; ten thousand slow streams on one process must keep it small.

A timer re-arms itself every ``interval`` seconds and records how much later than asked it ran:
a handful of callbacks a second, whatever the load (nothing per stream or per token). uvloop's
timers have a one-millisecond resolution, so lags under a millisecond read as 0 to 1 ms.
``/metrics`` shows a histogram (``tokenrelay_event_loop_lag_seconds``) and the largest lag of
the last window (``tokenrelay_event_loop_lag_max_seconds``), read through ``LoopLagReporter``.

The usual cause of a long lag in a process holding thousands of streams is a full garbage
collection (``gc_schedule``), so their pauses are shown beside it
(``tokenrelay_gc_full_pause_seconds``): a ``gc.callbacks`` hook, two calls per collection that
return at once for the young generations.
"""

from __future__ import annotations

import asyncio
import gc
from time import perf_counter
from typing import Any

from tokenrelay.observe.prometheus import Gauge, Histogram, Metric

# Lag bounds in seconds: fine below the 10 ms target, coarse above it.
LAG_BUCKETS = (0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.015, 0.025, 0.05, 0.1, 0.25, 0.5, 1)
WINDOW_SECONDS = 60.0  # the max gauge shows the worst lag of roughly this long


class LoopLagMonitor:
    """Samples the running loop's lag every ``interval`` seconds until ``close()``."""

    __slots__ = (
        "_due",
        "_handle",
        "_loop",
        "_window_max",
        "_window_prev",
        "_window_start",
        "histogram",
        "interval",
        "samples",
    )

    def __init__(self, interval: float = 0.1) -> None:
        if interval <= 0:
            raise ValueError("interval must be > 0")
        self.interval = interval
        self.histogram = Histogram(
            "tokenrelay_event_loop_lag_seconds",
            "How late the event loop ran a timer sampled every metrics.loop_lag_interval "
            "seconds: the wait every stream's next token and every new request share.",
            (),
            LAG_BUCKETS,
        )
        self.samples = 0
        self._loop = asyncio.get_running_loop()
        self._window_start = perf_counter()
        self._window_max = 0.0  # the current window's worst lag
        self._window_prev = 0.0  # the previous window's, so a fresh window does not read 0
        # The clock is perf_counter, not loop.time(): uvloop's is cached once per loop turn, so
        # it would miss the time spent by the callbacks that ran before this one.
        self._due = self._window_start + interval
        self._handle: asyncio.TimerHandle | None = self._loop.call_later(interval, self._tick)

    def _tick(self) -> None:
        now = perf_counter()
        lag = now - self._due
        if lag < 0:
            lag = 0.0
        self.histogram.observe(value=lag)
        self.samples += 1
        if now - self._window_start >= WINDOW_SECONDS:
            self._window_prev, self._window_max, self._window_start = self._window_max, 0.0, now
        if lag > self._window_max:
            self._window_max = lag
        self._due = now + self.interval
        self._handle = self._loop.call_later(self.interval, self._tick)

    @property
    def recent_max(self) -> float:
        """The worst lag of the current and the previous window."""
        return max(self._window_max, self._window_prev)

    def close(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None


class FullCollectionPauses:
    """How long each collection of the oldest generation took, until ``close()``."""

    def __init__(self) -> None:
        self.histogram = Histogram(
            "tokenrelay_gc_full_pause_seconds",
            "How long each full garbage collection stopped the process (every stream waits).",
            (),
            LAG_BUCKETS,
        )
        self._started = 0.0
        gc.callbacks.append(self._hook)

    def _hook(self, phase: str, info: dict[str, Any]) -> None:
        if info["generation"] != 2:
            return
        if phase == "start":
            self._started = perf_counter()
        elif self._started:
            self.histogram.observe(value=perf_counter() - self._started)
            self._started = 0.0

    def close(self) -> None:
        if self._hook in gc.callbacks:
            gc.callbacks.remove(self._hook)


class LoopLagReporter:
    """The monitor's numbers for ``/metrics`` (a ``metrics.Reporter``)."""

    def __init__(self, monitor: LoopLagMonitor, pauses: FullCollectionPauses | None = None) -> None:
        self.monitor = monitor
        self.pauses = pauses
        self.max = Gauge(
            "tokenrelay_event_loop_lag_max_seconds",
            "The largest event-loop lag of the last one to two minutes.",
        )
        self.max.merge = "max"

    def __call__(self) -> list[Metric]:
        self.max.set(value=self.monitor.recent_max)
        families: list[Metric] = [self.monitor.histogram, self.max]
        if self.pauses is not None:
            families.append(self.pauses.histogram)
        return families

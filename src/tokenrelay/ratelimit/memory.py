"""Counters in this process: the default, and what every request pays before the upstream call.

This is written here rather than taken from ``limits.aio.storage.MemoryStorage`` because of
cost, measured (bench/ratelimit.py): that store schedules an expiry sweep after every hit which
moves to a worker thread once per key, so under a live event loop each request costs about
100 µs of loop time and a thread hop, where these structures cost a few microseconds. The
algorithms are the same as the Redis store's (a sliding log for requests, a sliding-window
counter for tokens), so both stores pass the same tests.

Expiry without sweeps: the logs of one window length sit in an ``OrderedDict`` kept in
last-hit order, which is also expiry order, so dropping the dead ones costs O(1) per call.
"""

from __future__ import annotations

import time
from collections import OrderedDict, deque
from collections.abc import Sequence

from tokenrelay.ratelimit.base import TokenUsage, Usage, Window


class MemoryStore:
    shared = False
    errors: tuple[type[BaseException], ...] = ()  # nothing to fail

    def __init__(self) -> None:
        # window seconds -> key -> hit times (monotonic), oldest first
        self._logs: dict[int, OrderedDict[str, deque[float]]] = {}
        # window seconds -> key -> [window index, previous total, current total]
        self._counters: dict[int, OrderedDict[str, list[int]]] = {}
        self._streams: dict[str, int] = {}

    async def take(self, windows: Sequence[Window]) -> tuple[bool, list[Usage]]:
        now = time.monotonic()
        if len(windows) == 1:
            return self._take_one(windows[0], now)
        found: list[tuple[deque[float] | None, int, float]] = []
        room = True
        for window in windows:
            logs = self._logs.get(window.seconds)
            if logs is None:
                logs = self._logs[window.seconds] = OrderedDict()
            cutoff = now - window.seconds
            _expire_logs(logs, cutoff)
            log = logs.get(window.key)
            if log:
                while log and log[0] <= cutoff:
                    log.popleft()
            count = len(log) if log else 0
            found.append((log, count, log[0] if count and log else now))
            room = room and count < window.limit
        usage = []
        for window, (log, count, oldest) in zip(windows, found, strict=True):
            if room:
                if log is None:
                    log = self._logs[window.seconds][window.key] = deque()
                log.append(now)
                self._logs[window.seconds].move_to_end(window.key)
            usage.append(Usage(count + room, oldest + window.seconds - now))
        return room, usage

    def _take_one(self, window: Window, now: float) -> tuple[bool, list[Usage]]:
        """``take`` for the usual single window, without the bookkeeping for several."""
        logs = self._logs.get(window.seconds)
        if logs is None:
            logs = self._logs[window.seconds] = OrderedDict()
        cutoff = now - window.seconds
        _expire_logs(logs, cutoff)
        log = logs.get(window.key)
        if log is None:
            if window.limit <= 0:
                return False, [Usage(0, window.seconds)]
            logs[window.key] = deque((now,))
            return True, [Usage(1, window.seconds)]
        while log and log[0] <= cutoff:
            log.popleft()
        count = len(log)
        reset_after = (log[0] if count else now) + window.seconds - now
        if count >= window.limit:
            return False, [Usage(count, reset_after)]
        log.append(now)
        logs.move_to_end(window.key)
        return True, [Usage(count + 1, reset_after)]

    async def peek(self, windows: Sequence[Window]) -> list[Usage]:
        """Read-only: no log is trimmed, created or moved (a report must not change expiry)."""
        now = time.monotonic()
        usage = []
        for window in windows:
            logs = self._logs.get(window.seconds)
            log = logs.get(window.key) if logs is not None else None
            cutoff = now - window.seconds
            live = [hit for hit in log if hit > cutoff] if log else []
            reset_after = live[0] + window.seconds - now if live else 0.0
            usage.append(Usage(len(live), reset_after))
        return usage

    async def tokens(self, windows: Sequence[Window]) -> list[TokenUsage]:
        now = time.monotonic()
        return [self._counter(window, now)[1] for window in windows]

    async def charge(self, windows: Sequence[Window], tokens: int) -> None:
        now = time.monotonic()
        for window in windows:
            entry, _ = self._counter(window, now, create=True)
            entry[2] += tokens
            self._counters[window.seconds].move_to_end(window.key)

    def _counter(
        self, window: Window, now: float, create: bool = False
    ) -> tuple[list[int], TokenUsage]:
        """The key's counter shifted to the current fixed window (windows are aligned on the
        clock, as in limits' in-memory counter)."""
        counters = self._counters.get(window.seconds)
        if counters is None:
            counters = self._counters[window.seconds] = OrderedDict()
        index = int(now // window.seconds)
        while counters:  # last charged two windows ago or more: nothing left to count
            first = next(iter(counters.values()))
            if first[0] >= index - 1:
                break
            counters.popitem(last=False)
        entry = counters.get(window.key)
        if entry is None:
            entry = [index, 0, 0]
            if create:
                counters[window.key] = entry
        elif entry[0] != index:
            entry[1] = entry[2] if entry[0] == index - 1 else 0
            entry[0], entry[2] = index, 0
        closes_in = (index + 1) * window.seconds - now
        return entry, TokenUsage(entry[1], entry[2], closes_in)

    async def acquire(self, key: str, limit: int, lease: str, ttl: float) -> tuple[bool, int]:
        held = self._streams.get(key, 0)
        if held >= limit:
            return False, held
        self._streams[key] = held + 1
        return True, held + 1

    async def refresh(self, leases: Sequence[tuple[str, str]], ttl: float) -> int:
        return 0  # slots here die with the process: nothing expires

    async def release(self, key: str, lease: str) -> None:
        held = self._streams.get(key, 0) - 1
        if held > 0:
            self._streams[key] = held
        else:
            self._streams.pop(key, None)

    async def held(self, key: str) -> int:
        return self._streams.get(key, 0)

    async def close(self) -> None:
        pass


def _expire_logs(logs: OrderedDict[str, deque[float]], cutoff: float) -> None:
    """Drop the logs whose newest hit has left the window; they come first."""
    while logs:
        first = next(iter(logs.values()))
        if first and first[-1] > cutoff:
            return
        logs.popitem(last=False)

"""Recent time to first token per target, for hedging's "no token by its p95 yet" trigger.

Only attempts that produced content are observed. An attempt cancelled because a hedge won is
not: its time is unknown (only that it was slow), and counting it at the moment it was cancelled
would pin the percentile at wherever the hedge delay happened to start.

The statistics live behind ``LatencyStats``: in process by default (``LocalLatencyStats``), pooled
from every instance through Redis when ``redis_url`` is set (``shared_state.RedisLatencyStats``).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from typing import Protocol


class LatencyStats(Protocol):
    def observe(self, key: str, seconds: float) -> None:
        """Record one attempt's time from its start to its first content event."""

    def quantile(self, key: str, q: float, min_samples: int) -> float | None:
        """The ``q`` quantile of the recent observations, or ``None`` below ``min_samples``."""

    def recent(self, key: str, count: int) -> float | None:
        """The median of the last ``count`` observations, or of all when fewer were made (load
        balancing's "latency" strategy, which must see a slowdown quickly); ``None`` with none."""


class LocalLatencyStats:
    """The last ``window`` observations per key, in process. A quantile is recomputed only
    after ``refresh`` new observations, so asking on every request costs a dict lookup."""

    def __init__(self, window: int = 256, refresh: int = 16) -> None:
        self._window = window
        self._refresh = refresh
        self._samples: dict[str, deque[float]] = {}
        self._counts: dict[str, int] = {}  # observations ever, per key
        self._cache: dict[tuple[str, float], tuple[int, float]] = {}  # (count then, value)

    def observe(self, key: str, seconds: float) -> None:
        samples = self._samples.get(key)
        if samples is None:
            samples = self._samples[key] = deque(maxlen=self._window)
        samples.append(seconds)
        self._counts[key] = self._counts.get(key, 0) + 1

    def quantile(self, key: str, q: float, min_samples: int) -> float | None:
        samples = self._samples.get(key)
        if samples is None or len(samples) < min_samples:
            return None
        count = self._counts[key]
        cached = self._cache.get((key, q))
        if cached is not None and count - cached[0] < self._refresh:
            return cached[1]
        value = quantile_of(sorted(samples), q)
        self._cache[(key, q)] = (count, value)
        return value

    def recent(self, key: str, count: int) -> float | None:
        samples = self._samples.get(key)
        return median_of_last(samples, count) if samples else None


def median_of_last(samples: Sequence[float], count: int) -> float:
    """The median of the last ``count`` of non-empty ``samples`` (oldest first), or of all of
    them when there are fewer."""
    size = len(samples)
    last = sorted(samples[i] for i in range(max(0, size - count), size))
    return last[len(last) // 2]


def quantile_of(ordered: Sequence[float], q: float) -> float:
    """The ``q`` quantile of non-empty sorted samples (the nearest rank at or above it)."""
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]

"""The recent time-to-first-token statistics hedging reads its delay from."""

from __future__ import annotations

from tokenrelay.latency import LocalLatencyStats


def test_latency_quantile_needs_enough_samples_and_follows_new_ones() -> None:
    stats = LocalLatencyStats(window=100, refresh=1)
    for value in range(1, 10):
        stats.observe("a", value / 100)
    assert stats.quantile("a", 0.95, min_samples=10) is None
    stats.observe("a", 0.10)
    assert stats.quantile("a", 0.95, min_samples=10) == 0.10
    assert stats.quantile("a", 0.5, min_samples=10) == 0.06
    for _ in range(100):  # the window forgets the old samples
        stats.observe("a", 2.0)
    assert stats.quantile("a", 0.5, min_samples=10) == 2.0
    assert stats.quantile("b", 0.5, min_samples=1) is None


def test_latency_quantile_is_cached_between_refreshes() -> None:
    stats = LocalLatencyStats(window=100, refresh=16)
    for _ in range(20):
        stats.observe("a", 0.05)
    assert stats.quantile("a", 0.95, min_samples=20) == 0.05
    for _ in range(15):
        stats.observe("a", 1.0)
    assert stats.quantile("a", 0.95, min_samples=20) == 0.05  # not recomputed yet
    stats.observe("a", 1.0)
    assert stats.quantile("a", 0.95, min_samples=20) == 1.0

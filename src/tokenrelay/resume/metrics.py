"""Resumable streams' numbers for ``GET /metrics``: a reporter (``observe.metrics``'s pattern)
that reads the store's own counters when ``/metrics`` is asked; nothing is kept for it between
scrapes, and nothing runs per event."""

from __future__ import annotations

from typing import TYPE_CHECKING

from tokenrelay.observe.prometheus import Counter, Gauge, Metric
from tokenrelay.resume.store import RESULTS

if TYPE_CHECKING:
    from tokenrelay.resume.store import ResumeStore


class ResumeReporter:
    """Reconnects and cancels by result, streams generating unread, bytes kept."""

    def __init__(self, store: ResumeStore) -> None:
        self.store = store
        self.results = Counter(
            "tokenrelay_resume_total",
            "Reconnects to resumable streams and cancels, by result: resumed (replayed), "
            "not_found (404: unknown, or another caller's), expired (410: the window is over or "
            "the events were pushed out), unavailable (503: Redis failed, or the stream's copy "
            "there lost events), cancelled (a DELETE by the stream's owner, answered 204).",
            ("result",),
        )
        self.detached = Gauge(
            "tokenrelay_resume_detached_streams",
            "Resumable streams of this process still generating with nobody reading them "
            "(their resume.grace runs).",
        )
        self.buffered = Gauge(
            "tokenrelay_resume_buffered_bytes",
            "Bytes of resumable streams' events this process keeps in memory.",
        )
        self.dropped = Counter(
            "tokenrelay_resume_redis_dropped_total",
            "Writes of resumable streams to Redis lost to a Redis outage (those streams then "
            "resume on their own instance only).",
        )

    def __call__(self) -> list[Metric]:
        store = self.store
        for result in RESULTS:
            self.results.labels(result).value = store.results[result]
        self.detached.set(value=store.detached)
        self.buffered.set(value=store.size)
        self.dropped.labels().value = getattr(store.mirror, "dropped", 0)
        return [self.results, self.detached, self.buffered, self.dropped]

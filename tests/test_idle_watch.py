"""The idle watches of every upstream stream on one timer (``tokenrelay.idle_watch``): each
stream still ends exactly ``idle`` seconds after its last chunk, driven here by a loop whose
clock the test moves by hand."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, cast

from tokenrelay import idle_watch
from tokenrelay.idle_watch import IdleWatches


class Clock:
    """The two things ``IdleWatches`` asks of its loop: ``time`` and ``call_at``."""

    def __init__(self) -> None:
        self.now = 0.0
        self.timers: list[tuple[float, Callable[[], None], Timer]] = []

    def time(self) -> float:
        return self.now

    def call_at(self, when: float, callback: Callable[[], None]) -> Timer:
        timer = Timer()
        self.timers.append((when, callback, timer))
        return timer

    def armed(self) -> list[float]:
        return sorted(when for when, _, timer in self.timers if not timer.cancelled)

    def advance(self, to: float) -> None:
        """Run every timer due by ``to``, in order, with the clock at its time."""
        while True:
            due = [(w, c, t) for w, c, t in self.timers if not t.cancelled and w <= to]
            if not due:
                break
            when, callback, timer = min(due, key=lambda item: item[0])
            timer.cancelled = True  # it ran
            self.now = max(self.now, when)
            callback()
        self.now = to


class Timer:
    def __init__(self) -> None:
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


class Upstream:
    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.failed: list[tuple[float, BaseException]] = []

    def fail(self, error: BaseException) -> None:
        self.failed.append((self.clock.now, error))


def watches(clock: Clock, idle: float) -> IdleWatches:
    return IdleWatches(cast(asyncio.AbstractEventLoop, clock), idle)


def test_a_quiet_stream_fails_idle_seconds_after_its_last_chunk() -> None:
    clock = Clock()
    timers = watches(clock, 10.0)
    upstream = Upstream(clock)
    watch = timers.watch(upstream)
    clock.advance(4.0)
    watch.last = clock.time()  # a chunk at 4 s
    clock.advance(13.9)
    assert upstream.failed == []
    clock.advance(20.0)
    assert [at for at, _ in upstream.failed] == [14.0]
    assert isinstance(upstream.failed[0][1], TimeoutError)
    assert clock.armed() == []  # nothing left to watch


def test_each_stream_keeps_its_own_time_on_the_one_timer() -> None:
    clock = Clock()
    timers = watches(clock, 5.0)
    first, second, third = Upstream(clock), Upstream(clock), Upstream(clock)
    a = timers.watch(first)
    clock.advance(1.0)
    b = timers.watch(second)
    clock.advance(2.0)
    timers.watch(third)
    assert clock.armed() == [5.0]  # one timer, for the earliest
    a.last = 4.5  # the first streams on; the second goes quiet after 3 s
    b.last = 3.0
    clock.advance(30.0)
    assert [at for at, _ in first.failed] == [9.5]
    assert [at for at, _ in second.failed] == [8.0]
    assert [at for at, _ in third.failed] == [7.0]


def test_an_ended_stream_never_fails_and_holds_no_timer() -> None:
    clock = Clock()
    timers = watches(clock, 10.0)
    ended, live = Upstream(clock), Upstream(clock)
    watch = timers.watch(ended)
    clock.advance(1.0)
    timers.watch(live)
    timers.end(watch)
    timers.end(watch)  # twice is harmless
    assert watch.response is None  # the response is not held past its stream's end
    clock.advance(10.0)  # the ended one's time: nothing fails, the live one's timer is armed
    assert ended.failed == [] and live.failed == []
    assert clock.armed() == [11.0]
    clock.advance(11.0)
    assert [at for at, _ in live.failed] == [11.0]


def test_ended_watches_do_not_pile_up_in_a_busy_gateway(monkeypatch: Any) -> None:
    monkeypatch.setattr(idle_watch, "_COMPACT_AT", 10)
    clock = Clock()
    timers = watches(clock, 60.0)
    live = [timers.watch(Upstream(clock)) for _ in range(5)]
    for _ in range(200):  # short streams, each ended long before its idle time
        timers.end(timers.watch(Upstream(clock)))
    assert len(timers._heap) <= 2 * len(live) + 10 + 1
    clock.advance(60.0)
    assert all(watch.response is None for watch in live)  # the live ones did fail

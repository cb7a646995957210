"""Streams in flight per target, for the ``least_busy`` strategy and the in-flight gauges: a
stream counts from the moment its first content wins until the relay lets it go; a try that
never produced content is not counted.

In process by default (``LocalInFlight``); with ``redis_url`` set, also in Redis
(``RedisInFlight``), so every instance sees the others' streams. There each target is a sorted
set, ``tokenrelay:inflight:{provider:model}``, holding one member per stream scored with the
time it stops counting (``ttl`` seconds after it began): a stream removes its member when it
ends, and a crashed instance's streams drop out of the count by themselves. Adding and removing
are sent in the background, never awaited by a request; reading is one round trip (a pipeline of
``ZCOUNT`` over a group's targets). A Redis failure falls back to this instance's own counts.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import time
from collections.abc import Callable, Coroutine, Sequence
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

if TYPE_CHECKING:
    from tokenrelay.shared_state import RedisLink

log = logging.getLogger("tokenrelay.inflight")

T = TypeVar("T")
Release = Callable[[], None]
DEFAULT_TTL = 600.0  # seconds a stream counts at most in Redis (a crashed instance's decay)


class InFlight(Protocol):
    def acquire(self, key: str) -> Release:
        """Count one more stream of target ``key``; the returned callable (idempotent) ends it."""
        ...

    async def counts(self, keys: Sequence[str]) -> list[int]:
        """The streams in flight of each target, as every instance sharing the count sees them."""
        ...

    def snapshot(self) -> dict[str, int]:
        """This instance's streams per target it has counted (for the gauges)."""
        ...


class LocalInFlight:
    """Counts in this process; every method runs without an ``await``, so it needs no lock."""

    def __init__(self) -> None:
        self._counts: dict[str, int] = {}

    def acquire(self, key: str) -> Release:
        counts = self._counts
        counts[key] = counts.get(key, 0) + 1
        released = False

        def release() -> None:
            nonlocal released
            if not released:
                released = True
                counts[key] -= 1

        return release

    async def counts(self, keys: Sequence[str]) -> list[int]:
        return [self._counts.get(key, 0) for key in keys]

    def local(self, keys: Sequence[str]) -> list[int]:
        return [self._counts.get(key, 0) for key in keys]

    def snapshot(self) -> dict[str, int]:
        return dict(self._counts)


class RedisInFlight:
    """Counts shared through Redis, on top of this instance's own (which answer while Redis is
    down, and bound the shared count from below while an addition is still on its way)."""

    def __init__(self, link: RedisLink, ttl: float = DEFAULT_TTL) -> None:
        from tokenrelay.shared_state import DOWN  # only with Redis: redis is imported by then

        self._down = DOWN
        self._link = link
        self._ttl = ttl
        self._prefix = f"{link.prefix}:inflight:"
        self._instance = f"{os.getpid()}-{id(self):x}"
        self._ids = itertools.count()
        self.own = LocalInFlight()
        self._tasks: set[asyncio.Future[Any]] = set()
        self.lost = 0  # a metric: additions or removals that never reached Redis

    def redis_key(self, key: str) -> str:
        return f"{self._prefix}{{{key}}}"

    def acquire(self, key: str) -> Release:
        release_own = self.own.acquire(key)
        member = f"{self._instance}:{next(self._ids)}"
        added = self._background(self._add(key, member))

        def release() -> None:
            release_own()
            self._background(self._remove(key, member, added))

        return _once(release)

    async def counts(self, keys: Sequence[str]) -> list[int]:
        own = self.own.local(keys)
        pipe = self._link.client.pipeline(transaction=False)
        now = time.time()
        for key in keys:
            pipe.zcount(self.redis_key(key), now, "+inf")
        replies = await self._link.run(pipe.execute())
        if replies is self._down:
            return own
        return [max(int(shared), mine) for shared, mine in zip(replies, own, strict=True)]

    def snapshot(self) -> dict[str, int]:
        return self.own.snapshot()

    async def close(self) -> None:
        """Wait briefly for the additions and removals still on their way."""
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=1.0)

    async def _add(self, key: str, member: str) -> bool:
        name = self.redis_key(key)
        now = time.time()
        pipe = self._link.client.pipeline(transaction=False)
        pipe.zremrangebyscore(name, "-inf", now)  # what crashed instances left behind
        pipe.zadd(name, {member: now + self._ttl})
        pipe.expire(name, int(self._ttl) + 1)
        if await self._link.run(pipe.execute()) is self._down:
            self.lost += 1
            return False
        return True

    async def _remove(self, key: str, member: str, added: asyncio.Task[bool]) -> None:
        if not await added:  # never added (Redis was down): nothing to remove
            return
        pipe = self._link.client.pipeline(transaction=False)
        pipe.zrem(self.redis_key(key), member)
        if await self._link.run(pipe.execute()) is self._down:
            self.lost += 1  # it expires with the stream's ttl

    def _background(self, job: Coroutine[Any, Any, T]) -> asyncio.Task[T]:
        task = asyncio.ensure_future(job)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task


def _once(call: Release) -> Release:
    done = False

    def once() -> None:
        nonlocal done
        if not done:
            done = True
            call()

    return once

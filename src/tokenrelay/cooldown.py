"""Upstream rate-limit cool-downs per target: a grouped target that answered 429 is passed over
until its ``retry-after`` (or its group's ``cooldown``) has passed, so the next request goes to
another target of its group at once instead of waiting for this one.

In process by default (``LocalCooldowns``). With ``redis_url`` set (``RedisCooldowns``) a
cool-down is also written to Redis, ``tokenrelay:cooldown:{provider:model}`` holding its end in
Unix seconds and expiring then, so every instance passes the key over. This instance's own
cool-downs apply at once; the others' are read at most every ``MAX_STALE`` seconds per set of
targets (one ``MGET``), so most requests make no round trip. A Redis failure means local only.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from tokenrelay.shared_state import RedisLink

MAX_STALE = 0.5  # seconds another instance's cool-downs may be seen late


class Cooldowns(Protocol):
    def cool(self, key: str, seconds: float) -> None:
        """Pass target ``key`` over for ``seconds``."""
        ...

    async def cooling(self, keys: Sequence[str]) -> dict[str, float]:
        """Those of ``keys`` that are cooling down, with the seconds left."""
        ...


class LocalCooldowns:
    def __init__(self) -> None:
        self._until: dict[str, float] = {}  # key -> end, time.monotonic()

    def cool(self, key: str, seconds: float) -> None:
        self._until[key] = max(self._until.get(key, 0.0), time.monotonic() + seconds)

    async def cooling(self, keys: Sequence[str]) -> dict[str, float]:
        return self.left(keys)

    def left(self, keys: Sequence[str]) -> dict[str, float]:
        if not self._until:
            return {}
        now = time.monotonic()
        found = {}
        for key in keys:
            until = self._until.get(key)
            if until is not None:
                if until > now:
                    found[key] = until - now
                else:
                    del self._until[key]
        return found


class RedisCooldowns:
    """Cool-downs shared through Redis, this instance's own applying at once."""

    def __init__(self, link: RedisLink, max_stale: float = MAX_STALE) -> None:
        from tokenrelay.shared_state import DOWN  # only with Redis: redis is imported by then

        self._down = DOWN
        self._link = link
        self._prefix = f"{link.prefix}:cooldown:"
        self._max_stale = max_stale
        self.own = LocalCooldowns()
        # the keys asked about together -> (when Redis was read, each one's end in Unix seconds)
        self._seen: dict[tuple[str, ...], tuple[float, dict[str, float]]] = {}
        self._tasks: set[asyncio.Task[Any]] = set()

    def redis_key(self, key: str) -> str:
        return f"{self._prefix}{{{key}}}"

    def cool(self, key: str, seconds: float) -> None:
        self.own.cool(key, seconds)
        until = time.time() + seconds
        pipe = self._link.client.pipeline(transaction=False)
        pipe.set(self.redis_key(key), repr(until), px=max(1, int(seconds * 1000)))
        task = asyncio.ensure_future(self._link.run(pipe.execute()))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def cooling(self, keys: Sequence[str]) -> dict[str, float]:
        found = self.own.left(keys)
        names = tuple(keys)
        now = time.monotonic()
        seen = self._seen.get(names)
        if seen is None or now - seen[0] >= self._max_stale:
            pipe = self._link.client.pipeline(transaction=False)
            pipe.mget([self.redis_key(key) for key in keys])
            reply = await self._link.run(pipe.execute())
            ends: dict[str, float] = {}
            if reply is not self._down:
                values = reply[0]
                ends = {k: float(v) for k, v in zip(keys, values, strict=True) if v is not None}
            if len(self._seen) > 1024:
                self._seen.clear()
            seen = self._seen[names] = (now, ends)
        wall = time.time()
        for key, until in seen[1].items():
            if until > wall:
                found[key] = max(found.get(key, 0.0), until - wall)
        return found

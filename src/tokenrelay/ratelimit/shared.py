"""Counters in Redis, shared by every gateway instance that points at the same server.

Request windows are `limits`' moving-window lists (a sliding log: hit times trimmed to the
limit), taken by this module's own script, all of a request's windows in one atomic round trip.
Token windows are the `limits` library's sliding-window counter, used through its public storage
methods (two counters per key, by Lua, so a charge of 50,000 tokens is one INCRBY, not 50,000
list entries). Concurrency slots are this module's own two short scripts.

Every window's hit time comes from the caller's clock (that is how limits works), so instances
need synchronised clocks (NTP) for the window edges to agree; the counts are atomic regardless.
Stream slots use the Redis server's clock, so their expiry does not depend on any instance's.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Sequence
from typing import Any, TypeVar

import redis.asyncio
from limits.aio.storage import RedisStorage
from limits.errors import StorageError
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from tokenrelay.ratelimit.base import TokenUsage, Usage, Window

T = TypeVar("T")

# A charge must always land, whatever the limit: it records tokens already spent.
_NO_LIMIT = 2**52
# Connections per instance; beyond them a request waits (up to the limiter's timeout) for one.
MAX_CONNECTIONS = 64

# All of a request's windows in one step, so a request is counted in every window or in none,
# exactly, across instances, in one round trip. Each window is limits' moving-window list (hit
# times, newest first, at most ``limit`` long), so its readers still understand it.
# KEYS[i]: the lists. ARGV[1]: now (wall clock, s); ARGV[2i], ARGV[2i+1]: limit and seconds of
# KEYS[i]. Returns {taken 0/1, then per window: hits in it before this one, the oldest of them}.
_TAKE = """
local now = tonumber(ARGV[1])
local out = {0}
local full = false
for i, key in ipairs(KEYS) do
    local limit = tonumber(ARGV[2 * i])
    local since = now - tonumber(ARGV[2 * i + 1])
    local low, high, index = 0, limit - 1, nil
    while low <= high do  -- the oldest hit still in the window, as limits' own script finds it
        local mid = math.floor((low + high) / 2)
        local hit = tonumber(redis.call('LINDEX', key, mid))
        if hit and hit >= since then
            index = mid
            low = mid + 1
        else
            high = mid - 1
        end
    end
    local count, oldest = 0, ARGV[1]
    if index then
        count = index + 1
        oldest = redis.call('LINDEX', key, index)
    end
    if count >= limit then
        full = true
    end
    out[#out + 1] = count
    out[#out + 1] = oldest
end
if not full then
    for i, key in ipairs(KEYS) do
        redis.call('LPUSH', key, ARGV[1])
        redis.call('LTRIM', key, 0, tonumber(ARGV[2 * i]) - 1)
        redis.call('EXPIRE', key, ARGV[2 * i + 1])
    end
    out[1] = 1
end
return out
"""

# KEYS[1]: a sorted set of lease ids scored by expiry (ms, server clock).
# ARGV: limit, ttl (ms), lease id. Returns {granted 0/1, held after}.
_ACQUIRE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
local held = redis.call('ZCARD', KEYS[1])
if held >= tonumber(ARGV[1]) then
    return {0, held}
end
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[3])
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return {1, held + 1}
"""

# KEYS: sorted sets; ARGV[1]: ttl (ms); ARGV[1 + i]: the lease in KEYS[i]. Extends each lease,
# putting back one that is gone (Redis restarted, or unreachable for longer than the TTL): its
# stream is still running, so it still counts. Returns how many were put back.
_REFRESH = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local ttl = tonumber(ARGV[1])
local restored = 0
for i, key in ipairs(KEYS) do
    restored = restored + redis.call('ZADD', key, now + ttl, ARGV[i + 1])
    redis.call('PEXPIRE', key, ttl)
end
return restored
"""

# KEYS[1]: a stream-slot set as above. Returns how many slots are live now (server clock).
_HELD = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
return redis.call('ZCOUNT', KEYS[1], string.format('(%d', now), '+inf')
"""


def storage_uri(url: str) -> str:
    """limits' scheme for a plain Redis URL (``redis://`` → ``async+redis://``)."""
    if url.startswith("async+"):
        return url
    if url.startswith("unix://"):
        return "async+redis+unix://" + url.removeprefix("unix://")
    return "async+" + url


def client_url(url: str) -> str:
    """redis-py's scheme for the same URL."""
    url = url.removeprefix("async+")
    return "unix://" + url.removeprefix("redis+unix://") if url.startswith("redis+unix") else url


class RedisHealth:
    """Whether a Redis answered lately, as every client of it in this process sees it.

    The rate limiter and the shared state each have their own client (so a slow limiter call
    never queues a breaker decision), and each bounds a call by ``redis_timeout``. Without a
    common view, one request meeting a hung Redis waited for it once per client, one after the
    other. Each client reports here; before calling, it asks whether a failure was seen within
    its own retry interval, and if so goes on without Redis at once."""

    __slots__ = ("failed_at",)

    def __init__(self) -> None:
        self.failed_at: float | None = None  # time.monotonic() of a failure since the last answer

    def failed(self) -> None:
        self.failed_at = time.monotonic()

    def answered(self) -> None:
        self.failed_at = None

    def down_within(self, interval: float) -> bool:
        """Whether a client failed less than ``interval`` seconds ago, with no answer since."""
        failed_at = self.failed_at
        return failed_at is not None and time.monotonic() - failed_at < interval


_HEALTH: dict[str, RedisHealth] = {}


def redis_health(url: str) -> RedisHealth:
    """The one ``RedisHealth`` of the Redis at ``url`` in this process."""
    health = _HEALTH.get(url)
    if health is None:
        health = _HEALTH[url] = RedisHealth()
    return health


def redis_client(url: str, timeout: float, max_connections: int) -> redis.asyncio.Redis:
    """A client for one of the gateway's uses of Redis (limits, shared state).

    Socket timeouts bound each command; one immediate retry on a fresh connection rides over a
    server restart (pooled connections are then dead) without backoff sleeps that would outlast
    the caller's own timeout. The pool *blocks* when all its connections are busy: redis-py's
    default pool raises instead once 100 are in use, which under a burst of hundreds of
    requests made the limiter fail open (found by tests/test_scale_out.py: 300 requests through
    three instances, all admitted)."""
    connections = redis.asyncio.BlockingConnectionPool.from_url(
        client_url(url),
        max_connections=max_connections,
        timeout=timeout,
        socket_timeout=timeout,
        socket_connect_timeout=timeout,
        retry=Retry(NoBackoff(), 1),
    )
    return redis.asyncio.Redis(connection_pool=connections)


async def _all(calls: Sequence[Awaitable[T]]) -> list[T]:
    """Concurrently, so several windows cost one round trip of latency; one without a task."""
    if len(calls) == 1:
        return [await calls[0]]
    return list(await asyncio.gather(*calls))


class RedisStore:
    shared = True
    errors: tuple[type[BaseException], ...] = (RedisError, StorageError, OSError, TimeoutError)

    def __init__(self, url: str, timeout: float, prefix: str) -> None:
        self.client = redis_client(url, timeout, MAX_CONNECTIONS)
        pool: dict[str, Any] = {"connection_pool": self.client.connection_pool}
        self.storage = RedisStorage(
            storage_uri(url), implementation="redispy", key_prefix=f"{prefix}:rl", **pool
        )
        self.prefix = prefix
        self._take = self.client.register_script(_TAKE)
        self._acquire = self.client.register_script(_ACQUIRE)
        self._refresh = self.client.register_script(_REFRESH)
        self._held = self.client.register_script(_HELD)

    async def take(self, windows: Sequence[Window]) -> tuple[bool, list[Usage]]:
        now = time.time()  # hits are stamped with the wall clock, as limits does
        args: list[Any] = [repr(now)]
        for w in windows:
            args += [w.limit, w.seconds]
        keys = [f"{self.prefix}:rl:{w.key}" for w in windows]  # limits' own key names
        taken, *found = await self._take(keys=keys, args=args)
        usage = []
        for i, w in enumerate(windows):
            count, oldest = int(found[2 * i]), float(found[2 * i + 1])
            usage.append(Usage(count + 1 if taken else count, oldest + w.seconds - now))
        return bool(taken), usage

    async def peek(self, windows: Sequence[Window]) -> list[Usage]:
        """limits' own read of a moving window (the lists ``take`` pushes to), which changes
        nothing; one script call per window, concurrently."""
        states = await _all(
            [self.storage.get_moving_window(w.key, w.limit, w.seconds) for w in windows]
        )
        now = time.time()
        return [
            Usage(count, max(0.0, oldest + w.seconds - now) if count else 0.0)
            for w, (oldest, count) in zip(windows, states, strict=True)
        ]

    async def tokens(self, windows: Sequence[Window]) -> list[TokenUsage]:
        states = await _all([self.storage.get_sliding_window(w.key, w.seconds) for w in windows])
        usage = []
        for w, (previous, previous_ttl, current, current_ttl) in zip(windows, states, strict=True):
            # The script shifts the windows as it reads: a previous window's TTL is the time
            # left in the current one; without one, the current key lives two windows.
            if previous:
                closes_in = previous_ttl
            elif current:
                closes_in = max(0.0, current_ttl - w.seconds)
            else:
                closes_in = float(w.seconds)
            usage.append(TokenUsage(previous, current, closes_in))
        return usage

    async def charge(self, windows: Sequence[Window], tokens: int) -> None:
        await _all(
            [
                self.storage.acquire_sliding_window_entry(w.key, _NO_LIMIT, w.seconds, tokens)
                for w in windows
            ]
        )

    async def acquire(self, key: str, limit: int, lease: str, ttl: float) -> tuple[bool, int]:
        granted, held = await self._acquire(
            keys=[self._slots(key)], args=[limit, round(ttl * 1000), lease]
        )
        return bool(granted), int(held)

    async def refresh(self, leases: Sequence[tuple[str, str]], ttl: float) -> int:
        restored = 0
        for start in range(0, len(leases), 500):  # bounded script run time
            batch = leases[start : start + 500]
            restored += int(
                await self._refresh(
                    keys=[self._slots(key) for key, _ in batch],
                    args=[round(ttl * 1000), *(lease for _, lease in batch)],
                )
            )
        return restored

    async def release(self, key: str, lease: str) -> None:
        await self.client.zrem(self._slots(key), lease)

    async def held(self, key: str) -> int:
        return int(await self._held(keys=[self._slots(key)]))

    async def close(self) -> None:
        await self.client.aclose()

    def _slots(self, key: str) -> str:
        return f"{self.prefix}:streams:{key}"

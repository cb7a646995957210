"""Where entries live: ``MemoryCache`` (this process, an LRU bounded by bytes) or ``RedisCache``
(shared by every instance on the same Redis, values zlib-compressed). Both expire each entry
after its own TTL. Redis failing or slow is a miss (or a store not made), counted and logged
once per outage, never an error for the client."""

from __future__ import annotations

import logging
import time
import zlib
from collections import OrderedDict
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    import redis.asyncio

log = logging.getLogger("tokenrelay.cache")


class CacheStore(Protocol):
    """Bytes by key, each with its own lifetime."""

    async def get(self, key: str) -> bytes | None: ...
    async def set(self, key: str, value: bytes, ttl: float) -> None: ...
    async def close(self) -> None: ...


class MemoryCache:
    """An LRU of at most ``max_bytes`` of values; an expired entry is dropped when read or when
    room is needed."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.size = 0
        self._entries: OrderedDict[str, tuple[float, bytes]] = OrderedDict()
        self.failures = 0  # never fails; the same numbers as RedisCache for the reporter

    def __len__(self) -> int:
        return len(self._entries)

    async def get(self, key: str) -> bytes | None:
        found = self._entries.get(key)
        if found is None:
            return None
        expires, value = found
        if expires <= time.monotonic():
            self._drop(key)
            return None
        self._entries.move_to_end(key)
        return value

    async def set(self, key: str, value: bytes, ttl: float) -> None:
        if len(value) > self.max_bytes:
            return
        if key in self._entries:
            self._drop(key)
        self._entries[key] = (time.monotonic() + ttl, value)
        self.size += len(value)
        while self.size > self.max_bytes:
            self._drop(next(iter(self._entries)))

    def _drop(self, key: str) -> None:
        _, value = self._entries.pop(key)
        self.size -= len(value)

    async def close(self) -> None:
        self._entries.clear()
        self.size = 0


class RedisCache:
    """Entries under ``<prefix>:cache:<key>``, compressed, with ``PX`` expiry. After a failure
    Redis is left alone for ``retry_interval`` seconds: lookups are misses at once instead of
    each waiting for a timeout."""

    def __init__(
        self,
        client: redis.asyncio.Redis,
        *,
        prefix: str = "tokenrelay",
        retry_interval: float = 1.0,
    ) -> None:
        self.client = client
        self.prefix = f"{prefix}:cache:"
        self.retry_interval = retry_interval
        self.failures = 0  # calls that failed or timed out
        self._down_until = 0.0
        self._down = False

    @classmethod
    def from_url(
        cls, url: str, *, timeout: float, prefix: str, retry_interval: float
    ) -> RedisCache:
        from tokenrelay.ratelimit.shared import redis_client

        return cls(
            redis_client(url, timeout, max_connections=32),
            prefix=prefix,
            retry_interval=retry_interval,
        )

    async def get(self, key: str) -> bytes | None:
        if self._down_until and time.monotonic() < self._down_until:
            return None
        try:
            value = await self.client.get(self.prefix + key)
            result = zlib.decompress(value) if isinstance(value, bytes) else None
        except Exception as exc:  # redis, OSError, timeout, a corrupt value: all a miss
            self._failed(exc)
            return None
        self._up()
        return result

    async def set(self, key: str, value: bytes, ttl: float) -> None:
        if self._down_until and time.monotonic() < self._down_until:
            return
        try:
            await self.client.set(self.prefix + key, zlib.compress(value, 1), px=int(ttl * 1000))
        except Exception as exc:
            self._failed(exc)
            return
        self._up()

    def _failed(self, exc: BaseException) -> None:
        self.failures += 1
        self._down_until = time.monotonic() + self.retry_interval
        if not self._down:
            self._down = True
            log.error("response cache: Redis failed (%s); lookups are misses until it is back", exc)

    def _up(self) -> None:
        self._down_until = 0.0
        if self._down:
            self._down = False
            log.warning("response cache: Redis is back")

    async def close(self) -> None:
        try:
            await self.client.aclose()
        except Exception:
            log.debug("response cache: closing the Redis client failed", exc_info=True)

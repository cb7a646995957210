"""The semantic cache's index: which stored answer's conversation is nearest to a new one.

Looked up only after an exact-cache miss. Each stored answer's conversation text is embedded
(``embedders``) and kept as a unit vector under its exact-cache key, per (scope, partition):
the scope is the tenant, the partition a hash of everything but the conversation (route,
targets, tools, sampling), so an entry is only ever found by the same tenant asking the same
route the same way. ``find`` answers the key of the most similar entry when its cosine
similarity reaches the threshold.

In memory the entries are bounded per scope (oldest evicted) and expire after ``ttl``. With a
Redis client they live in one Redis hash per (scope, partition), shared by every instance: a
field per key holding the expiry and the vector as little-endian float32, trimmed to
``max_entries`` on each add, and the hash expiring ``ttl`` after its last add. Every fault, of
the embedder or of Redis, is a miss: logged once per outage, counted in ``faults``, never raised.
"""

from __future__ import annotations

import hashlib
import logging
import math
import operator
import struct
import sys
import time
from array import array
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

from tokenrelay.cache.embedders import Embedder, EmbedderError, build_embedder

__all__ = ["DEFAULT_THRESHOLD", "Embedder", "EmbedderError", "SemanticIndex", "build_embedder"]

log = logging.getLogger("tokenrelay.cache")

# The threshold the quality bench recommends for the simulator's embedder (docs/cache-semantic.md);
# a real embedding model has its own and must be measured on the operator's traffic.
DEFAULT_THRESHOLD = 0.95
RECENT_VECTORS = 256  # texts whose vectors are kept, so the add after a miss embeds nothing
SWEEP_SECONDS = 60.0  # how often an add drops the expired entries of every scope
_EXPIRY = struct.Struct("<d")

Vector = tuple[float, ...]


def unit(vector: Sequence[float]) -> Vector | None:
    """``vector`` scaled to length 1, or None when it has no direction (zero, NaN, infinite)."""
    norm = math.sqrt(math.fsum(value * value for value in vector))
    if not norm or not math.isfinite(norm):
        return None
    return tuple(value / norm for value in vector)


def cosine(a: Vector, b: Vector) -> float:
    """The cosine similarity of two unit vectors (0 when their sizes differ: another model)."""
    if len(a) != len(b):
        return 0.0
    return float(sum(map(operator.mul, a, b)))


def pack(vector: Vector, expires: float) -> bytes:
    """A Redis field's value: the wall-clock expiry, then the vector as little-endian float32."""
    values = array("f", vector)
    if sys.byteorder == "big":
        values.byteswap()
    return _EXPIRY.pack(expires) + values.tobytes()


def unpack(value: bytes) -> tuple[float, Vector] | None:
    """The expiry and the (re-normalized) vector of a Redis field, or None if it is torn."""
    if len(value) < _EXPIRY.size + 4 or (len(value) - _EXPIRY.size) % 4:
        return None
    (expires,) = _EXPIRY.unpack_from(value)
    values = array("f")
    values.frombytes(value[_EXPIRY.size :])
    if sys.byteorder == "big":
        values.byteswap()
    vector = unit(values)  # float32 rounding: back to length 1 exactly
    return None if vector is None else (expires, vector)


class _Entry:
    __slots__ = ("expires", "vector")

    def __init__(self, vector: Vector, expires: float) -> None:
        self.vector = vector
        self.expires = expires


class _Scope:
    """One tenant's entries in memory: by partition, and in insertion order for eviction."""

    __slots__ = ("order", "partitions")

    def __init__(self) -> None:
        self.order: OrderedDict[tuple[str, str], None] = OrderedDict()
        self.partitions: dict[str, dict[str, _Entry]] = {}

    def drop(self, partition: str, key: str) -> None:
        self.order.pop((partition, key), None)
        entries = self.partitions.get(partition)
        if entries is not None:
            entries.pop(key, None)
            if not entries:
                del self.partitions[partition]


class SemanticIndex:
    """Vectors of stored answers' conversations per (scope, partition); memory, or Redis."""

    def __init__(
        self,
        embedder: Embedder,
        *,
        threshold: float,
        max_entries: int = 1000,
        ttl: float = 3600.0,
        redis: Any | None = None,
        prefix: str = "tokenrelay:sem:",
    ) -> None:
        if not 0.0 < threshold <= 1.0:
            raise ValueError(f"the similarity threshold must be in (0, 1], not {threshold}")
        if max_entries < 1 or ttl <= 0:
            raise ValueError("max_entries must be at least 1 and ttl positive")
        self.embedder = embedder
        self.threshold = threshold
        self.max_entries = max_entries
        self.ttl = ttl
        self.redis: Any = redis  # redis.asyncio.Redis answering bytes (no decode_responses)
        self.prefix = prefix
        self.faults: dict[str, int] = {}  # why lookups missed for want of vectors or of Redis
        self._scopes: dict[str, _Scope] = {}
        self._recent: OrderedDict[bytes, Vector] = OrderedDict()
        self._failing: set[str] = set()
        self._next_sweep = time.monotonic() + SWEEP_SECONDS

    # the interface

    async def find(self, scope: str, partition: str, text: str) -> tuple[str, float] | None:
        """The exact-cache key of the most similar entry and its cosine similarity, when that
        reaches the threshold; None otherwise, and on any fault."""
        if self.redis is None:
            entries = self._memory_entries(scope, partition)
            if not entries:  # nothing to compare with: no embedding on the request's path
                return None
        else:
            entries = await self._redis_entries(scope, partition)
            if not entries:
                return None
        vector = await self._vector(text)
        if vector is None:
            return None
        best_key, best = None, -1.0
        for key, candidate in entries:
            similarity = cosine(vector, candidate)
            if similarity > best:
                best_key, best = key, similarity
        if best_key is None or best < self.threshold:
            return None
        return best_key, min(best, 1.0)

    async def add(
        self, scope: str, partition: str, text: str, key: str, *, ttl: float | None = None
    ) -> None:
        """Remember ``key``'s conversation; ``ttl`` (at most the index's) shortens its life."""
        vector = await self._vector(text)
        if vector is None:
            return
        life = self.ttl if ttl is None else max(0.0, min(ttl, self.ttl))
        if self.redis is not None:
            await self._redis_add(scope, partition, key, vector, life)
            return
        now = time.monotonic()
        if now >= self._next_sweep:
            self._sweep(now)
        held = self._scopes.get(scope)
        if held is None:
            held = self._scopes[scope] = _Scope()
        held.partitions.setdefault(partition, {})[key] = _Entry(vector, now + life)
        held.order[(partition, key)] = None
        held.order.move_to_end((partition, key))
        while len(held.order) > self.max_entries:
            (old_partition, old_key), _ = held.order.popitem(last=False)
            held.drop(old_partition, old_key)

    async def close(self) -> None:
        """Close the embedder (the Redis client belongs to whoever passed it)."""
        closer = getattr(self.embedder, "close", None) or getattr(self.embedder, "aclose", None)
        if closer is not None:
            await closer()

    @property
    def size(self) -> int:
        """Entries held in memory (for metrics; 0 with Redis)."""
        return sum(len(held.order) for held in self._scopes.values())

    # vectors

    async def _vector(self, text: str) -> Vector | None:
        digest = hashlib.blake2b(text.encode(), digest_size=16).digest()
        known = self._recent.get(digest)
        if known is not None:
            self._recent.move_to_end(digest)
            return known
        try:
            vectors = await self.embedder.embed([text])
            vector = unit(vectors[0])
        except EmbedderError as exc:
            self._fault(exc.kind, str(exc))
            return None
        except Exception as exc:  # a direct embedder of the operator's: still only a miss
            self._fault("crashed", repr(exc))
            return None
        self._recovered("embedder")
        if vector is None:
            return None
        self._recent[digest] = vector
        if len(self._recent) > RECENT_VECTORS:
            self._recent.popitem(last=False)
        return vector

    # memory

    def _memory_entries(self, scope: str, partition: str) -> list[tuple[str, Vector]]:
        held = self._scopes.get(scope)
        entries = held.partitions.get(partition) if held is not None else None
        if held is None or not entries:
            return []
        now = time.monotonic()
        expired = [key for key, entry in entries.items() if entry.expires <= now]
        for key in expired:
            held.drop(partition, key)
        return [(key, entry.vector) for key, entry in entries.items() if entry.expires > now]

    def _sweep(self, now: float) -> None:
        self._next_sweep = now + min(SWEEP_SECONDS, self.ttl)
        for name, held in list(self._scopes.items()):
            for partition, entries in list(held.partitions.items()):
                for key in [key for key, entry in entries.items() if entry.expires <= now]:
                    held.drop(partition, key)
            if not held.order:
                del self._scopes[name]

    # Redis

    def redis_key(self, scope: str, partition: str) -> str:
        """The hash of one (scope, partition): both hashed, so no tenant name is in a key."""
        both = hashlib.blake2b(f"{scope}\0{partition}".encode(), digest_size=16).hexdigest()
        return f"{self.prefix}{both}"

    async def _redis_entries(self, scope: str, partition: str) -> list[tuple[str, Vector]]:
        try:
            fields: dict[bytes, bytes] = await self.redis.hgetall(self.redis_key(scope, partition))
        except Exception as exc:  # any Redis failure is a miss (redis-py's errors vary)
            self._fault("redis", repr(exc))
            return []
        self._recovered("redis")
        now = time.time()
        found: list[tuple[str, Vector]] = []
        for field, value in fields.items():
            entry = unpack(value)
            if entry is not None and entry[0] > now:
                found.append((_text(field), entry[1]))
                if len(found) >= self.max_entries:
                    break
        return found

    async def _redis_add(
        self, scope: str, partition: str, key: str, vector: Vector, life: float
    ) -> None:
        name = self.redis_key(scope, partition)
        now = time.time()
        try:
            async with self.redis.pipeline(transaction=False) as pipe:
                pipe.hset(name, key, pack(vector, now + life))
                pipe.expire(name, max(1, math.ceil(self.ttl)))
                pipe.hlen(name)
                *_, count = await pipe.execute()
            if int(count) > self.max_entries:
                await self._redis_trim(name, now)
        except Exception as exc:
            self._fault("redis", repr(exc))
            return
        self._recovered("redis")

    async def _redis_trim(self, name: str, now: float) -> None:
        """Drop the expired fields, then the soonest to expire beyond ``max_entries``."""
        fields: dict[bytes, bytes] = await self.redis.hgetall(name)
        ranked = sorted(fields, key=lambda field: _expiry(fields[field]))
        expired = [field for field in ranked if _expiry(fields[field]) <= now]
        excess = max(0, len(ranked) - len(expired) - self.max_entries)
        doomed = expired + ranked[len(expired) : len(expired) + excess]
        if doomed:
            await self.redis.hdel(name, *doomed)

    # faults

    def _fault(self, kind: str, detail: str) -> None:
        self.faults[kind] = self.faults.get(kind, 0) + 1
        source = "redis" if kind == "redis" else "embedder"
        if source not in self._failing:
            self._failing.add(source)
            log.warning(
                "semantic cache: %s failed (%s), lookups miss until it recovers", source, detail
            )

    def _recovered(self, source: str) -> None:
        if source in self._failing:
            self._failing.discard(source)
            log.warning("semantic cache: %s recovered", source)


def _expiry(value: bytes) -> float:
    return _EXPIRY.unpack_from(value)[0] if len(value) >= _EXPIRY.size else 0.0


def _text(field: bytes | str) -> str:
    return field.decode() if isinstance(field, bytes) else field

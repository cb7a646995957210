"""The semantic cache's index: which stored answer's conversation is nearest to a new one.

Looked up only after an exact-cache miss. Each stored answer's conversation text is embedded
(``embedders``) and kept as a unit vector under its exact-cache key, per (scope, partition):
the scope is the tenant, the partition a hash of everything but the conversation (route,
targets, tools, sampling), so an entry is only ever found by the same tenant asking the same
route the same way. ``find`` answers the key of the most similar entry when its cosine
similarity reaches the threshold: with numpy (the ``semantic`` extra) one matrix-vector product
over the partition's rows, else a pure-Python scan (``vectors``).

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
import time
from collections import OrderedDict
from typing import Any

from tokenrelay.cache.embedders import Embedder, EmbedderError, build_embedder
from tokenrelay.cache.vectors import Kernel, Matrix, cosine, expiry, kernel, pack, unit, unpack

__all__ = [
    "DEFAULT_THRESHOLD",
    "Embedder",
    "EmbedderError",
    "SemanticIndex",
    "build_embedder",
    "cosine",
    "pack",
    "unit",
    "unpack",
]

log = logging.getLogger("tokenrelay.cache")

# The threshold the quality bench recommends for the simulator's embedder (docs/cache-semantic.md);
# a real embedding model has its own and must be measured on the operator's traffic.
DEFAULT_THRESHOLD = 0.95
RECENT_VECTORS = 256  # texts whose vectors are kept, so the add after a miss embeds nothing
SWEEP_SECONDS = 60.0  # how often an add drops the expired entries of every scope


class _Rows:
    """One (scope, partition)'s entries as parallel rows: keys, expiries and unit vectors (the
    kernel's matrix). A removal moves the last row into the hole, so the rows stay packed."""

    __slots__ = ("expires", "keys", "matrix", "soonest", "where")

    def __init__(self, matrix: Matrix) -> None:
        self.matrix = matrix
        self.keys: list[str] = []
        self.expires: list[float] = []
        self.where: dict[str, int] = {}  # key -> row
        self.soonest = math.inf  # no row expires before this (it may be earlier than needed)

    def put(self, key: str, vector: Any, expires: float) -> list[str]:
        """Store ``key``'s vector; the keys dropped because theirs had another size (a new
        embedding model: they could never be compared)."""
        dropped: list[str] = []
        if self.keys and len(vector) != self.matrix.dimensions:
            dropped = self.keys
            self.keys, self.expires, self.where = [], [], {}
            self.matrix.truncate(0)
        row = self.where.get(key)
        if row is None:
            self.where[key] = len(self.keys)
            self.keys.append(key)
            self.expires.append(expires)
            self.matrix.append(vector)
        else:
            self.expires[row] = expires
            self.matrix.replace(row, vector)
        self.soonest = min(self.soonest, expires)
        return dropped

    def remove(self, key: str) -> None:
        row = self.where.pop(key, None)
        if row is None:
            return
        last = len(self.keys) - 1
        if row != last:
            moved = self.keys[row] = self.keys[last]
            self.expires[row] = self.expires[last]
            self.where[moved] = row
            self.matrix.move(last, row)
        self.keys.pop()
        self.expires.pop()
        self.matrix.truncate(last)

    def expired(self, now: float) -> list[str]:
        """The keys expired by ``now`` (checked only once the soonest expiry has passed)."""
        if now < self.soonest:
            return []
        gone = [key for key, expires in zip(self.keys, self.expires, strict=True) if expires <= now]
        self.soonest = min((e for e in self.expires if e > now), default=math.inf)
        return gone

    def best(self, query: Any) -> tuple[str, float] | None:
        """The nearest row's key and similarity (None when empty or of another size)."""
        if not self.keys or len(query) != self.matrix.dimensions:
            return None
        row, score = self.matrix.best(query)
        return self.keys[row], score


class _Scope:
    """One tenant's entries in memory: by partition, and in insertion order for eviction."""

    __slots__ = ("order", "partitions")

    def __init__(self) -> None:
        self.order: OrderedDict[tuple[str, str], None] = OrderedDict()
        self.partitions: dict[str, _Rows] = {}

    def drop(self, partition: str, key: str) -> None:
        self.order.pop((partition, key), None)
        rows = self.partitions.get(partition)
        if rows is not None:
            rows.remove(key)
            if not rows.keys:
                del self.partitions[partition]

    def expire(self, partition: str, now: float) -> None:
        rows = self.partitions.get(partition)
        if rows is not None:
            for key in rows.expired(now):
                self.drop(partition, key)


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
        vectorized: bool = True,
    ) -> None:
        """``vectorized=False`` scans in pure Python even when numpy is installed (tests)."""
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
        self._kernel: Kernel = kernel(vectorized)
        self.vectorized = self._kernel.vectorized  # numpy's one product per lookup, or a loop
        self._scopes: dict[str, _Scope] = {}
        self._recent: OrderedDict[bytes, Any] = OrderedDict()  # text digest -> kernel's vector
        self._failing: set[str] = set()
        self._next_sweep = time.monotonic() + SWEEP_SECONDS

    # the interface

    async def find(self, scope: str, partition: str, text: str) -> tuple[str, float] | None:
        """The exact-cache key of the most similar entry and its cosine similarity, when that
        reaches the threshold; None otherwise, and on any fault."""
        if self.redis is None:
            rows = self._memory_rows(scope, partition)
            if rows is None:  # nothing to compare with: no embedding on the request's path
                return None
            vector = await self._vector(text)
            found = None if vector is None else rows.best(vector)
        else:
            fields = await self._redis_fields(scope, partition)
            if not fields:
                return None
            vector = await self._vector(text)
            found = None if vector is None else self._redis_best(fields, vector)
        if found is None or found[1] < self.threshold:
            return None
        return found[0], min(found[1], 1.0)

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
        rows = held.partitions.get(partition)
        if rows is None:
            rows = held.partitions[partition] = _Rows(self._kernel.matrix())
        for other in rows.put(key, vector, now + life):
            held.order.pop((partition, other), None)
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

    async def _vector(self, text: str) -> Any | None:
        digest = hashlib.blake2b(text.encode(), digest_size=16).digest()
        known = self._recent.get(digest)
        if known is not None:
            self._recent.move_to_end(digest)
            return known
        try:
            vectors = await self.embedder.embed([text])
            vector = self._kernel.vector(vectors[0])
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

    def _memory_rows(self, scope: str, partition: str) -> _Rows | None:
        """The partition's live rows (the expired dropped first), or None when it has none."""
        held = self._scopes.get(scope)
        if held is None or partition not in held.partitions:
            return None
        held.expire(partition, time.monotonic())
        return held.partitions.get(partition)

    def _sweep(self, now: float) -> None:
        self._next_sweep = now + min(SWEEP_SECONDS, self.ttl)
        for name, held in list(self._scopes.items()):
            for partition in list(held.partitions):
                held.expire(partition, now)
            if not held.order:
                del self._scopes[name]

    # Redis

    def redis_key(self, scope: str, partition: str) -> str:
        """The hash of one (scope, partition): both hashed, so no tenant name is in a key."""
        both = hashlib.blake2b(f"{scope}\0{partition}".encode(), digest_size=16).hexdigest()
        return f"{self.prefix}{both}"

    async def _redis_fields(self, scope: str, partition: str) -> dict[bytes, bytes]:
        try:
            fields: dict[bytes, bytes] = await self.redis.hgetall(self.redis_key(scope, partition))
        except Exception as exc:  # any Redis failure is a miss (redis-py's errors vary)
            self._fault("redis", repr(exc))
            return {}
        self._recovered("redis")
        return fields

    def _redis_best(self, fields: dict[bytes, bytes], vector: Any) -> tuple[str, float] | None:
        """The nearest of the first ``max_entries`` live fields of the vector's size (the
        others are torn or another model's)."""
        names = list(fields)
        found = self._kernel.redis_best(
            list(fields.values()), vector, time.time(), self.max_entries
        )
        return None if found is None else (_text(names[found[0]]), found[1])

    async def _redis_add(
        self, scope: str, partition: str, key: str, vector: Any, life: float
    ) -> None:
        name = self.redis_key(scope, partition)
        now = time.time()
        try:
            async with self.redis.pipeline(transaction=False) as pipe:
                pipe.hset(name, key, self._kernel.pack(vector, now + life))
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
        ranked = sorted(fields, key=lambda field: expiry(fields[field]))
        expired = [field for field in ranked if expiry(fields[field]) <= now]
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


def _text(field: bytes | str) -> str:
    return field.decode() if isinstance(field, bytes) else field

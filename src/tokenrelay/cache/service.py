"""``ResponseCache``: what the relay asks of the cache for one request. ``plan`` decides from the
route's settings and the client's headers whether the request reads and writes the cache (and
computes its key); ``lookup`` finds its entry, exactly or, after an exact miss on a route with a
semantic cache, by meaning; ``store`` keeps a finished answer in a background task, after the
stream, whose failures are logged and counted but never reach a client."""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter, OrderedDict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, Protocol

import msgspec

from tokenrelay.cache import entry as entries
from tokenrelay.cache.key import CacheKey, cache_key, forwarded, scope_of
from tokenrelay.cache.settings import CacheSettings, CacheStoreSettings, SemanticCacheSettings
from tokenrelay.model import Event, GatewayError, Request

if TYPE_CHECKING:
    from tokenrelay.cache.store import CacheStore
    from tokenrelay.gate.identity import Identity
    from tokenrelay.observe.prometheus import Metric
    from tokenrelay.settings import TargetSettings

log = logging.getLogger("tokenrelay.cache")

Result = Literal["hit", "miss", "bypass"]
RESULTS: tuple[Result, ...] = ("hit", "miss", "bypass")
TTL_HEADER = "x-tokenrelay-cache-ttl"
CONTROL_HEADER = "x-tokenrelay-cache"


class SemanticIndex(Protocol):
    """What ``tokenrelay.cache.semantic.SemanticIndex`` offers the cache."""

    async def find(self, scope: str, partition: str, text: str) -> tuple[str, float] | None: ...
    async def add(
        self, scope: str, partition: str, text: str, key: str, *, ttl: float | None = None
    ) -> None: ...


# (the route's semantic settings, its cache.ttl) -> its index
IndexFactory = Callable[[SemanticCacheSettings, float], SemanticIndex]


@dataclass(slots=True)
class Plan:
    """What the cache does for one request: read it, write it, under which key, for how long."""

    route: str
    label: str  # the route as metrics name it (provider models as one)
    settings: CacheSettings
    read: bool
    write: bool
    ttl: float
    key: CacheKey | None  # None when it neither reads nor writes
    result: Result  # "miss" until a lookup hits; "bypass" when it does not read
    similarity: float | None = None  # a semantic hit's

    @property
    def header(self) -> tuple[bytes, bytes]:
        return (CONTROL_HEADER.encode(), self.result.encode())


# The entries most recently hit are also kept decoded (about 4x their stored size in memory),
# up to this many stored bytes: a hit on one of them skips decoding.
HOT_BYTES = 2 * 1024 * 1024


@dataclass(slots=True)
class Found:
    entry: entries.Answer
    similarity: float | None  # None for an exact hit


def client_controls(headers: Mapping[str, str]) -> tuple[bool, bool, float | None]:
    """``(read, write, ttl)`` from ``cache-control: no-cache`` (no lookup, still store),
    ``no-store`` and ``x-tokenrelay-cache: bypass`` (neither), ``x-tokenrelay-cache-ttl``
    (seconds, at most the route's). A TTL that is not a positive number is a 400."""
    read = write = True
    control = headers.get("cache-control")
    if control:
        words = {word.strip().split("=")[0] for word in control.lower().split(",")}
        if "no-store" in words:
            read = write = False
        elif "no-cache" in words:
            read = False
    if headers.get(CONTROL_HEADER, "").strip().lower() == "bypass":
        read = write = False
    ttl: float | None = None
    raw = headers.get(TTL_HEADER)
    if raw is not None:
        try:
            ttl = float(raw)
        except ValueError:
            ttl = -1.0
        if not 0 < ttl < float("inf"):
            raise GatewayError(
                "invalid_request",
                f"{TTL_HEADER} must be a positive number of seconds (got {raw[:40]!r}); it can "
                "shorten the route's cache lifetime, never lengthen it",
                400,
            )
    return read, write, ttl


def samples(request: Request, targets: Iterable[TargetSettings]) -> bool:
    """Whether the answer is sampled: a temperature above 0, or none given (the request's, else
    its targets' params), since the providers' default is 1."""
    temperature = request.temperature
    if temperature is None:
        given = [t.params.get("temperature") for t in targets]
        numbers = [value for value in given if isinstance(value, int | float)]
        if not given or len(numbers) != len(given):
            return True
        temperature = max(numbers)
    return temperature > 0


class ResponseCache:
    def __init__(
        self,
        store: CacheStore,
        settings: CacheStoreSettings,
        *,
        embedder_pool: Any = None,
        index_factory: IndexFactory | None = None,
    ) -> None:
        self.backend = store
        self.settings = settings
        self.lookups: Counter[tuple[str, Result]] = Counter()
        self.stored = 0
        self.store_failures = 0  # stores that failed (Redis, encoding); the client never knew
        self.semantic_failures = 0  # embedder or index calls that failed or timed out
        self.index_factory = index_factory or self._default_index
        self._pool = embedder_pool
        self._indexes: dict[str, SemanticIndex] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._metrics: tuple[Any, ...] | None = None
        # the entries hit lately, decoded, by key, each with the bytes it was decoded from
        self._hot: OrderedDict[str, tuple[bytes, entries.Answer]] = OrderedDict()
        self._hot_bytes = 0

    # --- per request -----------------------------------------------------------------------------

    def plan(
        self,
        route: str,
        settings: CacheSettings,
        targets: list[TargetSettings],
        forward: Iterable[str],
        request: Request,
        identity: Identity | None,
        headers: Mapping[str, str],
        *,
        label: str | None = None,
    ) -> Plan | None:
        """The cache's part in a request on a route whose cache is on; None when it is off."""
        if settings.mode == "off":
            return None
        read, write, ttl = client_controls(headers)
        read, write = read and settings.reads, write and settings.writes
        if not settings.sampled and samples(request, targets):
            read = write = False
        lifetime = min(float(settings.ttl), ttl) if ttl is not None else float(settings.ttl)
        key = None
        if read or write:
            key = cache_key(
                route,
                targets,
                request,
                scope_of(identity, settings.scope),
                forwarded(headers, forward),
                with_text=settings.semantic is not None,
            )
        result: Result = "miss" if read or (write and settings.mode == "write_only") else "bypass"
        return Plan(route, label or route, settings, read, write, lifetime, key, result)

    async def lookup(self, plan: Plan) -> Found | None:
        """The plan's entry: exact, else (a semantic route, a short conversation) the nearest
        stored one at or above the threshold. Counts the result."""
        found = None
        if plan.read and plan.key is not None:
            found = await self._exact(plan.key.key)
            semantic = plan.settings.semantic
            if found is None and semantic is not None and self._short(plan, semantic):
                found = await self._semantic(plan, semantic)
        if found is not None:
            plan.result, plan.similarity = "hit", found.similarity
        self.lookups[(plan.label, plan.result)] += 1
        return found

    async def _exact(self, key: str) -> Found | None:
        data = await self.backend.get(key)
        if data is None:
            return None
        hot = self._hot.get(key)
        if hot is not None and (hot[0] is data or hot[0] == data):  # the same bytes as before
            self._hot.move_to_end(key)
            return Found(hot[1], None)
        try:
            answer = entries.decode(data)
        except msgspec.DecodeError:
            log.warning("response cache: entry %s is unreadable; ignored", key[:12])
            return None
        self._keep_decoded(key, data, answer)
        return Found(answer, None)

    def _keep_decoded(self, key: str, data: bytes, answer: entries.Answer) -> None:
        """Remember ``answer`` decoded, so the next hit on ``key`` skips the decoding (checked
        against the stored bytes, so a replaced entry is decoded afresh)."""
        if len(data) > HOT_BYTES:
            return
        old = self._hot.pop(key, None)
        if old is not None:
            self._hot_bytes -= len(old[0])
        self._hot[key] = (data, answer)
        self._hot_bytes += len(data)
        while self._hot_bytes > HOT_BYTES:
            _, (dropped, _) = self._hot.popitem(last=False)
            self._hot_bytes -= len(dropped)

    @staticmethod
    def _short(plan: Plan, semantic: SemanticCacheSettings) -> bool:
        assert plan.key is not None
        return 0 < plan.key.turns <= semantic.max_messages

    async def _semantic(self, plan: Plan, semantic: SemanticCacheSettings) -> Found | None:
        assert plan.key is not None
        key = plan.key
        try:
            index = self._index(plan, semantic)
            near = await asyncio.wait_for(
                index.find(key.scope, key.partition, key.text), semantic.timeout
            )
        except Exception:  # a slow or failing embedder is a miss
            self.semantic_failures += 1
            log.warning(
                "response cache: semantic lookup failed on route %s", plan.route, exc_info=True
            )
            return None
        if near is None:
            return None
        found = await self._exact(near[0])
        if found is not None:
            found.similarity = near[1]
        return found

    def _index(self, plan: Plan, semantic: SemanticCacheSettings) -> SemanticIndex:
        index = self._indexes.get(plan.route)
        if index is None:
            ttl = float(plan.settings.ttl)
            index = self._indexes[plan.route] = self.index_factory(semantic, ttl)
        return index

    def _default_index(self, semantic: SemanticCacheSettings, ttl: float) -> SemanticIndex:
        from tokenrelay.cache import semantic as module

        # In Redis with the answers when they are there (so every instance finds them), else here
        redis = getattr(self.backend, "client", None)
        prefix = getattr(self.backend, "prefix", "tokenrelay:cache:") + "sem:"
        embedder = module.build_embedder(semantic, self._pool)
        return module.SemanticIndex(
            embedder,
            threshold=semantic.threshold,
            max_entries=semantic.max_entries,
            ttl=ttl,  # the route's; a client's x-tokenrelay-cache-ttl shortens an entry's
            redis=redis,
            prefix=prefix,
        )

    def store(
        self, plan: Plan, provider: str, model: str, batches: list[tuple[float, list[Event]]]
    ) -> None:
        """Keep a completed answer, in the background (never on the stream's path)."""
        if not plan.write or plan.key is None:
            return
        task = asyncio.create_task(self._store(plan, provider, model, batches))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _store(
        self, plan: Plan, provider: str, model: str, batches: list[tuple[float, list[Event]]]
    ) -> None:
        key = plan.key
        assert key is not None
        try:
            data = entries.encode(provider, model, time.time(), batches)
        except entries.Uncacheable:
            return
        if len(data) > self.settings.max_entry_bytes:
            return
        failures = getattr(self.backend, "failures", 0)
        try:
            await self.backend.set(key.key, data, plan.ttl)
        except Exception:
            log.exception("response cache: storing an answer failed")
            self.store_failures += 1
            return
        if getattr(self.backend, "failures", 0) != failures:  # the store counted a failure
            self.store_failures += 1
            return
        self.stored += 1
        semantic = plan.settings.semantic
        if semantic is not None and self._short(plan, semantic):
            try:
                index = self._index(plan, semantic)
                await asyncio.wait_for(
                    index.add(key.scope, key.partition, key.text, key.key, ttl=plan.ttl),
                    semantic.timeout * 5,
                )
            except Exception:
                self.semantic_failures += 1
                log.warning("response cache: semantic index add failed", exc_info=True)

    async def idle(self) -> None:
        """Wait for the stores in flight (tests, shutdown)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    async def close(self, grace: float = 2.0) -> None:
        """Give the stores in flight ``grace`` seconds, then close the backend."""
        try:
            await asyncio.wait_for(self.idle(), grace)
        except TimeoutError:
            log.warning(
                "response cache: %d answer(s) were not stored before exit", len(self._tasks)
            )
        await self.backend.close()

    # --- metrics ---------------------------------------------------------------------------------

    def metrics(self) -> list[Metric]:
        """The cache's counters for ``GET /metrics``, read now."""
        from tokenrelay.observe.prometheus import Counter as Family
        from tokenrelay.observe.prometheus import Gauge

        if self._metrics is None:
            self._metrics = (
                Family(
                    "tokenrelay_cache_lookups_total",
                    "Requests on routes with a response cache, by result: hit (served from the "
                    "cache), miss (answered upstream) or bypass (the cache was not read).",
                    ("route", "result"),
                ),
                Family("tokenrelay_cache_stores_total", "Answers stored in the response cache."),
                Family(
                    "tokenrelay_cache_store_failures_total",
                    "Answers the response cache failed to store (Redis down or slow).",
                ),
                Family(
                    "tokenrelay_cache_backend_failures_total",
                    "Response-cache backend calls that failed or timed out (each a miss).",
                ),
                Family(
                    "tokenrelay_cache_semantic_failures_total",
                    "Semantic lookups or index updates that failed or timed out (each a miss).",
                ),
                Gauge("tokenrelay_cache_memory_bytes", "Bytes of answers cached in this process."),
            )
        lookups, stores, failures, backend, semantic, size = self._metrics
        for (route, result), value in self.lookups.items():
            lookups.labels(route, result).value = value
        stores.labels().value = self.stored
        failures.labels().value = self.store_failures
        backend.labels().value = getattr(self.backend, "failures", 0)
        semantic.labels().value = self.semantic_failures
        size.set(value=getattr(self.backend, "size", 0))
        return list(self._metrics)

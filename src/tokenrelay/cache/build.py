"""The response cache built from the settings: in Redis when ``redis_url`` is set (and
``cache.redis`` is on), else in this process's memory."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from tokenrelay.cache.service import ResponseCache
from tokenrelay.cache.store import CacheStore, MemoryCache, RedisCache

if TYPE_CHECKING:
    from tokenrelay.settings import Settings

log = logging.getLogger("tokenrelay.cache")


def build_cache(settings: Settings, pool: Any = None) -> ResponseCache:
    """``pool``: the upstream HTTP pool, for an embeddings URL of a semantic cache."""
    options = settings.cache
    store: CacheStore
    if settings.redis_url and options.redis:
        store = RedisCache.from_url(
            settings.redis_url,
            timeout=options.redis_timeout,
            prefix=settings.limits.key_prefix,
            retry_interval=options.redis_retry_interval,
        )
        log.info("response cache: in Redis, shared by every instance")
    else:
        store = MemoryCache(options.memory_bytes)
        log.info("response cache: in memory, at most %d bytes", options.memory_bytes)
    return ResponseCache(store, options, embedder_pool=pool)

"""The cache's settings: per route (``routes.<name>.cache``, also ``provider_models.cache``) and
for the whole gateway (``[cache]``: where entries live and how much room they get)."""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec

from tokenrelay.durations import seconds

CacheMode = Literal["off", "on", "read_only", "write_only"]
CacheScope = Literal["org", "key", "global"]


class SemanticCacheSettings(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """A lookup by meaning after an exact miss (``tokenrelay.cache.semantic``): an embedding of
    the conversation, compared with the ones stored for the same tenant and request settings."""

    embeddings_url: str | None = None  # an OpenAI-compatible /v1/embeddings URL
    embeddings_model: str = "text-embedding-3-small"  # the model that URL is asked for
    embeddings_api_key_env: str | None = None  # the variable holding that URL's API key
    embedder: str | None = None  # or a Python entry point "pkg.module:factory"
    # cosine similarity a stored conversation needs to be served (1.0: identical only)
    threshold: Annotated[float, msgspec.Meta(gt=0, le=1)] = 0.95
    # only conversations of at most this many messages are looked up or indexed
    max_messages: Annotated[int, msgspec.Meta(ge=1)] = 2
    timeout: Annotated[float, msgspec.Meta(gt=0)] = 1.0  # seconds; slower counts as a miss
    max_entries: Annotated[int, msgspec.Meta(ge=1)] = 10_000  # per tenant scope

    def __post_init__(self) -> None:
        if (self.embeddings_url is None) == (self.embedder is None):
            raise ValueError("cache.semantic needs exactly one of embeddings_url and embedder")


class CacheSettings(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """A route's response cache (docs/cache.md). Off by default."""

    # "on": look up and store; "read_only": look up only; "write_only": store only
    mode: CacheMode = "off"
    ttl: float | str = 3600.0  # seconds, or "90m", "1h", "7d"
    # who shares entries: "org" (the caller's org, else its key or user, else its address),
    # "key" (the key or user, else the address), "global" (every caller: say so knowingly)
    scope: CacheScope = "org"
    # also cache requests that sample (temperature > 0, or unset: the providers' default is 1)
    sampled: bool = False
    replay: Literal["instant", "paced"] = "instant"  # a hit at once, or at the original pace
    semantic: SemanticCacheSettings | None = None  # a lookup by meaning after an exact miss

    def __post_init__(self) -> None:
        self.ttl = seconds(self.ttl, "cache.ttl")

    @property
    def reads(self) -> bool:
        return self.mode in ("on", "read_only")

    @property
    def writes(self) -> bool:
        return self.mode in ("on", "write_only")


class CacheStoreSettings(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """Where cached answers live: this process's memory, or Redis when ``redis_url`` is set (then
    every instance shares them)."""

    memory_bytes: Annotated[int, msgspec.Meta(ge=0)] = 64 * 1024 * 1024  # LRU bound in memory
    max_entry_bytes: Annotated[int, msgspec.Meta(ge=1)] = 1024 * 1024  # larger answers: not kept
    redis: bool = True  # use Redis when redis_url is set (False: memory per instance)
    # seconds a Redis call may take before it counts as a miss (or a store not made)
    redis_timeout: Annotated[float, msgspec.Meta(gt=0)] = 0.25
    # after a Redis failure, seconds without trying it (each lookup is a miss at once)
    redis_retry_interval: Annotated[float, msgspec.Meta(ge=0)] = 1.0

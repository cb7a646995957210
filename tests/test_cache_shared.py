"""The response cache in Redis: two gateway instances share entries, and a Redis restart (a
private ``redis-server``, never the machine's 6379) is survived as misses, never as errors.
And the semantic plug-in's wiring, against an in-test index that follows its Protocol."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
import pytest_asyncio

from tests.redis_server import RedisServer, redis_server_fixture
from tests.servers import gateway_server
from tests.test_cache import PATHS, ask, body_for, cache_environ, stored, upstream_requests
from tokenrelay.cache.settings import SemanticCacheSettings
from tokenrelay.simulator import RunningSimulator, SimulatorSettings, start

pytestmark = pytest.mark.asyncio(loop_scope="session")
redis_server = redis_server_fixture()


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def sim() -> AsyncIterator[RunningSimulator]:
    running = await start(SimulatorSettings(ttft_ms=5, tokens=20, token_delay_ms=1))
    try:
        yield running
    finally:
        await running.stop()


@pytest_asyncio.fixture(loop_scope="session")
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


async def test_redis_cache_is_shared_and_survives_a_restart(
    sim: RunningSimulator,
    redis_server: RedisServer,
    http: aiohttp.ClientSession,
    tmp_path: Any,
) -> None:
    environ = {
        **cache_environ(sim.url, f"sqlite:///{tmp_path}/ledger.db"),
        "TOKENRELAY_REDIS_URL": redis_server.url,
        "TOKENRELAY_LIMITS__KEY_PREFIX": "cache-test",
        "TOKENRELAY_CACHE__REDIS_RETRY_INTERVAL": "0.2",
    }
    async with gateway_server(environ) as one, gateway_server(environ) as two:
        body = body_for("openai", "cached", "Shared by instances")
        first, answer = await ask(one, http, "openai", body)
        assert first.headers["x-tokenrelay-cache"] == "miss"
        await stored(one)
        before = upstream_requests(sim)
        second, again = await ask(two, http, "openai", body)
        assert second.headers["x-tokenrelay-cache"] == "hit" and again.text == answer.text
        assert again.usage.output_tokens == answer.usage.output_tokens
        assert upstream_requests(sim) == before
        redis_server.stop()  # Redis gone: misses, answered by the upstream, never an error
        for instance in (one, two):
            response, during = await ask(instance, http, "openai", body)
            assert response.status == 200 and during.text == answer.text
            assert response.headers["x-tokenrelay-cache"] == "miss"
            await stored(instance)
        cache = one.gateway.cache
        assert cache is not None and cache.backend.failures >= 1  # type: ignore[attr-defined]
        redis_server.start()  # back, empty (nothing persisted): a miss stores, then hits
        await asyncio.sleep(0.3)  # past the retry interval
        response, _ = await ask(one, http, "openai", body)
        assert response.status == 200 and response.headers["x-tokenrelay-cache"] == "miss"
        await stored(one)
        response, _ = await ask(two, http, "openai", body)
        assert response.headers["x-tokenrelay-cache"] == "hit"
        async with http.get(one.url + "/metrics") as metrics:
            text = await metrics.text()
        assert "tokenrelay_cache_backend_failures_total" in text


class FakeIndex:
    """A ``SemanticIndex`` by word overlap (Jaccard), per scope and partition, as the real
    module's contract says: the best stored key at or above the threshold."""

    def __init__(self, threshold: float) -> None:
        self.threshold = threshold
        self.entries: dict[tuple[str, str], list[tuple[set[str], str]]] = {}
        self.slow = False

    async def find(self, scope: str, partition: str, text: str) -> tuple[str, float] | None:
        if self.slow:
            await asyncio.sleep(5)
        words = set(text.lower().replace("?", "").split())
        best = None
        for stored_words, key in self.entries.get((scope, partition), []):
            score = len(words & stored_words) / len(words | stored_words)
            if score >= self.threshold and (best is None or score > best[1]):
                best = (key, score)
        return best

    async def add(
        self, scope: str, partition: str, text: str, key: str, *, ttl: float | None = None
    ) -> None:
        words = set(text.lower().replace("?", "").split())
        self.entries.setdefault((scope, partition), []).append((words, key))


async def test_semantic_hit_after_an_exact_miss(
    sim: RunningSimulator, http: aiohttp.ClientSession, tmp_path: Any
) -> None:
    environ = {
        **cache_environ(sim.url, f"sqlite:///{tmp_path}/ledger.db"),
        "TOKENRELAY_ROUTES__NEAR__TARGETS": "anthropic:claude-sonnet-5-5",
        "TOKENRELAY_ROUTES__NEAR__CACHE": json.dumps(
            {
                "mode": "on",
                "sampled": True,
                "semantic": {"embedder": "tests:fake", "threshold": 0.7, "timeout": 0.2},
            }
        ),
    }
    index = FakeIndex(0.7)
    made: list[SemanticCacheSettings] = []

    def factory(settings: SemanticCacheSettings, ttl: float) -> FakeIndex:
        made.append(settings)
        return index

    async with gateway_server(environ) as gw:
        assert gw.gateway.cache is not None
        gw.gateway.cache.index_factory = factory
        body = body_for("anthropic", "near", "What is the capital of France?")
        first, answer = await ask(gw, http, "anthropic", body, name="near")
        assert first.headers["x-tokenrelay-cache"] == "miss"
        await stored(gw)
        assert made and made[0].threshold == 0.7 and index.entries
        near = body_for("anthropic", "near", "what is the capital of France")
        before = upstream_requests(sim)
        second, again = await ask(gw, http, "anthropic", near, name="near")
        assert second.headers["x-tokenrelay-cache"] == "hit" and again.text == answer.text
        assert upstream_requests(sim) == before
        record = await gw.wait_record(second.headers["x-request-id"])
        assert record.cache == "hit" and record.cache_similarity == pytest.approx(1.0)
        far = body_for("anthropic", "near", "How tall is the Eiffel tower?")
        response, _ = await ask(gw, http, "anthropic", far, name="near")
        assert response.headers["x-tokenrelay-cache"] == "miss"
        # a slow embedder is a miss, bounded by the timeout
        index.slow = True
        paraphrase = body_for("anthropic", "near", "what's the capital of France")
        response, _ = await ask(gw, http, "anthropic", paraphrase, name="near")
        assert response.status == 200 and response.headers["x-tokenrelay-cache"] == "miss"
        assert gw.gateway.cache.semantic_failures >= 1


async def test_cache_off_builds_nothing(sim: RunningSimulator, tmp_path: Any) -> None:
    environ = {"TOKENRELAY_DATABASE_URL": f"sqlite:///{tmp_path}/ledger.db", "TOKENRELAY_DEMO": "1"}
    async with gateway_server(environ) as gw:
        assert gw.gateway.cache is None
    assert PATHS  # the shared table is imported from test_cache

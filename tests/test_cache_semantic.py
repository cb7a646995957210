"""The semantic cache end to end, with the real index and the HTTP embedder against the
simulator's ``/v1/embeddings`` (no fake of our own code): a reworded question hits after an exact
miss, a near miss does not, another org never does, the similarity reaches the ledger, and two
instances share the index through Redis (a private ``redis-server``)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
import pytest_asyncio

from tests.redis_server import RedisServer, redis_server_fixture
from tests.servers import gateway_server
from tests.test_cache import ask, body_for, cache_environ, new_key, stored
from tokenrelay.simulator import RunningSimulator, SimulatorSettings, start

pytestmark = pytest.mark.asyncio(loop_scope="session")
redis_server = redis_server_fixture()


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def sim() -> AsyncIterator[RunningSimulator]:
    running = await start(SimulatorSettings(ttft_ms=5, tokens=12, token_delay_ms=1))
    try:
        yield running
    finally:
        await running.stop()


@pytest_asyncio.fixture(loop_scope="session")
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


def upstream_requests(sim: RunningSimulator) -> int:
    """Requests for answers (the embedder's calls to the same simulator left out)."""
    paths = sim.stats()["requests"]
    return sum(count for path, count in paths.items() if not path.endswith("/embeddings"))


def semantic_environ(sim_url: str, database: str) -> dict[str, str]:
    semantic = {"embeddings_url": sim_url + "/v1/embeddings", "embeddings_model": "sim-embed"}
    return {
        **cache_environ(sim_url, database),
        "TOKENRELAY_ROUTES__NEAR__TARGETS": "anthropic:claude-sonnet-5-5",
        "TOKENRELAY_ROUTES__NEAR__SYSTEM": '"Be brief."',
        "TOKENRELAY_ROUTES__NEAR__CACHE": json.dumps(
            {"mode": "on", "sampled": True, "semantic": semantic}
        ),
    }


async def test_a_reworded_question_hits_and_a_near_miss_does_not(
    sim: RunningSimulator, http: aiohttp.ClientSession, tmp_path: Any
) -> None:
    async with gateway_server(semantic_environ(sim.url, f"sqlite:///{tmp_path}/l.db")) as gw:
        acme = {"authorization": f"Bearer {await new_key(gw, 'ann', 'acme')}"}
        globex = {"authorization": f"Bearer {await new_key(gw, 'cat', 'globex')}"}
        body = body_for("anthropic", "near", "What is the capital of France?")
        first, answer = await ask(gw, http, "anthropic", body, acme, name="near")
        assert first.headers["x-tokenrelay-cache"] == "miss"
        await stored(gw)
        before = upstream_requests(sim)
        # the same words, other case and punctuation: no exact hit, a semantic one
        reworded = body_for("anthropic", "near", "what is the capital of france")
        second, again = await ask(gw, http, "anthropic", reworded, acme, name="near")
        assert second.headers["x-tokenrelay-cache"] == "hit" and again.text == answer.text
        assert upstream_requests(sim) == before
        record = await gw.wait_record(second.headers["x-request-id"])
        assert record.cache == "hit" and record.cache_similarity is not None
        assert record.cache_similarity >= 0.95 and record.attempts[0].outcome == "cache_hit"
        # a near miss (another country) is a miss at the default threshold
        other = body_for("anthropic", "near", "What is the capital of Germany?")
        response, _ = await ask(gw, http, "anthropic", other, acme, name="near")
        assert response.headers["x-tokenrelay-cache"] == "miss"
        # another org never finds acme's entry, however close the question
        response, _ = await ask(gw, http, "anthropic", reworded, globex, name="near")
        assert response.headers["x-tokenrelay-cache"] == "miss"
        # a long conversation is not looked up by meaning (max_messages, 2 by default)
        long = body_for("anthropic", "near", "what is the capital of france")
        long["messages"] = [
            {"role": "user", "content": "hi"},
            {"role": "assistant", "content": "Hello."},
            {"role": "user", "content": "what is the capital of france"},
        ]
        response, _ = await ask(gw, http, "anthropic", long, acme, name="near")
        assert response.headers["x-tokenrelay-cache"] == "miss"


async def test_two_instances_share_the_semantic_index_in_redis(
    sim: RunningSimulator,
    redis_server: RedisServer,
    http: aiohttp.ClientSession,
    tmp_path: Any,
) -> None:
    environ = {
        **semantic_environ(sim.url, f"sqlite:///{tmp_path}/l.db"),
        "TOKENRELAY_REDIS_URL": redis_server.url,
        "TOKENRELAY_LIMITS__KEY_PREFIX": "semantic-test",
    }
    async with gateway_server(environ) as one, gateway_server(environ) as two:
        body = body_for("anthropic", "near", "How many legs does a spider have?")
        first, answer = await ask(one, http, "anthropic", body, name="near")
        assert first.headers["x-tokenrelay-cache"] == "miss"
        await stored(one)
        before = upstream_requests(sim)
        reworded = body_for("anthropic", "near", "how many legs does a spider have")
        second, again = await ask(two, http, "anthropic", reworded, name="near")
        assert second.headers["x-tokenrelay-cache"] == "hit" and again.text == answer.text
        assert upstream_requests(sim) == before

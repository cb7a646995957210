"""Targets that cannot carry a request, over real HTTP: a field only one dialect knows (here
Anthropic's ``top_k``, which no OpenAI-compatible API has) skips the targets of the other
dialect with ``outcome=unsupported``, never blames the client for an outage, is a 400 only when
no target of the route can carry it, and neither trips a breaker nor receives a hedge."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import msgspec
import pytest
import pytest_asyncio

from tests.servers import RunningGateway, gateway_environ, gateway_server
from tests.test_failover import CLAUDE, GPT, attempts, faulty, route

pytestmark = pytest.mark.asyncio(loop_scope="session")

MINI = {"provider": "openai", "model": "gpt-5.4-mini"}


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def gw(simulator: Any) -> AsyncIterator[RunningGateway]:
    environ = {
        **gateway_environ(simulator.url),
        **route("outage", [faulty(CLAUDE, fault=529), GPT], retries=0),
        **route("openaionly", [GPT, MINI]),
        **route(
            "nohedge",
            [faulty(CLAUDE, ttft_ms=3000), GPT],
            hedge="true",
            hedge_delay=0.1,
            first_token_timeout=0.5,
            retries=0,
        ),
        **route(
            "lastcarrier",
            [faulty(CLAUDE, fault="hang_before_first_byte"), GPT],
            first_token_timeout=0.3,
            retry_backoff=0.05,
        ),
    }
    async with gateway_server(environ) as running:
        yield running


async def messages(
    gw: RunningGateway, route_name: str, **fields: Any
) -> tuple[aiohttp.ClientResponse, bytes]:
    body = {
        "model": route_name,
        "max_tokens": 50,
        "messages": [{"role": "user", "content": "hi"}],
        "stream": True,
        **fields,
    }
    async with aiohttp.ClientSession() as http:
        response = await http.post(gw.url + "/v1/messages", json=body)
        return response, await response.read()


async def simulator_requests(simulator: Any, reset: bool = False) -> dict[str, int]:
    async with aiohttp.ClientSession() as http:
        if reset:
            await http.post(simulator.url + "/stats/reset")
        async with http.get(simulator.url + "/stats") as response:
            requests: dict[str, int] = (await response.json())["requests"]
            return requests


async def test_an_outage_is_not_turned_into_a_client_error(gw: RunningGateway) -> None:
    # Anthropic is overloaded and OpenAI cannot carry top_k: the client hears of the outage
    # (the upstream's 529), not a 400 blaming its request, and learns what was skipped.
    response, body = await messages(gw, "outage", top_k=5)
    assert response.status == 529
    error = msgspec.json.decode(body)["error"]
    assert error["type"] == "overloaded_error"
    assert "simulated overload" in error["message"]
    assert "openai/gpt-5.5" in error["message"] and "top_k" in error["message"]
    assert [a[:2] for a in attempts(response)] == [
        ["anthropic/claude-sonnet-5-5", "outcome=overloaded"],
        ["openai/gpt-5.5", "outcome=unsupported"],
    ]


async def test_a_request_no_target_can_carry_is_a_400_naming_the_field(
    gw: RunningGateway, simulator: Any
) -> None:
    await simulator_requests(simulator, reset=True)
    response, body = await messages(gw, "openaionly", top_k=5)
    assert response.status == 400
    error = msgspec.json.decode(body)["error"]
    assert error["type"] == "invalid_request_error"
    assert "top_k" in error["message"]
    assert "openai/gpt-5.5" in error["message"] and "openai/gpt-5.4-mini" in error["message"]
    assert [a[1] for a in attempts(response)] == ["outcome=unsupported"] * 2
    assert await simulator_requests(simulator) == {}  # nothing was sent upstream


async def test_a_target_that_cannot_carry_the_request_is_skipped(
    simulator: Any,
) -> None:
    environ = {
        **gateway_environ(simulator.url),
        **route("openaifirst", [GPT, CLAUDE]),
        # Breakers on (the shared environ turns them off), opening at the first failure.
        "TOKENRELAY_BREAKER__ENABLED": "true",
        "TOKENRELAY_BREAKER__FAILURES": "1",
        "TOKENRELAY_BREAKER__COOLDOWN": "60",
    }
    await simulator_requests(simulator, reset=True)
    async with gateway_server(environ) as gw:
        for _ in range(3):  # a skip counted as a failure would open OpenAI's circuit
            response, body = await messages(gw, "openaifirst", top_k=5)
            assert response.status == 200 and b"message_stop" in body
            assert response.headers["x-tokenrelay-provider"] == "anthropic"
            assert [a[:2] for a in attempts(response)] == [
                ["openai/gpt-5.5", "outcome=unsupported"],
                ["anthropic/claude-sonnet-5-5", "outcome=ok"],
            ]
        assert await simulator_requests(simulator) == {"/v1/messages": 3}
        states = await gw.gateway.router.breaker.snapshot()
        assert states.get("openai:gpt-5.5", "closed") == "closed"
        async with aiohttp.ClientSession() as http, http.get(gw.url + "/metrics") as metrics:
            exposition = await metrics.text()
        assert "tokenrelay_upstream_failures_total{" not in exposition  # a skip is no failure
        response, _ = await messages(gw, "openaifirst")  # without top_k OpenAI serves it
        assert response.headers["x-tokenrelay-provider"] == "openai"


async def test_a_target_that_cannot_carry_the_request_is_not_hedged_to(
    gw: RunningGateway, simulator: Any
) -> None:
    await simulator_requests(simulator, reset=True)
    response, body = await messages(gw, "nohedge", top_k=5)
    assert response.status == 504  # the primary's deadline; OpenAI was never an option
    assert "/v1/chat/completions" not in await simulator_requests(simulator)
    assert sorted(a[1] for a in attempts(response)) == ["outcome=timeout", "outcome=unsupported"]
    assert b"top_k" in body


async def test_a_timed_out_target_is_retried_when_no_other_can_carry_the_request(
    gw: RunningGateway,
) -> None:
    started = time.monotonic()
    response, _ = await messages(gw, "lastcarrier", top_k=5)
    assert response.status == 504
    assert time.monotonic() - started >= 0.6  # two deadlines: it was the last carrier
    assert [a[:2] for a in attempts(response)] == [
        ["anthropic/claude-sonnet-5-5", "outcome=timeout"],
        ["openai/gpt-5.5", "outcome=unsupported"],
        ["anthropic/claude-sonnet-5-5", "outcome=timeout"],
    ]

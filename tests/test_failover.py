"""Failover before the first token, over real HTTP: deadlines, retries, budgets, and which
upstream failures move on, retry, or go straight back to the client."""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import msgspec
import pytest
import pytest_asyncio

from tests.servers import RunningGateway, gateway_environ, gateway_server

pytestmark = pytest.mark.asyncio(loop_scope="session")

CLAUDE = {"provider": "anthropic", "model": "claude-sonnet-5-5"}
GPT = {"provider": "openai", "model": "gpt-5.5"}


def route(name: str, targets: list[dict[str, Any]], **settings: Any) -> dict[str, str]:
    env = {f"TOKENRELAY_ROUTES__{name.upper()}__TARGETS": msgspec.json.encode(targets).decode()}
    for key, value in settings.items():
        env[f"TOKENRELAY_ROUTES__{name.upper()}__{key.upper()}"] = str(value)
    return env


def faulty(target: dict[str, Any], **knobs: Any) -> dict[str, Any]:
    headers = {f"x-sim-{k.replace('_', '-')}": str(v) for k, v in knobs.items()}
    return {**target, "headers": headers}


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def gw(simulator: Any) -> AsyncIterator[RunningGateway]:
    environ = {
        **gateway_environ(simulator.url),
        **route("slowfirst", [faulty(CLAUDE, ttft_ms=3000), GPT], first_token_timeout=0.3),
        **route(
            "slowtokens",
            [faulty(CLAUDE, tokens=5, token_delay_ms=150)],
            first_token_timeout=0.3,
        ),
        **route("retry429", [faulty(CLAUDE, fault=429, retry_after=0.2), GPT], retries=1),
        **route("longwait", [faulty(CLAUDE, fault=429, retry_after=30), GPT], budget=5),
        **route("early", [faulty(CLAUDE, fault="error_before_content"), GPT]),
        **route("badkey", [faulty(CLAUDE, fault=401), GPT], retries=3),
        **route("final", [faulty(CLAUDE, fault=400), GPT]),
        **route(
            "budget",
            [faulty(CLAUDE, fault="hang_before_first_byte"), faulty(GPT, ttft_ms=5000)],
            first_token_timeout=2,
            budget=0.5,
        ),
        **route("reset", [faulty(CLAUDE, fault="reset", fault_after=0), GPT], retries=0),
        **route(
            "hang",
            [faulty(CLAUDE, fault="hang_before_first_byte"), GPT],
            first_token_timeout=0.3,
            retries=0,
        ),
    }
    async with gateway_server(environ) as running:
        yield running


async def generate(gw: RunningGateway, route_name: str) -> tuple[aiohttp.ClientResponse, bytes]:
    async with aiohttp.ClientSession() as http:
        response = await http.post(
            gw.url + "/api/generate", json={"prompt": "hi", "route": route_name}
        )
        return response, await response.read()


def attempts(response: aiohttp.ClientResponse) -> list[list[str]]:
    """Each attempt's ``provider/model`` and ``outcome=...``, from the response head."""
    return [part.split(";")[:2] for part in response.headers["x-tokenrelay-attempts"].split(", ")]


async def test_first_token_deadline_moves_on_to_the_next_target(gw: RunningGateway) -> None:
    started = time.monotonic()
    response, body = await generate(gw, "slowfirst")
    elapsed = time.monotonic() - started
    assert response.status == 200 and body.endswith(b"data: [DONE]\n\n")
    assert response.headers["x-tokenrelay-provider"] == "openai"
    # a missed deadline moves on at once: no retry of the slow target while OpenAI is left
    assert [a[1] for a in attempts(response)] == ["outcome=timeout", "outcome=ok"]
    assert elapsed < 0.3 + 0.5  # one deadline, not one per try


async def test_a_hanging_primary_is_answered_by_the_fallback_just_after_the_deadline(
    gw: RunningGateway, simulator: Any
) -> None:
    async with aiohttp.ClientSession() as http:
        await http.post(simulator.url + "/stats/reset")
        started = time.monotonic()
        response = await http.post(gw.url + "/api/generate", json={"prompt": "hi", "route": "hang"})
        first_byte = time.monotonic() - started
        await response.read()
        async with http.get(simulator.url + "/stats") as stats:
            closed = [d for d in (await stats.json())["disconnects"] if d["path"] == "/v1/messages"]
    assert response.headers["x-tokenrelay-provider"] == "openai"
    # the 0.3 s deadline, then the fallback's own first token (5 ms) and a few ms of ours;
    # the bound is loose because CI machines are noisy, BENCHMARKS.md has the exact figure
    assert 0.3 <= first_byte < 0.55
    assert closed, "the hanging primary's connection was left open"


async def test_a_slow_generation_is_never_cut_off_after_its_first_token(
    gw: RunningGateway,
) -> None:
    response, body = await generate(gw, "slowtokens")  # 5 tokens 150 ms apart; deadline 0.3 s
    assert response.status == 200
    assert body.count(b'data: {"text"') == 5 and b"error" not in body


async def test_429_is_retried_after_retry_after_then_fails_over(gw: RunningGateway) -> None:
    started = time.monotonic()
    response, _ = await generate(gw, "retry429")
    elapsed = time.monotonic() - started
    assert response.headers["x-tokenrelay-provider"] == "openai"
    assert [a[1] for a in attempts(response)] == [
        "outcome=rate_limit",
        "outcome=rate_limit",
        "outcome=ok",
    ]
    assert elapsed >= 0.2  # the retry waited what retry-after asked


async def test_a_retry_after_longer_than_the_budget_moves_on_at_once(gw: RunningGateway) -> None:
    started = time.monotonic()
    response, _ = await generate(gw, "longwait")
    assert time.monotonic() - started < 2.0
    assert [a[1] for a in attempts(response)] == ["outcome=rate_limit", "outcome=ok"]


async def test_an_error_event_before_any_content_fails_over(gw: RunningGateway) -> None:
    response, body = await generate(gw, "early")
    assert response.status == 200 and b"error" not in body
    assert response.headers["x-tokenrelay-provider"] == "openai"
    assert attempts(response)[0][1] == "outcome=overloaded"
    # Anthropic had reported the prompt's tokens (message_start) before its error: metered too.
    record = await gw.wait_record(response.headers["x-request-id"])
    *failed, served = record.attempts
    assert failed and all(a.usage is not None and a.usage.input_tokens for a in failed)
    assert served.outcome == "ok" and served.usage is None  # the record's own usage


async def test_a_refused_key_is_logged_loudly_and_not_retried(
    gw: RunningGateway, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.ERROR, logger="tokenrelay"):
        response, _ = await generate(gw, "badkey")
    assert response.headers["x-tokenrelay-provider"] == "openai"
    assert [a[1] for a in attempts(response)] == ["outcome=upstream_auth", "outcome=ok"]
    assert any(
        "CONFIGURATION ERROR" in r.message and "anthropic" in r.message for r in caplog.records
    )


async def test_an_invalid_request_goes_back_to_the_client_at_once(gw: RunningGateway) -> None:
    response, body = await generate(gw, "final")
    assert response.status == 400
    assert msgspec.json.decode(body)["error"]["type"] == "invalid_request"
    assert len(attempts(response)) == 1  # OpenAI would refuse it too; it is not tried


async def test_the_route_budget_bounds_the_time_spent_failing(gw: RunningGateway) -> None:
    started = time.monotonic()
    response, body = await generate(gw, "budget")
    elapsed = time.monotonic() - started
    assert response.status == 504
    assert "budget of 0.5s ran out" in msgspec.json.decode(body)["error"]["message"]
    assert elapsed < 1.5


async def test_a_connection_reset_before_content_fails_over(gw: RunningGateway) -> None:
    response, body = await generate(gw, "reset")
    assert response.status == 200 and body.endswith(b"data: [DONE]\n\n")
    assert response.headers["x-tokenrelay-provider"] == "openai"
    assert attempts(response)[0][1] == "outcome=upstream_unavailable"


async def test_a_failing_target_is_skipped_once_its_circuit_opens(simulator: Any) -> None:
    environ = {
        **gateway_environ(simulator.url),
        **route("tripping", [faulty(CLAUDE, fault=529), GPT], retries=0),
        "TOKENRELAY_BREAKER__ENABLED": "true",
        "TOKENRELAY_BREAKER__FAILURES": "2",
        "TOKENRELAY_BREAKER__COOLDOWN": "60",
    }
    async with gateway_server(environ) as gateway:
        seen = []
        for _ in range(3):
            response, _ = await generate(gateway, "tripping")
            assert response.headers["x-tokenrelay-provider"] == "openai"
            seen.append([a[1] for a in attempts(response)])
        assert seen[:2] == [["outcome=overloaded", "outcome=ok"]] * 2
        assert seen[2] == ["outcome=circuit_open", "outcome=ok"]  # not even tried
        states = await gateway.gateway.router.breaker.snapshot()
        assert states == {"anthropic:claude-sonnet-5-5": "open", "openai:gpt-5.5": "closed"}

"""A missed first-token deadline over real HTTP: a hanging target is left at once for the next
one (not given a second deadline), retried only when it is the last target that can carry the
request, and a hedge race follows the same rule; the README's worst case holds."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
import pytest_asyncio

from tests.servers import RunningGateway, gateway_environ, gateway_server
from tests.test_failover import CLAUDE, GPT, attempts, faulty, route

pytestmark = pytest.mark.asyncio(loop_scope="session")

HANG = {"fault": "hang_before_first_byte"}
HAIKU = {"provider": "anthropic", "model": "claude-haiku-4-5"}


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def gw(simulator: Any) -> AsyncIterator[RunningGateway]:
    environ = {
        **gateway_environ(simulator.url),
        # The route defaults but a 1 s deadline: retries = 1, backoff 0.2 s, budget 20 s.
        **route("hangfirst", [faulty(CLAUDE, **HANG), GPT], first_token_timeout=1),
        **route(
            "allhang",
            [faulty(CLAUDE, **HANG), faulty(GPT, **HANG)],
            first_token_timeout=0.3,
            retry_backoff=0.05,
        ),
        **route(
            "hedgedhang",
            [faulty(CLAUDE, ttft_ms=3000), faulty(GPT, **HANG), HAIKU],
            first_token_timeout=0.5,
            hedge="true",
            hedge_delay=0.1,
        ),
        **route(
            "hedgedlast",
            [faulty(CLAUDE, ttft_ms=3000), faulty(GPT, **HANG)],
            first_token_timeout=0.4,
            hedge="true",
            hedge_delay=0.1,
            retry_backoff=0.05,
        ),
    }
    async with gateway_server(environ) as running:
        yield running


async def first_byte(gw: RunningGateway, route_name: str) -> tuple[aiohttp.ClientResponse, float]:
    """The response and the seconds until its head arrived (the first token's moment)."""
    async with aiohttp.ClientSession() as http:
        started = time.monotonic()
        response = await http.post(
            gw.url + "/api/generate", json={"prompt": "hi", "route": route_name}
        )
        elapsed = time.monotonic() - started
        await response.read()
        return response, elapsed


async def test_a_hanging_primary_is_left_at_its_first_deadline(gw: RunningGateway) -> None:
    response, elapsed = await first_byte(gw, "hangfirst")
    assert response.status == 200
    assert response.headers["x-tokenrelay-provider"] == "openai"
    # One deadline, then the fallback: no second deadline spent on the hanging target (the
    # route has retries = 1; before this was fixed the answer came after two deadlines).
    assert [a[:2] for a in attempts(response)] == [
        ["anthropic/claude-sonnet-5-5", "outcome=timeout"],
        ["openai/gpt-5.5", "outcome=ok"],
    ]
    assert 1.0 <= elapsed < 1.0 + 0.5


async def test_the_last_target_is_retried_after_a_missed_deadline(gw: RunningGateway) -> None:
    # The README's worst case for hanging targets: (n - 1) deadlines, then the last target's
    # (retries + 1) deadlines and the backoff between them: 0.3 + 2 x 0.3 + ~0.05 s.
    response, elapsed = await first_byte(gw, "allhang")
    assert response.status == 504
    assert [a[:2] for a in attempts(response)] == [
        ["anthropic/claude-sonnet-5-5", "outcome=timeout"],
        ["openai/gpt-5.5", "outcome=timeout"],
        ["openai/gpt-5.5", "outcome=timeout"],
    ]
    assert 0.9 <= elapsed < 0.9 + 0.1 + 0.5


async def test_a_hedge_that_misses_its_deadline_is_not_retried_while_a_target_is_left(
    gw: RunningGateway,
) -> None:
    # The slow primary is raced by a hanging backup; both miss their 0.5 s deadline, and the
    # third target is next at once (before, the backup was given a second deadline first).
    response, elapsed = await first_byte(gw, "hedgedhang")
    assert response.status == 200
    assert response.headers["x-tokenrelay-model"] == "claude-haiku-4-5"
    outcomes = [a[:2] for a in attempts(response)]
    assert sorted(outcomes[:2]) == [
        ["anthropic/claude-sonnet-5-5", "outcome=timeout"],
        ["openai/gpt-5.5", "outcome=timeout"],
    ]
    assert outcomes[2:] == [["anthropic/claude-haiku-4-5", "outcome=ok"]]
    assert elapsed < 0.1 + 0.5 + 0.5


async def test_a_hedge_on_the_last_target_keeps_its_retry(gw: RunningGateway) -> None:
    response, _ = await first_byte(gw, "hedgedlast")
    assert response.status == 504
    outcomes = [a[:2] for a in attempts(response)]
    assert outcomes.count(["openai/gpt-5.5", "outcome=timeout"]) == 2  # the hedge, its retry
    assert outcomes.count(["anthropic/claude-sonnet-5-5", "outcome=timeout"]) == 1

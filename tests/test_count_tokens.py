"""``POST /v1/messages/count_tokens`` through the official ``anthropic`` SDK: forwarded to the
route's Anthropic upstream (the simulator, over real HTTP), counted locally with the metering's
estimator when the route has none or its upstream fails, refused in Anthropic's error shape."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import anthropic
import httpx2 as httpx
import msgspec
import pytest
import pytest_asyncio

from tests.servers import (
    ROUTE_SYSTEM,
    RunningGateway,
    clean_environ,
    gateway_environ,
    gateway_server,
)
from tokenrelay.breaker import BreakerSettings, CircuitBreaker
from tokenrelay.dialects import count_tokens as counts
from tokenrelay.metering.estimate import estimate_prompt_tokens
from tokenrelay.settings import DEFAULT_SYSTEM_PROMPT

pytestmark = pytest.mark.asyncio(loop_scope="session")

MESSAGES: list[Any] = [{"role": "user", "content": "How many tokens does this sentence take?"}]
TOOLS: list[Any] = [
    {
        "name": "read_file",
        "description": "Read a file of the workspace",
        "input_schema": {"type": "object", "properties": {"path": {"type": "string"}}},
    }
]


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def gw(simulator: Any) -> AsyncIterator[RunningGateway]:
    environ = gateway_environ(simulator.url)
    refused = [
        {"provider": "anthropic", "model": "claude-sonnet-5-5", "headers": {"x-sim-fault": "400"}}
    ]
    environ["TOKENRELAY_ROUTES__REFUSED__TARGETS"] = msgspec.json.encode(refused).decode()
    environ["TOKENRELAY_ROUTES__CLOSED__TARGETS"] = "anthropic:claude-sonnet-5-5"
    environ["TOKENRELAY_ROUTES__CLOSED__ALLOW_ANONYMOUS"] = "false"
    async with gateway_server(environ) as running:
        yield running


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


class Seen:
    """The URLs the SDK asked for, from httpx's own request hook."""

    def __init__(self) -> None:
        self.urls: list[httpx.URL] = []

    async def __call__(self, request: httpx.Request) -> None:
        self.urls.append(request.url)


def client(gw: RunningGateway, seen: Seen | None = None) -> anthropic.AsyncAnthropic:
    hooks: dict[str, Any] = {"request": [seen]} if seen is not None else {}
    return anthropic.AsyncAnthropic(
        base_url=gw.url,
        api_key="unused",
        max_retries=0,
        http_client=httpx.AsyncClient(event_hooks=hooks),
    )


async def sim_last(http: aiohttp.ClientSession, simulator: Any, path: str) -> dict[str, Any]:
    async with http.get(simulator.url + "/stats") as response:
        stats = await response.json()
    found = [item for item in stats["last_requests"] if item["path"] == path]
    assert found, f"the simulator saw no request on {path}"
    last: dict[str, Any] = found[-1]
    return last


async def sim_count_requests(http: aiohttp.ClientSession, simulator: Any) -> int:
    async with http.get(simulator.url + "/stats") as response:
        count: int = (await response.json())["requests"].get(counts_path(), 0)
    return count


def counts_path() -> str:
    return "/v1/messages/count_tokens"


def expected_estimate(system: str | None, **body: Any) -> int:
    """What the gateway's estimator says of ``body`` behind a route with ``system``."""
    request = counts.parse_request(msgspec.json.encode(body))
    request.system = system
    return estimate_prompt_tokens(request)


# --- forwarded to the route's Anthropic upstream ------------------------------------------------


async def test_forwarded_to_the_anthropic_upstream_with_the_routes_prompt(
    gw: RunningGateway, http: aiohttp.ClientSession, simulator: Any
) -> None:
    """The count of the body the gateway would send: the route's system prompt, the target's
    model, the client's tools; it equals the input tokens the Messages call then reports."""
    records = len(gw.records)
    async with client(gw) as an:
        raw = await an.messages.with_raw_response.count_tokens(
            model="default", messages=MESSAGES, tools=TOOLS
        )
        assert len(gw.records) == records, "a count writes no ledger row"
        counted = await raw.parse()
        assert raw.headers["x-tokenrelay-estimate"] == "false"
        assert raw.headers["x-tokenrelay-provider"] == "anthropic"
        assert raw.headers["x-tokenrelay-model"] == "claude-sonnet-5-5"
        assert raw.headers["x-tokenrelay-route"] == "default"
        assert "outcome=ok" in raw.headers["x-tokenrelay-attempts"]
        sent = await sim_last(http, simulator, counts_path())
        message = await an.messages.create(
            model="default", max_tokens=8, messages=MESSAGES, tools=TOOLS
        )
    assert counted.input_tokens == message.usage.input_tokens > 0
    body = sent["body"]
    assert body["model"] == "claude-sonnet-5-5"
    assert ROUTE_SYSTEM in msgspec.json.encode(body["system"]).decode()
    assert body["tools"][0]["name"] == "read_file"
    assert not set(body) & counts.GENERATION_FIELDS  # the simulator would have refused them
    assert sent["headers"]["x-api-key"] == "test-anthropic-key"  # ours, never the client's
    assert sent["headers"]["accept"] == "application/json"


async def test_the_beta_variant_with_beta_true_and_the_clients_betas(
    gw: RunningGateway, http: aiohttp.ClientSession, simulator: Any
) -> None:
    """Claude Code posts to ``/v1/messages/count_tokens?beta=true`` (this SDK release marks
    its beta calls without the query, so it is added as Claude Code sends it): the query does
    not change the routing, and the client's betas reach the upstream."""
    seen = Seen()
    async with client(gw, seen) as an:
        counted = await an.beta.messages.count_tokens(
            model="an",
            messages=MESSAGES,
            betas=["context-management-2025-06-27"],
            extra_query={"beta": "true"},
        )
    assert seen.urls[-1].path == counts_path() and seen.urls[-1].params["beta"] == "true"
    assert counted.input_tokens > 0
    sent = await sim_last(http, simulator, counts_path())
    betas = sent["headers"]["anthropic-beta"].split(",")
    assert "context-management-2025-06-27" in betas and "token-counting-2024-11-01" in betas


async def test_a_provider_model_is_counted_by_its_provider(
    gw: RunningGateway, http: aiohttp.ClientSession, simulator: Any
) -> None:
    async with client(gw) as an:
        raw = await an.messages.with_raw_response.count_tokens(
            model="claude-opus-5-1", system="You are a coding agent.", messages=MESSAGES
        )
    assert raw.headers["x-tokenrelay-estimate"] == "false"
    assert (await raw.parse()).input_tokens > 0
    sent = await sim_last(http, simulator, counts_path())
    assert sent["body"]["model"] == "claude-opus-5-1"
    assert sent["body"]["system"] == "You are a coding agent."


# --- counted here -------------------------------------------------------------------------------


async def test_a_route_without_an_anthropic_target_is_estimated_here(
    gw: RunningGateway, http: aiohttp.ClientSession, simulator: Any
) -> None:
    before = await sim_count_requests(http, simulator)
    async with client(gw) as an:
        raw = await an.messages.with_raw_response.count_tokens(
            model="oa", messages=MESSAGES, tools=TOOLS
        )
    assert raw.headers["x-tokenrelay-estimate"] == "true"
    assert "x-tokenrelay-provider" not in raw.headers
    expected = expected_estimate(DEFAULT_SYSTEM_PROMPT, model="oa", messages=MESSAGES, tools=TOOLS)
    assert (await raw.parse()).input_tokens == expected
    assert await sim_count_requests(http, simulator) == before  # no upstream was asked


async def test_a_failing_upstream_falls_back_to_the_estimate(gw: RunningGateway) -> None:
    """``flaky``'s Anthropic target answers 529: the count is the estimate, said so."""
    async with client(gw) as an:
        raw = await an.messages.with_raw_response.count_tokens(model="flaky", messages=MESSAGES)
    assert raw.http_response.status_code == 200
    assert raw.headers["x-tokenrelay-estimate"] == "true"
    assert "outcome=overloaded" in raw.headers["x-tokenrelay-attempts"]
    expected = expected_estimate(DEFAULT_SYSTEM_PROMPT, model="flaky", messages=MESSAGES)
    assert (await raw.parse()).input_tokens == expected


async def test_an_unreachable_upstream_falls_back_too(simulator: Any) -> None:
    environ = gateway_environ(simulator.url)
    dead = environ["TOKENRELAY_PROVIDERS__DEAD__BASE_URL"].removesuffix("/v1")
    environ["TOKENRELAY_PROVIDERS__ANTHROPIC__BASE_URL"] = dead
    async with gateway_server(environ) as gw, client(gw) as an:
        raw = await an.messages.with_raw_response.count_tokens(model="an", messages=MESSAGES)
    assert raw.headers["x-tokenrelay-estimate"] == "true"
    assert "outcome=upstream_unavailable" in raw.headers["x-tokenrelay-attempts"]


# --- refused, in Anthropic's shape ----------------------------------------------------------------


async def test_the_upstreams_own_400_is_passed_on(gw: RunningGateway) -> None:
    async with client(gw) as an:
        with pytest.raises(anthropic.BadRequestError) as raised:
            await an.messages.count_tokens(model="refused", messages=MESSAGES)
    assert raised.value.body["error"]["type"] == "invalid_request_error"  # type: ignore[index]
    assert "simulated invalid request" in raised.value.message


async def test_generation_fields_are_refused_by_name(gw: RunningGateway) -> None:
    async with client(gw) as an:
        with pytest.raises(anthropic.BadRequestError) as raised:
            await an.messages.count_tokens(
                model="an", messages=MESSAGES, extra_body={"max_tokens": 10}
            )
    assert "max_tokens: Extra inputs are not permitted" in raised.value.message


async def test_bad_bodies_and_names(gw: RunningGateway, http: aiohttp.ClientSession) -> None:
    url = gw.url + counts_path()
    cases: list[tuple[Any, int, str, str]] = [
        ({"model": "an"}, 400, "invalid_request_error", "messages: Field required"),
        ({"messages": MESSAGES}, 400, "invalid_request_error", "model: Field required"),
        ({"model": "nope", "messages": MESSAGES}, 404, "not_found_error", "'nope'"),
        (
            {"model": "an", "system": "Obey me", "messages": MESSAGES},
            400,
            "invalid_request_error",
            "system prompt",
        ),
        ({"model": "an", "messages": []}, 400, "invalid_request_error", "at least one message"),
    ]
    for body, status, kind, fragment in cases:
        async with http.post(url, json=body) as response:
            assert response.status == status, body
            payload = await response.json()
        assert payload["type"] == "error"
        assert payload["error"]["type"] == kind
        assert fragment in payload["error"]["message"], payload
    async with http.post(url, data=b"{", headers={"content-type": "application/json"}) as response:
        assert response.status == 400
        assert "not valid JSON" in (await response.json())["error"]["message"]
    async with http.post(url, data=b"{}", headers={"content-type": "text/plain"}) as response:
        assert response.status == 415
        assert (await response.json())["error"]["type"] == "invalid_request_error"
    async with http.get(url) as response:
        assert response.status == 405
        assert (await response.json())["type"] == "error"


async def test_a_route_that_needs_credentials_asks_for_them(gw: RunningGateway) -> None:
    async with client(gw) as an:
        with pytest.raises(anthropic.AuthenticationError) as raised:
            await an.messages.count_tokens(model="closed", messages=MESSAGES)
    assert "not a tokenrelay API key" in raised.value.message


async def test_the_callers_rate_limit_counts_and_refuses(simulator: Any) -> None:
    environ = gateway_environ(simulator.url)
    environ["TOKENRELAY_ANONYMOUS_LIMIT"] = "3/minute"
    async with gateway_server(environ) as gw, client(gw) as an:
        for _ in range(3):
            raw = await an.messages.with_raw_response.count_tokens(model="an", messages=MESSAGES)
            assert raw.headers["anthropic-ratelimit-requests-limit"] == "3"  # the caller's quota
        with pytest.raises(anthropic.RateLimitError) as raised:
            await an.messages.count_tokens(model="an", messages=MESSAGES)
        assert "rate limit" in raised.value.message
        assert raised.value.response.headers.get("retry-after")
        async with aiohttp.ClientSession() as http, http.get(gw.url + "/metrics") as response:
            page = await response.text()
        assert not gw.records  # metrics only: no ledger row, refused or not
    assert 'tokenrelay_token_counts_total{route="an",source="upstream"} 3' in page
    assert 'tokenrelay_token_counts_total{source="refused"} 1' in page


async def test_demo_mode_counts_on_the_built_in_simulator() -> None:
    scratch = gateway_environ("http://127.0.0.1:9")["TOKENRELAY_DATABASE_URL"]
    environ = clean_environ(TOKENRELAY_DATABASE_URL=scratch)
    async with gateway_server(environ) as gw, client(gw) as an:
        raw = await an.messages.with_raw_response.count_tokens(model="default", messages=MESSAGES)
        assert raw.headers["x-tokenrelay-demo"] == "true"
        assert raw.headers["x-tokenrelay-estimate"] == "false"
        assert (await raw.parse()).input_tokens > 0
        local = await an.messages.with_raw_response.count_tokens(
            model="demo-responses", messages=MESSAGES
        )
        assert local.headers["x-tokenrelay-estimate"] == "true"


async def test_an_open_circuit_is_skipped_and_its_probe_left_to_the_streams() -> None:
    """``is_open`` reads the circuit: a count neither calls an upstream whose circuit is open
    nor takes the half-open probe that a Messages request needs to close it."""
    now = [0.0]
    breaker = CircuitBreaker(BreakerSettings(failures=1, cooldown=10), clock=lambda: now[0])
    key = "anthropic:claude-sonnet-5-5"
    assert not await breaker.is_open(key)
    await breaker.failure(key)
    assert await breaker.is_open(key)
    now[0] = 11.0  # the cooldown is over: half-open, one probe may go
    assert not await breaker.is_open(key)
    assert not await breaker.is_open(key)
    assert await breaker.allow(key)  # the probe is still there for a stream
    assert not await breaker.allow(key)


async def test_a_count_on_an_open_circuit_is_estimated_without_a_call(
    simulator: Any, http: aiohttp.ClientSession
) -> None:
    environ = gateway_environ(simulator.url)
    environ["TOKENRELAY_BREAKER__ENABLED"] = "true"
    environ["TOKENRELAY_BREAKER__FAILURES"] = "1"
    async with gateway_server(environ) as gw:
        await gw.gateway.router.breaker.failure("anthropic:claude-sonnet-5-5")
        before = await sim_count_requests(http, simulator)
        async with client(gw) as an:
            raw = await an.messages.with_raw_response.count_tokens(model="an", messages=MESSAGES)
        assert raw.headers["x-tokenrelay-estimate"] == "true"
        assert await sim_count_requests(http, simulator) == before

"""Client beta headers on agent traffic: a provider model asked for by name (and a route that
opts in with ``forward_client_headers``) passes the client's ``anthropic-beta`` to an Anthropic
upstream and ``openai-beta`` to an OpenAI one; a route that does not opt in passes neither.
Over real HTTP, through the official SDKs, to the simulator."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import anthropic
import openai
import pytest
import pytest_asyncio

from tests.servers import RunningGateway, gateway_environ, gateway_server
from tokenrelay.providers import Provider, UpstreamPool
from tokenrelay.settings import ProviderSettings, RouteSettings, TargetSettings, load

ASYNC = pytest.mark.asyncio(loop_scope="session")

MESSAGES: list[Any] = [{"role": "user", "content": "hi"}]
BETAS = ["context-management-2025-06-27", "mid-conversation-system-2026-04-07"]
OPS_BETA = "ops-chosen-2025-01-01"  # one the operator sets on the provider


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def gw(simulator: Any) -> AsyncIterator[RunningGateway]:
    environ = gateway_environ(simulator.url)
    environ["TOKENRELAY_ROUTES__AGENT__TARGETS"] = "anthropic:claude-sonnet-5-5"
    environ["TOKENRELAY_ROUTES__AGENT__FORWARD_CLIENT_HEADERS"] = "anthropic-beta,openai-beta"
    environ["TOKENRELAY_ROUTES__AGENT__ALLOW_CLIENT_SYSTEM"] = "true"
    environ["TOKENRELAY_ROUTES__OA_AGENT__TARGETS"] = "openai:gpt-5.5"
    environ["TOKENRELAY_ROUTES__OA_AGENT__FORWARD_CLIENT_HEADERS"] = (
        '["anthropic-beta","openai-beta"]'
    )
    async with gateway_server(environ) as running:
        yield running


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


async def upstream_headers(
    http: aiohttp.ClientSession, simulator: Any, path: str
) -> dict[str, str]:
    async with http.get(simulator.url + "/stats") as response:
        stats = await response.json()
    found = [item for item in stats["last_requests"] if item["path"] == path]
    headers: dict[str, str] = found[-1]["headers"]
    return headers


async def ask_anthropic(gw: RunningGateway, model: str) -> None:
    """What Claude Code sends: the beta API, ``?beta=true``, several betas."""
    async with anthropic.AsyncAnthropic(base_url=gw.url, api_key="unused", max_retries=0) as an:
        message = await an.beta.messages.create(
            model=model,
            max_tokens=8,
            messages=MESSAGES,
            betas=BETAS,
            extra_query={"beta": "true"},
        )
    assert message.content


@ASYNC
async def test_a_provider_model_forwards_the_clients_anthropic_betas(
    gw: RunningGateway, http: aiohttp.ClientSession, simulator: Any
) -> None:
    await ask_anthropic(gw, "claude-opus-5-1")
    sent = await upstream_headers(http, simulator, "/v1/messages")
    assert sent["anthropic-beta"].split(",") == BETAS
    assert sent["x-api-key"] == "test-anthropic-key"


@ASYNC
async def test_a_route_that_does_not_opt_in_forwards_none(
    gw: RunningGateway, http: aiohttp.ClientSession, simulator: Any
) -> None:
    await ask_anthropic(gw, "an")
    sent = await upstream_headers(http, simulator, "/v1/messages")
    assert "anthropic-beta" not in sent


@ASYNC
async def test_a_route_that_opts_in_forwards_them(
    gw: RunningGateway, http: aiohttp.ClientSession, simulator: Any
) -> None:
    await ask_anthropic(gw, "agent")
    sent = await upstream_headers(http, simulator, "/v1/messages")
    assert sent["anthropic-beta"].split(",") == BETAS


@ASYNC
async def test_openai_beta_reaches_an_openai_upstream_and_anthropic_beta_does_not(
    gw: RunningGateway, http: aiohttp.ClientSession, simulator: Any
) -> None:
    headers = {"OpenAI-Beta": "assistants=v2", "anthropic-beta": BETAS[0]}
    for model in ("gpt-5.5", "oa_agent"):
        async with openai.AsyncOpenAI(
            base_url=gw.url + "/v1", api_key="unused", max_retries=0, default_headers=headers
        ) as oa:
            await oa.chat.completions.create(model=model, max_tokens=8, messages=MESSAGES)
        sent = await upstream_headers(http, simulator, "/v1/chat/completions")
        assert sent["openai-beta"] == "assistants=v2", model
        assert "anthropic-beta" not in sent, model
    async with openai.AsyncOpenAI(
        base_url=gw.url + "/v1", api_key="unused", max_retries=0, default_headers=headers
    ) as oa:
        await oa.chat.completions.create(model="oa", max_tokens=8, messages=MESSAGES)
    sent = await upstream_headers(http, simulator, "/v1/chat/completions")
    assert "openai-beta" not in sent


@ASYNC
async def test_the_operators_betas_are_joined_with_the_clients(
    simulator: Any, http: aiohttp.ClientSession
) -> None:
    environ = gateway_environ(simulator.url)
    environ["TOKENRELAY_PROVIDERS__ANTHROPIC__HEADERS"] = f'{{"anthropic-beta": "{OPS_BETA}"}}'
    async with gateway_server(environ) as gw:
        await ask_anthropic(gw, "claude-opus-5-1")
        joined = (await upstream_headers(http, simulator, "/v1/messages"))["anthropic-beta"]
        await ask_anthropic(gw, "an")
        alone = (await upstream_headers(http, simulator, "/v1/messages"))["anthropic-beta"]
    assert joined.split(",") == [OPS_BETA, *BETAS]
    assert alone == OPS_BETA


# --- the rules, on the header builder itself ----------------------------------------------------


def test_credentials_never_go_along_whatever_a_route_lists() -> None:
    provider = Provider(
        "anthropic",
        ProviderSettings(kind="anthropic", base_url="http://127.0.0.1:9", api_key="ours"),
        UpstreamPool(),
        60.0,
    )
    target = TargetSettings(provider="anthropic", model="claude-opus-5-1")
    client = {
        "x-api-key": "theirs",
        "authorization": "Bearer theirs",
        "cookie": "session=1",
        "anthropic-beta": "trk_abcdefgh_secret",  # a value holding one of our keys
        "anthropic-version": "1999-01-01",  # the gateway sets its own
        "openai-beta": "assistants=v2",  # means nothing to Anthropic
    }
    listed = ["x-api-key", "authorization", "cookie", "anthropic-", "openai-beta"]
    sent = provider.build_headers(target, client, listed)
    assert sent["x-api-key"] == "ours"
    assert "authorization" not in sent and "cookie" not in sent
    assert "anthropic-beta" not in sent and "openai-beta" not in sent
    assert sent["anthropic-version"] == "2023-06-01"


def test_the_defaults() -> None:
    settings = load(environ={})
    assert settings.routes["default"].forward_client_headers == []
    assert settings.provider_models.forward_client_headers == ["anthropic-beta", "openai-beta"]
    assert RouteSettings(targets=[]).forward_client_headers == []
    target = TargetSettings(provider="anthropic", model="claude-opus-5-1")
    assert settings.provider_models.for_target(target).forward_client_headers == [
        "anthropic-beta",
        "openai-beta",
    ]


@ASYNC
async def test_beta_true_is_ignored_for_routing_on_every_messages_path(
    gw: RunningGateway, http: aiohttp.ClientSession
) -> None:
    """Claude Code's ``?beta=true``: the stream, the count, and the errors of the other paths
    (a 405 and a 404 still in Anthropic's shape)."""
    body = {"model": "claude-opus-5-1", "max_tokens": 8, "stream": True, "messages": MESSAGES}
    async with http.post(gw.url + "/v1/messages?beta=true", json=body) as response:
        assert response.status == 200
        assert "event: message_stop" in await response.text()
    count = {"model": "an", "messages": MESSAGES}
    url = gw.url + "/v1/messages/count_tokens?beta=true"
    async with http.post(url, json=count) as response:
        assert response.status == 200
        assert (await response.json())["input_tokens"] > 0
    async with http.get(gw.url + "/v1/messages?beta=true") as response:
        assert response.status == 405
        assert (await response.json())["error"]["type"] == "invalid_request_error"
    async with http.post(gw.url + "/v1/messages/batches?beta=true", json=count) as response:
        assert response.status == 404
        assert (await response.json())["error"]["type"] == "not_found_error"


@ASYNC
async def test_a_beta_sent_on_several_lines_is_forwarded_whole(
    gw: RunningGateway, http: aiohttp.ClientSession, simulator: Any
) -> None:
    body = {"model": "claude-opus-5-1", "max_tokens": 8, "messages": MESSAGES}
    lines = [("anthropic-beta", BETAS[0]), ("anthropic-beta", BETAS[1])]
    async with http.post(gw.url + "/v1/messages", json=body, headers=lines) as response:
        assert response.status == 200
    sent = await upstream_headers(http, simulator, "/v1/messages")
    assert [beta.strip() for beta in sent["anthropic-beta"].split(",")] == BETAS

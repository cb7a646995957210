"""Azure OpenAI (``kind = "azure"``) end to end: every front through the gateway to the
simulator's Azure URLs (v1 and deployment-based), both credentials, the deployment map, Azure's
content filter and errors, and exact cost from genai-prices' ``azure`` table."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from decimal import Decimal
from typing import Any

import aiohttp
import msgspec
import pytest
import pytest_asyncio
from genai_prices import Usage as PriceUsage
from genai_prices import calc_price

from tests.servers import RunningGateway, gateway_environ, gateway_server
from tokenrelay.dialects import openai as openai_dialect
from tokenrelay.dialects.sse import SSEParser
from tokenrelay.model import Finish
from tokenrelay.simulator import RunningSimulator

pytestmark = pytest.mark.asyncio(loop_scope="session")

AZ = "TOKENRELAY_PROVIDERS__AZURE__"
DATED = "TOKENRELAY_PROVIDERS__AZDATED__"
DEPLOYMENTS = '{"gpt-5.5": "my-gpt55-eastus"}'
TOOL = {
    "type": "function",
    "function": {"name": "get_weather", "parameters": {"type": "object", "properties": {}}},
}


def targets(*items: dict[str, Any]) -> str:
    return msgspec.json.encode(list(items)).decode()


def azure(model: str = "gpt-5.5", provider: str = "azure", **headers: str) -> dict[str, Any]:
    return {"provider": provider, "model": model, "headers": headers}


def environ(sim: str) -> dict[str, str]:
    route = "TOKENRELAY_ROUTES__"
    return {
        **gateway_environ(sim),
        AZ + "BASE_URL": sim,
        AZ + "API_KEY": "test-azure-key",
        AZ + "DEPLOYMENTS": DEPLOYMENTS,
        AZ + "FORWARD_HEADERS": '["x-sim-"]',
        DATED + "KIND": "azure",
        DATED + "BASE_URL": sim + "/",
        DATED + "API_VERSION": "2024-10-21",
        DATED + "AZURE_AD_TOKEN": "entra-token-for-tests",
        DATED + "DEPLOYMENTS": DEPLOYMENTS,
        DATED + "FORWARD_HEADERS": '["x-sim-"]',
        "TOKENRELAY_PROVIDERS__AZAUTO__KIND": "azure",
        "TOKENRELAY_PROVIDERS__AZAUTO__API": "auto",
        "TOKENRELAY_PROVIDERS__AZAUTO__BASE_URL": sim,
        "TOKENRELAY_PROVIDERS__AZAUTO__API_KEY": "test-azure-key",
        "TOKENRELAY_PROVIDERS__AZRESP__KIND": "azure",
        "TOKENRELAY_PROVIDERS__AZRESP__API": "responses",
        "TOKENRELAY_PROVIDERS__AZRESP__API_VERSION": "2025-04-01-preview",
        "TOKENRELAY_PROVIDERS__AZRESP__BASE_URL": sim,
        "TOKENRELAY_PROVIDERS__AZRESP__API_KEY": "test-azure-key",
        "TOKENRELAY_PROVIDERS__AZRESP__DEPLOYMENTS": DEPLOYMENTS,
        route + "AZAUTO__TARGETS": "azauto:gpt-5.5",
        route + "AZRESP__TARGETS": "azresp:gpt-5.5",
        route + "AZ__TARGETS": "azure:gpt-5.5",
        route + "AZ__ALLOW_CLIENT_SYSTEM": "true",
        route + "AZDATED__TARGETS": "azdated:gpt-5.5",
        route + "AZFAIL__TARGETS": targets(
            azure(**{"x-sim-fault": "503"}), {"provider": "openai", "model": "gpt-5.5"}
        ),
        route + "AZMID__TARGETS": targets(azure(**{"x-sim-fault": "error_after"})),
        route + "AZCF__TARGETS": targets(
            azure(**{"x-sim-fault": "content_filter"}), {"provider": "openai", "model": "gpt-5.5"}
        ),
        route + "AZCUT__TARGETS": targets(azure(**{"x-sim-fault": "content_filter_finish"})),
        route + "AZGONE__TARGETS": targets(
            azure(**{"x-sim-fault": "deployment_not_found"}),
            {"provider": "openai", "model": "gpt-5.5"},
        ),
        route + "AZ429__TARGETS": targets(
            azure(**{"x-sim-fault": "429", "x-sim-retry-after": "0.4"})
        ),
        route + "AZ429__RETRIES": "1",
        route + "AZSLOW__TARGETS": targets(
            azure(**{"x-sim-tokens": "500", "x-sim-token-delay-ms": "20"})
        ),
        "TOKENRELAY_MAX_BODY_BYTES": "65536",
    }


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def gw(simulator: RunningSimulator) -> AsyncIterator[RunningGateway]:
    async with gateway_server(environ(simulator.url)) as running:
        yield running


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


def body_for(front: str, route: str, text: str = "Weather in Paris?") -> dict[str, Any]:
    if front == "/v1/messages":
        messages = [{"role": "user", "content": text}]
        return {"model": route, "max_tokens": 200, "stream": True, "messages": messages}
    if front == "/v1/chat/completions":
        messages = [{"role": "user", "content": text}]
        return {"model": route, "stream": True, "messages": messages}
    if front == "/v1/responses":
        return {"model": route, "stream": True, "input": text}
    if front == "/api/generate":
        return {"prompt": text, "route": route, "include": ["usage", "finish", "thinking"]}
    parts = [{"type": "text", "text": text}]
    return {"id": "c1", "route": route, "messages": [{"id": "m1", "role": "user", "parts": parts}]}


FRONTS = ["/v1/messages", "/v1/chat/completions", "/v1/responses", "/api/generate", "/api/chat"]


async def post(
    http: aiohttp.ClientSession, gw: RunningGateway, front: str, body: dict[str, Any], **h: str
) -> tuple[int, dict[str, str], str]:
    async with http.post(gw.url + front, json=body, headers=h) as response:
        raw = await response.read()
        return response.status, {k.lower(): v for k, v in response.headers.items()}, raw.decode()


def events(raw: str) -> list[Any]:
    parsed = []
    for sse in SSEParser().feed(raw.encode()):
        try:
            parsed.append(msgspec.json.decode(sse.data))
        except msgspec.DecodeError:
            continue
    return parsed


async def last_request(http: aiohttp.ClientSession, simulator: RunningSimulator) -> dict[str, Any]:
    async with http.get(simulator.url + "/stats") as response:
        stats = await response.json()
    found: dict[str, Any] = stats["last_requests"][-1]
    return found


@pytest.mark.parametrize("front", FRONTS)
async def test_every_front_streams_from_azure_v1(
    front: str, gw: RunningGateway, http: aiohttp.ClientSession, simulator: RunningSimulator
) -> None:
    status, headers, raw = await post(http, gw, front, body_for(front, "az"))
    assert status == 200, raw
    assert headers["x-tokenrelay-provider"] == "azure"
    assert "simulated" not in raw and len(raw) > 100
    sent = await last_request(http, simulator)
    assert sent["path"] == "/openai/v1/chat/completions"
    assert sent["headers"]["api-key"] == "test-azure-key"
    assert "authorization" not in {name.lower() for name in sent["headers"]}
    assert sent["body"]["model"] == "my-gpt55-eastus"  # the deployment, from the map
    record = await gw.wait_record(headers["x-request-id"])
    assert record.provider == "azure" and record.model == "gpt-5.5"
    assert record.usage.output_tokens == 20


async def test_dated_api_version_posts_to_the_deployment_with_an_entra_token(
    gw: RunningGateway, http: aiohttp.ClientSession, simulator: RunningSimulator
) -> None:
    front = "/v1/chat/completions"
    status, _, raw = await post(http, gw, front, body_for(front, "azdated"))
    assert status == 200, raw
    sent = await last_request(http, simulator)
    assert sent["path"] == "/openai/deployments/my-gpt55-eastus/chat/completions"
    assert sent["headers"]["authorization"] == "Bearer entra-token-for-tests"
    assert "api-key" not in sent["headers"]


async def test_the_content_filter_fields_of_azure_chunks_are_tolerated(
    http: aiohttp.ClientSession, simulator: RunningSimulator
) -> None:
    """The raw simulator: Azure's prompt_filter_results chunk comes first, every choice carries
    content_filter_results, and the openai dialect reads the stream as OpenAI's."""
    body = {"model": "d", "stream": True, "messages": [{"role": "user", "content": "hi"}]}
    headers = {"api-key": "k", "x-sim-tokens": "3"}
    url = simulator.url + "/openai/v1/chat/completions"
    async with http.post(url, json=body, headers=headers) as response:
        assert response.headers["apim-request-id"]
        raw = await response.read()
    chunks = events(raw.decode())
    assert chunks[0]["prompt_filter_results"][0]["content_filter_results"]["hate"]
    assert chunks[0]["choices"] == []
    assert all("content_filter_results" in c for x in chunks[1:] for c in x["choices"])
    reader = openai_dialect.stream_reader()
    parsed = [e for sse in SSEParser().feed(raw) for e in reader.feed(sse)]
    assert "".join(getattr(e, "text", "") for e in parsed).strip()
    assert parsed[-1] == Finish("stop")


@pytest.mark.parametrize(
    ("path", "headers", "status"),
    [
        ("/openai/deployments/d/chat/completions", {"api-key": "k"}, 404),  # no api-version
        ("/openai/deployments/d/chat/completions?api-version=2024-10-21", {}, 401),
        ("/openai/v1/chat/completions", {"authorization": "Basic x"}, 401),
        ("/openai/deployments/d/chat/completions?api-version=2024-10-21", {"api-key": "k"}, 200),
    ],
)
async def test_the_simulator_checks_azure_requests(
    path: str,
    headers: dict[str, str],
    status: int,
    http: aiohttp.ClientSession,
    simulator: RunningSimulator,
) -> None:
    body = {"model": "d", "messages": [{"role": "user", "content": "hi"}]}
    async with http.post(simulator.url + path, json=body, headers=headers) as response:
        assert response.status == status
        answer = await response.json()
    assert ("error" in answer) is (status != 200)
    if status == 200:
        assert answer["prompt_filter_results"]
        assert answer["choices"][0]["content_filter_results"]


@pytest.mark.parametrize("front", FRONTS)
async def test_a_tool_round_trip_through_azure(
    front: str, gw: RunningGateway, http: aiohttp.ClientSession, simulator: RunningSimulator
) -> None:
    if front in ("/api/generate", "/api/chat"):
        pytest.skip("these fronts carry no client tools")
    body = body_for(front, "az")
    if front == "/v1/messages":
        body["tools"] = [{"name": "get_weather", "input_schema": {"type": "object"}}]
    elif front == "/v1/responses":
        body["tools"] = [{"type": "function", "name": "get_weather", "parameters": {}}]
    else:
        body["tools"] = [TOOL]
    status, _, raw = await post(http, gw, front, body, **{"x-sim-tool": "auto"})
    assert status == 200, raw
    assert "get_weather" in raw
    sent = await last_request(http, simulator)
    assert sent["body"]["tools"][0]["function"]["name"] == "get_weather"
    # the tool's result goes back up as a tool message
    if front == "/v1/chat/completions":
        function = {"name": "get_weather", "arguments": "{}"}
        call = {"id": "call_1", "type": "function", "function": function}
        body["messages"] += [
            {"role": "assistant", "content": None, "tool_calls": [call]},
            {"role": "tool", "tool_call_id": "call_1", "content": "sunny"},
        ]
        status, _, raw = await post(http, gw, front, body)
        assert status == 200, raw
        sent = await last_request(http, simulator)
        assert sent["body"]["messages"][-1] == {
            "role": "tool",
            "tool_call_id": "call_1",
            "content": "sunny",
        }


@pytest.mark.parametrize(
    ("front", "said"),
    [
        ("/v1/messages", "thinking_delta"),
        ("/v1/chat/completions", "reasoning"),
        ("/v1/responses", "reasoning"),
        ("/api/generate", "thinking"),
        ("/api/chat", "reasoning"),
    ],
)
async def test_thinking_through_azure(
    front: str,
    said: str,
    gw: RunningGateway,
    http: aiohttp.ClientSession,
    simulator: RunningSimulator,
) -> None:
    body = body_for(front, "az")
    if front == "/v1/messages":
        body["thinking"] = {"type": "enabled", "budget_tokens": 1024}
    elif front == "/v1/chat/completions":
        body["reasoning_effort"] = "low"
    elif front == "/v1/responses":
        body["reasoning"] = {"effort": "low", "summary": "auto"}
    status, headers, raw = await post(http, gw, front, body, **{"x-sim-thinking-tokens": "5"})
    assert status == 200, raw
    assert said in raw
    sent = await last_request(http, simulator)
    if front in ("/v1/messages", "/v1/chat/completions"):  # asked for: asked of Azure
        assert sent["body"].get("reasoning_effort")
    record = await gw.wait_record(headers["x-request-id"])
    assert record.usage.reasoning_tokens == 5


async def test_usage_and_exact_cost_from_the_azure_price_table(
    gw: RunningGateway, http: aiohttp.ClientSession
) -> None:
    meter = gw.gateway.meter
    assert meter is not None
    deadline = time.monotonic() + 20
    while not meter.pricer.loaded and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    front = "/v1/chat/completions"
    status, headers, raw = await post(
        http, gw, front, body_for(front, "az"), **{"x-sim-cache-read-tokens": "7"}
    )
    assert status == 200, raw
    record = await gw.wait_record(headers["x-request-id"])
    usage = record.usage
    assert usage.cache_read_tokens == 7 and usage.output_tokens == 20
    price = calc_price(
        PriceUsage(
            input_tokens=usage.input_tokens,
            cache_read_tokens=usage.cache_read_tokens,
            output_tokens=usage.output_tokens,
        ),
        model_ref="gpt-5.5",
        provider_id="azure",
    )
    assert price.provider.id == "azure"
    expected = int((price.total_price * Decimal(10**9)).to_integral_value())
    assert record.cost_nanousd == expected > 0


@pytest.mark.parametrize("front", FRONTS)
async def test_an_error_before_the_first_token_fails_over(
    front: str, gw: RunningGateway, http: aiohttp.ClientSession
) -> None:
    status, headers, raw = await post(http, gw, front, body_for(front, "azfail"))
    assert status == 200, raw
    assert headers["x-tokenrelay-provider"] == "openai"
    attempts = headers["x-tokenrelay-attempts"]
    assert attempts.startswith("azure/gpt-5.5;outcome=overloaded") and "openai/gpt-5.5" in attempts


@pytest.mark.parametrize("front", FRONTS)
async def test_an_error_after_the_first_token_arrives_in_band(
    front: str, gw: RunningGateway, http: aiohttp.ClientSession
) -> None:
    status, _, raw = await post(http, gw, front, body_for(front, "azmid"))
    assert status == 200
    assert "overload" in raw


@pytest.mark.parametrize("front", FRONTS)
async def test_an_abort_closes_the_azure_upstream(
    front: str, gw: RunningGateway, simulator: RunningSimulator
) -> None:
    async with aiohttp.ClientSession() as own:
        response = await own.post(gw.url + front, json=body_for(front, "azslow"))
        assert response.status == 200
        parser, texts = SSEParser(), 0
        async for chunk in response.content.iter_any():
            texts += len(parser.feed(chunk))
            if texts >= 5:
                break
        before = len(simulator.stats()["disconnects"])
        left = time.monotonic()
        response.close()
    deadline = left + 2
    while time.monotonic() < deadline and len(simulator.stats()["disconnects"]) == before:
        await asyncio.sleep(0.005)
    gone = simulator.stats()["disconnects"][before:]
    assert gone and gone[-1]["path"] == "/openai/v1/chat/completions"
    assert gone[-1]["at_monotonic"] - left < 0.1
    assert gone[-1]["tokens_sent"] < 500


async def test_a_filtered_prompt_is_a_400_returned_at_once(
    gw: RunningGateway, http: aiohttp.ClientSession
) -> None:
    front = "/v1/chat/completions"
    status, headers, raw = await post(http, gw, front, body_for(front, "azcf"))
    assert status == 400, raw
    assert "content management policy" in raw and "filtered" in raw
    record = await gw.wait_record(headers["x-request-id"])
    assert [a.provider for a in record.attempts] == ["azure"]  # not moved on, not retried


async def test_a_filtered_answer_is_a_content_filter_finish(
    gw: RunningGateway, http: aiohttp.ClientSession
) -> None:
    front = "/v1/chat/completions"
    status, headers, raw = await post(http, gw, front, body_for(front, "azcut"))
    assert status == 200, raw
    finishes = [c["finish_reason"] for e in events(raw) for c in e.get("choices", ())]
    assert "content_filter" in finishes
    record = await gw.wait_record(headers["x-request-id"])
    assert record.finish_reason == "content_filter"
    assert record.usage.output_tokens == 3


async def test_a_missing_deployment_moves_on_and_is_logged(
    gw: RunningGateway, http: aiohttp.ClientSession, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level("ERROR", "tokenrelay.providers"):
        status, headers, raw = await post(
            http, gw, "/api/generate", body_for("/api/generate", "azgone")
        )
    assert status == 200, raw
    assert headers["x-tokenrelay-provider"] == "openai"
    assert "CONFIGURATION ERROR: Azure OpenAI answered 404" in caplog.text
    assert "deployments map" in caplog.text


async def test_retry_after_ms_is_honoured(gw: RunningGateway, http: aiohttp.ClientSession) -> None:
    started = time.monotonic()
    status, headers, raw = await post(http, gw, "/api/generate", body_for("/api/generate", "az429"))
    assert status == 429, raw
    assert headers["x-tokenrelay-attempts"].count("azure/gpt-5.5") == 2
    assert time.monotonic() - started >= 0.4  # waited the retry-after-ms (400) before the retry


async def test_a_provider_model_outside_the_map_is_a_404_naming_the_setting(
    gw: RunningGateway, http: aiohttp.ClientSession
) -> None:
    front = "/v1/chat/completions"
    status, _, raw = await post(http, gw, front, body_for(front, "azure/gpt-4o"))
    assert status == 404, raw
    assert "providers.azure" in raw and "deployments" in raw


@pytest.mark.parametrize(
    ("front", "route", "path"),
    [
        ("/v1/responses", "azauto", "/openai/v1/responses"),  # api = "auto": as sent
        ("/v1/chat/completions", "azauto", "/openai/v1/chat/completions"),
        ("/v1/messages", "azresp", "/openai/responses"),  # api = "responses", a dated version
        ("/api/generate", "azresp", "/openai/responses"),
    ],
)
async def test_the_responses_api_on_azure(
    front: str,
    route: str,
    path: str,
    gw: RunningGateway,
    http: aiohttp.ClientSession,
    simulator: RunningSimulator,
) -> None:
    status, headers, raw = await post(http, gw, front, body_for(front, route))
    assert status == 200, raw
    assert headers["x-tokenrelay-provider"] == route
    sent = await last_request(http, simulator)
    assert sent["path"] == path
    assert sent["body"]["model"] == ("my-gpt55-eastus" if route == "azresp" else "gpt-5.5")
    record = await gw.wait_record(headers["x-request-id"])
    assert record.usage.output_tokens == 20


@pytest.mark.parametrize(
    ("front", "said"),
    [
        ("/v1/messages", '"stop_reason":"refusal"'),
        ("/v1/chat/completions", '"finish_reason":"content_filter"'),
        ("/v1/responses", '"reason":"content_filter"'),
        ("/api/generate", "content_filter"),
        ("/api/chat", '"finishReason":"content-filter"'),
    ],
)
async def test_a_content_filter_finish_reaches_every_front(
    front: str, said: str, gw: RunningGateway, http: aiohttp.ClientSession
) -> None:
    status, headers, raw = await post(http, gw, front, body_for(front, "azcut"))
    assert status == 200, raw
    assert said in raw.replace(" ", "")
    record = await gw.wait_record(headers["x-request-id"])
    assert record.finish_reason == "content_filter"


PNG = (  # one pixel
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA60e6kg"
    "AAAABJRU5ErkJggg=="
)


async def test_an_image_reaches_azure_as_an_image_url(
    gw: RunningGateway, http: aiohttp.ClientSession, simulator: RunningSimulator
) -> None:
    body = body_for("/v1/messages", "az")
    image = {"type": "base64", "media_type": "image/png", "data": PNG}
    body["messages"][0]["content"] = [
        {"type": "image", "source": image},
        {"type": "text", "text": "What is this?"},
    ]
    status, _, raw = await post(http, gw, "/v1/messages", body)
    assert status == 200, raw
    sent = await last_request(http, simulator)
    parts = sent["body"]["messages"][-1]["content"]
    assert parts[0] == {"type": "image_url", "image_url": {"url": "data:image/png;base64," + PNG}}

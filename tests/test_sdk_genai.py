"""The ``google-genai`` Python SDK through the Gemini front (``base_url`` = the gateway), with a
tokenrelay key as its API key (sent as ``x-goog-api-key``): streamed and whole answers, thinking
and a tool call, on a route served by Claude and on one served by Gemini."""

from __future__ import annotations

import tempfile
from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_asyncio

from tests.servers import RunningGateway, gateway_environ, gateway_server
from tokenrelay.gate.keys import KeyStore
from tokenrelay.simulator import RunningSimulator

genai = pytest.importorskip("google.genai")
types = pytest.importorskip("google.genai.types")

pytestmark = pytest.mark.asyncio(loop_scope="session")

GEMINI = "gemini-2.5-flash"
ROUTES = ["sdk_claude", "sdk_gemini"]


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def gw(simulator: RunningSimulator) -> AsyncIterator[RunningGateway]:
    scratch = tempfile.mkdtemp(prefix="tokenrelay-genai-")
    environ = {
        **gateway_environ(simulator.url),
        "TOKENRELAY_PROVIDERS__GEMINI__BASE_URL": simulator.url + "/v1beta",
        "TOKENRELAY_PROVIDERS__GEMINI__API_KEY": "test-gemini-key",
        "TOKENRELAY_PROVIDERS__GEMINI__FORWARD_HEADERS": '["x-sim-"]',
        "TOKENRELAY_DATABASE_URL": f"sqlite:///{scratch}/ledger.db",
        "TOKENRELAY_AUTH__ALLOW_ANONYMOUS": "false",
        "TOKENRELAY_ROUTES__SDK_CLAUDE__TARGETS": "anthropic:claude-sonnet-5-5",
        "TOKENRELAY_ROUTES__SDK_CLAUDE__ALLOW_CLIENT_SYSTEM": "1",
        "TOKENRELAY_ROUTES__SDK_GEMINI__TARGETS": f"gemini:{GEMINI}",
        "TOKENRELAY_ROUTES__SDK_GEMINI__ALLOW_CLIENT_SYSTEM": "1",
    }
    async with gateway_server(environ) as running:
        yield running


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def key(gw: RunningGateway) -> str:
    _, secret = await KeyStore(await gw.gateway.gate.database()).create("genai", "tests")
    return secret


def client(gw: RunningGateway, key: str, **headers: str) -> Any:
    options = types.HttpOptions(base_url=gw.url, headers=headers)
    return genai.Client(api_key=key, http_options=options)


@pytest.mark.parametrize("route", ROUTES)
async def test_generate_content_stream(gw: RunningGateway, key: str, route: str) -> None:
    sdk = client(gw, key, **{"x-sim-text": "Sunny in Paris."})
    config = types.GenerateContentConfig(system_instruction="Be brief.", max_output_tokens=100)
    texts = []
    usage = None
    async for chunk in await sdk.aio.models.generate_content_stream(
        model=route, contents="Weather in Paris?", config=config
    ):
        if chunk.text:
            texts.append(chunk.text)
        usage = chunk.usage_metadata or usage
    assert "".join(texts) == "Sunny in Paris."
    assert usage is not None and usage.prompt_token_count and usage.candidates_token_count
    record = gw.records[-1]
    assert record.route == route and record.outcome == "completed"
    assert record.identity is not None and record.identity.kind == "key"


@pytest.mark.parametrize("route", ROUTES)
async def test_generate_content(gw: RunningGateway, key: str, route: str) -> None:
    sdk = client(gw, key, **{"x-sim-text": "Hi.", "x-sim-thinking-tokens": "3"})
    config = types.GenerateContentConfig(
        thinking_config=types.ThinkingConfig(include_thoughts=True, thinking_budget=1024),
        max_output_tokens=2000,
    )
    response = await sdk.aio.models.generate_content(model=route, contents="Say hi", config=config)
    assert response.text == "Hi."
    parts = response.candidates[0].content.parts
    if route == "sdk_gemini":  # thinking asked of Gemini comes back as thought parts
        assert any(part.thought for part in parts)
        assert response.usage_metadata.thoughts_token_count == 3
    assert response.candidates[0].finish_reason == types.FinishReason.STOP


@pytest.mark.parametrize("route", ROUTES)
async def test_a_function_call(gw: RunningGateway, key: str, route: str) -> None:
    sdk = client(gw, key, **{"x-sim-tokens": "2", "x-sim-tool": "auto"})
    tool = types.Tool(
        function_declarations=[
            types.FunctionDeclaration(
                name="get_weather",
                description="Weather now",
                parameters_json_schema={
                    "type": "object",
                    "properties": {"query": {"type": "string"}},
                },
            )
        ]
    )
    config = types.GenerateContentConfig(
        tools=[tool], automatic_function_calling=types.AutomaticFunctionCallingConfig(disable=True)
    )
    response = await sdk.aio.models.generate_content(
        model=route, contents="Weather in Paris?", config=config
    )
    (call,) = response.function_calls
    assert call.name == "get_weather" and "query" in call.args


async def test_a_wrong_key_is_refused_in_googles_shape(gw: RunningGateway) -> None:
    sdk = client(gw, "trk_" + "A" * 40)
    with pytest.raises(genai.errors.ClientError) as caught:
        await sdk.aio.models.generate_content(model="sdk_gemini", contents="hi")
    assert caught.value.code == 401
    assert caught.value.status == "UNAUTHENTICATED"

"""Every front x a Gemini upstream, through the gateway to the simulator's Gemini mode over real
HTTP: text, a tool round trip, thinking, usage and cost, an error before the first token that
fails over, an error after it in-band, and an abort that closes the upstream within 100 ms. And
the Gemini front itself, on a Claude route and on a Gemini route (raw HTTP, ``?key=``)."""

from __future__ import annotations

import asyncio
import json
import tempfile
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
import pytest_asyncio

from tests.servers import RunningGateway, gateway_environ, gateway_server
from tokenrelay import dialects
from tokenrelay.dialects.sse import SSEParser
from tokenrelay.metering import pricing
from tokenrelay.metering.pricing import Pricer, PriceSettings
from tokenrelay.model import Accumulator, Completion, Error
from tokenrelay.simulator import RunningSimulator

pytestmark = pytest.mark.asyncio(loop_scope="session")

GEMINI = "gemini-2.5-flash"
QUESTION = "Weather in Paris?"
SCHEMA = {"type": "object", "properties": {"city": {"type": "string"}}}
FRONTS = ["anthropic", "openai", "responses", "generate", "uichat"]
PATHS = {
    "anthropic": "/v1/messages",
    "openai": "/v1/chat/completions",
    "responses": "/v1/responses",
    "generate": "/api/generate",
    "uichat": "/api/chat",
    "gemini": "/v1beta/models/{route}:streamGenerateContent?alt=sse",
}
TOOL_FRONTS = ["anthropic", "openai", "responses", "gemini"]


def route(name: str, targets: list[dict[str, Any]], **settings: Any) -> dict[str, str]:
    key = f"TOKENRELAY_ROUTES__{name.upper()}__"
    out = {key + "TARGETS": json.dumps(targets), key + "ALLOW_CLIENT_SYSTEM": "1"}
    out.update({key + name.upper(): json.dumps(value) for name, value in settings.items()})
    return out


def gem(**headers: str) -> dict[str, Any]:
    return {"provider": "gemini", "model": GEMINI, "headers": headers}


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def gw(
    simulator: RunningSimulator, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[RunningGateway]:
    scratch = tmp_path_factory.mktemp("gemini")
    environ = {
        **gateway_environ(simulator.url),
        "TOKENRELAY_PROVIDERS__GEMINI__BASE_URL": simulator.url + "/v1beta",
        "TOKENRELAY_PROVIDERS__GEMINI__API_KEY": "test-gemini-key",
        "TOKENRELAY_PROVIDERS__GEMINI__FORWARD_HEADERS": '["x-sim-"]',
        "TOKENRELAY_DATABASE_URL": f"sqlite:///{scratch}/ledger.db",
        **route("gem", [gem()]),
        **route("gem_claude", [{"provider": "anthropic", "model": "claude-sonnet-5-5"}]),
        **route(
            "gem_flaky",
            [
                gem(**{"x-sim-fault": "503"}),
                {"provider": "anthropic", "model": "claude-sonnet-5-5"},
            ],
            retries=0,
        ),
        **route("gem_midfail", [gem(**{"x-sim-fault": "error_after", "x-sim-fault-after": "2"})]),
        **route("gem_slow", [gem(**{"x-sim-tokens": "500", "x-sim-token-delay-ms": "20"})]),
    }
    async with gateway_server(environ) as running:
        await running.gateway.meter.pricer.load()  # type: ignore[union-attr]
        yield running


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


def body_for(front: str, name: str, *, tools: bool = False) -> dict[str, Any]:
    if front == "anthropic":
        body: dict[str, Any] = {
            "model": name,
            "max_tokens": 300,
            "stream": True,
            "messages": [{"role": "user", "content": QUESTION}],
        }
        if tools:
            body["tools"] = [{"name": "get_weather", "input_schema": SCHEMA}]
        return body
    if front == "openai":
        body = {
            "model": name,
            "stream": True,
            "stream_options": {"include_usage": True},
            "messages": [{"role": "user", "content": QUESTION}],
        }
        if tools:
            function = {"name": "get_weather", "parameters": SCHEMA}
            body["tools"] = [{"type": "function", "function": function}]
        return body
    if front == "responses":
        body = {"model": name, "stream": True, "input": QUESTION, "store": False}
        if tools:
            body["tools"] = [{"type": "function", "name": "get_weather", "parameters": SCHEMA}]
        return body
    if front == "generate":
        return {"prompt": QUESTION, "route": name, "include": ["usage", "finish", "thinking"]}
    if front == "uichat":
        message = {"id": "m1", "role": "user", "parts": [{"type": "text", "text": QUESTION}]}
        return {"messages": [message], "route": name}
    body = {"contents": [{"role": "user", "parts": [{"text": QUESTION}]}]}
    if tools:
        declaration = {"name": "get_weather", "parametersJsonSchema": SCHEMA}
        body["tools"] = [{"functionDeclarations": [declaration]}]
    return body


async def ask(
    gw: RunningGateway,
    http: aiohttp.ClientSession,
    front: str,
    body: dict[str, Any],
    headers: dict[str, str] | None = None,
    name: str = "gem",
) -> tuple[aiohttp.ClientResponse, Completion]:
    """One streamed request, its answer read back with the front dialect's own reader."""
    path = PATHS[front].format(route=name)
    response = await http.post(gw.url + path, json=body, headers=headers or {})
    accumulator = Accumulator()
    if response.status == 200:
        parser, reader = SSEParser(), dialects.get(front).stream_reader()
        async for chunk in response.content.iter_any():
            for sse in parser.feed(chunk):
                for event in reader.feed(sse):
                    accumulator.add(event)
    else:
        await response.read()
    return response, accumulator.result()


async def ledger_cost(gw: RunningGateway, request_id: str) -> int:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        db = await gw.gateway.gate.database()
        row = await db.fetch_one("SELECT * FROM ledger WHERE request_id = ?", (request_id,))
        if row is not None:
            assert row["priced"] == 1
            return int(row["cost_nanousd"])
        await asyncio.sleep(0.05)
    raise AssertionError("no ledger row")


def last_upstream(simulator: RunningSimulator) -> dict[str, Any]:
    request: dict[str, Any] = simulator.stats()["last_requests"][-1]
    return request


@pytest.mark.parametrize("front", [*FRONTS, "gemini"])
async def test_text_usage_and_cost(
    gw: RunningGateway, http: aiohttp.ClientSession, simulator: RunningSimulator, front: str
) -> None:
    sim = {"x-sim-text": "Sunny in Paris.", "x-sim-cache-read-tokens": "4"}
    response, answer = await ask(gw, http, front, body_for(front, "gem"), sim)
    assert response.status == 200, answer
    assert answer.text == "Sunny in Paris." and answer.error is None
    upstream = last_upstream(simulator)
    assert upstream["path"] == f"/v1beta/models/{GEMINI}:streamGenerateContent"
    assert upstream["headers"]["x-goog-api-key"] == "test-gemini-key"
    assert upstream["body"]["contents"][-1]["parts"] == [{"text": QUESTION}]
    record = await gw.wait_record(response.headers["x-request-id"])
    assert record.provider == "gemini" and record.outcome == "completed"
    usage = record.usage
    assert usage.cache_read_tokens == 4 and usage.output_tokens and usage.input_tokens
    pricer = Pricer(PriceSettings())
    pricer._package = pricing._load_package()
    expected = pricer.cost("gemini", GEMINI, usage, provider_kind="gemini")
    assert expected is not None and expected > 0
    assert await ledger_cost(gw, record.request_id) == pricer.nanousd(expected)


@pytest.mark.parametrize("front", TOOL_FRONTS)
async def test_a_tool_round_trip(
    gw: RunningGateway, http: aiohttp.ClientSession, simulator: RunningSimulator, front: str
) -> None:
    sim = {"x-sim-tokens": "3", "x-sim-tool": "auto"}
    response, answer = await ask(gw, http, front, body_for(front, "gem", tools=True), sim)
    assert response.status == 200
    declared = last_upstream(simulator)["body"]["tools"][0]["functionDeclarations"][0]
    assert declared["name"] == "get_weather"
    (call,) = answer.tool_calls
    assert call.name == "get_weather" and "query" in json.loads(call.arguments)
    assert answer.finish is not None and answer.finish.reason == "tool_calls"
    second = body_for(front, "gem", tools=True)
    if front == "anthropic":
        second["messages"] += [
            {
                "role": "assistant",
                "content": [
                    {"type": "tool_use", "id": call.id, "name": call.name, "input": {"q": 1}}
                ],
            },
            {
                "role": "user",
                "content": [{"type": "tool_result", "tool_use_id": call.id, "content": "sun"}],
            },
        ]
    elif front == "openai":
        function = {"name": call.name, "arguments": call.arguments}
        second["messages"] += [
            {
                "role": "assistant",
                "tool_calls": [{"id": call.id, "type": "function", "function": function}],
            },
            {"role": "tool", "tool_call_id": call.id, "content": "sun"},
        ]
    elif front == "responses":
        second["input"] = [
            {"role": "user", "content": QUESTION},
            {"type": "function_call", "call_id": call.id, "name": call.name, "arguments": "{}"},
            {"type": "function_call_output", "call_id": call.id, "output": "sun"},
        ]
    else:
        second["contents"] += [
            {"role": "model", "parts": [{"functionCall": {"name": call.name, "args": {}}}]},
            {
                "role": "user",
                "parts": [{"functionResponse": {"name": call.name, "response": {"result": "sun"}}}],
            },
        ]
    response, answer = await ask(gw, http, front, second, {"x-sim-text": "It is sunny."})
    assert response.status == 200 and answer.text == "It is sunny."
    contents = last_upstream(simulator)["body"]["contents"]
    assert contents[-2]["role"] == "model" and "functionCall" in contents[-2]["parts"][0]
    answer_part = contents[-1]["parts"][0]["functionResponse"]
    assert answer_part == {"name": "get_weather", "response": {"result": "sun"}} or (
        answer_part["name"] == "get_weather" and answer_part["response"] == {"result": "sun"}
    )


@pytest.mark.parametrize("front", ["anthropic", "responses", "generate", "uichat", "gemini"])
async def test_thinking_comes_through(
    gw: RunningGateway, http: aiohttp.ClientSession, simulator: RunningSimulator, front: str
) -> None:
    body = body_for(front, "gem")
    if front == "anthropic":
        body["thinking"] = {"type": "enabled", "budget_tokens": 1024}
        body["max_tokens"] = 2000
    elif front == "responses":
        body["reasoning"] = {"effort": "low", "summary": "auto"}
    sim = {"x-sim-tokens": "3", "x-sim-thinking-tokens": "4"}
    response, answer = await ask(gw, http, front, body, sim)
    assert response.status == 200
    if front in ("anthropic", "responses"):
        config = last_upstream(simulator)["body"]["generationConfig"]
        assert config["thinkingConfig"]["includeThoughts"] is True
    record = await gw.wait_record(response.headers["x-request-id"])
    assert record.usage.reasoning_tokens == 4
    assert record.completion is not None and record.completion.thinking
    if front != "responses":  # a summary-less reasoning item carries no text back
        assert answer.thinking == record.completion.thinking


@pytest.mark.parametrize("front", [*FRONTS, "gemini"])
async def test_an_error_before_the_first_token_fails_over(
    gw: RunningGateway, http: aiohttp.ClientSession, front: str
) -> None:
    response, answer = await ask(gw, http, front, body_for(front, "gem_flaky"), name="gem_flaky")
    assert response.status == 200 and answer.text and answer.error is None
    attempts = response.headers["x-tokenrelay-attempts"]
    assert attempts.startswith(f"gemini/{GEMINI};outcome=") and "anthropic/" in attempts
    assert response.headers["x-tokenrelay-provider"] == "anthropic"


@pytest.mark.parametrize("front", [*FRONTS, "gemini"])
async def test_an_error_after_the_first_token_arrives_in_band(
    gw: RunningGateway, http: aiohttp.ClientSession, front: str
) -> None:
    body = body_for(front, "gem_midfail")
    response, answer = await ask(gw, http, front, body, {"x-sim-tokens": "8"}, name="gem_midfail")
    assert response.status == 200
    assert answer.text and isinstance(answer.error, Error)
    record = await gw.wait_record(response.headers["x-request-id"])
    assert record.outcome == "error"


@pytest.mark.parametrize("front", ["openai", "gemini"])
async def test_an_abort_closes_the_gemini_upstream_within_100ms(
    gw: RunningGateway, simulator: RunningSimulator, front: str
) -> None:
    simulator.reset_stats()
    path = gw.url + PATHS[front].format(route="gem_slow")
    async with aiohttp.ClientSession() as own:  # its own connection: closing it is a real drop
        response = await own.post(path, json=body_for(front, "gem_slow"))
        assert response.status == 200
        parser, events = SSEParser(), 0
        async for chunk in response.content.iter_any():
            events += len(parser.feed(chunk))
            if events >= 3:
                break
        dropped_at = time.monotonic()
        response.close()
    deadline = time.monotonic() + 3
    disconnects: list[dict[str, Any]] = []
    while not disconnects and time.monotonic() < deadline:
        await asyncio.sleep(0.01)
        disconnects = simulator.stats()["disconnects"]
    assert disconnects, "the simulator never saw the upstream connection close"
    latency = disconnects[0]["at_monotonic"] - dropped_at
    assert latency < 0.1, f"upstream closed {latency * 1000:.0f} ms after the client left"
    assert disconnects[0]["tokens_sent"] < 100


# --- the Gemini front ------------------------------------------------------------------------


async def test_the_gemini_front_on_a_claude_route(
    gw: RunningGateway, http: aiohttp.ClientSession, simulator: RunningSimulator
) -> None:
    body = body_for("gemini", "gem_claude")
    body["systemInstruction"] = {"parts": [{"text": "Be brief."}]}
    body["generationConfig"] = {"maxOutputTokens": 50, "stopSequences": ["END"]}
    response, answer = await ask(
        gw, http, "gemini", body, {"x-sim-text": "Sunny."}, name="gem_claude"
    )
    assert response.status == 200 and answer.text == "Sunny."
    upstream = last_upstream(simulator)
    assert upstream["path"] == "/v1/messages"
    assert upstream["body"]["max_tokens"] == 50 and upstream["body"]["stop_sequences"] == ["END"]
    assert "Be brief." in json.dumps(upstream["body"]["system"])


async def test_the_gemini_front_answers_whole_and_takes_the_key_in_the_query(
    gw: RunningGateway, http: aiohttp.ClientSession
) -> None:
    url = gw.url + "/v1beta/models/gem:generateContent?key=not-a-tokenrelay-key"
    response = await http.post(url, json=body_for("gemini", "gem"), headers={"x-sim-text": "Hi."})
    assert response.status == 200  # anonymous callers are allowed here; the key is ignored
    data = await response.json()
    assert data["candidates"][0]["content"]["parts"] == [{"text": "Hi."}]
    assert data["candidates"][0]["finishReason"] == "STOP"
    assert data["usageMetadata"]["totalTokenCount"] > 0 and data["modelVersion"] == GEMINI


async def test_the_gemini_front_errors_in_googles_shape(
    gw: RunningGateway, http: aiohttp.ClientSession
) -> None:
    unknown = await http.post(
        gw.url + "/v1beta/models/no-such-route:generateContent", json=body_for("gemini", "x")
    )
    assert unknown.status == 404
    assert (await unknown.json())["error"]["status"] == "NOT_FOUND"
    bad = await http.post(gw.url + "/v1beta/models/gem:generateContent", json={"contents": []})
    assert bad.status == 400
    assert (await bad.json())["error"]["status"] == "INVALID_ARGUMENT"
    no_sse = await http.post(
        gw.url + "/v1beta/models/gem:streamGenerateContent", json=body_for("gemini", "gem")
    )
    assert no_sse.status == 400 and "alt=sse" in (await no_sse.json())["error"]["message"]
    method = await http.post(gw.url + "/v1beta/models/gem:embedContent", json={})
    assert method.status == 404


async def test_the_gemini_front_lists_models(
    gw: RunningGateway, http: aiohttp.ClientSession
) -> None:
    listed = await (await http.get(gw.url + "/v1beta/models")).json()
    assert "models/gem" in [model["name"] for model in listed["models"]]
    one = await http.get(gw.url + "/v1beta/models/gem")
    assert one.status == 200 and (await one.json())["name"] == "models/gem"
    provider_model = await http.get(gw.url + f"/v1beta/models/{GEMINI}")
    assert provider_model.status == 200  # a gemini-* provider model the allow-list admits
    missing = await http.get(gw.url + "/v1beta/models/nothing-here")
    assert missing.status == 404


async def test_a_gemini_provider_model_by_name(
    gw: RunningGateway, http: aiohttp.ClientSession, simulator: RunningSimulator
) -> None:
    response, answer = await ask(
        gw, http, "gemini", body_for("gemini", GEMINI), {"x-sim-text": "Yes."}, name=GEMINI
    )
    assert response.status == 200 and answer.text == "Yes."
    assert last_upstream(simulator)["path"] == f"/v1beta/models/{GEMINI}:streamGenerateContent"


async def test_the_simulator_speaks_googles_errors(
    simulator: RunningSimulator, http: aiohttp.ClientSession
) -> None:
    url = simulator.url + f"/v1beta/models/{GEMINI}:generateContent"
    body = body_for("gemini", GEMINI)
    for fault, status, word in (
        ("529", 503, "UNAVAILABLE"),
        ("429", 429, "RESOURCE_EXHAUSTED"),
        ("400", 400, "INVALID_ARGUMENT"),
    ):
        response = await http.post(url, json=body, headers={"x-sim-fault": fault})
        error = (await response.json())["error"]
        assert (response.status, error["code"], error["status"]) == (status, status, word)
    limited = await http.post(
        url, json=body, headers={"x-sim-fault": "429", "x-sim-retry-after": "2"}
    )
    assert limited.headers["retry-after"] == "2"
    assert (await limited.json())["error"]["details"][0]["retryDelay"] == "2s"


async def test_a_gemini_route_without_a_key_is_a_503_naming_the_variable() -> None:
    environ = {
        "ANTHROPIC_API_KEY": "x",
        "ANTHROPIC_BASE_URL": "http://127.0.0.1:9",
        "TOKENRELAY_ROUTES__G__TARGETS": f"gemini:{GEMINI}",
        "TOKENRELAY_DATABASE_URL": "sqlite:///" + tempfile.mkdtemp() + "/gw.db",
    }
    async with gateway_server(environ) as running, aiohttp.ClientSession() as session:
        response = await session.post(
            running.url + "/v1beta/models/g:generateContent", json=body_for("gemini", "g")
        )
        error = (await response.json())["error"]
        assert response.status == 503 and error["status"] == "UNAVAILABLE"
        assert "GEMINI_API_KEY" in error["message"]

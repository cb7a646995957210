"""Claude on Vertex AI end to end: every front of the gateway through a provider of kind
``vertex``, over loopback HTTP to the simulator's Vertex paths (which refuse a body that names
the model or lacks ``anthropic_version: "vertex-2023-10-16"``, as Vertex does)."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import aiohttp
import msgspec
import pytest
import pytest_asyncio

from tests.servers import RunningGateway, gateway_environ, gateway_server
from tokenrelay.dialects.sse import SSEParser
from tokenrelay.metering import pricing
from tokenrelay.metering.pricing import Pricer, PriceSettings
from tokenrelay.simulator import RunningSimulator

pytestmark = pytest.mark.asyncio(loop_scope="session")

MODEL = "claude-sonnet-4-5@20250929"
PATH = f"/v1/projects/test-project/locations/us-east5/publishers/anthropic/models/{MODEL}"
SCHEMA = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
AN_TOOL = {"name": "get_weather", "description": "Weather now", "input_schema": SCHEMA}
OA_TOOL = {
    "type": "function",
    "function": {"name": "get_weather", "description": "Weather now", "parameters": SCHEMA},
}
RS_TOOL: dict[str, Any] = {"type": "function", "name": "get_weather", "parameters": SCHEMA}
QUESTION = "Weather in Paris?"
FRONTS = ["messages", "chat", "responses", "generate", "uichat"]
TOOL_FRONTS = ["messages", "chat", "responses"]  # /api/generate and /api/chat carry no tools


def vertex_environ(sim_url: str) -> dict[str, str]:
    """The test gateway's providers plus one of kind vertex on the simulator."""
    vertex = "TOKENRELAY_PROVIDERS__VERTEX__"
    flaky = [
        {"provider": "vertex", "model": MODEL, "headers": {"x-sim-fault": "529"}},
        {"provider": "openai", "model": "gpt-5.5"},
    ]
    midfail = [{"provider": "vertex", "model": MODEL, "headers": {"x-sim-fault": "error_after"}}]
    hang = {"x-sim-fault": "hang_before_first_byte"}
    hung = [
        {"provider": "vertex", "model": MODEL, "headers": hang, "first_token_timeout": 0.5},
        {"provider": "openai", "model": "gpt-5.5"},
    ]
    return {
        **gateway_environ(sim_url),
        vertex + "KIND": "vertex",
        vertex + "BASE_URL": sim_url + "/v1",
        vertex + "PROJECT": "test-project",
        vertex + "REGION": "us-east5",
        vertex + "API_KEY": "test-vertex-token",  # a fixed access token
        vertex + "FORWARD_HEADERS": '["x-sim-"]',
        "TOKENRELAY_ROUTES__VX__TARGETS": f"vertex:{MODEL}",
        "TOKENRELAY_ROUTES__VX__ALLOW_CLIENT_SYSTEM": "true",
        "TOKENRELAY_ROUTES__VXFLAKY__TARGETS": msgspec.json.encode(flaky).decode(),
        "TOKENRELAY_ROUTES__VXMID__TARGETS": msgspec.json.encode(midfail).decode(),
        "TOKENRELAY_ROUTES__VXHUNG__TARGETS": msgspec.json.encode(hung).decode(),
        "TOKENRELAY_MAX_BODY_BYTES": "65536",
    }


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def gw(simulator: RunningSimulator) -> AsyncIterator[RunningGateway]:
    async with gateway_server(vertex_environ(simulator.url)) as running:
        await running.gateway.meter.pricer.load()  # type: ignore[union-attr]
        yield running


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


def request_for(
    front: str, route: str, *, tools: bool = False, thinking: bool = False
) -> tuple[str, dict[str, Any]]:
    """The path and streaming body of one front's request."""
    user = {"role": "user", "content": QUESTION}
    if front == "messages":
        body: dict[str, Any] = {"model": route, "max_tokens": 2000, "messages": [user]}
        if tools:
            body["tools"] = [AN_TOOL]
        if thinking:
            body["thinking"] = {"type": "enabled", "budget_tokens": 1024}
        return "/v1/messages", {**body, "stream": True}
    if front == "chat":
        body = {"model": route, "messages": [user], "stream": True}
        body["stream_options"] = {"include_usage": True}
        if tools:
            body["tools"] = [OA_TOOL]
        if thinking:
            body["reasoning_effort"] = "low"
        return "/v1/chat/completions", body
    if front == "responses":
        body = {"model": route, "input": QUESTION, "stream": True}
        if tools:
            body["tools"] = [RS_TOOL]
        if thinking:
            body["reasoning"] = {"effort": "low", "summary": "auto"}
        return "/v1/responses", body
    if front == "generate":
        body = {"prompt": QUESTION, "route": route, "include": ["usage", "finish", "thinking"]}
        return "/api/generate", body
    message = {"id": "m1", "role": "user", "parts": [{"type": "text", "text": QUESTION}]}
    body = {"id": "c1", "messages": [message], "trigger": "submit-message", "route": route}
    return "/api/chat", body


class Heard:
    """What one front's stream said, folded: its text, tool calls, thinking and errors."""

    def __init__(self, front: str, data: list[Any]) -> None:
        self.text, self.thinking = "", ""
        self.tools: list[str] = []
        self.errors: list[Any] = []
        self.calls: list[dict[str, Any]] = []
        for item in data:
            self._fold(front, item)

    def _fold(self, front: str, item: Any) -> None:
        kind = item.get("type") if isinstance(item, dict) else None
        if front == "messages":
            delta = item.get("delta", {})
            if kind == "content_block_delta" and delta.get("type") == "text_delta":
                self.text += delta["text"]
            elif kind == "content_block_delta" and delta.get("type") == "thinking_delta":
                self.thinking += delta["thinking"]
            elif kind == "content_block_start" and item["content_block"]["type"] == "tool_use":
                self.tools.append(item["content_block"]["name"])
                self.calls.append(item["content_block"])
            elif kind == "error":
                self.errors.append(item["error"])
        elif front == "chat":
            if "error" in item:
                self.errors.append(item["error"])
            for choice in item.get("choices", []):
                delta = choice["delta"]
                self.text += delta.get("content") or ""
                self.thinking += delta.get("reasoning_content") or ""
                for call in delta.get("tool_calls") or []:
                    if call.get("id"):
                        self.tools.append(call["function"]["name"])
                        self.calls.append(call)
        elif front == "responses":
            if kind == "response.output_text.delta":
                self.text += item["delta"]
            elif kind in ("response.reasoning_summary_text.delta", "response.reasoning_text.delta"):
                self.thinking += item["delta"]
            elif kind == "response.output_item.done" and item["item"]["type"] == "function_call":
                self.tools.append(item["item"]["name"])
                self.calls.append(item["item"])
            elif kind in ("error", "response.failed"):
                self.errors.append(item)
        elif front == "generate":
            self.text += item.get("text", "")
            self.thinking += item.get("thinking", "")
            if "error" in item:
                self.errors.append(item["error"])
        else:
            if kind == "text-delta":
                self.text += item["delta"]
            elif kind == "reasoning-delta":
                self.thinking += item["delta"]
            elif kind == "error":
                self.errors.append(item)


async def ask(
    gw: RunningGateway,
    http: aiohttp.ClientSession,
    front: str,
    route: str = "vx",
    sim: dict[str, str] | None = None,
    **kwargs: Any,
) -> tuple[int, str, Heard]:
    path, body = request_for(front, route, **kwargs)
    return await post(gw, http, front, path, body, sim)


async def post(
    gw: RunningGateway,
    http: aiohttp.ClientSession,
    front: str,
    path: str,
    body: dict[str, Any],
    sim: dict[str, str] | None = None,
) -> tuple[int, str, Heard]:
    headers = {"x-sim-tokens": "8", **(sim or {})}
    async with http.post(gw.url + path, json=body, headers=headers) as response:
        raw = await response.read()
        request_id = response.headers.get("x-request-id", "")
        status = response.status
    if status != 200:
        return status, request_id, Heard(front, [])
    data = [json.loads(e.data) for e in SSEParser().feed(raw) if e.data and e.data != "[DONE]"]
    return status, request_id, Heard(front, data)


async def until_priced(gw: RunningGateway, request_id: str) -> Any:
    record = await gw.wait_record(request_id)
    deadline = time.monotonic() + 5
    while record.cost_nanousd is None and time.monotonic() < deadline:
        await asyncio.sleep(0.01)
    return record


def expected_nanousd(model: str, usage: Any, at: float) -> int:
    pricer = Pricer(PriceSettings())
    pricer._package = pricing._load_package()  # the offline table the gateway loaded
    cost = pricer.cost("google", model, usage, when=datetime.fromtimestamp(at, UTC))
    assert cost is not None and cost > 0
    return pricer.nanousd(cost)


# --- text, usage and exact cost, through every front ------------------------------------------


@pytest.mark.parametrize("front", FRONTS)
async def test_text_usage_and_cost_through_every_front(
    gw: RunningGateway, http: aiohttp.ClientSession, simulator: RunningSimulator, front: str
) -> None:
    simulator.reset_stats()
    sim = {"x-sim-cache-read-tokens": "3"}
    status, request_id, heard = await ask(gw, http, front, sim=sim)
    assert status == 200 and heard.text and not heard.errors
    assert simulator.stats()["requests"] == {PATH + ":streamRawPredict": 1}
    record = await until_priced(gw, request_id)
    assert (record.provider, record.model, record.outcome) == ("vertex", MODEL, "completed")
    assert record.usage.output_tokens == 8 and record.usage.cache_read_tokens == 3
    assert record.usage.input_tokens > 3
    assert record.cost_nanousd == expected_nanousd(MODEL, record.usage, time.time())


async def test_the_body_vertex_receives_has_its_version_and_no_model(
    gw: RunningGateway, http: aiohttp.ClientSession, simulator: RunningSimulator
) -> None:
    """The simulator refuses the wrong shape with a 400; this also reads what it received."""
    simulator.reset_stats()
    status, _, _ = await ask(gw, http, "chat")
    assert status == 200
    [sent] = simulator.stats()["last_requests"]
    assert sent["path"] == PATH + ":streamRawPredict"
    assert sent["headers"]["authorization"] == "Bearer test-vertex-token"
    assert "model" not in sent["body"] and "x-api-key" not in sent["headers"]
    assert sent["body"]["anthropic_version"] == "vertex-2023-10-16"
    assert sent["body"]["messages"][0]["content"] == [{"type": "text", "text": QUESTION}]


# --- tools: a round trip through the fronts that carry them -----------------------------------


def second_turn(front: str, first: dict[str, Any], call: dict[str, Any]) -> dict[str, Any]:
    """``first`` continued with the call's result."""
    result = '{"temperature": 18}'
    body = dict(first)
    if front == "messages":
        body["messages"] = [
            *first["messages"],
            {"role": "assistant", "content": [{k: call[k] for k in ("type", "id", "name")}]},
            {
                "role": "user",
                "content": [{"type": "tool_result", "tool_use_id": call["id"], "content": result}],
            },
        ]
        body["messages"][1]["content"][0]["input"] = {"city": "Paris"}
    elif front == "chat":
        function = {"name": call["function"]["name"], "arguments": '{"city":"Paris"}'}
        body["messages"] = [
            *first["messages"],
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [{"id": call["id"], "type": "function", "function": function}],
            },
            {"role": "tool", "tool_call_id": call["id"], "content": result},
        ]
    else:
        body["input"] = [
            {"role": "user", "content": QUESTION},
            {
                "type": "function_call",
                "call_id": call["call_id"],
                "name": call["name"],
                "arguments": '{"city":"Paris"}',
            },
            {"type": "function_call_output", "call_id": call["call_id"], "output": result},
        ]
    return body


@pytest.mark.parametrize("front", TOOL_FRONTS)
async def test_a_tool_round_trip(
    gw: RunningGateway, http: aiohttp.ClientSession, simulator: RunningSimulator, front: str
) -> None:
    path, first = request_for(front, "vx", tools=True)
    status, _, heard = await post(gw, http, front, path, first, {"x-sim-tool": "auto"})
    assert status == 200 and heard.tools == ["get_weather"], heard.errors
    simulator.reset_stats()
    status, _, answer = await post(gw, http, front, path, second_turn(front, first, heard.calls[0]))
    assert status == 200 and answer.text and not answer.tools, answer.errors
    [sent] = simulator.stats()["last_requests"]
    messages = sent["body"]["messages"]
    assert messages[-1]["content"][0]["type"] == "tool_result"
    assert messages[-2]["content"][-1]["type"] == "tool_use"


# --- thinking ---------------------------------------------------------------------------------


@pytest.mark.parametrize("front", FRONTS)
async def test_thinking_arrives_where_the_front_carries_it(
    gw: RunningGateway, http: aiohttp.ClientSession, front: str
) -> None:
    sim = {"x-sim-thinking-tokens": "5"}
    status, request_id, heard = await ask(gw, http, front, sim=sim, thinking=True)
    assert status == 200 and heard.text and not heard.errors
    assert heard.thinking, f"{front}: no thinking in the stream"
    record = await gw.wait_record(request_id)
    assert record.usage.output_tokens == 8 + 5


# --- failover and errors ----------------------------------------------------------------------


@pytest.mark.parametrize("front", FRONTS)
async def test_an_error_before_the_first_token_fails_over(
    gw: RunningGateway, http: aiohttp.ClientSession, front: str
) -> None:
    status, request_id, heard = await ask(gw, http, front, route="vxflaky")
    assert status == 200 and heard.text and not heard.errors
    record = await gw.wait_record(request_id)
    assert record.provider == "openai"
    first = record.attempts[0]
    assert (first.provider, first.outcome) == ("vertex", "overloaded")


@pytest.mark.parametrize("front", FRONTS)
async def test_an_error_after_the_first_token_arrives_in_band(
    gw: RunningGateway, http: aiohttp.ClientSession, front: str
) -> None:
    status, request_id, heard = await ask(gw, http, front, route="vxmid")
    assert status == 200 and heard.text and heard.errors
    record = await gw.wait_record(request_id)
    assert record.provider == "vertex" and record.outcome != "completed"


async def test_an_expired_token_is_refused_and_not_retried(
    simulator: RunningSimulator, http: aiohttp.ClientSession
) -> None:
    environ = vertex_environ(simulator.url)
    environ["TOKENRELAY_PROVIDERS__VERTEX__API_KEY"] = f"sim-expires-{time.time() - 1:.0f}"
    async with gateway_server(environ) as running:
        path, body = request_for("messages", "vx")
        async with http.post(running.url + path, json=body) as response:
            answer = await response.json()
            request_id = response.headers["x-request-id"]
        # Vertex's UNAUTHENTICATED is about the gateway's credentials: a 502, said generally
        assert response.status == 502 and "credentials for vertex" in answer["error"]["message"]
        record = await running.wait_record(request_id)
        assert (record.attempts[0].provider, record.attempts[0].outcome) == (
            "vertex",
            "upstream_auth",
        )
        assert len([a for a in record.attempts if a.provider == "vertex"]) == 1


# --- abort --------------------------------------------------------------------------------------


@pytest.mark.parametrize("front", FRONTS)
async def test_a_client_abort_closes_the_upstream_within_100ms(
    gw: RunningGateway, simulator: RunningSimulator, front: str
) -> None:
    simulator.reset_stats()
    path, body = request_for(front, "vx")
    headers = {"x-sim-tokens": "500", "x-sim-token-delay-ms": "20"}
    async with aiohttp.ClientSession() as own:  # its own connection: closing it is a real drop
        response = await own.post(gw.url + path, json=body, headers=headers)
        request_id = response.headers["x-request-id"]
        parser, events = SSEParser(), 0
        async for chunk in response.content.iter_any():
            events += len(parser.feed(chunk))
            if events >= 6:
                break
        dropped_at = time.monotonic()
        response.close()
    disconnects: list[dict[str, Any]] = []
    deadline = time.monotonic() + 3
    while not disconnects and time.monotonic() < deadline:
        await asyncio.sleep(0.01)
        disconnects = simulator.stats()["disconnects"]  # tokens_sent: of what it meant to send
    assert disconnects, "the simulator never saw the upstream connection close"
    assert disconnects[0]["path"] == PATH + ":streamRawPredict"
    latency = disconnects[0]["at_monotonic"] - dropped_at
    assert latency < 0.1, f"upstream closed {latency * 1000:.0f} ms after the client left"
    assert disconnects[0]["tokens_sent"] < 100
    record = await gw.wait_record(request_id)
    assert record.outcome == "aborted"


# --- a model the provider cannot address --------------------------------------------------------


async def test_a_client_named_model_vertex_cannot_address_is_a_400_naming_publisher(
    simulator: RunningSimulator, http: aiohttp.ClientSession
) -> None:
    """Start-up checks the routes' models; one a client names (provider_models) is checked when
    asked: a 400 in the client's dialect, nothing sent upstream, never a 500."""
    environ = vertex_environ(simulator.url)
    environ["TOKENRELAY_PROVIDER_MODELS__ALLOW"] = "vertex/*"
    simulator.reset_stats()
    async with gateway_server(environ) as running:
        body = {"model": "vertex/llama-4-maverick", "max_tokens": 50, "messages": []}
        body["messages"] = [{"role": "user", "content": "hi"}]
        async with http.post(running.url + "/v1/messages", json=body) as response:
            answer = await response.json()
        assert response.status == 400, answer
        assert answer["type"] == "error" and "publisher" in answer["error"]["message"]
        body["model"] = f"vertex/{MODEL}"  # one it can: served
        async with http.post(running.url + "/v1/messages", json=body) as response:
            assert response.status == 200
    assert simulator.stats()["requests"] == {PATH + ":streamRawPredict": 1}


async def test_the_simulators_vertex_paths_answer_anthropics_own_vertex_client(
    simulator: RunningSimulator,
) -> None:
    """The anthropic SDK's AnthropicVertex against the simulator: the paths and body rewrite the
    simulator checks are the ones the official client sends."""
    from anthropic import AsyncAnthropicVertex

    client = AsyncAnthropicVertex(
        region="us-east5",
        project_id="test-project",
        access_token="sdk-token",
        base_url=simulator.url + "/v1",
        max_retries=0,
    )
    async with client:
        message = await client.messages.create(
            model=MODEL, max_tokens=50, messages=[{"role": "user", "content": "hi"}]
        )
        assert message.content and message.usage.output_tokens > 0
        async with client.messages.stream(
            model=MODEL, max_tokens=50, messages=[{"role": "user", "content": "hi"}]
        ) as stream:
            text = await stream.get_final_text()
        assert text


@pytest.mark.parametrize(
    ("change", "status", "says"),
    [
        ({"model": MODEL}, 400, "model: Extra inputs are not permitted"),
        ({"anthropic_version": None}, 400, "anthropic_version: required"),
        ({"authorization": None}, 401, "missing required authentication credential"),
        ({"authorization": "Bearer sim-expires-1"}, 401, "expired"),
    ],
)
async def test_the_simulator_refuses_what_vertex_refuses(
    simulator: RunningSimulator,
    http: aiohttp.ClientSession,
    change: dict[str, str | None],
    status: int,
    says: str,
) -> None:
    body: dict[str, Any] = {
        "anthropic_version": "vertex-2023-10-16",
        "max_tokens": 20,
        "messages": [{"role": "user", "content": "hi"}],
    }
    headers = {"authorization": "Bearer any"}
    for name, value in change.items():
        target: dict[str, Any] = headers if name == "authorization" else body
        if value is None:
            del target[name]
        else:
            target[name] = value
    url = simulator.url + PATH + ":rawPredict"
    async with http.post(url, json=body, headers=headers) as response:
        assert response.status == status
        assert says in await response.text()


async def test_a_silent_vertex_misses_its_first_token_deadline_and_fails_over(
    gw: RunningGateway, http: aiohttp.ClientSession
) -> None:
    started = time.monotonic()
    status, request_id, heard = await ask(gw, http, "chat", route="vxhung")
    took = time.monotonic() - started
    assert status == 200 and heard.text and not heard.errors
    record = await gw.wait_record(request_id)
    assert record.provider == "openai" and record.attempts[0].outcome == "timeout"
    assert 0.5 <= took < 0.5 + 1.5  # the deadline, then the next target

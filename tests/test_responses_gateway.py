"""``POST /v1/responses`` through the gateway with the official ``openai`` SDK, over real HTTP
to the wire-exact simulator: streaming and not, a function tool round trip, reasoning, an
Anthropic route serving a Responses client, a Responses upstream serving Chat Completions and
Anthropic clients, a failure after the first token as ``response.failed``, and bad input as
OpenAI-shaped 400s."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import anthropic
import httpx2
import openai
import pytest
import pytest_asyncio

from tests.servers import RunningGateway, gateway_environ, gateway_server
from tests.test_dialect_responses import check_stream, sdk_response
from tokenrelay.simulator import RunningSimulator

pytestmark = pytest.mark.asyncio(loop_scope="session")

SCHEMA = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
WEATHER: dict[str, Any] = {
    "type": "function",
    "name": "get_weather",
    "description": "Weather now",
    "parameters": SCHEMA,
    "strict": True,
}
PATCH: dict[str, Any] = {
    "type": "custom",
    "name": "apply_patch",
    "description": "Edit files with a patch.",
    "format": {"type": "grammar", "syntax": "lark", "definition": 'start: "*** Begin Patch"'},
}
QUESTION = "Weather in Paris?"


def route(name: str, target: str) -> dict[str, str]:
    key = f"TOKENRELAY_ROUTES__{name.upper()}__"
    return {key + "TARGETS": target, key + "SYSTEM": "You answer weather questions."} | {
        key + "ALLOW_CLIENT_SYSTEM": "1"
    }


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def gw(simulator: RunningSimulator) -> AsyncIterator[RunningGateway]:
    upstream = "TOKENRELAY_PROVIDERS__RESPONSES__"
    environ = {
        **gateway_environ(simulator.url),
        # the simulator's Responses API as a provider: kind openai, api responses
        upstream + "KIND": "openai",
        upstream + "API": "responses",
        upstream + "BASE_URL": simulator.url + "/v1",
        upstream + "API_KEY": "test-responses-key",
        upstream + "FORWARD_HEADERS": '["x-sim-"]',
        **route("to_claude", "anthropic:claude-sonnet-5-5"),
        **route("to_chat", "openai:gpt-5.5"),
        **route("to_responses", "responses:gpt-5.5"),
    }
    async with gateway_server(environ) as running:
        yield running


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def oa(gw: RunningGateway) -> AsyncIterator[openai.AsyncOpenAI]:
    async with openai.AsyncOpenAI(base_url=gw.url + "/v1", api_key="-", max_retries=0) as client:
        yield client


def received(simulator: RunningSimulator) -> tuple[str, dict[str, Any]]:
    """The path and body of the one request the simulator got since its stats were reset."""
    requests = simulator.stats()["last_requests"]
    assert len(requests) == 1, [r["path"] for r in requests]
    return requests[0]["path"], requests[0]["body"]


async def raw_stream(gw: RunningGateway, body: dict[str, Any], **headers: str) -> bytes:
    async with httpx2.AsyncClient() as client:
        answer = await client.post(
            gw.url + "/v1/responses", json={**body, "stream": True}, headers=headers
        )
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"].startswith("text/event-stream")
    return answer.content


# --- the SDK, streaming and not ------------------------------------------------------------------


@pytest.mark.parametrize("model", ["to_responses", "to_claude", "to_chat"])
async def test_create_and_stream_agree(
    oa: openai.AsyncOpenAI, simulator: RunningSimulator, model: str
) -> None:
    """The same prompt gives the same (deterministic) simulated answer: the non-streaming
    response, the raw stream's deltas and the SDK's stream accumulator agree."""
    headers = {"x-sim-tokens": "8", "x-sim-cache-read-tokens": "3"}
    whole = await oa.responses.create(
        model=model, input=QUESTION, instructions="Be brief.", extra_headers=headers
    )
    assert whole.status == "completed" and whole.id.startswith("resp_")
    assert whole.instructions == "Be brief." and len(whole.output_text.split()) == 8
    assert whole.usage is not None and whole.usage.output_tokens == 8
    assert whole.usage.input_tokens_details.cached_tokens == 3
    assert whole.output[0].id is not None and whole.output[0].id.startswith("msg_")
    async with oa.responses.stream(
        model=model, input=QUESTION, instructions="Be brief.", extra_headers=headers
    ) as stream:
        deltas = [e.delta async for e in stream if e.type == "response.output_text.delta"]
        final = await stream.get_final_response()
    assert "".join(deltas) == final.output_text == whole.output_text
    assert final.usage is not None and final.usage.total_tokens == whole.usage.total_tokens
    events = await oa.responses.create(
        model=model, input=QUESTION, instructions="Be brief.", stream=True, extra_headers=headers
    )
    kinds = [event.type async for event in events]
    assert kinds[:2] == ["response.created", "response.in_progress"]
    assert kinds[-1] == "response.completed"


async def test_the_gateways_stream_is_exact(gw: RunningGateway) -> None:
    raw = await raw_stream(gw, {"model": "to_claude", "input": QUESTION}, **{"x-sim-tokens": "4"})
    events = check_stream(raw)
    final = sdk_response(events[-1]["response"])
    assert final.model == "claude-sonnet-5-5" and final.status == "completed"


# --- tools ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("model", ["to_responses", "to_claude", "to_chat"])
async def test_a_function_tool_round_trip(
    oa: openai.AsyncOpenAI, simulator: RunningSimulator, model: str
) -> None:
    first = await oa.responses.create(
        model=model,
        input=QUESTION,
        tools=[WEATHER],  # type: ignore[list-item]
        extra_headers={"x-sim-tokens": "2", "x-sim-tool": "auto"},
    )
    calls = [item for item in first.output if item.type == "function_call"]
    assert len(calls) == 1 and calls[0].name == "get_weather"
    assert calls[0].id is not None and calls[0].id.startswith("fc_")
    assert json.loads(calls[0].arguments)["query"]
    simulator.reset_stats()
    second = await oa.responses.create(
        model=model,
        input=[
            {"role": "user", "content": QUESTION},
            calls[0].model_dump(exclude_none=True),  # type: ignore[list-item]
            {"type": "function_call_output", "call_id": calls[0].call_id, "output": "sunny, 21C"},
        ],
        tools=[WEATHER],  # type: ignore[list-item]
        extra_headers={"x-sim-tokens": "3"},
    )
    assert second.status == "completed" and len(second.output_text.split()) == 3
    path, body = received(simulator)
    if model == "to_claude":
        assert path == "/v1/messages"
        result = body["messages"][-1]["content"][0]
        assert result == {
            "type": "tool_result",
            "tool_use_id": calls[0].call_id,
            "content": "sunny, 21C",
        }
    elif model == "to_chat":
        assert path == "/v1/chat/completions"
        assert body["messages"][-1] == {
            "role": "tool",
            "tool_call_id": calls[0].call_id,
            "content": "sunny, 21C",
        }
    else:
        assert path == "/v1/responses" and body["tools"] == [WEATHER]  # strict kept
        assert body["input"][-1]["type"] == "function_call_output"


async def test_a_custom_tool_on_a_claude_route_comes_back_as_a_custom_call(
    oa: openai.AsyncOpenAI, simulator: RunningSimulator
) -> None:
    simulator.reset_stats()
    async with oa.responses.stream(
        model="to_claude",
        input="Fix the bug.",
        tools=[PATCH],  # type: ignore[list-item]
        extra_headers={"x-sim-tokens": "0", "x-sim-tool": "apply_patch"},
    ) as stream:
        kinds = [event.type async for event in stream]
        final = await stream.get_final_response()
    assert "response.custom_tool_call_input.done" in kinds
    assert [item.type for item in final.output] == ["custom_tool_call"]
    path, body = received(simulator)
    assert path == "/v1/messages"
    tool = body["tools"][0]
    assert tool["name"] == "apply_patch" and 'start: "*** Begin Patch"' in tool["description"]
    assert tool["input_schema"]["required"] == ["input"]


async def test_hosted_tools_pass_to_a_responses_upstream_and_are_refused_elsewhere(
    oa: openai.AsyncOpenAI, simulator: RunningSimulator
) -> None:
    tools: Any = [WEATHER, {"type": "web_search"}]
    simulator.reset_stats()
    answer = await oa.responses.create(
        model="to_responses",
        input=QUESTION,
        tools=tools,
        include=["reasoning.encrypted_content"],
        reasoning={"effort": "low"},
        store=False,
        prompt_cache_key="session-1",
        extra_body={"client_metadata": {"x": "1"}},
    )
    assert answer.status == "completed"
    path, body = received(simulator)
    assert path == "/v1/responses" and body["tools"] == tools
    assert body["prompt_cache_key"] == "session-1" and body["client_metadata"] == {"x": "1"}
    assert body["reasoning"] == {"effort": "low"} and body["store"] is False
    simulator.reset_stats()
    hosted: Any = [WEATHER, {"type": "file_search", "vector_store_ids": ["vs_1"]}]
    with pytest.raises(openai.BadRequestError) as raised:
        await oa.responses.create(model="to_claude", input=QUESTION, tools=hosted)
    assert raised.value.status_code == 400
    error = raised.value.body
    assert isinstance(error, dict) and error["param"] == "tools[1]"
    assert "tools[1] (file_search) cannot be sent to an Anthropic model" in error["message"]
    assert simulator.stats()["last_requests"] == []


# --- reasoning -----------------------------------------------------------------------------------


@pytest.mark.parametrize("model", ["to_responses", "to_claude"])
async def test_reasoning_comes_back_as_a_summary(oa: openai.AsyncOpenAI, model: str) -> None:
    headers = {"x-sim-tokens": "3", "x-sim-thinking-tokens": "4"}
    async with oa.responses.stream(
        model=model,
        input=QUESTION,
        reasoning={"effort": "low", "summary": "auto"},
        extra_headers=headers,
    ) as stream:
        summary = [
            e.delta async for e in stream if e.type == "response.reasoning_summary_text.delta"
        ]
        final = await stream.get_final_response()
    reasoning = final.output[0]
    assert reasoning.type == "reasoning" and reasoning.id.startswith("rs_")
    assert reasoning.summary[0].text == "".join(summary) and len(summary) == 4
    assert reasoning.encrypted_content  # the signature, to carry the thinking back
    assert final.usage is not None and final.usage.output_tokens_details.reasoning_tokens == 4


# --- other fronts on a Responses upstream --------------------------------------------------------


async def test_chat_completions_served_by_a_responses_upstream(
    oa: openai.AsyncOpenAI, simulator: RunningSimulator
) -> None:
    simulator.reset_stats()
    tool: Any = {"type": "function", "function": {"name": "get_weather", "parameters": SCHEMA}}
    answer = await oa.chat.completions.create(
        model="to_responses",
        messages=[
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": QUESTION},
        ],
        tools=[tool],
        max_completion_tokens=200,
        extra_headers={"x-sim-tokens": "5", "x-sim-tool": "auto", "x-sim-cache-read-tokens": "2"},
    )
    choice = answer.choices[0]
    assert choice.finish_reason == "tool_calls" and len((choice.message.content or "").split()) == 5
    call = choice.message.tool_calls[0] if choice.message.tool_calls else None
    assert call is not None and call.type == "function" and call.function.name == "get_weather"
    assert answer.usage is not None and answer.usage.prompt_tokens_details is not None
    assert answer.usage.prompt_tokens_details.cached_tokens == 2
    path, body = received(simulator)
    assert path == "/v1/responses" and body["stream"] is True and body["store"] is False
    assert body["instructions"].endswith("Be brief.") and body["max_output_tokens"] == 200
    assert body["input"] == [
        {"type": "message", "role": "user", "content": [{"type": "input_text", "text": QUESTION}]}
    ]
    assert body["tools"][0]["name"] == "get_weather" and body["tools"][0]["type"] == "function"
    stream = await oa.chat.completions.create(
        model="to_responses",
        messages=[{"role": "user", "content": QUESTION}],
        stream=True,
        extra_headers={"x-sim-tokens": "5", "x-sim-thinking-tokens": "2"},
    )
    texts = [c.choices[0].delta.content or "" async for c in stream if c.choices]
    assert len("".join(texts).split()) == 5


async def test_anthropic_client_served_by_a_responses_upstream(gw: RunningGateway) -> None:
    async with anthropic.AsyncAnthropic(base_url=gw.url, api_key="-", max_retries=0) as client:
        message = await client.messages.create(
            model="to_responses",
            max_tokens=100,
            messages=[{"role": "user", "content": QUESTION}],
            extra_headers={"x-sim-tokens": "4", "x-sim-thinking-tokens": "2"},
        )
    kinds = [block.type for block in message.content]
    assert kinds == ["thinking", "text"] and message.stop_reason == "end_turn"
    assert message.usage.output_tokens == 6


# --- failures ------------------------------------------------------------------------------------


@pytest.mark.parametrize("model", ["to_responses", "to_claude"])
async def test_an_error_after_the_first_token_is_response_failed(
    gw: RunningGateway, model: str
) -> None:
    headers = {"x-sim-fault": "error_after", "x-sim-fault-after": "2", "x-sim-tokens": "9"}
    raw = await raw_stream(gw, {"model": model, "input": QUESTION}, **headers)
    events = check_stream(raw)
    assert events[-1]["type"] == "response.failed"
    final = sdk_response(events[-1]["response"])
    assert final.status == "failed" and final.error is not None
    assert "simulated overload" in final.error.message
    assert len(final.output_text.split()) == 2


async def test_an_upstream_refusal_before_the_first_token_is_an_openai_error(
    oa: openai.AsyncOpenAI,
) -> None:
    with pytest.raises(openai.RateLimitError) as raised:
        await oa.responses.create(
            model="to_responses", input=QUESTION, extra_headers={"x-sim-fault": "429"}
        )
    error = raised.value.body
    assert isinstance(error, dict) and error["type"] == "requests"


@pytest.mark.parametrize(
    ("fields", "param", "words"),
    [
        ({"input": [{"type": "bogus", "id": "x"}]}, "input[0].type", "unknown input item type"),
        (
            {"input": [{"type": "function_call_output", "call_id": "call_1", "output": "x"}]},
            "input[0].call_id",
            "no function_call",
        ),
        (
            {"text": {"format": {"type": "json_schema", "name": "w", "schema": []}}},
            "text.format.schema",
            "JSON Schema",
        ),
        ({"previous_response_id": "resp_123"}, "previous_response_id", "anonymous callers"),
        ({"background": True}, "background", "not supported"),
    ],
)
async def test_bad_input_is_a_400_naming_the_field(
    oa: openai.AsyncOpenAI,
    simulator: RunningSimulator,
    fields: dict[str, Any],
    param: str,
    words: str,
) -> None:
    simulator.reset_stats()
    body = {"model": "to_responses", "input": QUESTION, **fields}
    with pytest.raises(openai.BadRequestError) as raised:
        await oa.responses.create(**body)
    error = raised.value.body
    assert isinstance(error, dict) and error["param"] == param and words in error["message"]
    assert error["type"] == "invalid_request_error"
    assert simulator.stats()["last_requests"] == []


async def test_max_output_tokens_ends_incomplete(oa: openai.AsyncOpenAI) -> None:
    for model in ("to_responses", "to_claude"):
        answer = await oa.responses.create(
            model=model, input=QUESTION, max_output_tokens=3, extra_headers={"x-sim-tokens": "9"}
        )
        assert answer.status == "incomplete" and answer.incomplete_details is not None
        assert answer.incomplete_details.reason == "max_output_tokens"
        assert len(answer.output_text.split()) == 3


async def test_demo_mode_serves_responses() -> None:
    environ = {"TOKENRELAY_DEMO": "1", "TOKENRELAY_SIMULATOR__TTFT_MS": "1"}
    environ["TOKENRELAY_SIMULATOR__TOKEN_DELAY_MS"] = "0"
    async with gateway_server(environ) as demo:
        async with openai.AsyncOpenAI(base_url=demo.url + "/v1", api_key="-") as client:
            for model in ("default", "demo-responses"):
                answer = await client.responses.create(model=model, input="Hello")
                assert answer.status == "completed" and answer.output_text
        record = demo.records[-1]
        assert (record.dialect, record.provider) == ("responses", "openai-responses")


# --- the simulator's Responses API on its own ----------------------------------------------------


async def test_the_simulator_refuses_in_openais_shape(simulator: RunningSimulator) -> None:
    async with httpx2.AsyncClient() as client:
        answer = await client.post(
            simulator.url + "/v1/responses",
            json={"model": "gpt-5.5", "input": "Hi", "stream": True},
            params={"fault": "429", "retry_after": "2"},
        )
        bad = await client.post(
            simulator.url + "/v1/responses", json={"model": "gpt-5.5", "input": [{"type": "?"}]}
        )
    assert answer.status_code == 429
    assert (answer.headers["retry-after"], answer.headers["retry-after-ms"]) == ("2", "2000")
    assert answer.headers["x-request-id"].startswith("req_sim_")
    assert answer.json()["error"]["code"] == "rate_limit_exceeded"
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "input[0].type"


@pytest.mark.parametrize(
    ("knobs", "kinds"),
    [
        (
            {"fault": "error_before_content"},
            ["response.created", "response.in_progress", "response.failed"],
        ),
        ({"tokens": "0"}, ["response.created", "response.in_progress", "response.completed"]),
    ],
)
async def test_the_simulator_streams_its_faults_in_band(
    simulator: RunningSimulator, knobs: dict[str, str], kinds: list[str]
) -> None:
    async with httpx2.AsyncClient() as client:
        answer = await client.post(
            simulator.url + "/v1/responses",
            json={"model": "gpt-5.5", "input": "Hi", "stream": True},
            params=knobs,
        )
    assert answer.status_code == 200
    assert [event["type"] for event in check_stream(answer.content)] == kinds


async def test_the_simulator_answers_whole_responses(simulator: RunningSimulator) -> None:
    async with openai.AsyncOpenAI(
        base_url=simulator.url + "/v1", api_key="-", max_retries=0
    ) as client:
        answer = await client.responses.create(
            model="gpt-5.5",
            input="Hi",
            max_output_tokens=2,
            extra_headers={"x-sim-tokens": "5", "x-sim-thinking-tokens": "1"},
        )
    assert answer.id.startswith("resp_sim_") and answer.status == "incomplete"
    assert [item.type for item in answer.output] == ["reasoning", "message"]
    assert answer.usage is not None and answer.usage.output_tokens == 2

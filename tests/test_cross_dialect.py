"""Across dialects end to end: each official SDK through a route whose only upstream speaks the
other API, over real HTTP to the wire-exact simulator. What the simulator received (its stats) shows
the translation on the way up; what the SDK parsed shows the way back. What cannot be translated is
a 400 in the client's dialect naming the field, and nothing goes upstream."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import anthropic
import openai
import pytest
import pytest_asyncio
from anthropic.types import Message, TextBlock, ToolUseBlock

from tests.servers import RunningGateway, gateway_environ, gateway_server
from tokenrelay.dialects import anthropic as anthropic_dialect
from tokenrelay.dialects import openai as openai_dialect
from tokenrelay.simulator import RunningSimulator

pytestmark = pytest.mark.asyncio(loop_scope="session")

ROUTE_PROMPT = "You answer weather questions."
CLIENT_SYSTEM = "Answer in one short sentence."
QUESTION = "Weather in Paris?"
SCHEMA = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
OA_TOOL: Any = {  # raw JSON, as a client sends it (the SDK types it as a TypedDict)
    "type": "function",
    "function": {"name": "get_weather", "description": "Weather now", "parameters": SCHEMA},
}
AN_TOOL: Any = {"name": "get_weather", "description": "Weather now", "input_schema": SCHEMA}
# six text tokens, then a call of the request's first tool; 7 of the prompt tokens cached
SIM = {"x-sim-tokens": "6", "x-sim-tool": "auto", "x-sim-cache-read-tokens": "7"}


def route(name: str, target: str) -> dict[str, str]:
    key = f"TOKENRELAY_ROUTES__{name.upper()}__"
    return {key + "TARGETS": target, key + "SYSTEM": ROUTE_PROMPT, key + "ALLOW_CLIENT_SYSTEM": "1"}


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def gw(simulator: RunningSimulator) -> AsyncIterator[RunningGateway]:
    environ = {
        **gateway_environ(simulator.url),  # providers on the simulator, x-sim-* forwarded
        **route("to_claude", "anthropic:claude-sonnet-5-5"),  # its only target speaks Anthropic
        **route("to_gpt", "openai:gpt-5.5"),  # ... OpenAI, a reasoning model
        **route("to_llama", "openai:llama-3.1-8b"),  # ... OpenAI-compatible, not reasoning
        **route("claude_then_gpt", "anthropic:claude-sonnet-5-5,openai:gpt-5.5"),
        "TOKENRELAY_MAX_BODY_BYTES": "65536",
    }
    async with gateway_server(environ) as running:
        yield running


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def oa(gw: RunningGateway) -> AsyncIterator[openai.AsyncOpenAI]:
    async with openai.AsyncOpenAI(base_url=gw.url + "/v1", api_key="-", max_retries=0) as client:
        yield client


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def an(gw: RunningGateway) -> AsyncIterator[anthropic.AsyncAnthropic]:
    async with anthropic.AsyncAnthropic(base_url=gw.url, api_key="-", max_retries=0) as client:
        yield client


def received(simulator: RunningSimulator, path: str) -> dict[str, Any]:
    """The body of the one request the simulator got since its stats were reset."""
    requests = simulator.stats()["last_requests"]
    assert [r["path"] for r in requests] == [path]
    body: dict[str, Any] = requests[0]["body"]
    assert body["stream"] is True  # the gateway streams upstream, whatever the client asked
    return body


def prompt_tokens(dialect: Any, body: dict[str, Any]) -> int:
    """The prompt as the simulator counts it (the same dialect code reads it), 7 cached included."""
    prompt = dialect.parse_request(json.dumps(body).encode()).prompt_text()
    return max(1, len(prompt) // 4) + 7


@dataclass
class Streamed:
    """An OpenAI SDK stream, folded."""

    texts: list[str] = field(default_factory=list)
    calls: dict[int, dict[str, str]] = field(default_factory=dict)
    finish: str | None = None
    usage: Any = None


async def openai_stream(
    oa: openai.AsyncOpenAI, sim: dict[str, str] = SIM, **kwargs: Any
) -> Streamed:
    out = Streamed()
    stream = await oa.chat.completions.create(
        stream=True, stream_options={"include_usage": True}, extra_headers=sim, **kwargs
    )
    async for chunk in stream:
        if not chunk.choices:  # the usage chunk
            out.usage = chunk.usage
            continue
        choice = chunk.choices[0]
        delta = choice.delta
        if delta.content:
            out.texts.append(delta.content)
        for piece in delta.tool_calls or ():
            call = out.calls.setdefault(piece.index, {"id": "", "name": "", "arguments": ""})
            assert piece.function is not None
            if piece.id:
                assert not call["id"], "id and name come once, with the first piece"
                call.update(id=piece.id, name=piece.function.name or "")
            call["arguments"] += piece.function.arguments or ""
        out.finish = choice.finish_reason or out.finish
    return out


async def anthropic_stream(an: anthropic.AsyncAnthropic, **kwargs: Any) -> tuple[str, Message]:
    async with an.messages.stream(extra_headers=SIM, **kwargs) as stream:
        text = "".join([piece async for piece in stream.text_stream])
        return text, await stream.get_final_message()


# --- OpenAI SDK -> an Anthropic-only route ----------------------------------------------------

OA_TURN: dict[str, Any] = {
    "model": "to_claude",
    "messages": [
        {"role": "system", "content": CLIENT_SYSTEM},
        {"role": "user", "content": QUESTION},
    ],
    "max_completion_tokens": 300,
    "stop": ["\n\n", "END"],
    "temperature": 0.3,
    "top_p": 0.9,
    "tools": [OA_TOOL],
    "tool_choice": "required",
    "user": "user-42",
}


async def test_openai_sdk_streams_from_an_anthropic_only_route(
    oa: openai.AsyncOpenAI, simulator: RunningSimulator
) -> None:
    simulator.reset_stats()
    got = await openai_stream(oa, **OA_TURN)
    body = received(simulator, "/v1/messages")
    assert body["model"] == "claude-sonnet-5-5"
    assert body["system"] == f"{ROUTE_PROMPT}\n\n{CLIENT_SYSTEM}"
    assert body["messages"] == [{"role": "user", "content": [{"type": "text", "text": QUESTION}]}]
    assert body["max_tokens"] == 300 and "max_completion_tokens" not in body
    assert body["stop_sequences"] == ["\n\n", "END"] and "stop" not in body
    assert body["temperature"] == 0.3 and body["top_p"] == 0.9
    assert body["tools"] == [AN_TOOL]
    assert body["tool_choice"] == {"type": "any"}
    assert body["metadata"] == {"user_id": "user-42"} and "user" not in body
    assert "stream_options" not in body
    # the way back: six text deltas, then the simulator's tool_use as tool_calls deltas
    assert len(got.texts) == 6 and "".join(got.texts).strip()
    assert list(got.calls) == [0]
    call = got.calls[0]
    assert call["id"].startswith("toolu_sim_") and call["name"] == "get_weather"
    assert set(json.loads(call["arguments"])) == {"query"}
    assert got.finish == "tool_calls"
    assert got.usage is not None and got.usage.completion_tokens == 6
    assert got.usage.prompt_tokens == prompt_tokens(anthropic_dialect, body)  # cache included
    assert got.usage.prompt_tokens_details.cached_tokens == 7
    assert got.usage.total_tokens == got.usage.prompt_tokens + 6


async def test_openai_sdk_tool_result_turn_reaches_anthropic_as_blocks(
    oa: openai.AsyncOpenAI, simulator: RunningSimulator
) -> None:
    first = await openai_stream(oa, **OA_TURN)
    call, said = first.calls[0], "".join(first.texts)
    function = {"name": call["name"], "arguments": call["arguments"]}
    messages = [
        *OA_TURN["messages"],
        {
            "role": "assistant",
            "content": said,
            "tool_calls": [{"id": call["id"], "type": "function", "function": function}],
        },
        {"role": "tool", "tool_call_id": call["id"], "content": '{"temp_c": 21}'},
        {"role": "user", "content": "And tomorrow?"},
    ]
    simulator.reset_stats()
    second = await openai_stream(
        oa, model="to_claude", messages=messages, max_tokens=200, tools=[OA_TOOL]
    )
    body = received(simulator, "/v1/messages")
    tool_use = {"type": "tool_use", "id": call["id"], "name": "get_weather"}
    tool_use["input"] = json.loads(call["arguments"])
    result = {"type": "tool_result", "tool_use_id": call["id"], "content": '{"temp_c": 21}'}
    assert body["messages"] == [
        {"role": "user", "content": [{"type": "text", "text": QUESTION}]},
        {"role": "assistant", "content": [{"type": "text", "text": said}, tool_use]},
        {"role": "user", "content": [result, {"type": "text", "text": "And tomorrow?"}]},
    ]
    assert body["max_tokens"] == 200 and "tool_choice" not in body
    assert len(second.texts) == 6 and second.finish == "tool_calls"  # the knob calls again
    assert second.calls[0]["id"] not in ("", call["id"])


async def test_openai_sdk_whole_response_from_an_anthropic_only_route(
    oa: openai.AsyncOpenAI, simulator: RunningSimulator
) -> None:
    simulator.reset_stats()
    completion = await oa.chat.completions.create(
        model="to_claude",
        messages=[{"role": "user", "content": QUESTION}],
        tools=[OA_TOOL],
        tool_choice={"type": "function", "function": {"name": "get_weather"}},
        extra_headers=SIM,
    )
    body = received(simulator, "/v1/messages")
    assert body["tool_choice"] == {"type": "tool", "name": "get_weather"}
    assert body["max_tokens"] == 1024  # the route's default
    choice = completion.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content and len(choice.message.content.split()) == 6
    (call,) = choice.message.tool_calls or []
    assert call.type == "function" and call.id.startswith("toolu_sim_")
    assert call.function.name == "get_weather"
    assert set(json.loads(call.function.arguments)) == {"query"}
    assert completion.usage is not None and completion.usage.completion_tokens == 6
    assert completion.usage.prompt_tokens == prompt_tokens(anthropic_dialect, body)


@pytest.mark.parametrize(("max_tokens", "finish"), [(3, "length"), (50, "stop")])
async def test_openai_sdk_finish_reasons_from_anthropic(
    oa: openai.AsyncOpenAI, simulator: RunningSimulator, max_tokens: int, finish: str
) -> None:
    simulator.reset_stats()
    messages = [{"role": "user", "content": QUESTION}]
    got = await openai_stream(
        oa, {"x-sim-tokens": "6"}, model="to_claude", messages=messages, max_tokens=max_tokens
    )
    assert received(simulator, "/v1/messages")["max_tokens"] == max_tokens
    assert len(got.texts) == min(6, max_tokens) and got.finish == finish and not got.calls
    assert got.usage is not None and got.usage.completion_tokens == min(6, max_tokens)


# --- Anthropic SDK -> an OpenAI-only route ----------------------------------------------------

AN_TURN: dict[str, Any] = {
    "model": "to_gpt",
    "max_tokens": 300,
    "system": CLIENT_SYSTEM,
    "messages": [{"role": "user", "content": QUESTION}],
    "stop_sequences": ["END"],
    "extra_body": {"temperature": 0.3, "top_p": 0.9},  # this SDK has no arguments for them
    "tools": [AN_TOOL],
    "tool_choice": {"type": "any"},
    "metadata": {"user_id": "user-42"},
}


async def test_anthropic_sdk_streams_from_an_openai_only_route(
    an: anthropic.AsyncAnthropic, simulator: RunningSimulator
) -> None:
    simulator.reset_stats()
    text, message = await anthropic_stream(an, **AN_TURN)
    body = received(simulator, "/v1/chat/completions")
    assert body["model"] == "gpt-5.5"
    assert body["messages"] == [
        {"role": "system", "content": f"{ROUTE_PROMPT}\n\n{CLIENT_SYSTEM}"},
        {"role": "user", "content": QUESTION},
    ]
    assert body["max_completion_tokens"] == 300 and "max_tokens" not in body  # a gpt-5 model
    assert body["stop"] == ["END"] and "stop_sequences" not in body
    assert body["temperature"] == 0.3 and body["top_p"] == 0.9
    assert body["tools"] == [OA_TOOL]
    assert body["tool_choice"] == "required"
    assert body["user"] == "user-42" and "metadata" not in body
    assert body["stream_options"] == {"include_usage": True}
    # the way back: a text block, then the simulator's tool call as a tool_use block
    assert message.stop_reason == "tool_use" and message.stop_sequence is None
    said, tool_use = message.content
    assert isinstance(said, TextBlock) and said.text == text and len(text.split()) == 6
    assert isinstance(tool_use, ToolUseBlock)
    assert tool_use.id.startswith("call_sim_") and tool_use.name == "get_weather"
    assert isinstance(tool_use.input, dict) and set(tool_use.input) == {"query"}
    assert message.usage.output_tokens == 6
    assert message.usage.cache_read_input_tokens == 7  # Anthropic counts cache reads apart
    assert message.usage.input_tokens == prompt_tokens(openai_dialect, body) - 7


async def test_anthropic_sdk_tool_result_turn_reaches_openai_as_a_tool_message(
    an: anthropic.AsyncAnthropic, simulator: RunningSimulator
) -> None:
    text, first = await anthropic_stream(an, **AN_TURN)
    tool_use = first.content[1]
    assert isinstance(tool_use, ToolUseBlock)
    result = {"type": "tool_result", "tool_use_id": tool_use.id, "content": "21 C, sunny"}
    messages = [
        *AN_TURN["messages"],
        {"role": "assistant", "content": [block.model_dump() for block in first.content]},
        {"role": "user", "content": [result, {"type": "text", "text": "And tomorrow?"}]},
    ]
    simulator.reset_stats()
    _, second = await anthropic_stream(an, **{**AN_TURN, "messages": messages})
    body = received(simulator, "/v1/chat/completions")
    assistant = body["messages"][2]
    (call,) = assistant.pop("tool_calls")
    assert json.loads(call["function"].pop("arguments")) == tool_use.input
    assert call == {"id": tool_use.id, "type": "function", "function": {"name": "get_weather"}}
    assert body["messages"][1:] == [
        {"role": "user", "content": QUESTION},
        {"role": "assistant", "content": text},
        {"role": "tool", "tool_call_id": tool_use.id, "content": "21 C, sunny"},
        {"role": "user", "content": "And tomorrow?"},
    ]
    assert second.stop_reason == "tool_use"
    assert [block.type for block in second.content] == ["text", "tool_use"]


async def test_anthropic_sdk_whole_response_from_an_openai_compatible_route(
    an: anthropic.AsyncAnthropic, simulator: RunningSimulator
) -> None:
    simulator.reset_stats()
    message = await an.messages.create(
        model="to_llama",
        max_tokens=4,
        messages=[{"role": "user", "content": QUESTION}],
        extra_headers={"x-sim-tokens": "20"},
    )
    body = received(simulator, "/v1/chat/completions")
    assert body["model"] == "llama-3.1-8b"
    assert body["max_tokens"] == 4 and "max_completion_tokens" not in body  # not a reasoning model
    assert body["messages"][0] == {"role": "system", "content": ROUTE_PROMPT}
    assert message.stop_reason == "max_tokens"
    (said,) = message.content
    assert isinstance(said, TextBlock) and len(said.text.split()) == 4
    assert message.usage.output_tokens == 4 and message.usage.input_tokens > 0


# --- tool_choice, both ways (whole responses) ---------------------------------------

NAMED_OA = {"type": "function", "function": {"name": "get_weather"}}


@pytest.mark.parametrize(
    ("client", "choice", "upstream"),
    [
        ("openai", "auto", {"type": "auto"}),
        ("openai", "none", {"type": "none"}),
        ("anthropic", {"type": "auto"}, "auto"),
        ("anthropic", {"type": "none"}, "none"),
        ("anthropic", {"type": "tool", "name": "get_weather"}, NAMED_OA),
    ],
)
async def test_tool_choice_translates(
    oa: openai.AsyncOpenAI,
    an: anthropic.AsyncAnthropic,
    simulator: RunningSimulator,
    client: str,
    choice: Any,
    upstream: Any,
) -> None:
    simulator.reset_stats()
    messages: Any = [{"role": "user", "content": QUESTION}]
    if client == "openai":
        await oa.chat.completions.create(
            model="to_claude", messages=messages, tools=[OA_TOOL], tool_choice=choice
        )
        assert received(simulator, "/v1/messages")["tool_choice"] == upstream
    else:
        await an.messages.create(
            model="to_gpt", max_tokens=50, messages=messages, tools=[AN_TOOL], tool_choice=choice
        )
        assert received(simulator, "/v1/chat/completions")["tool_choice"] == upstream


# --- what cannot be translated: a 400 in the client's dialect, nothing sent upstream -----------

STRICT = {"type": "function", "function": {**OA_TOOL["function"], "strict": True}}
THOUGHT = {"type": "thinking", "thinking": "Look it up.", "signature": "c2ln"}
SIGNED_HISTORY = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": [THOUGHT]}]
DOCUMENT = {"type": "document", "source": {"type": "text", "media_type": "text/plain", "data": "x"}}


@pytest.mark.parametrize(
    ("fields", "param", "named"),
    [
        ({"response_format": {"type": "json_object"}}, "response_format", "response_format"),
        ({"seed": 7}, "seed", "seed cannot be sent to an Anthropic model"),
        ({"logprobs": True, "top_logprobs": 2}, "logprobs", "logprobs, top_logprobs"),
        ({"temperature": 1.5}, "temperature", "temperature 1.5 is above Anthropic's maximum"),
        ({"n": 2}, "n", "n cannot be sent to an Anthropic model"),
        ({"reasoning_effort": "ultra"}, "reasoning_effort", "reasoning_effort cannot be sent"),
        ({"reasoning_effort": "low", "temperature": 0.2}, "reasoning_effort", "no temperature"),
    ],
)
async def test_openai_only_fields_are_refused_for_an_anthropic_route(
    oa: openai.AsyncOpenAI,
    simulator: RunningSimulator,
    fields: dict[str, Any],
    param: str,
    named: str,
) -> None:
    simulator.reset_stats()
    messages: Any = [{"role": "user", "content": QUESTION}]
    with pytest.raises(openai.BadRequestError) as raised:
        await oa.chat.completions.create(model="to_claude", messages=messages, **fields)
    error = raised.value
    assert error.status_code == 400 and error.type == "invalid_request_error"
    assert error.param == param
    assert isinstance(error.body, dict) and named in error.body["message"]
    assert simulator.stats()["requests"] == {}  # refused before anything went upstream


@pytest.mark.parametrize(
    ("fields", "named"),
    [
        ({"extra_body": {"top_k": 40}}, "'top_k' cannot be sent to an OpenAI-compatible model"),
        ({"output_config": {"effort": "low"}}, "'output_config' cannot be sent"),
        ({"thinking": {"type": "adaptive"}}, "'thinking'"),
        ({"tools": [AN_TOOL, {"type": "web_search_20250305", "name": "web_search"}]}, "'tools'"),
        ({"messages": SIGNED_HISTORY}, "messages[1] carries thinking from an earlier turn"),
        ({"messages": [{"role": "user", "content": [DOCUMENT]}]}, "'document' block"),
    ],
)
async def test_anthropic_only_fields_are_refused_for_an_openai_route(
    an: anthropic.AsyncAnthropic, simulator: RunningSimulator, fields: dict[str, Any], named: str
) -> None:
    simulator.reset_stats()
    request = {"model": "to_gpt", "max_tokens": 50, "messages": [{"role": "user", "content": "hi"}]}
    with pytest.raises(anthropic.BadRequestError) as raised:
        await an.messages.create(**{**request, **fields})
    error = raised.value
    assert error.status_code == 400 and isinstance(error.body, dict)
    assert error.body["type"] == "error" and error.body["error"]["type"] == "invalid_request_error"
    assert named in error.body["error"]["message"]
    assert simulator.stats()["requests"] == {}  # refused before anything went upstream


# --- what has an equivalent is translated, not refused ---------------------------------------

JSON_SCHEMA = {"name": "weather", "strict": True, "schema": SCHEMA}


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        (  # parallel_tool_calls: false is Anthropic's disable_parallel_tool_use
            {"tools": [OA_TOOL], "parallel_tool_calls": False},
            {"tool_choice": {"type": "auto", "disable_parallel_tool_use": True}},
        ),
        (
            {"tools": [OA_TOOL], "tool_choice": "required", "parallel_tool_calls": False},
            {"tool_choice": {"type": "any", "disable_parallel_tool_use": True}},
        ),
        (  # strict tool schemas: Anthropic has strict tools too
            {"tools": [STRICT]},
            {"tools": [{**AN_TOOL, "strict": True}]},
        ),
        (  # json_schema is Anthropic's structured output (output_config.format, GA)
            {"response_format": {"type": "json_schema", "json_schema": JSON_SCHEMA}},
            {"output_config": {"format": {"type": "json_schema", "schema": SCHEMA}}},
        ),
        (  # a reasoning effort is a thinking budget; max_tokens grows to leave room to answer
            {"reasoning_effort": "low", "max_completion_tokens": 1000},
            {"thinking": {"type": "enabled", "budget_tokens": 2048}, "max_tokens": 3048},
        ),
        (
            {"reasoning_effort": "high", "max_completion_tokens": 20000},
            {"thinking": {"type": "enabled", "budget_tokens": 16384}, "max_tokens": 20000},
        ),
        (  # what asks for nothing is dropped
            {"n": 1, "logprobs": False, "store": True, "response_format": {"type": "text"}},
            {},
        ),
    ],
)
async def test_openai_fields_translate_for_an_anthropic_route(
    oa: openai.AsyncOpenAI,
    simulator: RunningSimulator,
    fields: dict[str, Any],
    expected: dict[str, Any],
) -> None:
    simulator.reset_stats()
    messages: Any = [{"role": "user", "content": QUESTION}]
    answer = await oa.chat.completions.create(model="to_claude", messages=messages, **fields)
    assert answer.choices[0].message.content
    sent = received(simulator, "/v1/messages")
    assert {key: sent.get(key) for key in expected} == expected
    for dropped in ("n", "logprobs", "store", "response_format", "parallel_tool_calls"):
        assert dropped not in sent
    if "reasoning_effort" not in fields:
        assert "thinking" not in sent


@pytest.mark.parametrize(
    ("route", "fields", "expected"),
    [
        ("to_gpt", {"thinking": {"type": "enabled", "budget_tokens": 2048}}, "low"),
        ("to_gpt", {"thinking": {"type": "enabled", "budget_tokens": 10000}}, "medium"),
        ("to_gpt", {"thinking": {"type": "enabled", "budget_tokens": 16384}}, "high"),
        ("to_gpt", {"thinking": {"type": "disabled"}}, None),
        ("to_llama", {"thinking": {"type": "disabled"}}, None),
    ],
)
async def test_anthropic_thinking_is_a_reasoning_effort_for_reasoning_models(
    an: anthropic.AsyncAnthropic,
    simulator: RunningSimulator,
    route: str,
    fields: dict[str, Any],
    expected: str | None,
) -> None:
    simulator.reset_stats()
    messages: Any = [{"role": "user", "content": QUESTION}]
    await an.messages.create(model=route, max_tokens=20000, messages=messages, **fields)
    sent = received(simulator, "/v1/chat/completions")
    assert sent.get("reasoning_effort") == expected
    assert "thinking" not in sent


async def test_thinking_is_refused_for_a_model_that_does_not_reason(
    an: anthropic.AsyncAnthropic, simulator: RunningSimulator
) -> None:
    simulator.reset_stats()
    thinking: Any = {"type": "enabled", "budget_tokens": 2048}
    with pytest.raises(anthropic.BadRequestError) as raised:
        await an.messages.create(
            model="to_llama",
            max_tokens=4000,
            messages=[{"role": "user", "content": "hi"}],
            thinking=thinking,
        )
    assert isinstance(raised.value.body, dict)
    message = raised.value.body["error"]["message"]
    assert "'thinking' cannot be sent to llama-3.1-8b" in message and "reasoning model" in message
    assert simulator.stats()["requests"] == {}


async def test_disable_parallel_tool_use_is_parallel_tool_calls_false(
    an: anthropic.AsyncAnthropic, simulator: RunningSimulator
) -> None:
    simulator.reset_stats()
    await an.messages.create(
        model="to_gpt",
        max_tokens=50,
        messages=[{"role": "user", "content": QUESTION}],
        tools=[AN_TOOL],
        tool_choice={"type": "any", "disable_parallel_tool_use": True},
    )
    sent = received(simulator, "/v1/chat/completions")
    assert sent["parallel_tool_calls"] is False and sent["tool_choice"] == "required"


# --- a route whose first target cannot carry a field: the next one that can answers ------------


def _failover_skips_untranslatable() -> bool:
    """Whether failover skips a target that raises ``Untranslatable`` (the failover part of
    issue 13, merged separately); until then the first target's refusal is the answer."""
    from pathlib import Path

    from tokenrelay import failover

    return "Untranslatable" in Path(failover.__file__).read_text()


async def test_a_translatable_field_is_carried_by_the_first_target(
    oa: openai.AsyncOpenAI, simulator: RunningSimulator
) -> None:
    simulator.reset_stats()
    messages: Any = [{"role": "user", "content": QUESTION}]
    raw = await oa.chat.completions.with_raw_response.create(
        model="claude_then_gpt", messages=messages, tools=[OA_TOOL], parallel_tool_calls=False
    )
    assert raw.headers["x-tokenrelay-provider"] == "anthropic"
    assert received(simulator, "/v1/messages")["tool_choice"]["disable_parallel_tool_use"]


@pytest.mark.skipif(
    not _failover_skips_untranslatable(), reason="needs failover to skip Untranslatable targets"
)
@pytest.mark.parametrize(
    "fields",
    [{"logprobs": True, "top_logprobs": 1}, {"response_format": {"type": "json_object"}}, {"n": 2}],
)
async def test_a_field_only_a_later_target_carries_skips_the_first(
    oa: openai.AsyncOpenAI, simulator: RunningSimulator, fields: dict[str, Any]
) -> None:
    simulator.reset_stats()
    messages: Any = [{"role": "user", "content": QUESTION}]
    raw = await oa.chat.completions.with_raw_response.create(
        model="claude_then_gpt", messages=messages, **fields
    )
    assert raw.headers["x-tokenrelay-provider"] == "openai"
    sent = received(simulator, "/v1/chat/completions")  # nothing went to Anthropic
    assert all(sent[key] == value for key, value in fields.items())

"""OpenAI Chat Completions: validation, translation both ways, and the real ``openai`` SDK reading
what the writer wrote."""

from __future__ import annotations

from typing import Any

import httpx2
import msgspec
import openai
import pytest

from tokenrelay.dialects import openai as dialect
from tokenrelay.dialects.sse import SSEParser
from tokenrelay.model import (
    Accumulator,
    Completion,
    Error,
    Event,
    Finish,
    FinishReason,
    GatewayError,
    ImagePart,
    Message,
    Request,
    TextDelta,
    TextPart,
    ThinkingDelta,
    ThinkingPart,
    ToolCall,
    ToolCallDelta,
    ToolCallPart,
    ToolResultPart,
    Usage,
)

USER = {"role": "user", "content": "Weather in Paris?"}
AUDIO = [{"type": "input_audio", "input_audio": {}}]
TOOL = {"type": "function", "function": {"name": "weather", "parameters": {"type": "object"}}}


def body(**fields: Any) -> bytes:
    return msgspec.json.encode({"model": "gpt-5.5", "messages": [USER], **fields})


def parsed(**fields: Any) -> Request:
    return dialect.parse_request(body(**fields))


@pytest.mark.parametrize(
    ("raw", "param", "words"),
    [
        (b"{nope", None, "JSON"),
        (b"\xff\xfe", None, "UTF-8"),
        (b"[]", None, "object"),
        (b'{"messages": []}', "model", "'model' is required"),
        (body(messages=[]), "messages", "non-empty"),
        (body(messages=[{"role": "robot", "content": "x"}]), "messages[0].role", "'robot'"),
        (body(messages=[{"role": "user", "content": 3}]), "messages[0].content", "string"),
        (body(messages=[{"role": "user", "content": AUDIO}]), "messages[0].content[0]", "'text'"),
        (body(messages=[{"role": "tool", "content": "x"}]), "messages[0].tool_call_id", "required"),
        (body(max_tokens=0), "max_tokens", "positive"),
        (body(max_completion_tokens=True), "max_completion_tokens", "positive"),
        (body(temperature=3), "temperature", "0 to 2"),
        (body(stop=[1]), "stop", "strings"),
        (body(n=True), "n", "an integer from 1 to 128"),
        (body(n=0), "n", "an integer from 1 to 128"),
        (body(stream_options=[]), "stream_options", "include_usage"),
        (body(logprobs="yes"), "logprobs", "true or false"),
        (body(response_format="json"), "response_format", "json_schema"),
        (body(parallel_tool_calls=0), "parallel_tool_calls", "true or false"),
        (body(top_logprobs=21), "top_logprobs", "from 0 to 20"),
        (
            body(tools=[{"type": "function", "function": {"name": "f", "strict": "yes"}}]),
            "tools[0]",
            "strict' must be true or false",
        ),
        (body(frequency_penalty=10**400), "frequency_penalty", "from -2 to 2"),
        (body(logit_bias={"1": "x"}), "logit_bias", "token ids to numbers"),
        (body(metadata={"k": 1}), "metadata", "string values"),
        (body(reasoning_effort=1), "reasoning_effort", "a string"),
        (
            body(response_format={"type": "json_schema", "json_schema": {"schema": {}}}),
            "response_format",
            '"name"',
        ),
        (
            body(messages=[{"role": "user", "content": "x", "name": 5}]),
            "messages[0].name",
            "string",
        ),
        (
            body(messages=[{"role": "assistant", "content": "x", "tool_calls": 0}]),
            "messages[0].tool_calls",
            "a list",
        ),
        (body(tools=[{"type": "custom"}]), "tools[0]", "function"),
        (body(tool_choice="any"), "tool_choice", "'required'"),
        (body(stream="yes"), "stream", "true or false"),
        (body(functions=[]), "functions", "use 'tools'"),
    ],
)
def test_bad_requests_are_400s_naming_the_field(raw: bytes, param: str | None, words: str) -> None:
    with pytest.raises(GatewayError) as raised:
        dialect.parse_request(raw)
    error = raised.value
    assert (error.status, error.type) == (400, "invalid_request")
    assert words in error.message
    assert error.param == param
    wire = msgspec.json.decode(dialect.encode_error(error))["error"]
    assert wire == dict(message=error.message, type="invalid_request_error", param=param, code=None)


IMAGE = {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBO"}}
CALLS = [ToolCallPart("c1", "weather", "{}"), ToolCallPart("c2", "time", "{}")]
CONVERSATION = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": [{"type": "text", "text": "Look:"}, IMAGE]},
    {"role": "developer", "content": [{"type": "text", "text": "Use tools."}]},
    {
        "role": "assistant",
        "content": None,
        "reasoning_content": "hmm",
        "tool_calls": [
            {"id": c.id, "type": "function", "function": {"name": c.name, "arguments": "{}"}}
            for c in CALLS
        ],
    },
    {"role": "tool", "tool_call_id": "c1", "content": "sunny"},
    {"role": "tool", "tool_call_id": "c2", "content": [{"type": "text", "text": "noon"}]},
    {"role": "user", "content": [{"type": "image_url", "image_url": {"url": "https://x/y.png"}}]},
]


def test_parses_a_conversation() -> None:
    request = parsed(
        messages=CONVERSATION,
        max_completion_tokens=50,
        temperature=0.5,
        stop="END",
        tools=[TOOL],
        tool_choice={"type": "function", "function": {"name": "weather"}},
        stream=True,
        stream_options={"include_usage": True},
        user="u-1",
        seed=7,
        response_format={"type": "json_object"},
    )
    assert request.system == "Be brief.\n\nUse tools."
    assert request.messages == [
        Message("user", [TextPart("Look:"), ImagePart(data="iVBO", media_type="image/png")]),
        Message("assistant", [ThinkingPart("hmm"), *CALLS]),
        Message("tool", [ToolResultPart("c1", "sunny")]),
        Message("tool", [ToolResultPart("c2", "noon")]),
        Message("user", [ImagePart(url="https://x/y.png")]),
    ]
    assert (request.max_tokens, request.temperature, request.stop) == (50, 0.5, ["END"])
    assert (request.tool_choice, request.tools[0].name) == ("weather", "weather")
    assert request.stream and request.include_usage and request.dialect == "openai"
    assert request.metadata == {"user_id": "u-1"}
    assert request.extra == {"seed": 7, "response_format": {"type": "json_object"}}


def test_encode_round_trips_and_always_asks_for_usage() -> None:
    request = parsed(messages=CONVERSATION, max_tokens=9, tools=[TOOL], tool_choice="required")
    sent = msgspec.json.decode(dialect.encode_request(request, "gpt-4o", stream=True))
    assert sent["messages"][0] == {"role": "system", "content": "Be brief.\n\nUse tools."}
    assert sent["messages"][1]["content"][1]["image_url"]["url"] == "data:image/png;base64,iVBO"
    assert sent["messages"][2]["content"] is None and sent["messages"][2]["reasoning_content"]
    assert sent["stream"] is True and sent["stream_options"] == {"include_usage": True}
    assert sent["max_tokens"] == 9 and sent["tool_choice"] == "required"
    again = dialect.parse_request(msgspec.json.encode(sent))
    assert again.messages == request.messages and again.system == request.system
    assert again.tools == request.tools and again.tool_choice == "required"
    quiet = msgspec.json.decode(dialect.encode_request(request, "gpt-4o", stream=False))
    assert "stream" not in quiet and "stream_options" not in quiet


REASONING = ["o1", "o3-mini", "o4-mini-2025-04-16", "gpt-5-nano", "gpt-5.5", "openai/o3"]


@pytest.mark.parametrize("model", [*REASONING, "gpt-4o", "llama3.2", "ollama", "qwen/qwen3"])
def test_reasoning_models_get_max_completion_tokens(model: str) -> None:
    sent = msgspec.json.decode(dialect.encode_request(parsed(max_tokens=5), model, stream=True))
    key, other = ("max_completion_tokens", "max_tokens")[:: 1 if model in REASONING else -1]
    assert sent[key] == 5 and other not in sent


def test_what_cannot_be_translated_is_refused() -> None:
    foreign = Request(dialect="anthropic", model="m", messages=[], extra={"top_k": 5})
    with pytest.raises(GatewayError, match=r"'top_k' cannot be sent .* served by anthropic"):
        dialect.encode_request(foreign, "gpt-5.5", stream=True)
    thought = Message("assistant", [ThinkingPart("because"), TextPart("Hi")])
    foreign = Request(dialect="anthropic", model="m", messages=[thought])
    with pytest.raises(GatewayError, match="thinking") as raised:
        dialect.encode_request(foreign, "gpt-5.5", stream=True)
    assert raised.value.status == 400
    foreign.messages = [Message("assistant", [ThinkingPart("", "sig"), TextPart("Hi")])]
    sent = msgspec.json.decode(dialect.encode_request(foreign, "gpt-5.5", stream=True))
    assert sent["messages"] == [{"role": "assistant", "content": "Hi"}]


def test_tool_results_from_another_dialect_become_tool_messages() -> None:
    turn = Message("user", [ToolResultPart("c1", "boom", is_error=True), TextPart("and?")])
    request = Request(dialect="anthropic", model="m", messages=[turn], metadata={"user_id": "u"})
    sent = msgspec.json.decode(dialect.encode_request(request, "gpt-5.5", stream=True))
    assert sent["messages"] == [
        {"role": "tool", "tool_call_id": "c1", "content": "Error: boom"},
        {"role": "user", "content": "and?"},
    ]
    assert sent["user"] == "u"


def test_strict_tools_pass_through_whole() -> None:
    strict = {"type": "function", "function": {"name": "f", "parameters": {}, "strict": True}}
    request = parsed(tools=[strict])
    assert request.extra == {"tools": [strict]}
    sent = msgspec.json.decode(dialect.encode_request(request, "gpt-5.5", stream=True))
    assert sent["tools"] == [strict]


# --- streams -----------------------------------------------------------------------------------

STREAM: list[Event] = [
    Usage(input_tokens=20, cache_read_tokens=8),
    ThinkingDelta("Let me"),
    ThinkingDelta("", "sig"),
    TextDelta('Checking "both"\n'),
    ToolCallDelta(0, "call_a", "weather", ""),
    ToolCallDelta(0, arguments='{"city":'),
    ToolCallDelta(0, arguments='"Paris"}'),
    ToolCallDelta(1, "call_b", "time", '{"tz":"CET"}'),
    Usage(output_tokens=30, reasoning_tokens=12),
    Finish("tool_calls"),
]


def write(events: list[Event], include_usage: bool = True) -> bytes:
    request = parsed(stream=True, stream_options={"include_usage": include_usage})
    writer = dialect.stream_writer(request, id="chatcmpl-1", model="gpt-5.5")
    out = b"".join(writer.write(event) for event in events) + writer.close()
    assert writer.close() == b""
    return out


def chunks(raw: bytes) -> list[Any]:
    return [
        e.data if e.data == "[DONE]" else msgspec.json.decode(e.data) for e in SSEParser().feed(raw)
    ]


def read(raw: bytes) -> tuple[list[Event], bool]:
    reader = dialect.stream_reader()
    events = [event for sse in SSEParser().feed(raw) for event in reader.feed(sse)]
    return events, reader.done


def test_writer_shapes_match_openai() -> None:
    data = chunks(write(STREAM))
    assert data[-1] == "[DONE]"
    first, *middle, finish, usage = data[:-1]
    assert first["choices"][0]["delta"] == {"role": "assistant", "content": "", "refusal": None}
    for chunk in data[:-1]:
        assert chunk["object"] == "chat.completion.chunk" and chunk["id"] == "chatcmpl-1"
        assert chunk["created"] == first["created"] and chunk["model"] == "gpt-5.5"
    for chunk in [first, *middle, finish]:
        assert chunk["usage"] is None and chunk["choices"][0]["logprobs"] is None
    assert middle[0]["choices"][0]["delta"] == {"reasoning_content": "Let me"}
    assert middle[1]["choices"][0]["delta"] == {"content": 'Checking "both"\n'}
    first_piece = {"name": "weather", "arguments": ""}
    assert middle[2]["choices"][0]["delta"]["tool_calls"] == [
        {"index": 0, "id": "call_a", "type": "function", "function": first_piece}
    ]
    later_piece = [{"index": 0, "function": {"arguments": '{"city":'}}]
    assert middle[3]["choices"][0]["delta"]["tool_calls"] == later_piece
    assert finish["choices"] == [dict(index=0, delta={}, logprobs=None, finish_reason="tool_calls")]
    assert usage["choices"] == [] and usage["usage"] == dict(
        prompt_tokens=20,
        completion_tokens=30,
        total_tokens=50,
        prompt_tokens_details={"cached_tokens": 8},
        completion_tokens_details={"reasoning_tokens": 12},
    )


def test_without_include_usage_there_is_no_usage_at_all() -> None:
    data = chunks(write([TextDelta("hi"), Usage(3, 1)], include_usage=False))
    assert [c if c == "[DONE]" else c["choices"][0]["delta"] for c in data] == [
        {"role": "assistant", "content": "", "refusal": None},
        {"content": "hi"},
        {},  # close() finished it with "stop"
        "[DONE]",
    ]
    assert data[2]["choices"][0]["finish_reason"] == "stop"
    assert all("usage" not in c for c in data[:-1])


def test_reader_reads_what_the_writer_wrote() -> None:
    events, done = read(write(STREAM))
    accumulator = Accumulator()
    for event in events:
        accumulator.add(event)
    accumulated = accumulator.result()
    assert done and accumulated.text == 'Checking "both"\n' and accumulated.thinking == "Let me"
    assert accumulated.tool_calls == [
        ToolCall("call_a", "weather", '{"city":"Paris"}'),
        ToolCall("call_b", "time", '{"tz":"CET"}'),
    ]
    assert accumulated.usage == Usage(20, 30, 8, None, 12, model="gpt-5.5")  # the served model
    assert accumulated.finish == Finish("tool_calls")


@pytest.mark.parametrize(
    "reason", ["stop", "length", "tool_calls", "content_filter", "stop_sequence"]
)
def test_each_finish_reason_and_usage_after_it(reason: Any) -> None:
    wire: FinishReason = "stop" if reason == "stop_sequence" else reason
    raw = write([TextDelta("x"), Finish(reason), Usage(3, 1)])
    data = chunks(raw)
    assert data[2]["choices"][0]["finish_reason"] == wire
    assert data[3]["usage"]["total_tokens"] == 4 and data[4] == "[DONE]"
    events, _ = read(raw)
    assert events[-2:] == [Finish(wire), Usage(3, 1, 0, None, 0)]  # OpenAI always says 0


def test_error_mid_stream_ends_it() -> None:
    raw = write([TextDelta("par"), Error("overloaded", "Overloaded, try later", 529)])
    data = chunks(raw)
    error = dict(
        message="Overloaded, try later", type="server_error", param=None, code="overloaded"
    )
    assert data[-2:] == [{"error": error}, "[DONE]"]
    events, done = read(raw)
    assert events[-1] == Error("overloaded", "Overloaded, try later", 529) and done


def test_reader_takes_compatible_servers() -> None:
    lines = [
        '{"choices":[{"index":0,"delta":{"role":"assistant","content":""}}]}',
        '{"choices":[{"index":0,"delta":{"reasoning":"r"}}]}',
        '{"choices":[{"index":0,"delta":{"tool_calls":[{"id":"a","function":{"name":"f","arguments":"{}"}}]}}]}',
        '{"choices":[{"index":0,"delta":{"tool_calls":[{"id":"b","function":{"name":"g","arguments":"{}"}}]}}]}',
        '{"choices":[{"index":0,"delta":{},"finish_reason":"function_call"}],'
        '"usage":{"prompt_tokens":5,"completion_tokens":2,"total_tokens":7}}',
        "{not json",
    ]
    events, done = read(b"".join(b"data: " + line.encode() + b"\n\n" for line in lines))
    assert events[:5] == [
        ThinkingDelta("r"),
        ToolCallDelta(0, "a", "f", "{}"),
        ToolCallDelta(1, "b", "g", "{}"),
        Usage(5, 2),
        Finish("tool_calls"),
    ]
    assert isinstance(events[5], Error) and events[5].status == 502 and done
    vllm = b'data: {"error":{"message":"bad","type":"BadRequestError","param":null,"code":400}}\n\n'
    assert read(vllm)[0] == [Error("invalid_request", "bad", 400)]
    limited = b'data: {"error":{"message":"slow","type":"tokens","code":"rate_limit_exceeded"}}\n\n'
    assert read(limited)[0] == [Error("rate_limit", "slow", 429)]


def test_parse_error_takes_the_status_first() -> None:
    body_429 = b'{"error":{"message":"Rate limit reached","type":"tokens"}}'
    error = dialect.parse_error(429, body_429, {"retry-after-ms": "1500"})
    assert error == Error("rate_limit", "Rate limit reached", 429, 1.5)
    assert dialect.parse_error(503, b'{"error":{"message":"busy"}}', {}).type == "overloaded"
    assert dialect.parse_error(401, b'{"message":"no key"}', {}).type == "authentication"
    html = dialect.parse_error(502, b"<html>" + b"x" * 900, {"retry-after": "2"})
    assert (html.type, html.status, html.retry_after) == ("upstream_unavailable", 502, 2.0)
    assert "HTTP 502" in html.message and len(html.message) < 600


def test_whole_response_round_trip() -> None:
    calls = [ToolCall("c1", "weather", "{}")]
    completion = Completion("", "t", None, calls, Usage(10, 4, 2, None, 1), Finish("tool_calls"))
    raw = dialect.encode_response(completion, id="chatcmpl-9", model="gpt-5.5")
    assert msgspec.json.decode(raw)["choices"][0]["message"]["content"] is None
    back = dialect.parse_response(raw)
    assert (back.text, back.thinking, back.tool_calls) == ("", "t", completion.tool_calls)
    served = msgspec.structs.replace(completion.usage, model="gpt-5.5")  # the served model
    assert (back.usage, back.finish) == (served, completion.finish)
    assert dialect.parse_response(b"<html>").error is not None


# --- the real SDK ------------------------------------------------------------------------------


def sdk(raw: bytes, status: int = 200, content_type: str = dialect.CONTENT_TYPE) -> openai.OpenAI:
    def answer(request: httpx2.Request) -> httpx2.Response:
        return httpx2.Response(status, content=raw, headers={"content-type": content_type})

    client = httpx2.Client(transport=httpx2.MockTransport(answer))
    return openai.OpenAI(api_key="x", base_url="http://test/v1", http_client=client, max_retries=0)


ASK: dict[str, Any] = {"model": "gpt-5.5", "messages": [USER], "tools": [TOOL]}


def test_the_sdk_streams_our_chunks() -> None:
    stream = sdk(write(STREAM)).chat.completions.create(
        **ASK, stream=True, stream_options={"include_usage": True}
    )
    got = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in got if c.choices)
    assert text == 'Checking "both"\n'
    pieces = [t for c in got if c.choices for t in c.choices[0].delta.tool_calls or ()]
    assert "".join(p.function.arguments or "" for p in pieces if p.index == 0) == '{"city":"Paris"}'
    assert [c.choices[0].finish_reason for c in got if c.choices][-1] == "tool_calls"
    usage = got[-1].usage
    assert got[-1].choices == [] and usage is not None
    assert (usage.prompt_tokens, usage.completion_tokens, usage.total_tokens) == (20, 30, 50)
    assert usage.prompt_tokens_details and usage.prompt_tokens_details.cached_tokens == 8
    assert usage.completion_tokens_details
    assert usage.completion_tokens_details.reasoning_tokens == 12


def test_the_sdk_stream_helper_builds_the_final_completion() -> None:
    with sdk(write(STREAM)).chat.completions.stream(**ASK) as stream:
        final = stream.get_final_completion()
    message = final.choices[0].message
    assert message.content == 'Checking "both"\n'
    assert [(c.id, c.function.name, c.function.arguments) for c in message.tool_calls or ()] == [
        ("call_a", "weather", '{"city":"Paris"}'),
        ("call_b", "time", '{"tz":"CET"}'),
    ]
    assert final.choices[0].finish_reason == "tool_calls" and final.usage
    assert final.usage.prompt_tokens == 20


def test_the_sdk_raises_on_our_error_chunk() -> None:
    raw = write([TextDelta("par"), Error("upstream_unavailable", "lost the upstream", 502)])
    stream = sdk(raw).chat.completions.create(**ASK, stream=True)
    with pytest.raises(openai.APIError, match="lost the upstream"):
        list(stream)


def test_the_sdk_reads_a_whole_response() -> None:
    completion = Completion(text="Sunny.", usage=Usage(10, 2, 4), finish=Finish("stop"))
    raw = dialect.encode_response(completion, id="chatcmpl-9", model="gpt-5.5")
    answer = sdk(raw, content_type="application/json").chat.completions.create(**ASK)
    assert answer.id == "chatcmpl-9" and answer.choices[0].message.content == "Sunny."
    assert answer.choices[0].finish_reason == "stop" and answer.usage
    assert answer.usage.prompt_tokens_details
    assert answer.usage.prompt_tokens_details.cached_tokens == 4


@pytest.mark.parametrize(
    ("error", "raises"),
    [
        (GatewayError("rate_limit", "every target is rate limited"), openai.RateLimitError),
        (GatewayError("invalid_request", "need 'model'", param="model"), openai.BadRequestError),
        (GatewayError("authentication", "bad key"), openai.AuthenticationError),
        (GatewayError("not_found", "no route 'x'"), openai.NotFoundError),
        (GatewayError("overloaded", "busy", 503), openai.InternalServerError),
    ],
)
def test_the_sdk_raises_the_right_error(error: GatewayError, raises: type[Exception]) -> None:
    client = sdk(dialect.encode_error(error), error.status, "application/json")
    with pytest.raises(raises) as raised:
        client.chat.completions.create(**ASK)
    assert error.message in str(raised.value)
    assert isinstance(raised.value, openai.APIStatusError)
    assert raised.value.body == msgspec.json.decode(dialect.encode_error(error))["error"]


# --- bodies: nesting ---------------------------------------------------------------------------


def _nested_schema(levels: int) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "string"}
    for _ in range(levels):
        schema = {"type": "object", "properties": {"inner": schema}}
    return schema


def test_a_deep_but_real_tool_schema_is_accepted_and_one_past_the_limit_is_not() -> None:
    """A schema of 60 nested objects (about 125 JSON levels with the request around it) is
    accepted; one more object crosses the 128-level limit and is a 400 that says so."""
    tool: dict[str, Any] = {
        "type": "function",
        "function": {"name": "f", "parameters": _nested_schema(60)},
    }
    request = dialect.parse_request(body(tools=[tool]))
    assert request.tools[0].parameters == _nested_schema(60)
    dialect.encode_request(request, "gpt-5.5", stream=True)  # and it can be sent on
    tool["function"]["parameters"] = _nested_schema(62)
    with pytest.raises(GatewayError, match="deeper than 128 levels") as raised:
        dialect.parse_request(body(tools=[tool]))
    assert raised.value.status == 400

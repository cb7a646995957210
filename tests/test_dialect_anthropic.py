"""The Anthropic Messages dialect: requests both ways, and streams the official SDK accepts."""

from __future__ import annotations

from typing import Any

import anthropic
import httpx2
import msgspec
import pytest

from tokenrelay.dialects import anthropic as dialect
from tokenrelay.dialects.sse import SSEParser
from tokenrelay.model import (
    Accumulator,
    Completion,
    Error,
    Event,
    Finish,
    GatewayError,
    ImagePart,
    Message,
    Request,
    TextDelta,
    TextPart,
    ThinkingDelta,
    ThinkingPart,
    Tool,
    ToolCall,
    ToolCallDelta,
    ToolCallPart,
    ToolResultPart,
    Untranslatable,
    Usage,
)

WEATHER = {"type": "object", "properties": {"city": {"type": "string"}}}


def body(**fields: Any) -> bytes:
    base: dict[str, Any] = {
        "model": "claude-sonnet-5-5",
        "max_tokens": 100,
        "messages": [{"role": "user", "content": "hi"}],
    }
    return msgspec.json.encode({**base, **fields})


FULL = {
    "system": [{"type": "text", "text": "Be brief.", "cache_control": {"type": "ephemeral"}}],
    "messages": [
        {"role": "user", "content": [{"type": "text", "text": "Weather in Paris?"}]},
        {
            "role": "assistant",
            "content": [
                {"type": "thinking", "thinking": "Use the tool.", "signature": "c2ln"},
                {"type": "redacted_thinking", "data": "ZW5j"},
                {"type": "tool_use", "id": "t1", "name": "weather", "input": {"city": "Paris"}},
            ],
        },
        {
            "role": "user",
            "content": [
                {"type": "tool_result", "tool_use_id": "t1", "content": "18C"},
                {"type": "text", "text": "And tomorrow?"},
                {"type": "image", "source": {"type": "url", "url": "https://x/y.png"}},
            ],
        },
    ],
    "tools": [{"name": "weather", "description": "Get weather", "input_schema": WEATHER}],
    "tool_choice": {"type": "any"},
    "temperature": 0.5,
    "top_p": 0.9,
    "stop_sequences": ["###"],
    "metadata": {"user_id": "u-1"},
    "stream": True,
    "top_k": 40,
    "thinking": {"type": "enabled", "budget_tokens": 1024},
}


def test_parses_every_field_into_the_normalized_request() -> None:
    request = dialect.parse_request(body(**FULL))
    assert request.dialect == "anthropic" and request.model == "claude-sonnet-5-5"
    assert request.system == "Be brief." and request.stream and request.max_tokens == 100
    assert (request.temperature, request.top_p, request.stop) == (0.5, 0.9, ["###"])
    assert request.tools == [Tool("weather", "Get weather", WEATHER)]
    assert request.tool_choice == "required" and request.metadata == {"user_id": "u-1"}
    assert request.extra == {"top_k": 40, "thinking": {"type": "enabled", "budget_tokens": 1024}}
    assert request.messages == [
        Message("user", [TextPart("Weather in Paris?")]),
        Message(
            "assistant",
            [
                ThinkingPart("Use the tool.", "c2ln"),
                ThinkingPart("", dialect.REDACTED + "ZW5j"),
                ToolCallPart("t1", "weather", '{"city":"Paris"}'),
            ],
        ),
        Message("tool", [ToolResultPart("t1", "18C")]),
        Message("user", [TextPart("And tomorrow?"), ImagePart(url="https://x/y.png")]),
    ]
    assert not dialect.parse_request(body()).stream  # the API's default


def test_request_round_trip_merges_tool_results_back_into_the_user_turn() -> None:
    request = dialect.parse_request(body(**FULL))
    sent = msgspec.json.decode(dialect.encode_request(request, "claude-opus-4", stream=True))
    expected = {**FULL, "model": "claude-opus-4", "max_tokens": 100}  # cache_control kept
    assert sent == expected
    again = dialect.parse_request(msgspec.json.encode(sent))
    assert again.messages == request.messages and again.extra == request.extra


def test_encodes_a_request_from_another_dialect() -> None:
    request = Request(
        dialect="openai",
        model="default",
        messages=[
            Message("user", [TextPart("hi"), ImagePart(url="data:image/jpeg;base64,/9j/")]),
            Message("assistant", [ThinkingPart("unsigned"), ToolCallPart("c1", "f", "")]),
            Message("tool", [ToolResultPart("c1", "a", is_error=True)]),
            Message("tool", [ToolResultPart("c2", "b")]),
            Message("user", [ImagePart(url="https://x/y.png")]),
        ],
        tool_choice="f",
        stream=False,
        front_options={"include": ["usage"]},
    )
    sent = msgspec.json.decode(dialect.encode_request(request, "claude-x", stream=False))
    assert sent["max_tokens"] == dialect.DEFAULT_MAX_TOKENS and sent["stream"] is False
    assert sent["tool_choice"] == {"type": "tool", "name": "f"}
    user, assistant, results = sent["messages"]
    source = {"type": "base64", "media_type": "image/jpeg", "data": "/9j/"}
    assert user["content"][1] == {"type": "image", "source": source}  # a data URL
    assert assistant["content"] == [{"type": "tool_use", "id": "c1", "name": "f", "input": {}}]
    assert results == {
        "role": "user",  # consecutive tool results and the user turn after them, merged
        "content": [
            {"type": "tool_result", "tool_use_id": "c1", "content": "a", "is_error": True},
            {"type": "tool_result", "tool_use_id": "c2", "content": "b"},
            {"type": "image", "source": {"type": "url", "url": "https://x/y.png"}},
        ],
    }
    assert "include" not in sent and "front_options" not in sent


@pytest.mark.parametrize(
    ("fields", "problem"),
    [
        ({"extra": {"seed": 7, "response_format": {}}}, "response_format, seed cannot be sent"),
        ({"temperature": 1.5}, "temperature"),
        ({"messages": [Message("assistant", [ToolCallPart("c", "f", "[1]")])]}, "JSON object"),
        ({"messages": [Message("user", [ImagePart(data="abc")])]}, "media type"),
    ],
)
def test_what_anthropic_cannot_take_is_refused_with_400(
    fields: dict[str, Any], problem: str
) -> None:
    request = Request(dialect="openai", model="m", messages=[Message("user", [TextPart("hi")])])
    for name, value in fields.items():
        setattr(request, name, value)
    with pytest.raises(GatewayError) as raised:
        dialect.encode_request(request, "claude-x", stream=True)
    assert raised.value.status == 400 and problem in raised.value.message


def msg(content: Any, role: str = "user") -> list[dict[str, Any]]:
    return [{"role": role, "content": content}]


@pytest.mark.parametrize(
    ("raw", "param"),
    [
        (b"{nope", None),
        (b"\xff\xfe", None),
        (b"[]", None),
        (msgspec.json.encode({"max_tokens": 5, "messages": msg("hi")}), "model"),
        (body(max_tokens=None), "max_tokens"),
        (body(max_tokens=0), "max_tokens"),
        (body(max_tokens=True), "max_tokens"),
        (body(messages=None), "messages"),
        (body(messages=[]), "messages"),
        (body(messages="hi"), "messages"),
        (body(messages=msg("hi", role="developer")), "messages.0.role"),
        (body(messages=msg(5)), "messages.0.content"),
        (body(messages=msg([{"text": "no type"}])), "messages.0.content.0.type"),
        (body(messages=msg([{"type": "text"}])), "messages.0.content.0.text"),
        (body(messages=msg([{"type": "tool_result"}])), "messages.0.content.0.tool_use_id"),
        (body(messages=msg([{"type": "tool_result", "tool_use_id": "t"}], "assistant")), None),
        (body(messages=msg([{"type": "image", "source": {"type": "file"}}])), None),
        (body(messages=msg([{"type": "tool_use", "id": "t", "name": "f", "input": []}])), None),
        (body(system=3), "system"),
        (body(temperature="hot"), "temperature"),
        (body(top_p=2), "top_p"),
        (body(stop_sequences="###"), "stop_sequences"),
        (body(tools=[{"name": "f"}]), "tools.0.input_schema"),
        (body(tool_choice={"type": "sometimes"}), "tool_choice.type"),
        (body(tool_choice={"type": "tool"}), "tool_choice.name"),
        (body(stream="yes"), "stream"),
        (body(metadata={"user_id": 5}), "metadata.user_id"),
        (body(top_k=True), "top_k"),
        (body(top_k=-1), "top_k"),
        (body(thinking={"type": "enabled"}), "thinking"),
        (body(thinking="on"), "thinking"),
        (body(output_config=[]), "output_config"),
        (body(tool_choice={"type": "auto", "disable_parallel_tool_use": "yes"}), None),
        (body(tool_choice={"type": {"not": "hashable"}}), "tool_choice.type"),
    ],
)
def test_bad_requests_are_400s_naming_the_field(raw: bytes, param: str | None) -> None:
    with pytest.raises(GatewayError) as raised:
        dialect.parse_request(raw)
    error = raised.value
    assert error.status == 400 and error.type == "invalid_request"
    if param is not None:
        assert error.param == param and error.message.startswith(param + ": ")
    wire = {"type": "invalid_request_error", "message": error.message}
    assert msgspec.json.decode(dialect.encode_error(error)) == {"type": "error", "error": wire}


def test_server_tools_and_tool_choice_options_pass_through_verbatim() -> None:
    tools = [
        {"type": "web_search_20250305", "name": "web_search"},
        {"name": "f", "input_schema": {}},
    ]
    choice = {"type": "auto", "disable_parallel_tool_use": True}
    request = dialect.parse_request(body(tools=tools, tool_choice=choice))
    assert [tool.name for tool in request.tools] == ["f"] and request.tool_choice == "auto"
    sent = msgspec.json.decode(dialect.encode_request(request, "m", stream=True))
    assert sent["tools"] == tools and sent["tool_choice"] == choice
    request.extra.pop("tools")
    request.dialect = "openai"  # as if an OpenAI client had sent this field
    with pytest.raises(Untranslatable, match="tool_choice cannot be sent"):
        dialect.encode_request(request, "m", stream=True)


# --- streams -------------------------------------------------------------------------------------

STREAM: list[Event] = [
    Usage(input_tokens=100, cache_read_tokens=60, cache_write_tokens=10),
    ThinkingDelta("Let me "),
    ThinkingDelta("think."),
    ThinkingDelta("", "c2lnbmF0dXJl"),
    TextDelta("Hello"),
    TextDelta(', "world"\n'),
    ToolCallDelta(0, "toolu_1", "weather"),
    ToolCallDelta(0, arguments='{"city":'),
    ToolCallDelta(0, arguments='"Paris"}'),
    ToolCallDelta(1, "toolu_2", "clock", '{"tz":"UTC"}'),
    Finish("tool_calls"),
    Usage(output_tokens=42, reasoning_tokens=7),  # after the finish, as OpenAI sends it
]


def write_all(events: list[Event]) -> bytes:
    writer = dialect.stream_writer(dialect.parse_request(body()), id="msg_1", model="claude-x")
    return b"".join(writer.write(event) for event in events) + writer.close()


def read_all(raw: bytes) -> tuple[list[Event], bool]:
    reader = dialect.stream_reader()
    events = [event for sse in SSEParser().feed(raw) for event in reader.feed(sse)]
    return events, reader.done


def fold(events: list[Event]) -> Completion:
    accumulator = Accumulator()
    for event in events:
        accumulator.add(event)
    return accumulator.result()


def names(raw: bytes) -> list[str]:
    return [sse.event for sse in SSEParser().feed(raw)]


CACHED = {"input_tokens": 30, "cache_creation_input_tokens": 10, "cache_read_input_tokens": 60}
END_USAGE = {"output_tokens": 42, "output_tokens_details": {"thinking_tokens": 7}}


def test_frames_are_the_real_apis() -> None:
    frames = [
        (sse.event, msgspec.json.decode(sse.data)) for sse in SSEParser().feed(write_all(STREAM))
    ]
    assert [name for name, _ in frames] == (
        ["message_start", "ping"]
        + ["content_block_start"] + ["content_block_delta"] * 3 + ["content_block_stop"]
        + ["content_block_start"] + ["content_block_delta"] * 2 + ["content_block_stop"]
        + ["content_block_start"] + ["content_block_delta"] * 2 + ["content_block_stop"]
        + ["content_block_start", "content_block_delta", "content_block_stop"]
        + ["message_delta", "message_stop"]
    )  # fmt: skip
    assert all(data["type"] == name for name, data in frames)
    start = frames[0][1]["message"]
    assert start["usage"] == {**CACHED, "output_tokens": 0}  # input excludes the 70 cached
    assert frames[2][1]["content_block"] == {"type": "thinking", "thinking": "", "signature": ""}
    assert frames[5][1]["delta"] == {"type": "signature_delta", "signature": "c2lnbmF0dXJl"}
    tool = {"type": "tool_use", "id": "toolu_1", "name": "weather", "input": {}}
    assert frames[11][1]["content_block"] == tool
    assert [data["index"] for name, data in frames if name == "content_block_start"] == [0, 1, 2, 3]
    assert frames[-2][1] == {
        "type": "message_delta",
        "delta": {"stop_reason": "tool_use", "stop_sequence": None},
        "usage": {**CACHED, **END_USAGE},
    }


def test_reader_reads_back_what_the_writer_wrote() -> None:
    events, done = read_all(write_all(STREAM))
    assert done
    assert events[0] == Usage(100, 0, 60, 10, model="claude-x")  # input includes the cache again
    assert events[-2:] == [Usage(100, 42, 60, 10, 7), Finish("tool_calls")]
    assert [e for e in events if isinstance(e, ToolCallDelta)] == [
        ToolCallDelta(0, "toolu_1", "weather"),
        ToolCallDelta(0, arguments='{"city":'),
        ToolCallDelta(0, arguments='"Paris"}'),
        ToolCallDelta(1, "toolu_2", "clock"),
        ToolCallDelta(1, arguments='{"tz":"UTC"}'),
    ]
    served, expected = fold(events), fold(STREAM)  # message_start names the served model too
    assert served.usage == msgspec.structs.replace(expected.usage, model="claude-x")
    assert msgspec.structs.replace(served, usage=expected.usage) == expected


@pytest.mark.parametrize(
    ("finish", "wire"),
    [
        (Finish("stop"), ("end_turn", None)),
        (Finish("length"), ("max_tokens", None)),
        (Finish("stop_sequence", "###"), ("stop_sequence", "###")),
        (Finish("content_filter"), ("refusal", None)),
        (None, ("end_turn", None)),
    ],
)
def test_finish_reasons_both_ways(finish: Finish | None, wire: tuple[str, str | None]) -> None:
    raw = write_all([TextDelta("x"), *([finish] if finish else [])])
    delta = msgspec.json.decode(SSEParser().feed(raw)[-2].data)["delta"]
    assert (delta["stop_reason"], delta["stop_sequence"]) == wire
    assert read_all(raw)[0][-1] == (finish or Finish("stop"))


def test_usage_before_content_is_folded_into_message_start() -> None:
    writer = dialect.stream_writer(dialect.parse_request(body()), id="msg_1", model="m")
    assert writer.write(Usage(input_tokens=12)) == b""
    first = writer.write(TextDelta("a"))
    assert names(first) == ["message_start", "ping", "content_block_start", "content_block_delta"]
    start = msgspec.json.decode(SSEParser().feed(first)[0].data)
    assert start["message"]["usage"]["input_tokens"] == 12
    assert writer.write(Finish("stop")) == b"" and writer.write(Usage(output_tokens=3)) == b""
    end = writer.close()
    assert writer.close() == b"" and writer.write(TextDelta("late")) == b""
    assert names(end) == ["content_block_stop", "message_delta", "message_stop"]


def test_an_error_ends_the_stream_and_close_adds_nothing() -> None:
    writer = dialect.stream_writer(dialect.parse_request(body()), id="msg_1", model="m")
    raw = writer.write(TextDelta("par")) + writer.write(Error("overloaded", "Overloaded", 529))
    assert writer.close() == b""
    assert raw.endswith(
        b'event: error\ndata: {"type":"error","error":'
        b'{"type":"overloaded_error","message":"Overloaded"}}\n\n'
    )
    events, done = read_all(raw)
    assert done and events[-1] == Error("overloaded", "Overloaded", 529)
    before_anything = write_all([Error("rate_limit", "slow down", 429)])
    assert names(before_anything) == ["error"]  # nothing had started
    assert read_all(before_anything)[0] == [Error("rate_limit", "slow down", 429)]
    # Once the prompt's usage is known the message had started: message_start carries it.
    after_usage = write_all([Usage(input_tokens=5), Error("overloaded", "Overloaded", 529)])
    assert names(after_usage) == ["message_start", "ping", "error"]
    events = read_all(after_usage)[0]
    assert events[0] == Usage(5, 0, 0, 0, model="claude-x")
    assert events[-1] == Error("overloaded", "Overloaded", 529)


def test_reader_skips_unknown_events_and_reports_garbage() -> None:
    reader = dialect.stream_reader()
    parse = SSEParser().feed
    assert reader.feed(parse(b'event: future\ndata: {"type":"future"}\n\n')[0]) == []
    assert reader.feed(parse(b'event: ping\ndata: {"type":"ping"}\n\n')[0]) == []
    [error] = reader.feed(parse(b"event: message_delta\ndata: {oops\n\n")[0])
    assert isinstance(error, Error) and error.status == 502 and "unreadable" in error.message


# --- whole responses and errors ------------------------------------------------------------------


def test_whole_response_round_trip() -> None:
    completion = fold(STREAM)
    raw = dialect.encode_response(completion, id="msg_1", model="claude-x")
    assert msgspec.json.decode(raw)["usage"] == {**CACHED, **END_USAGE}
    back = dialect.parse_response(raw)
    assert back.usage.model == "claude-x"  # the served model, for metering
    assert msgspec.structs.replace(back, usage=completion.usage) == completion
    broken = Completion(tool_calls=[ToolCall("t", "f", '{"city":')])
    with pytest.raises(GatewayError, match="not a JSON object") as raised:
        dialect.encode_response(broken, id="msg_1", model="m")
    assert raised.value.status == 502


def test_parse_error_reads_anthropic_and_foreign_bodies() -> None:
    raw = dialect.encode_error(GatewayError("overloaded", "Overloaded", 529))
    ours = Error("overloaded", "Overloaded", 529, 3.0)
    assert dialect.parse_error(529, raw, {"retry-after": "3"}) == ours
    foreign = dialect.parse_error(502, b"<html>Bad gateway</html>", {})
    assert (foreign.type, foreign.status) == ("upstream_unavailable", 502)
    assert "HTTP 502" in foreign.message and "Bad gateway" in foreign.message
    assert dialect.parse_error(403, b"", {}).type == "permission"


# --- the official SDK as the client --------------------------------------------------------------


def sdk(raw: bytes, status: int = 200, kind: str = "text/event-stream") -> anthropic.Anthropic:
    def answer(request: httpx2.Request) -> httpx2.Response:
        return httpx2.Response(status, content=raw, headers={"content-type": kind})

    http = httpx2.Client(transport=httpx2.MockTransport(answer))
    return anthropic.Anthropic(api_key="x", base_url="http://test", http_client=http, max_retries=0)


ASK: dict[str, Any] = {"model": "m", "max_tokens": 9, "messages": msg("hi")}


def check_message(message: Any) -> None:
    thinking, text, weather, clock = message.content
    assert (thinking.thinking, thinking.signature) == ("Let me think.", "c2lnbmF0dXJl")
    assert text.text == 'Hello, "world"\n'
    assert (weather.id, weather.name, weather.input) == ("toolu_1", "weather", {"city": "Paris"})
    assert clock.input == {"tz": "UTC"}
    usage = message.usage
    assert (usage.input_tokens, usage.cache_read_input_tokens) == (30, 60)
    assert (usage.cache_creation_input_tokens, usage.output_tokens) == (10, 42)
    assert message.stop_reason == "tool_use" and message.id == "msg_1"


def test_sdk_streams_the_writers_bytes() -> None:
    client = sdk(write_all(STREAM))
    events = list(client.messages.create(**ASK, stream=True))
    assert [event.type for event in events][:2] == ["message_start", "content_block_start"]
    assert events[-2].usage.output_tokens == 42 and events[-2].delta.stop_reason == "tool_use"
    with client.messages.stream(**ASK) as stream:
        assert "".join(stream.text_stream) == 'Hello, "world"\n'
        check_message(stream.get_final_message())


def test_redacted_thinking_passes_through_whole() -> None:
    redacted = ThinkingDelta("", dialect.REDACTED + "ZW5j")
    raw = write_all([redacted, TextDelta("ok")])
    assert read_all(raw)[0][1:3] == [redacted, TextDelta("ok")]
    with sdk(raw).messages.stream(**ASK) as stream:
        block = stream.get_final_message().content[0]
    assert (block.type, block.data) == ("redacted_thinking", "ZW5j")  # type: ignore[union-attr]


def test_sdk_raises_on_an_error_event() -> None:
    raw = write_all([TextDelta("par"), Error("overloaded", "Overloaded", 529)])
    with pytest.raises(anthropic.APIStatusError) as raised:
        list(sdk(raw).messages.create(**ASK, stream=True))
    assert raised.value.type == "overloaded_error" and "Overloaded" in str(raised.value)


def test_sdk_reads_a_whole_response() -> None:
    completion = fold(STREAM)
    raw = dialect.encode_response(completion, id="msg_1", model="claude-x")
    check_message(sdk(raw, kind="application/json").messages.create(**ASK))


@pytest.mark.parametrize(
    ("error", "exception"),
    [
        (GatewayError("invalid_request", "max_tokens: Field required"), anthropic.BadRequestError),
        (GatewayError("authentication", "bad key", 401), anthropic.AuthenticationError),
        (GatewayError("not_found", "no route 'x'", 404), anthropic.NotFoundError),
        (GatewayError("rate_limit", "slow down", 429), anthropic.RateLimitError),
        (GatewayError("overloaded", "Overloaded", 529), anthropic.OverloadedError),
        (GatewayError("timeout", "no answer in 60s", 504), anthropic.GatewayTimeoutError),
    ],
)
def test_sdk_raises_the_class_for_the_status(
    error: GatewayError, exception: type[anthropic.APIStatusError]
) -> None:
    client = sdk(dialect.encode_error(error), error.status, "application/json")
    with pytest.raises(exception) as raised:
        client.messages.create(**ASK)
    assert raised.value.type == dialect.ERROR_TYPES[error.type]
    assert raised.value.api_message == error.message


# --- prompt caching ----------------------------------------------------------------------------

EPHEMERAL = {"type": "ephemeral"}
HOUR = {"type": "ephemeral", "ttl": "1h"}
CACHING: dict[str, Any] = {
    "system": [
        {"type": "text", "text": "You are Claude Code."},
        {"type": "text", "text": "Project rules.", "cache_control": HOUR},
    ],
    "messages": [
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "Look:", "cache_control": EPHEMERAL},
                {
                    "type": "image",
                    "source": {"type": "base64", "media_type": "image/png", "data": "iVBO"},
                    "cache_control": EPHEMERAL,
                },
            ],
        },
        {
            "role": "assistant",
            "content": [
                {
                    "type": "tool_use",
                    "id": "t1",
                    "name": "weather",
                    "input": {"city": "Paris"},
                    "cache_control": EPHEMERAL,
                }
            ],
        },
        {
            "role": "user",
            "content": [
                {
                    "type": "tool_result",
                    "tool_use_id": "t1",
                    "content": "18C",
                    "cache_control": EPHEMERAL,
                },
                {"type": "text", "text": "Thanks"},
            ],
        },
    ],
    "tools": [
        {"name": "time", "input_schema": {"type": "object"}},
        {"name": "weather", "input_schema": WEATHER, "cache_control": EPHEMERAL},
    ],
}


def test_cache_control_is_parsed_onto_parts_tools_and_the_system_prompt() -> None:
    request = dialect.parse_request(body(**CACHING))
    assert request.system == "You are Claude Code.\n\nProject rules."
    assert request.system_blocks == CACHING["system"]
    assert request.messages[0].content == [
        TextPart("Look:", EPHEMERAL),
        ImagePart(data="iVBO", media_type="image/png", cache_control=EPHEMERAL),
    ]
    assert request.messages[1].content == [
        ToolCallPart("t1", "weather", '{"city":"Paris"}', EPHEMERAL)
    ]
    assert request.messages[2].content == [ToolResultPart("t1", "18C", False, EPHEMERAL)]
    assert request.messages[3].content == [TextPart("Thanks")]
    assert request.tools == [
        Tool("time", None, {"type": "object"}),
        Tool("weather", None, WEATHER, EPHEMERAL),
    ]


def test_cache_control_round_trips_to_the_same_places() -> None:
    request = dialect.parse_request(body(**CACHING))
    sent = msgspec.json.decode(dialect.encode_request(request, "claude-opus-4", stream=True))
    # the system blocks as sent, each breakpoint where the client put it
    assert sent["system"] == CACHING["system"]
    assert sent["messages"] == CACHING["messages"]
    assert sent["tools"] == CACHING["tools"]
    again = dialect.parse_request(msgspec.json.encode(sent))
    assert again.messages == request.messages and again.tools == request.tools
    assert again.system_blocks == CACHING["system"]


def test_cache_control_inside_tool_result_content_is_kept_on_the_result() -> None:
    content = [{"type": "text", "text": "18C", "cache_control": EPHEMERAL}]
    block = {"type": "tool_result", "tool_use_id": "t1", "content": content}
    request = dialect.parse_request(body(messages=msg([block])))
    assert request.messages == [Message("tool", [ToolResultPart("t1", "18C", False, EPHEMERAL)])]


def test_a_route_system_prefix_is_a_block_of_its_own_before_the_clients() -> None:
    request = dialect.parse_request(body(**CACHING))
    request.add_system("ROUTE", first=True)  # what the router does
    sent = msgspec.json.decode(dialect.encode_request(request, "claude-opus-4", stream=True))
    assert sent["system"] == [{"type": "text", "text": "ROUTE"}, *CACHING["system"]]
    assert request.system == "ROUTE\n\nYou are Claude Code.\n\nProject rules."


def test_system_blocks_without_a_breakpoint_stay_blocks() -> None:
    system = [{"type": "text", "text": "A"}, {"type": "text", "text": "B"}]
    request = dialect.parse_request(body(system=system))
    assert request.system == "A\n\nB"
    sent = msgspec.json.decode(dialect.encode_request(request, "claude-opus-4", stream=True))
    assert sent["system"] == system


@pytest.mark.parametrize(
    ("fields", "param"),
    [
        ({"messages": msg([{"type": "text", "text": "x", "cache_control": "yes"}])}, "messages.0"),
        ({"system": [{"type": "text", "text": "x", "cache_control": 1}]}, "system.0"),
        ({"tools": [{"name": "f", "input_schema": {}, "cache_control": []}]}, "tools.0"),
    ],
)
def test_a_malformed_cache_control_is_a_400(fields: dict[str, Any], param: str) -> None:
    with pytest.raises(GatewayError) as raised:
        dialect.parse_request(body(**fields))
    assert raised.value.status == 400
    assert raised.value.param is not None
    assert raised.value.param.startswith(param) and raised.value.param.endswith("cache_control")


def test_the_openai_dialect_ignores_cache_control() -> None:
    from tokenrelay import dialects

    request = dialect.parse_request(body(**CACHING))
    sent = dialects.get("openai").encode_request(request, "gpt-4o", stream=True)
    assert b"cache_control" not in sent and b"ephemeral" not in sent
    decoded = msgspec.json.decode(sent)
    assert decoded["model"] == "gpt-4o"
    assert decoded["messages"][0] == {
        "role": "system",
        "content": "You are Claude Code.\n\nProject rules.",
    }
    assert [tool["function"]["name"] for tool in decoded["tools"]] == ["time", "weather"]


def test_an_assistant_turn_left_empty_is_not_sent() -> None:
    # An OpenAI-compatible model's reasoning has no signature, so it cannot go to Anthropic;
    # an assistant turn that held nothing else would be an empty turn, which Anthropic refuses.
    request = Request(
        dialect="openai",
        model="m",
        messages=[
            Message("user", [TextPart("first")]),
            Message("assistant", [ThinkingPart("mulling", "")]),
            Message("user", [TextPart("second")]),
        ],
    )
    sent = msgspec.json.decode(dialect.encode_request(request, "m", stream=True))
    assert [m["role"] for m in sent["messages"]] == ["user", "user"]
    assert all(m["content"] for m in sent["messages"])

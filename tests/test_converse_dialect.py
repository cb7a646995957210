"""The Converse dialect's pure functions, driven directly: requests both ways (and another
dialect's request encoded for Converse), stream frames in and out, whole responses, errors."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest

from tokenrelay.dialects import converse
from tokenrelay.dialects.eventstream import EventStreamParser, Frame, encode_frame, event, exception
from tokenrelay.model import (
    Completion,
    Error,
    Event,
    Finish,
    GatewayError,
    ImagePart,
    Message,
    OpaquePart,
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

PNG = "iVBORw0KGgo="
OBJ = {"json": {"type": "object"}}
CP = {"cachePoint": {"type": "default"}}
EPH = {"type": "ephemeral"}


def body_of(request: Request, model: str = "anthropic.claude") -> dict[str, Any]:
    result: dict[str, Any] = msgspec.json.decode(
        converse.encode_request(request, model, stream=True)
    )
    return result


def frame(raw: bytes) -> Frame:
    (only,) = EventStreamParser().feed(raw)
    return only


def read(*raws: bytes) -> list[Any]:
    reader = converse.stream_reader()
    return [item for raw in raws for item in reader.feed(frame(raw))]


# --- requests ------------------------------------------------------------------------------------


def test_an_anthropic_request_with_everything_encodes_for_converse() -> None:
    request = Request(
        dialect="anthropic",
        model="m",
        system="be brief",
        system_blocks=[
            {"type": "text", "text": "be brief", "cache_control": {"type": "ephemeral"}}
        ],
        max_tokens=100,
        temperature=0.5,
        top_p=0.9,
        stop=["END"],
        tools=[
            Tool("get", "fetch it", {"type": "object"}, cache_control=EPH),
            Tool("put"),
        ],
        tool_choice="put",
        extra={"thinking": {"type": "enabled", "budget_tokens": 2000}, "top_k": 5},
        messages=[
            Message("user", [TextPart("hi", cache_control=EPH)]),
            Message("user", [ImagePart(data=PNG, media_type="image/png")]),
            Message(
                "assistant",
                [
                    ThinkingPart("hmm", "sig1"),
                    ThinkingPart("unsigned"),
                    ToolCallPart("t1", "get", '{"a": 1}'),
                    ToolCallPart("t2", "get", "not json"),
                ],
            ),
            Message("tool", [ToolResultPart("t1", "boom", is_error=True)]),
            Message("tool", [ToolResultPart("t2", "fine")]),
        ],
    )
    body = body_of(request)
    assert body["system"] == [{"text": "be brief"}, CP]
    # the thinking budget counts in maxTokens, so it grows past it
    config = {"maxTokens": 2100, "temperature": 0.5, "topP": 0.9, "stopSequences": ["END"]}
    assert body["inferenceConfig"] == config
    assert body["additionalModelRequestFields"] == {
        "thinking": {"type": "enabled", "budget_tokens": 2000},
        "top_k": 5,
    }
    assert body["toolConfig"] == {
        "tools": [
            {"toolSpec": {"name": "get", "inputSchema": OBJ, "description": "fetch it"}},
            CP,
            {"toolSpec": {"name": "put", "inputSchema": OBJ}},
        ],
        "toolChoice": {"tool": {"name": "put"}},
    }
    user, assistant, results = body["messages"]
    # two user turns in a row are joined
    assert user == {
        "role": "user",
        "content": [
            {"text": "hi"},
            CP,
            {"image": {"format": "png", "source": {"bytes": PNG}}},
        ],
    }
    assert assistant["content"] == [
        {"reasoningContent": {"reasoningText": {"text": "hmm", "signature": "sig1"}}},
        {"reasoningContent": {"reasoningText": {"text": "unsigned"}}},
        {"toolUse": {"toolUseId": "t1", "name": "get", "input": {"a": 1}}},
        {"toolUse": {"toolUseId": "t2", "name": "get", "input": {}}},
    ]
    assert results == {
        "role": "user",
        "content": [
            {"toolResult": {"toolUseId": "t1", "content": [{"text": "boom"}], "status": "error"}},
            {"toolResult": {"toolUseId": "t2", "content": [{"text": "fine"}]}},
        ],
    }


@pytest.mark.parametrize(
    ("choice", "expected"),
    [("auto", {"auto": {}}), ("required", {"any": {}}), ("none", None), (None, None)],
)
def test_tool_choice(choice: str | None, expected: dict[str, Any] | None) -> None:
    request = Request(
        dialect="openai", model="m", messages=[], tools=[Tool("f")], tool_choice=choice
    )
    assert body_of(request)["toolConfig"].get("toolChoice") == expected


def test_an_openai_request_maps_reasoning_effort_and_drops_inert_fields() -> None:
    extra = {"reasoning_effort": "low", "store": True, "n": 1, "parallel_tool_calls": False}
    request = Request(dialect="openai", model="m", messages=[], extra=extra)
    body = body_of(request)
    assert body["additionalModelRequestFields"] == {
        "thinking": {"type": "enabled", "budget_tokens": 2048}
    }
    assert body["inferenceConfig"] == {"maxTokens": 2048 + 1024}
    none = Request(dialect="openai", model="m", messages=[], extra={"reasoning_effort": "none"})
    assert "additionalModelRequestFields" not in body_of(none)
    assert "inferenceConfig" not in body_of(none)


def test_untranslatable_fields_are_refused_by_name() -> None:
    extra = {"logprobs": True, "frequency_penalty": 1.0, "n": 2, "top_k": 3}
    request = Request(dialect="openai", model="m", messages=[], extra=extra)
    with pytest.raises(Untranslatable) as info:
        converse.encode_request(request, "amazon.nova", stream=True)
    assert info.value.param == "frequency_penalty"
    for name in ("frequency_penalty", "logprobs", "n", "top_k", "Bedrock model amazon.nova"):
        assert name in info.value.message


@pytest.mark.parametrize(
    ("message", "param"),
    [
        (Message("system", [TextPart("late")]), "messages[1]"),
        (Message("user", [ImagePart(url="https://x/y.png")]), "messages[1].content"),
        (Message("user", [ImagePart(data=PNG, media_type="image/tiff")]), "messages[1].content"),
        (Message("user", [OpaquePart("anthropic", {"type": "document"})]), "messages[1].content"),
    ],
)
def test_what_converse_cannot_carry_is_refused(message: Message, param: str) -> None:
    request = Request(dialect="anthropic", model="m", messages=[Message("user", []), message])
    with pytest.raises(Untranslatable) as info:
        converse.encode_request(request, "m", stream=False)
    assert info.value.param == param


def test_a_converse_request_round_trips() -> None:
    raw = {
        "system": [{"text": "one"}, {"cachePoint": {"type": "default"}}, {"text": "two"}],
        "messages": [
            {
                "role": "user",
                "content": [
                    {"text": "look"},
                    {"cachePoint": {"type": "default"}},
                    {"image": {"format": "jpeg", "source": {"bytes": PNG}}},
                    {"document": {"name": "d"}},
                ],
            },
            {
                "role": "assistant",
                "content": [
                    {"reasoningContent": {"reasoningText": {"text": "t", "signature": "s"}}},
                    {"toolUse": {"toolUseId": "u", "name": "f", "input": {"x": 1}}},
                ],
            },
            {
                "role": "user",
                "content": [
                    {
                        "toolResult": {
                            "toolUseId": "u",
                            "content": [{"text": "r"}],
                            "status": "error",
                        }
                    }
                ],
            },
        ],
        "inferenceConfig": {
            "maxTokens": 9,
            "temperature": 0.1,
            "topP": 0.2,
            "stopSequences": ["x"],
        },
        "toolConfig": {
            "tools": [{"toolSpec": {"name": "f"}}, {"cachePoint": {"type": "default"}}],
            "toolChoice": {"any": {}},
        },
        "additionalModelRequestFields": {"top_k": 4},
    }
    request = converse.parse_request(msgspec.json.encode(raw))
    assert request.system == "one\n\ntwo"
    assert (request.max_tokens, request.temperature, request.top_p) == (9, 0.1, 0.2)
    assert request.stop == ["x"]
    assert request.tools == [Tool("f", None, {"type": "object"})]
    assert request.tool_choice == "required"
    user, assistant, result = request.messages
    assert user.content == [
        TextPart("look"),
        ImagePart(data=PNG, media_type="image/jpeg"),
        OpaquePart("converse", {"document": {"name": "d"}}),
    ]
    assert assistant.content == [ThinkingPart("t", "s"), ToolCallPart("u", "f", '{"x":1}')]
    assert result.content == [ToolResultPart("u", "r", True)]
    # and a Converse request goes back out with its own additional fields as they were
    again = body_of(msgspec.structs.replace(request, messages=request.messages[1:]))
    assert again["additionalModelRequestFields"] == {"top_k": 4}
    assert again["toolConfig"]["toolChoice"] == {"any": {}}


@pytest.mark.parametrize(
    ("choice", "expected"),
    [({"auto": {}}, "auto"), ({"tool": {"name": "g"}}, "g"), ("auto", None)],
)
def test_parsed_tool_choice(choice: Any, expected: str | None) -> None:
    raw = {"messages": [], "toolConfig": {"tools": [], "toolChoice": choice}}
    assert converse.parse_request(msgspec.json.encode(raw)).tool_choice == expected


@pytest.mark.parametrize(
    "body",
    [b"not json", b"[]", b'{"messages": {}}', b'{"messages": [{"role": "system", "content": []}]}'],
)
def test_a_malformed_request_is_a_400(body: bytes) -> None:
    with pytest.raises(GatewayError) as info:
        converse.parse_request(body)
    assert (info.value.status, info.value.type) == (400, "invalid_request")
    assert "not a valid Converse request" in info.value.message


# --- streams -------------------------------------------------------------------------------------


def delta(payload: str) -> bytes:
    return event("contentBlockDelta", payload.encode())


def test_a_stream_with_reasoning_tools_and_cached_usage() -> None:
    events = read(
        event("messageStart", b'{"role":"assistant"}'),
        delta('{"contentBlockIndex":0,"delta":{"reasoningContent":{"text":"think"}}}'),
        delta('{"contentBlockIndex":0,"delta":{"reasoningContent":{"signature":"sg"}}}'),
        event("contentBlockStart", b'{"contentBlockIndex":1,"start":{}}'),
        delta('{"contentBlockIndex":1,"delta":{"somethingNew":{}}}'),
        event(
            "contentBlockStart",
            b'{"contentBlockIndex":2,"start":{"toolUse":{"toolUseId":"u","name":"f"}}}',
        ),
        delta('{"contentBlockIndex":2,"delta":{"toolUse":{"input":"{\\"a\\""}}}'),
        event("messageStop", b'{"stopReason":"tool_use"}'),
        event(
            "metadata",
            b'{"usage":{"inputTokens":10,"outputTokens":5,"cacheReadInputTokens":100,'
            b'"cacheWriteInputTokens":7}}',
        ),
        delta('{"contentBlockIndex":0,"delta":{"text":"after the end"}}'),
    )
    assert events == [
        ThinkingDelta("think"),
        ThinkingDelta("", "sg"),
        ToolCallDelta(0, "u", "f"),
        ToolCallDelta(0, arguments='{"a"'),
        Usage(input_tokens=117, output_tokens=5, cache_read_tokens=100, cache_write_tokens=7),
        Finish("tool_calls"),
    ]


@pytest.mark.parametrize(
    ("stop", "reason"),
    [
        ("end_turn", "stop"),
        ("tool_use", "tool_calls"),
        ("max_tokens", "length"),
        ("stop_sequence", "stop_sequence"),
        ("guardrail_intervened", "content_filter"),
        ("content_filtered", "content_filter"),
        ("something_new", "stop"),
    ],
)
def test_stop_reasons(stop: str, reason: str) -> None:
    fields = {"stop_sequence": "END"} if stop == "stop_sequence" else []
    payload = msgspec.json.encode({"stopReason": stop, "additionalModelResponseFields": fields})
    *_, finish = read(event("messageStop", payload), event("metadata", b"{}"))
    assert finish == Finish(reason, "END" if stop == "stop_sequence" else None)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("name", "kind", "status"),
    [(name, kind, status) for name, (kind, status) in converse.EXCEPTIONS.items()]
    + [("BrandNewException", "api_error", 500)],
)
def test_every_exception_frame_maps(name: str, kind: str, status: int) -> None:
    (error,) = read(exception(name[0].lower() + name[1:], b'{"message":"slow down"}'))
    assert (error.type, error.status) == (kind, status)
    assert error.message.endswith(": slow down")


def test_exception_payloads_and_error_frames() -> None:
    (plain,) = read(exception("throttlingException", b"plain words"))
    assert plain.message == "Bedrock throttlingException: plain words"
    (empty,) = read(exception("throttlingException", b'{"Other":1}'))
    assert empty.message.endswith("no message")
    headers = {
        ":message-type": "error",
        ":error-code": "ThrottlingException",
        ":error-message": "x",
    }
    (error,) = read(encode_frame(headers, b""))
    assert (error.type, error.status, error.message) == (
        "rate_limit",
        429,
        "Bedrock ThrottlingException: x",
    )


@pytest.mark.parametrize(
    "raw",
    [
        delta("{not json"),
        delta('{"contentBlockIndex":0}'),
        event("contentBlockStart", b'{"start":{"toolUse":{"name":"f"}}}'),
    ],
)
def test_a_malformed_event_ends_the_stream_with_a_502(raw: bytes) -> None:
    reader = converse.stream_reader()
    (error,) = reader.feed(frame(raw))
    assert isinstance(error, Error)
    assert (error.type, error.status) == ("upstream_unavailable", 502)
    assert "contentBlock" in error.message
    assert reader.done and reader.feed(frame(delta('{"delta":{"text":"x"}}'))) == []


def test_the_writer_round_trips_through_the_reader() -> None:
    request = Request(dialect="converse", model="m", messages=[])
    writer = converse.stream_writer(request, id="i", model="m")
    usage = Usage(input_tokens=50, output_tokens=3, cache_read_tokens=20, cache_write_tokens=10)
    items: list[Event] = [ThinkingDelta("a"), ThinkingDelta("", "sig"), TextDelta("hi")]
    items += [usage, Finish("length")]
    raw = b"".join(writer.write(item) for item in items) + writer.close()
    reader = converse.stream_reader()
    out = [e for f in EventStreamParser().feed(raw) for e in reader.feed(f)]
    assert out == items
    # thinking text and its signature in one delta (a whole response replayed) both arrive
    both = converse.ConverseWriter().write(ThinkingDelta("why", "sig"))
    again = converse.stream_reader()
    thought = [e for f in EventStreamParser().feed(both) for e in again.feed(f)]
    assert thought == [ThinkingDelta("why"), ThinkingDelta("", "sig")]
    # a finish with nothing before it still opens the message
    bare = converse.ConverseWriter().write(Finish())
    assert [f.event_type for f in EventStreamParser().feed(bare)] == [
        "messageStart",
        "contentBlockStop",
        "messageStop",
        "metadata",
    ]
    failed = converse.ConverseWriter().write(Error("rate_limit", "slow", 429))
    (error,) = read(failed)
    assert (error.type, error.status) == ("rate_limit", 429)


# --- whole responses and errors ------------------------------------------------------------------


def test_a_whole_response_round_trips() -> None:
    completion = Completion(
        text="answer",
        thinking="why",
        thinking_signature="sig",
        tool_calls=[ToolCall("u", "f", '{"k":2}'), ToolCall("v", "g", "")],
        usage=Usage(input_tokens=30, output_tokens=4, cache_read_tokens=5, cache_write_tokens=6),
        finish=Finish("tool_calls"),
    )
    body = converse.encode_response(completion, id="i", model="m")
    data = msgspec.json.decode(body)
    assert data["stopReason"] == "tool_use"
    assert data["usage"] == {
        "inputTokens": 19,
        "outputTokens": 4,
        "totalTokens": 34,
        "cacheReadInputTokens": 5,
        "cacheWriteInputTokens": 6,
    }
    back = converse.parse_response(body)
    assert (back.text, back.thinking, back.thinking_signature) == ("answer", "why", "sig")
    assert back.tool_calls == [ToolCall("u", "f", '{"k":2}'), ToolCall("v", "g", "{}")]
    assert back.usage == completion.usage
    assert back.finish == Finish("tool_calls")
    signed_only = converse.encode_response(Completion(thinking_signature="s"), id="i", model="m")
    assert msgspec.json.decode(signed_only)["output"]["message"]["content"] == [
        {"reasoningContent": {"reasoningText": {"text": "", "signature": "s"}}}
    ]


def test_a_response_that_is_not_converse_is_a_502() -> None:
    for body in (b"<html>", b'{"output":{"message":{"content":[{"toolUse":{}}]}}}'):
        error = converse.parse_response(body).error
        assert error is not None and (error.type, error.status) == ("upstream_unavailable", 502)


VALIDATION = {"x-amzn-errortype": "ValidationException:http://x"}
THROTTLED = {"X-Amzn-ErrorType": "ThrottlingException", "retry-after": "3"}
DENIED = b'{"__type":"com.amazon#AccessDeniedException","Message":"no"}'


@pytest.mark.parametrize(
    ("status", "body", "headers", "kind", "retry"),
    [
        (400, b'{"message":"bad"}', VALIDATION, "invalid_request", None),
        (429, b'{"message":"m"}', THROTTLED, "rate_limit", 3.0),
        (403, DENIED, {}, "permission", None),
        (413, b"too big", {}, "request_too_large", None),
        (502, b"", {}, "api_error", None),
        (418, b"[1]", {}, "invalid_request", None),
    ],
)
def test_parse_error(
    status: int, body: bytes, headers: dict[str, str], kind: str, retry: float | None
) -> None:
    error = converse.parse_error(status, body, headers)
    assert (error.type, error.retry_after) == (kind, retry)
    assert error.message.startswith("Bedrock")


def test_encode_error_names_the_exception() -> None:
    error = GatewayError("timeout", "too slow", 504)
    assert msgspec.json.decode(converse.encode_error(error)) == {"message": "too slow"}
    assert converse.error_headers(error) == {"x-amzn-errortype": "ModelTimeoutException"}
    assert converse.error_headers(GatewayError("weird", "x", 500)) == {  # type: ignore[arg-type]
        "x-amzn-errortype": "InternalServerException"
    }

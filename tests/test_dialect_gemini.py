"""The Gemini dialect on its own: requests both ways, the stream reader and writer (a round trip
through our SSE parser), usage, finish reasons, a blocked prompt and Google's error shape."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tokenrelay.dialects import anthropic, gemini, openai
from tokenrelay.dialects.sse import SSEParser
from tokenrelay.model import (
    Completion,
    Error,
    Event,
    Finish,
    GatewayError,
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

SIGNATURE = "CvcBAVSoXO8signature"

BODY: dict[str, Any] = {
    "systemInstruction": {"parts": [{"text": "Be brief."}]},
    "contents": [
        {"role": "user", "parts": [{"text": "Weather in Paris?"}]},
        {
            "role": "model",
            "parts": [
                {"text": "Looking it up.", "thought": True, "thoughtSignature": SIGNATURE},
                {"functionCall": {"name": "get_weather", "args": {"city": "Paris"}}},
            ],
        },
        {
            "role": "user",
            "parts": [{"functionResponse": {"name": "get_weather", "response": {"result": "sun"}}}],
        },
    ],
    "tools": [
        {
            "functionDeclarations": [
                {
                    "name": "get_weather",
                    "description": "Weather now",
                    "parameters": {"type": "OBJECT", "properties": {"city": {"type": "STRING"}}},
                }
            ]
        }
    ],
    "toolConfig": {"functionCallingConfig": {"mode": "ANY"}},
    "generationConfig": {
        "maxOutputTokens": 300,
        "temperature": 0.3,
        "topP": 0.9,
        "stopSequences": ["END"],
        "thinkingConfig": {"thinkingBudget": 512, "includeThoughts": True},
    },
    "safetySettings": [{"category": "HARM_CATEGORY_HATE_SPEECH", "threshold": "BLOCK_NONE"}],
}


def parse(body: dict[str, Any]) -> Request:
    return gemini.parse_request(json.dumps(body).encode())


def test_a_request_is_read_into_the_normalized_model() -> None:
    request = parse(BODY)
    assert request.system == "Be brief."
    assert (request.max_tokens, request.temperature, request.top_p) == (300, 0.3, 0.9)
    assert request.stop == ["END"] and request.tool_choice == "required"
    assert request.tools[0].parameters["properties"]["city"]["type"] == "string"  # JSON Schema
    user, model, tool = request.messages
    assert user.content == [TextPart("Weather in Paris?")]
    assert model.role == "assistant"
    assert model.content[0] == ThinkingPart("Looking it up.", SIGNATURE)
    call = model.content[1]
    assert isinstance(call, ToolCallPart) and json.loads(call.arguments) == {"city": "Paris"}
    assert tool.role == "tool"
    assert tool.content == [ToolResultPart(call.id, "sun")]  # matched to the call by name
    assert request.front_options[gemini.HINTS]["thinkingConfig"]["thinkingBudget"] == 512


def test_a_gemini_request_goes_back_to_gemini_unchanged_in_meaning() -> None:
    again = json.loads(gemini.encode_request(parse(BODY), "gemini-2.5-flash", stream=True))
    assert again["contents"][1]["parts"][0] == BODY["contents"][1]["parts"][0]
    assert again["contents"][1]["parts"][1]["functionCall"]["args"] == {"city": "Paris"}
    assert again["contents"][2]["parts"][0]["functionResponse"]["response"] == {"result": "sun"}
    config = again["generationConfig"]
    assert config["thinkingConfig"] == {"thinkingBudget": 512, "includeThoughts": True}
    assert config["stopSequences"] == ["END"] and config["maxOutputTokens"] == 300
    assert again["safetySettings"] == BODY["safetySettings"]
    assert again["toolConfig"] == {"functionCallingConfig": {"mode": "ANY"}}


def test_a_gemini_request_reaches_anthropic_and_openai() -> None:
    body = {k: v for k, v in BODY.items() if k not in ("safetySettings", "generationConfig")}
    body["contents"] = json.loads(json.dumps(BODY["contents"]))
    del body["contents"][1]["parts"][0]  # a thought: only the model that thought takes it back
    request = parse(body)
    claude = json.loads(anthropic.encode_request(request, "claude-sonnet-5-5", stream=True))
    assert claude["messages"][1]["content"][0]["type"] == "tool_use"
    assert claude["messages"][2]["content"][0]["type"] == "tool_result"
    gpt = json.loads(openai.encode_request(request, "gpt-5.5", stream=True))
    assert gpt["messages"][-1]["role"] == "tool"


def test_thinking_is_a_hint_and_structured_output_is_refused_elsewhere() -> None:
    """Gemini CLI asks for thinking on every call: another model answers without it. A response
    schema changes what the answer is, so another model refuses it, naming the field."""
    thinking = parse(
        {
            "contents": [{"parts": [{"text": "hi"}]}],
            "generationConfig": {"thinkingConfig": {"includeThoughts": True}, "candidateCount": 1},
        }
    )
    claude = json.loads(anthropic.encode_request(thinking, "claude-sonnet-5-5", stream=True))
    assert "thinking" not in claude
    schema = parse(
        {
            "contents": [{"parts": [{"text": "hi"}]}],
            "generationConfig": {"responseMimeType": "application/json", "topK": 3},
        }
    )
    with pytest.raises(Untranslatable) as caught:
        anthropic.encode_request(schema, "claude-sonnet-5-5", stream=True)
    assert "generationConfig.responseMimeType" in caught.value.message
    again = json.loads(gemini.encode_request(schema, "gemini-2.5-flash", stream=True))
    assert again["generationConfig"] == {"responseMimeType": "application/json", "topK": 3}


def test_other_dialects_translate_to_gemini() -> None:
    body = {
        "model": "x",
        "max_tokens": 100,
        "thinking": {"type": "enabled", "budget_tokens": 2048},
        "messages": [
            {"role": "user", "content": "hi"},
            {
                "role": "assistant",
                "content": [{"type": "tool_use", "id": "toolu_1", "name": "f", "input": {"a": 1}}],
            },
            {
                "role": "user",
                "content": [{"type": "tool_result", "tool_use_id": "toolu_1", "content": "ok"}],
            },
        ],
        "tools": [{"name": "f", "input_schema": {"type": "object"}}],
    }
    request = anthropic.parse_request(json.dumps(body).encode())
    out = json.loads(gemini.encode_request(request, "gemini-2.5-pro", stream=True))
    assert out["generationConfig"]["thinkingConfig"] == {
        "thinkingBudget": 2048,
        "includeThoughts": True,
    }
    assert out["contents"][1]["parts"][0]["functionCall"] == {
        "name": "f",
        "args": {"a": 1},
        "id": "toolu_1",
    }
    answer = out["contents"][2]["parts"][0]["functionResponse"]
    assert answer["name"] == "f" and answer["response"] == {"result": "ok"}
    oa = openai.parse_request(
        json.dumps(
            {
                "model": "x",
                "messages": [{"role": "user", "content": "hi"}],
                "reasoning_effort": "high",
                "response_format": {
                    "type": "json_schema",
                    "json_schema": {"name": "a", "schema": {"a": 1}},
                },
            }
        ).encode()
    )
    config = json.loads(gemini.encode_request(oa, "gemini-2.5-pro", stream=True))[
        "generationConfig"
    ]
    assert config["thinkingConfig"]["thinkingBudget"] == 16384
    assert config["responseMimeType"] == "application/json"
    assert config["responseJsonSchema"] == {"a": 1}


def test_what_gemini_cannot_carry_is_refused_by_name() -> None:
    oa = openai.parse_request(
        json.dumps(
            {"model": "x", "messages": [{"role": "user", "content": "hi"}], "logprobs": True}
        ).encode()
    )
    with pytest.raises(Untranslatable) as caught:
        gemini.encode_request(oa, "gemini-2.5-pro", stream=True)
    assert caught.value.param == "logprobs"
    mid = Request(
        dialect="openai",
        model="x",
        messages=[Message("user", [TextPart("a")]), Message("system", [TextPart("b")])],
    )
    with pytest.raises(Untranslatable, match="system message"):
        gemini.encode_request(mid, "gemini-2.5-pro", stream=True)
    with pytest.raises(Untranslatable) as hosted:
        parse({"contents": [{"parts": [{"text": "hi"}]}], "tools": [{"googleSearch": {}}]})
    assert hosted.value.param == "tools[0].googleSearch"


def test_bad_requests_are_400s_naming_the_field() -> None:
    for body, param in (
        ({}, "contents"),
        ({"contents": [{"parts": [{"text": "x"}]}], "bogus": 1}, "bogus"),
        (
            {"contents": [{"parts": [{"text": "x"}]}], "generationConfig": {"maxOutputTokens": 0}},
            "generationConfig.maxOutputTokens",
        ),
    ):
        with pytest.raises(GatewayError) as caught:
            parse(body)
        assert caught.value.status == 400 and caught.value.param == param


def test_the_path_names_the_model_and_the_method() -> None:
    assert gemini.parse_call("/v1beta/models/gemini-2.5-flash:streamGenerateContent") == (
        "gemini-2.5-flash",
        True,
    )
    assert gemini.parse_call("/v1beta/models/agent:generateContent") == ("agent", False)
    assert gemini.parse_call("/v1beta/models/agent:countTokens") is None


def roundtrip(events: list[Event], *, split: int = 7) -> list[Event]:
    """Events through the writer, the wire cut in small pieces, and back through the reader."""
    writer = gemini.stream_writer(
        Request(dialect="gemini", model="m", messages=[]), id="r", model="m"
    )
    wire = b"".join(writer.write(event) for event in events) + writer.close()
    parser, reader = SSEParser(), gemini.stream_reader()
    out: list[Event] = []
    for start in range(0, len(wire), split):
        for sse in parser.feed(wire[start : start + split]):
            out.extend(reader.feed(sse))
    assert reader.done
    return out


def test_a_stream_round_trips_text_thinking_tool_calls_and_usage() -> None:
    events: list[Event] = [
        ThinkingDelta("hmm "),
        ThinkingDelta("", SIGNATURE),
        TextDelta("Hél"),
        TextDelta("lo"),
        ToolCallDelta(0, "call_0", "get_weather", '{"ci', signature="fc_sig"),
        ToolCallDelta(0, arguments='ty": "Paris"}'),
        Usage(20, 15, cache_read_tokens=5, reasoning_tokens=4),
        Finish("tool_calls"),
    ]
    out = roundtrip(events)
    assert out[:4] == [
        ThinkingDelta("hmm "),
        ThinkingDelta("", SIGNATURE),
        TextDelta("Hél"),
        TextDelta("lo"),
    ]
    call = out[4]
    assert isinstance(call, ToolCallDelta) and call.name == "get_weather"
    assert json.loads(call.arguments) == {"city": "Paris"} and call.signature == "fc_sig"
    assert out[-2] == Usage(20, 15, cache_read_tokens=5, reasoning_tokens=4, model="m")
    assert out[-1] == Finish("tool_calls")


def test_usage_counts_thoughts_as_output() -> None:
    reader = gemini.stream_reader()
    chunk = {
        "candidates": [{"content": {"parts": [{"text": "hi"}]}, "finishReason": "STOP"}],
        "usageMetadata": {
            "promptTokenCount": 100,
            "candidatesTokenCount": 10,
            "thoughtsTokenCount": 30,
            "cachedContentTokenCount": 60,
        },
        "modelVersion": "gemini-2.5-pro",
    }
    events = reader.chunk(chunk)
    assert events == [
        TextDelta("hi"),
        Usage(100, 40, cache_read_tokens=60, reasoning_tokens=30, model="gemini-2.5-pro"),
        Finish("stop"),
    ]


@pytest.mark.parametrize(
    ("reason", "finish"),
    [
        ("STOP", "stop"),
        ("MAX_TOKENS", "length"),
        ("SAFETY", "content_filter"),
        ("RECITATION", "content_filter"),
        ("PROHIBITED_CONTENT", "content_filter"),
        ("BLOCKLIST", "content_filter"),
        ("SPII", "content_filter"),
    ],
)
def test_finish_reasons(reason: str, finish: str) -> None:
    events = gemini.stream_reader().chunk({"candidates": [{"finishReason": reason}]})
    assert events == [Finish(finish)]  # type: ignore[arg-type]


def test_a_blocked_prompt_is_an_error_before_any_content() -> None:
    reader = gemini.stream_reader()
    events = reader.chunk({"promptFeedback": {"blockReason": "SAFETY"}})
    assert reader.done
    assert len(events) == 1 and isinstance(events[0], Error)
    assert events[0].status == 400 and "SAFETY" in events[0].message


def google_error(code: int, status: str, **extra: Any) -> bytes:
    return json.dumps(
        {"error": {"code": code, "message": "nope", "status": status, **extra}}
    ).encode()


def test_errors_are_classified_for_failover() -> None:
    retry = [{"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "7s"}]
    limited = gemini.parse_error(429, google_error(429, "RESOURCE_EXHAUSTED", details=retry), {})
    assert (limited.type, limited.status, limited.retry_after) == ("rate_limit", 429, 7.0)
    header = gemini.parse_error(429, google_error(429, "RESOURCE_EXHAUSTED"), {"retry-after": "3"})
    assert header.retry_after == 3.0
    bad = gemini.parse_error(400, google_error(400, "INVALID_ARGUMENT"), {})
    assert (bad.type, bad.status) == ("invalid_request", 400)
    down = gemini.parse_error(503, google_error(503, "UNAVAILABLE"), {})
    assert (down.type, down.status) == ("overloaded", 503)
    html = gemini.parse_error(502, b"<html>bad gateway</html>", {})
    assert html.status == 502 and html.type == "api_error"


def test_an_error_is_written_in_googles_shape() -> None:
    body = json.loads(gemini.encode_error(GatewayError("rate_limit", "slow down", retry_after=2)))
    assert body["error"]["code"] == 429 and body["error"]["status"] == "RESOURCE_EXHAUSTED"
    assert body["error"]["details"][0]["retryDelay"] == "2s"
    assert gemini.parse_error(
        429, gemini.encode_error(GatewayError("rate_limit", "x")), {}
    ).type == ("rate_limit")


def test_a_whole_response_round_trips() -> None:
    completion = Completion(
        text="Sunny.",
        thinking="Let me see.",
        thinking_signature=SIGNATURE,
        tool_calls=[ToolCall("call_0", "get_weather", '{"city":"Paris"}', signature="s2")],
        usage=Usage(10, 8, reasoning_tokens=3),
        finish=Finish("tool_calls"),
    )
    body = gemini.encode_response(completion, id="r", model="gemini-2.5-flash")
    back = gemini.parse_response(body)
    assert (back.text, back.thinking, back.thinking_signature) == (
        "Sunny.",
        "Let me see.",
        SIGNATURE,
    )
    assert back.tool_calls[0].signature == "s2"
    assert back.usage == Usage(10, 8, reasoning_tokens=3, model="gemini-2.5-flash")
    assert back.finish == Finish("tool_calls")


def test_tools_are_declared_as_json_schema() -> None:
    request = Request(
        dialect="openai",
        model="x",
        messages=[Message("user", [TextPart("hi")])],
        tools=[Tool("f", "does f", {"type": "object", "properties": {}})],
        tool_choice="f",
    )
    out = json.loads(gemini.encode_request(request, "gemini-2.5-flash", stream=True))
    assert out["tools"][0]["functionDeclarations"][0]["parametersJsonSchema"]["type"] == "object"
    assert out["toolConfig"]["functionCallingConfig"] == {
        "mode": "ANY",
        "allowedFunctionNames": ["f"],
    }

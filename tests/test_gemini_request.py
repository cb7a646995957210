"""The Gemini request side in detail: each validation error (a 400 naming the field), each part
type both ways, tool configs, generationConfig, other dialects' requests encoded for Gemini and
the refusals (``Untranslatable``) naming what Gemini cannot carry."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tokenrelay.dialects import anthropic, gemini, openai, responses
from tokenrelay.model import (
    GatewayError,
    ImagePart,
    Message,
    OpaquePart,
    Request,
    TextPart,
    ThinkingPart,
    Tool,
    ToolCallPart,
    ToolResultPart,
    Untranslatable,
)

SIG = "CvcBsig"
USER = {"role": "user", "parts": [{"text": "hi"}]}


def parse(body: Any) -> Request:
    return gemini.parse_request(json.dumps(body).encode())


def encode(request: Request) -> dict[str, Any]:
    out: dict[str, Any] = json.loads(gemini.encode_request(request, "gemini-2.5-pro", stream=False))
    return out


def normalized(messages: list[Message], dialect: str = "openai", **kw: Any) -> Request:
    return Request(dialect=dialect, model="m", messages=messages, **kw)


def test_parse_call_reads_model_and_method() -> None:
    assert gemini.parse_call("/v1beta/models/gemini-2.5-pro:generateContent") == (
        "gemini-2.5-pro",
        False,
    )
    assert gemini.parse_call("/v1beta/models/g:streamGenerateContent") == ("g", True)
    assert gemini.parse_call("/v1beta/models/g:countTokens") is None
    assert gemini.parse_call("/v1beta/models/g") is None


def ok(**fields: Any) -> dict[str, Any]:
    return {"contents": [USER], **fields}


def cfg(**fields: Any) -> dict[str, Any]:
    return ok(generationConfig=fields)


GC = "generationConfig."
PART = "contents[0].parts[0]"


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ([1], None),
        (ok(bogus=1), "bogus"),
        ({}, "contents"),
        ({"contents": []}, "contents"),
        (ok(generationConfig=[1]), "generationConfig"),
        (cfg(stopSequences="x"), GC + "stopSequences"),
        (cfg(stopSequences=[1]), GC + "stopSequences"),
        (cfg(maxOutputTokens=0), GC + "maxOutputTokens"),
        (cfg(maxOutputTokens="9"), GC + "maxOutputTokens"),
        (cfg(temperature="hot"), GC + "temperature"),
        (cfg(topP=True), GC + "topP"),
        (ok(systemInstruction=3), "systemInstruction"),
        (ok(systemInstruction={"parts": "x"}), "systemInstruction"),
        (ok(systemInstruction={"parts": [{"inlineData": {}}]}), "systemInstruction"),
        ({"contents": ["x"]}, "contents[0]"),
        ({"contents": [{"role": "user"}]}, "contents[0]"),
        ({"contents": [{"role": "system", "parts": []}]}, "contents[0].role"),
        ({"contents": [{"parts": ["x"]}]}, PART),
        ({"contents": [{"parts": [{"functionCall": {"name": "f"}}]}]}, PART),
        ({"contents": [{"role": "model", "parts": [{"functionCall": {}}]}]}, PART),
        ({"contents": [{"parts": [{"functionResponse": {}}]}]}, PART),
        ({"contents": [{"parts": [{"functionResponse": {"name": "f"}}]}]}, PART),
        ({"contents": [{"parts": [{"text": 5}]}]}, PART),
        (ok(tools={}), "tools"),
        (ok(tools=["x"]), "tools[0]"),
        (ok(tools=[{"functionDeclarations": [{}]}]), "tools[0].functionDeclarations[0]"),
        (ok(toolConfig="ANY"), "toolConfig"),
        (ok(toolConfig={"mode": "ANY"}), "toolConfig"),
    ],
)
def test_invalid_requests_are_400s_naming_the_field(body: Any, param: str | None) -> None:
    with pytest.raises(GatewayError) as caught:
        parse(body)
    assert caught.value.status == 400
    assert caught.value.param == param
    assert not isinstance(caught.value, Untranslatable)


def test_a_built_in_gemini_tool_is_untranslatable() -> None:
    with pytest.raises(Untranslatable) as caught:
        parse({"contents": [USER], "tools": [{"googleSearch": {}}]})
    assert caught.value.param == "tools[0].googleSearch"


def test_every_part_type_is_read() -> None:
    jpeg = {"inlineData": {"mimeType": "image/jpeg", "data": "AAA"}}
    audio_blob = {"mimeType": "audio/wav", "data": "BB"}
    model_parts = [
        {"thought": True, "text": "hmm", "thoughtSignature": SIG},
        {"text": "signed answer", "thoughtSignature": "S2"},
        {"thoughtSignature": "S3"},
        {"functionCall": {"id": "fc-1", "name": "f", "args": {"a": 1}}},
        {"functionCall": {"name": "g"}, "thoughtSignature": "S4"},
    ]
    answers = [
        {"functionResponse": {"name": "g", "response": {"error": "boom"}}},
        {"functionResponse": {"id": "fc-1", "name": "f", "response": {"a": 1, "b": 2}}},
    ]
    request = parse(
        {
            "model": "models/gemini-2.5-pro",
            "systemInstruction": "plain system",
            "contents": [
                {"parts": [{"text": "look"}, jpeg]},
                {"role": "user", "parts": [{"inlineData": audio_blob}]},
                {"role": "model", "parts": model_parts},
                {"role": "function", "parts": answers},
            ],
        }
    )
    assert request.model == "gemini-2.5-pro"
    assert request.system == "plain system"
    first, audio, model, tool = request.messages
    assert first.content == [TextPart("look"), ImagePart(data="AAA", media_type="image/jpeg")]
    assert audio.content == [OpaquePart("gemini", {"type": "inlineData", "inlineData": audio_blob})]
    assert model.role == "assistant"
    assert model.content == [
        ThinkingPart("hmm", SIG),
        ThinkingPart("", "S2"),
        TextPart("signed answer"),
        ThinkingPart("", "S3"),
        ToolCallPart("fc-1", "f", '{"a":1}'),
        ToolCallPart("call_2_4", "g", "{}", signature="S4"),
    ]
    assert tool.role == "tool"
    assert tool.content == [
        ToolResultPart("call_2_4", "boom", True),
        ToolResultPart("fc-1", '{"a":1,"b":2}', False),
    ]


def test_tools_schema_is_lowered_to_json_schema() -> None:
    schema = {
        "type": "OBJECT",
        "properties": {"xs": {"type": "ARRAY", "items": {"type": "STRING"}}},
        "anyOf": [{"type": "NULL"}],
        "required": ["xs"],
    }
    request = parse(
        {
            "contents": [USER],
            "tools": [
                {"functionDeclarations": [{"name": "a", "parameters": schema}, {"name": "b"}]},
                {
                    "functionDeclarations": [
                        {"name": "c", "parametersJsonSchema": {"type": "object"}}
                    ]
                },
            ],
        }
    )
    a, b, c = request.tools
    assert a.parameters == {
        "type": "object",
        "properties": {"xs": {"type": "array", "items": {"type": "string"}}},
        "anyOf": [{"type": "null"}],
        "required": ["xs"],
    }
    assert b.parameters == {"type": "object", "properties": {}}
    assert c.parameters == {"type": "object"}


@pytest.mark.parametrize(
    ("config", "choice", "kept"),
    [
        ({"mode": "AUTO"}, "auto", False),
        ({"mode": "none"}, "none", False),
        ({"mode": "ANY"}, "required", False),
        ({}, "auto", False),
        ({"mode": "VALIDATED"}, "auto", False),
        ({"mode": "ANY", "allowedFunctionNames": ["f"]}, "f", False),
        ({"mode": "ANY", "allowedFunctionNames": ["f", "g"]}, "required", True),
    ],
)
def test_tool_config_modes(config: dict[str, Any], choice: str, kept: bool) -> None:
    body = {"contents": [USER], "toolConfig": {"functionCallingConfig": config}}
    request = parse(body)
    assert request.tool_choice == choice
    assert ("toolConfig" in request.extra) is kept
    again = encode(request)["toolConfig"]["functionCallingConfig"]
    if kept:
        assert again == config  # the subset goes back verbatim
    elif choice == "f":
        assert again == {"mode": "ANY", "allowedFunctionNames": ["f"]}
    else:
        assert again["mode"] == {"auto": "AUTO", "none": "NONE", "required": "ANY"}[choice]


def test_generation_config_round_trips_hints_and_unmodelled_fields() -> None:
    config = {
        "maxOutputTokens": 50,
        "temperature": 1,
        "stopSequences": ["x"],
        "thinkingConfig": {"thinkingBudget": 0},
        "responseMimeType": "application/json",
        "responseSchema": {"type": "OBJECT"},
        "seed": 7,
    }
    body = {"contents": [USER], "generationConfig": config, "safetySettings": [{"c": 1}]}
    request = parse(body)
    assert request.temperature == 1.0 and request.max_tokens == 50 and request.stop == ["x"]
    assert request.front_options[gemini.HINTS]["thinkingConfig"] == {"thinkingBudget": 0}
    assert request.extra[gemini.CONFIG + "responseSchema"] == {"type": "OBJECT"}
    out = encode(request)
    assert out["generationConfig"] == config
    assert out["safetySettings"] == [{"c": 1}]


def test_gemini_parts_are_written_back() -> None:
    messages = [
        Message("user", [TextPart("a"), ImagePart(data="QQ", media_type=None)]),
        Message(
            "assistant",
            [
                ThinkingPart("t", SIG),
                ThinkingPart("", "S2"),
                TextPart("ans"),
                ToolCallPart("call_1", "f", ""),
                ToolCallPart("toolu_9", "g", '{"x":1}', signature="S3"),
                ThinkingPart("", "tail"),
            ],
        ),
        Message("tool", [ToolResultPart("call_1", "ok")]),
        Message("tool", [ToolResultPart("toolu_9", "bad", is_error=True)]),
        Message("user", [OpaquePart("gemini", {"type": "fileData", "fileData": {"fileUri": "u"}})]),
        Message("user", []),
    ]
    out = encode(normalized(messages, dialect="gemini", system="sys"))
    assert out["systemInstruction"] == {"parts": [{"text": "sys"}]}
    user, model, answers, opaque = out["contents"]
    assert user["parts"][1] == {"inlineData": {"mimeType": "image/png", "data": "QQ"}}
    assert model == {
        "role": "model",
        "parts": [
            {"text": "t", "thought": True, "thoughtSignature": SIG},
            {"text": "ans", "thoughtSignature": "S2"},
            {"functionCall": {"name": "f", "args": {}}},
            {
                "functionCall": {"name": "g", "args": {"x": 1}, "id": "toolu_9"},
                "thoughtSignature": "S3",
            },
            {"text": "", "thoughtSignature": "tail"},
        ],
    }
    assert answers == {
        "role": "user",
        "parts": [
            {"functionResponse": {"name": "f", "response": {"result": "ok"}}},
            {"functionResponse": {"name": "g", "response": {"error": "bad"}, "id": "toolu_9"}},
        ],
    }
    assert opaque["parts"] == [{"fileData": {"fileUri": "u"}}]


@pytest.mark.parametrize(
    ("message", "param"),
    [
        (Message("system", [TextPart("x")]), "messages[0]"),
        (Message("tool", [ToolResultPart("nobody", "x")]), "messages[0]"),
        (Message("user", [ImagePart(url="https://x/y.png")]), "messages[0].content"),
        (Message("user", [OpaquePart("anthropic", {"type": "document"})]), "messages[0].content"),
        (Message("assistant", [ToolCallPart("c", "f", "{not json")]), "messages[0]"),
        (Message("user", [TextPart("x")], extra={"cache": 1}), "messages[0].cache"),
    ],
)
def test_messages_gemini_cannot_carry_are_refused(message: Message, param: str) -> None:
    with pytest.raises(Untranslatable) as caught:
        encode(normalized([message]))
    assert caught.value.param == param


def test_too_many_stops_and_foreign_tool_fields_are_refused() -> None:
    hi = [Message("user", [TextPart("hi")])]
    with pytest.raises(Untranslatable) as caught:
        encode(normalized(hi, stop=list("abcdef")))
    assert caught.value.param == "stop"
    tool = Tool("f", None, {"type": "object"}, extra={"strict_mode": True})
    with pytest.raises(Untranslatable) as caught:
        encode(normalized(hi, tools=[tool]))
    assert caught.value.param == "tools[0].strict_mode"


def test_openai_request_with_image_tools_and_json_schema() -> None:
    image = {"type": "image_url", "image_url": {"url": "data:image/webp;base64,UklG"}}
    call = {"id": "call_a", "type": "function", "function": {"name": "f", "arguments": "{}"}}
    declared = {"name": "f", "description": "d", "parameters": {"type": "object"}}
    schema = {"name": "s", "schema": {"type": "object"}}
    body = {
        "model": "gpt",
        "messages": [
            {"role": "system", "content": "sys"},
            {"role": "user", "content": [image]},
            {"role": "assistant", "tool_calls": [call]},
            {"role": "tool", "tool_call_id": "call_a", "content": "done"},
        ],
        "tools": [{"type": "function", "function": declared}],
        "tool_choice": {"type": "function", "function": {"name": "f"}},
        "reasoning_effort": "low",
        "response_format": {"type": "json_schema", "json_schema": schema},
        "max_completion_tokens": 20,
        "top_p": 0.5,
        "n": 1,
        "store": True,
    }
    out = encode(openai.parse_request(json.dumps(body).encode()))
    assert out["systemInstruction"] == {"parts": [{"text": "sys"}]}
    assert out["contents"][0]["parts"] == [
        {"inlineData": {"mimeType": "image/webp", "data": "UklG"}}
    ]
    answer = out["contents"][2]["parts"][0]["functionResponse"]
    assert answer == {"name": "f", "response": {"result": "done"}}
    declaration = {"name": "f", "description": "d", "parametersJsonSchema": {"type": "object"}}
    assert out["tools"] == [{"functionDeclarations": [declaration]}]
    calling = {"mode": "ANY", "allowedFunctionNames": ["f"]}
    assert out["toolConfig"] == {"functionCallingConfig": calling}
    assert out["generationConfig"] == {
        "maxOutputTokens": 20,
        "topP": 0.5,
        "thinkingConfig": {"thinkingBudget": 2048, "includeThoughts": True},
        "responseMimeType": "application/json",
        "responseJsonSchema": {"type": "object"},
    }


def test_anthropic_request_with_signed_thinking_and_tool_use() -> None:
    source = {"type": "base64", "media_type": "image/gif", "data": "R0lG"}
    use = {"type": "tool_use", "id": "toolu_1", "name": "f", "input": {"q": 1}}
    result = {"type": "tool_result", "tool_use_id": "toolu_1", "content": "r", "is_error": True}
    thinking = {"type": "thinking", "thinking": "plan", "signature": SIG}
    body = {
        "model": "claude",
        "max_tokens": 100,
        "thinking": {"type": "enabled", "budget_tokens": 4000},
        "tool_choice": {"type": "auto", "disable_parallel_tool_use": True},
        "messages": [
            {"role": "user", "content": [{"type": "image", "source": source}]},
            {"role": "assistant", "content": [thinking, use]},
            {"role": "user", "content": [result]},
        ],
    }
    out = encode(anthropic.parse_request(json.dumps(body).encode()))
    assert out["contents"][0]["parts"] == [
        {"inlineData": {"mimeType": "image/gif", "data": "R0lG"}}
    ]
    assert out["contents"][1]["parts"] == [
        {"text": "plan", "thought": True, "thoughtSignature": SIG},
        {"functionCall": {"name": "f", "args": {"q": 1}, "id": "toolu_1"}},
    ]
    answer = out["contents"][2]["parts"][0]["functionResponse"]
    assert answer == {"name": "f", "response": {"error": "r"}, "id": "toolu_1"}
    thinking_config = out["generationConfig"]["thinkingConfig"]
    assert thinking_config == {"thinkingBudget": 4000, "includeThoughts": True}


def test_responses_request_reasoning_and_text_format() -> None:
    body = {
        "model": "gpt",
        "input": "hi",
        "reasoning": {"effort": "high"},
        "text": {"format": {"type": "json_object"}},
    }
    out = encode(responses.parse_request(json.dumps(body).encode()))
    config = out["generationConfig"]
    assert config["thinkingConfig"] == {"thinkingBudget": 16384, "includeThoughts": True}
    assert config["responseMimeType"] == "application/json"
    assert "responseJsonSchema" not in config


@pytest.mark.parametrize(
    ("extra", "config"),
    [
        (
            {"thinking": {"type": "adaptive"}},
            {"thinkingConfig": {"thinkingBudget": -1, "includeThoughts": True}},
        ),
        ({"thinking": {"type": "disabled"}}, None),
        ({"reasoning": {"effort": "none"}}, None),
        ({"reasoning_effort": None}, None),
        ({"tool_choice": {"type": "any"}}, None),
        ({"n": 1}, None),
        ({"response_format": {"type": "text"}}, None),
        ({"response_format": None}, None),
        ({"output_config": {}}, None),
        ({"text": {"verbosity": "low"}}, None),
        (
            {"output_config": {"format": {"type": "json_schema", "schema": {"type": "object"}}}},
            {"responseMimeType": "application/json", "responseJsonSchema": {"type": "object"}},
        ),
        (
            {"response_format": {"type": "json_schema", "json_schema": {"name": "x"}}},
            {"responseMimeType": "application/json"},
        ),
    ],
)
def test_foreign_extras_gemini_can_carry(extra: dict[str, Any], config: Any) -> None:
    request = normalized([Message("user", [TextPart("hi")])], extra=extra)
    assert encode(request).get("generationConfig") == config


@pytest.mark.parametrize(
    ("extra", "param"),
    [
        ({"thinking": {"type": "weird"}}, "thinking"),
        ({"reasoning_effort": "max"}, "reasoning_effort"),
        ({"tool_choice": {"type": "tool", "name": "f", "cache": 1}}, "tool_choice"),
        ({"n": 3}, "n"),
        ({"response_format": "json"}, "response_format"),
        ({"response_format": {"type": "grammar"}}, "response_format"),
        ({"output_config": {"effort": "high"}}, "output_config"),
        ({"text": {"format": "json"}}, "text"),
        ({"logit_bias": {"1": 2}, "seed": 3}, "logit_bias"),
    ],
)
def test_foreign_extras_gemini_cannot_carry_are_refused(extra: dict[str, Any], param: str) -> None:
    request = normalized([Message("user", [TextPart("hi")])], extra=extra)
    with pytest.raises(Untranslatable) as caught:
        encode(request)
    assert caught.value.param == param
    assert repr(param) in str(caught.value)

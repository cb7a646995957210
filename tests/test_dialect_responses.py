"""The OpenAI Responses API as a dialect: validation, translation both ways, the stream writer's
bytes against fixtures recorded from the simulator, and every event checked against the
``openai`` SDK's own models (strictly: a field the SDK does not know fails the test)."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import msgspec
import pydantic
import pytest
from openai.types.responses import Response, ResponseStreamEvent

from tokenrelay.dialects import anthropic, responses
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
    ToolCall,
    ToolCallDelta,
    ToolCallPart,
    ToolResultPart,
    Untranslatable,
    Usage,
)
from tokenrelay.simulator import RunningSimulator, SimulatorSettings, start

DATA = Path(__file__).parent / "data" / "responses"
RECORD = os.environ.get("TOKENRELAY_RECORD_FIXTURES") == "1"  # rewrite the fixtures from the sim
TERMINAL = ("response.completed", "response.incomplete", "response.failed")

_EVENTS: pydantic.TypeAdapter[Any] = pydantic.TypeAdapter(ResponseStreamEvent)

SCHEMA = {"type": "object", "properties": {"city": {"type": "string"}}}
FUNCTION = {"type": "function", "name": "get_weather", "parameters": SCHEMA, "strict": True}
PATCH = {
    "type": "custom",
    "name": "apply_patch",
    "description": "Edit files.",
    "format": {"type": "grammar", "syntax": "lark", "definition": 'start: "*** Begin Patch"'},
}


def body(**fields: Any) -> bytes:
    return msgspec.json.encode({"model": "gpt-5.5", "input": "Weather in Paris?", **fields})


def parsed(**fields: Any) -> Request:
    return responses.parse_request(body(**fields))


# --- the SDK's models, strictly ------------------------------------------------------------------


def _no_unknown_fields(value: Any, where: str) -> None:
    """The SDK's models accept unknown fields; a field it does not know is a typo here."""
    if isinstance(value, pydantic.BaseModel):
        assert not value.model_extra, f"{where}: fields the SDK does not know: {value.model_extra}"
        for name in type(value).model_fields:
            _no_unknown_fields(getattr(value, name), f"{where}.{name}")
    elif isinstance(value, list):
        for i, item in enumerate(value):
            _no_unknown_fields(item, f"{where}[{i}]")


def sdk_event(data: dict[str, Any]) -> Any:
    event = _EVENTS.validate_python(data)
    _no_unknown_fields(event, data["type"])
    return event


def sdk_response(data: dict[str, Any]) -> Response:
    response = Response.model_validate(data)
    _no_unknown_fields(response, "response")
    return response


def check_stream(raw: bytes) -> list[dict[str, Any]]:
    """Every event of a Responses stream: SSE ``event:`` equal to its ``type``, valid to the SDK,
    sequence numbers 0, 1, 2, ..., and exactly one terminal event, the last."""
    events = []
    for sse in SSEParser().feed(raw):
        data = msgspec.json.decode(sse.data)
        assert sse.event == data["type"]
        sdk_event(data)
        events.append(data)
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    assert events[0]["type"] == "response.created" and events[1]["type"] == "response.in_progress"
    assert [e["type"] in TERMINAL for e in events].count(True) == 1
    assert events[-1]["type"] in TERMINAL
    return events


def write(events: list[Event], request: Request | None = None) -> bytes:
    writer = responses.stream_writer(request or parsed(), id="resp_t1", model="gpt-5.5")
    return b"".join(writer.write(event) for event in events) + writer.close() + writer.close()


def read(raw: bytes) -> Completion:
    reader = responses.stream_reader()
    accumulator = Accumulator()
    for sse in SSEParser().feed(raw):
        for event in reader.feed(sse):
            accumulator.add(event)
    assert reader.done
    return accumulator.result()


# --- requests ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "param", "words"),
    [
        (b"[]", None, "JSON object"),
        (b'{"input": "x"}', "model", "required"),
        (body(input=[]), "input", "non-empty"),
        (body(input=[{"type": "bogus"}]), "input[0].type", "unknown input item type 'bogus'"),
        (body(input=[{"role": "robot", "content": "x"}]), "input[0].role", "'robot'"),
        (
            body(input=[{"type": "function_call_output", "call_id": "call_9", "output": "x"}]),
            "input[0].call_id",
            "no function_call",
        ),
        (
            body(input=[{"role": "user", "content": [{"type": "input_file", "file_id": "f"}]}]),
            "input[0].content[0].type",
            "input_file",
        ),
        (
            body(text={"format": {"type": "json_schema", "name": "w", "schema": "nope"}}),
            "text.format.schema",
            "JSON Schema",
        ),
        (
            body(text={"format": {"type": "json_schema", "name": "a b", "schema": {}}}),
            "text.format.name",
            "64",
        ),
        (body(text={"format": {"type": "xml"}}), "text.format.type", "json_schema"),
        (body(previous_response_id=3), "previous_response_id", "id of a stored response"),
        (body(background=True), "background", "not supported"),
        (body(tools=[{"name": "teleport"}]), "tools[0].type", "each tool needs a type"),
        (body(tools=[{**PATCH, "format": {"type": "grammar"}}]), "tools[0].format.syntax", "lark"),
        (body(max_output_tokens=0), "max_output_tokens", "positive"),
        (body(temperature=3), "temperature", "0 to 2"),
        (body(stream="yes"), "stream", "true or false"),
        (body(store="no"), "store", "true or false"),
        (body(tool_choice=3), "tool_choice", "'auto'"),
    ],
)
def test_bad_requests_are_400s_naming_the_field(raw: bytes, param: str | None, words: str) -> None:
    with pytest.raises(GatewayError) as raised:
        responses.parse_request(raw)
    error = raised.value
    assert (error.status, error.type, error.param) == (400, "invalid_request", param)
    assert words in error.message
    wire = msgspec.json.decode(responses.encode_error(error))["error"]
    assert wire == dict(message=error.message, type="invalid_request_error", param=param, code=None)


CONVERSATION: list[dict[str, Any]] = [
    {"role": "developer", "content": "Use tools."},
    {
        "type": "message",
        "role": "user",
        "content": [
            {"type": "input_text", "text": "Look:"},
            {"type": "input_image", "image_url": "data:image/png;base64,iVBO", "detail": "auto"},
        ],
    },
    {
        "type": "reasoning",
        "id": "rs_1",
        "summary": [{"type": "summary_text", "text": "hmm"}],
        "encrypted_content": "opaque",
    },
    {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "On it"}]},
    {"type": "function_call", "call_id": "c1", "name": "get_weather", "arguments": "{}"},
    {"type": "custom_tool_call", "call_id": "c2", "name": "apply_patch", "input": "*** Begin"},
    {"type": "function_call_output", "call_id": "c1", "output": "sunny"},
    {
        "type": "custom_tool_call_output",
        "call_id": "c2",
        "output": [{"type": "input_text", "text": "done"}],
    },
    {"role": "user", "content": "Thanks"},
]


def test_parses_a_conversation() -> None:
    request = parsed(
        input=CONVERSATION,
        instructions="Be brief.",
        max_output_tokens=50,
        temperature=0.5,
        tools=[FUNCTION, PATCH],
        tool_choice={"type": "function", "name": "get_weather"},
        stream=True,
        reasoning={"effort": "low", "summary": "auto"},
        store=False,
        include=["reasoning.encrypted_content"],
        prompt_cache_key="k",
        safety_identifier="u-1",
        top_logprobs=2,
    )
    assert request.system == "Be brief.\n\nUse tools."
    assert request.messages == [
        Message("user", [TextPart("Look:"), ImagePart(data="iVBO", media_type="image/png")]),
        Message(
            "assistant",
            [
                ThinkingPart("hmm", "opaque"),
                TextPart("On it"),
                ToolCallPart("c1", "get_weather", "{}"),
                ToolCallPart("c2", "apply_patch", '{"input":"*** Begin"}'),
            ],
        ),
        Message("tool", [ToolResultPart("c1", "sunny")]),
        Message("tool", [ToolResultPart("c2", "done")]),
        Message("user", [TextPart("Thanks")]),
    ]
    assert (request.max_tokens, request.temperature, request.tool_choice) == (
        50,
        0.5,
        "get_weather",
    )
    assert [tool.name for tool in request.tools] == ["get_weather", "apply_patch"]
    patch = request.tools[1]
    assert patch.parameters["required"] == ["input"]
    assert patch.description is not None and 'start: "*** Begin Patch"' in patch.description
    assert request.stream and request.metadata == {"user_id": "u-1"}
    # what only a Responses upstream understands: top_logprobs changes the answer
    assert request.extra == {"top_logprobs": 2}


def test_hosted_tools_unknown_fields_and_items_go_to_extra() -> None:
    search = {"type": "web_search"}
    request = parsed(
        tools=[FUNCTION, search],
        tool_choice={"type": "web_search"},
        input=[{"role": "user", "content": "hi"}, {"type": "web_search_call", "id": "ws_1"}],
        text={"format": {"type": "json_schema", "name": "w", "schema": SCHEMA}},
        client_metadata={"a": "b"},
        context_management=[{"type": "compaction"}],
    )
    assert set(request.extra) == {"tools", "tool_choice", "input", "text", "context_management"}
    assert [tool.name for tool in request.tools] == ["get_weather"]
    sent = msgspec.json.decode(responses.encode_request(request, "gpt-5.5", stream=True))
    assert sent["tools"] == [FUNCTION, search] and sent["input"][1]["type"] == "web_search_call"
    assert sent["client_metadata"] == {"a": "b"} and sent["text"]["format"]["name"] == "w"
    assert sent["context_management"] == [{"type": "compaction"}]
    with pytest.raises(GatewayError) as raised:
        anthropic.encode_request(request, "claude-sonnet-5-5", stream=True)
    assert raised.value.status == 400


def test_hints_reach_only_a_responses_upstream() -> None:
    request = parsed(
        input=CONVERSATION,
        tools=[FUNCTION, PATCH],
        reasoning={"effort": "low"},
        include=["reasoning.encrypted_content"],
        store=False,
        prompt_cache_key="k",
        parallel_tool_calls=False,
        text={"verbosity": "low"},
    )
    assert request.extra == {}
    sent = msgspec.json.decode(responses.encode_request(request, "gpt-5.5", stream=True))
    assert sent["reasoning"] == {"effort": "low"} and sent["prompt_cache_key"] == "k"
    assert sent["tools"] == [FUNCTION, PATCH] and sent["text"] == {"verbosity": "low"}
    # the input as sent (developer message, reasoning item, custom call and all), and no
    # instructions made of its developer message
    assert sent["input"] == CONVERSATION and "instructions" not in sent
    # to Anthropic: hints dropped, the custom tool a function of one string
    claude = msgspec.json.decode(anthropic.encode_request(request, "claude", stream=True))
    assert "reasoning" not in claude and "prompt_cache_key" not in claude
    assert claude["tools"][1]["input_schema"]["properties"] == {"input": {"type": "string"}}
    assert claude["messages"][1]["content"][-1] == {
        "type": "tool_use",
        "id": "c2",
        "name": "apply_patch",
        "input": {"input": "*** Begin"},
    }


def test_encodes_another_dialects_request() -> None:
    request = Request(
        dialect="anthropic",
        model="m",
        system="Be brief.",
        messages=[
            Message("user", [TextPart("Hi"), ImagePart(url="https://x/y.png")]),
            Message(
                "assistant",
                [ThinkingPart("t", "sig"), TextPart("ok"), ToolCallPart("c", "f", "{}")],
            ),
            Message("tool", [ToolResultPart("c", "bad", is_error=True)]),
        ],
        max_tokens=20,
        tools=[],
        tool_choice="required",
    )
    sent = msgspec.json.decode(responses.encode_request(request, "gpt-5.5", stream=True))
    assert sent["instructions"] == "Be brief." and sent["max_output_tokens"] == 20
    assert sent["store"] is False and sent["stream"] is True and sent["tool_choice"] == "required"
    assert [item.get("type") for item in sent["input"]] == [
        "message",
        "message",
        "function_call",
        "function_call_output",
    ]  # another API's thinking is not sent
    assert sent["input"][1]["content"] == [{"type": "output_text", "text": "ok"}]
    assert sent["input"][3]["output"] == "Error: bad"
    stopped = Request(dialect="openai", model="m", messages=[], stop=["END"])
    with pytest.raises(Untranslatable) as raised:
        responses.encode_request(stopped, "gpt-5.5", stream=True)
    assert raised.value.param == "stop"
    extra = Request(dialect="openai", model="m", messages=[], extra={"seed": 1})
    with pytest.raises(Untranslatable):
        responses.encode_request(extra, "gpt-5.5", stream=True)


# --- the stream, both ways -----------------------------------------------------------------------

EVERYTHING: list[Event] = [
    Usage(input_tokens=30, cache_read_tokens=10),
    ThinkingDelta("Let me"),
    ThinkingDelta(" think."),
    ThinkingDelta("", "sig_1"),
    TextDelta("Hello"),
    TextDelta(" world \u2603"),
    ToolCallDelta(0, "call_1", "get_weather"),
    ToolCallDelta(0, arguments='{"city":'),
    ToolCallDelta(0, arguments='"Paris"}'),
    ToolCallDelta(1, "call_2", "apply_patch", '{"input":"*** Begin'),
    ToolCallDelta(1, arguments=' Patch"}'),
    Usage(input_tokens=30, output_tokens=12, cache_read_tokens=10, reasoning_tokens=4),
    Finish("tool_calls"),
]


def test_writer_and_reader_round_trip_everything() -> None:
    raw = write(EVERYTHING, parsed(tools=[FUNCTION, PATCH]))
    events = check_stream(raw)
    kinds = [e["type"] for e in events]
    assert kinds[2:] == [
        "response.output_item.added",
        "response.reasoning_summary_part.added",
        "response.reasoning_summary_text.delta",
        "response.reasoning_summary_text.delta",
        "response.reasoning_summary_text.done",
        "response.reasoning_summary_part.done",
        "response.output_item.done",
        "response.output_item.added",
        "response.content_part.added",
        "response.output_text.delta",
        "response.output_text.delta",
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.output_item.added",
        "response.function_call_arguments.delta",
        "response.function_call_arguments.delta",
        "response.function_call_arguments.done",
        "response.output_item.done",
        "response.output_item.added",
        "response.custom_tool_call_input.delta",
        "response.custom_tool_call_input.done",
        "response.output_item.done",
        "response.completed",
    ]
    final = sdk_response(events[-1]["response"])
    assert final.status == "completed" and final.output_text == "Hello world \u2603"
    assert [item.type for item in final.output] == [
        "reasoning",
        "message",
        "function_call",
        "custom_tool_call",
    ]
    assert [item.id[:3] for item in final.output if item.id] == ["rs_", "msg", "fc_", "ctc"]
    assert final.usage is not None and final.usage.input_tokens_details.cached_tokens == 10
    assert final.usage.output_tokens_details.reasoning_tokens == 4
    assert final.usage.total_tokens == 42
    back = read(raw)
    assert (back.thinking, back.thinking_signature, back.text) == (
        "Let me think.",
        "sig_1",
        "Hello world \u2603",
    )
    assert back.tool_calls == [
        ToolCall("call_1", "get_weather", '{"city":"Paris"}'),
        ToolCall("call_2", "apply_patch", '{"input":"*** Begin Patch"}'),
    ]
    assert back.usage == Usage(30, 12, 10, 0, 4, model="gpt-5.5")
    assert back.finish == Finish("tool_calls")


@pytest.mark.parametrize(
    ("reason", "status", "detail"),
    [
        ("length", "incomplete", "max_output_tokens"),
        ("content_filter", "incomplete", "content_filter"),
    ],
)
def test_a_cut_answer_ends_incomplete(reason: Any, status: str, detail: str) -> None:
    events = check_stream(write([TextDelta("Hi"), Finish(reason)]))
    assert events[-1]["type"] == "response.incomplete"
    response = sdk_response(events[-1]["response"])
    assert response.status == status and response.incomplete_details is not None
    assert response.incomplete_details.reason == detail
    assert response.output[0].status == "incomplete"  # type: ignore[union-attr]
    assert read(write([TextDelta("Hi"), Finish(reason)])).finish == Finish(reason)


def test_an_error_after_the_first_token_is_response_failed() -> None:
    raw = write([TextDelta("Hi"), Error("overloaded", "upstream overloaded", 529)])
    events = check_stream(raw)
    assert events[-1]["type"] == "response.failed"
    response = sdk_response(events[-1]["response"])
    assert response.status == "failed" and response.error is not None
    assert (response.error.code, response.error.message) == ("server_error", "upstream overloaded")
    assert response.output_text == "Hi"
    back = read(raw)
    assert back.error is not None and back.error.message == "upstream overloaded"
    rate = check_stream(write([Error("rate_limit", "slow down", 429)]))
    assert rate[-1]["response"]["error"]["code"] == "rate_limit_exceeded"


def test_empty_answer_and_writer_costs() -> None:
    events = check_stream(write([Usage(3, 0), Finish()]))
    assert [e["type"] for e in events] == [
        "response.created",
        "response.in_progress",
        "response.completed",
    ]
    writer = responses.stream_writer(parsed(), id="resp_x", model="m")
    first = writer.write(TextDelta("a"))
    delta = writer.write(TextDelta("b"))
    assert delta == (
        b'event: response.output_text.delta\ndata: {"type":"response.output_text.delta",'
        b'"item_id":"msg_x_0","output_index":0,"content_index":0,"logprobs":[],"delta":"b",'
        b'"sequence_number":5}\n\n'
    )
    assert first.count(b"event: ") == 5


def test_the_reader_takes_what_openai_sends() -> None:
    """Real OpenAI framing: raw reasoning text, a refusal, arguments only in the item's done
    event, an ``error`` event, and events this code does not know."""
    lines = [
        {"type": "response.created", "sequence_number": 0, "response": {}},
        {"type": "response.reasoning_text.delta", "item_id": "rs", "delta": "raw"},
        {"type": "response.refusal.delta", "item_id": "m", "delta": "No."},
        {
            "type": "response.output_item.added",
            "item": {"type": "function_call", "id": "fc", "call_id": "c", "name": "f"},
        },
        {
            "type": "response.output_item.done",
            "item": {
                "type": "function_call",
                "id": "fc",
                "call_id": "c",
                "name": "f",
                "arguments": "{}",
            },
        },
        {"type": "response.web_search_call.searching", "item_id": "ws"},
        {"type": "error", "code": "rate_limit_exceeded", "message": "slow", "param": None},
    ]
    raw = b"".join(b"data: " + msgspec.json.encode(line) + b"\n\n" for line in lines)
    back = read(raw)
    assert (back.thinking, back.text) == ("raw", "No.")
    assert back.tool_calls == [ToolCall("c", "f", "{}")]
    assert back.error == Error("rate_limit", "slow", 429)


def test_whole_responses_both_ways() -> None:
    completion = Completion(
        text="Hi",
        thinking="hmm",
        thinking_signature="sig",
        tool_calls=[ToolCall("c1", "apply_patch", '{"input":"x"}')],
        usage=Usage(5, 7, 1, None, 2),
        finish=Finish("tool_calls"),
    )
    request = parsed(tools=[PATCH], instructions="Be brief.", metadata={"k": "v"})
    raw = responses.encode_response_for(request, completion, id="resp_w", model="gpt-5.5")
    response = sdk_response(msgspec.json.decode(raw))
    assert response.instructions == "Be brief." and response.metadata == {"k": "v"}
    assert [item.type for item in response.output] == ["reasoning", "message", "custom_tool_call"]
    assert response.tools[0].type == "custom"
    back = responses.parse_response(raw)
    assert (back.text, back.thinking, back.thinking_signature) == ("Hi", "hmm", "sig")
    assert back.tool_calls == completion.tool_calls and back.finish == Finish("tool_calls")
    plain = responses.encode_response(Completion(text="x"), id="resp_p", model="m")
    assert sdk_response(msgspec.json.decode(plain)).output_text == "x"
    broken = responses.parse_response(b"<html>")
    assert broken.error is not None and broken.error.status == 502
    failed = responses.parse_response(b'{"error": {"message": "nope", "code": "server_error"}}')
    assert failed.error is not None and failed.error.message == "nope"


# --- fixtures recorded from the simulator --------------------------------------------------------

_VOLATILE = re.compile(rb'"(created_at|completed_at)":\d+')

# name -> (stream, request fields, simulator knobs)
CASES: dict[str, tuple[bool, dict[str, Any], dict[str, str]]] = {
    "text": (True, {}, {"tokens": "5"}),
    "tool_call": (True, {"tools": [FUNCTION]}, {"tokens": "2", "tool": "auto"}),
    "custom_tool_call": (True, {"tools": [PATCH]}, {"tokens": "0", "tool": "apply_patch"}),
    "reasoning": (
        True,
        {"reasoning": {"effort": "low", "summary": "auto"}},
        {"tokens": "3", "thinking_tokens": "3", "cache_read_tokens": "4"},
    ),
    "incomplete": (True, {"max_output_tokens": 3}, {"tokens": "6"}),
    "failed": (True, {}, {"tokens": "6", "fault": "error_after", "fault_after": "2"}),
    "whole": (False, {"tools": [FUNCTION]}, {"tokens": "4", "tool": "auto"}),
}


async def _record(sim: RunningSimulator, name: str) -> bytes:
    import httpx2

    stream, fields, knobs = CASES[name]
    payload = {"model": "gpt-5.5", "input": f"Fixture {name}", "stream": stream, **fields}
    async with httpx2.AsyncClient() as client:
        answer = await client.post(sim.url + "/v1/responses", json=payload, params=knobs)
    assert answer.status_code == 200, answer.text
    return _VOLATILE.sub(rb'"\1":0', answer.content)


@pytest.fixture(scope="module")
def fresh_simulator() -> Any:
    """A simulator of its own, so its serial numbers (and so its ids) start at 1 here."""
    import asyncio

    loop = asyncio.new_event_loop()
    sim = loop.run_until_complete(start(SimulatorSettings(ttft_ms=0, token_delay_ms=0)))
    yield loop, sim
    loop.run_until_complete(sim.stop())
    loop.close()


@pytest.mark.parametrize("name", list(CASES))
def test_simulator_bytes_match_the_fixtures(fresh_simulator: Any, name: str) -> None:
    loop, sim = fresh_simulator
    sim.reset_stats()
    sim._simulator.serial = list(CASES).index(name)  # each case has its own id, in any order
    got = loop.run_until_complete(_record(sim, name))
    path = DATA / (name + (".sse" if CASES[name][0] else ".json"))
    if RECORD:
        DATA.mkdir(parents=True, exist_ok=True)
        path.write_bytes(got)
    assert got == path.read_bytes()


@pytest.mark.parametrize("name", [name for name in CASES if CASES[name][0]])
def test_every_fixture_event_parses_with_the_sdk(name: str) -> None:
    events = check_stream((DATA / f"{name}.sse").read_bytes())
    final = sdk_response(events[-1]["response"])
    assert final.id.startswith("resp_") and final.usage is not None
    for item in final.output:
        assert item.id is not None and item.id.startswith(("msg_", "fc_", "rs_", "ctc_"))
    expected = {"incomplete": "incomplete", "failed": "failed"}.get(name, "completed")
    assert final.status == expected
    # the text of the deltas is the text of the final response
    deltas = "".join(e["delta"] for e in events if e["type"] == "response.output_text.delta")
    assert deltas == final.output_text


def test_fixture_whole_response_parses_with_the_sdk() -> None:
    response = sdk_response(msgspec.json.decode((DATA / "whole.json").read_bytes()))
    assert response.status == "completed" and response.output[-1].type == "function_call"
    assert response.tools[0].type == "function"


def test_reasoning_without_encrypted_content_keeps_only_its_id() -> None:
    """Codex sends back every reasoning item; one without encrypted content cannot be taken back
    by another model, and a Chat Completions upstream, which refuses earlier thinking, is not
    refused because of it; a Responses upstream gets the item as sent."""
    from tokenrelay.dialects import openai

    item = {"type": "reasoning", "id": "rs_9", "summary": [{"type": "summary_text", "text": "x"}]}
    request = parsed(input=[{"role": "user", "content": "hi"}, item, ASSISTANT_SAID])
    assert request.messages[1] == Message("assistant", [ThinkingPart(""), TextPart("ok")])
    sent = msgspec.json.decode(responses.encode_request(request, "gpt-5.5", stream=True))
    assert sent["input"][1] == item  # as sent: the upstream decides, as without the gateway
    chat = msgspec.json.decode(openai.encode_request(request, "gpt-5.5", stream=True))
    assert chat["messages"][1] == {"role": "assistant", "content": "ok"}


ASSISTANT_SAID = {"role": "assistant", "content": "ok"}


def test_the_served_model_comes_with_the_usage_streamed_and_whole() -> None:
    """Pricing uses the model a Responses upstream says served (a dated snapshot), not the
    alias asked for."""
    served = "gpt-5-mini-2025-08-07"
    usage = {"input_tokens": 3, "output_tokens": 5}
    done = {"type": "response.completed", "response": {"model": served, "usage": usage}}
    raw = b"event: response.completed\ndata: " + msgspec.json.encode(done) + b"\n\n"
    reader = responses.stream_reader()
    events = [e for sse in SSEParser().feed(raw) for e in reader.feed(sse)]
    assert Usage(3, 5, model=served) in events
    whole = {"object": "response", "model": served, "status": "completed", "output": []}
    completion = responses.parse_response(msgspec.json.encode({**whole, "usage": usage}))
    assert completion.usage.model == served

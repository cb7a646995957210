"""The AI SDK's UI message stream (``/api/chat``): what useChat sends, and the chunks it reads."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest

from tokenrelay.dialects import uichat
from tokenrelay.dialects.sse import SSEParser
from tokenrelay.model import (
    Error,
    Event,
    Finish,
    GatewayError,
    ImagePart,
    TextDelta,
    TextPart,
    ThinkingDelta,
    Usage,
)


def ui(role: str, *parts: dict[str, Any], id: str = "m") -> dict[str, Any]:
    return {"id": id, "role": role, "parts": list(parts)}


def text(value: str) -> dict[str, Any]:
    return {"type": "text", "text": value}


def body(*messages: dict[str, Any], **fields: Any) -> bytes:
    """What DefaultChatTransport posts: id, messages, trigger, messageId, plus the page's body."""
    base = {"id": "chat-1", "messages": list(messages), "trigger": "submit-message"}
    return msgspec.json.encode({**base, "messageId": None, **fields})


def chunks(data: bytes) -> list[Any]:
    events = SSEParser().feed(data)
    return [e.data if e.data == "[DONE]" else msgspec.json.decode(e.data) for e in events]


def test_parses_what_usechat_sends() -> None:
    request = uichat.parse_request(
        body(
            ui("user", {"type": "step-start"}, text("Hi")),
            ui("assistant", {"type": "reasoning", "text": "hmm"}, text("Hello!")),
            ui("user", text("Explain SSE"), {"type": "data-note", "data": {"x": 1}}),
        )
    )
    assert request.model == "default" and request.stream and request.include_usage
    assert [(m.role, m.content) for m in request.messages] == [
        ("user", [TextPart("Hi")]),
        ("assistant", [TextPart("Hello!")]),  # reasoning is not sent back
        ("user", [TextPart("Explain SSE")]),
    ]


def test_body_fields_choose_route_system_and_limits() -> None:
    request = uichat.parse_request(
        body(
            ui("system", text("Be brief.")),
            ui("user", text("Hi")),
            route="fast",
            maxTokens=64,
            temperature=0.2,
            metadata={"team": "search"},
        )
    )
    assert (request.model, request.system, request.max_tokens) == ("fast", "Be brief.", 64)
    assert request.temperature == 0.2 and request.metadata == {"team": "search"}
    assert uichat.parse_request(body(ui("user", text("Hi")), model="oa")).model == "oa"


def test_images_and_ai_sdk_4_messages() -> None:
    image = {"type": "file", "mediaType": "image/png", "url": "data:image/png;base64,iVBORw0KGgo="}
    remote = {"type": "file", "mediaType": "image/jpeg", "url": "https://example.com/cat.jpg"}
    request = uichat.parse_request(body(ui("user", text("What is this?"), image, remote)))
    assert request.messages[0].content[1:] == [
        ImagePart(data="iVBORw0KGgo=", media_type="image/png"),
        ImagePart(url="https://example.com/cat.jpg", media_type="image/jpeg"),
    ]
    old = uichat.parse_request(body({"id": "1", "role": "user", "content": "Hi"}))
    assert old.messages[0].content == [TextPart("Hi")]


@pytest.mark.parametrize(
    ("data", "status", "names"),
    [
        (b"[]", 422, "JSON object"),
        (body(), 422, "messages"),
        (body(ui("user", text("Hi")), prompt="x"), 422, "'prompt'"),
        (body(ui("robot", text("Hi"))), 422, "role"),
        (body({"id": "1", "role": "user"}), 422, "parts"),
        (body(ui("user", {"type": "tool-weather", "toolCallId": "1"})), 400, "tool"),
        (
            body(ui("user", {"type": "file", "mediaType": "application/pdf", "url": "x"})),
            400,
            "pdf",
        ),
        (
            body(ui("user", {"type": "file", "mediaType": "image/png", "url": "ftp://x"})),
            422,
            "URL",
        ),
        (body(ui("user", {"type": "wat"})), 422, "unknown part type"),
        (body(ui("user", {"type": "step-start"})), 422, "no text"),
        (body(ui("user", text("Hi")), route=""), 422, "route"),
        (body(ui("user", text("Hi")), maxTokens=0), 422, "maxTokens"),
        (body(ui("user", text("Hi")), metadata={"a": 1}), 422, "metadata"),
    ],
)
def test_bad_bodies_say_what_to_change(data: bytes, status: int, names: str) -> None:
    with pytest.raises(GatewayError) as caught:
        uichat.parse_request(data)
    assert caught.value.status == status
    assert names in caught.value.message


def test_errors_before_the_stream_are_plain_sentences() -> None:
    """DefaultChatTransport throws ``new Error(await response.text())``."""
    error = GatewayError("rate_limit", "slow down: 10 requests per minute", 429)
    assert uichat.encode_error(error) == b"slow down: 10 requests per minute"
    assert uichat.ERROR_CONTENT_TYPE.startswith("text/plain")
    parsed = uichat.parse_error(429, b"slow down", {"x-tokenrelay-error-type": "rate_limit"})
    assert (parsed.type, parsed.message, parsed.status) == ("rate_limit", "slow down", 429)


def test_writer_emits_the_ui_message_chunks_in_order() -> None:
    writer = uichat.stream_writer(
        uichat.parse_request(body(ui("user", text("Hi")))), id="msg_1", model="m"
    )
    head = {"requestId": "r1", "provider": "anthropic"}
    out = writer.describe(head)
    events: list[Event] = [
        ThinkingDelta("Let me think"),
        TextDelta("Hel"),
        TextDelta(""),
        TextDelta("lo"),
        Usage(10, 2),
        Finish("length"),
    ]
    for event in events:
        out += writer.write(event)
    writer.summarize({"requestId": "r1", "costUsd": "0.0001"})
    out += writer.close()
    assert writer.close() == b""  # idempotent
    assert chunks(out) == [
        {"type": "start", "messageId": "msg_1", "messageMetadata": head},
        {"type": "start-step"},
        {"type": "reasoning-start", "id": "r1"},
        {"type": "reasoning-delta", "id": "r1", "delta": "Let me think"},
        {"type": "reasoning-end", "id": "r1"},
        {"type": "text-start", "id": "t2"},
        {"type": "text-delta", "id": "t2", "delta": "Hel"},
        {"type": "text-delta", "id": "t2", "delta": "lo"},
        {"type": "text-end", "id": "t2"},
        {"type": "finish-step"},
        {
            "type": "finish",
            "finishReason": "length",
            "messageMetadata": {"requestId": "r1", "costUsd": "0.0001"},
        },
        "[DONE]",
    ]


def test_an_error_mid_stream_sends_the_metadata_then_the_error() -> None:
    """useChat stops reading at an error chunk: what the failed answer used must come first."""
    writer = uichat.UIChatWriter("msg_2")
    out = writer.write(TextDelta("partial "))
    out += writer.write(Error("overloaded", "the provider is overloaded", 529))
    writer.summarize({"usage": {"outputTokens": 2}, "usageEstimated": True})
    out += writer.close()
    assert chunks(out) == [
        {"type": "text-start", "id": "t1"},
        {"type": "text-delta", "id": "t1", "delta": "partial "},
        {"type": "text-end", "id": "t1"},
        {
            "type": "message-metadata",
            "messageMetadata": {"usage": {"outputTokens": 2}, "usageEstimated": True},
        },
        {"type": "error", "errorText": "the provider is overloaded"},
        "[DONE]",
    ]


def test_reader_reads_the_writer_back() -> None:
    writer = uichat.UIChatWriter("msg_3")
    data = writer.describe({"requestId": "r"}) + writer.write(TextDelta("Hi"))
    writer.summarize({"usage": {"inputTokens": 3, "outputTokens": 1}})
    data += writer.close()
    reader = uichat.stream_reader()
    events = [event for sse in SSEParser().feed(data) for event in reader.feed(sse)]
    assert events == [TextDelta("Hi"), Usage(3, 1), Finish("stop")]
    assert reader.done and reader.metadata["requestId"] == "r"


def test_encode_request_round_trips() -> None:
    original = uichat.parse_request(
        body(ui("system", text("Be brief.")), ui("user", text("Hi")), route="oa", maxTokens=9)
    )
    again = uichat.parse_request(uichat.encode_request(original, "oa", stream=True))
    assert (again.model, again.system, again.max_tokens, again.messages) == (
        "oa",
        "Be brief.",
        9,
        original.messages,
    )

"""The article's /api/generate protocol: by default exactly what its client parses."""

from __future__ import annotations

import msgspec
import pytest

from tokenrelay.dialects import generate
from tokenrelay.dialects.sse import SSEParser
from tokenrelay.model import (
    Completion,
    Error,
    Event,
    Finish,
    GatewayError,
    TextDelta,
    TextPart,
    ThinkingDelta,
    Usage,
)


def request(**fields: object) -> bytes:
    return msgspec.json.encode({"prompt": "Explain SSE", **fields})


def test_parses_the_article_request() -> None:
    parsed = generate.parse_request(request())
    assert parsed.model == "default"
    assert parsed.messages[0].role == "user"
    assert parsed.messages[0].content == [TextPart("Explain SSE")]
    assert parsed.system is None and parsed.max_tokens is None and parsed.stream


def test_parses_options() -> None:
    parsed = generate.parse_request(
        request(maxTokens=50, route="fast", include=["usage"], systemPrompt="Be brief.")
    )
    assert (parsed.model, parsed.max_tokens, parsed.system) == ("fast", 50, "Be brief.")
    assert parsed.include_usage


@pytest.mark.parametrize(
    ("body", "status", "names"),
    [
        (b"{not json", 400, "JSON"),
        (b"\xff\xfe", 400, "UTF-8"),
        (b"[1]", 422, "object"),
        (b"{}", 422, "prompt"),
        (request(prompt=3), 422, "prompt"),
        (request(prompt="   "), 422, "empty"),
        (request(maxTokens=0), 422, "maxTokens"),
        (request(maxTokens=True), 422, "maxTokens"),
        (request(route=""), 422, "route"),
        (request(include="usage"), 422, "include"),
        (request(include=["cost?"]), 422, "include"),
        (request(max_tokens=5), 422, "max_tokens"),
        (request(stream="yes"), 422, "stream"),
    ],
)
def test_bad_requests_say_what_to_change(body: bytes, status: int, names: str) -> None:
    with pytest.raises(GatewayError) as raised:
        generate.parse_request(body)
    assert raised.value.status == status
    assert names in raised.value.message
    error = msgspec.json.decode(generate.encode_error(raised.value))["error"]
    assert error["message"] == raised.value.message


def write_all(include: list[str], events: list[Event]) -> bytes:
    parsed = generate.parse_request(request(include=include))
    writer = generate.stream_writer(parsed, id="r1", model="m")
    return b"".join(writer.write(e) for e in events) + writer.close()


STREAM: list[Event] = [
    Usage(input_tokens=12),
    ThinkingDelta("hmm"),
    TextDelta("Hello"),
    TextDelta(', "world"\n'),
    Usage(output_tokens=3),
    Finish("stop"),
]


def test_default_stream_is_exactly_text_lines_and_done() -> None:
    assert write_all([], STREAM) == (
        b'data: {"text":"Hello"}\n\ndata: {"text":", \\"world\\"\\n"}\n\ndata: [DONE]\n\n'
    )


def test_includes_add_usage_finish_and_thinking_events() -> None:
    raw = write_all(["usage", "finish", "thinking"], STREAM)
    data = [e.data for e in SSEParser().feed(raw)]
    assert data == [
        '{"thinking":"hmm"}',
        '{"text":"Hello"}',
        '{"text":", \\"world\\"\\n"}',
        '{"usage":{"inputTokens":12,"outputTokens":3}}',
        '{"finish":{"reason":"stop"}}',
        "[DONE]",
    ]


def test_error_after_text_is_an_error_line_then_done() -> None:
    raw = write_all([], [TextDelta("par"), Error("overloaded", "Overloaded", 529)])
    assert raw == (
        b'data: {"text":"par"}\n\n'
        b'data: {"error":{"type":"overloaded","message":"Overloaded"}}\n\ndata: [DONE]\n\n'
    )


def test_reader_reads_what_the_writer_wrote() -> None:
    raw = write_all(["usage", "finish"], STREAM)
    reader = generate.stream_reader()
    events = [ev for sse in SSEParser().feed(raw) for ev in reader.feed(sse)]
    assert events == [
        TextDelta("Hello"),
        TextDelta(', "world"\n'),
        Usage(input_tokens=12, output_tokens=3),
        Finish("stop"),
    ]
    assert reader.done


def test_request_round_trip_and_limits() -> None:
    parsed = generate.parse_request(request(maxTokens=9, include=["usage"]))
    again = generate.parse_request(generate.encode_request(parsed, "fast", stream=True))
    assert again.model == "fast" and again.max_tokens == 9 and again.include_usage
    parsed.tools = []
    parsed.messages = parsed.messages * 2
    with pytest.raises(GatewayError, match="single user prompt"):
        generate.encode_request(parsed, "default", stream=True)


def test_whole_response_round_trip() -> None:
    completion = Completion(text="hi", usage=Usage(3, 1), finish=Finish("length"))
    back = generate.parse_response(generate.encode_response(completion, id="x", model="m"))
    assert (back.text, back.usage, back.finish) == ("hi", Usage(3, 1), Finish("length"))


def test_parse_error_reads_ours_and_foreign_bodies() -> None:
    ours = generate.parse_error(422, b'{"error":{"type":"unprocessable","message":"no"}}', {})
    assert (ours.type, ours.message, ours.status) == ("unprocessable", "no", 422)
    foreign = generate.parse_error(502, b"<html>Bad gateway</html>", {"retry-after": "2"})
    assert (foreign.type, foreign.status, foreign.retry_after) == ("api_error", 502, 2.0)

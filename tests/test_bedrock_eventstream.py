"""AWS event-stream framing: frames split anywhere decode the same; a corrupt frame is an error,
never skipped; botocore's own parser agrees with ours on the frames we write."""

from __future__ import annotations

import time

import pytest

from tokenrelay.dialects import converse
from tokenrelay.dialects.eventstream import (
    EventStreamParser,
    Frame,
    FramingError,
    encode_frame,
    event,
)
from tokenrelay.model import Event, Finish, TextDelta, ThinkingDelta, ToolCallDelta, Usage

FRAMES = [
    event("messageStart", b'{"role":"assistant"}'),
    event("contentBlockDelta", b'{"contentBlockIndex":0,"delta":{"text":"Hello \xc3\xa9"}}'),
    encode_frame({":event-type": "contentBlockStop", ":message-type": "event"}, b"{}"),
    event("messageStop", b'{"stopReason":"end_turn"}'),
]
STREAM = b"".join(FRAMES)


def test_a_stream_split_at_every_offset_decodes_the_same() -> None:
    whole = EventStreamParser().feed(STREAM)
    assert [f.event_type for f in whole] == [
        "messageStart",
        "contentBlockDelta",
        "contentBlockStop",
        "messageStop",
    ]
    for cut in range(len(STREAM) + 1):
        parser = EventStreamParser()
        frames = parser.feed(STREAM[:cut]) + parser.feed(STREAM[cut:])
        assert frames == whole, cut
        assert parser.pending == 0
    for second in range(1, len(STREAM), 7):  # and in three pieces
        for first in range(0, second, 5):
            parser = EventStreamParser()
            frames = [
                *parser.feed(STREAM[:first]),
                *parser.feed(STREAM[first:second]),
                *parser.feed(STREAM[second:]),
            ]
            assert frames == whole


def test_byte_by_byte() -> None:
    parser = EventStreamParser()
    frames = [frame for i in range(len(STREAM)) for frame in parser.feed(STREAM[i : i + 1])]
    assert frames == EventStreamParser().feed(STREAM)


@pytest.mark.parametrize("where", ["prelude", "headers", "payload", "message_crc"])
def test_a_corrupt_frame_is_an_error_not_a_skip(where: str) -> None:
    frame = bytearray(FRAMES[1])
    offset = {"prelude": 2, "headers": 14, "payload": len(frame) - 8, "message_crc": -1}[where]
    frame[offset] ^= 0x01
    parser = EventStreamParser()
    assert parser.feed(FRAMES[0])  # the good frame before it arrives
    with pytest.raises(FramingError) as raised:
        parser.feed(FRAMES[2] + bytes(frame) + FRAMES[3])
    # the good frame in the same chunk before the corrupt one still counts; none after it
    assert [f.event_type for f in raised.value.frames] == ["contentBlockStop"]


def test_an_impossible_length_is_an_error() -> None:
    import struct
    import zlib

    lengths = struct.pack(">II", 1 << 30, 0)
    with pytest.raises(FramingError, match="impossible length"):
        EventStreamParser().feed(lengths + struct.pack(">I", zlib.crc32(lengths)))


def test_botocore_reads_our_frames() -> None:
    from botocore.eventstream import EventStreamBuffer

    buffer = EventStreamBuffer()
    buffer.add_data(STREAM)
    decoded = list(buffer)
    assert [m.headers[":event-type"] for m in decoded] == [f.event_type for f in parsed()]
    assert decoded[1].payload == EventStreamParser().feed(FRAMES[1])[0].payload


def parsed() -> list[Frame]:
    return EventStreamParser().feed(STREAM)


def test_the_writer_and_reader_agree() -> None:
    writer = converse.ConverseWriter()
    events: list[Event] = [
        ThinkingDelta("hmm"),
        ThinkingDelta("", "sig"),
        TextDelta("Hi"),
        ToolCallDelta(0, "tooluse_1", "get_weather"),
        ToolCallDelta(0, arguments='{"city":'),
        ToolCallDelta(0, arguments='"Paris"}'),
        Usage(input_tokens=30, output_tokens=5, cache_read_tokens=7),
        Finish("tool_calls"),
    ]
    wire = b"".join(writer.write(e) for e in events)
    reader = converse.ConverseReader()
    out = [e for frame in EventStreamParser().feed(wire) for e in reader.feed(frame)]
    assert reader.done
    assert out[:6] == events[:6]
    assert out[6] == Usage(input_tokens=30, output_tokens=5, cache_read_tokens=7)
    assert out[7] == Finish("tool_calls")


def test_parsing_speed_per_frame() -> None:
    """A generous bound (a noisy 2-core machine): it measures ~3 µs a frame; 100 µs fails."""
    frame = FRAMES[1]
    wire = frame * 2000
    reader = converse.ConverseReader()
    start = time.perf_counter()
    for _ in range(5):
        for item in EventStreamParser().feed(wire):
            reader.feed(item)
    per_frame = (time.perf_counter() - start) / 10_000
    assert per_frame < 100e-6, per_frame


# --- errors ----------------------------------------------------------------------------------

EXCEPTION_TABLE = [
    ("ThrottlingException", 429, "rate_limit"),
    ("ValidationException", 400, "invalid_request"),
    ("AccessDeniedException", 403, "permission"),
    ("UnrecognizedClientException", 401, "authentication"),
    ("ModelStreamErrorException", 502, "upstream_unavailable"),
    ("ServiceUnavailableException", 503, "upstream_unavailable"),
    ("InternalServerException", 500, "api_error"),
    ("ModelNotReadyException", 529, "overloaded"),
    ("ModelTimeoutException", 504, "timeout"),
    ("ResourceNotFoundException", 404, "not_found"),
]


@pytest.mark.parametrize(("name", "status", "kind"), EXCEPTION_TABLE)
def test_an_error_response_is_classified_by_its_exception(
    name: str, status: int, kind: str
) -> None:
    header = f"{name}:http://internal.amazon.com/coral/com.amazon.bedrock/"
    error = converse.parse_error(400, b'{"message":"nope"}', {"x-amzn-errortype": header})
    assert (error.type, error.status) == (kind, status)
    assert name in error.message and "nope" in error.message
    # the body's __type serves when the header is missing
    body = b'{"__type":"com.amazon.bedrock#' + name.encode() + b'","message":"nope"}'
    assert converse.parse_error(400, body, {}).status == status


@pytest.mark.parametrize(("name", "status", "kind"), EXCEPTION_TABLE)
def test_an_exception_frame_ends_the_stream(name: str, status: int, kind: str) -> None:
    from tokenrelay.dialects.eventstream import exception
    from tokenrelay.model import Error

    frame_name = name[0].lower() + name[1:]
    wire = FRAMES[1] + exception(frame_name, b'{"message":"stream broke"}')
    reader = converse.ConverseReader()
    out = [e for f in EventStreamParser().feed(wire) for e in reader.feed(f)]
    assert reader.done
    assert out[0] == TextDelta("Hello \xe9")
    assert isinstance(out[1], Error) and (out[1].type, out[1].status) == (kind, status)
    assert "stream broke" in out[1].message


def test_a_status_without_a_name_is_judged_by_the_status() -> None:
    assert converse.parse_error(429, b"", {}).type == "rate_limit"
    assert converse.parse_error(503, b"busy", {}).status == 503
    assert converse.parse_error(408, b"{}", {}).type == "timeout"
    retry = converse.parse_error(429, b"{}", {"retry-after": "2"})
    assert retry.retry_after == 2


@pytest.mark.parametrize(
    ("reason", "finish"),
    [
        ("end_turn", "stop"),
        ("tool_use", "tool_calls"),
        ("max_tokens", "length"),
        ("stop_sequence", "stop_sequence"),
        ("guardrail_intervened", "content_filter"),
        ("content_filtered", "content_filter"),
    ],
)
def test_stop_reasons(reason: str, finish: str) -> None:
    wire = event("messageStop", b'{"stopReason":"' + reason.encode() + b'"}') + event(
        "metadata",
        b'{"usage":{"inputTokens":5,"outputTokens":2,"totalTokens":9,"cacheReadInputTokens":2},'
        b'"metrics":{"latencyMs":10}}',
    )
    reader = converse.ConverseReader()
    out = [e for f in EventStreamParser().feed(wire) for e in reader.feed(f)]
    assert reader.done
    assert out == [
        Usage(input_tokens=7, output_tokens=2, cache_read_tokens=2),
        Finish(finish),  # type: ignore[arg-type]
    ]


def test_an_event_that_is_not_json_is_an_error() -> None:
    from tokenrelay.model import Error

    reader = converse.ConverseReader()
    [frame] = EventStreamParser().feed(event("contentBlockDelta", b"{not json"))
    [error] = reader.feed(frame)
    assert isinstance(error, Error) and error.status == 502 and "not json" in error.message
    assert reader.done
    assert converse.parse_response(b"[]").error is not None

"""The shared SSE parser: the same stream split at every possible boundary parses the same."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from tokenrelay.dialects.sse import DONE, SSEEvent, SSEParser, frame, frame_text

# Field values may hold anything but line breaks and NUL (which the grammar cannot carry).
line_text = st.text(
    st.characters(blacklist_characters="\r\n\x00", blacklist_categories=["Cs"]), max_size=12
)
event_name = st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=1, max_size=8)


@st.composite
def streams(draw: st.DrawFn) -> tuple[bytes, list[SSEEvent]]:
    """A serialized stream with one line ending style, and the events it must parse to."""
    newline = draw(st.sampled_from(["\n", "\r\n", "\r"]))
    bom = draw(st.booleans())
    text = "\ufeff" if bom else ""
    expected = []
    for _ in range(draw(st.integers(1, 4))):
        if draw(st.booleans()):
            text += ": " + draw(line_text) + newline  # a comment, e.g. keep-alive
        name = draw(st.one_of(st.none(), event_name))
        data_lines = draw(st.lists(line_text, min_size=1, max_size=3))
        event_id = draw(st.one_of(st.none(), st.text("abc123", min_size=1, max_size=4)))
        if name is not None:
            text += f"event: {name}{newline}"
        if event_id is not None:
            text += f"id: {event_id}{newline}"
        values = []
        for line in data_lines:
            # "data:x" and "data: x" mean the same; only one leading space is dropped.
            spaced = draw(st.booleans())
            text += ("data: " if spaced else "data:") + line + newline
            values.append(line if spaced or not line.startswith(" ") else line[1:])
        text += newline
        expected.append(SSEEvent(name or "message", "\n".join(values), event_id))
    return text.encode("utf-8"), expected


def parse(chunks: list[bytes]) -> list[SSEEvent]:
    parser = SSEParser()
    events: list[SSEEvent] = []
    for chunk in chunks:
        events.extend(parser.feed(chunk))
    return events


def strip_ids(events: list[SSEEvent], expected: list[SSEEvent]) -> list[SSEEvent]:
    """``id`` persists across events (the last event id), so compare it as the spec defines."""
    out, last = [], None
    for event in expected:
        last = event.id if event.id is not None else last
        out.append(event._replace(id=last))
    return out


@settings(max_examples=150, deadline=None)
@given(streams())
def test_every_two_way_split_parses_the_same(stream: tuple[bytes, list[SSEEvent]]) -> None:
    raw, expected = stream
    want = strip_ids(expected, expected)
    assert parse([raw]) == want
    for cut in range(1, len(raw)):
        assert parse([raw[:cut], raw[cut:]]) == want, f"split at byte {cut}"


@settings(max_examples=150, deadline=None)
@given(streams(), st.data())
def test_random_many_way_splits_parse_the_same(
    stream: tuple[bytes, list[SSEEvent]], data: st.DataObject
) -> None:
    raw, expected = stream
    cuts = sorted(data.draw(st.sets(st.integers(1, max(1, len(raw) - 1)), max_size=len(raw))))
    chunks = [raw[a:b] for a, b in zip([0, *cuts], [*cuts, len(raw)], strict=True)]
    assert parse(chunks) == strip_ids(expected, expected)


@settings(max_examples=100, deadline=None)
@given(streams())
def test_byte_at_a_time(stream: tuple[bytes, list[SSEEvent]]) -> None:
    raw, expected = stream
    assert parse([raw[i : i + 1] for i in range(len(raw))]) == strip_ids(expected, expected)


def test_utf8_character_split_across_chunks() -> None:
    raw = 'data: {"text":"héllo 👋 世界"}\n\n'.encode()
    for cut in range(1, len(raw)):
        assert parse([raw[:cut], raw[cut:]]) == [SSEEvent("message", '{"text":"héllo 👋 世界"}')]


def test_crlf_whose_cr_ends_a_chunk() -> None:
    assert parse([b"data: a\r", b"\n\r", b"\ndata: b\r\n\r\n"]) == [
        SSEEvent("message", "a"),
        SSEEvent("message", "b"),
    ]


def test_event_is_returned_the_moment_its_blank_line_arrives() -> None:
    parser = SSEParser()
    assert parser.feed(b"event: x\ndata: 1\n") == []
    assert parser.pending
    assert parser.feed(b"\n") == [SSEEvent("x", "1")]
    assert not parser.pending


def test_comment_only_and_empty_data_blocks_do_not_dispatch() -> None:
    assert parse([b": keep-alive\n\nevent: ping\n\n"]) == []
    assert parse([b"data\n\n"]) == [SSEEvent("message", "")]


def test_retry_and_unknown_fields() -> None:
    assert parse([b"retry: 3000\nfoo: bar\ndata: x\n\n"]) == [SSEEvent("message", "x", None, 3000)]


def test_frames_round_trip() -> None:
    raw = frame(b'{"a":1}') + frame(b"{}", "ping") + frame_text("two\nlines", "note") + DONE
    assert parse([raw]) == [
        SSEEvent("message", '{"a":1}'),
        SSEEvent("ping", "{}"),
        SSEEvent("note", "two\nlines"),
        SSEEvent("message", "[DONE]"),
    ]

"""The SSE parser's fast path (whole ``data:`` frames) against its line-by-line path: the same
events for the same bytes however the network cuts them, awkward inputs included."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from tokenrelay.dialects.sse import SSEEvent, SSEParser

_PIECES = [
    b"data: ",
    b"data:",
    b'data: {"a":1}',
    b"x\xc3\xa9",
    b"\xc3",
    b"\xa9",
    b"\n",
    b"\n\n",
    b"\r\n",
    b"\r",
    b": keep-alive\n",
    b"event: delta\n",
    b"id: 7\n",
    b"id\n",
    b"retry: 250\n",
    b"retry: x\n",
    b"\xef\xbb\xbf",
    b"[DONE]",
    b"data: a\n\ndata: b\n\n",
    b"data: one\ndata: two\n\n",
    b"event: content_block_delta\ndata: {}\n\n",
    b"event: \ndata: x\n\n",
    b"event:  spaced\ndata:  two spaces\n\n",
    b"event: e\n\n",
]


def _both(chunks: list[bytes]) -> tuple[list[list[SSEEvent]], list[list[SSEEvent]]]:
    fast, slow = SSEParser(), SSEParser()
    got = [fast.feed(chunk) for chunk in chunks]
    want = [slow._feed(chunk) for chunk in chunks if chunk] if chunks else []
    got = [events for chunk, events in zip(chunks, got, strict=True) if chunk]
    assert fast.pending == slow.pending
    return got, want


@settings(max_examples=400, deadline=None)
@given(st.lists(st.sampled_from(_PIECES), max_size=24), st.data())
def test_fast_path_gives_the_events_of_the_line_path(
    pieces: list[bytes], data: st.DataObject
) -> None:
    stream = b"".join(pieces)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=6)))
    chunks = [stream[a:b] for a, b in zip([0, *cuts], [*cuts, len(stream)], strict=True)]
    got, want = _both(chunks)
    assert got == want
    assert all(type(event) is SSEEvent for events in got for event in events)


def test_awkward_inputs_parse_as_the_grammar_says() -> None:
    parser = SSEParser()
    assert parser.feed(b"data: a\n\n") == [SSEEvent("message", "a")]
    two = [SSEEvent("message", "a"), SSEEvent("message", "b")]
    assert parser.feed(b"data: a\n\ndata: b\n\n") == two
    assert parser.feed(b"id: 9\n") == []
    assert parser.feed(b"data: c\n\n") == [SSEEvent("message", "c", "9")]  # the last id, kept
    assert parser.feed(b"event: e\n") == []
    assert parser.feed(b"data: d\n\n") == [SSEEvent("e", "d", "9")]
    assert parser.feed(b"retry: 5\n") == []
    assert parser.feed(b"data: f\n\n") == [SSEEvent("message", "f", "9", 5)]
    assert parser.feed(b"data: g\r\n\r\n") == [SSEEvent("message", "g", "9")]
    assert parser.feed(b"data: h\r") == []
    # the CR's LF, then another data line of the same event
    assert parser.feed(b"\ndata: i\n\n") == [SSEEvent("message", "h\ni", "9")]
    assert parser.feed(b"data: x\ndata: y\n\n") == [SSEEvent("message", "x\ny", "9")]
    assert parser.feed(b": ping\n\ndata: z\n\n") == [SSEEvent("message", "z", "9")]
    assert parser.feed(b"data: \n\n") == [SSEEvent("message", "", "9")]
    assert parser.feed(b"event: ping\ndata: {}\n\n") == [SSEEvent("ping", "{}", "9")]
    assert parser.feed(b"event: \ndata: {}\n\n") == [SSEEvent("message", "{}", "9")]
    assert parser.feed(b"event: a\ndata: {}\nid: 3\n\n") == [SSEEvent("a", "{}", "3")]
    assert not parser.pending

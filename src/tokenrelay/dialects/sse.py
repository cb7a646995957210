"""Server-sent events: one incremental parser shared by every reader, and the frame writer.

Follows the WHATWG event-stream grammar: CRLF, CR or LF line endings (also split across
network chunks), multi-line ``data:``, comment lines, ``id`` and ``retry``, a leading BOM. Lines
are split as bytes and decoded only when complete, so a UTF-8 character cut in two by the network
is never mangled.
"""

from __future__ import annotations

import re
from typing import NamedTuple

_BOM = b"\xef\xbb\xbf"
_LINE_BREAK = re.compile(r"\r\n|\r|\n")


class SSEEvent(NamedTuple):
    event: str
    data: str
    id: str | None = None
    retry: int | None = None


# An event built as the tuple it is: ``SSEEvent(...)`` runs a Python-level ``__new__`` per event.
_new_event = tuple.__new__


class SSEParser:
    """Feed it raw bytes as they arrive; it returns each event the moment its blank line lands."""

    __slots__ = ("_after_cr", "_data", "_event", "_id", "_partial", "_retry", "_started")

    def __init__(self) -> None:
        self._partial = b""
        self._data: list[str] = []
        self._event = ""
        self._id: str | None = None
        self._retry: int | None = None
        self._after_cr = False
        self._started = False

    def feed(self, chunk: bytes) -> list[SSEEvent]:
        if (
            chunk.endswith(b"\n\n")
            and self._started
            and not (self._partial or self._data or self._after_cr or self._event)
            and self._retry is None  # else a ``retry`` line still waits for its event's data
            and b"\r" not in chunk
        ):  # whole frames, the usual chunk: without walking its lines
            end = chunk.find(b"\n")
            if chunk.startswith(b"data: "):
                if end == len(chunk) - 2:  # one frame
                    data = chunk[6:end].decode("utf-8", "replace")
                    return [_new_event(SSEEvent, ("message", data, self._id, None))]
                events = self._whole_frames(chunk)
                if events is not None:
                    return events
            elif chunk.startswith(b"event: "):  # one named frame (Anthropic's every event)
                data_end = chunk.find(b"\n", end + 1)
                if data_end == len(chunk) - 2 and chunk.startswith(b"data: ", end + 1):
                    name = chunk[7:end].decode("utf-8", "replace") or "message"
                    data = chunk[end + 7 : data_end].decode("utf-8", "replace")
                    return [_new_event(SSEEvent, (name, data, self._id, None))]
        return self._feed(chunk) if chunk else []

    def _whole_frames(self, chunk: bytes) -> list[SSEEvent] | None:
        """Several whole ``data: ...\n\n`` frames and nothing else (no comment, field or event
        name), or ``None`` with nothing changed, for ``_feed``; both give the same events
        (tests/test_sse_fast.py)."""
        last_id = self._id
        events = []
        for frame in chunk[:-2].split(b"\n\n"):
            if not frame.startswith(b"data: ") or b"\n" in frame:
                return None
            data = frame[6:].decode("utf-8", "replace")
            events.append(_new_event(SSEEvent, ("message", data, last_id, None)))
        return events

    def _feed(self, chunk: bytes) -> list[SSEEvent]:
        if self._after_cr and chunk[:1] == b"\n":
            chunk = chunk[1:]  # the LF of a CRLF whose CR ended the previous chunk
        self._after_cr = chunk[-1:] == b"\r"
        if b"\r" in chunk:
            chunk = chunk.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        if self._partial:
            chunk = self._partial + chunk
        if not self._started:
            if len(chunk) < 3 and _BOM.startswith(chunk):
                self._partial = chunk
                return []
            self._started = True
            if chunk.startswith(_BOM):
                chunk = chunk[3:]
        lines = chunk.split(b"\n")
        self._partial = lines.pop()
        events: list[SSEEvent] = []
        for line in lines:
            if not line:
                if self._data:
                    events.append(
                        SSEEvent(
                            self._event or "message", "\n".join(self._data), self._id, self._retry
                        )
                    )
                    self._data = []
                self._event = ""
                self._retry = None
                continue
            self._line(line)
        return events

    def _line(self, line: bytes) -> None:
        colon = line.find(b":")
        if colon == 0:
            return  # comment, e.g. a keep-alive
        if colon < 0:
            name, value = line, b""
        else:
            name = line[:colon]
            value = line[colon + 1 :]
            if value[:1] == b" ":
                value = value[1:]
        if name == b"data":
            self._data.append(value.decode("utf-8", "replace"))
        elif name == b"event":
            self._event = value.decode("utf-8", "replace")
        elif name == b"id":
            if b"\0" not in value:
                self._id = value.decode("utf-8", "replace")
        elif name == b"retry" and value.isdigit():
            self._retry = int(value)

    @property
    def pending(self) -> bool:
        """True when bytes of an unfinished event are held (the stream ended mid-event)."""
        return bool(self._partial or self._data)


def frame(data: bytes, event: str | None = None) -> bytes:
    """One SSE frame. ``data`` must be a single line (JSON from msgspec always is)."""
    if event is None:
        return b"data: " + data + b"\n\n"
    return b"event: " + event.encode() + b"\ndata: " + data + b"\n\n"


def frame_text(data: str, event: str | None = None) -> bytes:
    """A frame for text that may contain line breaks: each line becomes its own ``data:`` line."""
    body = b"\n".join(b"data: " + line.encode() for line in _LINE_BREAK.split(data))
    head = b"event: " + event.encode() + b"\n" if event else b""
    return head + body + b"\n\n"


DONE = b"data: [DONE]\n\n"

"""AWS event-stream framing (``application/vnd.amazon.eventstream``), the binary frames Bedrock
streams in: an incremental parser fed raw network chunks, and the frame writer.

A frame is a 12-byte prelude (total length, headers length, CRC32 of those 8 bytes), headers,
the payload, and a CRC32 of everything before it. Both CRCs are checked: a corrupt frame raises
``FramingError`` (the provider ends the stream with an explicit error), never a silent skip.
"""

from __future__ import annotations

import struct
from typing import NamedTuple
from zlib import crc32

# AWS's limits: 16 MiB a frame, 128 KiB of headers. A bigger length is a corrupt prelude.
MAX_FRAME = 16 * 1024 * 1024
MAX_HEADERS = 128 * 1024
_PRELUDE = struct.Struct(">III")
_LENGTHS = struct.Struct(">II")
_U32 = struct.Struct(">I")
_U16 = struct.Struct(">H")
_STRING = 7
# the size of a header value of each fixed-size type (0/1 true/false, byte, short, int, long,
# timestamp, uuid); 6 (bytes) and 7 (string) have a 2-byte length first
_FIXED = {0: 0, 1: 0, 2: 1, 3: 2, 4: 4, 5: 8, 8: 8, 9: 16}


class FramingError(ValueError):
    """The upstream's byte stream is not valid framing (a bad CRC, an impossible length).
    ``frames`` are the good ones the same chunk held before the corrupt one: they still count."""

    def __init__(self, message: str, frames: list[Frame] | None = None) -> None:
        super().__init__(message)
        self.frames: list[Frame] = frames or []


class Frame(NamedTuple):
    """One message: its string headers (``:event-type``, ``:message-type``, ...) and payload."""

    headers: dict[str, str]
    payload: bytes

    @property
    def message_type(self) -> str:
        return self.headers.get(":message-type", "event")

    @property
    def event_type(self) -> str:
        return self.headers.get(":event-type", "")


class EventStreamParser:
    """Feed it raw bytes as they arrive; it returns each frame the moment its last byte lands."""

    __slots__ = ("_buffer",)

    def __init__(self) -> None:
        self._buffer = b""

    def feed(self, chunk: bytes) -> list[Frame]:
        data = self._buffer + chunk if self._buffer else chunk
        frames: list[Frame] = []
        try:
            start = self._frames(data, frames)
        except FramingError as exc:
            exc.frames = frames
            raise
        self._buffer = data[start:] if start else data
        return frames

    def _frames(self, data: bytes, frames: list[Frame]) -> int:
        """Append the whole frames of ``data`` to ``frames``; where the rest starts."""
        start = 0
        end = len(data)
        while end - start >= 12:
            total, header_length, prelude_crc = _PRELUDE.unpack_from(data, start)
            if crc32(data[start : start + 8]) != prelude_crc:
                raise FramingError("event-stream prelude CRC mismatch")
            if total > MAX_FRAME or header_length > MAX_HEADERS or header_length > total - 16:
                raise FramingError(f"event-stream frame of impossible length {total}")
            if end - start < total:
                break
            stop = start + total - 4
            if crc32(data[start:stop]) != _U32.unpack_from(data, stop)[0]:
                raise FramingError("event-stream message CRC mismatch")
            body = start + 12 + header_length
            frames.append(Frame(_headers(data, start + 12, body), data[body:stop]))
            start += total
        return start

    @property
    def pending(self) -> int:
        """Bytes of an unfinished frame held back (a stream ending with some is truncated)."""
        return len(self._buffer)


def _headers(data: bytes, at: int, end: int) -> dict[str, str]:
    """The string headers between ``at`` and ``end``; other types are skipped by their size."""
    headers: dict[str, str] = {}
    try:
        while at < end:
            size = data[at]
            name = data[at + 1 : at + 1 + size].decode()
            at += 1 + size
            kind = data[at]
            at += 1
            if kind == _STRING or kind == 6:
                length = _U16.unpack_from(data, at)[0]
                if kind == _STRING:
                    headers[name] = data[at + 2 : at + 2 + length].decode()
                at += 2 + length
            else:
                at += _FIXED[kind]
    except (IndexError, KeyError, UnicodeDecodeError, struct.error):
        raise FramingError("event-stream headers are malformed") from None
    if at != end:
        raise FramingError("event-stream headers overrun their length")
    return headers


def encode_frame(headers: dict[str, str], payload: bytes) -> bytes:
    """One frame with string headers (the simulator's and the tests' writer)."""
    parts = []
    for name, value in headers.items():
        raw_name, raw_value = name.encode(), value.encode()
        parts.append(bytes((len(raw_name),)) + raw_name + b"\x07" + _U16.pack(len(raw_value)))
        parts.append(raw_value)
    header_bytes = b"".join(parts)
    total = 16 + len(header_bytes) + len(payload)
    lengths = _LENGTHS.pack(total, len(header_bytes))
    message = lengths + _U32.pack(crc32(lengths)) + header_bytes + payload
    return message + _U32.pack(crc32(message))


def event(event_type: str, payload: bytes) -> bytes:
    """An ``event`` frame as Bedrock sends one (JSON payload)."""
    return encode_frame(
        {
            ":event-type": event_type,
            ":content-type": "application/json",
            ":message-type": "event",
        },
        payload,
    )


def exception(exception_type: str, payload: bytes) -> bytes:
    """An ``exception`` frame (``throttlingException``, ``modelStreamErrorException``, ...)."""
    return encode_frame(
        {
            ":exception-type": exception_type,
            ":content-type": "application/json",
            ":message-type": "exception",
        },
        payload,
    )

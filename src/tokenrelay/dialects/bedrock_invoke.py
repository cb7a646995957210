"""Anthropic's Messages body on Bedrock's InvokeModel API (``/model/{modelId}/invoke-with-
response-stream``): the body is Anthropic's without ``model`` and ``stream`` and with
``anthropic_version: "bedrock-2023-05-31"``; the answer is Anthropic's stream events, each the
base64 ``bytes`` of a ``chunk`` event-stream frame. Errors are Bedrock's (``dialects.converse``).

Everything Anthropic-specific is ``dialects.anthropic``'s; this module only re-wraps it.
"""

from __future__ import annotations

import base64
from typing import Any

import msgspec

from tokenrelay.dialects import anthropic
from tokenrelay.dialects.converse import (
    EXCEPTIONS,
    encode_error,
    error_headers,
    error_of,
    parse_error,
)
from tokenrelay.dialects.eventstream import EventStreamParser, Frame, event
from tokenrelay.dialects.sse import SSEEvent, SSEParser
from tokenrelay.model import Completion, Error, Event, GatewayError, Request

__all__ = ["encode_error", "error_headers", "parse_error"]

NAME = "bedrock_invoke"
CONTENT_TYPE = "application/vnd.amazon.eventstream"
ID_PREFIX = "msg_bdrk_"
FRAMER = EventStreamParser
VERSION = "bedrock-2023-05-31"

_decode = msgspec.json.decode
_encode = msgspec.json.encode


def encode_request(request: Request, model: str, *, stream: bool) -> bytes:
    body: dict[str, Any] = _decode(anthropic.encode_request(request, model, stream=stream))
    body.pop("model", None)
    body.pop("stream", None)
    body["anthropic_version"] = VERSION
    return _encode(body)


def parse_request(body: bytes) -> Request:
    """The simulator's side: the model is the URL's (set by the caller)."""
    try:
        data = _decode(body)
    except msgspec.DecodeError:
        data = None
    if not isinstance(data, dict) or data.get("anthropic_version") != VERSION:
        raise GatewayError(
            "invalid_request", f'anthropic_version must be "{VERSION}"', 400, param="version"
        )
    data.pop("anthropic_version")
    request = anthropic.parse_request(_encode({**data, "model": "bedrock", "stream": True}))
    request.dialect = NAME
    return request


class InvokeReader:
    """``chunk`` frames in (each an Anthropic stream event), normalized events out."""

    __slots__ = ("_reader",)

    def __init__(self) -> None:
        self._reader = anthropic.stream_reader()

    @property
    def done(self) -> bool:
        return self._reader.done

    def feed(self, frame: Frame) -> list[Event]:
        headers = frame.headers
        if headers.get(":message-type", "event") != "event":
            self._reader.done = True
            name = headers.get(":exception-type") or headers.get(":error-code") or ""
            if name.lower() not in EXCEPTIONS:
                name = "internalServerException"
            return [error_of(name, frame.payload.decode("utf-8", "replace")[:500])]
        if headers.get(":event-type") != "chunk":
            return []
        try:
            data = base64.b64decode(_decode(frame.payload)["bytes"])
            kind = _decode(data)["type"]
        except (msgspec.DecodeError, KeyError, TypeError, ValueError):
            self._reader.done = True
            message = "the upstream sent a chunk that is not an Anthropic event"
            return [Error("upstream_unavailable", message, 502)]
        return self._reader.feed(SSEEvent(kind, data.decode()))


def stream_reader() -> InvokeReader:
    return InvokeReader()


class InvokeWriter:
    """Normalized events in, Anthropic's events as Bedrock ``chunk`` frames out (simulator)."""

    __slots__ = ("_parser", "_writer")

    def __init__(self, request: Request, id: str, model: str) -> None:
        self._writer = anthropic.stream_writer(request, id=id, model=model)
        self._parser = SSEParser()

    def _frames(self, sse: bytes) -> bytes:
        return b"".join(
            event("chunk", _encode({"bytes": base64.b64encode(item.data.encode()).decode()}))
            for item in self._parser.feed(sse)
        )

    def write(self, item: Event) -> bytes:
        if isinstance(item, Error):
            from tokenrelay.dialects.converse import ConverseWriter

            return ConverseWriter().write(item)  # an exception frame, as Bedrock sends it
        return self._frames(self._writer.write(item))

    def close(self) -> bytes:
        return self._frames(self._writer.close())


def stream_writer(request: Request, *, id: str, model: str) -> InvokeWriter:
    return InvokeWriter(request, id, model)


def encode_response(completion: Completion, *, id: str, model: str) -> bytes:
    return anthropic.encode_response(completion, id=id, model=model)


def parse_response(body: bytes) -> Completion:
    return anthropic.parse_response(body)

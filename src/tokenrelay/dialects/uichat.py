"""The Vercel AI SDK's UI message stream: ``POST /api/chat`` as ``useChat`` and its
``DefaultChatTransport`` speak it, so a Next.js page points at tokenrelay unchanged.

The request is the transport's body: ``{id, messages: UIMessage[], trigger, messageId}`` plus
what the page adds with ``body``: ``route`` (or its alias ``model``), ``system``, ``maxTokens``,
``temperature`` and ``metadata``. The answer is SSE ``data:`` lines of UI message chunks
(``start``, ``text-start``, ``text-delta``, ``text-end``, ``reasoning-*``, ``finish``; or
``message-metadata`` and ``error`` when it fails) ending with ``[DONE]``, marked by
``x-vercel-ai-ui-message-stream: v1``.

A failure before the stream is a status with a ``text/plain`` body holding the message, because
the transport throws ``new Error(await response.text())``: the page's ``error.message`` then reads
as a sentence. The ``start`` and ``finish`` chunks carry ``messageMetadata`` (request id, route,
provider, model, attempts; then usage and cost), which lands on the message's ``metadata``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import msgspec

from tokenrelay.dialects import retry_after_seconds
from tokenrelay.dialects.body import decode_body
from tokenrelay.dialects.fields import (
    invalid,
    known_fields,
    optional_number,
    optional_positive_int,
    optional_str,
    route_name,
)
from tokenrelay.dialects.sse import DONE, SSEEvent
from tokenrelay.model import (
    Completion,
    Error,
    ErrorType,
    Event,
    Finish,
    GatewayError,
    ImagePart,
    Message,
    Part,
    Request,
    TextDelta,
    TextPart,
    ThinkingDelta,
    Untranslatable,
    Usage,
    is_error_type,
    merge_usage,
)

NAME = "uichat"
ID_PREFIX = "msg_"  # of the ids the gateway gives its responses
CONTENT_TYPE = "text/event-stream"
ERROR_CONTENT_TYPE = "text/plain; charset=utf-8"
STREAM_HEADERS = [(b"x-vercel-ai-ui-message-stream", b"v1")]

FIELDS = (
    "id",
    "messages",
    "trigger",
    "messageId",
    "route",
    "model",
    "system",
    "maxTokens",
    "temperature",
    "metadata",
)
DEFAULT_ROUTE = "default"
# Parts that only the page shows; a model never saw them, so they are not sent back to one.
_UI_ONLY = ("step-start", "source-url", "source-document")
_DATA_URL = re.compile(r"data:([^;,]+);base64,(.*)", re.DOTALL)
_FINISH = {
    "stop": "stop",
    "stop_sequence": "stop",
    "length": "length",
    "tool_calls": "tool-calls",
    "content_filter": "content-filter",
}

_encode = msgspec.json.encode
_decode = msgspec.json.decode


def parse_request(body: bytes) -> Request:
    data = decode_body(body)
    if not isinstance(data, dict):
        raise invalid("the request body must be a JSON object like useChat sends")
    known_fields(data, FIELDS, "/api/chat")
    raw_messages = data.get("messages")
    if not isinstance(raw_messages, list) or not raw_messages:
        raise invalid("'messages' is required: a non-empty list of UI messages", "messages")
    system = optional_str(data, "system")
    messages: list[Message] = []
    for i, raw in enumerate(raw_messages):
        role, parts = _message(raw, i)
        if role == "system":
            text = "\n".join(part.text for part in parts if isinstance(part, TextPart))
            system = f"{system}\n\n{text}" if system else text
        elif parts:
            messages.append(Message(role, parts))
    if not messages:
        raise invalid("the messages hold no text to answer", "messages")
    route = route_name(data, DEFAULT_ROUTE, alias="model")
    max_tokens = optional_positive_int(data, "maxTokens")
    temperature = optional_number(data, "temperature")
    metadata = data.get("metadata", {})
    if not isinstance(metadata, dict) or not all(
        isinstance(key, str) and isinstance(value, str) for key, value in metadata.items()
    ):
        raise invalid("'metadata' must be an object of string values", "metadata")
    return Request(
        dialect=NAME,
        model=route,
        messages=messages,
        system=system,
        max_tokens=max_tokens,
        temperature=temperature,
        stream=True,
        include_usage=True,
        metadata=metadata,
        # useChat's chat id: its resume (GET /api/chat/{id}/stream) finds the stream by it
        front_options={"chat_id": chat} if isinstance(chat := data.get("id"), str) else {},
    )


def _message(raw: object, i: int) -> tuple[Any, list[Part]]:
    where = f"messages[{i}]"
    if not isinstance(raw, dict):
        raise invalid(f"'{where}' must be a UI message object", where)
    role = raw.get("role")
    if role not in ("system", "user", "assistant"):
        raise invalid(f"'{where}.role' must be system, user or assistant", f"{where}.role")
    parts_raw = raw.get("parts")
    if parts_raw is None and isinstance(raw.get("content"), str):  # AI SDK 4's messages
        parts_raw = [{"type": "text", "text": raw["content"]}]
    if not isinstance(parts_raw, list):
        raise invalid(f"'{where}.parts' must be a list of parts", f"{where}.parts")
    parts: list[Part] = []
    for j, part in enumerate(parts_raw):
        converted = _part(part, f"{where}.parts[{j}]", role)
        if converted is not None:
            parts.append(converted)
    return role, parts


def _part(part: object, where: str, role: str) -> Part | None:
    if not isinstance(part, dict) or not isinstance(part.get("type"), str):
        raise invalid(f"'{where}' must be a part object with a 'type'", where)
    kind: str = part["type"]
    if kind == "text":
        text = part.get("text")
        if not isinstance(text, str):
            raise invalid(f"'{where}.text' must be a string", f"{where}.text")
        return TextPart(text) if text else None
    if kind == "file":
        return _file(part, where, role)
    if kind == "reasoning":
        return None  # a model's thinking is not sent back across providers
    if kind in _UI_ONLY or kind.startswith("data-"):
        return None
    if kind.startswith("tool-") or kind == "dynamic-tool":
        raise invalid(
            f"'{where}' is a tool part; /api/chat relays text and images, and tools run "
            "where they are defined: use /v1/chat/completions or /v1/messages with tools",
            where,
            400,
        )
    raise invalid(f"'{where}' has an unknown part type {kind!r}", where)


def _file(part: Mapping[str, Any], where: str, role: str) -> Part:
    media_type = part.get("mediaType")
    url = part.get("url")
    if not isinstance(media_type, str) or not isinstance(url, str):
        raise invalid(f"'{where}' needs 'mediaType' and 'url' strings", where)
    if role != "user" or not media_type.startswith("image/"):
        raise invalid(
            f"'{where}' is a {media_type} file; only images in user messages can be sent",
            where,
            400,
        )
    found = _DATA_URL.fullmatch(url)
    if found:
        return ImagePart(data=found[2], media_type=found[1])
    if url.startswith(("https://", "http://")):
        return ImagePart(url=url, media_type=media_type)
    raise invalid(f"'{where}.url' must be a data: URL or an http(s) URL", f"{where}.url")


def encode_request(request: Request, model: str, *, stream: bool) -> bytes:
    """The body ``DefaultChatTransport`` would send; ``model`` is the route name."""
    messages: list[dict[str, Any]] = []
    if request.system:
        messages.append(_ui_message("system", [{"type": "text", "text": request.system}], 0))
    for message in request.messages:
        parts: list[dict[str, Any]] = []
        for part in message.content:
            if isinstance(part, TextPart):
                parts.append({"type": "text", "text": part.text})
            elif isinstance(part, ImagePart):
                url = part.url or f"data:{part.media_type};base64,{part.data}"
                media_type = part.media_type or "image/*"
                parts.append({"type": "file", "mediaType": media_type, "url": url})
            else:
                raise Untranslatable("/api/chat cannot carry tool calls or results")
        if message.role == "tool":
            raise Untranslatable("/api/chat cannot carry tool results")
        messages.append(_ui_message(message.role, parts, len(messages)))
    body: dict[str, Any] = {
        "id": "chat",
        "messages": messages,
        "trigger": "submit-message",
        "route": model,
    }
    if request.max_tokens is not None:
        body["maxTokens"] = request.max_tokens
    if request.temperature is not None:
        body["temperature"] = request.temperature
    if request.metadata:
        body["metadata"] = request.metadata
    return _encode(body)


def _ui_message(role: str, parts: list[dict[str, Any]], index: int) -> dict[str, Any]:
    return {"id": f"m{index}", "role": role, "parts": parts}


def _chunk(data: dict[str, Any]) -> bytes:
    return b"data: " + _encode(data) + b"\n\n"


class UIChatWriter:
    """Normalized events in, UI message chunks out. Text and reasoning each become a block
    (``*-start`` … ``*-end``) that closes when the other kind begins or the stream ends."""

    __slots__ = ("_block", "_blocks", "_closed", "_error", "_finish", "_id", "_summary", "_usage")

    def __init__(self, message_id: str) -> None:
        self._id = message_id
        self._block: str | None = None  # "text" or "reasoning", while one is open
        self._blocks = 0
        self._usage = Usage()
        self._finish: Finish | None = None
        self._summary: dict[str, Any] | None = None
        self._closed = False
        self._error: Error | None = None

    def describe(self, head: dict[str, Any]) -> bytes:
        """The opening chunks, with what is known when the head goes out (request id, route,
        provider, model, attempts) as the message's metadata."""
        return _chunk({"type": "start", "messageId": self._id, "messageMetadata": head}) + (
            b'data: {"type":"start-step"}\n\n'
        )

    def summarize(self, summary: dict[str, Any]) -> None:
        """What the ``finish`` chunk carries as metadata: usage, cost, time to first token."""
        self._summary = summary

    def _open(self, kind: str) -> bytes:
        out = self._end_block()
        self._block = kind
        self._blocks += 1
        return out + _chunk({"type": f"{kind}-start", "id": f"{kind[0]}{self._blocks}"})

    def _end_block(self) -> bytes:
        if self._block is None:
            return b""
        kind, self._block = self._block, None
        return _chunk({"type": f"{kind}-end", "id": f"{kind[0]}{self._blocks}"})

    def write(self, event: Event) -> bytes:
        if isinstance(event, TextDelta):
            if not event.text:
                return b""
            out = b"" if self._block == "text" else self._open("text")
            return out + (
                b'data: {"type":"text-delta","id":"t'
                + str(self._blocks).encode()
                + b'","delta":'
                + _encode(event.text)
                + b"}\n\n"
            )
        if isinstance(event, ThinkingDelta):
            if not event.text:
                return b""
            out = b"" if self._block == "reasoning" else self._open("reasoning")
            delta = {"type": "reasoning-delta", "id": f"r{self._blocks}", "delta": event.text}
            return out + _chunk(delta)
        if isinstance(event, Usage):
            self._usage = merge_usage(self._usage, event)
            return b""
        if isinstance(event, Finish):
            self._finish = event
            return b""
        if isinstance(event, Error):
            # Held for close(): the SDK stops reading at an error chunk, so the metadata (usage
            # and cost of the failed answer) must go out just before it.
            self._error = event
            return self._end_block()
        return b""  # no tools are requested through /api/chat, so no tool calls arrive

    def close(self) -> bytes:
        if self._closed:
            return b""
        self._closed = True
        if self._error is not None:
            out = b""
            if self._summary is not None:
                out = _chunk({"type": "message-metadata", "messageMetadata": self._summary})
            return out + _chunk({"type": "error", "errorText": self._error.message}) + DONE
        reason = _FINISH.get(self._finish.reason, "other") if self._finish else "other"
        finish: dict[str, Any] = {"type": "finish", "finishReason": reason}
        if self._summary is not None:
            finish["messageMetadata"] = self._summary
        return self._end_block() + b'data: {"type":"finish-step"}\n\n' + _chunk(finish) + DONE


def stream_writer(request: Request, *, id: str, model: str) -> UIChatWriter:
    return UIChatWriter(id)


class UIChatReader:
    """Reads the stream back into events (tests and the Python client)."""

    __slots__ = ("done", "metadata")

    def __init__(self) -> None:
        self.done = False
        self.metadata: dict[str, Any] = {}

    def feed(self, sse: SSEEvent) -> list[Event]:
        if sse.data == "[DONE]":
            self.done = True
            return []
        try:
            chunk = _decode(sse.data)
        except msgspec.DecodeError:
            return [Error("api_error", f"unreadable chunk from the gateway: {sse.data[:200]}", 502)]
        if not isinstance(chunk, dict):
            return []
        kind = chunk.get("type")
        if isinstance(chunk.get("messageMetadata"), dict):
            self.metadata.update(chunk["messageMetadata"])
        if kind == "text-delta":
            return [TextDelta(str(chunk.get("delta", "")))]
        if kind == "reasoning-delta":
            return [ThinkingDelta(str(chunk.get("delta", "")))]
        if kind == "error":
            return [Error("api_error", str(chunk.get("errorText", "")), 500)]
        if kind == "finish":
            events: list[Event] = []
            usage = self.metadata.get("usage")
            if isinstance(usage, dict):
                events.append(
                    Usage(usage.get("inputTokens"), usage.get("outputTokens"), None, None, None)
                )
            reason = {"length": "length", "content-filter": "content_filter"}.get(
                str(chunk.get("finishReason")), "stop"
            )
            events.append(Finish(reason))  # type: ignore[arg-type]
            return events
        return []


def stream_reader() -> UIChatReader:
    return UIChatReader()


def encode_response(completion: Completion, *, id: str, model: str) -> bytes:
    """The finished assistant message as a ``UIMessage`` (useChat only streams; this is for
    completeness of the dialect)."""
    parts: list[dict[str, Any]] = []
    if completion.thinking:
        parts.append({"type": "reasoning", "text": completion.thinking})
    if completion.text:
        parts.append({"type": "text", "text": completion.text})
    return _encode({"id": id, "role": "assistant", "parts": parts})


def parse_response(body: bytes) -> Completion:
    data = _decode(body)
    text = "".join(p.get("text", "") for p in data.get("parts", []) if p.get("type") == "text")
    return Completion(text=text)


def encode_error(error: GatewayError) -> bytes:
    return error.message.encode()


def parse_error(status: int, body: bytes, headers: Mapping[str, str]) -> Error:
    kind = headers.get("x-tokenrelay-error-type")
    fallback: ErrorType = "api_error" if status >= 500 else "invalid_request"
    text = body.decode("utf-8", "replace")[:500] or f"HTTP {status}"
    return Error(
        kind if is_error_type(kind) else fallback, text, status, retry_after_seconds(headers)
    )

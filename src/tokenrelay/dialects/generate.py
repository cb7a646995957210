"""The article's simple protocol: ``POST /api/generate`` with ``{"prompt": ...}``, answered with
``data: {"text": ...}`` lines and a closing ``data: [DONE]``.

By default every data line is text, an error or ``[DONE]``, exactly what the article's client
parses. A request may opt into more with ``"include": ["usage", "finish", "thinking", "meta"]``;
``meta`` closes the stream with ``{"meta": {...}}``: request id, route, provider, model, attempts,
whether it failed over, usage, cost and time to first token (what the playground shows).
"""

from __future__ import annotations

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
from tokenrelay.dialects.sse import DONE, SSEEvent, frame
from tokenrelay.model import (
    Completion,
    Error,
    ErrorType,
    Event,
    Finish,
    GatewayError,
    Message,
    Request,
    TextDelta,
    TextPart,
    ThinkingDelta,
    Untranslatable,
    Usage,
    is_error_type,
    merge_usage,
)

NAME = "generate"
ID_PREFIX = ""  # of the ids the gateway gives its responses
CONTENT_TYPE = "text/event-stream; charset=utf-8"

FIELDS = ("prompt", "maxTokens", "route", "include", "systemPrompt", "temperature", "stream")
INCLUDES = frozenset({"usage", "finish", "thinking", "meta"})
DEFAULT_ROUTE = "default"

_encode = msgspec.json.encode
_decode = msgspec.json.decode


def parse_request(body: bytes) -> Request:
    data = decode_body(body)
    if not isinstance(data, dict):
        raise invalid('the request body must be a JSON object like {"prompt": "..."}')
    known_fields(data, FIELDS, "/api/generate")
    prompt = data.get("prompt")
    if not isinstance(prompt, str):
        raise invalid("'prompt' is required and must be a string", param="prompt")
    if not prompt.strip():
        raise invalid("'prompt' is empty; send the text to answer", param="prompt")
    max_tokens = optional_positive_int(data, "maxTokens")
    route = route_name(data, DEFAULT_ROUTE)
    include = data.get("include", [])
    if not isinstance(include, list) or not all(isinstance(item, str) for item in include):
        raise invalid("'include' must be a list of strings", param="include")
    bad = sorted(set(include) - INCLUDES)
    if bad:
        raise invalid(
            f"'include' holds {bad[0]!r}; it may hold {', '.join(sorted(INCLUDES))}",
            param="include",
        )
    system = optional_str(data, "systemPrompt")
    temperature = optional_number(data, "temperature")
    stream = data.get("stream", True)
    if not isinstance(stream, bool):
        raise invalid("'stream' must be true or false", param="stream")
    return Request(
        dialect=NAME,
        model=route,
        messages=[Message("user", [TextPart(prompt)])],
        system=system,
        max_tokens=max_tokens,
        temperature=temperature,
        stream=stream,
        include_usage="usage" in include,
        front_options={"include": include} if include else {},
    )


def encode_request(request: Request, model: str, *, stream: bool) -> bytes:
    """The body a client sends; ``model`` is the route name. Only a single user prompt fits."""
    parts = request.messages[0].content if len(request.messages) == 1 else []
    if any(message.role == "system" for message in request.messages):
        raise Untranslatable(
            "/api/generate cannot carry a system message in the middle of the conversation; "
            "use /v1/messages or /v1/chat/completions",
            param="messages",
        )
    if (
        len(request.messages) != 1
        or request.messages[0].role != "user"
        or len(parts) != 1
        or not isinstance(parts[0], TextPart)
    ):
        raise Untranslatable(
            "/api/generate takes a single user prompt; use /v1/messages or "
            "/v1/chat/completions for conversations, images and tools"
        )
    if request.tools or request.stop or request.top_p is not None:
        raise Untranslatable("/api/generate cannot carry tools, stop sequences or top_p")
    body: dict[str, Any] = {"prompt": parts[0].text, "route": model}
    if request.max_tokens is not None:
        body["maxTokens"] = request.max_tokens
    if request.system is not None:
        body["systemPrompt"] = request.system
    if request.temperature is not None:
        body["temperature"] = request.temperature
    include = list(request.front_options.get("include", []))
    if request.include_usage and "usage" not in include:
        include.append("usage")
    if include:
        body["include"] = include
    if not stream:
        body["stream"] = False
    return _encode(body)


class GenerateWriter:
    """Writes text as ``{"text": ...}`` lines; usage, finish and thinking only when asked for."""

    __slots__ = ("_closed", "_finish", "_include", "_meta", "_usage")

    def __init__(self, include: frozenset[str]) -> None:
        self._include = include
        self._usage = Usage()
        self._finish: Finish | None = None
        self._meta: dict[str, Any] | None = None
        self._closed = False

    def summarize(self, summary: dict[str, Any]) -> None:
        """The request's description, sent at the end when ``include`` holds ``meta``."""
        if "meta" in self._include:
            self._meta = summary

    def write(self, event: Event) -> bytes:
        if isinstance(event, TextDelta):
            return b'data: {"text":' + _encode(event.text) + b"}\n\n" if event.text else b""
        if isinstance(event, Usage):
            self._usage = merge_usage(self._usage, event)
            return b""
        if isinstance(event, Finish):
            self._finish = event
            return b""
        if isinstance(event, Error):
            # What follows is close(): the meta when asked for (what the failed answer cost),
            # then [DONE]. Nothing but the error is sent in place of usage and finish.
            self._include = self._include & {"meta"}
            error = {"type": event.type, "message": event.message}
            return frame(_encode({"error": error}))
        if isinstance(event, ThinkingDelta) and "thinking" in self._include and event.text:
            return frame(_encode({"thinking": event.text}))
        return b""  # tool calls cannot be requested on this protocol, so none arrive

    def close(self) -> bytes:
        if self._closed:
            return b""
        self._closed = True
        out = b""
        if "usage" in self._include:
            out += frame(_encode({"usage": _usage_json(self._usage)}))
        if "finish" in self._include and self._finish is not None:
            out += frame(_encode({"finish": _finish_json(self._finish)}))
        if self._meta is not None:
            out += frame(_encode({"meta": self._meta}))
        return out + DONE


def stream_writer(request: Request, *, id: str, model: str) -> GenerateWriter:
    include = set(request.front_options.get("include", ()))
    if request.include_usage:
        include.add("usage")
    return GenerateWriter(frozenset(include))


class GenerateReader:
    """Reads the stream back (the Python client and ``tokenrelay ask`` use it)."""

    __slots__ = ("done",)

    def __init__(self) -> None:
        self.done = False

    def feed(self, sse: SSEEvent) -> list[Event]:
        if sse.data == "[DONE]":
            self.done = True
            return []
        try:
            data = _decode(sse.data)
        except msgspec.DecodeError:
            return [Error("api_error", f"unreadable event from the gateway: {sse.data[:200]}", 502)]
        if not isinstance(data, dict):
            return []
        if "text" in data:
            return [TextDelta(data["text"])]
        if "error" in data:
            error = data["error"] if isinstance(data["error"], dict) else {"message": data["error"]}
            return [Error(error.get("type", "api_error"), str(error.get("message", "")), 500)]
        if "usage" in data:
            return [_usage_from_json(data["usage"])]
        if "finish" in data:
            finish = data["finish"]
            return [Finish(finish.get("reason", "stop"), finish.get("stopSequence"))]
        if "thinking" in data:
            return [ThinkingDelta(data["thinking"])]
        return []  # "meta" describes the request; readers that want it parse it themselves


def stream_reader() -> GenerateReader:
    return GenerateReader()


def _usage_json(usage: Usage) -> dict[str, int]:
    fields = {
        "inputTokens": usage.input_tokens,
        "outputTokens": usage.output_tokens,
        "cacheReadTokens": usage.cache_read_tokens,
        "cacheWriteTokens": usage.cache_write_tokens,
        "reasoningTokens": usage.reasoning_tokens,
    }
    return {name: value for name, value in fields.items() if value is not None}


def _usage_from_json(data: Mapping[str, Any]) -> Usage:
    return Usage(
        data.get("inputTokens"),
        data.get("outputTokens"),
        data.get("cacheReadTokens"),
        data.get("cacheWriteTokens"),
        data.get("reasoningTokens"),
    )


def _finish_json(finish: Finish) -> dict[str, Any]:
    out: dict[str, Any] = {"reason": finish.reason}
    if finish.stop_sequence is not None:
        out["stopSequence"] = finish.stop_sequence
    return out


def encode_response(completion: Completion, *, id: str, model: str) -> bytes:
    body: dict[str, Any] = {
        "id": id,
        "text": completion.text,
        "usage": _usage_json(completion.usage),
    }
    if completion.finish is not None:
        body["finish"] = _finish_json(completion.finish)
    return _encode(body)


def parse_response(body: bytes) -> Completion:
    data = _decode(body)
    finish = data.get("finish")
    return Completion(
        text=data.get("text", ""),
        usage=_usage_from_json(data.get("usage", {})),
        finish=Finish(finish.get("reason", "stop"), finish.get("stopSequence")) if finish else None,
    )


def encode_error(error: GatewayError) -> bytes:
    body: dict[str, Any] = {"type": error.type, "message": error.message}
    if error.param is not None:
        body["param"] = error.param
    return _encode({"error": body})


def parse_error(status: int, body: bytes, headers: Mapping[str, str]) -> Error:
    retry_after = retry_after_seconds(headers)
    try:
        error = _decode(body)["error"]
        kind, message = error["type"], str(error["message"])
    except (msgspec.DecodeError, KeyError, TypeError):
        kind, message = None, body.decode("utf-8", "replace")[:500] or f"HTTP {status}"
    fallback: ErrorType = "api_error" if status >= 500 else "invalid_request"
    return Error(kind if is_error_type(kind) else fallback, message, status, retry_after)

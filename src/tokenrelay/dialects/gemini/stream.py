"""``GenerateContentResponse`` both ways: the stream reader and writer, whole responses."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import msgspec

from tokenrelay.dialects.gemini.errors import _error_from, _error_json
from tokenrelay.dialects.gemini.wire import (
    _FINISH_IN,
    _FINISH_OUT,
    FILTERED,
    _decode,
    _encode,
)
from tokenrelay.dialects.sse import SSEEvent, frame
from tokenrelay.model import (
    Completion,
    Error,
    Event,
    Finish,
    Request,
    TextDelta,
    ThinkingDelta,
    ToolCall,
    ToolCallDelta,
    Usage,
    merge_usage,
)

# --- responses ---------------------------------------------------------------------------------


def _usage_from(meta: Mapping[str, Any], model: str | None) -> Usage:
    """``candidatesTokenCount`` excludes thoughts; our ``output_tokens`` includes them."""
    thoughts = meta.get("thoughtsTokenCount")
    candidates = meta.get("candidatesTokenCount")
    output = None
    if candidates is not None or thoughts is not None:
        output = (candidates or 0) + (thoughts or 0)
    prompt = meta.get("promptTokenCount")
    tool_prompt = meta.get("toolUsePromptTokenCount")
    if prompt is not None and tool_prompt:
        prompt += tool_prompt
    return Usage(
        input_tokens=prompt,
        output_tokens=output,
        cache_read_tokens=meta.get("cachedContentTokenCount"),
        reasoning_tokens=thoughts,
        model=model,
    )


def _usage_json(usage: Usage) -> dict[str, int]:
    prompt = usage.input_tokens or 0
    output = usage.output_tokens or 0
    thoughts = usage.reasoning_tokens or 0
    out = {
        "promptTokenCount": prompt,
        "candidatesTokenCount": max(0, output - thoughts),
        "totalTokenCount": prompt + output,
    }
    if usage.cache_read_tokens:
        out["cachedContentTokenCount"] = usage.cache_read_tokens
    if thoughts:
        out["thoughtsTokenCount"] = thoughts
    return out


class GeminiReader:
    """``GenerateContentResponse`` chunks in, normalized events out. A function call arrives
    whole (its ``args`` an object); its id is Gemini's, or made up when AI Studio sends none."""

    __slots__ = ("_calls", "_served", "done")

    def __init__(self) -> None:
        self.done = False
        self._calls = 0
        self._served: str | None = None

    def feed(self, sse: SSEEvent) -> list[Event]:
        try:
            data = _decode(sse.data)
        except msgspec.DecodeError:
            return [Error("api_error", f"unreadable event from Gemini: {sse.data[:200]}", 502)]
        if not isinstance(data, dict):
            return []
        return self.chunk(data)

    def chunk(self, data: dict[str, Any]) -> list[Event]:
        if "error" in data:
            self.done = True
            return [_error_from(data["error"], 500, None)]
        events: list[Event] = []
        served = data.get("modelVersion")
        if isinstance(served, str):
            self._served = served
        feedback = data.get("promptFeedback")
        candidates = data.get("candidates") or []
        if isinstance(feedback, dict) and feedback.get("blockReason") and not candidates:
            self.done = True
            reason = feedback["blockReason"]
            return [
                Error(
                    "invalid_request",
                    f"Gemini blocked the prompt ({reason}); change the prompt",
                    400,
                )
            ]
        finish: str | None = None
        for candidate in candidates[:1]:
            content = candidate.get("content") or {}
            for part in content.get("parts") or ():
                events.extend(self._part(part))
            finish = candidate.get("finishReason") or finish
        meta = data.get("usageMetadata")
        if isinstance(meta, dict):
            events.append(_usage_from(meta, self._served))
        if finish:
            self.done = True
            events.append(self._finish(finish))
        return events

    def _part(self, part: Mapping[str, Any]) -> list[Event]:
        signature = part.get("thoughtSignature")
        call = part.get("functionCall")
        if isinstance(call, dict):
            index = self._calls
            self._calls += 1
            call_id = str(call.get("id") or f"call_{index}")
            args = _encode(call.get("args") or {}).decode()
            return [
                ToolCallDelta(index, call_id, str(call.get("name", "")), args, signature=signature)
            ]
        text = part.get("text")
        if part.get("thought") is True:
            return [ThinkingDelta(text or "", signature)]
        out: list[Event] = []
        if signature:
            out.append(ThinkingDelta("", signature))
        if isinstance(text, str) and text:
            out.append(TextDelta(text))
        return out

    def _finish(self, reason: str) -> Event:
        if reason in FILTERED:
            return Finish("content_filter")
        if reason in ("MALFORMED_FUNCTION_CALL", "UNEXPECTED_TOOL_CALL"):
            return Error("api_error", f"Gemini ended the answer with {reason}", 502)
        if self._calls:
            return Finish("tool_calls")
        return Finish(_FINISH_IN.get(reason, "stop"))


def stream_reader() -> GeminiReader:
    return GeminiReader()


class GeminiWriter:
    """Normalized events in, ``data: {GenerateContentResponse}`` lines out. A tool call's
    argument pieces are held until the call is whole (Gemini sends ``args`` as one object);
    usage and the finish reason go out together on the last chunk."""

    __slots__ = ("_call", "_closed", "_finish", "_head", "_id", "_model", "_usage")

    def __init__(self, id: str, model: str) -> None:
        self._id = id
        self._model = model
        self._usage = Usage()
        self._call: ToolCall | None = None
        self._finish: Finish | None = None
        self._closed = False
        self._head = b'"modelVersion":' + _encode(model) + b',"responseId":' + _encode(id) + b"}"

    def _chunk(self, parts: list[dict[str, Any]], tail: dict[str, Any] | None = None) -> bytes:
        candidate: dict[str, Any] = {"content": {"role": "model", "parts": parts}, "index": 0}
        body: dict[str, Any] = {"candidates": [candidate]}
        if tail:
            candidate.update(tail.pop("candidate", {}))
            body.update(tail)
        return b"data: " + _encode(body)[:-1] + b"," + self._head + b"\n\n"

    def _flush_call(self) -> bytes:
        call = self._call
        if call is None:
            return b""
        self._call = None
        try:
            args = _decode(call.arguments or "{}")
        except msgspec.DecodeError:
            args = {}
        fc: dict[str, Any] = {"name": call.name, "args": args}
        if call.id and not call.id.startswith("call_"):
            fc["id"] = call.id
        part: dict[str, Any] = {"functionCall": fc}
        if call.signature:
            part["thoughtSignature"] = call.signature
        return self._chunk([part])

    def write(self, event: Event) -> bytes:
        if type(event) is TextDelta:
            if not event.text:
                return b""
            head = self._flush_call() if self._call is not None else b""
            return (
                head
                + b'data: {"candidates":[{"content":{"role":"model","parts":[{"text":'
                + _encode(event.text)
                + b'}]},"index":0}],'
                + self._head
                + b"\n\n"
            )
        if isinstance(event, ToolCallDelta):
            out = b""
            if event.id is not None or event.name is not None or self._call is None:
                out = self._flush_call()
                self._call = ToolCall(event.id or f"call_{event.index}", event.name or "")
            self._call.arguments += event.arguments
            if event.signature:
                self._call.signature = event.signature
            return out
        if isinstance(event, ThinkingDelta):
            head = self._flush_call()
            if not event.text and not event.signature:
                return head
            part: dict[str, Any] = {"text": event.text}
            if event.text:
                part["thought"] = True
            if event.signature:
                part["thoughtSignature"] = event.signature
            return head + self._chunk([part])
        if isinstance(event, Usage):
            self._usage = merge_usage(self._usage, event)
            return b""
        if isinstance(event, Finish):
            self._finish = event
            return b""
        if isinstance(event, Error):
            self._closed = True
            return self._flush_call() + frame(_encode({"error": _error_json(event)}))
        return b""

    def close(self) -> bytes:
        if self._closed:
            return b""
        self._closed = True
        out = self._flush_call()
        finish = self._finish or Finish()
        tail = {
            "candidate": {"finishReason": _FINISH_OUT[finish.reason]},
            "usageMetadata": _usage_json(self._usage),
        }
        return out + self._chunk([{"text": ""}], tail)


def stream_writer(request: Request, *, id: str, model: str) -> GeminiWriter:
    return GeminiWriter(id, model)


def encode_response(completion: Completion, *, id: str, model: str) -> bytes:
    parts: list[dict[str, Any]] = []
    if completion.thinking:
        part: dict[str, Any] = {"text": completion.thinking, "thought": True}
        if completion.thinking_signature:
            part["thoughtSignature"] = completion.thinking_signature
        parts.append(part)
    elif completion.thinking_signature:
        parts.append({"text": "", "thoughtSignature": completion.thinking_signature})
    if completion.text:
        parts.append({"text": completion.text})
    for call in completion.tool_calls:
        try:
            args = _decode(call.arguments or "{}")
        except msgspec.DecodeError:
            args = {}
        fc: dict[str, Any] = {"name": call.name, "args": args}
        if call.id and not call.id.startswith("call_"):
            fc["id"] = call.id
        out: dict[str, Any] = {"functionCall": fc}
        if call.signature:
            out["thoughtSignature"] = call.signature
        parts.append(out)
    finish = completion.finish or Finish()
    body = {
        "candidates": [
            {
                "content": {"role": "model", "parts": parts},
                "finishReason": _FINISH_OUT[finish.reason],
                "index": 0,
            }
        ],
        "usageMetadata": _usage_json(completion.usage),
        "modelVersion": model,
        "responseId": id,
    }
    return _encode(body)


def parse_response(body: bytes) -> Completion:
    data = _decode(body)
    reader = GeminiReader()
    completion = Completion()
    from tokenrelay.model import Accumulator

    accumulator = Accumulator()
    accumulator.completion = completion
    chunks = data if isinstance(data, list) else [data]
    for chunk in chunks:
        if isinstance(chunk, dict):
            for event in reader.chunk(chunk):
                accumulator.add(event)
    return accumulator.result()

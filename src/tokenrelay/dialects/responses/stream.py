"""The Responses event stream, both ways: normalized events to OpenAI's SSE (front and
simulator) and OpenAI's SSE to normalized events (a Responses upstream).

The writer opens one output item per run of one kind of content (a reasoning item for thinking,
a message for text, one call item per tool call), closes it with its ``.done`` events when the
next begins, and ends with exactly one of ``response.completed``, ``response.incomplete`` or
``response.failed`` carrying the whole response object. Every event's ``sequence_number`` counts
from 0. Deltas are three pre-encoded byte strings around the JSON string of the text.
"""

from __future__ import annotations

import time
from typing import Any

import msgspec

from tokenrelay.dialects.responses.wire import (
    CUSTOM_TOOLS,
    ECHO,
    FOREIGN_CODES,
    RESULT,
    call_item,
    failed_error,
    message_item,
    reasoning_item,
    response_object,
    usage_from_json,
    usage_json,
)
from tokenrelay.dialects.sse import SSEEvent
from tokenrelay.model import (
    ERROR_STATUS,
    Error,
    Event,
    Finish,
    Request,
    TextDelta,
    ThinkingDelta,
    ToolCallDelta,
    Usage,
    merge_usage,
)

_encode = msgspec.json.encode
_decode = msgspec.json.decode

_NONE, _TEXT, _THINKING, _TOOL = 0, 1, 2, 3
_SEQ_TAIL = b',"sequence_number":%d}\n\n'
_INCOMPLETE_REASONS = {"length": "max_output_tokens", "content_filter": "content_filter"}


def _frame(data: dict[str, Any]) -> bytes:
    kind: str = data["type"]
    return b"event: " + kind.encode() + b"\ndata: " + _encode(data) + b"\n\n"


class _Item:
    """The output item being written: its kind, ids, and the text or arguments so far."""

    __slots__ = ("call_id", "custom", "id", "index", "kind", "name", "pieces", "signature", "tool")

    def __init__(self, kind: int, id: str, index: int) -> None:
        self.kind = kind
        self.id = id
        self.index = index
        self.pieces: list[str] = []
        self.call_id = ""
        self.name = ""
        self.custom = False
        self.signature: str | None = None
        self.tool = -1  # our index of the tool call this item is


class ResponsesWriter:
    __slots__ = (
        "_base",
        "_closed",
        "_custom",
        "_finish",
        "_head",
        "_item",
        "_output",
        "_response",
        "_seq",
        "_started",
        "_text",
        "_tools",
        "_usage",
        "keep",
        "result",
    )

    def __init__(
        self,
        id: str,
        model: str,
        echo: dict[str, Any],
        custom: frozenset[str],
        keep: dict[str, Any] | None = None,
    ) -> None:
        self._response = response_object(id, model, echo)
        # where the final response object goes too (a request's front_options: a stored
        # response keeps what the client saw)
        self.keep = keep
        self._base = id.removeprefix("resp_")
        self._custom = custom
        self._seq = 0
        self._output: list[dict[str, Any]] = []
        self._item: _Item | None = None
        self._text: list[str] | None = None  # the open message's text, while one is open
        self._head = b""  # the bytes before a delta's JSON string in the open item
        self._tools: dict[int, _Item] = {}  # our tool index -> its item
        self._usage = Usage()
        self._finish: Finish | None = None
        self._started = self._closed = False
        self.result: dict[str, Any] | None = None  # the final response object, once ended

    def _event(self, data: dict[str, Any]) -> bytes:
        data["sequence_number"] = self._seq
        self._seq += 1
        return _frame(data)

    def _delta(self, text: str) -> bytes:
        seq = self._seq
        self._seq = seq + 1
        return self._head + _encode(text) + _SEQ_TAIL % seq

    def _start(self) -> bytes:
        if self._started:
            return b""
        self._started = True
        response = self._response
        return self._event({"type": "response.created", "response": response}) + self._event(
            {"type": "response.in_progress", "response": response}
        )

    def write(self, event: Event) -> bytes:
        if type(event) is TextDelta and self._text is not None:  # the hot path: more text
            text = event.text
            if not text:
                return b""
            self._text.append(text)
            seq = self._seq
            self._seq = seq + 1
            return self._head + _encode(text) + _SEQ_TAIL % seq
        if self._closed:
            return b""
        if isinstance(event, TextDelta):
            if not event.text:
                return b""
            out = self._open_text()
            assert self._item is not None
            self._text = self._item.pieces
            self._item.pieces.append(event.text)
            return out + self._delta(event.text)
        if isinstance(event, ThinkingDelta):
            return self._thinking(event)
        if isinstance(event, ToolCallDelta):
            return self._tool_call(event)
        if isinstance(event, Usage):
            self._usage = merge_usage(self._usage, event)
            return b""
        if isinstance(event, Finish):
            self._finish = event
            return b""
        return self._fail(event)

    # items

    def _open(self, kind: int, prefix: str) -> tuple[bytes, _Item]:
        out = self._start() + self._close_item("completed")
        index = len(self._output)
        item = self._item = _Item(kind, f"{prefix}_{self._base}_{index}", index)
        return out, item

    def _open_text(self) -> bytes:
        out, item = self._open(_TEXT, "msg")
        added: dict[str, Any] = {"id": item.id, "type": "message", "status": "in_progress"}
        added |= {"content": [], "role": "assistant"}
        where = {"item_id": item.id, "output_index": item.index, "content_index": 0}
        self._head = (
            b'event: response.output_text.delta\ndata: {"type":"response.output_text.delta",'
            + _encode(where)[1:-1]
            + b',"logprobs":[],"delta":'
        )
        part = {"type": "output_text", "annotations": [], "logprobs": [], "text": ""}
        return (
            out
            + self._added(item, added)
            + self._event({"type": "response.content_part.added", **where, "part": part})
        )

    def _thinking(self, event: ThinkingDelta) -> bytes:
        item = self._item
        out = b""
        if item is None or item.kind != _THINKING or (item.signature and event.text):
            out, item = self._open(_THINKING, "rs")
            out += self._added(item, {"id": item.id, "type": "reasoning", "summary": []})
        if event.text:
            if not item.pieces:
                where = {"item_id": item.id, "output_index": item.index, "summary_index": 0}
                part = {"type": "summary_text", "text": ""}
                out += self._event(
                    {"type": "response.reasoning_summary_part.added", **where, "part": part}
                )
                self._head = (
                    b"event: response.reasoning_summary_text.delta\ndata: "
                    b'{"type":"response.reasoning_summary_text.delta",'
                    + _encode(where)[1:-1]
                    + b',"delta":'
                )
            item.pieces.append(event.text)
            out += self._delta(event.text)
        if event.signature:
            item.signature = event.signature
        return out

    def _tool_call(self, event: ToolCallDelta) -> bytes:
        item = self._item
        out = b""
        if item is None or item.kind != _TOOL or item.tool != event.index:
            known = self._tools.get(event.index)
            if known is not None:  # more of a call already closed: keep the arguments whole
                known.pieces.append(event.arguments)
                self._output[known.index] = self._call_json(known, "completed")
                return b""
            name = event.name or ""
            custom = name in self._custom
            out, item = self._open(_TOOL, "ctc" if custom else "fc")
            item.call_id = event.id or f"call_{self._base}_{event.index}"
            item.name = name
            item.custom = custom
            item.tool = event.index
            self._tools[event.index] = item
            added = call_item(item.id, item.call_id, name, "", "in_progress", custom)
            out += self._added(item, added)
            if not custom:
                where = {"item_id": item.id, "output_index": item.index}
                self._head = (
                    b"event: response.function_call_arguments.delta\ndata: "
                    b'{"type":"response.function_call_arguments.delta",'
                    + _encode(where)[1:-1]
                    + b',"delta":'
                )
        if event.arguments:
            item.pieces.append(event.arguments)
            if not item.custom:  # a custom tool's input is known only once its JSON is whole
                out += self._delta(event.arguments)
        return out

    def _added(self, item: _Item, data: dict[str, Any]) -> bytes:
        return self._event(
            {"type": "response.output_item.added", "output_index": item.index, "item": data}
        )

    def _close_item(self, status: str) -> bytes:
        item = self._item
        if item is None:
            return b""
        self._item = self._text = None
        text = "".join(item.pieces)
        where: dict[str, Any] = {"item_id": item.id, "output_index": item.index}
        if item.kind == _TEXT:
            where["content_index"] = 0
            part = {"type": "output_text", "annotations": [], "logprobs": [], "text": text}
            out = self._event(
                {"type": "response.output_text.done", **where, "text": text, "logprobs": []}
            )
            out += self._event({"type": "response.content_part.done", **where, "part": part})
            done = message_item(item.id, text, status)
        elif item.kind == _THINKING:
            out = b""
            if item.pieces:
                where["summary_index"] = 0
                part = {"type": "summary_text", "text": text}
                out += self._event(
                    {"type": "response.reasoning_summary_text.done", **where, "text": text}
                )
                out += self._event(
                    {"type": "response.reasoning_summary_part.done", **where, "part": part}
                )
            done = reasoning_item(item.id, [text] if item.pieces else [], item.signature)
        else:
            done = self._call_json(item, status)
            if item.custom:
                value = done["input"]
                out = self._event(
                    {"type": "response.custom_tool_call_input.delta", **where, "delta": value}
                )
                out += self._event(
                    {"type": "response.custom_tool_call_input.done", **where, "input": value}
                )
            else:
                out = self._event(
                    {"type": "response.function_call_arguments.done", **where, "arguments": text}
                )
        self._output.append(done)
        return out + self._event(
            {"type": "response.output_item.done", "output_index": item.index, "item": done}
        )

    def _call_json(self, item: _Item, status: str) -> dict[str, Any]:
        arguments = "".join(item.pieces)
        return call_item(item.id, item.call_id, item.name, arguments, status, item.custom)

    # the end

    def _fail(self, error: Error) -> bytes:
        out = self._start() + self._close_item("incomplete")
        self._closed = True
        response = self._final("failed")
        response["error"] = failed_error(error)
        return out + self._event({"type": "response.failed", "response": response})

    def _final(self, status: str) -> dict[str, Any]:
        response = self.result = dict(self._response)
        response["status"] = status
        response["output"] = self._output
        response["usage"] = usage_json(self._usage)
        if self.keep is not None:
            self.keep[RESULT] = response
        return response

    def close(self) -> bytes:
        if self._closed:
            return b""
        finish = self._finish or Finish()
        reason = _INCOMPLETE_REASONS.get(finish.reason)
        out = self._start() + self._close_item("incomplete" if reason else "completed")
        self._closed = True
        if reason:
            response = self._final("incomplete")
            response["incomplete_details"] = {"reason": reason}
            return out + self._event({"type": "response.incomplete", "response": response})
        response = self._final("completed")
        response["completed_at"] = int(time.time())
        return out + self._event({"type": "response.completed", "response": response})


def stream_writer(request: Request, *, id: str, model: str) -> ResponsesWriter:
    options = request.front_options
    return ResponsesWriter(
        id, model, options.get(ECHO, {}), frozenset(options.get(CUSTOM_TOOLS, ())), options
    )


# --- reading a Responses upstream ---------------------------------------------------------------


class ResponsesReader:
    """A Responses upstream's events to normalized ones. Tool calls are numbered from 0 in the
    order their items open; a custom tool call's input becomes the arguments ``{"input": ...}``,
    streamed as JSON fragments; reasoning summaries (and raw reasoning text, as open models
    send it) become thinking, and a reasoning item's ``encrypted_content`` its signature.
    Unknown events are skipped."""

    __slots__ = ("_argued", "_calls", "_custom", "_summaries", "done")

    def __init__(self) -> None:
        self.done = False
        self._calls: dict[str, int] = {}  # item id -> our tool index
        self._custom: set[str] = set()  # item ids of custom tool calls
        self._argued: set[str] = set()  # item ids whose arguments came as deltas
        self._summaries: set[str] = set()  # item ids with a summary part already

    def feed(self, sse: SSEEvent) -> list[Event]:
        if self.done:
            return []
        try:
            data = _decode(sse.data)
        except msgspec.DecodeError:
            self.done = True
            message = f"the Responses upstream sent an event that is not JSON: {sse.data[:200]!r}"
            return [Error("upstream_unavailable", message, 502)]
        if not isinstance(data, dict):
            return []
        try:
            return self._events(data, data.get("type") or sse.event)
        except (AttributeError, TypeError, KeyError):
            self.done = True
            message = f"the Responses upstream sent a malformed event: {sse.data[:200]!r}"
            return [Error("upstream_unavailable", message, 502)]

    def _events(self, data: dict[str, Any], kind: str) -> list[Event]:
        if kind == "response.output_text.delta" or kind == "response.refusal.delta":
            return [TextDelta(data["delta"])] if data.get("delta") else []
        if kind == "response.function_call_arguments.delta":
            item_id = data.get("item_id", "")
            index = self._calls.get(item_id)
            if index is None or not data.get("delta"):
                return []
            self._argued.add(item_id)
            return [ToolCallDelta(index, arguments=data["delta"])]
        if kind == "response.custom_tool_call_input.delta":
            index = self._calls.get(data.get("item_id", ""))
            if index is None or not data.get("delta"):
                return []
            return [ToolCallDelta(index, arguments=_encode(data["delta"]).decode()[1:-1])]
        if kind in ("response.reasoning_summary_text.delta", "response.reasoning_text.delta"):
            return [ThinkingDelta(data["delta"])] if data.get("delta") else []
        if kind == "response.reasoning_summary_part.added":
            item_id = data.get("item_id", "")
            first = item_id not in self._summaries
            self._summaries.add(item_id)
            return [] if first else [ThinkingDelta("\n\n")]
        if kind == "response.output_item.added":
            return self._added(data.get("item") or {})
        if kind == "response.output_item.done":
            return self._item_done(data.get("item") or {})
        if kind in ("response.completed", "response.incomplete"):
            self.done = True
            return self._finished(data.get("response") or {})
        if kind == "response.failed":
            self.done = True
            response = data.get("response") or {}
            error = response.get("error") or {}
            events: list[Event] = [usage_from_json(response.get("usage"), response.get("model"))]
            return [*events, _error(error, "the Responses upstream reported a failure")]
        if kind == "error":
            self.done = True
            return [_error(data.get("error") or data, "the Responses upstream reported an error")]
        return []

    def _added(self, item: dict[str, Any]) -> list[Event]:
        kind = item.get("type")
        if kind not in ("function_call", "custom_tool_call"):
            return []
        item_id = str(item.get("id") or f"item_{len(self._calls)}")
        index = self._calls[item_id] = len(self._calls)
        call = ToolCallDelta(index, str(item.get("call_id") or item_id), str(item.get("name", "")))
        if kind == "custom_tool_call":
            self._custom.add(item_id)
            return [call, ToolCallDelta(index, arguments='{"input":"')]
        return [call]

    def _item_done(self, item: dict[str, Any]) -> list[Event]:
        kind = item.get("type")
        item_id = str(item.get("id", ""))
        if kind == "reasoning" and item.get("encrypted_content"):
            return [ThinkingDelta("", str(item["encrypted_content"]))]
        index = self._calls.get(item_id)
        if index is None:
            return []
        if item_id in self._custom:
            return [ToolCallDelta(index, arguments='"}')]
        if item_id not in self._argued and item.get("arguments"):
            return [ToolCallDelta(index, arguments=str(item["arguments"]))]
        return []

    def _finished(self, response: dict[str, Any]) -> list[Event]:
        events: list[Event] = [usage_from_json(response.get("usage"), response.get("model"))]
        details = response.get("incomplete_details") or {}
        reason = details.get("reason") if isinstance(details, dict) else None
        if response.get("status") == "incomplete" or reason:
            events.append(Finish("content_filter" if reason == "content_filter" else "length"))
        else:
            events.append(Finish("tool_calls" if self._calls else "stop"))
        return events


def stream_reader() -> ResponsesReader:
    return ResponsesReader()


def _error(error: Any, fallback: str) -> Error:
    if not isinstance(error, dict):
        error = {}
    code = error.get("code") or error.get("type")
    ours = FOREIGN_CODES.get(str(code), "api_error")
    message = error.get("message")
    text = message if isinstance(message, str) and message else f"{fallback} ({code})"
    return Error(ours, text, ERROR_STATUS[ours])

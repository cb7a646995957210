"""Whole responses (``stream: false``) and errors. A whole response is what the stream's last
event carries, so it is built by the stream writer itself: one code for both shapes."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import msgspec

from tokenrelay.dialects import openai
from tokenrelay.dialects.responses.stream import ResponsesWriter, _error
from tokenrelay.dialects.responses.wire import CUSTOM_TOOLS, ECHO, custom_arguments, usage_from_json
from tokenrelay.model import Completion, Error, Finish, GatewayError, Request, ToolCall

_encode = msgspec.json.encode


def encode_response(completion: Completion, *, id: str, model: str) -> bytes:
    """The response object for a request whose fields are not known (echoes the defaults)."""
    return _encode(_whole(completion, id, model, {}, frozenset()))


def encode_response_for(request: Request, completion: Completion, *, id: str, model: str) -> bytes:
    """The response object repeating the request's fields, with calls of its custom tools as
    ``custom_tool_call`` items (the gateway's relay calls this one when it exists)."""
    options = request.front_options
    custom = frozenset(options.get(CUSTOM_TOOLS, ()))
    return _encode(_whole(completion, id, model, options.get(ECHO, {}), custom, options))


def _whole(
    completion: Completion,
    id: str,
    model: str,
    echo: dict[str, Any],
    custom: frozenset[str],
    keep: dict[str, Any] | None = None,
) -> dict[str, Any]:
    writer = ResponsesWriter(id, model, echo, custom, keep)
    for event in completion.events():
        writer.write(event)
    writer.close()
    assert writer.result is not None
    return writer.result


def parse_response(body: bytes) -> Completion:
    """A whole response object; an unreadable body, a failed response or an ``error`` is
    ``Completion.error``."""
    try:
        data = msgspec.json.decode(body)
        if not isinstance(data, dict):
            raise TypeError
        if data.get("error") and data.get("object") != "response":
            return Completion(error=_error(data["error"], "the Responses upstream failed"))
        return _completion(data)
    except (msgspec.DecodeError, AttributeError, TypeError, KeyError):
        text = body[:200].decode("utf-8", "replace")
        problem = f"the upstream answered with a body that is not a response object: {text!r}"
        return Completion(error=Error("upstream_unavailable", problem, 502))


def _completion(data: dict[str, Any]) -> Completion:
    completion = Completion(usage=usage_from_json(data.get("usage"), data.get("model")))
    texts: list[str] = []
    thinking: list[str] = []
    for item in data.get("output") or ():
        kind = item.get("type")
        if kind == "message":
            for part in item.get("content") or ():
                texts.append(str(part.get("text") or part.get("refusal") or ""))
        elif kind == "reasoning":
            thinking.extend(str(part.get("text", "")) for part in item.get("summary") or ())
            if item.get("encrypted_content"):
                completion.thinking_signature = str(item["encrypted_content"])
        elif kind == "function_call":
            call = ToolCall(str(item["call_id"]), str(item["name"]), str(item["arguments"]))
            completion.tool_calls.append(call)
        elif kind == "custom_tool_call":
            arguments = custom_arguments(str(item["input"]))
            completion.tool_calls.append(
                ToolCall(str(item["call_id"]), str(item["name"]), arguments)
            )
    completion.text = "".join(texts)
    completion.thinking = "\n\n".join(thinking)
    status = data.get("status")
    if status == "failed":
        completion.error = _error(data.get("error"), "the Responses upstream failed")
    elif status == "incomplete":
        details = data.get("incomplete_details") or {}
        reason = details.get("reason") if isinstance(details, dict) else None
        completion.finish = Finish("content_filter" if reason == "content_filter" else "length")
    else:
        completion.finish = Finish("tool_calls" if completion.tool_calls else "stop")
    return completion


def encode_error(error: GatewayError) -> bytes:
    """OpenAI's error shape, exactly as on ``/v1/chat/completions``; an error with a ``code`` of
    its own (``previous_response_not_found``, which clients such as Codex act on) says it."""
    code = getattr(error, "code", None)
    if code is None:
        return openai.encode_error(error)
    wire = msgspec.json.decode(openai.encode_error(error))
    wire["error"]["code"] = code
    return _encode(wire)


def parse_error(status: int, body: bytes, headers: Mapping[str, str]) -> Error:
    return openai.parse_error(status, body, headers)

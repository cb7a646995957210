"""The JSON shapes the Responses stream and the whole response share: the ``response`` object,
its output items, usage, and how our error types read as OpenAI's."""

from __future__ import annotations

import time
from typing import Any

import msgspec

from tokenrelay.model import Error, ErrorType, Usage

NAME = "responses"
# the Request.front_options keys this dialect sets (read by its writer and its encoder)
ECHO = "responses_echo"  # request fields the response object repeats
CUSTOM_TOOLS = "responses_custom_tools"  # names of `custom` (freeform) tools
HINTS = "responses_hints"  # fields only a Responses upstream uses; other upstreams drop them
REASONING_IDS = "responses_reasoning_ids"  # ids of the input's reasoning items, in order
# ... and the keys stored responses use (``tokenrelay.response_store``)
INPUT = "responses_input"  # ``input`` as the client sent it (kept with the response)
# the client's system prompt as parsed (``instructions``, then system and developer messages)
# and its ``instructions`` alone: a Responses upstream gets the input as sent, so the messages
# leave the instructions it is sent
CLIENT_SYSTEM = "responses_client_system"
CONTINUES = "responses_continues"  # ``previous_response_id``, when the request continues one
BODY = "responses_body"  # the decoded body of such a request, until the stored turns join it
HISTORY = "responses_history"  # the stored items a continued request starts with
# the input's ``item_reference`` items as (index in ``input``, referenced id), when it has any:
# the stored items they name replace them (and BODY is kept) before any route check
REFERENCES = "responses_references"
RESULT = "responses_result"  # the response object, once the writer has ended it

CUSTOM_INPUT = "input"  # the one string argument a custom tool becomes elsewhere

_encode = msgspec.json.encode

# our error type -> the ``code`` of a ``response.failed`` event's error (a closed set in the SDK)
FAILED_CODES: dict[ErrorType, str] = {
    "rate_limit": "rate_limit_exceeded",
    "invalid_request": "invalid_prompt",
}
# a ``response.failed`` or ``error`` event's code -> our error type
FOREIGN_CODES: dict[str, ErrorType] = {
    "rate_limit_exceeded": "rate_limit",
    "insufficient_quota": "rate_limit",
    "server_error": "api_error",
    "invalid_prompt": "invalid_request",
    "context_length_exceeded": "invalid_request",
    "invalid_api_key": "authentication",
    "model_not_found": "not_found",
}

_REQUEST_DEFAULTS: dict[str, Any] = {
    "instructions": None,
    "max_output_tokens": None,
    "max_tool_calls": None,
    "parallel_tool_calls": True,
    "previous_response_id": None,
    "prompt_cache_key": None,
    "reasoning": {"effort": None, "summary": None},
    "safety_identifier": None,
    "service_tier": "auto",
    "temperature": 1.0,
    "text": {"format": {"type": "text"}, "verbosity": "medium"},
    "tool_choice": "auto",
    "tools": [],
    "top_logprobs": 0,
    "top_p": 1.0,
    "truncation": "disabled",
    "user": None,
    "metadata": {},
}


def response_object(
    id: str, model: str, echo: dict[str, Any], created_at: int | None = None
) -> dict[str, Any]:
    """The ``response`` object as ``response.created`` carries it: in progress, no output."""
    out: dict[str, Any] = {
        "id": id,
        "object": "response",
        "created_at": created_at if created_at is not None else int(time.time()),
        "status": "in_progress",
        "background": False,
        "error": None,
        "incomplete_details": None,
        "model": model,
        "output": [],
        "usage": None,
    }
    for key, default in _REQUEST_DEFAULTS.items():
        value = echo.get(key, default)
        out[key] = default if value is None and default is not None else value
    return out


def usage_json(usage: Usage) -> dict[str, Any]:
    """Responses usage: ``input_tokens`` includes cached ones, ``output_tokens`` reasoning ones,
    which is the normalized convention too."""
    prompt = usage.input_tokens or 0
    output = usage.output_tokens or 0
    return {
        "input_tokens": prompt,
        "input_tokens_details": {
            "cached_tokens": usage.cache_read_tokens or 0,
            "cache_write_tokens": usage.cache_write_tokens or 0,
        },
        "output_tokens": output,
        "output_tokens_details": {"reasoning_tokens": usage.reasoning_tokens or 0},
        "total_tokens": prompt + output,
    }


def usage_from_json(data: Any, model: Any = None) -> Usage:
    """Usage as a Responses object reports it; ``model`` is the model that served (priced on)."""
    served = model if isinstance(model, str) and model else None
    if not isinstance(data, dict):
        return Usage(model=served)
    inputs = data.get("input_tokens_details") or {}
    outputs = data.get("output_tokens_details") or {}
    return Usage(
        _int(data.get("input_tokens")),
        _int(data.get("output_tokens")),
        _int(inputs.get("cached_tokens")),
        _int(inputs.get("cache_write_tokens")),
        _int(outputs.get("reasoning_tokens")),
        model=served,
    )


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def failed_error(error: Error) -> dict[str, Any]:
    return {"code": FAILED_CODES.get(error.type, "server_error"), "message": error.message}


def message_item(id: str, text: str, status: str) -> dict[str, Any]:
    part = {"type": "output_text", "annotations": [], "logprobs": [], "text": text}
    return {
        "id": id,
        "type": "message",
        "status": status,
        "content": [part],
        "role": "assistant",
    }


def reasoning_item(id: str, summary: list[str], signature: str | None) -> dict[str, Any]:
    item: dict[str, Any] = {
        "id": id,
        "type": "reasoning",
        "summary": [{"type": "summary_text", "text": text} for text in summary],
    }
    if signature:
        item["encrypted_content"] = signature
    return item


def call_item(
    id: str, call_id: str, name: str, arguments: str, status: str, custom: bool
) -> dict[str, Any]:
    """A ``function_call``, or a ``custom_tool_call`` whose input is ``arguments``' one string."""
    if custom:
        return {
            "id": id,
            "type": "custom_tool_call",
            "call_id": call_id,
            "name": name,
            "input": custom_input(arguments),
        }
    return {
        "id": id,
        "type": "function_call",
        "status": status,
        "arguments": arguments,
        "call_id": call_id,
        "name": name,
    }


def custom_input(arguments: str) -> str:
    """A custom tool's input from the function arguments another dialect's model wrote:
    ``{"input": "..."}``; a model that wrote something else has its text passed on whole."""
    try:
        value = msgspec.json.decode(arguments)
    except msgspec.DecodeError:
        return arguments
    if isinstance(value, dict) and isinstance(value.get(CUSTOM_INPUT), str):
        text: str = value[CUSTOM_INPUT]
        return text
    return arguments


def custom_arguments(text: str) -> str:
    """The function arguments that carry a custom tool's input to other dialects."""
    return _encode({CUSTOM_INPUT: text}).decode()

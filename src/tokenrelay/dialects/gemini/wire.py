"""What the Gemini dialect's parts share: its constants, status words and field sets."""

from __future__ import annotations

import re
from typing import Any

import msgspec

from tokenrelay.model import (
    ErrorType,
    FinishReason,
    GatewayError,
)

NAME = "gemini"
ID_PREFIX = ""
CONTENT_TYPE = "text/event-stream"

_encode = msgspec.json.encode
_decode = msgspec.json.decode

# Top-level request fields this module models; any other known one is kept in ``extra`` for a
# Gemini upstream (``safetySettings``, ``cachedContent``, ``labels``).
_KNOWN = frozenset(
    {"contents", "systemInstruction", "tools", "toolConfig", "generationConfig", "model"}
)
_PASSED = frozenset({"safetySettings", "cachedContent", "labels"})
# generationConfig fields read into the Request; the rest stay in extra as
# "generationConfig.<field>" (so another dialect's refusal names the field) or, for hints, in
# front_options: another upstream drops them, a Gemini upstream gets them back.
_MODELLED_CONFIG = frozenset({"maxOutputTokens", "temperature", "topP", "stopSequences"})
CONFIG = "generationConfig."
HINTS = "gemini_hints"  # front_options key: generationConfig hints, for a Gemini upstream only


def _hint(key: str, value: Any) -> bool:
    """Whether a generationConfig field only tunes how the answer is made, never what it means:
    thinking (another model answers without it, as a Responses client's reasoning effort is
    dropped), one candidate, text output."""
    if key == "thinkingConfig":
        return True
    if key == "candidateCount":
        return value in (None, 1)
    return key == "responseModalities" and value in (None, ["TEXT"], ["text"])


# Gemini's finish reasons that mean the answer was withheld or cut by a filter.
FILTERED = frozenset(
    {"SAFETY", "RECITATION", "PROHIBITED_CONTENT", "BLOCKLIST", "SPII", "IMAGE_SAFETY", "LANGUAGE"}
)
_FINISH_IN: dict[str, FinishReason] = {"STOP": "stop", "MAX_TOKENS": "length"}
_FINISH_OUT: dict[str, str] = {
    "stop": "STOP",
    "stop_sequence": "STOP",
    "tool_calls": "STOP",
    "length": "MAX_TOKENS",
    "content_filter": "SAFETY",
}
# Google's canonical status words and ours.
_STATUS_TYPES: dict[str, ErrorType] = {
    "INVALID_ARGUMENT": "invalid_request",
    "FAILED_PRECONDITION": "invalid_request",
    "OUT_OF_RANGE": "invalid_request",
    "UNAUTHENTICATED": "authentication",
    "PERMISSION_DENIED": "permission",
    "NOT_FOUND": "not_found",
    "RESOURCE_EXHAUSTED": "rate_limit",
    "ABORTED": "api_error",
    "INTERNAL": "api_error",
    "UNKNOWN": "api_error",
    "UNAVAILABLE": "overloaded",
    "DEADLINE_EXCEEDED": "timeout",
}
_TYPE_STATUS: dict[ErrorType, str] = {
    "invalid_request": "INVALID_ARGUMENT",
    "authentication": "UNAUTHENTICATED",
    "budget_exceeded": "RESOURCE_EXHAUSTED",
    "permission": "PERMISSION_DENIED",
    "not_found": "NOT_FOUND",
    "request_too_large": "INVALID_ARGUMENT",
    "unsupported_media_type": "INVALID_ARGUMENT",
    "unprocessable": "INVALID_ARGUMENT",
    "rate_limit": "RESOURCE_EXHAUSTED",
    "api_error": "INTERNAL",
    "upstream_unavailable": "UNAVAILABLE",
    "timeout": "DEADLINE_EXCEEDED",
    "overloaded": "UNAVAILABLE",
}
_HTTP_TYPES: dict[int, ErrorType] = {
    400: "invalid_request",
    401: "authentication",
    403: "permission",
    404: "not_found",
    429: "rate_limit",
    503: "overloaded",
    504: "timeout",
}
# OpenAI's reasoning efforts as thinking budgets (the same scale as Anthropic's translation).
THINKING_BUDGETS = {"minimal": 1024, "low": 2048, "medium": 8192, "high": 16384, "xhigh": 32768}
# OpenAI/Responses fields that change nothing about the answer: dropped on the way to Gemini.
_INERT = frozenset(
    {"store", "metadata", "prompt_cache_key", "safety_identifier", "parallel_tool_calls"}
)
_DURATION = re.compile(r"^(\d+(?:\.\d+)?)s$")


def _invalid(message: str, param: str | None = None) -> GatewayError:
    return GatewayError("invalid_request", message, 400, param=param)

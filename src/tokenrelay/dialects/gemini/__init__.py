"""The Gemini API (AI Studio's ``generateContent`` / ``streamGenerateContent?alt=sse``).

The model and whether to stream are in the URL, not the body (``models/{model}:generateContent``),
so ``parse_request`` leaves ``model`` empty and the front fills it from the path
(``parse_call``). A stream is ``data: {GenerateContentResponse}`` lines with no closing
sentinel: the chunk carrying a ``finishReason`` is the last.

Gemini's ``thoughtSignature`` rides on the part it signs (a thought, a function call, a text
part); it is kept on ``ThinkingPart`` and ``ToolCallPart`` (and ``ToolCallDelta``) the way
Anthropic's thinking signatures are, so the next turn can hand it back.
"""

from __future__ import annotations

from tokenrelay.dialects.gemini.errors import encode_error, parse_error
from tokenrelay.dialects.gemini.request import encode_request, parse_call, parse_request
from tokenrelay.dialects.gemini.stream import (
    GeminiReader,
    GeminiWriter,
    encode_response,
    parse_response,
    stream_reader,
    stream_writer,
)
from tokenrelay.dialects.gemini.wire import (
    CONFIG,
    CONTENT_TYPE,
    FILTERED,
    HINTS,
    ID_PREFIX,
    NAME,
    THINKING_BUDGETS,
)

__all__ = [
    "CONFIG",
    "CONTENT_TYPE",
    "FILTERED",
    "HINTS",
    "ID_PREFIX",
    "NAME",
    "THINKING_BUDGETS",
    "GeminiReader",
    "GeminiWriter",
    "encode_error",
    "encode_request",
    "encode_response",
    "parse_call",
    "parse_error",
    "parse_request",
    "parse_response",
    "stream_reader",
    "stream_writer",
]

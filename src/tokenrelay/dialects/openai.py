"""OpenAI Chat Completions (``POST /v1/chat/completions``), wire-exact, for OpenAI itself and every
OpenAI-compatible server (vLLM, Ollama, llama.cpp, Groq, DeepSeek, ...).

Reasoning text travels as ``reasoning_content`` (the DeepSeek / vLLM convention; ``reasoning`` is
read too), since OpenAI's own API never streams it. Errors follow the real API: 401 is an
``invalid_request_error`` with code ``invalid_api_key``, 429 is type ``requests`` with code
``rate_limit_exceeded``, 5xx is a ``server_error``.
"""

from __future__ import annotations

import re
import time
from collections.abc import Mapping
from typing import Any

import msgspec

from tokenrelay.dialects import passthrough, retry_after_seconds
from tokenrelay.dialects.body import decode_body
from tokenrelay.dialects.openai_chunk import NO_DELTA as _NO_DELTA
from tokenrelay.dialects.openai_chunk import Chunk, decode_chunk
from tokenrelay.dialects.sse import DONE, SSEEvent, frame
from tokenrelay.model import (
    ERROR_STATUS,
    MAX_CHOICES,
    Completion,
    Error,
    ErrorType,
    Event,
    Finish,
    FinishReason,
    GatewayError,
    ImagePart,
    Message,
    OpaquePart,
    Part,
    Request,
    TextDelta,
    TextPart,
    ThinkingDelta,
    ThinkingPart,
    Tool,
    ToolCall,
    ToolCallDelta,
    ToolCallPart,
    ToolResultPart,
    Untranslatable,
    Usage,
    foreign_block,
    foreign_message_fields,
    foreign_tool_fields,
    is_error_type,
    merge_usage,
)

NAME = "openai"
ID_PREFIX = "chatcmpl-"  # of the ids the gateway gives its responses
CONTENT_TYPE = "text/event-stream; charset=utf-8"

# Our error types as OpenAI's ``type`` and ``code``; the code also carries our server-side types so
# a reader of our own stream (``tokenrelay ask``) gets the exact type back.
ERROR_TYPES: dict[ErrorType, str] = {
    "invalid_request": "invalid_request_error",
    "authentication": "invalid_request_error",
    "permission": "invalid_request_error",
    "not_found": "invalid_request_error",
    "request_too_large": "invalid_request_error",
    "unsupported_media_type": "invalid_request_error",
    "unprocessable": "invalid_request_error",
    "rate_limit": "requests",
    "budget_exceeded": "insufficient_quota",
    "api_error": "server_error",
    "upstream_unavailable": "server_error",
    "overloaded": "server_error",
    "timeout": "server_error",
}
ERROR_CODES: dict[ErrorType, str] = {
    "authentication": "invalid_api_key",
    "not_found": "model_not_found",
    "rate_limit": "rate_limit_exceeded",
    "budget_exceeded": "insufficient_quota",
    "upstream_unavailable": "upstream_unavailable",
    "overloaded": "overloaded",
    "timeout": "timeout",
}
# What an upstream's error ``type`` or ``code`` means, for errors that arrive without a status.
_FOREIGN_ERRORS: dict[str, ErrorType] = {
    "invalid_api_key": "authentication",
    "authentication_error": "authentication",
    "model_not_found": "not_found",
    "not_found_error": "not_found",
    "permission_error": "permission",
    "request_forbidden": "permission",
    "rate_limit_exceeded": "rate_limit",
    "rate_limit_error": "rate_limit",
    "requests": "rate_limit",
    "tokens": "rate_limit",
    "insufficient_quota": "rate_limit",
    "invalid_request_error": "invalid_request",
    "server_error": "api_error",
    "engine_overloaded": "overloaded",
    "overloaded_error": "overloaded",
}
_STATUS_ERRORS: dict[int, ErrorType] = {status: type for type, status in ERROR_STATUS.items()} | {
    408: "timeout",
    503: "overloaded",
}
_FINISH_OUT: dict[str, str] = {"stop_sequence": "stop"}
_FINISH_IN: dict[str, FinishReason] = {
    "stop": "stop",
    "length": "length",
    "tool_calls": "tool_calls",
    "content_filter": "content_filter",
    "function_call": "tool_calls",
}
# Reasoning models refuse ``max_tokens``; vLLM, Ollama and older servers know only ``max_tokens``.
_REASONING_MODEL = re.compile(r"(?:^|/)(?:o\d+(?:-|$)|gpt-5)")
_DATA_URL = re.compile(r"data:([^;,]+);base64,(.*)", re.DOTALL)
_ROLES = "system, developer, user, assistant, tool"
_CONSUMED = frozenset(
    {"model", "messages", "max_tokens", "max_completion_tokens", "temperature", "top_p", "stop"}
    | {"tools", "tool_choice", "stream", "stream_options", "user"}
)

_encode = msgspec.json.encode
_decode = msgspec.json.decode


def _invalid(message: str, param: str | None = None) -> GatewayError:
    return GatewayError("invalid_request", message, 400, param=param)


# --- requests ----------------------------------------------------------------------------------


def parse_request(body: bytes) -> Request:
    """A client's body. ``system`` and ``developer`` messages, wherever they stand, are joined with
    a blank line into ``Request.system``; ``user`` becomes ``metadata["user_id"]``; fields this
    gateway does not model go to ``extra`` (sent on only to OpenAI-compatible upstreams)."""
    data = decode_body(body)
    if not isinstance(data, dict):
        raise _invalid('the request body must be a JSON object like {"model": ..., "messages": []}')
    model = data.get("model")
    if not isinstance(model, str) or not model:
        raise _invalid("'model' is required: a string naming a route or a model", "model")
    messages = data.get("messages")
    if not isinstance(messages, list) or not messages:
        raise _invalid(
            "'messages' is required and must be a non-empty list of messages", "messages"
        )
    for legacy in ("functions", "function_call"):
        if data.get(legacy) is not None:
            raise _invalid(f"'{legacy}' is deprecated; use 'tools' and 'tool_choice'", legacy)
    wrong = passthrough.first_wrong(data, passthrough.OPENAI)
    if wrong is not None:
        raise _invalid(f"'{wrong[0]}' must be {wrong[1]}", wrong[0])
    system: list[str] = []
    parsed = [_message(m, f"messages[{i}]", system) for i, m in enumerate(messages)]
    max_tokens = _positive(data, "max_tokens")
    max_tokens = _positive(data, "max_completion_tokens") or max_tokens
    stream = data.get("stream", False)
    if not isinstance(stream, bool):
        raise _invalid("'stream' must be true or false", "stream")
    options = data.get("stream_options")
    options = {} if options is None else options
    if not isinstance(options, dict) or not isinstance(options.get("include_usage", False), bool):
        raise _invalid("'stream_options' must be like {\"include_usage\": true}", "stream_options")
    user = data.get("user")
    if user is not None and not isinstance(user, str):
        raise _invalid("'user' must be a string", "user")
    tools, raw_tools = _tools(data.get("tools"))
    extra = {key: value for key, value in data.items() if key not in _CONSUMED}
    if any(isinstance(t.get("function"), dict) and t["function"].get("strict") for t in raw_tools):
        extra["tools"] = raw_tools  # strict schemas: only an OpenAI upstream can honour them
    return Request(
        dialect=NAME,
        model=model,
        messages=[m for m in parsed if m is not None],
        system="\n\n".join(system) if system else None,
        max_tokens=max_tokens,
        temperature=_number(data, "temperature", 2.0),
        top_p=_number(data, "top_p", 1.0),
        stop=_stop(data.get("stop")),
        tools=tools,
        tool_choice=_tool_choice(data.get("tool_choice")),
        stream=stream,
        include_usage=options.get("include_usage", False),
        extra=extra,
        metadata={"user_id": user} if user else {},
    )


def _message(data: Any, where: str, system: list[str]) -> Message | None:
    if not isinstance(data, dict):
        raise _invalid(f"'{where}' must be an object with 'role' and 'content'", where)
    role = data.get("role")
    content = data.get("content")
    if data.get("name") is not None and not isinstance(data["name"], str):
        raise _invalid(f"'{where}.name' must be a string", f"{where}.name")
    if role in ("system", "developer"):
        text = _text(content, f"{where}.content", "\n")
        if text:
            system.append(text)
        return None
    if role == "user":
        return Message("user", _user_parts(content, f"{where}.content"))
    if role == "assistant":
        return Message("assistant", _assistant_parts(data, where))
    if role == "tool":
        call_id = data.get("tool_call_id")
        if not isinstance(call_id, str) or not call_id:
            at = f"{where}.tool_call_id"
            raise _invalid(
                f"'{at}' is required on a tool message: the id of the call it answers", at
            )
        text = _text(content, f"{where}.content", "")
        return Message("tool", [ToolResultPart(call_id, text)])
    raise _invalid(f"'{where}.role' is {role!r}; use one of {_ROLES}", f"{where}.role")


def _text(content: Any, where: str, sep: str) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        texts = []
        for j, part in enumerate(content):
            if not isinstance(part, dict) or part.get("type") != "text":
                raise _invalid(f"'{where}[{j}]' must be a text part", f"{where}[{j}]")
            texts.append(_str(part, "text", f"{where}[{j}]"))
        return sep.join(texts)
    raise _invalid(f"'{where}' must be a string or a list of text parts", where)


def _str(data: dict[str, Any], key: str, where: str) -> str:
    value = data.get(key)
    if not isinstance(value, str):
        raise _invalid(f"'{where}.{key}' must be a string", f"{where}.{key}")
    return value


def _user_parts(content: Any, where: str) -> list[Part]:
    if isinstance(content, str):
        return [TextPart(content)]
    if not isinstance(content, list) or not content:
        raise _invalid(f"'{where}' must be a string or a non-empty list of parts", where)
    parts: list[Part] = []
    for j, part in enumerate(content):
        kind = part.get("type") if isinstance(part, dict) else None
        if kind == "text":
            parts.append(TextPart(_str(part, "text", f"{where}[{j}]")))
        elif kind == "image_url":
            image = part.get("image_url")
            if not isinstance(image, dict):
                at = f"{where}[{j}].image_url"
                raise _invalid(f'\'{at}\' must be an object like {{"url": "https://..."}}', at)
            url = _str(image, "url", f"{where}[{j}].image_url")
            if not isinstance(image.get("detail", ""), str):
                at = f"{where}[{j}].image_url.detail"
                raise _invalid(f"'{at}' must be 'auto', 'low' or 'high'", at)
            found = _DATA_URL.fullmatch(url)
            parts.append(ImagePart(data=found[2], media_type=found[1]) if found else ImagePart(url))
        else:
            raise _invalid(
                f"'{where}[{j}]' has type {kind!r}; send 'text' or 'image_url' parts",
                f"{where}[{j}]",
            )
    return parts


def _assistant_parts(data: dict[str, Any], where: str) -> list[Part]:
    if data.get("function_call") is not None:
        raise _invalid(f"'{where}.function_call' is deprecated; use 'tool_calls'", where)
    parts: list[Part] = []
    reasoning = data.get("reasoning_content") or data.get("reasoning")
    if isinstance(reasoning, str):
        parts.append(ThinkingPart(reasoning))
    content = data.get("content")
    if isinstance(content, list):  # text parts, or the refusal the model gave instead
        content = "".join(
            _str(p, "refusal" if p.get("type") == "refusal" else "text", f"{where}.content[{j}]")
            if isinstance(p, dict)
            else _text(p, f"{where}.content[{j}]", "")
            for j, p in enumerate(content)
        )
    if content is not None and not isinstance(content, str):
        raise _invalid(f"'{where}.content' must be a string, null or text parts", where)
    if content:
        parts.append(TextPart(content))
    calls = data.get("tool_calls")
    calls = [] if calls is None else calls
    if not isinstance(calls, list):
        raise _invalid(f"'{where}.tool_calls' must be a list", f"{where}.tool_calls")
    for k, call in enumerate(calls):
        at = f"{where}.tool_calls[{k}]"
        function = call.get("function") if isinstance(call, dict) else None
        if not isinstance(function, dict) or call.get("type", "function") != "function":
            raise _invalid(f"'{at}' must be a function call: {{id, type, function}}", at)
        parts.append(
            ToolCallPart(
                _str(call, "id", at),
                _str(function, "name", f"{at}.function"),
                _str(function, "arguments", f"{at}.function"),
            )
        )
    return parts


def _positive(data: dict[str, Any], key: str) -> int | None:
    value = data.get(key)
    if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
        raise _invalid(f"'{key}' must be a positive integer", key)
    return value


def _number(data: dict[str, Any], key: str, high: float) -> float | None:
    value = data.get(key)
    if value is None:
        return None
    if not isinstance(value, int | float) or isinstance(value, bool) or not 0 <= value <= high:
        raise _invalid(f"'{key}' must be a number from 0 to {high:g}", key)
    return float(value)


def _stop(value: Any) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and all(isinstance(item, str) for item in value):
        return value
    raise _invalid("'stop' must be a string or a list of strings", "stop")


def _tools(value: Any) -> tuple[list[Tool], list[Any]]:
    if value is None:
        return [], []
    if not isinstance(value, list):
        raise _invalid("'tools' must be a list of function tools", "tools")
    tools = []
    for i, tool in enumerate(value):
        function = tool.get("function") if isinstance(tool, dict) else None
        if not isinstance(function, dict) or tool.get("type") != "function":
            raise _invalid(
                f'\'tools[{i}]\' must be {{"type": "function", "function": {{"name", ...}}}}',
                f"tools[{i}]",
            )
        description = function.get("description")
        parameters = function.get("parameters", {"type": "object"})
        if description is not None and not isinstance(description, str):
            raise _invalid(f"'tools[{i}].function.description' must be a string", f"tools[{i}]")
        if not isinstance(parameters, dict):
            raise _invalid(f"'tools[{i}].function.parameters' must be a JSON Schema", f"tools[{i}]")
        if not isinstance(function.get("strict", False), bool | None):
            raise _invalid(f"'tools[{i}].function.strict' must be true or false", f"tools[{i}]")
        tools.append(Tool(_str(function, "name", f"tools[{i}].function"), description, parameters))
    return tools, value


def _tool_choice(value: Any) -> str | None:
    if value is None:
        return None
    if value in ("auto", "none", "required"):
        return str(value)
    function = value.get("function") if isinstance(value, dict) else None
    if isinstance(function, dict) and isinstance(function.get("name"), str):
        name: str = function["name"]
        return name
    raise _invalid(
        "'tool_choice' must be 'auto', 'none', 'required' or "
        '{"type": "function", "function": {"name": ...}}',
        "tool_choice",
    )


def encode_request(request: Request, model: str, *, stream: bool) -> bytes:
    """The body for any OpenAI-compatible server. Usage is always asked for when streaming;
    ``max_completion_tokens`` goes only to reasoning models (o1/o3/o4/gpt-5), which refuse
    ``max_tokens``, because vLLM, Ollama and older servers know only ``max_tokens``."""
    translated = _foreign_extra(request, model) if request.extra and request.dialect != NAME else {}
    if request.dialect != NAME:
        foreign_message_fields(request.messages, request.dialect, "an OpenAI-compatible model")
    messages: list[dict[str, Any]] = []
    if request.system:
        messages.append({"role": "system", "content": request.system})
    for i, message in enumerate(request.messages):
        messages.extend(_encode_message(message, i, request.dialect))
    body: dict[str, Any] = {"model": model, "messages": messages}
    if request.max_tokens is not None:
        key = "max_completion_tokens" if _REASONING_MODEL.search(model) else "max_tokens"
        body[key] = request.max_tokens
    if request.temperature is not None:
        body["temperature"] = request.temperature
    if request.top_p is not None:
        body["top_p"] = request.top_p
    if request.stop:
        body["stop"] = request.stop
    if request.tools:
        if request.dialect != NAME:
            foreign_tool_fields(
                request.tools, request.dialect, "an OpenAI-compatible model", carried={"strict"}
            )
        body["tools"] = [
            {"type": "function", "function": _tool_json(tool)} for tool in request.tools
        ]
    if request.tool_choice is not None:
        choice = request.tool_choice
        body["tool_choice"] = (
            choice
            if choice in ("auto", "none", "required")
            else {"type": "function", "function": {"name": choice}}
        )
    if "user_id" in request.metadata:
        body["user"] = request.metadata["user_id"]
    if stream:
        body["stream"] = True
        body["stream_options"] = {"include_usage": True}
    body.update(request.extra if request.dialect == NAME else translated)
    return _encode(body)


def reasoning_effort(budget_tokens: int) -> str:
    """An Anthropic thinking budget as the effort an OpenAI reasoning model takes (the inverse of
    ``anthropic.THINKING_BUDGETS``, rounded to the efforts every reasoning model knows)."""
    if budget_tokens < 4096:
        return "low"
    return "medium" if budget_tokens < 16384 else "high"


def _foreign_extra(request: Request, model: str) -> dict[str, Any]:
    """Another dialect's extra fields as OpenAI's; ``Untranslatable`` naming what has no
    equivalent. ``thinking`` becomes ``reasoning_effort`` for reasoning models only (others
    cannot think on request); Anthropic's ``disable_parallel_tool_use`` becomes
    ``parallel_tool_calls``."""
    out: dict[str, Any] = {}
    refused: list[str] = []
    for key, value in request.extra.items():
        if key == "thinking" and isinstance(value, dict):
            if value.get("type") == "disabled":
                continue
            if value.get("type") != "enabled":
                refused.append(key)
            elif not _REASONING_MODEL.search(model):
                raise Untranslatable(
                    f"'thinking' cannot be sent to {model}, an OpenAI-compatible model that does "
                    "not reason; use a reasoning model (o3, o4-mini, gpt-5...) or a route served "
                    f"by {request.dialect}",
                    param="thinking",
                )
            else:
                out["reasoning_effort"] = reasoning_effort(value["budget_tokens"])
        elif key == "tool_choice" and isinstance(value, dict):
            if set(value) - {"type", "name", "disable_parallel_tool_use"}:
                refused.append(key)
            elif value.get("disable_parallel_tool_use") and value.get("type") != "none":
                out["parallel_tool_calls"] = False
        else:
            refused.append(key)
    if refused:
        fields = ", ".join(repr(key) for key in refused)
        raise Untranslatable(
            f"{fields} cannot be sent to an OpenAI-compatible model; remove them or use a route "
            f"served by {request.dialect}",
            param=refused[0],
        )
    return out


def _tool_json(tool: Tool) -> dict[str, Any]:
    out: dict[str, Any] = {"name": tool.name}
    if tool.description is not None:
        out["description"] = tool.description
    out["parameters"] = tool.parameters
    if tool.extra.get("strict") is True:  # an Anthropic tool's strict schema: OpenAI has it too
        out["strict"] = True
    return out


def _encode_message(message: Message, index: int, dialect: str) -> list[dict[str, Any]]:
    """One message, or several: tool results are each their own ``tool`` message, first."""
    out: list[dict[str, Any]] = []
    content: list[dict[str, Any]] = []
    calls: list[dict[str, Any]] = []
    reasoning: list[str] = []
    for part in message.content:
        if isinstance(part, OpaquePart):
            raise foreign_block(part, index, "an OpenAI-compatible model")
        if isinstance(part, ToolResultPart):
            text = f"Error: {part.content}" if part.is_error else part.content
            out.append({"role": "tool", "tool_call_id": part.tool_call_id, "content": text})
        elif isinstance(part, TextPart):
            content.append({"type": "text", "text": part.text})
        elif isinstance(part, ImagePart) and message.role == "user":
            url = part.url or f"data:{part.media_type or 'image/png'};base64,{part.data}"
            content.append({"type": "image_url", "image_url": {"url": url}})
        elif isinstance(part, ToolCallPart) and message.role == "assistant":
            function = {"name": part.name, "arguments": part.arguments}
            calls.append({"id": part.id, "type": "function", "function": function})
        elif isinstance(part, ThinkingPart) and message.role == "assistant":
            if part.text and dialect != NAME:
                raise Untranslatable(
                    f"messages[{index}] carries thinking from an earlier turn, which an "
                    "OpenAI-compatible model cannot take back; remove it or use a route served "
                    f"by {dialect}",
                    param="messages",
                )
            if part.text:
                reasoning.append(part.text)
        else:
            kind = type(part).__name__
            raise Untranslatable(
                f"messages[{index}] is a {message.role} message holding a {kind}; OpenAI takes "
                "images only from the user and tool calls only from the assistant",
                param="messages",
            )
    if message.role == "system":  # instructions in the middle of the conversation
        text = "\n\n".join(item["text"] for item in content if item["type"] == "text")
        out.append({"role": "developer", "content": text})
    elif message.role == "assistant":
        text = "".join(item["text"] for item in content)
        said: dict[str, Any] = {"role": "assistant", "content": text or (None if calls else "")}
        if reasoning:
            said["reasoning_content"] = "".join(reasoning)
        if calls:
            said["tool_calls"] = calls
        out.append(said)
    elif content:
        if len(content) == 1 and content[0]["type"] == "text":
            out.append({"role": "user", "content": content[0]["text"]})
        else:
            out.append({"role": "user", "content": content})
    return out


# --- streams -----------------------------------------------------------------------------------


class OpenAIWriter:
    """``chat.completion.chunk`` lines: a role chunk first, one chunk per delta, a finish chunk,
    the usage chunk (``choices: []``) when the client asked for it, then ``[DONE]``. Text chunks
    are two pre-encoded byte strings around the JSON string of the text.

    The first choice without log probabilities is that fast path; log probabilities and the
    choices after the first (a client's ``n`` > 1) take ``_piece``, which builds each chunk."""

    # A writer lives as long as its stream (ten thousand at once on one process), so it keeps
    # only the text chunk's pieces; the rest is built when first needed.
    __slots__ = (
        "_closed",
        "_envelope",
        "_finished",
        "_include_usage",
        "_open_choices",
        "_started",
        "_tail",
        "_tail_end",
        "_text_head",
        "_thinking_head",
        "_tools_started",
        "_usage",
    )

    def __init__(self, id: str, model: str, include_usage: bool) -> None:
        envelope = _encode(
            {"id": id, "object": "chat.completion.chunk", "created": int(time.time())}
        )
        envelope = envelope[:-1] + b',"model":' + _encode(model) + b',"system_fingerprint":null'
        self._envelope = b"data: " + envelope
        self._tail_end = b',"finish_reason":null}]' + (
            b',"usage":null}\n\n' if include_usage else b"}\n\n"
        )
        self._tail = b',"logprobs":null' + self._tail_end
        self._text_head = self._envelope + b',"choices":[{"index":0,"delta":{"content":'
        self._thinking_head: bytes | None = None
        self._include_usage = include_usage
        self._usage = _NO_USAGE
        self._tools_started: set[tuple[int, int]] | None = None
        self._started = self._finished = self._closed = False
        self._open_choices: dict[int, bool] | None = None  # later choices: started -> finished

    def _role(self, choice: int = 0) -> bytes:
        if choice:
            if self._open_choices is None:
                self._open_choices = {}
            if choice in self._open_choices:
                return b""
            self._open_choices[choice] = False
        elif self._started:
            return b""
        else:
            self._started = True
        delta = b'{"role":"assistant","content":"","refusal":null}'
        return self._piece(choice, delta)

    def _piece(
        self, choice: int, delta: bytes, logprobs: Any = None, finish: str | None = None
    ) -> bytes:
        """One choice's chunk, for every case off the fast path."""
        head = self._envelope + b',"choices":[{"index":' + str(choice).encode() + b',"delta":'
        tail = (
            self._tail if logprobs is None else b',"logprobs":' + _encode(logprobs) + self._tail_end
        )
        if finish is not None:
            tail = tail.replace(
                b'"finish_reason":null', b'"finish_reason":"' + finish.encode() + b'"'
            )
        return head + delta + tail

    def write(self, event: Event) -> bytes:
        if self._closed:
            return b""
        if isinstance(event, TextDelta):
            if event.choice or event.logprobs is not None:
                delta = b'{"content":' + _encode(event.text) + b"}"
                return self._role(event.choice) + self._piece(event.choice, delta, event.logprobs)
            if not event.text:
                return b""
            chunk = self._text_head + _encode(event.text) + b"}" + self._tail
            return chunk if self._started else self._role() + chunk
        if isinstance(event, ThinkingDelta):
            if not event.text:
                return b""  # a signature alone has no place on this wire
            if event.choice:
                delta = b'{"reasoning_content":' + _encode(event.text) + b"}"
                return self._role(event.choice) + self._piece(event.choice, delta)
            head = self._thinking_head
            if head is None:
                head = self._thinking_head = (
                    self._envelope + b',"choices":[{"index":0,"delta":{"reasoning_content":'
                )
            return self._role() + head + _encode(event.text) + b"}" + self._tail
        if isinstance(event, ToolCallDelta):
            return self._tool_call(event)
        if isinstance(event, Usage):
            self._usage = merge_usage(self._usage, event)
            return b""
        if isinstance(event, Finish):
            return self._finish(event)
        self._closed = True  # an Error
        error = _error_json(event.type, event.message, None)
        return frame(_encode(error)) + DONE

    def _tool_call(self, event: ToolCallDelta) -> bytes:
        piece: dict[str, Any] = {"index": event.index}
        key = (event.choice, event.index)
        if self._tools_started is None:
            self._tools_started = set()
        if key not in self._tools_started:
            self._tools_started.add(key)
            piece["id"] = event.id
            piece["type"] = "function"
            piece["function"] = {"name": event.name, "arguments": event.arguments}
        elif event.arguments:
            piece["function"] = {"arguments": event.arguments}
        else:
            return b""
        delta = _encode({"tool_calls": [piece]})
        return self._role(event.choice) + self._piece(event.choice, delta)

    def _finish(self, event: Finish) -> bytes:
        choice = event.choice
        if choice:
            if self._open_choices is not None and self._open_choices.get(choice):
                return b""
            out = self._role(choice)  # which makes _open_choices
            assert self._open_choices is not None
            self._open_choices[choice] = True
        elif self._finished:
            return b""
        else:
            out = self._role()
            self._finished = True
        reason = _FINISH_OUT.get(event.reason, event.reason)
        return out + self._piece(choice, b"{}", finish=reason)

    def close(self) -> bytes:
        if self._closed:
            return b""
        out = b"" if self._finished else self._finish(Finish())
        for choice, finished in list((self._open_choices or {}).items()):
            if not finished:
                out += self._finish(Finish(choice=choice))
        self._closed = True
        if self._include_usage:
            usage = _encode(_usage_json(self._usage))
            out += self._envelope + b',"choices":[],"usage":' + usage + b"}\n\n"
        return out + DONE


_NO_USAGE = Usage()  # frozen: one for every writer that has seen none yet


def stream_writer(request: Request, *, id: str, model: str) -> OpenAIWriter:
    return OpenAIWriter(id, model, request.include_usage)


class OpenAIReader:
    """Reads chunks from OpenAI or any compatible server (usage may come in the finish chunk, as
    Ollama and vLLM send it, or in a chunk of its own, as OpenAI does)."""

    __slots__ = ("_ids", "_last", "_model", "done")

    def __init__(self) -> None:
        self.done = False
        self._model: str | None = None  # the served model, once reported (metered on it)
        self._ids: dict[str, int] = {}  # call ids by index, for servers that leave out ``index``
        self._last = 0

    def feed(self, sse: SSEEvent) -> list[Event]:
        if self.done:
            return []
        if sse.data.strip() == "[DONE]":
            self.done = True
            return []
        try:
            chunk = decode_chunk(sse.data)
        except msgspec.DecodeError:  # not JSON, or not of the usual shape: the dict path decides
            pass
        else:
            if not (chunk.error or chunk.usage is not None):
                try:
                    events = self._chunk_events(chunk)
                except (AttributeError, TypeError):  # as the dict path: a field's wrong type
                    events = None
                if events is not None:
                    return events
        try:
            data = _decode(sse.data)
        except msgspec.DecodeError:
            self.done = True
            message = f"the upstream sent an event that is not JSON: {sse.data[:200]!r}"
            return [Error("upstream_unavailable", message, 502)]
        if not isinstance(data, dict):
            return []
        if data.get("error"):
            self.done = True
            return [_error_event(data["error"], None)]
        try:
            return self._events(data)
        except (AttributeError, TypeError):  # a field of the wrong type
            self.done = True
            message = f"the upstream sent a malformed chunk: {sse.data[:200]!r}"
            return [Error("upstream_unavailable", message, 502)]

    def _chunk_events(self, chunk: Chunk) -> list[Event] | None:
        """``_events`` for a typed chunk without a finish reason (every token's), else ``None``:
        the same events in the same order, with no dict built per chunk."""
        choices = chunk.choices or ()
        if len(choices) == 1 and self._model is not None:  # every token after the first
            choice = choices[0]
            delta = choice.delta
            if (
                not choice.finish_reason
                and choice.index == 0
                and type(choice.index) is int
                and choice.logprobs is None
                and delta is not None
                and delta.tool_calls is None
                and delta.reasoning_content is None
                and delta.reasoning is None
            ):  # text only, or nothing
                text = delta.content or delta.refusal
                return [TextDelta(text)] if text and type(text) is str else []
        for choice in choices:
            if choice.finish_reason:
                return None  # once a stream: the dict path reads the rest of the choice
        events: list[Event] = []
        served = chunk.model
        if self._model is None and isinstance(served, str) and served:
            events.append(Usage(model=served))
        for choice in choices:
            index = choice.index
            if index != 0 and (type(index) is not int or not 0 < index < MAX_CHOICES):
                continue
            delta = choice.delta or _NO_DELTA
            self._delta_events(
                events,
                index,
                delta.reasoning_content or delta.reasoning,
                delta.content or delta.refusal,
                choice.logprobs,
                delta.tool_calls,
            )
        if isinstance(served, str) and served and self._model is None:
            self._model = served
        return events

    def _events(self, data: dict[str, Any]) -> list[Event]:
        events: list[Event] = []
        served = data.get("model")
        if self._model is None and isinstance(served, str) and served:
            self._model = served
            events.append(Usage(model=served))
        finishes: list[Finish] | None = None
        for choice in data.get("choices") or ():
            if not isinstance(choice, dict):
                continue
            index = choice.get("index", 0)
            if index != 0 and (type(index) is not int or not 0 < index < MAX_CHOICES):
                continue
            delta = choice.get("delta") or {}
            self._delta_events(
                events,
                index,
                delta.get("reasoning_content") or delta.get("reasoning"),
                delta.get("content") or delta.get("refusal"),
                choice.get("logprobs"),
                delta.get("tool_calls"),
            )
            reason = choice.get("finish_reason")
            if reason:
                finish = _finish_of(reason, choice, index)
                finishes = [finish] if finishes is None else [*finishes, finish]
        usage = data.get("usage")
        if isinstance(usage, dict):
            events.append(_usage_from_json(usage))
        if finishes:
            events.extend(finishes)
        return events

    def _delta_events(
        self,
        events: list[Event],
        index: int,
        reasoning: Any,
        text: Any,
        logprobs: Any,
        calls: Any,
    ) -> None:
        """One choice's delta as events, from either decoding of a chunk (typed or dict)."""
        if reasoning and isinstance(reasoning, str):
            events.append(ThinkingDelta(reasoning, None, index))
        if logprobs is not None and type(logprobs) is not dict:
            logprobs = None
        if text and isinstance(text, str):
            events.append(TextDelta(text, index, logprobs))
        elif logprobs and (logprobs.get("content") or logprobs.get("refusal")):
            # log probabilities without text; an empty role chunk's are not content, which
            # would end the wait for a first token before there is one
            events.append(TextDelta("", index, logprobs))
        if calls:
            events.extend(self._tool_call(c, index) for c in calls if isinstance(c, dict))

    def _tool_call(self, call: dict[str, Any], choice: int) -> ToolCallDelta:
        function = call.get("function") or {}
        call_id = call.get("id")
        index = call.get("index")
        if not isinstance(index, int):  # some servers send whole calls without an index
            index = self._ids.get(call_id, len(self._ids)) if call_id else self._last
        if call_id:
            self._ids.setdefault(call_id, index)
        self._last = index
        arguments = function.get("arguments") or ""
        if not isinstance(arguments, str):  # an object, as a few servers send it
            arguments = _encode(arguments).decode()
        name = function.get("name") or None
        return ToolCallDelta(index, call_id or None, name, arguments, choice)


def stream_reader() -> OpenAIReader:
    return OpenAIReader()


def _finish(choice: dict[str, Any]) -> Finish | None:
    reason = choice.get("finish_reason")
    return _finish_of(reason, choice, 0) if reason else None


def _finish_of(reason: Any, choice: dict[str, Any], index: int) -> Finish:
    stop_reason = choice.get("stop_reason")  # vLLM: the stop string that matched
    if reason == "stop" and isinstance(stop_reason, str):
        return Finish("stop_sequence", stop_reason, index)
    return Finish(_FINISH_IN.get(reason, "stop"), None, index)


def _usage_json(usage: Usage) -> dict[str, Any]:
    prompt = usage.input_tokens or 0
    completion = usage.output_tokens or 0
    details: dict[str, int] = {"cached_tokens": usage.cache_read_tokens or 0}
    if usage.cache_write_tokens is not None:
        details["cache_write_tokens"] = usage.cache_write_tokens
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": details,
        "completion_tokens_details": {"reasoning_tokens": usage.reasoning_tokens or 0},
    }


def _usage_from_json(data: Mapping[str, Any]) -> Usage:
    prompt = data.get("prompt_tokens_details") or {}
    completion = data.get("completion_tokens_details") or {}
    return Usage(
        data.get("prompt_tokens"),
        data.get("completion_tokens"),
        prompt.get("cached_tokens"),
        prompt.get("cache_write_tokens"),
        completion.get("reasoning_tokens"),
    )


# --- whole responses and errors ----------------------------------------------------------------


def encode_response(completion: Completion, *, id: str, model: str) -> bytes:
    choices = [_choice_json(completion, 0)]
    choices.extend(_choice_json(other, i) for i, other in enumerate(completion.choices, 1))
    return _encode(
        {
            "id": id,
            "object": "chat.completion",
            "created": int(time.time()),
            "model": model,
            "choices": choices,
            "usage": _usage_json(completion.usage),
            "system_fingerprint": None,
        }
    )


def _choice_json(completion: Completion, index: int) -> dict[str, Any]:
    calls = [
        {"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}}
        for c in completion.tool_calls
    ]
    message: dict[str, Any] = {
        "role": "assistant",
        "content": completion.text or (None if calls else ""),
        "refusal": None,
        "annotations": [],
    }
    if completion.thinking:
        message["reasoning_content"] = completion.thinking
    if calls:
        message["tool_calls"] = calls
    if completion.finish is not None:
        reason = _FINISH_OUT.get(completion.finish.reason, completion.finish.reason)
    else:
        reason = "tool_calls" if calls else "stop"
    return {
        "index": index,
        "message": message,
        "logprobs": completion.logprobs,
        "finish_reason": reason,
    }


def parse_response(body: bytes) -> Completion:
    """A whole ``chat.completion``; an unreadable body or an ``error`` is ``Completion.error``."""
    try:
        data = _decode(body)
        if data.get("error"):
            return Completion(error=_error_event(data["error"], None))
        return _completion(data)
    except (msgspec.DecodeError, AttributeError, TypeError, KeyError):
        text = body[:200].decode("utf-8", "replace")
        problem = f"the upstream answered with a body that is not a chat completion: {text!r}"
        return Completion(error=Error("upstream_unavailable", problem, 502))


def _completion(data: dict[str, Any]) -> Completion:
    """The first choice, with the others (a client's ``n`` > 1) in ``choices`` by their index."""
    raw = [c for c in data.get("choices") or () if isinstance(c, dict)] or [{}]
    by_index = {c.get("index", 0): c for c in raw if type(c.get("index", 0)) is int}
    first = _choice(by_index.pop(0, raw[0]))
    usage = data.get("usage")
    first.usage = _usage_from_json(usage) if isinstance(usage, dict) else Usage()
    if isinstance(data.get("model"), str):
        first.usage = msgspec.structs.replace(first.usage, model=data["model"])
    later = [i for i in by_index if 0 < i < MAX_CHOICES]
    if later:
        first.choices = [
            _choice(by_index[i]) if i in by_index else Completion()
            for i in range(1, max(later) + 1)
        ]
    return first


def _choice(choice: dict[str, Any]) -> Completion:
    message = choice.get("message") or {}
    reasoning = message.get("reasoning_content") or message.get("reasoning")
    calls = [
        ToolCall(c.get("id", ""), c["function"].get("name", ""), c["function"].get("arguments", ""))
        for c in message.get("tool_calls") or ()
        if isinstance(c.get("function"), dict)
    ]
    logprobs = choice.get("logprobs")
    return Completion(
        text=message.get("content") or message.get("refusal") or "",
        thinking=reasoning if isinstance(reasoning, str) else "",
        tool_calls=calls,
        finish=_finish(choice) or Finish("tool_calls" if calls else "stop"),
        logprobs=logprobs if isinstance(logprobs, dict) else None,
    )


def _error_json(type: ErrorType, message: str, param: str | None) -> dict[str, Any]:
    return {
        "error": {
            "message": message,
            "type": ERROR_TYPES.get(type, "server_error"),
            "param": param,
            "code": ERROR_CODES.get(type),
        }
    }


def encode_error(error: GatewayError) -> bytes:
    return _encode(_error_json(error.type, error.message, error.param))


def _known_error(value: object) -> ErrorType | None:
    """Our type for an upstream's error ``code`` or ``type``: ours as is, OpenAI's translated."""
    if is_error_type(value):
        return value
    return _FOREIGN_ERRORS.get(value) if isinstance(value, str) else None


def _error_event(error: Any, status: int | None, retry_after: float | None = None) -> Error:
    """Our type from the status when there is one, else from the upstream's code or type."""
    if not isinstance(error, dict):
        error = {"message": error if isinstance(error, str) else _encode(error).decode()}
    message = error.get("message")
    code, kind = error.get("code"), error.get("type")
    if status is None and isinstance(code, int) and 400 <= code < 600:
        status = code  # vLLM puts the HTTP status in ``code``
    if status is not None:
        ours = _STATUS_ERRORS.get(status, "api_error" if status >= 500 else "invalid_request")
    else:
        known = (_known_error(value) for value in (code, kind))
        ours = next((value for value in known if value is not None), "api_error")
    text = message if isinstance(message, str) and message else f"the upstream reported {kind!r}"
    return Error(ours, text, status or ERROR_STATUS[ours], retry_after)


def parse_error(status: int, body: bytes, headers: Mapping[str, str]) -> Error:
    retry_after = retry_after_seconds(headers)
    try:
        data = _decode(body)
    except msgspec.DecodeError:
        data = None
    if isinstance(data, dict):
        error = data.get("error") or data.get("message") or data.get("detail")
        if error:
            return _error_event(error, status, retry_after)
    text = body.decode("utf-8", "replace")[:500]
    message = f"the upstream answered HTTP {status}" + (f": {text}" if text else " with no body")
    return _error_event({"message": message}, status, retry_after)

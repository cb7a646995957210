"""The Anthropic Messages API (``POST /v1/messages``), wire-exact in both directions.

Conventions other modules rely on:

- Tool results are ``Message("tool", [ToolResultPart(...)])``, one message per result. An Anthropic
  user turn holding ``tool_result`` blocks is read as those tool messages (in order) followed by a
  user message with the turn's other blocks, if any; on the way out, a run of tool messages and the
  user message after it become one user turn again, results first, as the API requires.
- ``redacted_thinking`` blocks are ``ThinkingPart("", REDACTED + data)`` in requests and
  ``ThinkingDelta("", REDACTED + data)`` in streams. The prefix cannot occur in a real (base64)
  signature, so the block passes back to Anthropic unchanged; other dialects treat it as thinking.
- ``Usage.input_tokens`` includes cache reads and writes; Anthropic's ``input_tokens`` excludes
  them, so the reader adds them and the writers subtract them.
- ``max_tokens`` is required on ``/v1/messages``, as the real API requires it; other top-level
  fields this module does not model (``top_k``, ``thinking``, ...) go to ``Request.extra``, and so
  does a ``tools`` list holding server tools or a ``tool_choice`` with options beyond its type.
- ``cache_control`` (prompt-caching breakpoints) on text, image, tool_use and tool_result blocks
  and on tools is kept on the part or tool and written back, so caching survives the gateway;
  ``system`` blocks are kept as sent in ``Request.system_blocks`` (their text, joined by blank
  lines, is ``Request.system`` for other dialects). Other dialects ignore these fields.
- What the gateway does not model passes through to an Anthropic upstream untouched: top-level
  fields (``Request.extra``), tool fields (``Tool.extra``), turn fields (``Message.extra``),
  content blocks of other types (``document``, ``search_result``, ...: ``OpaquePart``), and
  mid-conversation ``system`` messages (``Message("system", ...)``, text only), which keep
  their place. Other dialects translate what has an equivalent and refuse the rest by name.
- ``citations`` on known blocks have no place in the normalized request and are dropped. What
  cannot be represented inside a known block (images inside tool results, file sources of
  images) gets a 400.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import msgspec

from tokenrelay.dialects import passthrough, retry_after_seconds
from tokenrelay.dialects.body import decode_body
from tokenrelay.dialects.sse import SSEEvent, frame
from tokenrelay.model import (
    ERROR_STATUS,
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
    merge_usage,
)

NAME = "anthropic"
ID_PREFIX = "msg_"  # of the ids the gateway gives its responses
CONTENT_TYPE = "text/event-stream; charset=utf-8"
DEFAULT_MAX_TOKENS = 4096  # the API requires max_tokens; for requests from elsewhere without one
REDACTED = "redacted_thinking:"

# every other top-level field goes to Request.extra, verbatim
KNOWN_FIELDS = frozenset(
    {"model", "messages", "system", "max_tokens", "temperature", "top_p", "stop_sequences"}
    | {"tools", "tool_choice", "stream", "metadata"}
)

# our error type -> Anthropic's
ERROR_TYPES: dict[ErrorType, str] = {
    "invalid_request": "invalid_request_error",
    "unprocessable": "invalid_request_error",
    "unsupported_media_type": "invalid_request_error",
    "authentication": "authentication_error",
    "permission": "permission_error",
    "budget_exceeded": "billing_error",
    "not_found": "not_found_error",
    "request_too_large": "request_too_large",
    "rate_limit": "rate_limit_error",
    "overloaded": "overloaded_error",
    "timeout": "timeout_error",
    "api_error": "api_error",
    "upstream_unavailable": "api_error",
}
_OUR_ERROR_TYPES: dict[str, ErrorType] = {
    "invalid_request_error": "invalid_request",
    "authentication_error": "authentication",
    "billing_error": "budget_exceeded",
    "permission_error": "permission",
    "not_found_error": "not_found",
    "request_too_large": "request_too_large",
    "rate_limit_error": "rate_limit",
    "timeout_error": "timeout",
    "api_error": "api_error",
    "overloaded_error": "overloaded",
}
_STATUS_TYPES: dict[int, ErrorType] = {status: kind for kind, status in ERROR_STATUS.items()}

STOP_REASONS: dict[str, str] = {
    "stop": "end_turn",
    "length": "max_tokens",
    "tool_calls": "tool_use",
    "stop_sequence": "stop_sequence",
    "content_filter": "refusal",
}
_FINISH_REASONS: dict[str, FinishReason] = {
    "end_turn": "stop",
    "max_tokens": "length",
    "tool_use": "tool_calls",
    "stop_sequence": "stop_sequence",
    "refusal": "content_filter",
    "pause_turn": "stop",
    "model_context_window_exceeded": "length",
}
_TOOL_CHOICES = {"auto": "auto", "any": "required", "none": "none"}

_encode = msgspec.json.encode
_decode = msgspec.json.decode


# --- requests ----------------------------------------------------------------------------------


def _invalid(param: str, message: str) -> GatewayError:
    """Anthropic's own style: ``<path>: <what is wrong>``."""
    return GatewayError("invalid_request", f"{param}: {message}", 400, param=param)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _cache_control(block: dict[str, Any], path: str) -> dict[str, Any] | None:
    """A block's or tool's prompt-caching breakpoint, passed on as given (e.g. with a ``ttl``)."""
    value = block.get("cache_control")
    if value is not None and not isinstance(value, dict):
        raise _invalid(f"{path}.cache_control", "Input should be a valid dictionary")
    return value


def _text_of(value: Any, path: str) -> tuple[str, dict[str, Any] | None]:
    """A tool result's content: a string, or a list of text blocks joined by newlines, with the
    ``cache_control`` of the last block that has one.

    The joined text is one block on the way out, so only a breakpoint at its end can be kept: one
    on an earlier block moves to the end, which caches a longer prefix.
    """
    if isinstance(value, str):
        return value, None
    if not isinstance(value, list):
        raise _invalid(path, "Input should be a string or a list of text blocks")
    texts = []
    cache_control = None
    for i, block in enumerate(value):
        if not isinstance(block, dict) or block.get("type") != "text":
            raise _invalid(f"{path}.{i}", "only text blocks are supported here")
        if not isinstance(block.get("text"), str):
            raise _invalid(f"{path}.{i}.text", "Input should be a valid string")
        texts.append(block["text"])
        cache_control = _cache_control(block, f"{path}.{i}") or cache_control
    return "\n".join(texts), cache_control


def _system(value: Any) -> tuple[str, list[dict[str, Any]] | None]:
    """The top-level system prompt: a string, or text blocks kept as sent (breakpoints and
    fields we do not model included) with their text joined by blank lines for other dialects."""
    if isinstance(value, str):
        return value, None
    if not isinstance(value, list):
        raise _invalid("system", "Input should be a string or a list of text blocks")
    for i, block in enumerate(value):
        if not isinstance(block, dict) or block.get("type") != "text":
            raise _invalid(f"system.{i}", "only text blocks are supported here")
        if not isinstance(block.get("text"), str):
            raise _invalid(f"system.{i}.text", "Input should be a valid string")
        _cache_control(block, f"system.{i}")
    return "\n\n".join(block["text"] for block in value), [dict(block) for block in value]


def _field(block: dict[str, Any], key: str, path: str, kind: type = str) -> Any:
    value = block.get(key)
    if value is None:
        raise _invalid(f"{path}.{key}", "Field required")
    if not isinstance(value, kind):
        raise _invalid(f"{path}.{key}", f"Input should be a valid {_KIND_NAMES[kind]}")
    return value


_KIND_NAMES = {str: "string", dict: "dictionary", list: "list", bool: "boolean"}


def _image(block: dict[str, Any], path: str) -> ImagePart:
    source = _field(block, "source", path, dict)
    kind = source.get("type")
    if kind == "base64":
        return ImagePart(
            data=_field(source, "data", f"{path}.source"),
            media_type=_field(source, "media_type", f"{path}.source"),
            cache_control=_cache_control(block, path),
        )
    if kind == "url":
        url = _field(source, "url", f"{path}.source")
        return ImagePart(url=url, cache_control=_cache_control(block, path))
    raise _invalid(f"{path}.source.type", "use 'base64' or 'url' (file sources are not supported)")


def _part(block: Any, role: str, path: str) -> Part:
    if not isinstance(block, dict):
        raise _invalid(path, "Input should be a valid dictionary")
    kind = block.get("type")
    if kind == "text":
        return TextPart(_field(block, "text", path), _cache_control(block, path))
    if kind == "image":
        return _image(block, path)
    if kind == "tool_use":
        tool_input = block.get("input", {})
        if not isinstance(tool_input, dict):
            raise _invalid(f"{path}.input", "Input should be a valid dictionary")
        arguments = _encode(tool_input).decode()
        return ToolCallPart(
            _field(block, "id", path),
            _field(block, "name", path),
            arguments,
            _cache_control(block, path),
        )
    if kind == "tool_result":
        if role != "user":
            raise _invalid(f"{path}.type", "tool_result blocks belong in a user message")
        content = block.get("content") or ""
        is_error = block.get("is_error", False)
        if not isinstance(is_error, bool):
            raise _invalid(f"{path}.is_error", "Input should be a valid boolean")
        text, inner_cache_control = _text_of(content, f"{path}.content")
        return ToolResultPart(
            _field(block, "tool_use_id", path),
            text,
            is_error,
            _cache_control(block, path) or inner_cache_control,
        )
    if kind == "thinking":
        return ThinkingPart(_field(block, "thinking", path), _field(block, "signature", path))
    if kind == "redacted_thinking":
        return ThinkingPart("", REDACTED + _field(block, "data", path))
    if not isinstance(kind, str) or not kind:
        raise _invalid(
            f"{path}.type", "Field required" if kind is None else "Input should be a string"
        )
    return OpaquePart(NAME, block)  # a block type we do not model: carried as it is


def _messages(value: Any) -> list[Message]:
    if value is None:
        raise _invalid("messages", "Field required")
    if not isinstance(value, list):
        raise _invalid("messages", "Input should be a valid list")
    if not value:
        raise _invalid("messages", "at least one message is required")
    out: list[Message] = []
    for i, raw in enumerate(value):
        path = f"messages.{i}"
        if not isinstance(raw, dict):
            raise _invalid(path, "Input should be a valid dictionary")
        role = raw.get("role")
        if role not in ("user", "assistant", "system"):
            raise _invalid(f"{path}.role", "Input should be 'user', 'assistant' or 'system'")
        content = raw.get("content")
        # e.g. Claude Code's per-turn ``output_config``: written back to Anthropic as it came
        unmodelled = {key: item for key, item in raw.items() if key not in ("role", "content")}
        if isinstance(content, str):
            out.append(Message(role, [TextPart(content)], unmodelled))
            continue
        if not isinstance(content, list):
            raise _invalid(f"{path}.content", "Input should be a string or a list of blocks")
        parts = [_part(block, role, f"{path}.content.{j}") for j, block in enumerate(content)]
        if role == "system":  # mid-conversation instructions: text, kept in place
            for j, part in enumerate(parts):
                if not isinstance(part, TextPart):
                    raise _invalid(f"{path}.content.{j}.type", "a system message holds text only")
            out.append(Message("system", parts, unmodelled))
            continue
        results = [part for part in parts if isinstance(part, ToolResultPart)]
        out.extend(Message("tool", [result], unmodelled) for result in results)
        rest: list[Part] = [part for part in parts if not isinstance(part, ToolResultPart)]
        if rest or not results:
            out.append(Message(role, rest, unmodelled))
    return out


_TOOL_FIELDS = frozenset({"type", "name", "description", "input_schema", "cache_control"})


def _tools(value: Any, extra: dict[str, Any]) -> list[Tool]:
    """Custom tools; a list that also holds server tools (``web_search_...``) is kept verbatim in
    ``extra`` so it reaches an Anthropic upstream whole and is refused by any other."""
    if not isinstance(value, list):
        raise _invalid("tools", "Input should be a valid list")
    tools = []
    for i, raw in enumerate(value):
        path = f"tools.{i}"
        if not isinstance(raw, dict):
            raise _invalid(path, "Input should be a valid dictionary")
        if raw.get("type", "custom") != "custom":
            extra["tools"] = value
            continue
        description = raw.get("description")
        if description is not None and not isinstance(description, str):
            raise _invalid(f"{path}.description", "Input should be a valid string")
        schema = _field(raw, "input_schema", path, dict)
        name = _field(raw, "name", path)
        unmodelled = {key: item for key, item in raw.items() if key not in _TOOL_FIELDS}
        tools.append(Tool(name, description, schema, _cache_control(raw, path), unmodelled))
    return tools


def _tool_choice(value: Any, extra: dict[str, Any]) -> str:
    if not isinstance(value, dict):
        raise _invalid("tool_choice", "Input should be a valid dictionary")
    kind = value.get("type")
    if not isinstance(value.get("disable_parallel_tool_use", False), bool):
        raise _invalid("tool_choice.disable_parallel_tool_use", "Input should be a valid boolean")
    if set(value) - {"type", "name"}:
        extra["tool_choice"] = value  # e.g. disable_parallel_tool_use: Anthropic only
    if kind == "tool":
        name: str = _field(value, "name", "tool_choice")
        return name
    if isinstance(kind, str) and kind in _TOOL_CHOICES:
        return _TOOL_CHOICES[kind]
    raise _invalid("tool_choice.type", "Input should be 'auto', 'any', 'tool' or 'none'")


def parse_request(body: bytes) -> Request:
    """A client's ``POST /v1/messages``; every problem is a 400 naming the field."""
    data = decode_body(body)
    if not isinstance(data, dict):
        raise GatewayError(
            "invalid_request", "the request body must be a JSON object with model and messages", 400
        )
    model = data.get("model")
    if not isinstance(model, str) or not model:
        raise _invalid("model", "Field required" if model is None else "Input should be a string")
    max_tokens = data.get("max_tokens")
    if max_tokens is None:
        raise _invalid("max_tokens", "Field required")
    if not isinstance(max_tokens, int) or isinstance(max_tokens, bool) or max_tokens < 1:
        raise _invalid("max_tokens", "Input should be a positive integer")
    messages = _messages(data.get("messages"))
    wrong = passthrough.first_wrong(data, passthrough.ANTHROPIC)
    if wrong is not None:
        raise _invalid(wrong[0], f"Input should be {wrong[1]}")
    extra = {key: value for key, value in data.items() if key not in KNOWN_FIELDS}
    system, system_blocks = None, None
    if data.get("system") is not None:
        system, system_blocks = _system(data["system"])
    numbers: dict[str, float | None] = {}
    for key in ("temperature", "top_p"):
        value = data.get(key)
        if value is not None and not (_is_number(value) and 0 <= value <= 1):
            raise _invalid(key, "Input should be a number between 0 and 1")
        numbers[key] = None if value is None else float(value)
    stop = data.get("stop_sequences", [])
    if not isinstance(stop, list) or not all(isinstance(item, str) for item in stop):
        raise _invalid("stop_sequences", "Input should be a list of strings")
    tools = _tools(data["tools"], extra) if data.get("tools") is not None else []
    tool_choice = None
    if data.get("tool_choice") is not None:
        tool_choice = _tool_choice(data["tool_choice"], extra)
    stream = data.get("stream", False)
    if not isinstance(stream, bool):
        raise _invalid("stream", "Input should be a valid boolean")
    metadata: dict[str, str] = {}
    raw_metadata = data.get("metadata")
    if raw_metadata is not None:
        if not isinstance(raw_metadata, dict) or set(raw_metadata) - {"user_id"}:
            raise _invalid("metadata", "Input should be an object with only user_id")
        user_id = raw_metadata.get("user_id")
        if user_id is not None and not isinstance(user_id, str):
            raise _invalid("metadata.user_id", "Input should be a valid string")
        if user_id is not None:
            metadata["user_id"] = user_id
    return Request(
        dialect=NAME,
        model=model,
        messages=messages,
        system=system,
        system_blocks=system_blocks,
        max_tokens=max_tokens,
        temperature=numbers["temperature"],
        top_p=numbers["top_p"],
        stop=stop,
        tools=tools,
        tool_choice=tool_choice,
        stream=stream,
        extra=extra,
        metadata=metadata,
    )


def _with_cache_control(
    block: dict[str, Any], cache_control: dict[str, Any] | None
) -> dict[str, Any]:
    if cache_control is not None:
        block["cache_control"] = cache_control
    return block


def _image_json(part: ImagePart) -> dict[str, Any]:
    url = part.url
    if url is not None and url.startswith("data:") and ";base64," in url:
        media_type, data = url[5:].split(";base64,", 1)
        return {
            "type": "image",
            "source": {"type": "base64", "media_type": media_type, "data": data},
        }
    if url is not None:
        return {"type": "image", "source": {"type": "url", "url": url}}
    if part.data is None or part.media_type is None:
        raise GatewayError(
            "invalid_request", "an image needs a URL, or base64 data with its media type", 400
        )
    source = {"type": "base64", "media_type": part.media_type, "data": part.data}
    return {"type": "image", "source": source}


def _block_json(part: Part, index: int) -> dict[str, Any] | None:
    if isinstance(part, OpaquePart):
        if part.dialect != NAME:
            raise foreign_block(part, index, "an Anthropic model")
        return part.block
    if isinstance(part, TextPart):
        return _with_cache_control({"type": "text", "text": part.text}, part.cache_control)
    if isinstance(part, ImagePart):
        return _with_cache_control(_image_json(part), part.cache_control)
    if isinstance(part, ToolCallPart):
        call = {"type": "tool_use", "id": part.id, "name": part.name, "input": _input(part)}
        return _with_cache_control(call, part.cache_control)
    if isinstance(part, ToolResultPart):
        block: dict[str, Any] = {
            "type": "tool_result",
            "tool_use_id": part.tool_call_id,
            "content": part.content,
        }
        if part.is_error:
            block["is_error"] = True
        return _with_cache_control(block, part.cache_control)
    signature = part.signature
    if not signature:
        return None  # unsigned thinking (another provider's) cannot be verified; the API refuses it
    if signature.startswith(REDACTED):
        return {"type": "redacted_thinking", "data": signature[len(REDACTED) :]}
    return {"type": "thinking", "thinking": part.text, "signature": signature}


def _arguments(text: str) -> dict[str, Any] | None:
    """Tool call arguments as the object Anthropic's ``input`` must be; None if they are not."""
    if not text.strip():
        return {}
    try:
        value = _decode(text)
    except msgspec.DecodeError:
        return None
    return value if isinstance(value, dict) else None


def _input(part: ToolCallPart) -> dict[str, Any]:
    value = _arguments(part.arguments)
    if value is None:
        raise Untranslatable(
            f"the arguments of tool call {part.id!r} ({part.name}) are not a JSON object; "
            "Anthropic needs tool_use input as an object",
            param="messages",
        )
    return value


def _messages_json(messages: list[Message]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    merging = False  # the last user turn was opened by tool results and takes what follows
    for i, message in enumerate(messages):
        blocks = [block for part in message.content if (block := _block_json(part, i)) is not None]
        if message.role == "system":  # a mid-conversation system message, in its place
            out.append({"role": "system", "content": _system_content(blocks), **message.extra})
            merging = False
        elif message.role == "assistant":
            # An assistant turn left empty (an OpenAI-compatible model's unsigned reasoning is
            # all it held) is refused by Anthropic; without it the user turns around it merge,
            # as Anthropic merges consecutive same-role turns itself.
            if blocks:
                out.append({"role": "assistant", "content": blocks, **message.extra})
            merging = False
        elif merging:
            out[-1]["content"].extend(blocks)
            out[-1].update(message.extra)
            merging = message.role == "tool"
        else:
            out.append({"role": "user", "content": blocks, **message.extra})
            merging = message.role == "tool"
    return out


def _system_content(blocks: list[dict[str, Any]]) -> str | list[dict[str, Any]]:
    """One plain text block as the string Claude Code sends it; blocks otherwise."""
    if len(blocks) == 1 and set(blocks[0]) == {"type", "text"}:
        text: str = blocks[0]["text"]
        return text
    return blocks


def _tool_json(tool: Tool, same: bool) -> dict[str, Any]:
    out: dict[str, Any] = {"name": tool.name}
    if tool.description is not None:
        out["description"] = tool.description
    out["input_schema"] = tool.parameters
    if same:
        out.update(tool.extra)
    return _with_cache_control(out, tool.cache_control)


def _tool_choice_json(choice: str) -> dict[str, str]:
    if choice == "required":
        return {"type": "any"}
    if choice in ("auto", "none"):
        return {"type": choice}
    return {"type": "tool", "name": choice}


def encode_request(request: Request, model: str, *, stream: bool) -> bytes:
    """The body POSTed to an Anthropic upstream: ``extra`` verbatim from an Anthropic client,
    translated from another (``_translate_extra``), or ``Untranslatable`` naming what is not."""
    if request.temperature is not None and request.temperature > 1:
        raise Untranslatable(
            f"temperature {request.temperature:g} is above Anthropic's maximum of 1; use 0 to 1",
            param="temperature",
        )
    if request.dialect != NAME:
        foreign_message_fields(request.messages, request.dialect, "an Anthropic model")
    body: dict[str, Any] = {
        "model": model,
        "max_tokens": request.max_tokens or DEFAULT_MAX_TOKENS,
        "messages": _messages_json(request.messages),
    }
    if request.system_blocks:  # an Anthropic client's blocks, breakpoints and all
        body["system"] = request.system_blocks
    elif request.system:
        body["system"] = request.system
    if request.temperature is not None:
        body["temperature"] = request.temperature
    if request.top_p is not None:
        body["top_p"] = request.top_p
    if request.stop:
        body["stop_sequences"] = request.stop
    if request.tools:
        same = request.dialect == NAME
        if not same:
            foreign_tool_fields(request.tools, request.dialect, "an Anthropic model")
        body["tools"] = [_tool_json(tool, same) for tool in request.tools]
    if request.tool_choice is not None:
        body["tool_choice"] = _tool_choice_json(request.tool_choice)
    if "user_id" in request.metadata:
        body["metadata"] = {"user_id": request.metadata["user_id"]}
    body["stream"] = stream
    if request.dialect == NAME:
        body.update(request.extra)
    elif request.extra:
        _translate_extra(request, body)
    return _encode(body)


# OpenAI's ``reasoning_effort`` as a thinking budget (Anthropic's minimum is 1024 tokens);
# ``openai.reasoning_effort`` maps a budget back onto the same scale.
THINKING_BUDGETS = {"minimal": 1024, "low": 2048, "medium": 8192, "high": 16384, "xhigh": 32768}
# OpenAI fields that change nothing about the answer (storage, caching keys, abuse ids): dropped.
_INERT = frozenset({"store", "metadata", "prompt_cache_key", "safety_identifier"})


def _translate_extra(request: Request, body: dict[str, Any]) -> None:
    """An OpenAI request's extra fields into ``body``, or ``Untranslatable`` naming the first
    that has no Anthropic equivalent. See ``docs/dialects.md`` for the table."""
    extra = request.extra
    if request.dialect == "openai":
        refused = [key for key in extra if not _carried(key, extra[key], extra)]
    else:  # the table is Chat Completions'; another dialect's fields are its own
        refused = list(extra)
    if refused:
        names = ", ".join(sorted(refused))
        raise Untranslatable(
            f"{names} cannot be sent to an Anthropic model; remove them or use a route served "
            f"by {request.dialect}",
            param=min(refused),  # the first name of the message, for an OpenAI client
        )
    tools = extra.get("tools")
    if isinstance(tools, list) and "tools" in body:  # strict schemas: Anthropic has them too
        strict = [isinstance(t, dict) and bool(t.get("function", {}).get("strict")) for t in tools]
        for tool, is_strict in zip(body["tools"], strict, strict=False):
            if is_strict:
                tool["strict"] = True
    if extra.get("parallel_tool_calls") is False and "tools" in body:
        choice = body.setdefault("tool_choice", {"type": "auto"})
        if choice["type"] != "none":
            choice["disable_parallel_tool_use"] = True
    response_format = extra.get("response_format")
    if isinstance(response_format, dict) and response_format.get("type") == "json_schema":
        schema = response_format["json_schema"].get("schema") or {"type": "object"}
        body["output_config"] = {"format": {"type": "json_schema", "schema": schema}}
    effort = extra.get("reasoning_effort")
    if effort is not None and effort != "none":
        _think(request, body, THINKING_BUDGETS[effort])


def _carried(key: str, value: Any, extra: dict[str, Any]) -> bool:
    """Whether an OpenAI extra field has an Anthropic equivalent (or asks for nothing)."""
    if key in _INERT or key == "tools" or key == "parallel_tool_calls":
        return True
    if key == "n":
        return value in (None, 1)
    if key in ("logprobs", "top_logprobs"):  # asked for only with logprobs true
        return not extra.get("logprobs")
    if key == "response_format":
        return value is None or value.get("type") in ("text", "json_schema")
    if key == "reasoning_effort":
        return value is None or value == "none" or value in THINKING_BUDGETS
    return False


def _think(request: Request, body: dict[str, Any], budget: int) -> None:
    """Extended thinking with ``budget`` tokens; ``max_tokens`` counts them, so it is raised by
    the budget when it would not leave room for an answer."""
    if request.temperature not in (None, 1) or (request.top_p is not None and request.top_p < 0.95):
        raise Untranslatable(
            "reasoning_effort becomes extended thinking on an Anthropic model, which takes no "
            "temperature (or top_p below 0.95); leave them out",
            param="reasoning_effort",
        )
    if body.get("tool_choice", {}).get("type") in ("any", "tool"):
        raise Untranslatable(
            "reasoning_effort becomes extended thinking on an Anthropic model, which cannot be "
            "forced to call a tool; use tool_choice 'auto'",
            param="reasoning_effort",
        )
    if body["max_tokens"] <= budget:
        body["max_tokens"] += budget
    body["thinking"] = {"type": "enabled", "budget_tokens": budget}


# --- usage -------------------------------------------------------------------------------------


def _usage_json(usage: Usage, *, start: bool) -> dict[str, Any]:
    """Wire usage: ``input_tokens`` without cache tokens. ``start`` (message_start, whole
    responses) writes every count, 0 when unknown; otherwise only the counts known."""
    read, write = usage.cache_read_tokens, usage.cache_write_tokens
    out: dict[str, Any] = {}
    if usage.input_tokens is not None:
        out["input_tokens"] = max(0, usage.input_tokens - (read or 0) - (write or 0))
    elif start:
        out["input_tokens"] = 0
    if write is not None or start:
        out["cache_creation_input_tokens"] = write or 0
    if read is not None or start:
        out["cache_read_input_tokens"] = read or 0
    out["output_tokens"] = usage.output_tokens or 0
    if usage.reasoning_tokens is not None:
        out["output_tokens_details"] = {"thinking_tokens": usage.reasoning_tokens}
    return out


def _read_usage(data: Any, seen: list[int | None]) -> Usage:
    """Our ``Usage`` from wire usage, with only the counts it holds. ``seen`` carries the wire
    ``[input, cache_read, cache_write]`` known so far, so a later report still sums all three."""
    if not isinstance(data, dict):
        return Usage()
    given = False
    for i, key in enumerate(
        ("input_tokens", "cache_read_input_tokens", "cache_creation_input_tokens")
    ):
        value = data.get(key)
        if isinstance(value, int):
            seen[i] = value
            given = True
    wire_input, read, write = seen
    details = data.get("output_tokens_details")
    reasoning = details.get("thinking_tokens") if isinstance(details, dict) else None
    output = data.get("output_tokens")
    return Usage(
        input_tokens=wire_input + (read or 0) + (write or 0)
        if given and wire_input is not None
        else None,
        output_tokens=output if isinstance(output, int) else None,
        cache_read_tokens=data.get("cache_read_input_tokens"),
        cache_write_tokens=data.get("cache_creation_input_tokens"),
        reasoning_tokens=reasoning if isinstance(reasoning, int) else None,
    )


def _finish(stop_reason: Any, stop_sequence: Any) -> Finish:
    reason = _FINISH_REASONS.get(stop_reason, "stop") if isinstance(stop_reason, str) else "stop"
    return Finish(reason, stop_sequence if isinstance(stop_sequence, str) else None)


# --- streaming ---------------------------------------------------------------------------------

_NONE, _TEXT, _THINKING, _TOOL, _SIGNED = 0, 1, 2, 3, 4  # _SIGNED: a finished thinking block
_DELTA_HEAD = b'event: content_block_delta\ndata: {"type":"content_block_delta","index":'
_DELTA_FIELD = {
    _TEXT: b',"delta":{"type":"text_delta","text":',
    _THINKING: b',"delta":{"type":"thinking_delta","thinking":',
    _TOOL: b',"delta":{"type":"input_json_delta","partial_json":',
}
_DELTA_TAIL = b"}}\n\n"
_PING = b'event: ping\ndata: {"type":"ping"}\n\n'
_MESSAGE_STOP = b'event: message_stop\ndata: {"type":"message_stop"}\n\n'


class AnthropicWriter:
    """Normalized events to Anthropic SSE. ``message_start`` waits for the first content event, so
    input usage reported before it lands there; ``message_delta`` (stop reason and final usage)
    waits for ``close``, because an OpenAI upstream reports usage after its finish reason."""

    __slots__ = (
        "_closed",
        "_finish",
        "_head",
        "_id",
        "_index",
        "_kind",
        "_model",
        "_started",
        "_tool",
        "_usage",
    )

    def __init__(self, id: str, model: str) -> None:
        self._id = id
        self._model = model
        self._usage = Usage()
        self._finish: Finish | None = None
        self._started = False
        self._closed = False
        self._index = -1  # of the current content block
        self._kind = _NONE  # of the open block
        self._tool = -1  # our tool index of the open tool_use block
        self._head = b""  # the bytes before a delta's JSON string in the open block

    def write(self, event: Event) -> bytes:
        if self._closed:
            return b""
        if isinstance(event, TextDelta):
            if not event.text:
                return b""
            if self._kind == _TEXT:
                return self._head + _encode(event.text) + _DELTA_TAIL
            return self._open(_TEXT, {"type": "text", "text": ""}) + self._delta(event.text)
        if isinstance(event, ThinkingDelta):
            return self._thinking(event)
        if isinstance(event, ToolCallDelta):
            out = b""
            if self._kind != _TOOL or self._tool != event.index:
                call_id = event.id or f"toolu_{self._id}_{event.index}"
                block = {"type": "tool_use", "id": call_id, "name": event.name or "", "input": {}}
                out = self._open(_TOOL, block)
                self._tool = event.index
            return out + self._delta(event.arguments) if event.arguments else out
        if isinstance(event, Usage):
            self._usage = merge_usage(self._usage, event)
            return b""
        if isinstance(event, Finish):
            self._finish = event
            return b""
        self._closed = True  # an Error: the real API ends the stream with it
        error = {"type": ERROR_TYPES.get(event.type, "api_error"), "message": event.message}
        # The real API has sent message_start (with the prompt's usage) before an overload
        # error that comes ahead of any content; say what was reported, as it does.
        out = self._start() if not self._started and self._usage.input_tokens else b""
        return out + frame(_encode({"type": "error", "error": error}), "error")

    def _thinking(self, event: ThinkingDelta) -> bytes:
        out = b""
        signature = event.signature
        if signature is not None and signature.startswith(REDACTED):
            out = self._open(
                _NONE, {"type": "redacted_thinking", "data": signature[len(REDACTED) :]}
            )
            signature = None
        if event.text or signature:
            if self._kind != _THINKING:
                out += self._open(_THINKING, {"type": "thinking", "thinking": "", "signature": ""})
            if event.text:
                out += self._delta(event.text)
        if signature:
            delta = {"type": "signature_delta", "signature": signature}
            data = {"type": "content_block_delta", "index": self._index, "delta": delta}
            out += frame(_encode(data), "content_block_delta")
            self._kind = _SIGNED  # more thinking after a signature is a new block
        return out

    def _delta(self, text: str) -> bytes:
        return self._head + _encode(text) + _DELTA_TAIL

    def _open(self, kind: int, block: dict[str, Any]) -> bytes:
        out = self._start() if not self._started else self._stop_block()
        self._index += 1
        self._kind = kind
        self._head = _DELTA_HEAD + str(self._index).encode() + _DELTA_FIELD.get(kind, b"")
        data = {"type": "content_block_start", "index": self._index, "content_block": block}
        return out + frame(_encode(data), "content_block_start")

    def _start(self) -> bytes:
        self._started = True
        message: dict[str, Any] = {
            "id": self._id,
            "type": "message",
            "role": "assistant",
            "model": self._model,
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": _usage_json(self._usage, start=True),
        }
        return (
            frame(_encode({"type": "message_start", "message": message}), "message_start") + _PING
        )

    def _stop_block(self) -> bytes:
        if self._index < 0:
            return b""
        stop = {"type": "content_block_stop", "index": self._index}
        self._kind = _NONE
        return frame(_encode(stop), "content_block_stop")

    def close(self) -> bytes:
        if self._closed:
            return b""
        self._closed = True
        out = self._stop_block() if self._started else self._start()
        finish = self._finish or Finish()
        delta = {
            "stop_reason": STOP_REASONS.get(finish.reason, "end_turn"),
            "stop_sequence": finish.stop_sequence,
        }
        data = {
            "type": "message_delta",
            "delta": delta,
            "usage": _usage_json(self._usage, start=False),
        }
        return out + frame(_encode(data), "message_delta") + _MESSAGE_STOP


def stream_writer(request: Request, *, id: str, model: str) -> AnthropicWriter:
    return AnthropicWriter(id, model)


class AnthropicReader:
    """Anthropic SSE to normalized events. Tool calls are numbered from 0 across the message,
    whatever their content block index; unknown events and deltas are skipped, as the API's
    versioning policy asks of clients."""

    __slots__ = ("_seen", "_tools", "done")

    def __init__(self) -> None:
        self.done = False
        self._tools: dict[int, int] = {}  # content block index -> our tool index
        self._seen: list[int | None] = [None, None, None]

    def feed(self, sse: SSEEvent) -> list[Event]:
        try:
            data = _decode(sse.data)
        except msgspec.DecodeError:
            self.done = True
            return [
                Error(
                    "upstream_unavailable",
                    f"the Anthropic upstream sent an unreadable event: {sse.data[:200]!r}",
                    502,
                )
            ]
        if not isinstance(data, dict):
            return []
        kind = data.get("type", sse.event)
        if kind == "content_block_delta":
            delta = data.get("delta") or {}
            delta_kind = delta.get("type")
            if delta_kind == "text_delta":
                return [TextDelta(delta["text"])] if delta.get("text") else []
            if delta_kind == "input_json_delta":
                tool = self._tools.get(data.get("index", -1))
                partial = delta.get("partial_json")
                return (
                    [ToolCallDelta(tool, arguments=partial)] if tool is not None and partial else []
                )
            if delta_kind == "thinking_delta":
                return [ThinkingDelta(delta["thinking"])] if delta.get("thinking") else []
            if delta_kind == "signature_delta":
                return [ThinkingDelta("", delta.get("signature"))]
            return []
        if kind == "content_block_start":
            return self._block_start(data)
        if kind == "message_start":
            message = data.get("message") or {}
            usage = _read_usage(message.get("usage"), self._seen)
            served = message.get("model")  # may differ from the one asked for: metered on it
            if isinstance(served, str) and served:
                usage = msgspec.structs.replace(usage, model=served)
            return [usage]
        if kind == "message_delta":
            delta = data.get("delta") or {}
            events: list[Event] = []
            if "usage" in data:
                events.append(_read_usage(data["usage"], self._seen))
            if delta.get("stop_reason") is not None:
                events.append(_finish(delta["stop_reason"], delta.get("stop_sequence")))
            return events
        if kind == "message_stop":
            self.done = True
            return []
        if kind == "error":
            self.done = True
            error = data.get("error") or {}
            ours = _OUR_ERROR_TYPES.get(str(error.get("type")), "api_error")
            message = str(error.get("message") or "the Anthropic upstream reported an error")
            return [Error(ours, message, ERROR_STATUS[ours])]
        return []  # ping, content_block_stop, and event types newer than this code

    def _block_start(self, data: dict[str, Any]) -> list[Event]:
        block = data.get("content_block") or {}
        kind = block.get("type")
        if kind == "tool_use":
            index = len(self._tools)
            self._tools[data.get("index", -1)] = index
            return [ToolCallDelta(index, block.get("id"), block.get("name"))]
        if kind == "text" and block.get("text"):
            return [TextDelta(block["text"])]
        if kind == "thinking" and (block.get("thinking") or block.get("signature")):
            return [ThinkingDelta(block.get("thinking", ""), block.get("signature") or None)]
        if kind == "redacted_thinking":
            return [ThinkingDelta("", REDACTED + str(block.get("data", "")))]
        return []


def stream_reader() -> AnthropicReader:
    return AnthropicReader()


# --- whole responses and errors ----------------------------------------------------------------


def encode_response(completion: Completion, *, id: str, model: str) -> bytes:
    """The non-streaming Message. Tool arguments that are not a JSON object raise a 502: sending
    ``{}`` would hide that the upstream model wrote a broken call."""
    content: list[dict[str, Any]] = []
    signature = completion.thinking_signature
    if signature is not None and signature.startswith(REDACTED):
        content.append({"type": "redacted_thinking", "data": signature[len(REDACTED) :]})
        signature = None
    if completion.thinking or signature:
        content.append(
            {"type": "thinking", "thinking": completion.thinking, "signature": signature or ""}
        )
    if completion.text:
        content.append({"type": "text", "text": completion.text})
    for call in completion.tool_calls:
        tool_input = _arguments(call.arguments)
        if tool_input is None:
            raise GatewayError(
                "upstream_unavailable",
                f"the upstream model wrote tool call {call.id!r} ({call.name}) with arguments "
                f"that are not a JSON object: {call.arguments[:200]!r}",
                502,
            )
        content.append({"type": "tool_use", "id": call.id, "name": call.name, "input": tool_input})
    finish = completion.finish or Finish()
    body = {
        "id": id,
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content,
        "stop_reason": STOP_REASONS.get(finish.reason, "end_turn"),
        "stop_sequence": finish.stop_sequence,
        "usage": _usage_json(completion.usage, start=True),
    }
    return _encode(body)


def parse_response(body: bytes) -> Completion:
    try:
        data = _decode(body)
    except msgspec.DecodeError:
        raise GatewayError(
            "upstream_unavailable",
            f"the Anthropic upstream sent an unreadable response: {body[:200]!r}",
            502,
        ) from None
    if not isinstance(data, dict):
        raise GatewayError("upstream_unavailable", "the Anthropic upstream sent no message", 502)
    completion = Completion()
    texts, thinking = [], []
    for block in data.get("content") or []:
        kind = block.get("type") if isinstance(block, dict) else None
        if kind == "text":
            texts.append(str(block.get("text", "")))
        elif kind == "thinking":
            thinking.append(str(block.get("thinking", "")))
            completion.thinking_signature = block.get("signature") or None
        elif kind == "redacted_thinking":
            completion.thinking_signature = REDACTED + str(block.get("data", ""))
        elif kind == "tool_use":
            arguments = _encode(block.get("input", {})).decode()
            call = ToolCall(str(block.get("id", "")), str(block.get("name", "")), arguments)
            completion.tool_calls.append(call)
    completion.text = "".join(texts)
    completion.thinking = "".join(thinking)
    completion.usage = _read_usage(data.get("usage"), [None, None, None])
    if isinstance(data.get("model"), str):
        completion.usage = msgspec.structs.replace(completion.usage, model=data["model"])
    completion.finish = _finish(data.get("stop_reason"), data.get("stop_sequence"))
    return completion


def encode_error(error: GatewayError) -> bytes:
    body = {"type": ERROR_TYPES.get(error.type, "api_error"), "message": error.message}
    return _encode({"type": "error", "error": body})


def parse_error(status: int, body: bytes, headers: Mapping[str, str]) -> Error:
    """An upstream's non-200 answer; the HTTP status is kept whatever the body says."""
    retry_after = retry_after_seconds(headers)
    fallback = _STATUS_TYPES.get(status) or ("api_error" if status >= 500 else "invalid_request")
    try:
        error = _decode(body)["error"]
        kind = _OUR_ERROR_TYPES.get(error["type"], fallback)
        return Error(kind, str(error["message"]), status, retry_after)
    except (msgspec.DecodeError, KeyError, TypeError):
        text = body.decode("utf-8", "replace")[:500]
        message = f"the Anthropic upstream answered HTTP {status}" + (f": {text}" if text else "")
        return Error(fallback, message, status, retry_after)

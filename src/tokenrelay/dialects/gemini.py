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

import re
from collections.abc import Mapping
from typing import Any

import msgspec

from tokenrelay.dialects import retry_after_seconds
from tokenrelay.dialects.body import decode_body
from tokenrelay.dialects.sse import SSEEvent, frame
from tokenrelay.model import (
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
    foreign_message_fields,
    foreign_tool_fields,
    merge_usage,
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


# --- requests ----------------------------------------------------------------------------------


def parse_call(path: str) -> tuple[str, bool] | None:
    """``/v1beta/models/{model}:generateContent`` as (model, stream); None for another path."""
    tail = path.rpartition("/models/")[2]
    model, sep, method = tail.rpartition(":")
    if not sep or not model or "/" in model:
        return None
    if method == "streamGenerateContent":
        return model, True
    if method == "generateContent":
        return model, False
    return None


def parse_request(body: bytes) -> Request:
    """A ``GenerateContentRequest``; ``model`` is left empty for the caller (it is in the URL)."""
    data = decode_body(body)
    if not isinstance(data, dict):
        raise _invalid('the request body must be a JSON object like {"contents": [...]}')
    unknown = sorted(set(data) - _KNOWN - _PASSED)
    if unknown:
        raise _invalid(f"Invalid JSON payload received. Unknown name {unknown[0]!r}", unknown[0])
    contents = data.get("contents")
    if not isinstance(contents, list) or not contents:
        raise _invalid("'contents' is required: a list of {role, parts}", "contents")
    messages = _parse_contents(contents)
    system = _system_text(data.get("systemInstruction"))
    tools = _parse_tools(data.get("tools"))
    extra: dict[str, Any] = {key: data[key] for key in _PASSED if key in data}
    config = data.get("generationConfig") or {}
    if not isinstance(config, dict):
        raise _invalid("'generationConfig' must be an object", "generationConfig")
    hints = {}
    for key, value in config.items():
        if key in _MODELLED_CONFIG:
            continue
        if _hint(key, value):
            hints[key] = value
        else:
            extra[CONFIG + key] = value
    stop = config.get("stopSequences") or []
    if not isinstance(stop, list) or not all(isinstance(s, str) for s in stop):
        raise _invalid(
            "'stopSequences' must be a list of strings", "generationConfig.stopSequences"
        )
    max_tokens = config.get("maxOutputTokens")
    if max_tokens is not None and (not isinstance(max_tokens, int) or max_tokens < 1):
        raise _invalid(
            "'maxOutputTokens' must be a positive integer", "generationConfig.maxOutputTokens"
        )
    tool_choice = _parse_tool_config(data.get("toolConfig"), extra)
    return Request(
        dialect=NAME,
        model=str(data.get("model") or "").removeprefix("models/"),
        messages=messages,
        system=system,
        max_tokens=max_tokens,
        temperature=_number(config, "temperature"),
        top_p=_number(config, "topP"),
        stop=stop,
        tools=tools,
        tool_choice=tool_choice,
        extra=extra,
        include_usage=True,
        front_options={HINTS: hints} if hints else {},
    )


def _number(config: Mapping[str, Any], name: str) -> float | None:
    value = config.get(name)
    if value is None:
        return None
    if not isinstance(value, int | float) or isinstance(value, bool):
        raise _invalid(f"'{name}' must be a number", f"generationConfig.{name}")
    return float(value)


def _system_text(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, str):
        return value
    if not isinstance(value, dict) or not isinstance(value.get("parts"), list):
        raise _invalid("'systemInstruction' must be {parts: [{text}]}", "systemInstruction")
    texts = []
    for part in value["parts"]:
        if not isinstance(part, dict) or not isinstance(part.get("text"), str):
            raise _invalid("'systemInstruction' may hold only text parts", "systemInstruction")
        texts.append(part["text"])
    return "\n\n".join(texts)


def _parse_contents(contents: list[Any]) -> list[Message]:
    messages: list[Message] = []
    pending: list[tuple[str, str]] = []  # (id, name) of calls not yet answered
    for i, content in enumerate(contents):
        where = f"contents[{i}]"
        if not isinstance(content, dict) or not isinstance(content.get("parts"), list):
            raise _invalid(f"'{where}' must be {{role, parts: [...]}}", where)
        role = content.get("role") or "user"
        if role not in ("user", "model", "function"):
            raise _invalid(f"'{where}.role' must be 'user' or 'model'", f"{where}.role")
        parts: list[Part] = []
        results: list[Part] = []
        for k, raw in enumerate(content["parts"]):
            at = f"{where}.parts[{k}]"
            if not isinstance(raw, dict):
                raise _invalid(f"'{at}' must be an object", at)
            signature = raw.get("thoughtSignature")
            if "functionCall" in raw:
                call = raw["functionCall"]
                if role != "model" or not isinstance(call, dict) or not call.get("name"):
                    raise _invalid(f"'{at}.functionCall' needs a name, in a model turn", at)
                call_id = str(call.get("id") or f"call_{i}_{k}")
                pending.append((call_id, call["name"]))
                args = _encode(call.get("args") or {}).decode()
                parts.append(ToolCallPart(call_id, call["name"], args, signature=signature))
            elif "functionResponse" in raw:
                answer = raw["functionResponse"]
                if not isinstance(answer, dict) or not answer.get("name"):
                    raise _invalid(f"'{at}.functionResponse' needs a name", at)
                answered = answer.get("id") or _answered(pending, answer["name"])
                if answered is None:
                    raise _invalid(
                        f"'{at}.functionResponse' answers no functionCall named "
                        f"{answer['name']!r} in the turn before it",
                        at,
                    )
                pending[:] = [p for p in pending if p[0] != answered]
                content_text, is_error = _response_text(answer.get("response"))
                results.append(ToolResultPart(str(answered), content_text, is_error))
            elif raw.get("thought") is True:
                parts.append(ThinkingPart(str(raw.get("text", "")), signature))
            elif "text" in raw:
                if not isinstance(raw["text"], str):
                    raise _invalid(f"'{at}.text' must be a string", at)
                if signature:  # a signed answer part: the signature goes back in front of it
                    parts.append(ThinkingPart("", signature))
                parts.append(TextPart(raw["text"]))
            elif "inlineData" in raw and str(
                (raw["inlineData"] or {}).get("mimeType", "")
            ).startswith("image/"):
                blob = raw["inlineData"]
                parts.append(ImagePart(data=blob.get("data"), media_type=blob["mimeType"]))
            elif signature and len(raw) == 1:
                parts.append(ThinkingPart("", signature))
            else:
                parts.append(OpaquePart(NAME, {"type": next(iter(raw), "part"), **raw}))
        if results:
            messages.append(Message("tool", results))
        if parts:
            messages.append(Message("assistant" if role == "model" else "user", parts))
    return messages


def _answered(pending: list[tuple[str, str]], name: str) -> str | None:
    return next((call_id for call_id, called in pending if called == name), None)


def _response_text(response: Any) -> tuple[str, bool]:
    if isinstance(response, dict) and len(response) == 1:
        key, value = next(iter(response.items()))
        if key in ("result", "output", "content", "error") and isinstance(value, str):
            return value, key == "error"
    return _encode(response if response is not None else {}).decode(), False


def _parse_tools(value: Any) -> list[Tool]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise _invalid("'tools' must be a list of {functionDeclarations: [...]}", "tools")
    tools: list[Tool] = []
    for i, entry in enumerate(value):
        if not isinstance(entry, dict):
            raise _invalid(f"'tools[{i}]' must be an object", f"tools[{i}]")
        for key in entry:
            if key != "functionDeclarations":  # googleSearch, codeExecution, urlContext ...
                raise Untranslatable(
                    f"tools[{i}].{key} is a tool Gemini runs itself; only functionDeclarations "
                    "can be served by this gateway",
                    param=f"tools[{i}].{key}",
                )
        for k, declaration in enumerate(entry.get("functionDeclarations") or []):
            if not isinstance(declaration, dict) or not isinstance(declaration.get("name"), str):
                at = f"tools[{i}].functionDeclarations[{k}]"
                raise _invalid(f"'{at}' needs a name", at)
            schema = declaration.get("parametersJsonSchema") or declaration.get("parameters")
            tools.append(
                Tool(
                    declaration["name"],
                    declaration.get("description"),
                    _json_schema(schema) if schema else {"type": "object", "properties": {}},
                )
            )
    return tools


def _json_schema(schema: Any) -> Any:
    """Gemini's OpenAPI ``Schema`` (types in capitals: ``OBJECT``) as JSON Schema."""
    if isinstance(schema, dict):
        out: dict[str, Any] = {}
        for key, value in schema.items():
            if key == "type" and isinstance(value, str):
                out[key] = value.lower()
            elif key in ("properties", "$defs", "definitions") and isinstance(value, dict):
                out[key] = {name: _json_schema(sub) for name, sub in value.items()}
            elif key in ("items", "anyOf", "oneOf", "allOf", "additionalProperties"):
                out[key] = _json_schema(value)
            else:
                out[key] = value
        return out
    if isinstance(schema, list):
        return [_json_schema(item) for item in schema]
    return schema


def _parse_tool_config(value: Any, extra: dict[str, Any]) -> str | None:
    if value is None:
        return None
    config = value.get("functionCallingConfig") if isinstance(value, dict) else None
    if not isinstance(config, dict):
        raise _invalid("'toolConfig' must be {functionCallingConfig: {mode}}", "toolConfig")
    mode = str(config.get("mode", "AUTO")).upper()
    names = config.get("allowedFunctionNames") or []
    if mode == "ANY" and isinstance(names, list) and len(names) == 1:
        return str(names[0])
    if names:
        extra["toolConfig"] = value  # a subset of tools: only Gemini can restrict to it
    return {"AUTO": "auto", "NONE": "none", "ANY": "required", "VALIDATED": "auto"}.get(mode)


def encode_request(request: Request, model: str, *, stream: bool) -> bytes:
    """A ``GenerateContentRequest`` (the model and streaming are the transport's URL)."""
    same = request.dialect == NAME
    config: dict[str, Any] = {}
    extra: dict[str, Any] = dict(request.extra) if same else _foreign_extra(request, config)
    if not same:
        foreign_message_fields(request.messages, request.dialect, "a Gemini model")
    body: dict[str, Any] = {"contents": _encode_contents(request.messages)}
    if request.system:
        body["systemInstruction"] = {"parts": [{"text": request.system}]}
    if request.tools:
        if not same:
            foreign_tool_fields(request.tools, request.dialect, "a Gemini model")
        body["tools"] = [{"functionDeclarations": [_declaration(tool) for tool in request.tools]}]
    choice = request.tool_choice
    if "toolConfig" in extra:
        body["toolConfig"] = extra.pop("toolConfig")
    elif choice is not None:
        mode = {"auto": "AUTO", "none": "NONE", "required": "ANY"}.get(choice)
        calling: dict[str, Any] = {"mode": mode or "ANY"}
        if mode is None:
            calling["allowedFunctionNames"] = [choice]
        body["toolConfig"] = {"functionCallingConfig": calling}
    if request.max_tokens is not None:
        config["maxOutputTokens"] = request.max_tokens
    if request.temperature is not None:
        config["temperature"] = request.temperature
    if request.top_p is not None:
        config["topP"] = request.top_p
    if request.stop:
        if len(request.stop) > 5:
            raise Untranslatable("Gemini takes at most 5 stop sequences", param="stop")
        config["stopSequences"] = request.stop
    if same:
        config.update(request.front_options.get(HINTS, {}))
        for key in [key for key in extra if key.startswith(CONFIG)]:
            config[key.removeprefix(CONFIG)] = extra.pop(key)
    if config:
        body["generationConfig"] = config
    body.update(extra)
    return _encode(body)


def _declaration(tool: Tool) -> dict[str, Any]:
    out: dict[str, Any] = {"name": tool.name}
    if tool.description:
        out["description"] = tool.description
    out["parametersJsonSchema"] = tool.parameters
    return out


def _encode_contents(messages: list[Message]) -> list[dict[str, Any]]:
    names: dict[str, str] = {}  # tool-call id -> function name, for the responses
    contents: list[dict[str, Any]] = []
    for i, message in enumerate(messages):
        if message.role == "system":
            raise Untranslatable(
                f"messages[{i}] is a system message in the middle of the conversation, which "
                "Gemini cannot carry; put the instructions in the system prompt",
                param=f"messages[{i}]",
            )
        role = "model" if message.role == "assistant" else "user"
        parts: list[dict[str, Any]] = []
        signature: str | None = None  # a bare signature signs the part after it
        for part in message.content:
            out: dict[str, Any]
            if isinstance(part, TextPart):
                out = {"text": part.text}
            elif isinstance(part, ThinkingPart):
                if not part.text:
                    signature = part.signature
                    continue
                out = {"text": part.text, "thought": True}
                if part.signature:
                    out["thoughtSignature"] = part.signature
            elif isinstance(part, ToolCallPart):
                names[part.id] = part.name
                out = {"functionCall": {"name": part.name, "args": _args(part.arguments, i)}}
                if part.id and not part.id.startswith("call_"):
                    out["functionCall"]["id"] = part.id
                if part.signature:
                    out["thoughtSignature"] = part.signature
            elif isinstance(part, ToolResultPart):
                name = names.get(part.tool_call_id)
                if name is None:
                    raise Untranslatable(
                        f"messages[{i}] answers tool call {part.tool_call_id!r}, which no "
                        "earlier assistant turn made; Gemini needs the function's name",
                        param=f"messages[{i}]",
                    )
                key = "error" if part.is_error else "result"
                answer: dict[str, Any] = {"name": name, "response": {key: part.content}}
                if not part.tool_call_id.startswith("call_"):
                    answer["id"] = part.tool_call_id
                out = {"functionResponse": answer}
            elif isinstance(part, ImagePart):
                if part.data is None:
                    raise Untranslatable(
                        f"messages[{i}] holds an image by URL, which Gemini cannot fetch; send "
                        "it inline as base64 data",
                        param=f"messages[{i}].content",
                    )
                out = {
                    "inlineData": {"mimeType": part.media_type or "image/png", "data": part.data}
                }
            else:
                if part.dialect != NAME:
                    raise Untranslatable(
                        f"messages[{i}] holds a {part.block.get('type')!r} block, which cannot "
                        f"be sent to Gemini; remove it or use a route served by {part.dialect}",
                        param=f"messages[{i}].content",
                    )
                out = {k: v for k, v in part.block.items() if k != "type"}
            if signature is not None:
                out.setdefault("thoughtSignature", signature)
                signature = None
            parts.append(out)
        if signature is not None:
            parts.append({"text": "", "thoughtSignature": signature})
        if not parts:
            continue
        if contents and contents[-1]["role"] == role and message.role == "tool":
            contents[-1]["parts"].extend(parts)  # parallel calls' answers in one turn
        else:
            contents.append({"role": role, "parts": parts})
    return contents


def _args(arguments: str, index: int) -> Any:
    try:
        value = _decode(arguments or "{}")
    except msgspec.DecodeError:
        raise Untranslatable(
            f"messages[{index}] holds a tool call whose arguments are not JSON",
            param=f"messages[{index}]",
        ) from None
    return value


def _foreign_extra(request: Request, config: dict[str, Any]) -> dict[str, Any]:
    """Another dialect's extra fields into ``config`` (generationConfig), or ``Untranslatable``
    naming the first with no Gemini equivalent: Anthropic's ``thinking`` and ``output_config``,
    OpenAI's ``reasoning_effort`` and ``response_format``, the Responses API's ``reasoning``
    and ``text``."""
    refused: list[str] = []
    # a Responses client's reasoning effort is a hint (other upstreams drop it): Gemini thinks
    effort = request.front_options.get("responses_hints", {}).get("reasoning", {}).get("effort")
    if effort in THINKING_BUDGETS:
        _think(config, THINKING_BUDGETS[effort])
    for key, value in request.extra.items():
        if key in _INERT or (key == "tools" and request.dialect == "openai"):
            continue
        if key == "thinking" and isinstance(value, dict):
            if value.get("type") == "enabled":
                _think(config, int(value.get("budget_tokens") or 1024))
            elif value.get("type") == "adaptive":
                config["thinkingConfig"] = {"thinkingBudget": -1, "includeThoughts": True}
            elif value.get("type") != "disabled":
                refused.append(key)
        elif key in ("reasoning_effort", "reasoning"):
            effort = value.get("effort") if isinstance(value, dict) else value
            if effort in THINKING_BUDGETS:
                _think(config, THINKING_BUDGETS[effort])
            elif effort not in (None, "none"):
                refused.append(key)
        elif key == "tool_choice" and isinstance(value, dict):
            if set(value) - {"type", "name", "disable_parallel_tool_use"}:
                refused.append(key)
        elif key == "n" and value in (None, 1):
            continue
        elif key in ("response_format", "output_config", "text"):
            schema = _schema_of(key, value)
            if schema is False:
                refused.append(key)
            elif schema is not None:
                config["responseMimeType"] = "application/json"
                if schema is not True:
                    config["responseJsonSchema"] = schema
        else:
            refused.append(key)
    if refused:
        names = ", ".join(repr(key) for key in refused)
        raise Untranslatable(
            f"{names} cannot be sent to a Gemini model; remove them or use a route served by "
            f"{request.dialect}",
            param=refused[0],
        )
    return {}


def _think(config: dict[str, Any], budget: int) -> None:
    config["thinkingConfig"] = {"thinkingBudget": budget, "includeThoughts": True}


def _schema_of(key: str, value: Any) -> Any:
    """A structured-output request as its JSON Schema; True for any JSON object, None for plain
    text, False for what Gemini cannot do."""
    if not isinstance(value, dict):
        return None if value is None else False
    fmt = value.get("format") if key in ("output_config", "text") else value
    if fmt is None:
        return None if key == "text" or not value else False
    if not isinstance(fmt, dict):
        return False
    kind = fmt.get("type")
    if kind == "text":
        return None
    if kind == "json_object":
        return True
    if kind == "json_schema":
        schema = fmt.get("schema") or (fmt.get("json_schema") or {}).get("schema")
        return schema or True
    return False


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


# --- errors ------------------------------------------------------------------------------------


def _error_json(error: Error | GatewayError) -> dict[str, Any]:
    out: dict[str, Any] = {
        "code": error.status,
        "message": error.message,
        "status": "UNAVAILABLE" if error.status == 503 else _TYPE_STATUS[error.type],
    }
    if error.retry_after is not None:
        seconds = max(0.0, error.retry_after)
        out["details"] = [
            {
                "@type": "type.googleapis.com/google.rpc.RetryInfo",
                "retryDelay": f"{seconds:g}s",
            }
        ]
    return out


def encode_error(error: GatewayError) -> bytes:
    body = _error_json(error)
    if error.param is not None:
        body.setdefault("details", []).append(
            {
                "@type": "type.googleapis.com/google.rpc.BadRequest",
                "fieldViolations": [{"field": error.param, "description": error.message}],
            }
        )
    return _encode({"error": body})


def _error_from(error: Any, status: int, retry_after: float | None) -> Error:
    if not isinstance(error, dict):
        return Error("api_error", str(error)[:500], status, retry_after)
    code = error.get("code")
    if isinstance(code, int) and 400 <= code < 600 and status == 500:
        status = code
    word = str(error.get("status") or "")
    kind = _STATUS_TYPES.get(word) or _HTTP_TYPES.get(status)
    if kind is None:
        kind = "api_error" if status >= 500 else "invalid_request"
    for detail in error.get("details") or ():
        delay = detail.get("retryDelay") if isinstance(detail, dict) else None
        found = _DURATION.match(delay) if isinstance(delay, str) else None
        if found and retry_after is None:
            retry_after = float(found.group(1))
    message = str(error.get("message") or f"Gemini answered HTTP {status}")
    return Error(kind, message, status, retry_after)


def parse_error(status: int, body: bytes, headers: Mapping[str, str]) -> Error:
    """Google's ``{"error": {code, message, status, details}}``; a ``RetryInfo`` detail's
    ``retryDelay`` is the retry-after when no header gives one. The HTTP status is kept."""
    retry_after = retry_after_seconds(headers)
    try:
        data = _decode(body)
        if isinstance(data, list) and data:  # a streamed array's error
            data = data[0]
        error = data["error"]
    except (msgspec.DecodeError, KeyError, TypeError):
        text = body.decode("utf-8", "replace")[:500]
        kind = _HTTP_TYPES.get(status) or ("api_error" if status >= 500 else "invalid_request")
        message = f"Gemini answered HTTP {status}" + (f": {text}" if text else "")
        return Error(kind, message, status, retry_after)
    found = _error_from(error, status, retry_after)
    return Error(found.type, found.message, status, found.retry_after)

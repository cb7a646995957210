"""``GenerateContentRequest`` both ways: parsed into the normalized request, written from it."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import msgspec

from tokenrelay.dialects.body import decode_body
from tokenrelay.dialects.gemini.wire import (
    _INERT,
    _KNOWN,
    _MODELLED_CONFIG,
    _PASSED,
    CONFIG,
    HINTS,
    NAME,
    THINKING_BUDGETS,
    _decode,
    _encode,
    _hint,
    _invalid,
)
from tokenrelay.model import (
    ImagePart,
    Message,
    OpaquePart,
    Part,
    Request,
    TextPart,
    ThinkingPart,
    Tool,
    ToolCallPart,
    ToolResultPart,
    Untranslatable,
    foreign_message_fields,
    foreign_tool_fields,
)

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

"""Requests on ``POST /v1/responses``: a client's body to the normalized ``Request``, and a
``Request`` to the body a Responses upstream takes.

What the normalized model has no place for is kept three ways. Fields that change what is asked
and that another API cannot say (a ``json_schema`` text format, hosted tools such as
``web_search``, item types such as ``web_search_call``, fields this code does not know) go to
``Request.extra``: they reach a Responses upstream whole and make any other target refuse the
request (``Untranslatable``). Fields that only tune how a Responses upstream serves it
(``reasoning``, ``include``, ``store``, ``prompt_cache_key``, ``truncation``, ``service_tier``,
``parallel_tool_calls``, ``client_metadata``, function tools' ``strict``, ...) are hints: passed
on to a Responses upstream, dropped by others. What the response object repeats goes to the
writer.

A ``custom`` (freeform) tool becomes a function tool taking one string, ``{"input": ...}``, with
its grammar in the description; its calls come back to the client as ``custom_tool_call`` items.
Reasoning items become thinking: their summary is the text, their ``encrypted_content`` the
signature (Anthropic's signature travels there too, so a Claude route's thinking round-trips).
"""

from __future__ import annotations

import re
from typing import Any

import msgspec

from tokenrelay.dialects.body import decode_body
from tokenrelay.dialects.responses.items import input_items
from tokenrelay.dialects.responses.wire import (
    BODY,
    CLIENT_SYSTEM,
    CONTINUES,
    CUSTOM_INPUT,
    CUSTOM_TOOLS,
    ECHO,
    HINTS,
    HISTORY,
    INPUT,
    NAME,
    REASONING_IDS,
    REFERENCES,
    custom_arguments,
    custom_input,
)
from tokenrelay.model import (
    GatewayError,
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
    foreign_block,
    foreign_message_fields,
    foreign_tool_fields,
)

_encode = msgspec.json.encode

_ECHOED = frozenset(
    {"instructions", "max_output_tokens", "max_tool_calls", "metadata", "parallel_tool_calls"}
    | {"prompt_cache_key", "reasoning", "safety_identifier", "service_tier", "store"}
    | {"temperature", "text", "tool_choice", "tools", "top_logprobs", "top_p", "truncation"}
    | {"user", "previous_response_id"}
)
_HINTED = frozenset(
    {"include", "metadata", "parallel_tool_calls", "prompt_cache_key", "reasoning"}
    | {"safety_identifier", "service_tier", "store", "stream_options", "truncation", "user"}
    | {"client_metadata", "prompt_cache_retention"}  # Codex sends both
)
_CONSUMED = _HINTED | frozenset(
    {"model", "input", "instructions", "max_output_tokens", "temperature", "top_p", "tools"}
    | {"tool_choice", "text", "stream", "previous_response_id", "background"}
)
# item types of the API this module does not model: the input passes through whole
_OTHER_ITEMS = frozenset(
    {"file_search_call", "computer_call", "computer_call_output", "web_search_call"}
    | {"tool_search_call", "tool_search_output", "additional_tools", "configuration_update"}
    | {"compaction", "image_generation_call", "code_interpreter_call", "local_shell_call"}
    | {"local_shell_call_output", "shell_call", "shell_call_output", "apply_patch_call"}
    | {"apply_patch_call_output", "mcp_list_tools", "mcp_approval_request"}
    | {"mcp_approval_response", "mcp_call", "compaction_trigger", "program", "program_output"}
)
_ITEMS = (
    "message, function_call, function_call_output, custom_tool_call, custom_tool_call_output "
    "and reasoning items"
)
_DATA_URL = re.compile(r"data:([^;,]+);base64,(.*)", re.DOTALL)
_SCHEMA_NAME = re.compile(r"[a-zA-Z0-9_-]{1,64}")
_ROLES = "user, assistant, system or developer"


def _invalid(param: str, message: str) -> GatewayError:
    return GatewayError("invalid_request", f"{param}: {message}", 400, param=param)


def _str(data: dict[str, Any], key: str, where: str, *, optional: bool = False) -> Any:
    value = data.get(key)
    if value is None and optional:
        return None
    if not isinstance(value, str):
        raise _invalid(f"{where}.{key}", "a string is required")
    return value


# --- parsing -----------------------------------------------------------------------------------


def parse_request(body: bytes) -> Request:
    """A client's body; every problem is a 400 in OpenAI's shape whose ``param`` names it.

    A body naming a ``previous_response_id`` is parsed as far as it can be alone (its outputs
    may answer calls of the stored response) and keeps the body, so that
    ``continue_request`` can parse it again behind the stored turns once they are read. So is
    one whose input holds ``item_reference`` items, for ``with_references``."""
    data = decode_body(body)
    if not isinstance(data, dict):
        raise GatewayError(
            "invalid_request",
            'the request body must be a JSON object like {"model": ..., "input": ...}',
            400,
        )
    return _parse(data, None)


def continue_request(request: Request, history: list[Any]) -> Request:
    """``request`` (which continues a stored response) parsed again with ``history``, the
    stored response's input and output items, before its own input."""
    return _parse(request.front_options[BODY], history)


def with_references(request: Request, items: dict[int, Any]) -> Request:
    """``request`` (whose input refers to stored items) parsed again with each
    ``item_reference`` replaced by ``items[index]``, the item it names (None: left out)."""
    data = request.front_options[BODY]
    resolved = [items.get(i, item) for i, item in enumerate(data["input"])]
    return _parse({**data, "input": [item for item in resolved if item is not None]}, None)


def _parse(data: dict[str, Any], history: list[Any] | None) -> Request:
    model = data.get("model")
    if not isinstance(model, str) or not model:
        raise _invalid("model", "a string naming a route or a model is required")
    previous = data.get("previous_response_id")
    if previous is not None and (not isinstance(previous, str) or not previous):
        raise _invalid("previous_response_id", "must be the id of a stored response (resp_...)")
    if data.get("background"):
        raise _invalid(
            "background",
            "background responses are not supported by this gateway; leave 'background' out "
            "and stream the response instead",
        )
    stream = data.get("stream", False)
    if not isinstance(stream, bool):
        raise _invalid("stream", "must be true or false")
    extra = {key: value for key, value in data.items() if key not in _CONSUMED}
    hints = {key: data[key] for key in _HINTED if data.get(key) is not None}
    _check_hints(hints)
    custom: list[str] = []
    tools = _tools(data.get("tools"), extra, hints, custom)
    tool_choice = _tool_choice(data.get("tool_choice"), extra)
    _text_config(data.get("text"), extra, hints)
    system: list[str] = []
    instructions = data.get("instructions")
    if instructions is not None:
        if not isinstance(instructions, str):
            raise _invalid("instructions", "must be a string")
        if instructions:
            system.append(instructions)
    reasoning_ids: list[str] = []
    raw_input = data.get("input")
    if history is not None:
        if not isinstance(raw_input, str | list):
            raise _invalid("input", "a string or a list of input items is required")
        items: Any = [*history, *input_items(raw_input)]
    else:
        items = raw_input
    # alone, a continuing request's outputs may answer calls only the stored turns hold
    check_calls = previous is None or history is not None
    references: list[tuple[int, str]] = []
    messages = _input(items, system, extra, reasoning_ids, references, check_calls)
    metadata = data.get("metadata")
    user = data.get("safety_identifier") or data.get("user")
    front: dict[str, Any] = {ECHO: {k: v for k, v in data.items() if k in _ECHOED}}
    if custom:
        front[CUSTOM_TOOLS] = custom
    if hints:
        front[HINTS] = hints
    if reasoning_ids:
        front[REASONING_IDS] = reasoning_ids
    front[INPUT] = raw_input
    if len(system) > (1 if instructions else 0):  # system or developer messages in the input
        front[CLIENT_SYSTEM] = ("\n\n".join(system), instructions or "")
    if previous is not None:
        front[CONTINUES] = previous
        front[BODY] = data
        if history is not None:
            front[HISTORY] = history
    if references:
        front[REFERENCES] = references
        front[BODY] = data
    if isinstance(metadata, dict) and "user_id" in metadata and not user:
        user = metadata["user_id"]
    return Request(
        dialect=NAME,
        model=model,
        messages=messages,
        system="\n\n".join(system) if system else None,
        max_tokens=_positive(data, "max_output_tokens"),
        temperature=_number(data, "temperature", 2.0),
        top_p=_number(data, "top_p", 1.0),
        tools=tools,
        tool_choice=tool_choice,
        stream=stream,
        include_usage=True,
        extra=extra,
        front_options=front,
        metadata={"user_id": user} if isinstance(user, str) and user else {},
    )


def _check_hints(hints: dict[str, Any]) -> None:
    for key in ("prompt_cache_key", "safety_identifier", "service_tier", "truncation", "user"):
        if key in hints and not isinstance(hints[key], str):
            raise _invalid(key, "must be a string")
    for key in ("store", "parallel_tool_calls"):
        if key in hints and not isinstance(hints[key], bool):
            raise _invalid(key, "must be true or false")
    include = hints.get("include")
    if include is not None and not (
        isinstance(include, list) and all(isinstance(item, str) for item in include)
    ):
        raise _invalid("include", "must be a list of strings")
    for key in ("reasoning", "stream_options"):
        if key in hints and not isinstance(hints[key], dict):
            raise _invalid(key, "must be an object")
    reasoning = hints.get("reasoning") or {}
    for key in ("effort", "summary"):
        if reasoning.get(key) is not None and not isinstance(reasoning[key], str):
            raise _invalid(f"reasoning.{key}", "must be a string")
    metadata = hints.get("metadata")
    if metadata is not None and not (
        isinstance(metadata, dict) and all(isinstance(v, str) for v in metadata.values())
    ):
        raise _invalid("metadata", "must be an object of string values")


def _positive(data: dict[str, Any], key: str) -> int | None:
    value = data.get(key)
    if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
        raise _invalid(key, "must be a positive integer")
    return value


def _number(data: dict[str, Any], key: str, high: float) -> float | None:
    value = data.get(key)
    if value is None:
        return None
    if not isinstance(value, int | float) or isinstance(value, bool) or not 0 <= value <= high:
        raise _invalid(key, f"must be a number from 0 to {high:g}")
    return float(value)


def _text_config(value: Any, extra: dict[str, Any], hints: dict[str, Any]) -> None:
    """``text.format`` other than plain text changes the answer's shape: ``extra``. A verbosity
    alone is a hint."""
    if value is None:
        return
    if not isinstance(value, dict):
        raise _invalid("text", 'must be an object like {"format": {"type": "text"}}')
    verbosity = value.get("verbosity")
    if verbosity is not None and verbosity not in ("low", "medium", "high"):
        raise _invalid("text.verbosity", "must be 'low', 'medium' or 'high'")
    fmt = value.get("format")
    kind = fmt.get("type") if isinstance(fmt, dict) else None
    if fmt is None or kind == "text":
        if verbosity is not None:
            hints["text"] = {"verbosity": verbosity}
        return
    if kind == "json_schema":
        name = fmt.get("name")
        if not isinstance(name, str) or not _SCHEMA_NAME.fullmatch(name):
            raise _invalid(
                "text.format.name",
                "a name of at most 64 letters, digits, '_' or '-' is required",
            )
        schema = fmt.get("schema")
        if not isinstance(schema, dict):
            raise _invalid("text.format.schema", "a JSON Schema object is required")
        if "type" in schema and not isinstance(schema["type"], str | list):
            raise _invalid("text.format.schema.type", "must be a JSON Schema type name")
        if fmt.get("strict") is not None and not isinstance(fmt["strict"], bool):
            raise _invalid("text.format.strict", "must be true or false")
    elif kind != "json_object":
        raise _invalid("text.format.type", "must be 'text', 'json_schema' or 'json_object'")
    extra["text"] = value


def _tools(
    value: Any, extra: dict[str, Any], hints: dict[str, Any], custom: list[str]
) -> list[Tool]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise _invalid("tools", "must be a list of tools")
    tools: list[Tool] = []
    for i, raw in enumerate(value):
        where = f"tools[{i}]"
        kind = raw.get("type") if isinstance(raw, dict) else None
        if kind == "function":
            assert isinstance(raw, dict)
            description = _str(raw, "description", where, optional=True)
            parameters = raw.get("parameters")
            if parameters is None:
                parameters = {"type": "object", "properties": {}}
            if not isinstance(parameters, dict):
                raise _invalid(f"{where}.parameters", "must be a JSON Schema object")
            strict = raw.get("strict")
            if strict is not None and not isinstance(strict, bool):
                raise _invalid(f"{where}.strict", "must be true or false")
            tools.append(Tool(_str(raw, "name", where), description, parameters))
        elif kind == "custom":
            assert isinstance(raw, dict)
            name = _str(raw, "name", where)
            tools.append(Tool(name, _custom_description(raw, where), _CUSTOM_SCHEMA))
            custom.append(name)
        elif isinstance(kind, str) and kind:
            # hosted (web_search, tool_search, namespace, ...) or newer than this code: whole to
            # a Responses upstream; translated, dropped or refused by name elsewhere (``hosted``)
            extra["tools"] = value
        else:
            raise _invalid(f"{where}.type", "each tool needs a type, e.g. 'function' or 'custom'")
    hints["tools"] = value  # whole, with `strict` and grammars, for a Responses upstream
    return tools


_CUSTOM_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {CUSTOM_INPUT: {"type": "string"}},
    "required": [CUSTOM_INPUT],
    "additionalProperties": False,
}


def _custom_description(raw: dict[str, Any], where: str) -> str:
    """What a function tool standing for a freeform tool tells the model."""
    description = _str(raw, "description", where, optional=True) or ""
    fmt = raw.get("format")
    if fmt is None or (isinstance(fmt, dict) and fmt.get("type") == "text"):
        return (description + "\n\n" if description else "") + (
            f"Put the whole input, as free text, in the '{CUSTOM_INPUT}' string."
        )
    if not isinstance(fmt, dict) or fmt.get("type") != "grammar":
        raise _invalid(f"{where}.format", "must be {'type': 'text'} or a grammar")
    syntax = fmt.get("syntax")
    if syntax not in ("lark", "regex"):
        raise _invalid(f"{where}.format.syntax", "must be 'lark' or 'regex'")
    definition = _str(fmt, "definition", f"{where}.format")
    return (description + "\n\n" if description else "") + (
        f"Put the whole input in the '{CUSTOM_INPUT}' string; it must match this {syntax} "
        f"grammar exactly:\n{definition}"
    )


def _tool_choice(value: Any, extra: dict[str, Any]) -> str | None:
    if value is None:
        return None
    if value in ("auto", "none", "required"):
        return str(value)
    kind = value.get("type") if isinstance(value, dict) else None
    if kind in ("function", "custom") and isinstance(value.get("name"), str):
        name: str = value["name"]
        return name
    if isinstance(kind, str):
        extra["tool_choice"] = value  # allowed_tools, hosted tools, mcp: Responses only
        return None
    raise _invalid(
        "tool_choice",
        "must be 'auto', 'none', 'required' or an object like "
        '{"type": "function", "name": ...}',
    )


# --- input items --------------------------------------------------------------------------------


def _input(
    value: Any,
    system: list[str],
    extra: dict[str, Any],
    reasoning_ids: list[str],
    references: list[tuple[int, str]],
    check_calls: bool = True,
) -> list[Message]:
    if isinstance(value, str):
        return [Message("user", [TextPart(value)])]
    if not isinstance(value, list) or not value:
        raise _invalid("input", "a string or a non-empty list of input items is required")
    messages: list[Message] = []
    calls: set[str] = set()
    assistant: list[Part] | None = None  # the open assistant turn's parts

    def turn() -> list[Part]:
        nonlocal assistant
        if assistant is None:
            assistant = []
            messages.append(Message("assistant", assistant))
        return assistant

    for i, item in enumerate(value):
        where = f"input[{i}]"
        if not isinstance(item, dict):
            raise _invalid(where, "each input item must be an object")
        kind = item.get("type", "message" if "role" in item else None)
        if kind == "message":
            role = item.get("role")
            if role == "assistant":
                turn().extend(_assistant_content(item.get("content"), f"{where}.content"))
                continue
            assistant = None
            if role in ("system", "developer"):
                text = _system_content(item.get("content"), f"{where}.content")
                if text:
                    system.append(text)
            elif role == "user":
                messages.append(Message("user", _user_content(item.get("content"), where)))
            else:
                raise _invalid(f"{where}.role", f"{role!r} is not a role; use {_ROLES}")
        elif kind in ("function_call", "custom_tool_call"):
            call_id = _str(item, "call_id", where)
            name = _str(item, "name", where)
            if kind == "function_call":
                arguments = _str(item, "arguments", where)
            else:
                arguments = custom_arguments(_str(item, "input", where))
            calls.add(call_id)
            turn().append(ToolCallPart(call_id, name, arguments))
        elif kind in ("function_call_output", "custom_tool_call_output"):
            assistant = None
            call_id = _str(item, "call_id", where)
            # a call may be among the items referred to, read only once the input is parsed
            if check_calls and not references and call_id not in calls:
                raise _invalid(
                    f"{where}.call_id",
                    f"no function_call or custom_tool_call with call_id {call_id!r} comes "
                    "before this output in 'input'",
                )
            output = _output_text(item.get("output"), f"{where}.output")
            messages.append(Message("tool", [ToolResultPart(call_id, output)]))
        elif kind == "reasoning":
            part = _reasoning(item, where, reasoning_ids)
            if part is not None:
                turn().append(part)
        elif kind == "item_reference":
            item_id = item.get("id")
            if not isinstance(item_id, str) or not item_id:
                raise _invalid(f"{where}.id", "the id of a stored item (msg_..., fc_...) is needed")
            references.append((i, item_id))
        elif kind in _OTHER_ITEMS:
            extra["input"] = value  # e.g. web_search_call: a Responses upstream takes it whole
            assistant = None
        else:
            raise _invalid(
                f"{where}.type", f"unknown input item type {kind!r}; this gateway takes {_ITEMS}"
            )
    return [m for m in messages if m.content or m.role != "assistant"]


def _parts(content: Any, where: str) -> list[Any]:
    if isinstance(content, str):
        return [{"type": "input_text", "text": content}]
    if not isinstance(content, list):
        raise _invalid(where, "must be a string or a list of content parts")
    return content


def _user_content(content: Any, where: str) -> list[Part]:
    parts: list[Part] = []
    for j, part in enumerate(_parts(content, f"{where}.content")):
        at = f"{where}.content[{j}]"
        kind = part.get("type") if isinstance(part, dict) else None
        if kind in ("input_text", "output_text", "text"):
            parts.append(TextPart(_str(part, "text", at)))
        elif kind == "input_image":
            parts.append(_image(part, at))
        else:
            raise _invalid(
                f"{at}.type",
                f"{kind!r} parts are not supported here; send 'input_text' or 'input_image' "
                "(with an image_url)",
            )
    return parts


def _image(part: dict[str, Any], where: str) -> ImagePart:
    url = part.get("image_url")
    if not isinstance(url, str) or not url:
        raise _invalid(
            f"{where}.image_url",
            "an image URL or data URL is required (file_id images are not supported)",
        )
    found = _DATA_URL.fullmatch(url)
    return ImagePart(data=found[2], media_type=found[1]) if found else ImagePart(url)


def _assistant_content(content: Any, where: str) -> list[Part]:
    parts: list[Part] = []
    for j, part in enumerate(_parts(content, where)):
        at = f"{where}[{j}]"
        kind = part.get("type") if isinstance(part, dict) else None
        if kind in ("output_text", "input_text", "text"):
            text = _str(part, "text", at)
        elif kind == "refusal":
            text = _str(part, "refusal", at)
        else:
            raise _invalid(f"{at}.type", "an assistant message holds output_text or refusal")
        if text:
            parts.append(TextPart(text))
    return parts


def _system_content(content: Any, where: str) -> str:
    texts = []
    for j, part in enumerate(_parts(content, where)):
        kind = part.get("type") if isinstance(part, dict) else None
        if kind not in ("input_text", "text"):
            raise _invalid(f"{where}[{j}].type", "a system or developer message holds input_text")
        texts.append(_str(part, "text", f"{where}[{j}]"))
    return "\n".join(texts)


def _output_text(output: Any, where: str) -> str:
    if isinstance(output, str):
        return output
    if not isinstance(output, list):
        raise _invalid(where, "must be a string or a list of input_text parts")
    texts = []
    for j, part in enumerate(output):
        if not isinstance(part, dict) or part.get("type") not in ("input_text", "output_text"):
            raise _invalid(f"{where}[{j}].type", "only input_text parts are supported here")
        texts.append(_str(part, "text", f"{where}[{j}]"))
    return "".join(texts)


def _reasoning(item: dict[str, Any], where: str, ids: list[str]) -> ThinkingPart | None:
    summary = item.get("summary", [])
    if not isinstance(summary, list):
        raise _invalid(f"{where}.summary", "must be a list of summary_text parts")
    texts = []
    for j, part in enumerate(summary):
        if not isinstance(part, dict):
            raise _invalid(f"{where}.summary[{j}]", "must be a summary_text part")
        texts.append(_str(part, "text", f"{where}.summary[{j}]"))
    signature = item.get("encrypted_content")
    if signature is not None and not isinstance(signature, str):
        raise _invalid(f"{where}.encrypted_content", "must be a string")
    item_id = item["id"] if isinstance(item.get("id"), str) else ""
    if not signature and not item_id:
        return None  # nothing any upstream could take back
    ids.append(item_id)
    # Without its encrypted content no model can take the reasoning back as its own (and a
    # model never needs an earlier turn's), so the summary then stays out: only the id goes on,
    # to a Responses upstream that may have stored the item.
    return ThinkingPart("\n\n".join(texts) if signature else "", signature or None)


# --- encoding for a Responses upstream ----------------------------------------------------------


def encode_request(request: Request, model: str, *, stream: bool) -> bytes:
    """The body for ``POST /v1/responses``. From a Responses client, its hints and ``extra``
    go on whole; from another dialect, ``extra`` cannot and stop sequences have no equivalent."""
    same = request.dialect == NAME
    if request.extra and not same:
        names = ", ".join(repr(key) for key in request.extra)
        raise Untranslatable(
            f"{names} cannot be sent to an OpenAI Responses model; remove them or use a route "
            f"served by {request.dialect}",
            param=next(iter(request.extra)),
        )
    if request.stop:
        raise Untranslatable(
            "the OpenAI Responses API has no stop sequences; remove them or use a route served "
            "by another API",
            param="stop",
        )
    options = request.front_options if same else {}
    if not same:
        foreign_message_fields(request.messages, request.dialect, "an OpenAI Responses model")
    custom = set(options.get(CUSTOM_TOOLS, ()))
    body: dict[str, Any] = {"model": model}
    system = request.system
    raw_input = options.get(INPUT)
    as_sent = raw_input is not None and HISTORY not in options and CONTINUES not in options
    if as_sent and system and CLIENT_SYSTEM in options:
        parsed, instructions = options[CLIENT_SYSTEM]
        if parsed in system:  # the route's prompt may stand before it, a canary after it
            system = system.replace(parsed, instructions, 1).strip("\n") or None
        else:
            as_sent = False
    if system:
        body["instructions"] = system
    if as_sent:  # the client's items, ids and developer messages as it sent them
        body["input"] = raw_input
    else:
        body["input"] = _input_json(request, custom, list(options.get(REASONING_IDS, ())))
    if request.max_tokens is not None:
        body["max_output_tokens"] = request.max_tokens
    if request.temperature is not None:
        body["temperature"] = request.temperature
    if request.top_p is not None:
        body["top_p"] = request.top_p
    if request.tools:
        if not same:
            foreign_tool_fields(request.tools, request.dialect, "an OpenAI Responses model")
        body["tools"] = [
            {
                "type": "function",
                "name": tool.name,
                **({"description": tool.description} if tool.description is not None else {}),
                "parameters": tool.parameters,
                "strict": False,
            }
            for tool in request.tools
        ]
    if request.tool_choice is not None:
        choice = request.tool_choice
        if choice in ("auto", "none", "required"):
            body["tool_choice"] = choice
        else:
            body["tool_choice"] = {"type": "custom" if choice in custom else "function"}
            body["tool_choice"]["name"] = choice
    if not same:
        body["store"] = False  # the gateway keeps nothing upstream for clients of other APIs
    body["stream"] = stream
    if same:
        body.update(options.get(HINTS, {}))
        body.update(request.extra)
    return _encode(body)


def _input_json(request: Request, custom: set[str], reasoning_ids: list[str]) -> list[Any]:
    items: list[Any] = []
    same = request.dialect == NAME
    custom_calls: set[str] = set()  # call ids of custom tool calls, whose outputs say so too
    for i, message in enumerate(request.messages):
        content: list[dict[str, Any]] = []
        for part in message.content:
            if isinstance(part, OpaquePart):
                raise foreign_block(part, i, "an OpenAI Responses model")
            if isinstance(part, TextPart):
                kind = "output_text" if message.role == "assistant" else "input_text"
                content.append({"type": kind, "text": part.text})
            elif isinstance(part, ImagePart):
                url = part.url or f"data:{part.media_type or 'image/png'};base64,{part.data}"
                content.append({"type": "input_image", "image_url": url, "detail": "auto"})
            else:
                if content:
                    items.append(_message_json(message.role, content))
                    content = []
                item = _part_json(part, custom, custom_calls, reasoning_ids, same)
                if item is not None:
                    items.append(item)
        if content:
            items.append(_message_json(message.role, content))
    return items


def _message_json(role: str, content: list[dict[str, Any]]) -> dict[str, Any]:
    if role == "assistant":
        return {"type": "message", "role": "assistant", "content": content}
    if role == "system":  # instructions in the middle of the conversation
        return {"type": "message", "role": "developer", "content": content}
    return {"type": "message", "role": "user", "content": content}


def _part_json(
    part: Part, custom: set[str], custom_calls: set[str], reasoning_ids: list[str], same: bool
) -> dict[str, Any] | None:
    if isinstance(part, ToolCallPart):
        if part.name in custom:
            custom_calls.add(part.id)
            return {
                "type": "custom_tool_call",
                "call_id": part.id,
                "name": part.name,
                "input": custom_input(part.arguments),
            }
        return {
            "type": "function_call",
            "call_id": part.id,
            "name": part.name,
            "arguments": part.arguments,
        }
    if isinstance(part, ToolResultPart):
        output = f"Error: {part.content}" if part.is_error else part.content
        kind = "custom_tool_call_output" if part.tool_call_id in custom_calls else None
        return {
            "type": kind or "function_call_output",
            "call_id": part.tool_call_id,
            "output": output,
        }
    if isinstance(part, ThinkingPart):
        # Only reasoning that came from a Responses client can go back: another API's thinking
        # is not the model's own reasoning here, and an earlier turn's reasoning is optional.
        if not same:
            return None
        item_id = reasoning_ids.pop(0) if reasoning_ids else ""
        if not item_id and not part.signature:
            return None
        summary = [{"type": "summary_text", "text": part.text}] if part.text else []
        item: dict[str, Any] = {"type": "reasoning", "id": item_id, "summary": summary}
        if part.signature:
            item["encrypted_content"] = part.signature
        return item
    return None

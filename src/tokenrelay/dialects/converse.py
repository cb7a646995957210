"""AWS Bedrock's Converse API (``/model/{modelId}/converse-stream`` and ``/converse``): requests,
event-stream events (``dialects.eventstream`` frames them), whole responses and errors.

Shapes follow botocore's ``bedrock-runtime/2023-09-30/service-2.json``. The model id is in the
URL, not the body (the transport puts it there). Usage: Converse's ``inputTokens`` leaves out the
cached tokens, which ``Usage.input_tokens`` counts, so they are added on reading and taken off on
writing. ``messageStop`` comes before ``metadata`` (the usage): the reader holds the finish until
the usage is in, so a stream ends with its usage and finish together, as the others do.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import msgspec

from tokenrelay.dialects.eventstream import EventStreamParser, Frame, event, exception
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
    foreign_block,
    foreign_message_fields,
    foreign_tool_fields,
)

NAME = "converse"
CONTENT_TYPE = "application/vnd.amazon.eventstream"
ID_PREFIX = "msg_bdrk_"
# The framing of this dialect's streams, in place of server-sent events (``providers.Provider``).
FRAMER = EventStreamParser

_decode = msgspec.json.decode
_encode = msgspec.json.encode

_STOP_REASONS: dict[str, FinishReason] = {
    "end_turn": "stop",
    "tool_use": "tool_calls",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "stop_sequence": "stop_sequence",
    "guardrail_intervened": "content_filter",
    "content_filtered": "content_filter",
    "malformed_model_output": "stop",
    "malformed_tool_use": "stop",
}
_FINISH_REASONS: dict[FinishReason, str] = {
    "stop": "end_turn",
    "tool_calls": "tool_use",
    "length": "max_tokens",
    "stop_sequence": "stop_sequence",
    "content_filter": "content_filtered",
}
# An exception's name (a header of an error response, or of an exception frame in a stream,
# first letter either case) -> our type and status: what failover judges.
EXCEPTIONS: dict[str, tuple[ErrorType, int]] = {
    "throttlingexception": ("rate_limit", 429),
    "servicequotaexceededexception": ("rate_limit", 429),
    "validationexception": ("invalid_request", 400),
    "accessdeniedexception": ("permission", 403),
    "unrecognizedclientexception": ("authentication", 401),
    "invalidsignatureexception": ("authentication", 401),
    "expiredtokenexception": ("authentication", 401),
    "resourcenotfoundexception": ("not_found", 404),
    "modelstreamerrorexception": ("upstream_unavailable", 502),
    "modelerrorexception": ("upstream_unavailable", 502),
    "internalserverexception": ("api_error", 500),
    "serviceunavailableexception": ("upstream_unavailable", 503),
    "modelnotreadyexception": ("overloaded", 529),
    "modeltimeoutexception": ("timeout", 504),
}
_STATUS_TYPES: dict[int, ErrorType] = {
    400: "invalid_request",
    401: "authentication",
    403: "permission",
    404: "not_found",
    408: "timeout",
    413: "request_too_large",
    424: "upstream_unavailable",
    429: "rate_limit",
    503: "upstream_unavailable",
}
# Our type -> the exception Bedrock would name (the simulator's and the front's words).
_EXCEPTION_OF: dict[ErrorType, str] = {
    "rate_limit": "ThrottlingException",
    "invalid_request": "ValidationException",
    "unprocessable": "ValidationException",
    "request_too_large": "ValidationException",
    "authentication": "UnrecognizedClientException",
    "permission": "AccessDeniedException",
    "not_found": "ResourceNotFoundException",
    "api_error": "InternalServerException",
    "upstream_unavailable": "ServiceUnavailableException",
    "timeout": "ModelTimeoutException",
    "overloaded": "ModelStreamErrorException",
}
_IMAGE_FORMATS = {
    "image/png": "png",
    "image/jpeg": "jpeg",
    "image/gif": "gif",
    "image/webp": "webp",
}
# Where an Anthropic client put a prompt-caching breakpoint (``cache_control``), Converse takes
# a cache point block after the system prompt, a content block or a tool.
_CACHE_POINT: dict[str, Any] = {"cachePoint": {"type": "default"}}
# fields of another dialect that ask for nothing here (storage, ids, stream options)
_INERT = frozenset(
    {"store", "metadata", "prompt_cache_key", "safety_identifier", "user", "stream_options"}
)


# --- requests ------------------------------------------------------------------------------------


def encode_request(request: Request, model: str, *, stream: bool) -> bytes:
    """A Converse body (the model goes in the URL); ``Untranslatable`` names what cannot go."""
    target = f"Bedrock model {model}"
    foreign_message_fields(request.messages, request.dialect, target)
    foreign_tool_fields(request.tools, request.dialect, target)
    body: dict[str, Any] = {"messages": _messages(request.messages, target)}
    if request.system:
        body["system"] = [{"text": request.system}]
        if any(block.get("cache_control") for block in request.system_blocks or ()):
            body["system"].append(_CACHE_POINT)
    config: dict[str, Any] = {}
    if request.max_tokens is not None:
        config["maxTokens"] = request.max_tokens
    if request.temperature is not None:
        config["temperature"] = request.temperature
    if request.top_p is not None:
        config["topP"] = request.top_p
    if request.stop:
        config["stopSequences"] = request.stop
    if request.tools:
        specs: list[dict[str, Any]] = []
        for tool in request.tools:
            spec = {"name": tool.name, "inputSchema": {"json": tool.parameters}}
            if tool.description:
                spec["description"] = tool.description
            specs.append({"toolSpec": spec})
            if tool.cache_control is not None:
                specs.append(_CACHE_POINT)
        tools: dict[str, Any] = {"tools": specs}
        choice = request.tool_choice
        if choice == "auto":
            tools["toolChoice"] = {"auto": {}}
        elif choice == "required":
            tools["toolChoice"] = {"any": {}}
        elif choice and choice != "none":
            tools["toolChoice"] = {"tool": {"name": choice}}
        body["toolConfig"] = tools
    additional = _additional_fields(request, config, target)
    if config:
        body["inferenceConfig"] = config
    if additional:
        body["additionalModelRequestFields"] = additional
    return _encode(body)


def _additional_fields(request: Request, config: dict[str, Any], target: str) -> dict[str, Any]:
    """Fields of the client's dialect Converse takes in ``additionalModelRequestFields`` (a
    Claude model's ``thinking`` and ``top_k``; OpenAI's ``reasoning_effort`` as a thinking
    budget); anything else without an equivalent is refused, by name."""
    from tokenrelay.dialects.anthropic import THINKING_BUDGETS

    extra = request.extra
    if request.dialect == NAME:
        return dict(extra.get("additionalModelRequestFields") or {})
    out: dict[str, Any] = {}
    refused = []
    for key, value in extra.items():
        if key in _INERT or key in ("tools", "tool_choice", "parallel_tool_calls"):
            continue
        if key == "n" and value in (None, 1):
            continue
        if key in ("thinking", "top_k") and request.dialect == "anthropic":
            out[key] = value
        elif key == "reasoning_effort" and (value in THINKING_BUDGETS or value in (None, "none")):
            if value in THINKING_BUDGETS:
                out["thinking"] = {"type": "enabled", "budget_tokens": THINKING_BUDGETS[value]}
        else:
            refused.append(key)
    if refused:
        names = ", ".join(sorted(refused))
        raise Untranslatable(
            f"{names} cannot be sent to {target}; remove them or use a route served by "
            f"{request.dialect}",
            param=min(refused),
        )
    thinking = out.get("thinking")
    if isinstance(thinking, dict) and isinstance(thinking.get("budget_tokens"), int):
        budget = thinking["budget_tokens"]
        if config.get("maxTokens", 0) <= budget:  # the budget counts in maxTokens
            config["maxTokens"] = budget + config.get("maxTokens", 1024)
    return out


def _messages(messages: list[Message], target: str) -> list[dict[str, Any]]:
    """Converse turns: user and assistant only, a tool's answer in a user turn, and turns of
    the same role joined (Bedrock refuses two in a row)."""
    out: list[dict[str, Any]] = []
    for index, message in enumerate(messages):
        if message.role == "system":
            raise Untranslatable(
                f"messages[{index}] is a system message in mid-conversation, which {target} "
                "cannot carry; move it into the system prompt",
                param=f"messages[{index}]",
            )
        role = "assistant" if message.role == "assistant" else "user"
        blocks = []
        for part in message.content:
            blocks.append(_block(part, index, target))
            if getattr(part, "cache_control", None) is not None:
                blocks.append(_CACHE_POINT)
        if out and out[-1]["role"] == role:
            out[-1]["content"].extend(blocks)
        else:
            out.append({"role": role, "content": blocks})
    return out


def _block(part: Part, index: int, target: str) -> dict[str, Any]:
    if isinstance(part, TextPart):
        return {"text": part.text}
    if isinstance(part, ToolCallPart):
        try:
            arguments = _decode(part.arguments or "{}")
        except msgspec.DecodeError:
            arguments = {}
        return {"toolUse": {"toolUseId": part.id, "name": part.name, "input": arguments}}
    if isinstance(part, ToolResultPart):
        result = {"toolUseId": part.tool_call_id, "content": [{"text": part.content}]}
        if part.is_error:
            result["status"] = "error"
        return {"toolResult": result}
    if isinstance(part, ThinkingPart):
        reasoning: dict[str, Any] = {"text": part.text}
        if part.signature:
            reasoning["signature"] = part.signature
        return {"reasoningContent": {"reasoningText": reasoning}}
    if isinstance(part, ImagePart):
        image_format = _IMAGE_FORMATS.get(part.media_type or "")
        if part.data is None or image_format is None:
            raise Untranslatable(
                f"messages[{index}] holds an image by URL or of an unknown type; {target} takes "
                "png, jpeg, gif or webp images sent inline as base64",
                param=f"messages[{index}].content",
            )
        return {"image": {"format": image_format, "source": {"bytes": part.data}}}
    raise foreign_block(part, index, target)


def parse_request(body: bytes) -> Request:
    """A Converse body (the simulator's side); the model is the URL's, set by the caller."""
    try:
        data = _decode(body)
        if not isinstance(data, dict) or not isinstance(data.get("messages"), list):
            raise ValueError("messages must be a list")
        messages = [_message(item) for item in data["messages"]]
        system = "\n\n".join(block["text"] for block in data.get("system") or [] if "text" in block)
        config = data.get("inferenceConfig") or {}
        tool_config = data.get("toolConfig") or {}
        tools = [
            Tool(
                spec["toolSpec"]["name"],
                spec["toolSpec"].get("description"),
                spec["toolSpec"].get("inputSchema", {}).get("json") or {"type": "object"},
            )
            for spec in tool_config.get("tools") or []
            if "toolSpec" in spec  # not a cache point
        ]
        extra = {}
        if data.get("additionalModelRequestFields"):
            extra["additionalModelRequestFields"] = data["additionalModelRequestFields"]
        return Request(
            dialect=NAME,
            model="",
            messages=messages,
            system=system or None,
            max_tokens=config.get("maxTokens"),
            temperature=config.get("temperature"),
            top_p=config.get("topP"),
            stop=list(config.get("stopSequences") or []),
            tools=tools,
            tool_choice=_tool_choice(tool_config.get("toolChoice")),
            extra=extra,
        )
    except (msgspec.DecodeError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise GatewayError(
            "invalid_request", f"not a valid Converse request: {exc}", 400, param="messages"
        ) from None


def _tool_choice(choice: Any) -> str | None:
    if not isinstance(choice, dict):
        return None
    if "any" in choice:
        return "required"
    if "tool" in choice:
        return str(choice["tool"]["name"])
    return "auto"


def _message(item: dict[str, Any]) -> Message:
    role = item["role"]
    if role not in ("user", "assistant"):
        raise ValueError(f"role {role!r} is neither user nor assistant")
    parts: list[Part] = []
    for block in item["content"]:
        if "text" in block:
            parts.append(TextPart(block["text"]))
        elif "toolUse" in block:
            use = block["toolUse"]
            arguments = _encode(use.get("input", {})).decode()
            parts.append(ToolCallPart(use["toolUseId"], use["name"], arguments))
        elif "toolResult" in block:
            result = block["toolResult"]
            text = "".join(c.get("text", "") for c in result.get("content", []))
            error = result.get("status") == "error"
            parts.append(ToolResultPart(result["toolUseId"], text, error))
        elif "reasoningContent" in block:
            reasoning = block["reasoningContent"].get("reasoningText", {})
            parts.append(ThinkingPart(reasoning.get("text", ""), reasoning.get("signature")))
        elif "cachePoint" in block:
            continue
        elif "image" in block:
            image = block["image"]
            media = "image/" + image["format"]
            parts.append(ImagePart(data=image["source"]["bytes"], media_type=media))
        else:
            parts.append(OpaquePart(NAME, block))
    return Message("assistant" if role == "assistant" else "user", parts)


# --- streams -------------------------------------------------------------------------------------


def _usage(data: Mapping[str, Any]) -> Usage:
    read = data.get("cacheReadInputTokens")
    write = data.get("cacheWriteInputTokens")
    raw = data.get("inputTokens")
    total = None if raw is None else raw + (read or 0) + (write or 0)
    return Usage(
        input_tokens=total,
        output_tokens=data.get("outputTokens"),
        cache_read_tokens=read,
        cache_write_tokens=write,
    )


def _usage_json(usage: Usage) -> dict[str, int]:
    read = usage.cache_read_tokens or 0
    write = usage.cache_write_tokens or 0
    inputs = max(0, (usage.input_tokens or 0) - read - write)
    output = usage.output_tokens or 0
    out = {"inputTokens": inputs, "outputTokens": output, "totalTokens": inputs + output}
    if read:
        out["cacheReadInputTokens"] = read
    if write:
        out["cacheWriteInputTokens"] = write
    out["totalTokens"] += read + write
    return out


def error_of(name: str, message: str) -> Error:
    """An exception Bedrock names (``ThrottlingException``, ``throttlingException``)."""
    kind, status = EXCEPTIONS.get(name.lower(), ("api_error", 500))
    return Error(kind, f"Bedrock {name}: {message}", status)


class ConverseReader:
    """Event-stream frames in, normalized events out."""

    __slots__ = ("_finish", "_tools", "done")

    def __init__(self) -> None:
        self.done = False
        self._tools: dict[int, int] = {}  # contentBlockIndex -> tool call index
        self._finish: Finish | None = None

    def feed(self, frame: Frame) -> list[Event]:
        if self.done:
            return []
        try:
            return self._events(frame)
        except (msgspec.DecodeError, KeyError, TypeError, AttributeError):
            self.done = True
            payload = frame.payload[:200].decode("utf-8", "replace")
            message = f"the upstream sent a {frame.event_type or 'frame'} event it should not: "
            return [Error("upstream_unavailable", message + repr(payload), 502)]

    def _events(self, frame: Frame) -> list[Event]:
        headers = frame.headers
        kind = headers.get(":event-type")
        if kind == "contentBlockDelta":
            data = _decode(frame.payload)
            delta = data["delta"]
            text = delta.get("text")
            if text is not None:
                return [TextDelta(text)]
            use = delta.get("toolUse")
            if use is not None:
                index = self._tools.get(data.get("contentBlockIndex", 0), 0)
                return [ToolCallDelta(index, arguments=use.get("input", ""))]
            reasoning = delta.get("reasoningContent")
            if reasoning is not None:
                return [ThinkingDelta(reasoning.get("text", ""), reasoning.get("signature"))]
            return []
        if kind == "contentBlockStart":
            data = _decode(frame.payload)
            use = data.get("start", {}).get("toolUse")
            if use is None:
                return []
            index = self._tools[data.get("contentBlockIndex", 0)] = len(self._tools)
            return [ToolCallDelta(index, use["toolUseId"], use["name"])]
        if kind == "messageStop":
            data = _decode(frame.payload)
            reason = _STOP_REASONS.get(data.get("stopReason", ""), "stop")
            fields = data.get("additionalModelResponseFields") or {}
            sequence = fields.get("stop_sequence") if isinstance(fields, dict) else None
            self._finish = Finish(reason, sequence if isinstance(sequence, str) else None)
            return []
        if kind == "metadata":
            self.done = True
            usage = _usage(_decode(frame.payload).get("usage") or {})
            return [usage, self._finish or Finish()]
        message_type = headers.get(":message-type", "event")
        if message_type == "exception":
            self.done = True
            name = headers.get(":exception-type", "internalServerException")
            return [error_of(name, _message_of(frame.payload))]
        if message_type == "error":
            self.done = True
            code = headers.get(":error-code", "InternalServerException")
            return [error_of(code, headers.get(":error-message", "stream error"))]
        return []  # messageStart, contentBlockStop: nothing to say


def _message_of(payload: bytes) -> str:
    try:
        data = _decode(payload)
    except msgspec.DecodeError:
        return payload.decode("utf-8", "replace")[:500]
    message = data.get("message") or data.get("Message") if isinstance(data, dict) else None
    return str(message or "no message")


def stream_reader() -> ConverseReader:
    return ConverseReader()


class ConverseWriter:
    """Normalized events in, Bedrock's event-stream frames out (the simulator's side)."""

    __slots__ = ("_block", "_index", "_open", "_started", "_usage")

    def __init__(self) -> None:
        self._started = False
        self._open: str | None = None  # "thinking", "text" or "tool:<n>"
        self._index = -1
        self._block = 0
        self._usage = Usage()

    def _into(self, block: str, out: list[bytes]) -> int:
        if not self._started:
            self._started = True
            out.append(event("messageStart", b'{"role":"assistant"}'))
        if self._open != block:
            self._close_block(out)
            self._open = block
            self._index += 1
        return self._index

    def _close_block(self, out: list[bytes]) -> None:
        if self._open is not None:
            out.append(event("contentBlockStop", _encode({"contentBlockIndex": self._index})))
            self._open = None

    def write(self, item: Event) -> bytes:
        out: list[bytes] = []
        if isinstance(item, TextDelta):
            index = self._into("text", out)
            payload = {"contentBlockIndex": index, "delta": {"text": item.text}}
            out.append(event("contentBlockDelta", _encode(payload)))
        elif isinstance(item, ThinkingDelta):
            index = self._into("thinking", out)
            # a delta carries text or a signature, not both: one carrying both (a whole
            # response's thinking, replayed as a stream) is sent as two
            pieces: list[dict[str, str]] = []
            if item.text or not item.signature:
                pieces.append({"text": item.text})
            if item.signature:
                pieces.append({"signature": item.signature})
            for reasoning in pieces:
                payload = {"contentBlockIndex": index, "delta": {"reasoningContent": reasoning}}
                out.append(event("contentBlockDelta", _encode(payload)))
        elif isinstance(item, ToolCallDelta):
            index = self._into(f"tool:{item.index}", out)
            if item.id is not None or item.name is not None:
                start = {"toolUse": {"toolUseId": item.id or "", "name": item.name or ""}}
                payload = {"contentBlockIndex": index, "start": start}
                out.append(event("contentBlockStart", _encode(payload)))
            if item.arguments:
                delta = {"toolUse": {"input": item.arguments}}
                out.append(
                    event(
                        "contentBlockDelta", _encode({"contentBlockIndex": index, "delta": delta})
                    )
                )
        elif isinstance(item, Usage):
            from tokenrelay.model import merge_usage

            self._usage = merge_usage(self._usage, item)
        elif isinstance(item, Finish):
            if not self._started:
                self._into("text", out)
            self._close_block(out)
            stop = {"stopReason": _FINISH_REASONS.get(item.reason, "end_turn")}
            out.append(event("messageStop", _encode(stop)))
            metadata = {"usage": _usage_json(self._usage), "metrics": {"latencyMs": 1}}
            out.append(event("metadata", _encode(metadata)))
        elif isinstance(item, Error):
            name = _EXCEPTION_OF.get(item.type, "ModelStreamErrorException")
            message = _encode({"message": item.message})
            out.append(exception(name[0].lower() + name[1:], message))
        return b"".join(out)

    def close(self) -> bytes:
        return b""


def stream_writer(request: Request, *, id: str, model: str) -> ConverseWriter:
    return ConverseWriter()


# --- whole responses and errors ------------------------------------------------------------------


def encode_response(completion: Completion, *, id: str, model: str) -> bytes:
    content: list[dict[str, Any]] = []
    if completion.thinking or completion.thinking_signature:
        reasoning: dict[str, Any] = {"text": completion.thinking}
        if completion.thinking_signature:
            reasoning["signature"] = completion.thinking_signature
        content.append({"reasoningContent": {"reasoningText": reasoning}})
    if completion.text:
        content.append({"text": completion.text})
    for call in completion.tool_calls:
        arguments = _decode(call.arguments or "{}")
        content.append({"toolUse": {"toolUseId": call.id, "name": call.name, "input": arguments}})
    finish = completion.finish or Finish()
    return _encode(
        {
            "output": {"message": {"role": "assistant", "content": content}},
            "stopReason": _FINISH_REASONS.get(finish.reason, "end_turn"),
            "usage": _usage_json(completion.usage),
            "metrics": {"latencyMs": 1},
        }
    )


def parse_response(body: bytes) -> Completion:
    try:
        return _completion(_decode(body))
    except (msgspec.DecodeError, KeyError, TypeError, AttributeError):
        text = body[:200].decode("utf-8", "replace")
        problem = f"the upstream answered with a body that is not a Converse response: {text!r}"
        return Completion(error=Error("upstream_unavailable", problem, 502))


def _completion(data: Any) -> Completion:
    completion = Completion(usage=_usage(data.get("usage") or {}))
    for block in data.get("output", {}).get("message", {}).get("content", []):
        if "text" in block:
            completion.text += block["text"]
        elif "toolUse" in block:
            use = block["toolUse"]
            arguments = _encode(use.get("input", {})).decode()
            completion.tool_calls.append(ToolCall(use["toolUseId"], use["name"], arguments))
        elif "reasoningContent" in block:
            reasoning = block["reasoningContent"].get("reasoningText", {})
            completion.thinking += reasoning.get("text", "")
            completion.thinking_signature = reasoning.get("signature")
    completion.finish = Finish(_STOP_REASONS.get(data.get("stopReason", ""), "stop"))
    return completion


def encode_error(error: GatewayError) -> bytes:
    return _encode({"message": error.message})


def error_headers(error: GatewayError) -> dict[str, str]:
    """The header naming an error response's exception, as Bedrock sends it."""
    return {"x-amzn-errortype": _EXCEPTION_OF.get(error.type, "InternalServerException")}


def parse_error(status: int, body: bytes, headers: Mapping[str, str]) -> Error:
    """An error response: the exception named by ``x-amzn-errortype`` (or the body's
    ``__type``), else judged by its status."""
    from tokenrelay.dialects import retry_after_seconds

    name = headers.get("x-amzn-errortype") or headers.get("X-Amzn-ErrorType") or ""
    message = _message_of(body) if body else f"HTTP {status}"
    if not name:
        try:
            data = _decode(body)
            name = str(data.get("__type", "")) if isinstance(data, dict) else ""
        except msgspec.DecodeError:
            name = ""
    name = name.split(":")[0].rpartition("#")[2]
    if name.lower() in EXCEPTIONS:
        error = error_of(name, message)
    else:
        kind = _STATUS_TYPES.get(status, "api_error" if status >= 500 else "invalid_request")
        error = Error(kind, f"Bedrock HTTP {status}: {message}", status)
    retry = retry_after_seconds(headers)
    return msgspec.structs.replace(error, retry_after=retry) if retry is not None else error

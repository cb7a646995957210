"""The normalized request and the closed set of stream events every dialect maps to and from.

Everything between a front dialect and a provider speaks only these types, which is what keeps
N client dialects times M upstream dialects at N + M modules.

A failure has one of a closed set of types (``ErrorType``), each with its default status
(``ERROR_STATUS``); every dialect maps the whole set to and from its own words, and a type
not in the set is a mypy error. The exceptions that carry one::

    GatewayError(type, message, status)   any failure; the front renders it in the client's dialect
    ├── Untranslatable                    invalid_request 400: a target's dialect cannot carry it
    ├── failover.RouteFailed              every target failed before the first token
    ├── relay.ShuttingDown                overloaded 503: the gateway is draining
    └── gate.gatekeeper.Rejected          the gate turned the request away (outcome "rejected")

    ErrorType               status   ErrorType               status
    invalid_request         400      unprocessable           422
    authentication          401      rate_limit              429
    budget_exceeded         402      api_error               500
    permission              403      upstream_unavailable    502
    not_found               404      timeout                 504
    request_too_large       413      overloaded              529
    unsupported_media_type  415

A stream that fails after its head carries the same type in an ``Error`` event.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any, Literal, TypeGuard

import msgspec

# "system": instructions given in the middle of the conversation (Anthropic's mid-conversation
# system messages, OpenAI's developer messages), kept in place; ``Request.system`` is the top one.
Role = Literal["system", "user", "assistant", "tool"]
FinishReason = Literal["stop", "length", "tool_calls", "content_filter", "stop_sequence"]
ErrorType = Literal[
    "invalid_request",
    "authentication",
    "budget_exceeded",
    "permission",
    "not_found",
    "request_too_large",
    "unsupported_media_type",
    "unprocessable",
    "rate_limit",
    "api_error",
    "upstream_unavailable",
    "timeout",
    "overloaded",
]


# --- request -----------------------------------------------------------------------------------


class TextPart(msgspec.Struct, frozen=True):
    """Text. ``cache_control`` is an Anthropic prompt-caching breakpoint after this block; other
    dialects cache automatically, so their encoders ignore it (it is not an error)."""

    text: str
    cache_control: dict[str, Any] | None = None


class ImagePart(msgspec.Struct, frozen=True):
    """An image given either by URL or inline as base64 data with its media type.

    ``cache_control`` is an Anthropic prompt-caching breakpoint after this block; other dialects
    cache automatically, so their encoders ignore it (it is not an error).
    """

    url: str | None = None
    data: str | None = None
    media_type: str | None = None
    cache_control: dict[str, Any] | None = None


class ToolCallPart(msgspec.Struct, frozen=True):
    """A call the assistant made; ``arguments`` is the JSON text of the arguments object.

    ``cache_control`` is an Anthropic prompt-caching breakpoint after this block; other dialects
    cache automatically, so their encoders ignore it (it is not an error).
    """

    id: str
    name: str
    arguments: str
    cache_control: dict[str, Any] | None = None
    signature: str | None = None  # Gemini's thoughtSignature on the call, handed back next turn


class ToolResultPart(msgspec.Struct, frozen=True):
    """A tool's answer. ``cache_control`` is an Anthropic prompt-caching breakpoint after this
    block; other dialects cache automatically, so their encoders ignore it (it is not an error)."""

    tool_call_id: str
    content: str
    is_error: bool = False
    cache_control: dict[str, Any] | None = None


class ThinkingPart(msgspec.Struct, frozen=True):
    """Extended-thinking text an assistant turn carried; only Anthropic can take it back."""

    text: str
    signature: str | None = None


class OpaquePart(msgspec.Struct, frozen=True):
    """A content block ``dialect``'s reader does not model (a newer Anthropic block type:
    ``document``, ``search_result``, ...), kept verbatim for an upstream of that dialect; every
    other dialect refuses it, naming its type (``foreign_block``)."""

    dialect: str
    block: dict[str, Any]


Part = TextPart | ImagePart | ToolCallPart | ToolResultPart | ThinkingPart | OpaquePart


class Message(msgspec.Struct, frozen=True):
    """One turn. ``extra`` holds the turn's fields the origin dialect's reader does not model
    (Claude Code's per-turn ``output_config``): written back to the same dialect, refused by
    another (``foreign_message_fields``)."""

    role: Role
    content: list[Part]
    extra: dict[str, Any] = msgspec.field(default_factory=dict)


def foreign_block(part: OpaquePart, index: int, target: str) -> Untranslatable:
    """The refusal of a block only its own dialect knows, naming the block's type."""
    return Untranslatable(
        f"messages[{index}] holds a {part.block.get('type')!r} block, which cannot be sent to "
        f"{target}; remove it or use a route served by {part.dialect}",
        param=f"messages[{index}].content",
    )


def foreign_message_fields(messages: list[Message], dialect: str, target: str) -> None:
    """Refuse, naming ``messages[i].<field>``, a turn field of another dialect: none of them is
    known to be a mere hint, so none is dropped."""
    for i, message in enumerate(messages):
        for key in message.extra:
            raise Untranslatable(
                f"messages[{i}].{key} cannot be sent to {target}; remove it or use a route "
                f"served by {dialect}",
                param=f"messages[{i}].{key}",
            )


class Tool(msgspec.Struct, frozen=True):
    """A tool definition. ``cache_control`` is an Anthropic prompt-caching breakpoint after this
    tool; other dialects cache automatically, so their encoders ignore it (it is not an error).

    ``extra`` holds the tool's fields the origin dialect's reader does not model (Claude Code's
    ``defer_loading``, ...): written back verbatim to the same dialect; another dialect drops the
    hints in ``TOOL_HINTS`` and refuses the rest (``foreign_tool_fields``).
    """

    name: str
    description: str | None = None
    parameters: dict[str, Any] = msgspec.field(default_factory=lambda: {"type": "object"})
    cache_control: dict[str, Any] | None = None
    extra: dict[str, Any] = msgspec.field(default_factory=dict)


# Tool fields that only tell the upstream how to handle a tool (load it lazily, cache it, stream
# its input early), never what the answer means: dropped when the request crosses dialects.
TOOL_HINTS = frozenset({"defer_loading", "cache_control", "eager_input_streaming"})


def foreign_tool_fields(
    tools: list[Tool], dialect: str, target: str, *, carried: Collection[str] = ()
) -> None:
    """Refuse, naming ``tools[i].<field>``, a tool field of another dialect that ``target``
    cannot carry; the hints in ``TOOL_HINTS`` are dropped instead, and ``carried`` are the
    fields the target's encoder translates."""
    for i, tool in enumerate(tools):
        for key in tool.extra:
            if key not in TOOL_HINTS and key not in carried:
                raise Untranslatable(
                    f"tools[{i}].{key} cannot be sent to {target}; remove it or use a route "
                    f"served by {dialect}",
                    param=f"tools[{i}].{key}",
                )


class Request(msgspec.Struct, kw_only=True):
    """One generation request, whatever dialect it arrived in.

    ``model`` is what the client asked for: a route name or a provider model. ``system`` is the
    client's own system prompt, kept apart so a route can refuse it. ``extra`` holds fields only the
    origin ``dialect`` understands; they pass through to an upstream of the same dialect, and
    another dialect's encoder translates those it has an equivalent for and raises
    ``Untranslatable`` for the rest instead of dropping them.

    ``system_blocks`` are an Anthropic client's system blocks as sent (text, ``cache_control``
    breakpoints, fields we do not model), written back as they are to an Anthropic upstream so
    prompt caching keeps working; ``system`` is then their text joined by blank lines, which is
    what every other dialect gets. Change the two together, through ``add_system``.
    """

    dialect: str
    model: str
    messages: list[Message]
    system: str | None = None
    system_blocks: list[dict[str, Any]] | None = None
    max_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    stop: list[str] = msgspec.field(default_factory=list)
    tools: list[Tool] = msgspec.field(default_factory=list)
    tool_choice: str | None = None  # "auto" | "none" | "required" | a tool name
    stream: bool = True
    include_usage: bool = False
    extra: dict[str, Any] = msgspec.field(default_factory=dict)
    front_options: dict[str, Any] = msgspec.field(default_factory=dict)
    metadata: dict[str, str] = msgspec.field(default_factory=dict)

    def add_system(self, text: str, *, first: bool, separator: str = "\n\n") -> None:
        """Put the gateway's own instructions (a route's prompt, a canary) before or after the
        client's system prompt; with the client's blocks kept, as a block of their own, so the
        client's breakpoints stay where the client put them."""
        if not text:
            return
        if self.system:
            joined = (text, self.system) if first else (self.system, text)
            self.system = separator.join(joined)
        else:
            self.system = text
        if self.system_blocks is not None:
            block = {"type": "text", "text": text}
            self.system_blocks = (
                [block, *self.system_blocks] if first else [*self.system_blocks, block]
            )

    def prompt_text(self) -> str:
        """All user-visible text of the prompt, for estimates and screening."""
        chunks = [self.system] if self.system else []
        for message in self.messages:
            for part in message.content:
                if isinstance(part, TextPart):
                    chunks.append(part.text)
                elif isinstance(part, ToolResultPart):
                    chunks.append(part.content)
        return "\n".join(chunks)


# --- stream events -----------------------------------------------------------------------------


# ``choice`` on a content event or a finish: which of the answers it belongs to, when a client of
# the upstream's own dialect asked for several (OpenAI's ``n``); 0 otherwise. Only the same
# dialect's writer reads it, since asking for several answers is refused across dialects.
# ``gc=False``: an event holds strings, numbers and decoded JSON, never a cycle, and skipping the
# collector's tracking makes one per token cheaper to build than the one-field event was.


class TextDelta(msgspec.Struct, frozen=True, gc=False):
    """Answer text. ``logprobs`` is the upstream's log-probability object for this piece
    (OpenAI's per-choice ``logprobs``), opaque, for a writer of the same dialect."""

    text: str
    choice: int = 0
    logprobs: dict[str, Any] | None = None


class ThinkingDelta(msgspec.Struct, frozen=True, gc=False):
    text: str = ""
    signature: str | None = None
    choice: int = 0


class ToolCallDelta(msgspec.Struct, frozen=True, gc=False):
    """A piece of a tool call. ``index`` counts tool calls in the response from 0; ``id`` and
    ``name`` arrive with the first piece, ``arguments`` is a fragment of JSON text."""

    index: int
    id: str | None = None
    name: str | None = None
    arguments: str = ""
    choice: int = 0
    signature: str | None = None  # Gemini's thoughtSignature on the call


class Usage(msgspec.Struct, frozen=True):
    """Token counts known so far; ``None`` means this event did not report that count.

    ``input_tokens`` is the whole prompt including cached tokens (OpenAI's convention, and what
    pricing needs); ``output_tokens`` includes reasoning tokens. ``model`` is the model the
    upstream says served the request (it may differ from the one asked for: an alias resolved
    to a dated snapshot, a fallback), carried here so metering prices what actually ran.
    """

    input_tokens: int | None = None
    output_tokens: int | None = None
    cache_read_tokens: int | None = None
    cache_write_tokens: int | None = None
    reasoning_tokens: int | None = None
    model: str | None = None


class Finish(msgspec.Struct, frozen=True, gc=False):
    reason: FinishReason = "stop"
    stop_sequence: str | None = None
    choice: int = 0


class Error(msgspec.Struct, frozen=True):
    """A failure, before or during a stream."""

    type: ErrorType
    message: str
    status: int = 500
    retry_after: float | None = None
    # Before the first token: what the upstream had reported using when it failed (metered
    # against the request even though another target answered it).
    usage: Usage | None = None


Event = TextDelta | ThinkingDelta | ToolCallDelta | Usage | Finish | Error
CONTENT_EVENTS = (TextDelta, ThinkingDelta, ToolCallDelta)

# Each error type's status when its raiser gives none (every type has one: see the test).
ERROR_STATUS: dict[ErrorType, int] = {
    "invalid_request": 400,
    "authentication": 401,
    "budget_exceeded": 402,
    "permission": 403,
    "not_found": 404,
    "request_too_large": 413,
    "unsupported_media_type": 415,
    "unprocessable": 422,
    "rate_limit": 429,
    "api_error": 500,
    "upstream_unavailable": 502,
    "timeout": 504,
    "overloaded": 529,
}


def is_error_type(value: object) -> TypeGuard[ErrorType]:
    """Whether ``value`` (an upstream's word, a header) is one of ours, exactly."""
    return isinstance(value, str) and value in ERROR_STATUS


class GatewayError(Exception):
    """A failure with an HTTP status, rendered in the client's dialect by the front."""

    def __init__(
        self,
        type: ErrorType,
        message: str,
        status: int | None = None,
        *,
        param: str | None = None,
        retry_after: float | None = None,
        headers: list[tuple[bytes, bytes]] | None = None,
        reason: str | None = None,
    ) -> None:
        super().__init__(message)
        self.type = type
        self.message = message
        self.status = status if status is not None else ERROR_STATUS[type]
        self.param = param
        self.retry_after = retry_after
        self.headers = headers  # extra response headers (a rate limit's quota)
        self.reason = reason  # which check refused, when finer than ``type`` (metrics)

    def to_event(self) -> Error:
        return Error(self.type, self.message, self.status, self.retry_after)

    @classmethod
    def from_event(cls, error: Error) -> GatewayError:
        return cls(error.type, error.message, error.status, retry_after=error.retry_after)


class Untranslatable(GatewayError):
    """A target's dialect cannot carry this request (a field, tool or option it has no
    equivalent for). Raised by a dialect's ``encode_request``; failover skips that target with
    the reason in ``x-tokenrelay-attempts``, and only when no target of the route can carry the
    request does the client get it as a 400 naming the field."""

    def __init__(self, message: str, *, param: str | None = None) -> None:
        super().__init__("invalid_request", message, 400, param=param)


# --- accumulation ------------------------------------------------------------------------------


class ToolCall(msgspec.Struct):
    id: str
    name: str
    arguments: str = ""
    signature: str | None = None


class Completion(msgspec.Struct):
    """A whole response: what a non-streaming answer holds, built by folding events.

    ``logprobs`` merges the pieces' log probabilities (their lists joined); ``choices`` holds the
    answers after the first when several were asked for (choice 1 first), each with its own
    text, calls, finish and logprobs; usage and error are the whole response's, on this one.
    """

    text: str = ""
    thinking: str = ""
    thinking_signature: str | None = None
    tool_calls: list[ToolCall] = msgspec.field(default_factory=list)
    usage: Usage = msgspec.field(default_factory=Usage)
    finish: Finish | None = None
    error: Error | None = None
    logprobs: dict[str, Any] | None = None
    choices: list[Completion] = msgspec.field(default_factory=list)

    def events(self) -> list[Event]:
        """The events that would stream this completion, in a canonical order."""
        out: list[Event] = []
        self._content_events(out, 0)
        for choice, other in enumerate(self.choices, 1):
            other._content_events(out, choice)
        out.append(self.usage)
        if self.error is not None:
            out.append(self.error)
            return out
        for choice, other in enumerate(self.choices, 1):
            finish = other.finish or Finish()
            out.append(Finish(finish.reason, finish.stop_sequence, choice))
        out.append(self.finish or Finish())
        return out

    def _content_events(self, out: list[Event], choice: int) -> None:
        if self.thinking or self.thinking_signature:
            out.append(ThinkingDelta(self.thinking, self.thinking_signature, choice))
        if self.text or self.logprobs is not None:
            out.append(TextDelta(self.text, choice, self.logprobs))
        for index, call in enumerate(self.tool_calls):
            out.append(
                ToolCallDelta(index, call.id, call.name, call.arguments, choice, call.signature)
            )


def merge_usage(old: Usage, new: Usage) -> Usage:
    """Later reports win field by field; a field a report leaves out keeps its earlier value."""
    return Usage(
        new.input_tokens if new.input_tokens is not None else old.input_tokens,
        new.output_tokens if new.output_tokens is not None else old.output_tokens,
        new.cache_read_tokens if new.cache_read_tokens is not None else old.cache_read_tokens,
        new.cache_write_tokens if new.cache_write_tokens is not None else old.cache_write_tokens,
        new.reasoning_tokens if new.reasoning_tokens is not None else old.reasoning_tokens,
        new.model if new.model is not None else old.model,
    )


# Choices an upstream may number; more is a broken upstream, not a reason to allocate.
MAX_CHOICES = 128
# Text pieces kept apart before they are joined into one string: a token's own str object costs
# about 55 bytes for its 4 characters, so a long generation held piece by piece costs ten times
# its text in memory for every stream in flight (see BENCHMARKS.md, "Ten thousand slow streams").
# The loose pieces are joined into the text so far; as it grows, more of them may wait (one per
# FOLD_CHARS characters), so the copying stays proportional to the text, not to its square.
FOLD_PIECES = 8
FOLD_CHARS = 256


def _fold(pieces: list[str]) -> int:
    """Join all ``pieces`` into one; returns how many may be held before the next fold."""
    joined = "".join(pieces)
    pieces[:] = (joined,)
    return max(FOLD_PIECES, len(joined) // FOLD_CHARS) + 1


class Accumulator:
    """Folds stream events into a ``Completion``; the gateway keeps one per request for metering."""

    __slots__ = (
        "_choices",
        "_logprobs",
        "_text",
        "_text_room",
        "_thinking",
        "_thinking_room",
        "completion",
        "content_events",
    )

    def __init__(self) -> None:
        self.completion = Completion()
        self._text: list[str] = []  # the text joined so far, then the loose pieces
        self._text_room = FOLD_PIECES  # pieces held before they are joined (``_fold``)
        self._thinking: list[str] | None = None  # made by the first thinking piece
        self._thinking_room = FOLD_PIECES
        self._logprobs: dict[str, Any] | None = None
        self._choices: dict[int, Accumulator] | None = None  # choices after the first
        self.content_events = 0

    def add(self, event: Event) -> None:
        completion = self.completion
        if isinstance(event, TextDelta):
            if event.choice:
                self._other(event.choice, msgspec.structs.replace(event, choice=0))
                return
            text = self._text
            text.append(event.text)
            if len(text) > self._text_room:
                self._text_room = _fold(text)
            if event.logprobs is not None:
                self._add_logprobs(event.logprobs)
            self.content_events += 1
        elif isinstance(event, ThinkingDelta):
            if event.choice:
                self._other(event.choice, msgspec.structs.replace(event, choice=0))
                return
            thinking = self._thinking
            if thinking is None:
                thinking = self._thinking = []
            thinking.append(event.text)
            if len(thinking) > self._thinking_room:
                self._thinking_room = _fold(thinking)
            if event.signature:
                completion.thinking_signature = event.signature
            self.content_events += 1
        elif isinstance(event, ToolCallDelta):
            if event.choice:
                self._other(event.choice, msgspec.structs.replace(event, choice=0))
                return
            calls = completion.tool_calls
            while len(calls) <= event.index:
                calls.append(ToolCall(id="", name=""))
            call = calls[event.index]
            if event.id:
                call.id = event.id
            if event.name:
                call.name = event.name
            call.arguments += event.arguments
            if event.signature:
                call.signature = event.signature
            self.content_events += 1
        elif isinstance(event, Usage):
            completion.usage = merge_usage(completion.usage, event)
        elif isinstance(event, Finish):
            if event.choice:
                self._other(event.choice, msgspec.structs.replace(event, choice=0))
            else:
                completion.finish = event
        elif isinstance(event, Error):
            completion.error = event

    def _other(self, choice: int, event: Event) -> None:
        """An event of a later choice (renumbered 0), folded by that choice's own accumulator."""
        if choice >= MAX_CHOICES:
            return
        if self._choices is None:
            self._choices = {}
        accumulator = self._choices.get(choice)
        if accumulator is None:
            accumulator = self._choices[choice] = Accumulator()
        accumulator.add(event)
        if not isinstance(event, Finish):
            self.content_events += 1

    def _add_logprobs(self, logprobs: dict[str, Any]) -> None:
        """Join the pieces' lists (``content``, ``refusal``) as a whole response holds them."""
        merged = self._logprobs
        if merged is None:
            merged = self._logprobs = {}
        for key, items in logprobs.items():
            current = merged.get(key)
            if isinstance(items, list):
                if isinstance(current, list):
                    current.extend(items)
                else:
                    merged[key] = list(items)
            elif key not in merged:
                merged[key] = items

    def result(self) -> Completion:
        completion = self.completion
        completion.text = "".join(self._text)
        completion.thinking = "".join(self._thinking) if self._thinking is not None else ""
        completion.logprobs = self._logprobs
        if self._choices:
            others = self._choices
            completion.choices = [
                others[i].result() if i in others else Completion()
                for i in range(1, max(others) + 1)
            ]
        return completion

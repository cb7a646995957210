"""Masking: each personal value of a request becomes a stable placeholder (``<EMAIL_1>``) before
the request leaves, in the system prompt, every message, tool call and tool result.

The mapping lives only in the request's memory (a ``Masking``), for the stream's restorer; the
ledger, logs and metrics get the types and counts, never the values.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any, Protocol

import msgspec

from tokenrelay.model import (
    GatewayError,
    Message,
    OpaquePart,
    Part,
    Request,
    TextPart,
    ThinkingPart,
    ToolCallPart,
    ToolResultPart,
)

# Keys of a verbatim block (Anthropic system blocks, opaque blocks, dialect extras) that name
# things rather than hold the user's words: never masked.
_NOT_TEXT = frozenset(
    {"type", "id", "tool_use_id", "signature", "media_type", "cache_control", "name", "role"}
)
_LABEL = re.compile(r"[^A-Z0-9_]")


class Found(Protocol):
    """One detected value: where it is in the text and its entity type (``EMAIL``)."""

    @property
    def start(self) -> int: ...
    @property
    def end(self) -> int: ...
    @property
    def entity(self) -> str: ...


class Finder(Protocol):
    """What masking needs of a detector (``guard.detectors.Detector``)."""

    def find(self, text: str) -> list[Any]: ...


def label(entity: str) -> str:
    """The placeholder word of an entity type: ``email`` -> ``EMAIL``, a custom pattern's
    ``custom:employee_id`` -> ``EMPLOYEE_ID``."""
    return _LABEL.sub("_", entity.rpartition(":")[2].upper()) or "PII"


class Masking:
    """One request's placeholders: value -> placeholder and back, with counts per entity."""

    __slots__ = ("_numbers", "_taken", "counts", "placeholders", "values")

    def __init__(self, taken: str = "") -> None:
        self.placeholders: dict[str, str] = {}  # value -> placeholder
        self.values: dict[str, str] = {}  # placeholder -> value
        self.counts: dict[str, int] = {}  # entity -> occurrences masked
        self._numbers: dict[str, int] = {}
        self._taken = taken  # the prompt as received: a placeholder in it is never reused

    def placeholder(self, value: str, entity: str) -> str:
        """The value's placeholder, the same one each time it appears in the request."""
        word = label(entity)
        self.counts[word] = self.counts.get(word, 0) + 1
        known = self.placeholders.get(value)
        if known is not None:
            return known
        number = self._numbers.get(word, 0)
        while True:
            number += 1
            candidate = f"<{word}_{number}>"
            if candidate not in self._taken:
                break
        self._numbers[word] = number
        self.placeholders[value] = candidate
        self.values[candidate] = value
        return candidate

    def __bool__(self) -> bool:
        return bool(self.values)


class Masker:
    """Masks one request's texts with a detector and the values an external detector found."""

    __slots__ = ("finder", "known", "masking")

    def __init__(self, finder: Finder, known: Iterable[tuple[str, str]] = ()) -> None:
        self.finder = finder
        # (value, entity) an external detector found in the prompt: masked wherever they occur
        self.known = sorted(set(known), key=lambda item: -len(item[0]))
        self.masking = Masking()

    def text(self, text: str) -> str:
        if not text:
            return text
        spans = [(f.start, f.end, f.entity) for f in self.finder.find(text)]
        for value, entity in self.known:
            start = text.find(value)
            while start >= 0:
                spans.append((start, start + len(value), entity))
                start = text.find(value, start + len(value))
        if not spans:
            return text
        spans.sort(key=lambda span: (span[0], -span[1]))
        out: list[str] = []
        at = 0
        for start, end, entity in spans:
            if start < at or end <= start:
                continue  # overlaps one already masked
            out.append(text[at:start])
            out.append(self.masking.placeholder(text[start:end], entity))
            at = end
        out.append(text[at:])
        return "".join(out)

    def arguments(self, arguments: str) -> str:
        """A tool call's JSON arguments: string values masked, the JSON still valid."""
        try:
            decoded = msgspec.json.decode(arguments)
        except msgspec.DecodeError:
            return self.text(arguments)
        masked = self.tree(decoded, mask_all=True)
        return arguments if masked == decoded else msgspec.json.encode(masked).decode()

    def tree(self, value: Any, *, mask_all: bool = False) -> Any:
        """A decoded JSON value with its strings masked (names and types left alone)."""
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, list):
            return [self.tree(item, mask_all=mask_all) for item in value]
        if isinstance(value, dict):
            if value.get("type") == "base64":
                return value  # image or file data, not words
            return {
                key: item
                if (not mask_all and key in _NOT_TEXT) or isinstance(item, bool | int | float)
                else self.tree(item, mask_all=mask_all)
                for key, item in value.items()
            }
        return value

    def part(self, part: Part) -> Part:
        if isinstance(part, TextPart):
            text = self.text(part.text)
            return part if text is part.text else msgspec.structs.replace(part, text=text)
        if isinstance(part, ToolResultPart):
            content = self.text(part.content)
            return (
                part if content is part.content else msgspec.structs.replace(part, content=content)
            )
        if isinstance(part, ToolCallPart):
            arguments = self.arguments(part.arguments)
            if arguments is part.arguments:
                return part
            return msgspec.structs.replace(part, arguments=arguments)
        if isinstance(part, ThinkingPart):
            text = self.text(part.text)
            return part if text is part.text else msgspec.structs.replace(part, text=text)
        if isinstance(part, OpaquePart):
            return msgspec.structs.replace(part, block=self.tree(part.block))
        return part  # images

    def request(self, request: Request) -> Masking:
        """Mask ``request`` in place (new lists: nothing it shares with others changes)."""
        self.masking = Masking(request.prompt_text())
        if request.system:
            request.system = self.text(request.system)
        if request.system_blocks is not None:
            request.system_blocks = self.tree(request.system_blocks)
        request.messages = [
            Message(message.role, [self.part(part) for part in message.content], message.extra)
            for message in request.messages
        ]
        if request.extra:
            request.extra = self.tree(request.extra)
        return self.masking


def types_found(
    finder: Finder, request: Request, known: Iterable[tuple[str, str]] = ()
) -> list[str]:
    """The entity types in ``request`` (for ``pii = "block"``), found by masking a copy."""
    masker = Masker(finder, known)
    copy = msgspec.structs.replace(request)
    return sorted(masker.request(copy).counts)


def blocked(types: list[str]) -> GatewayError:
    """The 400 of ``pii = "block"``: the types found, never the values."""
    return GatewayError(
        "invalid_request",
        "the request holds personal data this route does not accept ("
        + ", ".join(types)
        + "); remove it, or use a route that masks it",
        400,
        reason="guard_pii",
    )

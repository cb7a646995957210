"""What a cache entry holds: the answer's normalized event batches with their time offsets, and
who served it. Never a dialect's bytes, so one entry serves every front; msgpack, so a hit
decodes in microseconds (and ``ResponseCache`` keeps the hot ones decoded)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import msgspec

from tokenrelay.model import (
    Error,
    Event,
    Finish,
    TextDelta,
    ThinkingDelta,
    ToolCallDelta,
    Usage,
)

# Each event kind's code in an entry; an Error is never stored (such a stream is not cached).
_KINDS: tuple[type[Any], ...] = (TextDelta, ThinkingDelta, ToolCallDelta, Usage, Finish)
_CODE = {kind: code for code, kind in enumerate(_KINDS)}
_DECODERS = [msgspec.msgpack.Decoder(kind) for kind in _KINDS]
_encode = msgspec.msgpack.encode


class Batch(msgspec.Struct, array_like=True, gc=False):
    """Events that arrived together, ``at`` seconds after the first batch."""

    at: float
    events: list[tuple[int, msgspec.Raw]]


class Entry(msgspec.Struct, array_like=True, kw_only=True):
    """One stored answer: the provider and model that served it, when, and its batches."""

    provider: str
    model: str
    created: float
    batches: list[Batch]


_decode_entry = msgspec.msgpack.Decoder(Entry).decode


class Uncacheable(Exception):
    """The events hold something an entry never keeps (an error)."""


def encode(
    provider: str, model: str, created: float, batches: list[tuple[float, list[Event]]]
) -> bytes:
    """The entry's bytes; ``Uncacheable`` for a stream with an error event in it."""
    stored = []
    for at, events in batches:
        items = []
        for event in events:
            code = _CODE.get(type(event))
            if code is None:
                raise Uncacheable(type(event).__name__)
            items.append((code, msgspec.Raw(_encode(event))))
        stored.append(Batch(at, items))
    return _encode(Entry(provider=provider, model=model, created=created, batches=stored))


@dataclass(frozen=True, slots=True)
class Answer:
    """An entry decoded for serving: each batch's offset and events, and every event in one
    list (an instant replay's single batch). Events are frozen, so hits share them."""

    provider: str
    model: str
    created: float
    batches: list[tuple[float, list[Event]]]
    events: list[Event]


def decode(data: bytes) -> Answer:
    """An entry's answer from its bytes (``msgspec.DecodeError`` if they are not one)."""
    entry = _decode_entry(data)
    batches = [(batch.at, events_of(batch)) for batch in entry.batches]
    events = [event for _, batch in batches for event in batch]
    return Answer(entry.provider, entry.model, entry.created, batches, events)


def events_of(batch: Batch) -> list[Event]:
    """The batch's events, decoded."""
    return [_DECODERS[code].decode(raw) for code, raw in batch.events]


def has_error(batches: list[tuple[float, list[Event]]]) -> bool:
    return any(type(event) is Error for _, events in batches for event in events)

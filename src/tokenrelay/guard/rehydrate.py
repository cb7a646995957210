"""Rehydration: the placeholders a model writes back become the original values on the way to
the client, even when a placeholder arrives split across any number of events.

Only a tail that could still become a placeholder is held (``<EMA`` at the end of a delta, at
most the longest placeholder less one character); anything else goes out at once. Each text of
each choice and each tool call has its own held tail. Tool-call arguments are JSON text, so a
value is restored there JSON-escaped: the client's parsed arguments hold the original value.
A request that masked nothing gets no restorer at all, so it costs nothing per event.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

import msgspec

from tokenrelay.model import Error, Event, Finish, TextDelta, ToolCallDelta


class Restorer:
    """Placeholders to values in one text, fed piece by piece with its held tail."""

    __slots__ = ("_json", "_longest", "_pattern", "_prefixes", "values")

    def __init__(self, values: Mapping[str, str]) -> None:
        if not values:
            raise ValueError("a restorer needs at least one placeholder")
        self.values = dict(values)
        self._json = {
            placeholder: msgspec.json.encode(value).decode()[1:-1]
            for placeholder, value in values.items()
        }
        self._prefixes = frozenset(p[:i] for p in values for i in range(1, len(p)))
        self._longest = max(map(len, values))
        self._pattern = re.compile("|".join(re.escape(p) for p in sorted(values, key=len)[::-1]))

    def feed(self, held: str, delta: str, *, json: bool = False) -> tuple[str, str]:
        """``(text to send now, tail to hold)`` for ``delta`` after the ``held`` tail."""
        text = held + delta if held else delta
        if "<" not in text:
            return text, ""
        cut = len(text)
        start = text.rfind("<", max(0, cut - self._longest + 1))
        if start >= 0 and text[start:] in self._prefixes:
            cut = start
        out = text[:cut]
        if "<" in out:
            table = self._json if json else self.values
            out = self._pattern.sub(lambda match: table[match.group()], out)
        return out, text[cut:]


class RestoreFlow:
    """The restorer over a stream of events: one held tail per text and per tool call."""

    __slots__ = ("_held", "restorer")

    def __init__(self, values: Mapping[str, str]) -> None:
        self.restorer = Restorer(values)
        # (choice, -1) for a choice's text, (choice, index) for a tool call's arguments
        self._held: dict[tuple[int, int], str] = {}

    def feed(self, events: list[Event]) -> list[Event]:
        out: list[Event] = []
        feed = self.restorer.feed
        held = self._held
        for event in events:
            kind = type(event)
            if kind is TextDelta:
                assert isinstance(event, TextDelta)
                key = (event.choice, -1)
                if held:
                    self._flush(out, event.choice, keep=key)
                text, tail = feed(held.pop(key, ""), event.text)
                if tail:
                    held[key] = tail
                if text != event.text:
                    if not text and event.logprobs is None:
                        continue
                    event = TextDelta(text, event.choice, event.logprobs)
            elif kind is ToolCallDelta:
                assert isinstance(event, ToolCallDelta)
                key = (event.choice, event.index)
                if (event.choice, -1) in held:
                    self._flush(out, event.choice, keep=key)
                arguments, tail = feed(held.pop(key, ""), event.arguments, json=True)
                if tail:
                    held[key] = tail
                if arguments != event.arguments:
                    if not arguments and event.id is None and event.name is None:
                        continue
                    event = msgspec.structs.replace(event, arguments=arguments)
            elif kind is Finish and held:
                assert isinstance(event, Finish)
                self._flush(out, event.choice)
            elif kind is Error and held:
                self._flush(out, None)
            out.append(event)
        return out

    def close(self) -> list[Event]:
        """The held tails, when the stream ends with no finish."""
        out: list[Event] = []
        self._flush(out, None)
        return out

    def _flush(
        self, out: list[Event], choice: int | None, keep: tuple[int, int] | None = None
    ) -> None:
        """Send the held tails of ``choice`` (all when None) but ``keep``'s, in order."""
        for key in list(self._held):
            if key == keep or (choice is not None and key[0] != choice):
                continue
            tail = self._held.pop(key)
            if not tail:
                continue
            if key[1] < 0:
                out.append(TextDelta(tail, key[0]))
            else:
                out.append(ToolCallDelta(key[1], arguments=tail, choice=key[0]))

"""The output guard: rules checked on the answer's text as it streams, with a bounded
look-behind (the longest match a rule can have, or a configured cap for an unbounded one), so a
match split across events is still seen and each event costs time in proportion to its size.

On a match the action either masks it in place (the look-behind is then held back, since text
sent cannot be taken back) or ends the stream with an in-band error in the client's dialect.
The route's canary is one rule among them: it always ends the stream, with the screen's error.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from tokenrelay.model import Error, Event, Finish, GatewayError, TextDelta

if TYPE_CHECKING:
    from tokenrelay.guard.mask import Finder
    from tokenrelay.guard.settings import OutputGuardSettings

CANARY = "canary"


class GuardBlocked(GatewayError):
    """The output guard ended a stream (outcome ``guard_blocked``); the rule is named, never
    the text it matched."""

    record_type = "guard_blocked"

    def __init__(self, rule: str) -> None:
        super().__init__(
            "invalid_request",
            f"the response was stopped by this gateway's output guard (rule {rule})",
            400,
            reason="guard_output",
        )
        self.rule = rule


def longest_match(pattern: re.Pattern[str], cap: int) -> int:
    """The most characters ``pattern`` can match, or ``cap`` when it has no bound."""
    try:
        from re import _parser  # type: ignore[attr-defined]

        width = _parser.parse(pattern.pattern, pattern.flags).getwidth()[1]
    except Exception:
        return cap
    return max(1, min(int(width), cap))


@dataclass(frozen=True, slots=True)
class Rule:
    name: str
    pattern: re.Pattern[str] | None  # None: the detectors (``finder``)
    longest: int


class OutputRules:
    """A route's rules, compiled once: their names, patterns and the look-behind they need."""

    __slots__ = ("action", "finder", "longest", "mask_with", "rules")

    def __init__(
        self,
        settings: OutputGuardSettings,
        finder: Finder | None = None,
        finder_longest: int | None = None,
        canary: str | None = None,
    ) -> None:
        cap = settings.max_match_chars
        rules: list[Rule] = []
        for i, source in enumerate(settings.rules):
            pattern = re.compile(source)
            rules.append(Rule(f"rules[{i}]", pattern, longest_match(pattern, cap)))
        if settings.terms:
            alternatives = "|".join(re.escape(t) for t in sorted(settings.terms, key=len)[::-1])
            rules.append(
                Rule(
                    "terms", re.compile(alternatives, re.IGNORECASE), max(map(len, settings.terms))
                )
            )
        self.finder = finder if settings.secrets else None
        if self.finder is not None:
            longest = cap if finder_longest is None else min(max(finder_longest, 1), cap)
            rules.append(Rule("secrets", None, longest))
        if canary is not None and settings.canary:
            rules.append(Rule(CANARY, re.compile(re.escape(canary), re.IGNORECASE), len(canary)))
        self.rules = rules
        self.longest = max((rule.longest for rule in rules), default=1)
        self.action = settings.action
        self.mask_with = settings.mask_with

    def __bool__(self) -> bool:
        return bool(self.rules)

    def spans(self, text: str) -> list[tuple[int, int, str]]:
        """Every match in ``text``: ``(start, end, rule)`` in order of start."""
        found: list[tuple[int, int, str]] = []
        for rule in self.rules:
            if rule.pattern is None:
                assert self.finder is not None
                found.extend((f.start, f.end, rule.name) for f in self.finder.find(text))
            else:
                found.extend((m.start(), m.end(), rule.name) for m in rule.pattern.finditer(text))
        found.sort()
        return found


def _masked(text: str, spans: Sequence[tuple[int, int, str]], mask_with: str) -> str:
    out: list[str] = []
    at = 0
    for start, end, _ in spans:
        if start < at:
            continue
        out.append(text[at:start])
        out.append(mask_with)
        at = end
    out.append(text[at:])
    return "".join(out)


class OutputGuard:
    """One answer's checks: a look-behind per choice's text, the hits per rule, and the rule
    that blocked the stream, if one did."""

    __slots__ = ("_tails", "blocked", "hits", "rules")

    def __init__(self, rules: OutputRules) -> None:
        self.rules = rules
        self._tails: dict[int, str] = {}  # per choice: the look-behind (block) or held text (mask)
        self.hits: dict[str, int] = {}
        self.blocked: str | None = None

    def feed(self, events: list[Event]) -> list[Event]:
        if self.blocked is not None:
            return []
        out: list[Event] = []
        for event in events:
            kind = type(event)
            if kind is TextDelta:
                assert isinstance(event, TextDelta)
                stop = self._text(event, out)
                if stop is not None:
                    out.append(stop)
                    return out
                continue
            if (kind is Finish or kind is Error) and self._tails:
                self._flush(out, event.choice if isinstance(event, Finish) else None)
            out.append(event)
        return out

    def close(self) -> list[Event]:
        out: list[Event] = []
        if self.blocked is None:
            self._flush(out, None)
        return out

    def _count(self, spans: Sequence[tuple[int, int, str]]) -> None:
        for _, _, rule in spans:
            self.hits[rule] = self.hits.get(rule, 0) + 1

    def _text(self, event: TextDelta, out: list[Event]) -> Error | None:
        rules = self.rules
        keep = rules.longest - 1
        tail = self._tails.get(event.choice, "")
        window = tail + event.text
        spans = rules.spans(window)
        if rules.action == "block":
            new = [span for span in spans if span[1] > len(tail)]
            if new:
                self._count(new[:1])
                return self._block(new[0][2])
            self._tails[event.choice] = window[-keep:] if keep else ""
            out.append(event)
            return None
        leaks = [span for span in spans if span[2] == CANARY]
        if leaks:  # the canary ends the stream whatever the other rules do
            self._count(leaks[:1])
            return self._block(CANARY)
        safe = len(window) - keep
        done = [span for span in spans if span[0] < safe]
        cut = max([safe, *(end for _, end, _ in done)]) if done else max(safe, 0)
        self._tails[event.choice] = window[cut:]
        if done:
            self._count(done)
        text = _masked(window[:cut], done, rules.mask_with) if done else window[:cut]
        if text or event.logprobs is not None:
            out.append(TextDelta(text, event.choice, event.logprobs))
        return None

    def _block(self, rule: str) -> Error:
        self.blocked = rule
        if rule == CANARY:
            from tokenrelay.screening.canary import leak_error

            return leak_error().to_event()
        return GuardBlocked(rule).to_event()

    def _flush(self, out: list[Event], choice: int | None) -> None:
        if self.rules.action == "block":
            return  # the tails were sent already: they are only a look-behind
        for key in list(self._tails):
            if choice is not None and key != choice:
                continue
            text = self._tails.pop(key)
            if text:
                spans = self.rules.spans(text)
                self._count(spans)
                out.append(TextDelta(_masked(text, spans, self.rules.mask_with), key))

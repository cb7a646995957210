"""The output guard: rules checked on the answer's text as it streams, with a bounded
look-behind (the longest match a rule can have, or a configured cap for an unbounded one), so a
match split across events is still seen and each event costs time in proportion to its size.

On a match the action either masks it in place or ends the stream with an in-band error in the
client's dialect. Masking holds text back (text sent cannot be taken back), but only from where a
match could still be in progress: the detectors say where that is (a JWT can only be growing in
the last run of non-blank characters), so prose flows on at once while a value is completed.
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

    __slots__ = (
        "_pattern_longest",
        "_pending",
        "action",
        "finder",
        "longest",
        "mask_with",
        "rules",
    )

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
        self._pattern_longest = max((r.longest for r in rules if r.pattern is not None), default=0)
        self._pending = getattr(self.finder, "pending", None)
        self.action = settings.action
        self.mask_with = settings.mask_with

    def __bool__(self) -> bool:
        return bool(self.rules)

    def pending(self, text: str) -> int:
        """Where in ``text`` a match may start that more text could still complete: masking
        holds back from there. A pattern can be anywhere in its longest match; the detectors
        say where (``Detector.pending``), when they can."""
        size = len(text)
        floor = max(0, size - self.longest + 1)
        earliest = size - self._pattern_longest + 1 if self._pattern_longest else size
        if self.finder is not None:
            if self._pending is None:
                return floor
            earliest = min(earliest, self._pending(text))
        return max(earliest, floor)

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

    __slots__ = ("_context", "_tails", "blocked", "hits", "rules")

    def __init__(self, rules: OutputRules) -> None:
        self.rules = rules
        self._tails: dict[int, str] = {}  # per choice: the look-behind (block) or held text (mask)
        self._context: dict[int, str] = {}  # mask: per choice, the text sent (a look-behind)
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
        tail = self._tails.get(event.choice, "")
        window = tail + event.text
        if rules.action == "mask":
            return self._mask(event, window, out)
        keep = rules.longest - 1
        new = [span for span in rules.spans(window) if span[1] > len(tail)]
        if new:
            self._count(new[:1])
            return self._block(new[0][2])
        self._tails[event.choice] = window[-keep:] if keep else ""
        out.append(event)
        return None

    def _mask(self, event: TextDelta, held: str, out: list[Event]) -> Error | None:
        """Send the new text at once, masked, except from where a match may still be growing."""
        rules = self.rules
        # The text already sent stays as look-behind (a label before a value): the window is
        # it, the text held and the new text; a match wholly in what was sent was handled then.
        sent = self._context.get(event.choice, "")
        window = sent + held
        offset = len(sent)
        spans = [span for span in rules.spans(window) if span[1] > offset]
        leaks = [span for span in spans if span[2] == CANARY]
        if leaks:  # the canary ends the stream whatever the other rules do
            self._count(leaks[:1])
            return self._block(CANARY)
        safe = max(rules.pending(window), offset)
        done = [(max(start, offset), end, rule) for start, end, rule in spans if start < safe]
        done = [span for span in done if span[1] > span[0]]
        cut = max([safe, *(end for _, end, _ in done)])
        self._tails[event.choice] = window[cut:]
        behind = max(0, len(window) - rules.longest + 1)  # look-behind and held: as before
        self._context[event.choice] = window[min(behind, cut) : cut]
        if done:
            self._count(done)
            shifted = [(start - offset, end - offset, rule) for start, end, rule in done]
            text = _masked(window[offset:cut], shifted, rules.mask_with)
        else:
            text = window[offset:cut]
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
            sent = self._context.pop(key, "")
            if text:
                offset = len(sent)
                spans = [
                    (max(start, offset) - offset, end - offset, rule)
                    for start, end, rule in self.rules.spans(sent + text)
                    if end > offset
                ]
                self._count(spans)
                out.append(TextDelta(_masked(text, spans, self.rules.mask_with), key))

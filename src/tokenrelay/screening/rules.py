"""The injection matcher: finds the rules of ``rule_table`` in a text and combines their weights.

Each rule (``rule_table.RULES``) is a regular expression over the normalized text, its anchors
(word beginnings, or literal needles for symbols and scripts without spaces, one of which every
match contains), and two weights: for the user's own words and for untrusted content (pasted
documents, tool results), where text that addresses the model is suspicious in itself. Weights
of the distinct rules that match combine as independent evidence, ``1 - prod(1 - w)``, so one
strong signal or two weak ones reach the default threshold of 0.5.

Speed: one Aho-Corasick pass (``ahocorasick-rs``; two precompiled ``re`` tries without it)
finds every anchor of every rule with its position; a rule none of whose anchors occur costs
nothing, and the others are tried only at their anchors. docs/screening.md has the figures.

``ARTICLE_PATTERNS`` are the six expressions of the article this project started from, kept as
the floor of the rule set and as the baseline its quality is measured against.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from functools import cache
from typing import TYPE_CHECKING, Literal

from tokenrelay.screening.context import Spans, inside, spans
from tokenrelay.screening.normalize import (
    JOINT,
    REVERSED_WORDS,
    ROT13_WORDS,
    clean,
    decodings,
    fold,
)
from tokenrelay.screening.rule_table import RULES as RULES
from tokenrelay.screening.rule_table import Rule

if TYPE_CHECKING:
    from ahocorasick_rs import AhoCorasick

Source = Literal["user", "untrusted"]

# The article's ``INJECTION_PATTERNS``, verbatim (JavaScript ``/i`` is ``re.IGNORECASE``).
ARTICLE_PATTERNS: tuple[re.Pattern[str], ...] = (
    re.compile(r"ignore (all |previous |above )?instructions", re.IGNORECASE),
    re.compile(r"you are now", re.IGNORECASE),
    re.compile(r"new (system |)prompt:", re.IGNORECASE),
    re.compile(r"\[system\]", re.IGNORECASE),
    re.compile(r"\[assistant\]", re.IGNORECASE),
    re.compile(r"forget (everything|all) (above|previous)", re.IGNORECASE),
)


def article_flags(text: str) -> bool:
    """The article's ``sanitizePrompt``: any of its six patterns in the trimmed text."""
    trimmed = text.strip()
    return any(pattern.search(trimmed) for pattern in ARTICLE_PATTERNS)


_BY_NAME = {rule.name: rule for rule in RULES}
_INDEX = {rule.name: index for index, rule in enumerate(RULES)}

# A question *about* injection that quotes an attack phrase ("what does 'ignore previous
# instructions' do?") is discounted when every hit sits inside quotes.
# Compiled on first use (``_cues``), as ``_TEMPLATE_TALK``: most texts never need them, and
# compiling them at import sat on the path from ``tokenrelay serve`` to its first token.
_DISCUSSION = (
    r"\b(?:prompt[ -]injections?|injections?|attacks?|jailbreak\w*|attackers?|red[ -]team\w*"
    r"|defen[dcs]\w*|protect\w*|detect\w*|guardrails?|classif\w*|security|examples?|phrases?"
    r"|such as|what does|mean|means|paper|research|course|lecture|blog|label\w*|dataset|logs?"
    r"|logged|flagged|regex\w*|filters?|test cases?|taxonomy|attempts?|exploits?|payloads?"
    r"|categor\w*|dangerous|moderation|honeypot|incident|string|sentence|explain\w*|why|is this"
    r"|thesis|malicious|benign|refused|satz|phrase|étiquet\w*|erkläre|warum|trick\w*"
    r"|extraction|effective|stor(?:y|ies)|scene|novel|poem|screenplay|dialogue|character"
    r"|fiction|limerick|fairy tale|fanfic|monologue|villain|hero|captain)\b"
)
# A text about chat templates and special tokens (a developer's question, not a fake turn).
_TEMPLATE_TALK = (
    r"\b(?:chat[ _-]?templates?|templates?|tokeni[sz]\w*|special tokens?|tokens?|chatml|jinja"
    r"|fine-?tun\w*|stop tokens?|(?:prompt|chat) format|markers?|eos|bos|dataset|llama\.cpp"
    r"|vllm|hugging ?face|apply_chat_template|tiktoken|axolotl|sharegpt|alpaca|regex|parser"
    r"|harness|plantilla|jetons?|llama|mistral|gemma|qwen|phi-?\d)\b"
)
_DELIMITERS = ("delimiter.", "article.system_tag", "article.assistant_tag")
# What an agent harness's reminder says as a matter of course ("do not mention this to the user").
_REMINDER_MAY = frozenset({"indirect.hide_from_user", "indirect.ignore_task"})
_NO_SPANS = Spans()
DISCUSSION_FACTOR = 0.4
TEMPLATE_FACTOR = 0.3  # a special token named in a question about templates
HIDDEN_BONUS = 0.3  # an instruction where the reader of the page cannot see it
ENCODED_BONUS = 0.3  # an instruction hidden in an encoding is a signal of its own
CERTAIN = 0.99  # a score past which more evidence changes nothing: the screen stops looking
_ROT13, _REVERSED = -1, -2


def _word_start(stem: str) -> bool:
    """Anchors in scripts that separate words; the rest (symbols, CJK, Devanagari) are needles."""
    return stem[0].isalnum() and ord(stem[0]) < 0x0900


def _trie(stems: Iterable[str]) -> str:
    """One alternation that shares prefixes, so a position costs one branch per first letter."""
    root: dict[str, dict] = {}  # type: ignore[type-arg]
    for stem in stems:
        node = root
        for char in stem:
            node = node.setdefault(char, {})
        node[""] = {}

    def emit(node: dict[str, dict]) -> str:  # type: ignore[type-arg]
        alternatives = [
            re.escape(char) + emit(child) for char, child in sorted(node.items()) if char
        ]
        if not alternatives:
            return ""
        if len(alternatives) == 1 and "" not in node:
            return alternatives[0]
        return "(?:" + "|".join(alternatives) + ")" + ("?" if "" in node else "")

    return emit(root)


_Owner = tuple[int, int, int]  # rule index or a marker, whole-word length or 0, lead
_ALSO = -10  # markers at and below: "gate _ALSO - marker (a rule's ``also`` group) is met"
_GATES: list[int] = []  # gate -> its rule
# What one string the tries match stands for: rules to try at its place, rules to try there if
# it is a whole word of the given length, rules led by it (index, lead), rules whose ``also`` it
# satisfies (and the same for whole words), the longest lead, and a hint marker or 0.
_Entry = tuple[
    tuple[int, ...],
    tuple[tuple[int, int], ...],
    tuple[tuple[int, int], ...],
    frozenset[int],
    tuple[tuple[int, int], ...],
    int,
    int,
]


def _index() -> dict[str, _Entry]:
    """What each anchor (each string the automata or tries can match) stands for."""
    owners: dict[str, set[_Owner]] = {}
    for index, rule in enumerate(RULES):
        for spec in rule.anchors:
            anchor, _, lead = spec.partition("~")
            exact = anchor.endswith("$")
            anchor = anchor.rstrip("$")
            owners.setdefault(anchor, set()).add(
                (index, len(anchor) if exact else 0, int(lead or 0))
            )
        for group in rule.also:
            gate = len(_GATES)
            _GATES.append(index)
            for spec in group:
                exact = spec.endswith("$")
                anchor = spec.rstrip("$")
                owners.setdefault(anchor, set()).add((_ALSO - gate, len(anchor) if exact else 0, 0))
    for vocabulary, marker in ((ROT13_WORDS, _ROT13), (REVERSED_WORDS, _REVERSED)):
        for word in vocabulary:
            owners.setdefault(word, set()).add((marker, len(word), 0))
    # A match is the longest anchor at its place; it stands for every anchor that prefixes it.
    # One pass over each anchor's owners (this runs at start-up, before the first request).
    lookup: dict[str, _Entry] = {}
    for anchor in owners:
        found: set[_Owner] = set()
        for end in range(1, len(anchor) + 1):
            prefix = owners.get(anchor[:end])
            if prefix:
                found |= prefix
        anywhere: set[int] = set()
        whole: set[tuple[int, int]] = set()
        leads: set[tuple[int, int]] = set()
        also: set[int] = set()
        also_whole: set[tuple[int, int]] = set()
        hints: list[int] = []
        longest = 0
        for index, length, before in found:
            if index >= 0:  # a rule
                if length:
                    whole.add((index, length))
                else:
                    anywhere.add(index)
                if before:
                    leads.add((index, before))
                    longest = max(longest, before)
            elif index <= _ALSO:  # a rule's ``also`` gate
                if length:
                    also_whole.add((_ALSO - index, length))
                else:
                    also.add(_ALSO - index)
            elif length == len(anchor):  # a hint marker, as a whole word
                hints.append(index)
        lookup[anchor] = (
            tuple(sorted(anywhere)),
            tuple(sorted(whole)),
            tuple(sorted(leads)),
            frozenset(also),
            tuple(sorted(also_whole)),
            longest,
            hints[0] if hints else 0,
        )
    return lookup


_LOOKUP = _index()
_PATTERNS: list[re.Pattern[str] | None] = [None] * len(RULES)  # compiled on first use
_ORDER = {index: (-rule.user, index) for index, rule in enumerate(RULES)}
_NEEDS = [
    frozenset(g for g, owner in enumerate(_GATES) if owner == index) for index in range(len(RULES))
]
_WORD_START = re.compile(r"(?<![\w#=*-])[\w\[<{(#\"'=*-]")


def combine(weights: dict[str, float]) -> float:
    """Independent evidence: ``1 - prod(1 - w)``."""
    miss = 1.0
    for weight in weights.values():
        miss *= 1.0 - weight
    return 1.0 - miss


class _Anchors:
    """Where each rule may match in one text (the places its anchors allow), for the rules whose
    ``also`` anchors occur too, and the rot13 and reversed-text hints seen on the way."""

    __slots__ = ("found", "led", "reversed", "rot13", "rules")

    def __init__(self, text: str) -> None:
        self.rot13: list[int] = []
        self.reversed: list[int] = []
        places = _find(text)
        size = len(text)
        found: dict[int, list[int]] = {}
        led: dict[int, list[tuple[list[int], int]]] = {}
        present: set[int] = set()  # gates met
        joined = JOINT in text
        for key, starts in places.items():
            plain, exact, lead_by, also, also_exact, _, hint = _LOOKUP[key]
            if joined:
                # A word inside an identifier ("ignore" in "test_ignore_all") meets gates only.
                inner = [s for s in starts if s and text[s - 1] == JOINT]
                if inner:
                    present |= also
                    end = len(key)
                    for index, length in also_exact:
                        if length == end and any(_whole(text, s, end) for s in inner):
                            present.add(index)
                    starts = [s for s in starts if not s or text[s - 1] != JOINT]
                    if not starts:
                        continue
            for index in plain:
                found.setdefault(index, []).extend(starts)
            if also:
                present |= also
            for index, lead in lead_by:
                led.setdefault(index, []).append((starts, lead))
            if exact or also_exact or hint:
                end = len(key)
                whole = [s for s in starts if s + end >= size or not text[s + end].isalnum()]
                if whole:
                    for index, length in exact:
                        if length == end:
                            found.setdefault(index, []).extend(whole)
                    for index, length in also_exact:
                        if length == end:
                            present.add(index)
                    if hint == _ROT13:
                        self.rot13 += whole
                    elif hint == _REVERSED:
                        self.reversed += whole
        self.found = found
        self.led = led
        # Strongest rules first, so a blatant attack reaches a certain score in few tries.
        self.rules = sorted(
            (index for index in found.keys() | led.keys() if _NEEDS[index] <= present),
            key=_ORDER.__getitem__,
        )

    def places(self, index: int, text: str) -> list[int]:
        """Where rule ``index`` may match: its anchors, and the word starts its leads allow."""
        led = self.led.get(index)
        if not led:
            return self.found.get(index, [])
        where = list(self.found.get(index, ()))
        for starts, lead in led:
            for start in starts:
                where.append(start)
                low = max(0, start - lead)
                where.extend(m.start() for m in _WORD_START.finditer(text, low, start))
        return where


def _whole(text: str, start: int, end: int) -> bool:
    """Whether the anchor of length ``end`` at ``start`` is a whole word (nothing alnum after)."""
    return start + end >= len(text) or not text[start + end].isalnum()


def _find(text: str) -> dict[str, list[int]]:
    """Every anchor in ``text`` with where it starts: a word anchor only at a word start, the
    longest one at each place. Aho-Corasick (``ahocorasick-rs``, Rust) when it is installed:
    one pass in about a third of the time of the two ``re`` tries, which give the same places
    without it."""
    places: dict[str, list[int]] = {}
    automata = _automata()
    if automata is None:
        return _by_tries(text)
    words, needles = automata
    for index, start, _ in words.find_matches_as_indexes(text):
        if start and (text[start - 1].isalnum() or text[start - 1] == "_"):
            # A match inside a word is dropped. It may have hidden one at a word start only
            # if a word starts inside it ("e-mail" in "the-mail"): then the tries decide.
            if index in _SPANNING:
                return _by_tries(text)
            continue
        places.setdefault(_WORD_LIST[index], []).append(start)
    for index, start, _ in needles.find_matches_as_indexes(text):
        places.setdefault(_NEEDLE_LIST[index], []).append(start)
    return places


def _by_tries(text: str) -> dict[str, list[int]]:
    """``_find`` with the two ``re`` tries: where ``ahocorasick-rs`` is missing, or cannot say."""
    places: dict[str, list[int]] = {}
    for trie in _tries():
        for match in trie.finditer(text):
            places.setdefault(match.group(), []).append(match.start())
    return places


_WORD_LIST = sorted(anchor for anchor in _LOOKUP if _word_start(anchor))
_NEEDLE_LIST = sorted(anchor for anchor in _LOOKUP if not _word_start(anchor))
# Word anchors with a word start inside them ("p.s.", "e-mail", "i'm").
_SPANNING = frozenset(
    index for index, anchor in enumerate(_WORD_LIST) if re.search(r"\W\w", anchor)
)


@cache
def _tries() -> tuple[re.Pattern[str], re.Pattern[str]]:
    """The two ``re`` tries (words at a word start, needles anywhere), built on first use: with
    ``ahocorasick-rs`` only a rare text needs them, and building them is half of this module's
    import time (on the path from ``tokenrelay serve`` to its first token)."""
    return (
        re.compile(r"(?<!\w)(?:" + _trie(_WORD_LIST) + ")"),
        re.compile(_trie(_NEEDLE_LIST)),
    )


@cache
def _automata() -> tuple[AhoCorasick, AhoCorasick] | None:
    """The two Aho-Corasick automata (built once, in about a millisecond), or None without
    ``ahocorasick-rs``."""
    try:
        from ahocorasick_rs import AhoCorasick, MatchKind
    except ImportError:
        return None
    longest = MatchKind.LeftmostLongest
    return (
        AhoCorasick(_WORD_LIST, matchkind=longest),
        AhoCorasick(_NEEDLE_LIST, matchkind=longest),
    )


def prepare() -> None:
    """Build the anchor automata now (about 2 ms, once per process): a screen that screens
    calls it when it is made, at start-up, so the first request does not pay for it."""
    _automata()


def warm() -> None:
    """Compile every rule now (a benchmark, or a gateway warming up off its event loop)."""
    prepare()
    _cues(_DISCUSSION)
    _cues(_TEMPLATE_TALK)
    for rule in RULES:
        rule.pattern  # noqa: B018 - the property compiles and caches


def _match(
    anchors: _Anchors,
    text: str,
    cased: str,
    source: Source,
    hits: dict[str, float],
    suffix: str = "",
    *,
    stop: bool = True,
    where: Spans = _NO_SPANS,
    starts: list[int] | None = None,
) -> bool:
    """Add the rules ``text`` trips to ``hits`` (and where they matched to ``starts``); say
    whether it stopped early (with ``stop``, once the evidence is ``CERTAIN``). Each match
    weighs what its place in ``where`` says (see ``_weight``); a rule counts at the heaviest
    of its matches."""
    miss = 1.0 - combine(hits)
    untrusted = source == "untrusted"
    talk: list[bool] = []  # whether the text discusses chat templates, once a delimiter matched
    for index in anchors.rules:
        rule = RULES[index]
        top = rule.untrusted if untrusted or where.pasted or where.markup else rule.user
        name = rule.name + suffix if suffix else rule.name
        if name in hits or (suffix and hits.get(rule.name, 0.0) >= top):
            continue
        pattern = _PATTERNS[index] or _load(index)
        weight = 0.0
        if rule.cased:
            found = pattern.search(cased)
            if found is None:
                continue
            weight = _weight(rule, found.start(), untrusted, where, talk, text)
            if starts is not None:  # where the lower-cased text has it, when the two line up
                starts.append(found.start() if len(cased) == len(text) else -1)
        else:
            match = pattern.match
            matched = False
            for start in anchors.places(index, text):
                if match(text, start):
                    matched = True
                    weight = max(weight, _weight(rule, start, untrusted, where, talk, text))
                    if starts is not None:
                        starts.append(start)
                    if weight >= top:
                        break
            if not matched:
                continue
        if weight <= 0.0:
            continue
        hits[name] = weight
        miss *= 1.0 - weight
        if stop and miss <= 1.0 - CERTAIN:
            return True
    return False


def _weight(
    rule: Rule, start: int, untrusted: bool, where: Spans, talk: list[bool], text: str
) -> float:
    """A match's weight by where it is: nothing for what agent reminders may say (inside one);
    the untrusted weight in untrusted text, a pasted document or hidden markup; less for a chat
    template's delimiters in a text that discusses templates; else the user's weight."""
    if rule.name in _REMINDER_MAY and where.reminder and inside(where.reminder, start):
        return 0.0
    if untrusted or inside(where.pasted, start) or (where.markup and inside(where.hidden, start)):
        return rule.untrusted
    if rule.name.startswith(_DELIMITERS):
        if not talk:
            talk.append(
                ("?" in text or bool(where.mentioned)) and bool(_cues(_TEMPLATE_TALK).search(text))
            )
        if talk[0]:
            return rule.user * TEMPLATE_FACTOR
    return rule.user


def _load(index: int) -> re.Pattern[str]:
    pattern = _PATTERNS[index] = RULES[index].pattern
    return pattern


@cache
def _cues(source: str) -> re.Pattern[str]:
    """``_DISCUSSION`` or ``_TEMPLATE_TALK``, compiled once, when first needed."""
    return re.compile(source)


def _discusses(text: str, where: Spans) -> bool:
    """Whether the text's own words (outside its quotes and fences) discuss what it quotes: a
    cue inside the quoted attack itself ("this example...") does not earn the discount."""
    return any(
        not inside(where.mentioned, cue.start()) for cue in _cues(_DISCUSSION).finditer(text)
    )


def _matches(anchors: _Anchors, text: str, name: str) -> list[int]:
    """Where the plain (not cased) rule ``name`` matches ``text``: every match, by its anchors."""
    index = _INDEX.get(name)
    if index is None or RULES[index].cased:
        return []
    match = (_PATTERNS[index] or _load(index)).match
    return [start for start in set(anchors.places(index, text)) if match(text, start)]


def _all_quoted(anchors: _Anchors, names: dict[str, float], text: str, where: Spans) -> bool:
    """Every match of every rule in ``names`` mentioned, and none in pasted or hidden text."""
    for name in names:
        for start in _matches(anchors, text, name):
            if not inside(where.mentioned, start) or inside(where.pasted, start):
                return False
            if where.markup and inside(where.hidden, start):
                return False
    return True


def _hidden_hits(anchors: _Anchors, names: dict[str, float], text: str, where: Spans) -> bool:
    """Whether a rule that instructs (not a mere vocabulary hint) matched inside hidden markup."""
    return any(
        inside(where.hidden, start)
        for name in names
        if _BY_NAME[name].untrusted >= 0.3
        for start in _matches(anchors, text, name)
    )


def scan(text: str, source: Source = "user") -> tuple[dict[str, float], float]:
    """The weight of each rule ``text`` trips in every reading of it, and a discount factor.

    A rule found only in a decoded reading is named ``rule@encoding``, and an encoded instruction
    adds ``ENCODED_BONUS``; an instruction inside hidden markup adds ``HIDDEN_BONUS``
    (``context.hidden``). The factor is ``DISCUSSION_FACTOR`` when the text discusses
    injection and every plain hit is mentioned (quoted or fenced), else 1. Rules are tried
    until the score is ``CERTAIN``, so a blatant attack is not searched for every other trick.
    """
    cleaned = clean(text)
    lowered = fold(cleaned)
    where = spans(lowered, pasted=source == "user")
    hits: dict[str, float] = {}
    anchors = _Anchors(lowered)
    starts: list[int] = []
    stopped = _match(anchors, lowered, cleaned, source, hits, where=where, starts=starts)
    factor = 1.0
    if hits and where.markup and where.hidden and _hidden_hits(anchors, hits, lowered, where):
        hits["context.hidden"] = HIDDEN_BONUS
    elif (
        hits
        and source == "user"
        and all(inside(where.mentioned, start) for start in starts)
        and _discusses(lowered, where)
    ):
        # A text about injection, quoting attacks: are all of them quoted, everywhere?
        if stopped:
            hits.clear()
            _match(anchors, lowered, cleaned, source, hits, stop=False, where=where)
        if _all_quoted(anchors, hits, lowered, where):
            factor = DISCUSSION_FACTOR
    if combine(hits) * factor >= CERTAIN:
        return hits, factor
    readings = decodings(
        text,
        cleaned,
        lowered,
        rot13=anchors.rot13 if len(anchors.rot13) >= 3 else (),
        reversed_=anchors.reversed if len(anchors.reversed) >= 2 else (),
    )
    for encoding, decoded in readings:
        before = len(hits)
        _match(_Anchors(decoded), decoded, decoded, source, hits, "@" + encoding)
        if len(hits) > before:
            hits["evasion.encoded"] = ENCODED_BONUS
            factor = 1.0
        if combine(hits) >= CERTAIN:
            break
    return hits, factor


def score(text: str, source: Source = "user") -> tuple[float, tuple[str, ...]]:
    """``scan`` reduced to a score in [0, 1] and the names of the rules that contributed."""
    hits, factor = scan(text, source)
    names = tuple(sorted(hits))
    if factor < 1.0:
        names += ("discount.discussion",)
    return combine(hits) * factor, names

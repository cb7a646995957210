"""Who says a phrase, and how: the spans of one text the rules weigh differently.

The rules see words; the same words mean different things in different places. A phrase inside
quotes or a code fence is *mentioned*, not used; a document pasted under the user's request is
somebody else's text (untrusted), however it arrived; an HTML comment, a link title or alt text
is *hidden* from the human who reads the page; an agent harness's ``<system-reminder>`` block is
the client's own bookkeeping. ``spans`` finds these regions with a few C-speed searches, and
only when the text holds the characters they need, so ordinary prose pays almost nothing.
"""

from __future__ import annotations

import re
from bisect import bisect_right

# Quoted or fenced text, one expression per opening character so each is a fast literal search:
# ```fences```, `inline code`, "double", “curly”, «guillemets», „low“, block quotes, and
# 'single' quotes that open after a blank or bracket (not an apostrophe: checked by the caller).
_MENTIONS = (
    ("`", re.compile(r"```[\s\S]*?(?:```|\Z)|`[^`\n]{1,400}`")),
    ('"', re.compile(r'"[^"\n]{1,400}"')),
    ("“", re.compile(r"“[^”\n]{1,400}”")),
    ("«", re.compile(r"«[^»\n]{1,400}»")),
    ("„", re.compile(r"„[^“”\n]{1,400}[“”]")),
    ("\n>", re.compile(r"\n>[^\n]*")),
)
_SINGLE = re.compile(r"'[^'\n]{1,300}'(?=[\s.,;:!?)\]]|$)")

# Text the reader of a page does not see: comments, hidden elements, titles, alt text, meta
# content, markdown comments, and the titles of markdown links and images.
_HIDDEN = (
    ("<!--", re.compile(r"<!--[\s\S]*?(?:-->|\Z)")),
    (
        "<",
        re.compile(
            r"<(\w+)[^<>]{0,500}?(?:display\s*:\s*none|visibility\s*:\s*hidden|font-size\s*:\s*0"
            r"|opacity\s*:\s*0|\bhidden\b|aria-hidden|color\s*:\s*(?:white|#fff)|size=\"?0)"
            r"[^<>]{0,500}>[\s\S]{0,2000}?</\1\s*>"
            r"|<(?:noscript|details|title|template)\b[^<>]{0,500}>[\s\S]{0,2000}?</(?:noscript|details"
            r"|title|template)\s*>"
        ),
    ),
    (
        "=",
        re.compile(
            r"(?:alt|title|content|aria-label|data-[\w-]+)\s*=\s*(?:\"[^\"]{12,2000}\"|'[^']{12,2000}')"
        ),
    ),
    ("](", re.compile(r"\]\([^()\s]{0,2000}\s+(?:\"[^\"]{1,400}\"|'[^']{1,400}')\)")),
    ("![", re.compile(r"!\[[^\]\n]{12,}\]")),
    ("[//]", re.compile(r"\[//\]: ?#[^\n]*")),
)

# An agent harness's notes to its model (Claude Code puts them in user turns and tool results).
_REMINDER = re.compile(r"<system-reminder>[\s\S]*?(?:</system-reminder>|\Z)")

# A user message that asks for work on pasted text: the ask, then the text. The pasted part
# starts after the first blank line (or a ``---`` line) when the ask is short and says so.
_ASK = re.compile(
    r"summari[sz]|summary|tl;?dr|translat|proofread|review|check|extract|explain|analy[sz]"
    r"|what does|what is this|what's on|what are the main|read this|rewrite|fix|turn this"
    r"|convert|key points|grammar|following|below|this (?:page|email|e-mail|article|doc|text"
    r"|post|readme|file|cv|resume|résumé|transcript|review|newsletter|markdown|html)"
    r"|copied|found|got|received|pasted|résume|resume|traduis|traduce|resume|fasse|übersetze"
    r"|zusammen",
    re.IGNORECASE,
)
_BREAK = re.compile(r"\n[ \t]*\n|\n-{3,}[ \t]*\n|:[ \t]*\n")
_MARKUP = re.compile(r"<(?:html|body|head|div|p|span|table|section|article|h[1-6])\b", re.I)


class Spans:
    """Sorted ``(start, end)`` regions of one text, by kind. The mentioned and hidden regions are
    found on first use: most texts trip no rule, and then nobody asks."""

    __slots__ = ("_hidden", "_mentioned", "markup", "pasted", "reminder", "text")

    def __init__(self, text: str = "", *, pasted: bool = True) -> None:
        self.text = text
        self._mentioned: list[tuple[int, int]] | None = None
        self._hidden: list[tuple[int, int]] | None = None
        self.markup = any(mark in text for mark, _ in _HIDDEN)
        self.reminder: list[tuple[int, int]] = []
        if "<system-reminder>" in text:
            self.reminder = [m.span() for m in _REMINDER.finditer(text)]
        self.pasted: list[tuple[int, int]] = []
        if pasted:
            start = _pasted_from(text)
            if start is not None:
                self.pasted = [(start, len(text))]

    @property
    def mentioned(self) -> list[tuple[int, int]]:
        """Quoted or fenced regions."""
        if self._mentioned is None:
            text = self.text
            found = [
                m.span() for mark, expr in _MENTIONS if mark in text for m in expr.finditer(text)
            ]
            if "'" in text:
                found += [
                    m.span()
                    for m in _SINGLE.finditer(text)
                    if m.start() == 0 or not text[m.start() - 1].isalnum()
                ]
            if text.startswith(">"):
                found.append((0, text.find("\n") % (len(text) + 1)))
            self._mentioned = _merge(found)
        return self._mentioned

    @property
    def hidden(self) -> list[tuple[int, int]]:
        """Comments, hidden elements, titles and alt text."""
        if self._hidden is None:
            text = self.text
            self._hidden = (
                _merge(
                    [
                        m.span()
                        for mark, expr in _HIDDEN
                        if mark in text
                        for m in expr.finditer(text)
                    ]
                )
                if self.markup
                else []
            )
        return self._hidden


def inside(regions: list[tuple[int, int]], place: int) -> bool:
    """Whether ``place`` falls in one of the sorted ``regions``."""
    if not regions:
        return False
    at = bisect_right(regions, (place, _END)) - 1
    return at >= 0 and regions[at][0] <= place < regions[at][1]


_END = 1 << 62


def spans(text: str, *, pasted: bool = True) -> Spans:
    """The regions of ``text`` (already normalized, so positions agree with the rules') that
    are mentioned, hidden, pasted under an ask, or an agent's reminder. ``pasted`` is off for
    text already known to be untrusted (it has no part that is the user's own ask)."""
    return Spans(text, pasted=pasted)


def _pasted_from(text: str) -> int | None:
    """Where the pasted part of an "ask, then text" message starts, if it has one."""
    markup = _MARKUP.search(text) if "<" in text else None
    cut = _BREAK.search(text, 0, 400)
    if cut is not None and len(text) - cut.end() >= 40 and _ASK.search(text, 0, cut.start()):
        return cut.end() if markup is None else min(cut.end(), markup.start())
    return markup.start() if markup is not None else None


def _merge(regions: list[tuple[int, int]]) -> list[tuple[int, int]]:
    regions.sort()
    merged: list[tuple[int, int]] = []
    for start, end in regions:
        if merged and start < merged[-1][1]:
            merged[-1] = (merged[-1][0], max(end, merged[-1][1]))
        else:
            merged.append((start, end))
    return merged

"""The screen's fast anchor search (Aho-Corasick, ``ahocorasick-rs``) finds exactly what the
``re`` tries find, so the verdicts do not depend on which one a machine has."""

from __future__ import annotations

import re
from pathlib import Path

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tokenrelay.screening import rules
from tokenrelay.screening.normalize import clean, fold

DATA = Path(__file__).parent / "data"
CORPORA = ("screening_corpus.jsonl", "screening_categories.jsonl", "screening_holdout.jsonl")


class _Line(msgspec.Struct):
    text: str
    source: str


def _lines() -> list[_Line]:
    return [
        msgspec.json.decode(row, type=_Line)
        for name in CORPORA
        for row in (DATA / name).read_bytes().splitlines()
    ]


def _tries(text: str) -> dict[str, list[int]]:
    places: dict[str, list[int]] = {}
    for trie in rules._tries():
        for match in trie.finditer(text):
            places.setdefault(match.group(), []).append(match.start())
    return places


def _same(text: str) -> None:
    found = rules._find(text)
    expected = _tries(text)
    assert {key: sorted(starts) for key, starts in found.items()} == {
        key: sorted(starts) for key, starts in expected.items()
    }, text


def test_aho_corasick_is_installed() -> None:
    assert rules._automata() is not None, "ahocorasick-rs is a dependency (pyproject.toml)"


def test_same_places_on_every_corpus_text() -> None:
    for line in _lines():
        _same(fold(clean(line.text)))


# Pieces of anchors, whole anchors and separators, so words meet in every way: glued, split by
# punctuation, inside longer words, and next to the one anchor with dots inside ("p.s.").
_PIECES = [*rules._WORD_LIST[::7], *rules._NEEDLE_LIST[::3], "p.s.", "s", "x", "_", "ing"]
_GLUE = ["", " ", ".", "-", "_", "\n", "'", "é", "ж", "1"]


@settings(max_examples=400, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(_PIECES), st.sampled_from(_GLUE)), max_size=40))
def test_same_places_on_glued_anchors(parts: list[tuple[str, str]]) -> None:
    _same("".join(piece + glue for piece, glue in parts))


def test_same_places_when_an_anchor_spans_a_word_start() -> None:
    """ "e-mail" inside "the-mail", "i'm" inside "hi'mode": the tries see the word that starts
    after the dash or the apostrophe; Aho-Corasick, matching inside the word, must too."""
    spanning = [anchor for anchor in rules._WORD_LIST if re.search(r"\W\w", anchor)]
    assert spanning
    for anchor in spanning:
        cut = re.search(r"\W\w", anchor)
        assert cut is not None
        for word in rules._WORD_LIST[::5]:
            _same(f"x{anchor[: cut.start() + 1]}{word} and more")


def test_same_scores_without_aho_corasick(monkeypatch: pytest.MonkeyPatch) -> None:
    lines = _lines()[::3]
    fast = [rules.score(line.text, _source(line)) for line in lines]
    monkeypatch.setattr(rules, "_automata", lambda: None)
    slow = [rules.score(line.text, _source(line)) for line in lines]
    assert fast == slow


def _source(line: _Line) -> rules.Source:
    return "untrusted" if line.source in ("untrusted", "tool") else "user"


def _mixed_words_by_split(data: bytes, marks: bytes) -> list[bytes]:
    """The leetspeak words as the screen first found them: every word, one by one."""
    return [
        word
        for word, kinds in zip(data.split(), marks.split(), strict=True)
        if (b"LD" in kinds or b"DL" in kinds) and b"N" not in kinds and len(word) < 24
    ]


@settings(max_examples=400, deadline=None)
@given(
    st.lists(
        st.sampled_from(
            [
                "h3ll0",
                "w0rld",
                "1gn0r3",
                "abc",
                "a1",
                "9a",
                "x2y",
                "ok",
                "4ll",
                "é1",
                "a1b3c4d5e7f0a1b3c4d5e7f0a",
            ]
        ),
        max_size=60,
    ),
    st.lists(st.sampled_from([" ", "\n", "\t ", "  ", "\r\n"]), min_size=60, max_size=60),
)
def test_leetspeak_words_found_by_meetings(words: list[str], blanks: list[str]) -> None:
    from tokenrelay.screening import normalize

    data = "".join(word + blank for word, blank in zip(words, blanks, strict=False)).encode()
    marks = data.translate(normalize._LEET_CLASS)
    assert normalize._mixed_words(data, marks) == _mixed_words_by_split(data, marks)


@settings(max_examples=500, deadline=None)
@given(
    st.lists(
        st.sampled_from(["%", "2", "0", "a", "F", "g", "&#", "x", ";", " ", "&#x4", "%4", "%20"]),
        max_size=60,
    )
)
def test_encoded_runs_as_before(pieces: list[str]) -> None:
    """The percent and HTML-entity runs now start with a literal (so ``re`` can skip to it);
    they find what the first spelling found."""
    from tokenrelay.screening import normalize

    text = "".join(pieces)
    percent = re.compile(r"(?:%[0-9a-fA-F]{2}){6,}")
    entities = re.compile(r"(?:&#x?[0-9a-fA-F]{1,6};\s?){4,}")
    assert normalize._PERCENT_RUN.findall(text) == percent.findall(text)
    assert normalize._HTML_RUN.findall(text) == entities.findall(text)

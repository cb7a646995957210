# ruff: noqa: RUF001, RUF003 - look-alike characters are this module's subject
"""Text normalization before matching: undo the tricks that make one instruction look like many.

``normalize`` gives the lower-case form every rule matches; ``decodings`` gives the extra readings
(base64, hex, percent-encoding, HTML entities, rot13, leetspeak, reversed text, Unicode tag
characters) worth screening too. Every step is guarded by a cheap test, so plain ASCII prose pays
for a few C-speed passes only, and at most ``MAX_DECODED_RUNS`` candidate runs are decoded.
"""

from __future__ import annotations

import binascii
import re
import unicodedata
from collections.abc import Sequence
from urllib.parse import unquote

MAX_DECODED_RUNS = 8
MAX_DECODED_CHARS = 8192

# Zero-width, bidi controls, invisible fillers, variation selectors and tag characters.
_INVISIBLE = re.compile(
    "[\u00ad\u034f\u061c\u115f\u1160\u17b4\u17b5\u180b-\u180f\u200b-\u200f\u202a-\u202e"
    "\u2060-\u206f\u3164\ufe00-\ufe0f\ufeff\uffa0\U0001bca0-\U0001bca3\U0001d173-\U0001d17a"
    "\U000e0000-\U000e0fff]+"
)
# Tag characters mirror ASCII invisibly ("ASCII smuggling"): decoded into a reading of their own.
_TAGS = re.compile("[\U000e0020-\U000e007e]+")

# Latin-script look-alikes no ordinary text needs (small capitals, IPA letters): always folded.
_LATIN_ALIKES = {
    "ᴀ": "a", "ʙ": "b", "ᴄ": "c", "ᴅ": "d", "ᴇ": "e", "ɢ": "g", "ʜ": "h", "ɪ": "i", "ᴊ": "j",
    "ᴋ": "k", "ʟ": "l", "ᴍ": "m", "ɴ": "n", "ᴏ": "o", "ᴘ": "p", "ʀ": "r", "ꜱ": "s", "ᴛ": "t",
    "ᴜ": "u", "ᴠ": "v", "ᴡ": "w", "ʏ": "y", "ᴢ": "z", "ɑ": "a", "ɡ": "g", "ȷ": "j",
    "ɩ": "i", "ɒ": "a", "ɛ": "e", "ɔ": "o", "ꞵ": "b",
}  # fmt: skip
# Cyrillic, Greek and Armenian letters that look Latin. Folded only inside words that also hold
# Latin letters, so Russian or Greek text stays itself and its own rules still match it.
_SCRIPT_ALIKES = {
    "а": "a", "в": "b", "е": "e", "к": "k", "м": "m", "н": "h", "о": "o", "р": "p", "с": "c",
    "т": "t", "у": "y", "х": "x", "і": "i", "ј": "j", "ѕ": "s", "ԁ": "d", "һ": "h", "ӏ": "l",
    "ԛ": "q", "ԝ": "w", "ѵ": "v", "ь": "b", "г": "r", "п": "n", "ё": "e", "ї": "i",
    "А": "a", "В": "b", "Е": "e", "К": "k", "М": "m", "Н": "h", "О": "o", "Р": "p", "С": "c",
    "Т": "t", "Х": "x", "У": "y", "І": "i", "Ј": "j", "Ѕ": "s",
    "α": "a", "β": "b", "ε": "e", "η": "n", "ι": "i", "κ": "k", "ν": "v", "ο": "o", "ρ": "p",
    "τ": "t", "υ": "u", "χ": "x", "ϲ": "c", "ω": "w", "γ": "y",
    "Α": "a", "Β": "b", "Ε": "e", "Ζ": "z", "Η": "h", "Ι": "i", "Κ": "k", "Μ": "m", "Ν": "n",
    "Ο": "o", "Ρ": "p", "Τ": "t", "Υ": "y", "Χ": "x",
    "օ": "o", "ս": "u", "ո": "n", "հ": "h", "ց": "g", "ք": "q",
}  # fmt: skip
_SCRIPT_TABLE = str.maketrans(_SCRIPT_ALIKES)
# Invisible characters and Latin look-alikes, found in one scan.
_ODD = re.compile(_INVISIBLE.pattern[:-2] + "".join(_LATIN_ALIKES) + "]")  # one char at a time
_ALIKE_CLASS = "".join(_SCRIPT_ALIKES)
# A look-alike touching a Latin letter: where a mixed-script word is (charset first: fast scan).
_MIXED_AT = re.compile(rf"[{_ALIKE_CLASS}](?:(?<=[a-zA-Z].)|(?=[a-zA-Z]))")

# "i g n o r e", "i.g.n.o.r.e a.l.l", "i-g-n-o-r-e": runs of single letters, one separator each.
_SPACED = re.compile(r"\b(?:[^\W\d_][ .\-_*|/+~]){2,}[^\W\d_]\b")
# Words a fully spaced-out run ("i g n o r e a l l ...") is cut back into, longest first.
_SEGMENT = re.compile(
    r"instructions|instruction|disregard|everything|developer|previous|password|anything|ignore"
    r"|forget|system|prompt|reveal|secret|above|prior|rules|print|show|your|mode|tell|what|you"
    r"|are|now|all|the|and|new|say"
)
# An underscore between two letters ("disregard_your_rules") becomes ``JOINT``: a word gap to the
# rules' patterns, yet no word start for their anchors, so an instruction spelled as one
# identifier is read from the identifier's start only ("test_refuses_ignore_all_..." is a name).
# An invisible separator, which ``clean`` removes from every text, so only this makes one.
JOINT = "\u2063"
_JOINED = re.compile(r"_(?<=[^\W\d_]_)(?=[^\W\d_])")  # starts with the literal: a fast scan
# Four single letters in a row, each followed by a separator, in ASCII or 2- or 3-byte letters.
_SPACED_MARKS = (b"SLSLSLSLS", b"SLLSLLSLLSLLS", b"SLLLSLLLSLLLSLLLS")

# Candidate runs worth an attempt at decoding. Hex-encoded text starts every byte with 2-7.
_HEX_RUN = re.compile(r"[2-7][0-9a-fA-F](?:(?:[ :,]|\\x|0x)?[2-7][0-9a-fA-F]){7,}")
_HEX_SEP = re.compile(r"\\x|0x|[ :,]")
# Each starts with a literal, so ``re`` jumps from one "%" or "&#" to the next (written as
# "(?:%XX){6,}", it tried every position of the text: 30 µs for 2000 characters).
_PERCENT_RUN = re.compile(r"%[0-9a-fA-F]{2}(?:%[0-9a-fA-F]{2}){5,}")
_HTML_RUN = re.compile(r"&#x?[0-9a-fA-F]{1,6};\s?(?:&#x?[0-9a-fA-F]{1,6};\s?){3,}")
# Quoted fragments a prompt asks the model to join ("a = 'ign' ... b = 'ore all'... do a + b").
_FRAGMENT = re.compile(r"['\"]([^'\"\n]{1,40})['\"]")
_JOIN_CUES = ("+", "join", "concat", "combin", "merge", "together", "assembl", "fragment",
              "piece")  # fmt: skip
_UNPRINTABLE = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\ufffd]")
_LEET = str.maketrans(
    {"0": "o", "1": "i", "3": "e", "4": "a", "5": "s", "7": "t", "@": "a", "$": "s"}
)
_ROT13 = str.maketrans(
    "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ",
    "nopqrstuvwxyzabcdefghijklmNOPQRSTUVWXYZABCDEFGHIJKLM",
)


def _classes(groups: dict[bytes, bytes]) -> bytes:
    """A ``bytes.translate`` table mapping each byte of a group's characters to its mark and every
    other byte to a blank: class tests become one C-speed translation and a substring search."""
    table = bytearray(b" " * 256)
    for chars, mark in groups.items():
        for byte in chars:
            table[byte] = mark[0]
    return bytes(table)


_LETTERS = b"abcdefghijklmnopqrstuvwxyz"
_BASE64_CLASS = _classes({_LETTERS + _LETTERS.upper() + b"0123456789+/=_-": b"B"})
_HEX_CLASS = _classes({b"0123456789abcdefABCDEF": b"H", b"\\x": b"x"})
_HEX_MARKS = (
    b"HH HH HH HH HH HH HH HH",
    b"HH:HH:HH:HH:HH:HH:HH:HH",
    b"HHHHHHHHHHHHHHHH",
    b"xxHHxxHHxxHH",
)
# Blanks stay blanks, so words line up with ``bytes.split()`` of the text itself.
_LEET_CLASS = _classes(
    {
        bytes(set(range(256)) - set(b" \t\n\r\x0b\x0c")): b"x",
        _LETTERS: b"L",
        b"013457@$": b"D",
        b"2689": b"N",
    }
)
# UTF-8 lead bytes of Greek (CE, CF), Cyrillic (D0, D1, D3, D4) and Armenian (D5, D6) letters.
_SCRIPT_CLASS = _classes(
    {
        _LETTERS + _LETTERS.upper(): b"L",
        bytes(range(0x80, 0xC0)): b"c",
        b"\xce\xcf\xd0\xd1\xd3\xd4\xd5\xd6": b"C",
    }
)
_SPACED_CLASS = _classes({_LETTERS + bytes(range(0x80, 0x100)): b"L", b" .-_*|/+~": b"S"})
_BLANK_CLASS = _classes({b" \t\n\r\x0b\x0c": b"W"})  # NFKC has made other blanks spaces

# Common words of rot13'd and reversed English: two or three of them make a reading worth trying.
ROT13_WORDS = frozenset(
    {
        "gur", "naq", "lbh", "lbhe", "nyy", "vtaber", "cerivbhf", "vafgehpgvbaf", "flfgrz",
        "cebzcg", "sbetrg", "ner", "jvgu", "abj", "ehyrf", "erirny", "qvfertneq", "frperg",
        "cnffjbeq",
    }
)  # fmt: skip
REVERSED_WORDS = frozenset(
    {
        "erongi", "snoitcurtsni", "tpmorp", "metsys", "suoiverp", "dragersid", "tegrof", "laever",
        "ruoy", "eht", "dna",
    }
)  # fmt: skip


def clean(text: str) -> str:
    """Invisible characters out, NFKC compatibility forms in, look-alike letters folded.

    Case is kept, because base64 needs it; ``fold`` lower-cases afterwards.
    """
    if text.isascii():
        return text
    if _ODD.search(text):
        text = _ODD.sub(_odd, text)
    if not unicodedata.is_normalized("NFKC", text):
        text = unicodedata.normalize("NFKC", text)
    # A Latin letter next to a Cyrillic, Greek or Armenian one ("іgnоre"): fold that word.
    marks = text.encode().translate(_SCRIPT_CLASS)
    if b"LC" in marks or b"CcL" in marks:
        text = _fold_mixed(text)
    return text


def _odd(match: re.Match[str]) -> str:
    return _LATIN_ALIKES.get(match.group(), "")


def _fold_mixed(text: str) -> str:
    """Fold the look-alikes of each word that mixes them with Latin letters, and only those."""
    pieces: list[str] = []
    done = 0
    for match in _MIXED_AT.finditer(text):
        start = end = match.start()
        if start < done:
            continue  # inside the word just folded
        while start > done and text[start - 1].isalnum():
            start -= 1
        while end < len(text) and text[end].isalnum():
            end += 1
        pieces += (text[done:start], text[start:end].translate(_SCRIPT_TABLE))
        done = end
    return "".join(pieces) + text[done:]


def fold(cleaned: str) -> str:
    """Lower case, letter-spaced words joined, blank runs collapsed (newlines kept, as one), and
    an underscore between letters made ``JOINT`` (so ``ignore_all_rules`` reads as words)."""
    text = cleaned.lower() if cleaned.isascii() else cleaned.casefold()
    data = text.encode()
    if b"WWWWWWW" in data.translate(_BLANK_CLASS):  # rules allow gaps of 1-6; fold longer runs
        lines = (" ".join(line.split()) for line in text.splitlines())
        text = "\n".join(line for line in lines if line)
        data = text.encode()
    marks = data.translate(_SPACED_CLASS)
    if any(mark in marks for mark in _SPACED_MARKS):
        text = _SPACED.sub(_join_spaced, text)
    if "_" in text:
        text = _JOINED.sub(JOINT, text)
    return text.strip()


def _join_spaced(match: re.Match[str]) -> str:
    """Letters sit at even places, separators at odd ones. With two kinds of separator
    ("i.g.n.o.r.e a.l.l") the blank splits words; with one, known words are cut back out."""
    run = match.group()
    letters = run[0::2]
    separators = set(run[1::2])
    if " " in separators and len(separators) > 1:
        return "".join(c for i, c in enumerate(run) if i % 2 == 0 or c == " ")
    if len(letters) < 8:
        return letters
    return " ".join(_SEGMENT.sub(r" \g<0> ", letters).split())


def normalize(text: str) -> str:
    """The form every rule matches: ``fold(clean(text))``."""
    return fold(clean(text))


def decodings(
    raw: str,
    cleaned: str,
    text: str,
    *,
    rot13: Sequence[int] = (),
    reversed_: Sequence[int] = (),
) -> list[tuple[str, str]]:
    """``(encoding, normalized reading)`` for each hidden reading of one prompt (and the quoted
    fragments of a split payload, joined, when the prompt speaks of joining them).

    ``cleaned`` and ``text`` are ``clean(raw)`` and ``fold(cleaned)``; ``rot13`` and
    ``reversed_`` are where in ``text`` the caller saw common words of those readings (enough of
    them to be worth it): only the lines holding them are read that way. Only candidate runs
    are decoded, at most ``MAX_DECODED_RUNS`` of them and ``MAX_DECODED_CHARS`` characters in
    all; what is not readable text is dropped.
    """
    views: list[tuple[str, str]] = []
    budget = [MAX_DECODED_RUNS, MAX_DECODED_CHARS]
    if not raw.isascii() and b"\xf3\xa0" in raw.encode() and _TAGS.search(raw):
        hidden = "".join(chr(ord(c) - 0xE0000) for run in _TAGS.findall(raw) for c in run)
        views.append(("unicode-tags", normalize(hidden)))
    encoded = cleaned.encode()
    for run in _runs(encoded, encoded.translate(_BASE64_CLASS), b"B" * 16):
        if not _is_hex(run) and not _is_word(run):
            _add(views, "base64", _from_base64(run), budget)
    hexes = encoded.translate(_HEX_CLASS)
    if any(mark in hexes for mark in _HEX_MARKS):
        for run in _HEX_RUN.findall(cleaned):
            _add(views, "hex", _from_hex(run), budget)
    if "%" in cleaned:
        for run in _PERCENT_RUN.findall(cleaned):
            _add(views, "percent", unquote(run), budget)
        if cleaned.count("%20") >= 3:  # words joined by encoded blanks: "ignore%20all%20..."
            _add(views, "percent", unquote(cleaned), budget)
    if "&#" in cleaned:
        import html

        for run in _HTML_RUN.findall(cleaned):
            _add(views, "html-entities", html.unescape(run), budget)
    leet = text.encode()
    marks = leet.translate(_LEET_CLASS)
    if marks.count(b"LD") + marks.count(b"DL") >= 4:
        # Only the words that mix letters with digits read as letters, so a hash or a part
        # number in a long prompt does not cost a second pass over all of it.
        words = _mixed_words(leet, marks)
        if len(words) >= 2:
            views.append(("leetspeak", b" ".join(words).decode().translate(_LEET)))
    if any(cue in text for cue in _JOIN_CUES) and (text.count("'") + text.count('"')) >= 4:
        fragments = [
            match.group(1)
            for match in _FRAGMENT.finditer(cleaned)
            if match.start() == 0 or not cleaned[match.start() - 1].isalnum()
        ]
        if 2 <= len(fragments) <= 40:
            views.append(("joined", normalize("".join(fragments))))
    if rot13:
        views.append(("rot13", _lines(text, rot13).translate(_ROT13)))
    if reversed_:
        views.append(("reversed", _lines(text, reversed_)[::-1]))
    return views


def _mixed_words(data: bytes, marks: bytes) -> list[bytes]:
    """The words of ``data`` (split at blanks) that mix letters and leet digits, and no other
    digits, under 24 bytes: found from each letter-digit meeting in ``marks``, so the cost
    follows those meetings, not the number of words."""
    words: list[bytes] = []
    end = -1
    for meeting in _MEETING.finditer(marks):
        at = meeting.start()
        if at < end:
            continue  # in the word just taken
        start = marks.rfind(b" ", 0, at) + 1
        end = marks.find(b" ", at)
        end = len(marks) if end < 0 else end
        if end - start < 24 and b"N" not in marks[start:end]:
            words.append(data[start:end])
    return words


_MEETING = re.compile(rb"LD|DL")


def _lines(text: str, places: Sequence[int]) -> str:
    """The lines of ``text`` that hold the given places, in order, once each."""
    spans: dict[int, int] = {}
    for place in places:
        start = text.rfind("\n", 0, place) + 1
        if start not in spans:
            end = text.find("\n", place)
            spans[start] = len(text) if end < 0 else end
    return "\n".join(text[start:end] for start, end in sorted(spans.items()))


def _runs(data: bytes, marks: bytes, start_mark: bytes) -> list[str]:
    """The runs of ``data`` whose class marks begin with ``start_mark`` (a run ends at a blank
    mark), found by C-speed substring search; they are ASCII, so bytes and characters agree."""
    runs: list[str] = []
    at = marks.find(start_mark)
    while at >= 0 and len(runs) < 4 * MAX_DECODED_RUNS:
        end = marks.find(b" ", at)
        end = len(marks) if end < 0 else end
        runs.append(data[at:end].decode())
        at = marks.find(start_mark, end)
    return runs


def _add(views: list[tuple[str, str]], name: str, text: str | None, budget: list[int]) -> None:
    if not text or budget[0] <= 0 or budget[1] <= 0:
        return
    budget[0] -= 1
    text = text[: budget[1]]
    budget[1] -= len(text)
    if _readable(text):
        views.append((name, normalize(text)))


def _readable(text: str) -> bool:
    """Text a model could read as words, not bytes that merely decoded."""
    if len(_UNPRINTABLE.findall(text)) > len(text) // 50:
        return False
    letters = sum(1 for c in text if c.isalpha())
    return letters * 2 >= len(text) and (" " in text or len(text) < 24)


def _is_word(run: str) -> bool:
    """A long identifier or word ("internationalization", "getElementsByTagName"), not base64."""
    if not run.isalpha():
        return False
    return len(run) % 4 != 0 or run.islower() or run.isupper()


def _is_hex(run: str) -> bool:
    return all(c in "0123456789abcdefABCDEF" for c in run)


def _from_hex(run: str) -> str | None:
    digits = _HEX_SEP.sub("", run)
    try:
        return bytes.fromhex(digits[: len(digits) - len(digits) % 2]).decode("utf-8")
    except ValueError:
        return None


def _from_base64(run: str) -> str | None:
    run = run.rstrip("=").replace("-", "+").replace("_", "/")
    if len(run) % 4 == 1:
        run = run[:-1]
    try:
        return binascii.a2b_base64(run + "=" * (-len(run) % 4)).decode("utf-8")
    except (binascii.Error, ValueError):
        return None

"""The built-in detectors: patterns plus checksums, run over a text in a few precompiled passes.

Each entity type has one finder: a regular expression that proposes candidates (skipped at once
when a cheap test shows the text cannot hold one) and a validator that keeps the real ones
(Luhn, mod-97, issuer ranges, digit counts, decoding). ``Detector.find`` scans the text's digit
runs once, hands them to the finders of the types enabled (the number-shaped ones only look
inside the runs long enough to hold their value) and keeps, where spans overlap, the longest
(the most specific on a tie).
"""

from __future__ import annotations

import re
from bisect import bisect_right
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence

from tokenrelay.guard import validators
from tokenrelay.guard.entities import (
    CUSTOM_PREFIX,
    DEFAULT_ENTITIES,
    MAX_CHARS,
    Found,
    check_entities,
)

Span = tuple[int, int]
# A run of digits joined by at most two separators (see _DIGIT_RUN): start, end, digit count.
Run = tuple[int, int, int]
Finder = Callable[[str, Sequence[Run]], Iterator[Span]]

_NO_DIGITS = str.maketrans("", "", "0123456789")


def _digit_count(value: str) -> int:
    return len(value) - len(value.translate(_NO_DIGITS))


def _glued(text: str, start: int, also: str) -> bool:
    """Whether the match at ``start`` continues a word, a number or a path (so is part of it).

    Checked here rather than as a look-behind at the pattern's head, which would stop the regex
    engine from skipping ahead to the pattern's first character (three times slower on prose).
    """
    if not start:
        return False
    before = text[start - 1]
    return before in also or (before.isascii() and (before.isalnum() or before == "_"))


# Digits joined by at most two separators: the runs every number-shaped value lies within (a
# card, phone, SSN or IPv4 address is digits joined by one or two of these characters), found
# in one pass and shared by those finders.
_DIGIT_RUN = re.compile(r"(?a)\d(?:[ ().\-\u00a0]{0,2}\d)*")


def digit_runs(text: str) -> list[Run]:
    """The text's digit runs, with their digit counts (0 under four characters: too short for
    any value, and not worth counting)."""
    runs: list[Run] = []
    for match in _DIGIT_RUN.finditer(text):
        start, end = match.span()
        runs.append((start, end, _digit_count(match.group()) if end - start >= 4 else 0))
    return runs


def _in_runs(
    pattern: re.Pattern[str], text: str, runs: Sequence[Run], digits: int
) -> Iterator[re.Match[str]]:
    """``pattern.finditer(text)`` for a pattern whose matches are digits joined by separators
    and hold at least ``digits`` digits: it only runs inside the runs holding as many.

    A match never spans two runs, and its look-ahead reads at most two characters past the run,
    so the matches are exactly those of a pass over the whole text.
    """
    size = len(text)
    for start, end, count in runs:
        if count >= digits:
            yield from pattern.finditer(text, start, min(size, end + 2))


def _words(firsts: str, alternatives: str) -> re.Pattern[str]:
    """Case-insensitive ``alternatives``, behind a look-ahead for their first letters
    (``firsts``): five times faster on text without them, the engine skipping a position
    after one test instead of trying every word there."""
    return re.compile(f"(?=(?i:[{firsts}]))(?i:{alternatives})")


# --- email --------------------------------------------------------------------------------------

_EMAIL = re.compile(
    r"(?<![A-Za-z0-9._%+\-\u00c0-\u024f])"
    r"[A-Za-z0-9_%+\-\u00c0-\u024f]+(?:\.[A-Za-z0-9_%+\-\u00c0-\u024f]+)*"
    r"@(?:[A-Za-z0-9\u00c0-\u024f](?:[A-Za-z0-9\-\u00c0-\u024f]{0,61}[A-Za-z0-9\u00c0-\u024f])?\.)+"
    r"(?:[A-Za-z]{2,24}|xn--[A-Za-z0-9\-]{1,59})"
    r"(?![A-Za-z0-9\-\u00c0-\u024f]|\.[A-Za-z0-9])"
)


_LOCAL_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._%+-")


def _local_start(text: str, at: int) -> int:
    """Where the run of local-part characters (and dots) ending at ``at`` begins."""
    start = at
    while start and (text[start - 1] in _LOCAL_CHARS or "\u00c0" <= text[start - 1] <= "\u024f"):
        start -= 1
    return start


def emails(text: str, runs: Sequence[Run] = ()) -> Iterator[Span]:
    # An address can only start where its '@''s run of local-part characters starts (the
    # pattern's look-behind forbids any later start), so each '@' costs one anchored match
    # instead of a pass of the pattern over the whole text.
    at = text.find("@")
    done = 0
    while at >= 0:
        start = _local_start(text, at)
        if done <= start < at:
            match = _EMAIL.match(text, start)
            if match is not None:
                done = match.end()
                if at - start <= 64:
                    yield match.span()
        at = text.find("@", max(at + 1, done))


# --- phone numbers ------------------------------------------------------------------------------

# Groups of digits joined by one separator (space, dot, dash) or by parentheses: "+44 20 7946
# 0958", "(555) 123-4567", "+49 (0)30 901820", "06 12 34 56 78". Two digit runs never touch, so
# the pattern cannot backtrack over the ways of cutting a long number.
_PHONE = re.compile(
    r"(?a)(?P<plus>\+ ?|(?<!\d)00(?=[1-9]))?"
    r"(?:\(\d{1,5}\)|\d{1,15})"
    r"(?:(?:[ .\-\u00a0] ?|(?<=\))|(?=\())(?:\(\d{1,5}\)|\d{1,15})){0,7}"
    r"(?![\w@]|[.,/\-]\d)"
)
_PHONE_WORDS = _words(
    "tpcmfwsrdhajl電携連で\uff34",
    r"tel\b|tel\.|phone|call|mobile|cell|fax|whatsapp|sms|contact|reach|dial|"
    r"telefon|handy|rufnummer|mobil|anruf|t[ée]l[ée]phone|t[ée]l\.|portable|appel|joindre|"
    r"tel[ée]fono|m[óo]vil|llam|celular|"
    r"電話|携帯|連絡|でんわ|\uff34\uff25\uff2c",
)
_NOT_PHONE_WORDS = _words(
    "iortsnbcfp注請",
    r"isbn|order|invoice|ref|ticket|tracking|serial|sku|id\b|no\.|nr\.|"
    r"bestell|rechnung|commande|facture|pedido|factura|注文|請求",
)
_DATE_SHAPED = re.compile(r"\d{1,4}([./\- ])\d{1,2}\1\d{1,4}")
# ITU country calling codes (E.164), as the one to three leading digits after "+".
_CALLING_CODES = (
    "1 7 20 27 30 31 32 33 34 36 39 40 41 43 44 45 46 47 48 49 51 52 53 54 55 56 57 58 60 61 62 "
    "63 64 65 66 81 82 84 86 90 91 92 93 94 95 98 211 212 213 216 218 220 221 222 223 224 225 "
    "226 227 228 229 230 231 232 233 234 235 236 237 238 239 240 241 242 243 244 245 246 248 249 "
    "250 251 252 253 254 255 256 257 258 260 261 262 263 264 265 266 267 268 269 290 291 297 298 "
    "299 350 351 352 353 354 355 356 357 358 359 370 371 372 373 374 375 376 377 378 379 380 381 "
    "382 383 385 386 387 389 420 421 423 500 501 502 503 504 505 506 507 508 509 590 591 592 593 "
    "594 595 596 597 598 599 670 672 673 674 675 676 677 678 679 680 681 682 683 685 686 687 688 "
    "689 690 691 692 850 852 853 855 856 880 886 960 961 962 963 964 965 966 967 968 970 971 972 "
    "973 974 975 976 977 992 993 994 995 996 998"
)
_COUNTRY_CODES = frozenset(_CALLING_CODES.split())


def _country_code(digits: str) -> bool:
    return any(digits[:size] in _COUNTRY_CODES for size in (1, 2, 3))


def _near(words: re.Pattern[str], text: str, start: int, before: int = 30) -> bool:
    return words.search(text, max(0, start - before), start) is not None


def _isbn(digits: str) -> bool:
    if len(digits) == 10:
        return sum((10 - i) * int(d) for i, d in enumerate(digits)) % 11 == 0
    if len(digits) == 13 and digits[:3] in ("978", "979"):
        return sum(int(d) * (3 if i % 2 else 1) for i, d in enumerate(digits)) % 10 == 0
    return False


# Every character a phone match can hold besides digits (so deleting them leaves the digits).
_PHONE_PUNCTUATION = str.maketrans("", "", "+ ().-\u00a0")
_DIGIT_GROUP = re.compile(r"(?a)\d+")


def _phone_ok(text: str, match: re.Match[str]) -> bool:
    value = match.group()
    if len(value) < 7:
        return False
    digits = value.translate(_PHONE_PUNCTUATION)
    count = len(digits)
    plus = match.group("plus")
    if count < 7 or value.count("(") != value.count(")"):
        return False
    if plus:
        if plus.startswith("00"):
            digits, count = digits[2:], count - 2
        return 8 <= count <= 15 and _country_code(digits)
    if _near(_NOT_PHONE_WORDS, text, match.start(), 20):
        return False
    groups = _DIGIT_GROUP.findall(value)
    if len(groups) == 3 and _DATE_SHAPED.fullmatch(value) and count <= 8:
        return False
    if "-" in value and len(groups) >= 4 and _isbn(digits):
        return False
    shape = tuple(len(group) for group in groups)
    if shape in ((3, 3, 4), (1, 3, 3, 4)) and (shape[0] == 3 or digits[0] == "1"):
        area = groups[-3]
        return area[0] not in "01" and ("(" in value or len(set(_separators(value))) == 1)
    if digits[0] == "0" and digits[1] != "0" and 9 <= count <= 12 and len(groups) >= 2:
        return "." not in value or len(groups) >= 4  # "0.5.12" no; "06.12.34.56.78" yes
    return 7 <= count <= 15 and _near(_PHONE_WORDS, text, match.start(), 30)


def _separators(value: str) -> list[str]:
    return [char for char in value if char in " .-\u00a0"]


def phones(text: str, runs: Sequence[Run]) -> Iterator[Span]:
    # A phone number has seven digits or more: the full pattern only runs around the runs that
    # do (most numbers in a text are short).
    done = 0
    for start, end, count in runs:
        if count < 7 or end <= done:
            continue
        window = max(done, start - 4)
        for match in _PHONE.finditer(text, window, min(len(text), end + 2)):
            if match.end() < end and match.end() - match.start() < 7:
                continue
            if not _glued(text, match.start(), "+.,/:@#=$€£¥-") and _phone_ok(text, match):
                yield match.span()
                done = match.end()


# --- payment cards ------------------------------------------------------------------------------

_CARD = re.compile(r"(?a)\d(?:[ \-]?\d){11,18}(?![\w]|[.,/\-]\d)")


def cards(text: str, runs: Sequence[Run]) -> Iterator[Span]:
    for match in _in_runs(_CARD, text, runs, 12):
        if _glued(text, match.start(), ".,/+-"):
            continue
        value = match.group()
        if " " in value and "-" in value:
            continue
        digits = value.replace(" ", "").replace("-", "")
        if validators.card_number(digits):
            yield match.span()


# --- IBAN ---------------------------------------------------------------------------------------

_CAPITALS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZ")
_IBAN = re.compile(r"(?<![A-Za-z0-9])[A-Z]{2}[0-9]{2}(?: ?[A-Z0-9]{4}){2,7}(?: ?[A-Z0-9]{1,4})?")


def _iban_matches(text: str, runs: Sequence[Run]) -> Iterator[re.Match[str]]:
    """The pattern's matches, tried only where a digit run follows two capital letters (the
    check digits): the one place an IBAN can start."""
    done = 0
    for start, _, _ in runs:
        if start < 2 or start - 2 < done or not _CAPITALS.issuperset(text[start - 2 : start]):
            continue
        match = _IBAN.match(text, start - 2)
        if match is not None:
            done = match.end()
            yield match


def ibans(text: str, runs: Sequence[Run]) -> Iterator[Span]:
    for match in _iban_matches(text, runs):
        value = match.group()
        expected = validators.IBAN_LENGTHS.get(value[:2])
        if expected is None:
            continue
        # Walk the match until the country's length is reached (a word may follow the number).
        seen = end = 0
        for index, char in enumerate(value):
            if char != " ":
                seen += 1
                if seen == expected:
                    end = index + 1
                    break
        if not end or (end < len(value) and value[end] != " "):
            continue
        if validators.iban(value[:end].replace(" ", "")):
            yield match.start(), match.start() + end


# --- IP addresses -------------------------------------------------------------------------------

_IPV4 = re.compile(r"(?a)(?:\d{1,3}\.){3}\d{1,3}(?![\w]|\.\d|-[A-Za-z0-9])")
_IPV6 = re.compile(
    r"(?a)(?<![\w:.])(?:[0-9A-Fa-f]{0,4}:){2,7}(?:[0-9A-Fa-f]{1,4}|(?:\d{1,3}\.){3}\d{1,3})?"
    r"(?![\w:])"
)
_IPV6_HINT = re.compile(r":[0-9A-Fa-f]{0,4}:")
_VERSION_WORDS = _words(
    "vrbfupnjcバ",
    r"version|ver\.|release|build|firmware|update|upgrade|python|node|java|chrome|"
    r"versi[óo]n|versio|バージョン",
)
_IP_WORDS = _words("iahsdア", r"\bip\b|ipv4|address|addr|host|server|adresse|direcci[óo]n|アドレス")


def ips(text: str, runs: Sequence[Run]) -> Iterator[Span]:
    if runs:
        for match in _in_runs(_IPV4, text, runs, 4):
            start = match.start()
            if _glued(text, start, ".") or (start and text[start - 1] in "vV"):
                continue
            if _near(_VERSION_WORDS, text, start, 25):
                continue
            value = match.group()
            if value[0] == "0" or not validators.public_ip(value):
                continue
            single_digits = all(len(part) == 1 for part in value.split("."))
            if single_digits and not _near(_IP_WORDS, text, start, 40):
                continue  # 1.2.3.4 is more often a version than an address
            yield match.span()
    # Every match holds two colons with at most four hex digits between them.
    if ":" in text and _IPV6_HINT.search(text) is not None:
        for match in _IPV6.finditer(text):
            value = match.group()
            if value.count(":") < 2 or sum(c.isalnum() for c in value) < 3:
                continue
            if validators.public_ip(value):
                yield match.span()


# --- API keys and tokens ------------------------------------------------------------------------

_API_KEY = re.compile(
    r"(?<![A-Za-z0-9_\-])(?:"
    r"sk-(?:ant-|proj-|svcacct-|admin-)?[A-Za-z0-9_\-]{20,240}"
    r"|gh[pousr]_[A-Za-z0-9]{30,240}"
    r"|github_pat_[A-Za-z0-9_]{22,240}"
    r"|xox[abposr]-[A-Za-z0-9\-]{10,240}"
    r"|AIza[0-9A-Za-z_\-]{35}"
    r"|glpat-[A-Za-z0-9_\-]{20,240}"
    r"|hf_[A-Za-z0-9]{30,240}"
    r"|trk_[A-Za-z0-9]{40}"
    r"|(?:sk|rk)_(?:live|test)_[A-Za-z0-9]{16,240}"
    r")(?![A-Za-z0-9_\-])"
)
_BEARER = re.compile(r"(?i:bearer)\s+([A-Za-z0-9._~+/\-]{20,250}=*)(?![A-Za-z0-9._~+/=\-])")


_DASH_PREFIXES = ("sk-", "xox", "glpat-")
_UNDERSCORE_PREFIXES = (
    "ghp_",
    "gho_",
    "ghu_",
    "ghs_",
    "ghr_",
    "github_pat_",
    "hf_",
    "trk_",
    "k_live_",
    "k_test_",
)


def _may_hold_key(text: str) -> bool:
    """Whether one of the keys' prefixes is in ``text`` (each prefix has a '-', a '_' or is
    ``AIza``: single characters are found far faster than strings)."""
    return (
        ("-" in text and any(prefix in text for prefix in _DASH_PREFIXES))
        or ("_" in text and any(prefix in text for prefix in _UNDERSCORE_PREFIXES))
        or "AIza" in text
    )


def api_keys(text: str, runs: Sequence[Run] = ()) -> Iterator[Span]:
    if _may_hold_key(text):
        for match in _API_KEY.finditer(text):
            if validators.mixed_characters(match.group()[3:]):
                yield match.span()
    if "earer" in text or "EARER" in text:
        for match in _BEARER.finditer(text):
            if validators.mixed_characters(match.group(1)):
                yield match.span(1)


# --- JWT ----------------------------------------------------------------------------------------

_JWT = re.compile(
    r"(?<![A-Za-z0-9_\-])(eyJ[A-Za-z0-9_\-]{8,1000})\.[A-Za-z0-9_\-]{2,2500}\.[A-Za-z0-9_\-]{0,590}"
    r"(?![A-Za-z0-9_\-])"
)


def jwts(text: str, runs: Sequence[Run] = ()) -> Iterator[Span]:
    if "eyJ" not in text:
        return
    for match in _JWT.finditer(text):
        if validators.jwt_header(match.group(1)):
            yield match.span()


# --- AWS keys -----------------------------------------------------------------------------------

_AWS_KEY_ID = re.compile(
    r"(?<![A-Za-z0-9])(?:A(?:KIA|SIA|BIA|CCA|IDA|ROA|IPA|NPA|NVA|GPA))[A-Z0-9]{16}"
    r"(?![A-Za-z0-9])"
)
_AWS_SECRET = re.compile(r"(?<![A-Za-z0-9/+])[A-Za-z0-9/+]{40}(?![A-Za-z0-9/+=])")
_AWS_SECRET_LABEL = _words("sa", r"secret.?access.?key|aws.{0,20}secret|secret.?key")


# A literal head ("A") lets the regex engine skip ahead: far faster than ten substring tests.
_AWS_ID_PREFIX = re.compile(r"A(?:KIA|SIA|BIA|CCA|IDA|ROA|IPA|NPA|NVA|GPA)")


def aws_keys(text: str, runs: Sequence[Run] = ()) -> Iterator[Span]:
    ids: list[Span] = []
    if _AWS_ID_PREFIX.search(text) is not None:
        ids = [match.span() for match in _AWS_KEY_ID.finditer(text)]
        yield from ids
    if not ids and "ecret" not in text and "ECRET" not in text:
        return
    for match in _AWS_SECRET.finditer(text):
        start, end = match.span()
        secret = match.group()
        if not (validators.mixed_characters(secret) and secret.lower() != secret != secret.upper()):
            continue
        near_id = any(abs(start - id_start) < 300 for id_start, _ in ids)
        if near_id or _near(_AWS_SECRET_LABEL, text, start, 60):
            yield start, end


# --- US social security numbers -----------------------------------------------------------------

_SSN = re.compile(r"(?a)(\d{3})([- ]?)(\d{2})\2(\d{4})(?![\w]|[.,/\-]\d)")
_SSN_WORDS = _words("st", r"ssn|social security|soc\.? ?sec|tax ?id|\bss#")


def us_ssns(text: str, runs: Sequence[Run]) -> Iterator[Span]:
    for match in _in_runs(_SSN, text, runs, 9):
        if _glued(text, match.start(), ".,/+-"):
            continue
        area, separator, group, serial = match.groups()
        if not validators.us_ssn(area, group, serial):
            continue
        if separator == "-" or _near(_SSN_WORDS, text, match.start(), 40):
            yield match.span()


# --- the detector -------------------------------------------------------------------------------

# The types whose values may hold spaces, and every character such a value is made of.
_SPACED_ENTITIES = frozenset({"phone", "card", "iban", "us_ssn"})
_NUMBER_CHARS = frozenset("0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ +().-\u00a0")
# The finders that look for their values inside the digit runs.
_RUN_ENTITIES = frozenset({"phone", "card", "iban", "us_ssn", "ip"})
FINDERS: dict[str, Finder] = {
    "jwt": jwts,
    "aws_key": aws_keys,
    "api_key": api_keys,
    "card": cards,
    "iban": ibans,
    "email": emails,
    "us_ssn": us_ssns,
    "ip": ips,
    "phone": phones,
}
# On a tie in length, the more specific finding wins: the order of FINDERS, custom last.
_RANK = {entity: rank for rank, entity in enumerate(FINDERS)}
_CUSTOM_NAME = re.compile(r"[A-Za-z0-9_\-]{1,40}")


def compile_custom(custom: Mapping[str, str]) -> dict[str, re.Pattern[str]]:
    """The operator's patterns, compiled once; a bad name or pattern is a ValueError naming it."""
    compiled: dict[str, re.Pattern[str]] = {}
    for name, pattern in custom.items():
        if not _CUSTOM_NAME.fullmatch(name):
            raise ValueError(
                f"custom PII pattern name {name!r}: use 1 to 40 letters, digits, '_' or '-'"
            )
        try:
            regex = re.compile(pattern)
        except re.error as exc:
            raise ValueError(f"custom PII pattern {name!r} is not a valid regex: {exc}") from None
        if regex.fullmatch("") is not None:
            raise ValueError(f"custom PII pattern {name!r} matches the empty string")
        compiled[name] = regex
    return compiled


def _pattern_width(regex: re.Pattern[str]) -> int | None:
    """The longest text ``regex`` can match, or None when it is unbounded (or unknown)."""
    try:
        from re import _parser  # type: ignore[attr-defined]

        widest = int(_parser.parse(regex.pattern, regex.flags).getwidth()[1])
    except Exception:  # a private module: if it changes, say "unbounded", the safe answer
        return None
    return None if widest >= _parser.MAXREPEAT - 1 else widest


class Detector:
    """Finds personal data and secrets of the enabled types (and custom patterns) in a text."""

    def __init__(
        self,
        entities: Iterable[str] = DEFAULT_ENTITIES,
        custom: Mapping[str, str] = {},  # read only
    ) -> None:
        self.entities = check_entities(entities)
        self.custom = compile_custom(custom)
        self._finders = [(entity, FINDERS[entity]) for entity in FINDERS if entity in self.entities]
        self._reads_runs = any(entity in _RUN_ENTITIES for entity, _ in self._finders)
        # For ``pending``: the longest value with spaces, the longest without, custom widths.
        enabled = [entity for entity, _ in self._finders]
        self._spaced = max((MAX_CHARS[e] for e in enabled if e in _SPACED_ENTITIES), default=0)
        self._unspaced = max(
            (MAX_CHARS[e] for e in enabled if e not in _SPACED_ENTITIES), default=0
        )
        self._custom_widths = [_pattern_width(regex) or 0 for regex in self.custom.values()]

    @property
    def max_match_chars(self) -> int | None:
        """The longest value any enabled type can match (None if a custom pattern is unbounded)."""
        widths = [MAX_CHARS[entity] for entity, _ in self._finders]
        for regex in self.custom.values():
            width = _pattern_width(regex)
            if width is None:
                return None
            widths.append(width)
        return max(widths, default=0)

    def pending(self, text: str) -> int:
        """The earliest index of ``text`` where a value may start that more text could still
        complete: an output guard holds back only from there (not a whole ``max_match_chars``).

        A value of the space-free types (addresses, keys, tokens) lies inside the last run of
        non-blank characters; a number-shaped one (phone, card, IBAN, SSN, with spaces) inside the
        last run of digits, capitals, spaces and ``+().-``; a custom pattern anywhere in its width.
        """
        size = len(text)
        earliest = size
        if self._spaced:
            floor = max(0, size - self._spaced + 1)
            at = size
            while at > floor and text[at - 1] in _NUMBER_CHARS:
                at -= 1
            earliest = at
        if self._unspaced:
            floor = max(0, size - self._unspaced + 1)
            blank = max(text.rfind(" "), text.rfind("\n"), text.rfind("\t"), text.rfind("\r"))
            earliest = min(earliest, max(blank + 1, floor))
        for width in self._custom_widths:
            earliest = min(earliest, size - width + 1 if width else 0)
        return max(earliest, 0)

    def find(self, text: str) -> list[Found]:
        """Every value found, sorted by position, without overlaps (the longest span wins)."""
        candidates: list[tuple[int, int, int, str]] = []
        runs = digit_runs(text) if self._reads_runs else []
        for entity, finder in self._finders:
            rank = _RANK[entity]
            limit = MAX_CHARS[entity]
            for start, end in finder(text, runs):
                if end - start <= limit:
                    candidates.append((start, end, rank, entity))
        for name, regex in self.custom.items():
            entity = CUSTOM_PREFIX + name
            for match in regex.finditer(text):
                if match.end() > match.start():
                    candidates.append((match.start(), match.end(), len(_RANK), entity))
        if not candidates:
            return []
        return _without_overlaps(candidates)


def _without_overlaps(candidates: list[tuple[int, int, int, str]]) -> list[Found]:
    """Keep the longest candidates first (the lowest rank on a tie), dropping any that overlap."""
    candidates.sort(key=lambda item: (item[0] - item[1], item[2], item[0]))
    # The spans kept are disjoint, so sorted by start they are sorted by end too: one bisection
    # finds the only one a candidate could overlap.
    kept: list[Found] = []
    ends: list[int] = []
    for start, end, _, entity in candidates:
        index = bisect_right(ends, start)
        if index < len(kept) and kept[index].start < end:
            continue
        kept.insert(index, Found(start, end, entity))
        ends.insert(index, end)
    return kept

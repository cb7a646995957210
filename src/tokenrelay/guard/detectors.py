"""The built-in detectors: patterns plus checksums, run over a text in a few precompiled passes.

Each entity type has one finder: a regular expression that proposes candidates (skipped at once
when a cheap test shows the text cannot hold one) and a validator that keeps the real ones
(Luhn, mod-97, issuer ranges, digit counts, decoding). ``Detector.find`` runs the finders of the
types enabled and keeps, where spans overlap, the longest (the most specific on a tie).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator, Mapping

from tokenrelay.guard import validators
from tokenrelay.guard.entities import (
    CUSTOM_PREFIX,
    DEFAULT_ENTITIES,
    MAX_CHARS,
    Found,
    check_entities,
)

Span = tuple[int, int]
Finder = Callable[[str], Iterator[Span]]

_DIGIT = re.compile(r"\d")

# --- email --------------------------------------------------------------------------------------

_EMAIL = re.compile(
    r"(?<![A-Za-z0-9._%+\-\u00c0-\u024f])"
    r"[A-Za-z0-9_%+\-\u00c0-\u024f]+(?:\.[A-Za-z0-9_%+\-\u00c0-\u024f]+)*"
    r"@(?:[A-Za-z0-9\u00c0-\u024f](?:[A-Za-z0-9\-\u00c0-\u024f]{0,61}[A-Za-z0-9\u00c0-\u024f])?\.)+"
    r"(?:[A-Za-z]{2,24}|xn--[A-Za-z0-9\-]{1,59})"
    r"(?![A-Za-z0-9\-\u00c0-\u024f]|\.[A-Za-z0-9])"
)


def emails(text: str) -> Iterator[Span]:
    if "@" not in text:
        return
    for match in _EMAIL.finditer(text):
        local = match.group().partition("@")[0]
        if len(local) <= 64:
            yield match.span()


# --- phone numbers ------------------------------------------------------------------------------

# Groups of digits joined by one separator (space, dot, dash) or by parentheses: "+44 20 7946
# 0958", "(555) 123-4567", "+49 (0)30 901820", "06 12 34 56 78". Two digit runs never touch, so
# the pattern cannot backtrack over the ways of cutting a long number.
_PHONE = re.compile(
    r"(?<![\w+.,/:@#=$€£¥-])"
    r"(?P<plus>\+ ?|(?<!\d)00(?=[1-9]))?"
    r"(?:\(\d{1,5}\)|\d{1,15})"
    r"(?:(?:[ .\-\u00a0] ?|(?<=\))|(?=\())(?:\(\d{1,5}\)|\d{1,15})){0,7}"
    r"(?![\w@]|[.,/\-]\d)"
)
_PHONE_WORDS = re.compile(
    r"(?i:tel\b|tel\.|phone|call|mobile|cell|fax|whatsapp|sms|contact|reach|dial|"
    r"telefon|handy|rufnummer|mobil|anruf|t[ée]l[ée]phone|t[ée]l\.|portable|appel|joindre|"
    r"tel[ée]fono|m[óo]vil|llam|celular|numéro|número|nummer|"
    r"電話|携帯|連絡|でんわ|\uff34\uff25\uff2c)"
)
_NOT_PHONE_WORDS = re.compile(
    r"(?i:isbn|order|invoice|ref|ticket|tracking|serial|sku|id\b|no\.|nr\.|"
    r"bestell|rechnung|commande|facture|pedido|factura|注文|請求)"
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


def _phone_ok(text: str, match: re.Match[str]) -> bool:
    value = match.group()
    digits = "".join(char for char in value if char.isdigit())
    count = len(digits)
    plus = match.group("plus")
    if value.count("(") != value.count(")"):
        return False
    if plus:
        if plus.startswith("00"):
            digits, count = digits[2:], count - 2
        return 8 <= count <= 15 and _country_code(digits)
    if _near(_NOT_PHONE_WORDS, text, match.start(), 20):
        return False
    groups = re.findall(r"\d+", value)
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


def phones(text: str) -> Iterator[Span]:
    for match in _PHONE.finditer(text):
        if _phone_ok(text, match):
            yield match.span()


# --- payment cards ------------------------------------------------------------------------------

_CARD = re.compile(r"(?<![\w.,/+-])\d(?:[ \-]?\d){11,18}(?![\w]|[.,/\-]\d)")


def cards(text: str) -> Iterator[Span]:
    for match in _CARD.finditer(text):
        value = match.group()
        if " " in value and "-" in value:
            continue
        digits = value.replace(" ", "").replace("-", "")
        if validators.card_number(digits):
            yield match.span()


# --- IBAN ---------------------------------------------------------------------------------------

_IBAN = re.compile(r"(?<![A-Za-z0-9])[A-Z]{2}\d{2}(?: ?[A-Z0-9]{4}){2,7}(?: ?[A-Z0-9]{1,4})?")


def ibans(text: str) -> Iterator[Span]:
    for match in _IBAN.finditer(text):
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

_IPV4 = re.compile(r"(?<![\w.])(?:\d{1,3}\.){3}\d{1,3}(?![\w]|\.\d|-[A-Za-z0-9])")
_IPV6 = re.compile(
    r"(?<![\w:.])(?:[0-9A-Fa-f]{0,4}:){2,7}(?:[0-9A-Fa-f]{1,4}|(?:\d{1,3}\.){3}\d{1,3})?"
    r"(?![\w:])"
)
_VERSION_WORDS = re.compile(
    r"(?i:version|ver\.|release|build|firmware|update|upgrade|python|node|java|chrome|"
    r"versi[óo]n|versio|バージョン)"
)
_IP_WORDS = re.compile(r"(?i:\bip\b|ipv4|address|addr|host|server|adresse|direcci[óo]n|アドレス)")


def ips(text: str) -> Iterator[Span]:
    if _DIGIT.search(text) is not None:
        for match in _IPV4.finditer(text):
            start = match.start()
            if start and text[start - 1] in "vV":
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
    if "::" in text or text.count(":") >= 7:
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


def api_keys(text: str) -> Iterator[Span]:
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


def jwts(text: str) -> Iterator[Span]:
    if "eyJ" not in text:
        return
    for match in _JWT.finditer(text):
        if validators.jwt_header(match.group(1)):
            yield match.span()


# --- AWS keys -----------------------------------------------------------------------------------

_AWS_KEY_ID = re.compile(
    r"(?<![A-Za-z0-9])(?:AKIA|ASIA|ABIA|ACCA|AIDA|AROA|AIPA|ANPA|ANVA|AGPA)[A-Z0-9]{16}"
    r"(?![A-Za-z0-9])"
)
_AWS_SECRET = re.compile(r"(?<![A-Za-z0-9/+=])[A-Za-z0-9/+]{40}(?![A-Za-z0-9/+=])")
_AWS_SECRET_LABEL = re.compile(r"(?i:secret.?access.?key|aws.{0,20}secret|secret.?key)")


def aws_keys(text: str) -> Iterator[Span]:
    ids = [match.span() for match in _AWS_KEY_ID.finditer(text)]
    yield from ids
    label = _AWS_SECRET_LABEL.search(text)
    if not ids and label is None:
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

_SSN = re.compile(r"(?<![\w.,/+-])(\d{3})([- ]?)(\d{2})\2(\d{4})(?![\w]|[.,/\-]\d)")
_SSN_WORDS = re.compile(r"(?i:ssn|social security|soc\.? ?sec|tax ?id|\bss#)")


def us_ssns(text: str) -> Iterator[Span]:
    for match in _SSN.finditer(text):
        area, separator, group, serial = match.groups()
        if not validators.us_ssn(area, group, serial):
            continue
        if separator == "-" or _near(_SSN_WORDS, text, match.start(), 40):
            yield match.span()


# --- the detector -------------------------------------------------------------------------------

_DIGIT_ENTITIES = frozenset({"phone", "card", "iban", "us_ssn"})
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
        self._digit_finders = [item for item in self._finders if item[0] in _DIGIT_ENTITIES]
        self._other_finders = [item for item in self._finders if item[0] not in _DIGIT_ENTITIES]

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

    def find(self, text: str) -> list[Found]:
        """Every value found, sorted by position, without overlaps (the longest span wins)."""
        candidates: list[tuple[int, int, int, str]] = []
        finders = self._other_finders
        if _DIGIT.search(text) is not None:
            finders = self._finders
        for entity, finder in finders:
            rank = _RANK[entity]
            limit = MAX_CHARS[entity]
            for start, end in finder(text):
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
    kept: list[Found] = []
    for start, end, _, entity in candidates:
        if all(end <= other.start or start >= other.end for other in kept):
            kept.append(Found(start, end, entity))
    kept.sort()
    return kept

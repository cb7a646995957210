"""The audit log: one JSON line per request, to stdout or a file, for whoever must answer "who
asked what, when, and what did it cost" after the fact.

A line holds the request id, the caller (as the gate established it, the client IP as trusted),
the route, every upstream attempt (provider, model, outcome, milliseconds), the status, time to
first token, duration, tokens, cost, the screen's verdict and the prompt's length. Never the
prompt or the answer: only, when ``prefix_chars`` allows, its first characters with e-mail
addresses, phone numbers and card numbers masked, and a keyed hash of the whole prompt.

The hash is HMAC-SHA256 under a server secret, not a bare SHA-256: anyone holding the log could
hash a dictionary of likely prompts and match a bare digest, but not without the secret. The same
prompt under the same secret gives the same hash, so repeats can be correlated.

Masking runs on the prompt's head before it is cut to length: an address cut in two would no
longer look like one and half of it would leak. Lines are written by a thread of their own, so a
slow disk or a blocked pipe never stalls the event loop; a full queue drops lines and counts them.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import re
import secrets
import sys
import threading
import time
import unicodedata
from collections import deque
from collections.abc import Callable
from typing import IO, TYPE_CHECKING, Annotated

import msgspec

from tokenrelay.metering.units import iso_time, usd

if TYPE_CHECKING:
    from tokenrelay.model import Request
    from tokenrelay.records import StreamRecord

log = logging.getLogger("tokenrelay.audit")

# Text after the prefix that is masked too, so a PII item straddling the cut is seen whole
# (an e-mail address is at most 254 characters long).
MASK_MARGIN = 256
MIN_SECRET_CHARS = 16
STRONG_SECRET_BYTES = 32  # what the example env file asks for: 32 random characters
# The example env file's placeholder (deploy/tokenrelay.env.example), and the word any
# placeholder of ours contains.
PLACEHOLDER_SECRET = "CHANGE-ME-to-32-random-characters"
_PLACEHOLDER_WORD = "change-me"


class AuditSettings(msgspec.Struct, kw_only=True, forbid_unknown_fields=True, frozen=True):
    """``destination``: ``"stdout"`` or a file path (appended to; rotate with copytruncate).
    ``prefix_chars``: how much of the prompt's start to keep, masked; 0 keeps none. ``secret``:
    the HMAC key of the prompt hash (``TOKENRELAY_AUDIT__SECRET``); unset, a random one per
    process, so hashes correlate only within one process's lifetime."""

    enabled: bool = True
    destination: str = "stdout"
    prefix_chars: Annotated[int, msgspec.Meta(ge=0, le=1000)] = 50
    secret: str | None = None
    queue_size: Annotated[int, msgspec.Meta(ge=1)] = 10_000  # lines waiting to be written
    # A placeholder or short secret is logged loudly at start; with this on, it stops the start.
    require_strong_secret: bool = False

    def __post_init__(self) -> None:
        if self.secret is not None and len(self.secret) < MIN_SECRET_CHARS:
            # A short key can be brute-forced from one known prompt and its hash.
            raise ValueError(f"audit.secret must be at least {MIN_SECRET_CHARS} characters long")
        problem = self.weak_secret()
        if problem is not None and self.require_strong_secret:
            raise ValueError(problem)
        if not self.destination.strip():
            raise ValueError('audit.destination must be "stdout" or a file path')

    def weak_secret(self) -> str | None:
        """Why the configured secret should not be trusted, or None. A placeholder copied from
        the example env file is public: anyone can key a dictionary of prompts with it."""
        secret = self.secret
        if secret is None:
            return None
        if secret == PLACEHOLDER_SECRET or _PLACEHOLDER_WORD in secret.lower():
            return (
                "audit.secret is the example file's placeholder, which is public: prompt hashes "
                "made with it can be matched by anyone; set TOKENRELAY_AUDIT__SECRET to 32 "
                "random characters (python -c 'import secrets; print(secrets.token_urlsafe(32))')"
            )
        if len(secret.encode()) < STRONG_SECRET_BYTES:
            return (
                f"audit.secret is {len(secret.encode())} bytes; use at least "
                f"{STRONG_SECRET_BYTES} random bytes (python -c 'import secrets; "
                "print(secrets.token_urlsafe(32))')"
            )
        return None


# --- masking -------------------------------------------------------------------------------------

# Each character of a masked item is replaced by its private-use mark, so positions stay those
# of the original text: the prefix is cut at the prompt's own n-th character, and an item cut
# there still becomes its whole placeholder. Marks the client sent are neutralized first.
_EMAIL_MARK, _CARD_MARK, _PHONE_MARK = "\ue000", "\ue001", "\ue002"
_KEY_MARK, _IBAN_MARK = "\ue003", "\ue004"
_MARKS = (_EMAIL_MARK, _CARD_MARK, _PHONE_MARK, _KEY_MARK, _IBAN_MARK)
_NEUTRAL = str.maketrans(dict.fromkeys(map(ord, _MARKS), "\ufffd"))
_RUNS = re.compile("|".join(f"{mark}+" for mark in _MARKS))
_PLACEHOLDERS = {
    _EMAIL_MARK: "[email]",
    _CARD_MARK: "[card]",
    _PHONE_MARK: "[phone]",
    _KEY_MARK: "[key]",
    _IBAN_MARK: "[iban]",
}

# The look-behinds make a match start only where a run starts: linear time on long runs.
_EMAIL = re.compile(r"(?<![\w.!#$%&'*+/=?^`{|}~-])[\w.!#$%&'*+/=?^`{|}~-]++@[\w-]+(?:\.[\w-]+)+")
# API keys: OpenAI's (sk-, sk-proj-), Anthropic's (sk-ant-), ours (trk_), and the usual
# secret-key prefixes of payment and platform APIs.
_KEY = re.compile(
    r"(?<![\w-])(?:sk-(?:ant-|proj-)?|sk_(?:live|test)_|rk_(?:live|test)_|trk_)[\w-]{12,}"
)
# IBAN: country, check digits, 11 to 30 letters or digits, maybe in groups of four; the
# checksum (mod 97) decides, so a product code of the same shape stays.
_IBAN = re.compile(r"(?<![\w])[A-Z]{2}\d{2}(?: ?[A-Z0-9]{1,4}){3,8}(?![\w])")
_CARD = re.compile(r"(?<![\d])(?:\d[ -]?){12,18}\d(?!\d)")
_PHONE = re.compile(r"(?<![\w+])(?:\+|\()?\d[\d ().-]{5,30}\d(?!\w)")
_DIGIT = re.compile(r"\d")  # what IBANs, cards and phones all need at least one of
_NOT_PHONE = re.compile(
    r"\d{4}[-./]\d{1,2}[-./]\d{1,2}"  # 2026-11-05
    r"|\d{1,2}[-./]\d{1,2}[-./]\d{2,4}"  # 05.11.2026
    r"|\d+\.\d+"  # 3.14159265
    r"|\d{1,3}(?:\.\d{1,3}){3}"  # an IPv4 address
)


def luhn_valid(digits: str) -> bool:
    """The card-number checksum: masks card numbers, not every long number."""
    total = 0
    for index, char in enumerate(reversed(digits)):
        value = int(char)
        if index % 2:
            value = value * 2 - 9 if value > 4 else value * 2
        total += value
    return total % 10 == 0


def _email(match: re.Match[str]) -> str:
    return _EMAIL_MARK * len(match.group())


def _key(match: re.Match[str]) -> str:
    return _KEY_MARK * len(match.group())


def iban_valid(text: str) -> bool:
    """ISO 13616's check: the country and check digits moved to the end, letters as numbers
    (A = 10), the whole mod 97 is 1."""
    compact = text.replace(" ", "").upper()
    if not 15 <= len(compact) <= 34:
        return False
    rearranged = compact[4:] + compact[:4]
    return int("".join(str(int(char, 36)) for char in rearranged)) % 97 == 1


def _iban(match: re.Match[str]) -> str:
    """The longest valid IBAN the match starts with (a word in capitals may follow one)."""
    text = match.group()
    end = len(text)
    while end >= 15:
        if iban_valid(text[:end]):
            return _IBAN_MARK * end + text[end:]
        end = text.rfind(" ", 0, end)
    return text


def _card(match: re.Match[str]) -> str:
    text = match.group()
    return _CARD_MARK * len(text) if luhn_valid(re.sub(r"\D", "", text)) else text


def _phone(match: re.Match[str]) -> str:
    text = match.group()
    digits = sum(char.isdigit() for char in text)
    if not 7 <= digits <= 15 or _NOT_PHONE.fullmatch(text.strip("()")):
        return text
    return _PHONE_MARK * len(text)


def _marks(text: str) -> str:
    """The matchers, on text already normalized: every masked character becomes its item's
    mark (same length). A matcher whose item cannot be in the text is not run (each regex
    pass costs ~2 µs even when nothing matches): an e-mail address needs an ``@``, every key
    prefix ends in ``k-`` or ``k_``, IBANs, cards and phones need a digit (the same ``\\d``)."""
    if "@" in text:
        text = _EMAIL.sub(_email, text)
    if "k-" in text or "k_" in text:
        text = _KEY.sub(_key, text)
    if _DIGIT.search(text) is None:
        return text
    text = _IBAN.sub(_iban, text)  # before cards and phones: it holds runs of digits
    text = _CARD.sub(_card, text)  # before phones: a card number has the digits of one
    return _PHONE.sub(_phone, text)


def _normalized(text: str) -> tuple[str, list[int]]:
    """``text`` as the matchers should see it, and for each of its characters the index of
    the original character it came from: NFKC per character (the fullwidth at sign U+FF20 is
    an @, fullwidth digits are digits), format characters (soft hyphens, zero-width spaces
    and joiners, word joiners, byte-order marks, bidi controls) left out: they hide an item
    from a pattern but not from a reader."""
    chars: list[str] = []
    origin: list[int] = []
    for index, char in enumerate(text):
        if char.isascii():
            chars.append(char)
            origin.append(index)
        elif unicodedata.category(char) != "Cf":
            for part in unicodedata.normalize("NFKC", char):
                chars.append(part)
                origin.append(index)
    return "".join(chars), origin


def _marked(text: str) -> str:
    """``text`` with every masked character replaced by its item's mark (same length). Items
    are found in the normalized text and marked over their original span, hidden characters
    inside included."""
    if text.isascii():  # no marks to neutralize, nothing to normalize
        return _marks(text)
    text = text.translate(_NEUTRAL)
    normalized, origin = _normalized(text)
    found = _marks(normalized)
    if found == normalized:
        return text
    out = list(text)
    for run in _RUNS.finditer(found):
        start, end = origin[run.start()], origin[run.end() - 1] + 1
        out[start:end] = run.group()[0] * (end - start)
    return "".join(out)


def _placeholders(marked: str) -> str:
    if marked.isascii():  # the marks are private-use characters: nothing was masked
        return marked
    return _RUNS.sub(lambda run: _PLACEHOLDERS[run.group()[0]], marked)


def mask(text: str) -> str:
    """``text`` with e-mail addresses, API keys (``sk-...``, ``sk-ant-...``, ``trk_...``),
    IBANs (checksum-checked), card numbers (Luhn-checked, 13 to 19 digits, spaces or hyphens
    allowed) and phone numbers (7 to 15 digits, not dates or decimals) replaced by
    ``[email]``, ``[key]``, ``[iban]``, ``[card]`` and ``[phone]``, also when written with
    fullwidth or hidden characters."""
    return _placeholders(_marked(text))


def masked_prefix(text: str, chars: int) -> str:
    """The first ``chars`` characters of ``text``, masked before the cut: an item the cut
    falls inside is masked whole, by its placeholder."""
    return _placeholders(_marked(text[: chars + MASK_MARGIN])[:chars])


# --- the line ------------------------------------------------------------------------------------


class PromptInfo(msgspec.Struct, frozen=True, omit_defaults=True):
    """What the audit keeps of a prompt: its length, its keyed hash, maybe a masked prefix."""

    chars: int
    hmac: str  # HMAC-SHA256(secret, prompt), hex
    prefix: str | None = None  # omitted when prefix_chars is 0


class _Identity(msgspec.Struct, omit_defaults=True):
    kind: str
    user: str | None = None
    org: str | None = None
    key_id: str | None = None


class _Attempt(msgspec.Struct):
    provider: str
    model: str
    outcome: str
    status: int
    ms: float


class _Tokens(msgspec.Struct):
    input: int | None
    output: int | None
    cache_read: int | None
    cache_write: int | None
    reasoning: int | None


class _Screening(msgspec.Struct):
    score: float
    injection: bool
    rules: tuple[str, ...]
    classifier: str | None


class AuditLine(msgspec.Struct):
    """The schema of one line (every field present, ``null`` when unknown)."""

    time: str  # when the request ended, UTC, ISO 8601 with milliseconds
    request_id: str
    dialect: str
    route: str
    outcome: str
    status: int
    error_type: str | None
    client_ip: str | None
    identity: _Identity | None
    attempts: list[_Attempt]
    provider: str | None
    model: str | None
    ttft_ms: float | None
    duration_ms: float
    tokens: _Tokens
    cost_usd: str | None  # exact decimal string; null when the model has no known price
    screening: _Screening | None
    prompt: PromptInfo | None
    dropped_tools: list[str] = msgspec.field(default_factory=list)  # route hosted_tools = "drop"
    # The route's guard: entity type -> values masked (or found when refused), output rule ->
    # matches, and the rule that ended the answer. Never the values.
    guard: dict[str, int] = msgspec.field(default_factory=dict)
    guard_output: dict[str, int] = msgspec.field(default_factory=dict)
    guard_blocked: str | None = None


_encoder = msgspec.json.Encoder()


def fingerprint(text: str, secret: bytes, prefix_chars: int) -> PromptInfo:
    """A prompt as the audit may keep it."""
    return _fingerprint(text, hmac.new(secret, digestmod=hashlib.sha256), prefix_chars)


def _fingerprint(text: str, keyed: hmac.HMAC, prefix_chars: int) -> PromptInfo:
    """``fingerprint`` from an HMAC already keyed with the secret (not updated): a copy of its
    state costs less than keying a new one per request (OpenSSL 3 looks the digest up anew
    each time, and that lookup is most of an HMAC of a short prompt)."""
    mac = keyed.copy()
    mac.update(text.encode("utf-8", "surrogatepass"))
    prefix = masked_prefix(text, prefix_chars) if prefix_chars > 0 else None
    return PromptInfo(len(text), mac.hexdigest(), prefix)


def prompt_of(request: Request | None) -> str | None:
    """The prompt the audit describes: the text of the last user message, the words the person
    just sent (a chat's history and the system prompt repeat on every turn)."""
    if request is None:
        return None
    from tokenrelay.model import TextPart

    for message in reversed(request.messages):
        if message.role == "user":
            texts = [part.text for part in message.content if isinstance(part, TextPart)]
            if texts:
                return "\n".join(texts)
    return None


def audit_line(
    record: StreamRecord,
    prompt: PromptInfo | None,
    cost_nanousd: int | None,
    *,
    now: float | None = None,
) -> bytes:
    """One line, ending in a newline. ``prompt`` comes from ``fingerprint``, never the text."""
    identity = record.identity
    verdict = record.verdict
    usage = record.usage
    line = AuditLine(
        time=iso_time(time.time() if now is None else now, ms=True),
        request_id=record.request_id,
        dialect=record.dialect,
        route=record.route,
        outcome=record.outcome,
        status=record.status,
        error_type=record.error_type,
        client_ip=identity.ip if identity is not None else None,
        identity=(
            _Identity(identity.kind, identity.user, identity.org, identity.key_id)
            if identity is not None
            else None
        ),
        attempts=[
            _Attempt(a.provider, a.model, a.outcome, a.status, round(a.ms, 1))
            for a in record.attempts
        ],
        provider=record.provider,
        model=record.model,
        ttft_ms=round(record.ttft_ms, 1) if record.ttft_ms is not None else None,
        duration_ms=round(record.duration_ms, 1),
        tokens=_Tokens(
            usage.input_tokens,
            usage.output_tokens,
            usage.cache_read_tokens,
            usage.cache_write_tokens,
            usage.reasoning_tokens,
        ),
        cost_usd=usd(cost_nanousd) if cost_nanousd is not None else None,
        screening=(
            _Screening(
                round(verdict.score, 3), verdict.injection, verdict.rules, verdict.classifier
            )
            if verdict is not None
            else None
        ),
        prompt=prompt,
        dropped_tools=record.dropped_tools,
        guard=record.guard,
        guard_output=record.guard_output,
        guard_blocked=record.guard_blocked,
    )
    return _encoder.encode(line) + b"\n"


# --- the writer ----------------------------------------------------------------------------------

Item = bytes | threading.Event | None  # a line, a flush marker, or the end
POLL_SECONDS = 0.05  # how often the writer thread looks for lines (waking it per line costs more)
CostOf = Callable[["StreamRecord"], "int | None"]


class AuditLog:
    """A request listener that writes audit lines from a thread of its own.

    ``cost`` gives a record's cost in nanodollars (the ledger's pricing). ``stream`` overrides
    ``destination`` (tests). Counters for metrics: ``written`` and ``dropped`` lines."""

    def __init__(
        self,
        settings: AuditSettings,
        *,
        cost: CostOf | None = None,
        stream: IO[bytes] | None = None,
    ) -> None:
        self.settings = settings
        self.cost = cost
        self.written = 0
        self.dropped = 0
        if settings.secret is not None:
            self.secret = settings.secret.encode()
            weak = settings.weak_secret()
            if weak is not None and settings.enabled:
                log.warning(
                    "WARNING: %s (audit.require_strong_secret = true refuses to start)", weak
                )
        else:
            self.secret = secrets.token_bytes(32)
            if settings.enabled:
                log.warning(
                    "audit.secret is not set: prompt hashes use a random key made by this "
                    "process and will not correlate across restarts or workers; set "
                    "TOKENRELAY_AUDIT__SECRET"
                )
        self._keyed: hmac.HMAC | None = None  # keyed with ``_keyed_with``, never updated
        self._keyed_with = b""
        self._owned: IO[bytes] | None = None
        # A deque the event loop appends to (thread-safe, no lock, no wake-up per line) and the
        # writer thread drains every POLL_SECONDS, or at once on flush and close.
        self._pending: deque[Item] = deque()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._last_drop_log = 0.0
        if not settings.enabled:
            return
        if stream is None:
            stream = self._open(settings.destination)
        self._stream = stream
        self._thread = threading.Thread(target=self._run, name="tokenrelay-audit", daemon=True)
        self._thread.start()

    def _open(self, destination: str) -> IO[bytes]:
        if destination == "stdout":
            return sys.stdout.buffer
        path = os.path.abspath(os.path.expanduser(destination))
        os.makedirs(os.path.dirname(path), exist_ok=True)
        self._owned = open(path, "ab")  # noqa: SIM115 - closed in close()
        return self._owned

    def fingerprint(self, text: str) -> PromptInfo:
        keyed = self._keyed
        if keyed is None or self._keyed_with != self.secret:
            keyed = self._keyed = hmac.new(self.secret, digestmod=hashlib.sha256)
            self._keyed_with = self.secret
        return _fingerprint(text, keyed, self.settings.prefix_chars)

    def line(
        self, record: StreamRecord, prompt_text: str | None, cost_nanousd: int | None
    ) -> bytes:
        prompt = self.fingerprint(prompt_text) if prompt_text is not None else None
        return audit_line(record, prompt, cost_nanousd)

    def write(
        self, record: StreamRecord, prompt_text: str | None, cost_nanousd: int | None
    ) -> None:
        """Queue the record's line; never blocks. A full queue drops it, counted and logged."""
        if self._thread is None:
            return
        if len(self._pending) < self.settings.queue_size:
            self._pending.append(self.line(record, prompt_text, cost_nanousd))
        else:
            self.dropped += 1
            now = time.monotonic()
            if now - self._last_drop_log > 10:
                self._last_drop_log = now
                log.error("audit log is not keeping up: %d line(s) dropped so far", self.dropped)

    def __call__(self, record: StreamRecord) -> None:
        """The listener: the prompt from the record's request, the cost from ``cost``."""
        cost = self.cost(record) if self.cost is not None else None
        self.write(record, prompt_of(record.request), cost)

    def _run(self) -> None:
        pending = self._pending
        while True:
            self._wake.wait(POLL_SECONDS)
            self._wake.clear()
            stop = False
            while pending and not stop:
                batch: list[bytes] = []
                markers: list[threading.Event] = []
                while pending and len(batch) < 512:
                    item = pending.popleft()
                    if item is None:
                        stop = True
                        break
                    if isinstance(item, bytes):
                        batch.append(item)
                    else:
                        markers.append(item)
                self._write(batch)
                for marker in markers:
                    marker.set()
            if stop:
                return

    def _write(self, batch: list[bytes]) -> None:
        if not batch:
            return
        try:
            self._stream.write(b"".join(batch))
            self._stream.flush()
            self.written += len(batch)
        except (OSError, ValueError) as exc:
            self.dropped += len(batch)
            log.error("cannot write the audit log: %s", exc)

    def flush(self, timeout: float = 5.0) -> bool:
        """Wait until every line queued so far is written (blocking: tests and shutdown)."""
        if self._thread is None or not self._thread.is_alive():
            return True
        marker = threading.Event()
        self._pending.append(marker)
        self._wake.set()
        return marker.wait(timeout)

    def close(self, timeout: float = 2.0) -> None:
        """Write what is queued, stop the thread, close a file we opened."""
        if self._thread is not None and self._thread.is_alive():
            self._pending.append(None)
            self._wake.set()
            self._thread.join(timeout)
        self._thread = None
        if self._owned is not None:
            self._owned.close()
            self._owned = None

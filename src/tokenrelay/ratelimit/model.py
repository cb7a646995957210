"""What the limiter is configured with, what it counts against, and what it answers.

Limits use the `limits` library's string syntax (``"10/minute"``, ``"3/2second"``, several joined
by ``;`` as in ``"10/minute;100/day"``), so an operator writes the same strings the library
documents. Windows are whole seconds.
"""

from __future__ import annotations

import math
import re
import time
from dataclasses import dataclass
from functools import lru_cache
from typing import Annotated, Literal, NamedTuple

import msgspec

SubjectKind = Literal["ip", "key", "user", "org"]
Unit = Literal["requests", "tokens", "concurrent-requests"]


class LimitItem(NamedTuple):
    """One limit: ``amount`` per ``expiry`` seconds (the names of ``limits``' items)."""

    amount: int
    expiry: int

    def get_expiry(self) -> int:
        return self.expiry


# The grammar and granularities of the ``limits`` library's parser (``limits.util``), written
# out so that reading a limit does not import the library (58 ms of start-up; only the Redis
# store needs it).
_SECONDS = {"second": 1, "minute": 60, "hour": 3600, "day": 86400, "month": 2592000}
_SECONDS["year"] = 12 * _SECONDS["month"]
_ONE = re.compile(
    r"\s*([0-9]+)\s*(?:/|\s*per\s*)\s*([0-9]+)?\s*(second|minute|hour|day|month|year)s?\s*",
    re.IGNORECASE,
)
_SEPARATORS = re.compile(r"[,;|]")


@lru_cache(maxsize=1024)
def parse_limit(limit: str) -> tuple[LimitItem, ...]:
    """``"10/minute;100/day"`` (``limits``' syntax) as items; cached: it runs on every request.

    Raises ``ValueError`` for a string that is not a limit."""
    items = []
    for part in _SEPARATORS.split(limit):
        match = _ONE.fullmatch(part)
        if match is None:
            raise ValueError(f"couldn't parse rate limit string {limit!r}")
        amount, multiple, unit = match.groups()
        items.append(LimitItem(int(amount), int(multiple or 1) * _SECONDS[unit.lower()]))
    return tuple(items)


class WindowState(NamedTuple):
    """One window of a limit as it stands, read without counting (``RateLimiter.peek_*``):
    ``used`` of ``limit`` units in the last ``seconds`` (0 for a concurrency cap, which has no
    window), ``reset_after`` seconds until the oldest unit leaves it (0 when nothing is used)."""

    unit: Unit
    policy: str
    limit: int
    seconds: int
    used: int
    remaining: int
    reset_after: float


class LimitSettings(msgspec.Struct, kw_only=True, forbid_unknown_fields=True, frozen=True):
    """How requests are limited and where the counters live. The issue's
    ``TOKENRELAY_ANONYMOUS_LIMIT`` and ``TOKENRELAY_REDIS_URL`` are ``anonymous_limit`` and
    ``redis_url``; limits that belong to a key (its requests and tokens per minute, its stream
    cap) come from the key's record and reach the limiter as ``Rule``s."""

    anonymous_limit: str = "10/minute"  # per IP, for requests without a key (the article's)
    route_limits: dict[str, str] = msgspec.field(default_factory=dict)  # per identity per route
    redis_url: str | None = None  # unset: counters live in this process only
    # Beyond it Redis is "down". It bounds the wait on a Redis that hangs (one refusing
    # connections fails at once); it also measures this process's own event-loop lag, so it
    # must exceed what a burst can cause: 0.25 s made a 300-request burst fail open.
    redis_timeout: Annotated[float, msgspec.Meta(gt=0)] = 1.0
    # After a failure, Redis is left alone this long: requests fail open/closed at once instead
    # of each paying ``redis_timeout``; the next call after it probes Redis again.
    redis_retry_interval: Annotated[float, msgspec.Meta(ge=0)] = 1.0
    fail: Literal["open", "closed"] = "open"
    # A stream's concurrency slot in Redis expires this long after its instance stopped
    # refreshing it (it refreshes every third of it), so a crashed instance frees its slots.
    lease_ttl: Annotated[float, msgspec.Meta(gt=0)] = 30.0
    key_prefix: str = "tokenrelay"  # Redis keys start with it

    def __post_init__(self) -> None:
        for text in (self.anonymous_limit, *self.route_limits.values()):
            parse_limit(text)  # a typo fails at start-up, not on the first request

    def request_rules(
        self, subject: Subject, route: str, key_limit: str | None = None
    ) -> list[Rule]:
        """The request limits of the issue for one request: ``anonymous_limit`` for an IP,
        ``key_limit`` (from the key's own record) for an identified caller, and the route's
        ``route_limits`` entry for either, counted per identity and route."""
        rules: list[Rule] = []
        if subject.kind == "ip":
            rules.append(Rule(subject, self.anonymous_limit))
        elif key_limit:
            rules.append(Rule(subject, key_limit))
        if route_limit := self.route_limits.get(route):
            rules.append(Rule(subject, route_limit, route))
        return rules


@dataclass(frozen=True, slots=True)
class Subject:
    """Who a limit is counted against. ``id`` must not be a secret: it ends up in Redis keys
    (pass a key's id or hash, never the key)."""

    kind: SubjectKind
    id: str


@dataclass(frozen=True, slots=True)
class Rule:
    """``limit`` (limits' syntax) for ``subject`` on ``scope``: a route name, or ``"*"`` for
    all routes together. Rules with different scopes or limits have separate counters."""

    subject: Subject
    limit: str
    scope: str = "*"

    def __post_init__(self) -> None:
        parse_limit(self.limit)


@dataclass(slots=True)
class Decision:
    """The answer for one request: whether it may go, and the quota to advertise.

    When several limits apply this is the most restrictive one: the refusing limit that frees
    up last, else the one with the least left. ``reset_after`` is the time until the next unit
    of quota frees up (the sliding window's oldest entry leaves it). ``degraded``: Redis was
    unreachable and the limiter failed open, so nothing was counted; ``unavailable``: it failed
    closed, and the caller answers 503 "rate limiter unavailable" with ``retry-after: 1``.
    """

    allowed: bool
    limit: int
    remaining: int
    reset_after: float
    retry_after: float | None
    policy: str
    window: int = 0  # seconds; 0 for concurrency, which has no window
    unit: Unit = "requests"
    degraded: bool = False
    unavailable: bool = False

    @classmethod
    def unlimited(cls) -> Decision:
        """No limit applied (no rules): allowed, and nothing to advertise."""
        return cls(True, 0, 0, 0.0, None, "")

    def headers(self) -> list[tuple[bytes, bytes]]:
        """Response headers in three vocabularies, so that generic HTTP clients and both
        official SDKs can pace themselves.

        - ``RateLimit-Policy`` and ``RateLimit`` in the structured-field form of
          draft-ietf-httpapi-ratelimit-headers-11 (May 2026), sections 3 and 4:
          ``RateLimit-Policy: "ip";q=10;w=60`` and ``RateLimit: "ip";r=9;t=42``; token quotas
          say ``qu="tokens"`` (not a registered unit yet: the draft registers ``requests``,
          ``content-bytes`` and ``concurrent-requests``), concurrency says
          ``qu="concurrent-requests"`` and has no window;
        - OpenAI's ``x-ratelimit-{limit,remaining,reset}-{requests,tokens}``, the reset as a
          Go duration (``"1s"``, ``"6m0s"``, ``"12ms"``);
        - Anthropic's ``anthropic-ratelimit-{requests,tokens}-{limit,remaining,reset}``, the
          reset as an RFC 3339 time;
        - ``retry-after`` in whole seconds when refused.
        """
        if self.unavailable:
            return [(b"retry-after", b"1")]
        out: list[tuple[bytes, bytes]] = []
        if self.limit > 0 and not self.degraded:
            name = _sf_string(self.policy)
            if self.unit == "concurrent-requests":
                policy = f'{name};q={self.limit};qu="concurrent-requests"'
                state = f"{name};r={self.remaining}"
            else:
                unit = ';qu="tokens"' if self.unit == "tokens" else ""
                policy = f"{name};q={self.limit}{unit};w={self.window}"
                state = f"{name};r={self.remaining};t={math.ceil(self.reset_after)}"
            out.append((b"ratelimit-policy", policy.encode()))
            out.append((b"ratelimit", state.encode()))
            if self.unit != "concurrent-requests":
                names = _VENDOR_NAMES[self.unit]
                limit, remaining = str(self.limit).encode(), str(self.remaining).encode()
                reset_at = _rfc3339(math.ceil(time.time() + self.reset_after))
                out += [
                    (names[0], limit),
                    (names[1], remaining),
                    (names[2], go_duration(self.reset_after).encode()),
                    (names[3], limit),
                    (names[4], remaining),
                    (names[5], reset_at),
                ]
        if not self.allowed and self.retry_after is not None:
            out.append((b"retry-after", str(max(1, math.ceil(self.retry_after))).encode()))
        return out


def policy_name(unit: Unit, kind: SubjectKind, scope: str, window: int | None = None) -> str:
    """A stable, non-identifying name for a limit: ``"ip"``, ``"key.fast"``, ``"tokens.user"``,
    ``"streams.org"``; ``window`` tells apart the limits of a ``"10/minute;100/day"`` rule."""
    prefix = {"requests": "", "tokens": "tokens.", "concurrent-requests": "streams."}[unit]
    name = prefix + kind + ("" if scope == "*" else f".{scope}")
    return name if window is None else f"{name}.{window}s"


_UNSAFE = re.compile(r"[^A-Za-z0-9._:*-]")
# OpenAI's and Anthropic's header names per unit, encoded once (every response carries them).
_VENDOR_NAMES = {
    noun: tuple(
        name.encode()
        for name in (
            f"x-ratelimit-limit-{noun}",
            f"x-ratelimit-remaining-{noun}",
            f"x-ratelimit-reset-{noun}",
            f"anthropic-ratelimit-{noun}-limit",
            f"anthropic-ratelimit-{noun}-remaining",
            f"anthropic-ratelimit-{noun}-reset",
        )
    )
    for noun in ("requests", "tokens")
}


@lru_cache(maxsize=256)  # policy names come from the configuration: a few
def _sf_string(text: str) -> str:
    """A structured-field String (RFC 9651 3.3.3); route names are reduced to a safe alphabet
    so no escaping is ever needed."""
    return '"' + _UNSAFE.sub("_", text) + '"'


_last_reset: tuple[int, bytes] = (-1, b"")


def _rfc3339(second: int) -> bytes:
    """A Unix second as ``2026-11-01T12:00:00Z``; the last one is kept, as the requests of one
    second share their reset times."""
    global _last_reset
    if _last_reset[0] != second:
        text = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(second))
        _last_reset = (second, text.encode())
    return _last_reset[1]


def go_duration(seconds: float) -> str:
    """``seconds`` the way Go's ``time.Duration`` prints it, which is what OpenAI sends."""
    ms = round(seconds * 1000)
    if ms <= 0:
        return "0s"
    if ms < 1000:
        return f"{ms}ms"
    hours, ms = divmod(ms, 3_600_000)
    minutes, ms = divmod(ms, 60_000)
    secs = f"{ms / 1000:.3f}".rstrip("0").rstrip(".") + "s"
    if hours:
        return f"{hours}h{minutes}m{secs}"
    return f"{minutes}m{secs}" if minutes else secs

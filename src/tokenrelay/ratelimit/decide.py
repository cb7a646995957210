"""From rules to storage windows, and from the windows' usage back to one ``Decision``: the
pure part of the limiter, the same for both stores."""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable, Sequence
from functools import lru_cache

from tokenrelay.ratelimit.base import TokenUsage, Usage, Window
from tokenrelay.ratelimit.model import (
    Decision,
    Rule,
    Subject,
    SubjectKind,
    Unit,
    parse_limit,
    policy_name,
)


def key_id(subject: Subject) -> str:
    """The subject's id in a key; a long one (a header value, say) is hashed to bound keys."""
    if len(subject.id) <= 128:
        return subject.id
    return hashlib.sha256(subject.id.encode()).hexdigest()[:32]


@lru_cache(maxsize=4096)
def _shapes(
    ns: str, kind: SubjectKind, limit: str, scope: str, unit: Unit
) -> tuple[tuple[str, str, int, int, str], ...]:
    """Everything about a rule's windows but the subject's id (key head and tail, limit,
    seconds, policy name), worked out once: this runs on every request."""
    items = parse_limit(limit)
    several = len(items) > 1
    return tuple(
        (
            f"{ns}/{scope}/{kind}/",
            f"/{item.amount}/{item.get_expiry()}",
            item.amount,
            item.get_expiry(),
            policy_name(unit, kind, scope, item.get_expiry() if several else None),
        )
        for item in items
    )


def windows_of(ns: str, subject: Subject, limit: str, scope: str, unit: Unit) -> list[Window]:
    ident = key_id(subject)
    return [
        Window(head + ident + tail, amount, seconds, policy)
        for head, tail, amount, seconds, policy in _shapes(ns, subject.kind, limit, scope, unit)
    ]


def token_windows(
    subjects: Iterable[Subject | Rule], limit: str | None, scope: str
) -> list[Window]:
    found: list[Window] = []
    for entry in subjects:
        if isinstance(entry, Rule):
            found += windows_of("tok", entry.subject, entry.limit, entry.scope, "tokens")
        elif limit is None:
            raise ValueError("a Subject needs a limit; pass limit= or a Rule")
        else:
            found += windows_of("tok", entry, limit, scope, "tokens")
    return found


def request_decision(taken: bool, windows: Sequence[Window], usage: Sequence[Usage]) -> Decision:
    if len(windows) == 1:
        pick = 0
    elif taken:  # least left; the later reset among equals
        pick = min(
            range(len(windows)),
            key=lambda i: (windows[i].limit - usage[i].used, -usage[i].reset_after),
        )
    else:  # among the full windows, the one that frees up last
        full = [i for i in range(len(windows)) if usage[i].used >= windows[i].limit]
        pick = max(full or range(len(windows)), key=lambda i: usage[i].reset_after)
    window, use = windows[pick], usage[pick]
    reset = max(0.0, use.reset_after)
    return Decision(
        allowed=taken,
        limit=window.limit,
        remaining=max(0, window.limit - use.used),
        reset_after=reset,
        retry_after=None if taken else reset,
        policy=window.policy,
        window=window.seconds,
    )


def token_decision(windows: Sequence[Window], usage: Sequence[TokenUsage]) -> Decision:
    """Each window's sliding-window estimate against its limit; the strictest wins.

    Refused, the wait is until the estimate drops below the limit: while the current window
    runs the previous one's share decays linearly; if the current window alone is at the limit,
    it must first become the previous window and then decay."""
    best: Decision | None = None
    for window, use in zip(windows, usage, strict=True):
        w, limit = window.seconds, window.limit
        used = use.previous * use.closes_in / w + use.current
        remaining = max(0, limit - math.floor(used))
        if remaining > 0:
            wait = None
        elif use.current >= limit:
            wait = use.closes_in + w * (1 - limit / use.current if use.current else 1)
        else:  # used >= limit > current, so previous > 0
            wait = use.closes_in - (limit - use.current) * w / use.previous
        if wait is not None:
            wait = min(max(wait, 0.0), 2.0 * w)
        decision = Decision(
            allowed=wait is None,
            limit=limit,
            remaining=remaining,
            reset_after=use.closes_in if wait is None else wait,
            retry_after=wait,
            policy=window.policy,
            window=w,
            unit="tokens",
        )
        if best is None or _stricter(decision, best):
            best = decision
    assert best is not None, "no windows"
    return best


def _stricter(a: Decision, b: Decision) -> bool:
    if a.allowed != b.allowed:
        return not a.allowed
    if not a.allowed:
        return (a.retry_after or 0.0) > (b.retry_after or 0.0)
    return (a.remaining, -a.reset_after) < (b.remaining, -b.reset_after)

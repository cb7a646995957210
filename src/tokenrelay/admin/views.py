"""Read-only views of a key: its recent requests from the ledger (what the audit log keeps: no
prompt or answer text, which the ledger never holds) and its rate-limit state now, peeked from
the limiter without counting a request."""

from __future__ import annotations

from collections.abc import Sequence

from tokenrelay.admin.roles import Caller, require
from tokenrelay.admin.rows import iso_now, page_size
from tokenrelay.admin.schema import KeyLimits, LimitState, RequestPage, RequestRow
from tokenrelay.gate.keys import KeyRecord
from tokenrelay.metering.units import usd
from tokenrelay.ratelimit import RateLimiter, Rule, Subject, WindowState, parse_limit
from tokenrelay.store import Database


async def key_requests(
    db: Database, caller: Caller, key: KeyRecord, limit: int | None
) -> RequestPage:
    """The key's newest ledger rows."""
    require(caller, "key.read", "read a key's requests")
    rows = await db.fetch_all(
        "SELECT request_id, created_at, route, model, outcome, status, input_tokens, "
        "output_tokens, cost_nanousd, ttft_ms FROM ledger WHERE key_id = ? "
        "ORDER BY created_at DESC LIMIT ?",
        (key.id, page_size(limit)),
    )
    return RequestPage(
        data=[
            RequestRow(
                request_id=row["request_id"],
                created_at=iso_now(row["created_at"]),
                route=row["route"],
                model=row["model"],
                outcome=row["outcome"],
                status=int(row["status"]),
                input_tokens=int(row["input_tokens"]),
                output_tokens=int(row["output_tokens"]),
                cost_usd=usd(int(row["cost_nanousd"]), 6),
                ttft_ms=row["ttft_ms"],
            )
            for row in rows
        ]
    )


async def key_limits(caller: Caller, key: KeyRecord, limiter: RateLimiter | None) -> KeyLimits:
    """Every limit set on the key, its user and its org (and the key's ``rpm``), window by
    window: used, remaining and reset now, read from the limiter without counting anything.
    An in-process limiter answers for this instance only."""
    require(caller, "key.read", "read a key's limits")
    rules: list[tuple[str, Rule]] = []
    caps: list[tuple[Subject, int]] = []
    if key.rpm is not None:
        rules.append(("requests", Rule(Subject("key", key.id), f"{key.rpm}/minute")))
    for subject, limits in key.policy.scoped(key.id, key.user, key.org):
        if limits.requests is not None:
            rules.append(("requests", Rule(subject, limits.requests, "policy")))
        if limits.tokens is not None:
            rules.append(("tokens", Rule(subject, limits.tokens, "policy")))
        if limits.concurrent_streams is not None:
            caps.append((subject, limits.concurrent_streams))
    states: list[LimitState] = []
    for kind, rule in rules:
        name = f"{rule.subject.kind}:{rule.subject.id}"
        found: list[WindowState] | None = None
        if limiter is not None:
            peek = limiter.peek_requests if kind == "requests" else limiter.peek_tokens
            found = await peek(rule)
        items = parse_limit(rule.limit)  # the limiter's windows, in the same order
        windows: Sequence[WindowState | None] = found if found is not None else [None] * len(items)
        for item, window in zip(items, windows, strict=True):
            states.append(_state(name, kind, rule.limit, item.get_expiry(), item.amount, window))
    for subject, cap in caps:
        stream = await limiter.peek_streams(subject, cap, "policy") if limiter else None
        name = f"{subject.kind}:{subject.id}"
        states.append(_state(name, "concurrent_streams", str(cap), None, cap, stream))
    return KeyLimits(key_id=key.id, limits=states)


def _state(
    subject: str,
    kind: str,
    limit: str,
    seconds: int | None,
    quota: int,
    window: WindowState | None,
) -> LimitState:
    return LimitState(
        subject=subject,
        kind=kind,  # type: ignore[arg-type]  # one of the three
        limit=limit,
        window_seconds=seconds,
        quota=quota,
        used=window.used if window else None,
        remaining=window.remaining if window else None,
        reset_seconds=round(window.reset_after, 3) if window else None,
    )

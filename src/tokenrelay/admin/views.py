"""Read-only views of a key: its recent requests from the ledger (what the audit log keeps: no
prompt or answer text, which the ledger never holds) and its rate-limit state now."""

from __future__ import annotations

from tokenrelay.admin.roles import Caller, require
from tokenrelay.admin.rows import iso_now, page_size
from tokenrelay.admin.schema import KeyLimits, LimitState, RequestPage, RequestRow
from tokenrelay.gate.keys import KeyRecord
from tokenrelay.metering.units import usd
from tokenrelay.ratelimit import RateLimiter, Rule
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
    """Each limit the admin API set on the key, its user and its org, with what is left now
    where it can be read without counting (tokens; requests and streams show the limit)."""
    require(caller, "key.read", "read a key's limits")
    states: list[LimitState] = []
    for subject, limits in key.policy.scoped(key.id, key.user, key.org):
        name = f"{subject.kind}:{subject.id}"
        if limits.requests is not None:
            states.append(
                LimitState(
                    subject=name,
                    kind="requests",
                    limit=limits.requests,
                    remaining=None,
                    reset_seconds=None,
                )
            )
        if limits.tokens is not None:
            remaining, reset = None, None
            if limiter is not None:
                decision = await limiter.check_tokens([Rule(subject, limits.tokens, "policy")])
                remaining, reset = decision.remaining, decision.reset_after
            states.append(
                LimitState(
                    subject=name,
                    kind="tokens",
                    limit=limits.tokens,
                    remaining=remaining,
                    reset_seconds=reset,
                )
            )
        if limits.concurrent_streams is not None:
            states.append(
                LimitState(
                    subject=name,
                    kind="concurrent_streams",
                    limit=str(limits.concurrent_streams),
                    remaining=None,
                    reset_seconds=None,
                )
            )
    if key.rpm is not None:
        states.append(
            LimitState(
                subject=f"key:{key.id}",
                kind="requests",
                limit=f"{key.rpm}/minute",
                remaining=None,
                reset_seconds=None,
            )
        )
    return KeyLimits(key_id=key.id, limits=states)

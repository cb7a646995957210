"""What one request did, handed to listeners (metering, audit, metrics) after it ended.

Listeners run once per request, never per token, and must not block: a listener that writes to a
database queues the record and returns.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

from tokenrelay.model import Completion, ErrorType, Request, Usage

if TYPE_CHECKING:
    from tokenrelay.gate.identity import Identity
    from tokenrelay.screening import Verdict

# "interrupted": the gateway was shutting down and its grace ran out before the stream ended;
# the client got an in-band error (or a 503 before the head), error_type "shutting_down".
# "guard_blocked": the route's output guard ended the stream with an in-band error.
Outcome = Literal["completed", "error", "aborted", "rejected", "interrupted", "guard_blocked"]

# How one try of a target ended: "ok", "hedged_out" (lost a hedge race), "unsupported" (cannot
# carry the request: not tried), "circuit_open" (its breaker is open: not tried),
# "upstream_auth" (refused the gateway's credentials), "cache_hit" (served from the response
# cache: no upstream was asked), "cooling_down" (a grouped target passed over after a 429: not
# tried), or the error type it failed with.
AttemptOutcome = (
    Literal[
        "ok",
        "hedged_out",
        "unsupported",
        "circuit_open",
        "upstream_auth",
        "cache_hit",
        "cooling_down",
    ]
    | ErrorType
)
CacheResult = Literal["hit", "miss", "bypass"]
# The provider a cache hit is counted under, wherever one is named per provider (its attempt,
# the metrics' provider labels, the dashboard's time to first token): no upstream answered it.
CACHE_PROVIDER = "cache"

log = logging.getLogger("tokenrelay.requests")


@dataclass(slots=True)
class Attempt:
    """One try of one target along a route (``failover`` records them): for the response's
    ``x-tokenrelay-attempts`` head, the log line, metrics and the ledger."""

    provider: str
    model: str
    outcome: AttemptOutcome
    status: int  # the upstream's HTTP status; 0 when no answer came (hedged out, unsupported)
    ms: float
    usage: Usage | None = None  # what a failed attempt had consumed, when the upstream said
    group: str | None = None  # the target's load-balanced group (docs/balancing.md), if any
    pick: str | None = None  # why it had its place in the group: the strategy's pick, "fallback"


@dataclass(slots=True)
class StreamRecord:
    request_id: str
    dialect: str
    route: str
    outcome: Outcome
    status: int
    provider: str | None = None
    model: str | None = None
    usage: Usage = field(default_factory=Usage)
    content_events: int = 0
    finish_reason: str | None = None
    error_type: str | None = None
    ttft_ms: float | None = None
    duration_ms: float = 0.0
    attempts: list[Attempt] = field(default_factory=list)
    metadata: dict[str, str] = field(default_factory=dict)
    identity: Identity | None = None  # who asked, as the gate established it
    verdict: Verdict | None = None  # the prompt screen's, when the route screens
    reject_reason: str | None = None  # which gate check refused it, when finer than error_type
    dropped_tools: list[str] = field(default_factory=list)  # hosted tools the route dropped
    # The route's guard: entity type -> values masked in the prompt (or found, when refused),
    # and output rule -> matches in the answer. Types and counts, never the values.
    guard: dict[str, int] = field(default_factory=dict)
    guard_output: dict[str, int] = field(default_factory=dict)
    guard_blocked: str | None = None  # the output rule that ended the answer ("canary", ...)
    # Set by metering: what the request is billed for (reported usage, or an estimate where the
    # upstream never reported it; failed attempts included), and its exact cost when priced.
    billed_usage: Usage | None = None
    usage_estimated: bool = False
    cost_nanousd: int | None = None
    # On a route with a response cache: whether it answered (a hit costs nothing upstream and
    # is billed 0; metering sets ``saved_nanousd`` to what the original answer cost), and a
    # semantic hit's similarity.
    cache: CacheResult | None = None
    cache_similarity: float | None = None
    saved_nanousd: int | None = None
    # For metering and audit only (estimating unreported usage, the audit line's prefix and
    # keyed hash); never logged as such.
    request: Request | None = None
    completion: Completion | None = None


Listener = Callable[[StreamRecord], None]


class Listeners:
    """Fans a finished request's record out; one failing listener never hides it from the rest."""

    def __init__(self) -> None:
        self._listeners: list[Listener] = []

    def add(self, listener: Listener) -> None:
        self._listeners.append(listener)

    def remove(self, listener: Listener) -> None:
        self._listeners.remove(listener)

    def emit(self, record: StreamRecord) -> None:
        for listener in self._listeners:
            try:
                listener(record)
            except Exception:
                log.exception("request listener %r failed", listener)


def log_record(record: StreamRecord) -> None:
    """One compact line per request (never the prompt or the answer); its arguments are not
    even formatted when the level leaves it out."""
    if not log.isEnabledFor(logging.INFO):
        return
    usage = record.usage
    log.info(
        "%s %s route=%s provider=%s model=%s status=%d ttft_ms=%s duration_ms=%.1f "
        "tokens_in=%s tokens_out=%s attempts=%d%s",
        record.request_id,
        record.outcome,
        record.route,
        record.provider,
        record.model,
        record.status,
        f"{record.ttft_ms:.1f}" if record.ttft_ms is not None else "-",
        record.duration_ms,
        usage.input_tokens,
        usage.output_tokens,
        len(record.attempts),
        f" error={record.error_type}" if record.error_type else "",
    )

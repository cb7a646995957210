"""The reporters of ``GET /metrics``: small objects that each hold one component's families and
read that component's own counters when the page is asked (the ledger writer, the limiter, the
shared state, budgets, the audit log, the upstream pool, load balancing). Nothing is maintained
for them between scrapes; each sees its component only through a ``Protocol`` of the numbers it
reads, so this module imports none of them (``Gateway._reporters`` builds the list)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol

from tokenrelay.observe.prometheus import Counter, Gauge, Metric


class LedgerNumbers(Protocol):
    """What ``metering.LedgerWriter`` counts."""

    @property
    def backlog(self) -> int: ...
    @property
    def spooled(self) -> int: ...
    @property
    def written(self) -> int: ...
    @property
    def write_errors(self) -> int: ...
    @property
    def dropped(self) -> int: ...
    def spool_bytes(self) -> int | None: ...


class LedgerReporter:
    """The ledger writer's backlog, spool and rows written or lost."""

    def __init__(self, ledger: LedgerNumbers) -> None:
        self.ledger = ledger
        self.backlog = Gauge(
            "tokenrelay_ledger_backlog_rows", "Ledger rows accepted and not yet in the database."
        )
        self.spooled = Gauge(
            "tokenrelay_ledger_spooled_rows",
            "Ledger rows in this process's spool files, not yet in the database.",
        )
        self.spool_bytes = Gauge(
            "tokenrelay_ledger_spool_bytes",
            "Bytes of spool files in the spool directory (every process sharing it), including "
            "rows of a file already written whose file is not yet removed.",
        )
        self.spool_bytes.merge = "own"  # the directory is shared: every worker sees it all
        self.written = Counter(
            "tokenrelay_ledger_written_rows_total", "Ledger rows committed to the database."
        )
        self.write_errors = Counter(
            "tokenrelay_ledger_write_errors_total", "Failed attempts to write a batch of rows."
        )
        self.dropped = Counter(
            "tokenrelay_ledger_dropped_rows_total",
            "Ledger rows lost: the spool could not be written and the memory buffer was full.",
        )

    def __call__(self) -> list[Metric]:
        ledger = self.ledger
        self.backlog.set(value=ledger.backlog)
        self.spooled.set(value=ledger.spooled)
        self.written.labels().value = ledger.written
        self.write_errors.labels().value = ledger.write_errors
        self.dropped.labels().value = ledger.dropped
        families: list[Metric] = [
            self.backlog,
            self.spooled,
            self.written,
            self.write_errors,
            self.dropped,
        ]
        size = ledger.spool_bytes()
        if size is not None:
            self.spool_bytes.set(value=size)
            families.append(self.spool_bytes)
        return families


class LimiterNumbers(Protocol):
    """What ``ratelimit.RateLimiter`` counts of its Redis backend's failures."""

    @property
    def failures_open(self) -> int: ...
    @property
    def failures_closed(self) -> int: ...
    @property
    def charges_lost(self) -> int: ...


class LimiterReporter:
    def __init__(self, limiter: LimiterNumbers) -> None:
        self.limiter = limiter
        self.failures = Counter(
            "tokenrelay_ratelimit_backend_failures_total",
            "Rate-limit decisions made without Redis: let through (policy open) or refused "
            "(policy closed).",
            ("policy",),
        )
        self.charges_lost = Counter(
            "tokenrelay_ratelimit_charges_lost_total",
            "Token charges that did not reach Redis.",
        )

    def __call__(self) -> list[Metric]:
        limiter = self.limiter
        self.failures.labels("open").value = limiter.failures_open
        self.failures.labels("closed").value = limiter.failures_closed
        self.charges_lost.labels().value = limiter.charges_lost
        return [self.failures, self.charges_lost]


class SharedStateNumbers(Protocol):
    """What ``shared_state.SharedState`` counts of its Redis link."""

    @property
    def outages(self) -> int: ...
    @property
    def local_steps(self) -> int: ...


class SharedStateReporter:
    def __init__(self, shared: SharedStateNumbers) -> None:
        self.shared = shared
        self.outages = Counter(
            "tokenrelay_shared_state_outages_total",
            "Times Redis went away for the shared breaker and TTFT statistics (each instance "
            "then decides locally until it is back).",
        )
        self.local_steps = Counter(
            "tokenrelay_breaker_local_steps_total",
            "Circuit-breaker steps taken without Redis (its local fallback).",
        )

    def __call__(self) -> list[Metric]:
        self.outages.labels().value = self.shared.outages
        self.local_steps.labels().value = self.shared.local_steps
        return [self.outages, self.local_steps]


class BudgetNumbers(Protocol):
    """What ``metering.budgets.BudgetMetrics`` counts."""

    @property
    def alerts(self) -> int: ...
    @property
    def exhausted(self) -> int: ...
    @property
    def refused(self) -> int: ...
    @property
    def failures(self) -> int: ...
    @property
    def charges_expired(self) -> int: ...


class BudgetReporter:
    def __init__(self, counts: BudgetNumbers) -> None:
        self.counts = counts
        self.events = Counter(
            "tokenrelay_budget_events_total",
            "Budget events: alert (alert_at crossed), exhausted (a limit reached), refused "
            "(a request answered 402), read_failure (a ledger read failed; budgets failed open), "
            "charge_expired (a charge never found in the ledger).",
            ("event",),
        )

    def __call__(self) -> list[Metric]:
        counts = self.counts
        for event, value in (
            ("alert", counts.alerts),
            ("exhausted", counts.exhausted),
            ("refused", counts.refused),
            ("read_failure", counts.failures),
            ("charge_expired", counts.charges_expired),
        ):
            self.events.labels(event).value = value
        return [self.events]


class AuditNumbers(Protocol):
    """What ``observe.audit.AuditLog`` counts."""

    @property
    def written(self) -> int: ...
    @property
    def dropped(self) -> int: ...


class AuditReporter:
    def __init__(self, audit: AuditNumbers) -> None:
        self.audit = audit
        self.written = Counter("tokenrelay_audit_written_lines_total", "Audit lines written.")
        self.dropped = Counter(
            "tokenrelay_audit_dropped_lines_total",
            "Audit lines lost: the queue was full or the destination failed.",
        )

    def __call__(self) -> list[Metric]:
        self.written.labels().value = self.audit.written
        self.dropped.labels().value = self.audit.dropped
        return [self.written, self.dropped]


class PoolNumbers(Protocol):
    """What ``providers.UpstreamPool`` counts: connections in use and idle."""

    @property
    def connections(self) -> tuple[int, int]: ...


class PoolReporter:
    def __init__(self, pool: PoolNumbers) -> None:
        self.pool = pool
        self.connections = Gauge(
            "tokenrelay_upstream_connections",
            "Connections of the shared upstream pool: active (in use or connecting) or idle "
            "(kept alive for reuse).",
            ("state",),
        )

    def __call__(self) -> list[Metric]:
        active, idle = self.pool.connections
        self.connections.set("active", value=active)
        self.connections.set("idle", value=idle)
        return [self.connections]


# The guard's refusals before the upstream (``reject_reason``) -> their ``rule`` label.
class InFlightNumbers(Protocol):
    def snapshot(self) -> Mapping[str, int]: ...


class BalanceNumbers(Protocol):
    """What ``balance.Balancer`` counts: streams served per (route, group, target, pick), and
    its in-flight counts."""

    @property
    def picks(self) -> Mapping[tuple[str, str, str, str], int]: ...
    @property
    def inflight(self) -> InFlightNumbers: ...


class BalanceReporter:
    """Load balancing (docs/balancing.md): which target of a group served and why, and the
    streams in flight per grouped target. Labels are configured names only."""

    def __init__(self, balancer: BalanceNumbers) -> None:
        self.balancer = balancer
        self.picks = Counter(
            "tokenrelay_balance_picks_total",
            "Streams served by a target of a load-balanced group, by why it was tried: the "
            "strategy's pick (weighted, least_busy, latency, affinity), explore (the latency "
            "strategy measuring another target) or fallback (an earlier one of the group failed).",
            ("route", "group", "target", "strategy"),
        )
        self.inflight = Gauge(
            "tokenrelay_balance_inflight_streams",
            "Streams in flight on this instance per grouped target (provider:model), as "
            "least_busy counts them.",
            ("target",),
        )

    def __call__(self) -> list[Metric]:
        for labels, value in list(self.balancer.picks.items()):
            self.picks.labels(*labels).value = value
        for target, count in self.balancer.inflight.snapshot().items():
            self.inflight.set(target, value=count)
        return [self.picks, self.inflight]

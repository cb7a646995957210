"""The gateway's metrics for ``GET /metrics``: what is counted per finished request, and the
reporters that read each component's own numbers at scrape time. The text format itself is
``observe.prometheus``.

How it stays off the stream's path:

- Request metrics are updated by ONE listener per finished request (``GatewayMetrics`` is a
  ``records.Listener``), never per token. It looks up the children it needs (requests, duration,
  time to first token, tokens, cost) as one cached bundle keyed by the record's
  ``(route, outcome, error_type, provider, model)``, so a record costs one dict lookup and a few
  additions; attempts are only walked when there was more than one, or one that failed.
- A response-cache hit asked no upstream, so it is counted under ``provider="cache"`` (the
  model of the answer it replayed stays): the providers' time to first token, duration and
  token series describe the providers alone, and summing over providers still gives what the
  clients saw. Its similarity (a semantic hit's) and the cost it saved have families of their own.
- Gauges that describe the present (streams open, breaker states, the ledger's backlog, pooled
  upstream connections) are read when ``/metrics`` is asked, by reporters (``observe.reporters``):
  small objects that each hold one component's families and read that component's own counters
  (``Gateway`` builds the list; this module never sees the gateway). Nothing is maintained for
  them in between.

Several workers (``tokenrelay serve --workers N``) serve one page: the supervisor makes a
directory (``metrics.shared_dir``) and each worker writes its families there as a compact
snapshot at most once a second and once more when it exits (``snapshots.Snapshots``); the worker
asked for ``/metrics`` merges the others' snapshots with its own live values
(``prometheus.merge``). Nothing of this runs per request.

Names follow the OpenTelemetry GenAI semantic conventions where they have one (dots become
underscores, the unit becomes a ``_seconds`` suffix, attributes become labels such as
``gen_ai_provider_name``); the rest are ``tokenrelay_*``. Counters end in ``_total``.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol

from tokenrelay import __version__
from tokenrelay.observe.prometheus import (
    Counter,
    Gauge,
    Histogram,
    HistogramChild,
    Metric,
    merge,
    render,
)
from tokenrelay.records import CACHE_PROVIDER

if TYPE_CHECKING:
    from tokenrelay.observe.loop_lag import FullCollectionPauses, LoopLagMonitor
    from tokenrelay.observe.snapshots import Snapshots
    from tokenrelay.records import StreamRecord
    from tokenrelay.settings import MetricsSettings

log = logging.getLogger("tokenrelay.metrics")

# Whole requests: 10 ms (a tiny non-streamed answer) to long generations.
DURATION_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 30, 60, 120)
# Time to first token: the same range, finer where interactive answers live.
TTFT_BUCKETS = (
    *(0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75),
    *(1, 1.5, 2, 3, 5, 7.5, 10, 20, 30),
)
# OpenTelemetry's advice for gen_ai.client.token.usage: powers of four from 1 to 4**13.
TOKEN_BUCKETS = tuple(4**i for i in range(14))
# The gateway's own share of the first token: sub-millisecond when all is well, seconds when a
# failover or a slow gate (a remote classifier, a Redis round trip) sits in front of it.
ADDED_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)

# A semantic cache hit's cosine similarity: at or above its route's threshold (0.95 by default,
# any value in (0, 1]), so the buckets are finest near 1.
SIMILARITY_BUCKETS = (0.5, 0.6, 0.7, 0.8, 0.85, 0.9, 0.925, 0.95, 0.96, 0.97, 0.98, 0.99, 0.995, 1)

BREAKER_STATES = {"closed": 0, "half_open": 1, "open": 2}
# A rejected request's error type -> the reason label (see ``rejection_reason``).
REJECTION_REASONS = {
    "rate_limit": "rate_limit",
    "budget_exceeded": "budget",
    "authentication": "auth",
    "permission": "auth",
    "request_too_large": "too_large",
    "invalid_request": "invalid_request",
    "unprocessable": "invalid_request",
    "unsupported_media_type": "invalid_request",
    "not_found": "not_found",
    "shutting_down": "shutting_down",
    "overloaded": "ratelimit_unavailable",  # Redis down and limits.fail = "closed"
    "api_error": "unavailable",  # keys cannot be checked now, or the route has no provider
}
# Distinct route and model names beyond the configured ones (a client may name provider models
# that provider_models.allow admits) before further new names are labelled "other", so a
# client cannot grow /metrics without bound: the default of metrics.max_model_labels.
EXTRA_LABEL_VALUES = 100
OTHER = "other"


# --- what the metrics read, as small interfaces -----------------------------------------------


class _Target(Protocol):
    @property
    def provider(self) -> str: ...
    @property
    def model(self) -> str: ...


class _Route(Protocol):
    @property
    def targets(self) -> Sequence[tuple[_Target, Any]]: ...


class Attempt(Protocol):
    """One try of a target, as ``records.StreamRecord.attempts`` lists them."""

    @property
    def provider(self) -> str: ...
    @property
    def model(self) -> str: ...
    @property
    def outcome(self) -> str: ...


class RouteTable(Protocol):
    """The configured routes, each with its targets in order (the router is one): their names
    bound the labels, and the order tells who won a hedge race."""

    @property
    def routes(self) -> Mapping[str, _Route]: ...


class BreakerStates(Protocol):
    """Each target's circuit, ``"provider:model" -> state`` (``breaker.CircuitBreaker``)."""

    async def snapshot(self) -> Mapping[str, str]: ...


Reporter = Callable[[], Sequence[Metric]]
"""A component's families with its numbers read now; called at each scrape and snapshot."""


class _Upstream:
    """The OpenTelemetry children of a record that reached an upstream."""

    __slots__ = ("duration", "tokens_in", "tokens_out", "ttft", "usage_in", "usage_out")

    def __init__(self, metrics: GatewayMetrics, provider: str, model: str, error: str) -> None:
        self.duration = metrics.duration.labels("chat", provider, model, error)
        self.ttft = metrics.ttft.labels("chat", provider, model)
        self.usage_in = metrics.usage.labels("chat", provider, model, "input")
        self.usage_out = metrics.usage.labels("chat", provider, model, "output")
        self.tokens_in = metrics.tokens.labels(provider, model, "input")
        self.tokens_out = metrics.tokens.labels(provider, model, "output")


class _Series:
    """The children one kind of record updates, looked up once per distinct
    ``(route, outcome, error_type, provider, model)`` and kept."""

    __slots__ = ("added", "cost", "requests", "route", "upstream")

    def __init__(self, metrics: GatewayMetrics, key: tuple[str, str, str, str, str]) -> None:
        route, outcome, error_type, provider, model = key
        self.route = route
        self.requests = metrics.requests.labels(route, provider, model, outcome)
        self.cost = metrics.cost.labels(route, provider, model)
        self.added: HistogramChild | None = None  # made on its first observation
        # Only a request that reached an upstream has a provider for the GenAI metrics.
        self.upstream = _Upstream(metrics, provider, model, error_type) if provider else None


class GatewayMetrics:
    """The request listener and the ``/metrics`` body for one gateway.

    ``__call__`` takes each finished request's record (after metering, which sets its cost);
    ``exposition`` reads the present state and renders everything."""

    def __init__(
        self,
        routes: RouteTable,
        settings: MetricsSettings | None = None,
        *,
        active: Callable[[], int] = lambda: 0,
        breaker: BreakerStates | None = None,
        shared_breaker: bool = False,
        reporters: Sequence[Reporter] = (),
    ) -> None:
        """``active``: the requests being relayed now; ``breaker``: the circuits (the router's
        when not given); ``shared_breaker``: they live in Redis, the same for every worker;
        ``reporters``: the other components' numbers, in the order they are shown."""
        self.routes = routes
        self._active = active
        self._breaker = breaker
        self._shared_breaker = shared_breaker
        self.reporters = list(reporters)
        op = ("gen_ai_operation_name", "gen_ai_provider_name", "gen_ai_request_model")
        self.duration = Histogram(
            "gen_ai_client_operation_duration_seconds",
            "GenAI operation duration: a request from its first byte read to its last byte "
            "sent, failed attempts and retries included; labelled with the target that served "
            "it, or the last one tried when none did (then with error_type).",
            (*op, "error_type"),
            DURATION_BUCKETS,
        )
        self.ttft = Histogram(
            "gen_ai_server_time_to_first_token_seconds",
            "Time to first token as the client saw it: from the request's first byte to the "
            "response head sent with the first content (for a non-streamed answer, the whole "
            'body). Response-cache hits are gen_ai_provider_name="cache", never their '
            "original provider's.",
            op,
            TTFT_BUCKETS,
        )
        self.usage = Histogram(
            "gen_ai_client_token_usage",
            "Tokens per request as the upstream reported them for the answer served, by "
            "gen_ai_token_type (input includes cached prompt tokens; output includes reasoning).",
            (*op, "gen_ai_token_type"),
            TOKEN_BUCKETS,
        )
        self.tokens = Counter(
            "tokenrelay_tokens_total",
            "Tokens the upstreams reported for the answers served, by type (input, output); "
            'answers replayed from the response cache are provider="cache".',
            ("provider", "model", "type"),
        )
        self.requests = Counter(
            "tokenrelay_requests_total",
            "Finished requests by route, serving target (or the last one tried) and outcome: "
            "completed, error, aborted (the client left), rejected (before any upstream), "
            'interrupted (shutdown). A response-cache hit\'s provider is "cache".',
            ("route", "provider", "model", "outcome"),
        )
        self.added = Histogram(
            "tokenrelay_gateway_added_seconds",
            "Time to first token minus the served attempt's own time to its first content "
            "event: reading and parsing the request, the gate (identity, rate limits, budget, "
            "screening) and routing, writing the head, and, when earlier attempts failed or a "
            "hedge raced, their time and the backoff between them (those are counted in "
            "tokenrelay_upstream_failures_total and tokenrelay_failovers_total).",
            ("route",),
            ADDED_BUCKETS,
        )
        self.cost = Counter(
            "tokenrelay_cost_usd_total",
            "Exact cost in US dollars as metered (failed attempts that reported usage included), "
            "summed in nanodollars; requests ended before the price table loaded are not in it.",
            ("route", "provider", "model"),
            digits=9,
        )
        self.upstream_failures = Counter(
            "tokenrelay_upstream_failures_total",
            "Upstream attempts that failed before the first token, by reason (the normalized "
            "error type: overloaded, rate_limit, timeout, upstream_unavailable ...).",
            ("provider", "model", "reason"),
        )
        self.failovers = Counter(
            "tokenrelay_failovers_total",
            "Requests served by another target than the one first tried, by the first failure's "
            "reason (circuit_open when the first target was skipped).",
            ("route", "reason"),
        )
        self.retries = Counter(
            "tokenrelay_retries_total",
            "Attempts on a target that had already been tried for the same request, by the "
            "previous attempt's outcome.",
            ("provider", "model", "reason"),
        )
        self.hedges = Counter(
            "tokenrelay_hedges_total",
            "Hedge races that ran to a winner: hedge_won (the later target answered first) or "
            "primary_won.",
            ("route", "result"),
        )
        self.rejections = Counter(
            "tokenrelay_rejections_total",
            "Requests refused before any upstream was called, by reason: rate_limit (a request "
            "window), concurrency (the stream cap), screening, budget, auth, invalid_request, "
            "too_large, not_found, shutting_down, ratelimit_unavailable, unavailable.",
            ("route", "reason"),
        )
        self.guard_masked = Counter(
            "tokenrelay_guard_masked_total",
            "Personal values masked in prompts before the upstream, by entity type.",
            ("entity",),
        )
        self.guard_blocked = Counter(
            "tokenrelay_guard_blocked_total",
            "Requests the route's guard stopped, by rule: pii (personal data refused), "
            "detector (the external detector failed closed), canary, secrets, terms, rules[i].",
            ("route", "rule"),
        )
        self.cache_similarity = Histogram(
            "tokenrelay_cache_similarity",
            "Cosine similarity of each semantic response-cache hit to the conversation it was "
            "stored for (exact hits have none and are not counted here), by route.",
            ("route",),
            SIMILARITY_BUCKETS,
        )
        self.cache_saved = Counter(
            "tokenrelay_cache_saved_usd_total",
            "What the answers served from the response cache cost when the upstream first made "
            "them, in US dollars, by route (summed in nanodollars; hits themselves cost 0).",
            ("route",),
            digits=9,
        )
        self.token_counts = Counter(
            "tokenrelay_token_counts_total",
            "POST /v1/messages/count_tokens answers by route and source: upstream (the route's "
            "Anthropic upstream counted), estimate (counted here: no Anthropic target), "
            "fallback (counted here: the upstream failed), refused (an error answer). Not "
            "requests: no ledger row, no tokens, no cost.",
            ("route", "source"),
        )
        # Read at scrape time.
        self.breaker = Gauge(
            "tokenrelay_circuit_breaker_state",
            "Each target's circuit: 0 closed, 1 half-open, 2 open.",
            ("provider", "model"),
        )
        self.active = Gauge(
            "tokenrelay_active_streams", "Requests being relayed now (admitted, not yet ended)."
        )
        self.start_time = Gauge(
            "process_start_time_seconds", "Start time of the process since the Unix epoch."
        )
        self.build = Gauge("tokenrelay_build_info", "The running version.", ("version",))
        self.workers = Gauge(
            "tokenrelay_metrics_workers",
            "Worker processes whose numbers this page adds up (metrics.shared_dir): running "
            "ones, and exited ones whose counters still count.",
            ("state",),
        )
        self.start_time.set(value=_process_start_time())
        self.build.set(__version__, value=1)
        # Across workers: a circuit open in any worker shows; the rest describe this process.
        self.breaker.merge = "max"
        for own in (self.start_time, self.build, self.workers):
            own.merge = "own"

        self._series: dict[tuple[str, str, str, str, str], _Series] = {}
        self._known: set[str] | None = None  # route and model names allowed as label values
        self._extra = 0
        shared_dir = settings.shared_dir if settings is not None else None
        self._max_extra = settings.max_model_labels if settings is not None else EXTRA_LABEL_VALUES
        self.snapshots: Snapshots | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._pending: asyncio.Future[None] | None = None
        if shared_dir:
            from tokenrelay.observe.snapshots import Snapshots

            self.snapshots = Snapshots(shared_dir)
            self._schedule()
        self.loop_lag: LoopLagMonitor | None = None
        self.gc_pauses: FullCollectionPauses | None = None
        lag_interval = settings.loop_lag_interval if settings is not None else 0
        if lag_interval > 0 and _loop_running():
            from tokenrelay.observe import loop_lag

            self.loop_lag = loop_lag.LoopLagMonitor(lag_interval)
            self.gc_pauses = loop_lag.FullCollectionPauses()
            self.reporters.append(loop_lag.LoopLagReporter(self.loop_lag, self.gc_pauses))

    # --- per request ---------------------------------------------------------------------------

    def __call__(self, record: StreamRecord) -> None:
        attempts = record.attempts
        provider, model = record.provider, record.model
        if record.cache == "hit":  # no upstream answered: not the provider's latency or tokens
            provider = CACHE_PROVIDER
            self._cache_hit(record)
        elif provider is None and attempts:  # failed before the first token: the last one tried
            provider, model = attempts[-1].provider, attempts[-1].model
        key = (record.route, record.outcome, record.error_type or "", provider or "", model or "")
        series = self._series.get(key)
        if series is None:
            series = self._new_series(key)
        series.requests.value += 1
        cost = record.cost_nanousd
        if cost is not None:
            series.cost.value += cost
        upstream = series.upstream
        if upstream is not None:
            upstream.duration.observe(record.duration_ms / 1000)
            ttft = record.ttft_ms
            if ttft is not None:
                upstream.ttft.observe(ttft / 1000)
                served = attempts[-1] if attempts else None
                if served is not None and served.outcome == "ok":
                    added = series.added
                    if added is None:
                        added = series.added = self.added.labels(series.route)
                    added.observe(max(0.0, ttft - served.ms) / 1000)
            usage = record.usage
            tokens = usage.input_tokens
            if tokens is not None:
                upstream.usage_in.observe(tokens)
                upstream.tokens_in.value += tokens
            tokens = usage.output_tokens
            if tokens is not None:
                upstream.usage_out.observe(tokens)
                upstream.tokens_out.value += tokens
        if record.cache != "hit" and (
            len(attempts) > 1 or (attempts and attempts[0].outcome != "ok")
        ):
            self._attempts(record, attempts)  # a cache hit's one attempt is no upstream failure
        if record.outcome == "rejected":
            self.rejections.inc(self._bounded(record.route), rejection_reason(record))
        if record.guard or record.guard_blocked or record.reject_reason in _GUARD_REFUSALS:
            self._guard(record)

    def _cache_hit(self, record: StreamRecord) -> None:
        """A response-cache hit's similarity (semantic hits) and the cost it saved (once
        metering priced it: not for a hit that ended before the price table loaded)."""
        route = self._bounded(record.route)
        similarity = record.cache_similarity
        if similarity is not None:
            # a cosine can come out a hair over 1 in floating point: still the 1 bucket
            self.cache_similarity.observe(route, value=min(similarity, 1.0))
        saved = record.saved_nanousd
        if saved is not None:
            self.cache_saved.inc(route, amount=saved)

    def _guard(self, record: StreamRecord) -> None:
        """The guard's counts: once per request that masked or was stopped, never per token."""
        refused = _GUARD_REFUSALS.get(record.reject_reason or "")
        if refused is None:
            for entity, count in record.guard.items():
                self.guard_masked.inc(entity, amount=count)
        rule = refused or record.guard_blocked
        if rule is not None:
            self.guard_blocked.inc(self._bounded(record.route), rule)

    def count_tokens(self, route: str, source: str) -> None:
        """One ``count_tokens`` answer (see ``tokenrelay.count_tokens``): counted here only."""
        self.token_counts.inc(self._bounded(route), source)

    def _new_series(self, key: tuple[str, str, str, str, str]) -> _Series:
        """The bundle for ``key``, with route and model names bounded: past the configured
        ones and ``metrics.max_model_labels`` more, a new name is labelled "other", and its records
        share that bundle (they are never cached under their own key)."""
        route, outcome, error_type, provider, model = key
        bounded = (self._bounded(route), outcome, error_type, provider, self._bounded(model))
        series = self._series.get(bounded)
        if series is None:
            series = self._series[bounded] = _Series(self, bounded)
        return series

    def _bounded(self, value: str) -> str:
        known = self._known
        if known is None:
            known = self._known = self._configured_names()
        if value in known:
            return value
        if self._extra < self._max_extra:
            self._extra += 1
            known.add(value)
            return value
        return OTHER

    def _configured_names(self) -> set[str]:
        names = {""}
        for name, route in self.routes.routes.items():
            names.add(name)
            names.update(target.model for target, _ in route.targets)
        return names

    def _attempts(self, record: StreamRecord, attempts: Sequence[Attempt]) -> None:
        """Failures, retries, failover and hedging, read from the attempts in order."""
        tried: dict[tuple[str, str], str] = {}  # target -> its latest outcome
        first_failure: str | None = None
        lost_race: Attempt | None = None
        for attempt in attempts:
            outcome = attempt.outcome
            if outcome in ("circuit_open", "unsupported", "cooling_down"):  # skipped, never sent
                first_failure = first_failure or outcome
                continue
            model = self._bounded(attempt.model)
            target = (attempt.provider, model)
            previous = tried.get(target)
            if previous is not None:
                self.retries.inc(attempt.provider, model, previous)
            tried[target] = outcome
            if outcome == "hedged_out":
                lost_race = attempt
            elif outcome != "ok":
                self.upstream_failures.inc(attempt.provider, model, outcome)
                first_failure = first_failure or outcome
        route = self._bounded(record.route)
        first = attempts[0]
        if (
            record.provider is not None
            and first_failure is not None
            and (first.provider, first.model) != (record.provider, record.model)
        ):
            self.failovers.inc(route, first_failure)
        if lost_race is not None and record.provider is not None:
            self.hedges.inc(route, self._race_result(record, lost_race))

    def _race_result(self, record: StreamRecord, loser: Attempt) -> str:
        """Who won a hedge race, from the route's target order (losers are listed before the
        winner whatever their role, so the attempts' order cannot tell)."""
        route = self.routes.routes.get(record.route)
        if route is not None:
            order = [(target.provider, target.model) for target, _ in route.targets]
            winner = (record.provider, record.model)
            lost = (loser.provider, loser.model)
            if winner in order and lost in order:
                return "hedge_won" if order.index(winner) > order.index(lost) else "primary_won"
        return "unknown"

    # --- at scrape time ------------------------------------------------------------------------

    async def exposition(self) -> bytes:
        """The ``/metrics`` body: the present state read now, then every family rendered; with
        other workers, their snapshots added."""
        await self._read_breaker()
        families = self._present()
        if self.snapshots is not None:
            families = self._merged(families, self.snapshots)
        return render(families)

    def _present(self) -> list[Metric]:
        """Every family, with what describes the present read now (all but the breakers,
        which need an await)."""
        self.active.set(value=self._active())
        families: list[Metric] = [
            self.duration,
            self.ttft,
            self.usage,
            self.tokens,
            self.requests,
            self.added,
            self.cost,
            self.upstream_failures,
            self.failovers,
            self.retries,
            self.hedges,
            self.rejections,
            self.token_counts,
            self.cache_similarity,
            self.cache_saved,
            self.guard_masked,
            self.guard_blocked,
            self.breaker,
            self.active,
        ]
        for report in self.reporters:
            families += report()
        families += [self.start_time, self.build]
        return families

    def _merged(self, families: list[Metric], snapshots: Snapshots) -> list[Metric]:
        others = snapshots.read_others()
        self.workers.set("running", value=1 + others.running)
        self.workers.set("exited", value=others.workers - others.running)
        return [*merge(families, others), self.workers]

    # --- this worker's snapshot ----------------------------------------------------------------

    def write_snapshot(self, *, running: bool = True) -> None:
        """This worker's families to its file (on a timer, and once more at exit)."""
        if self.snapshots is None:
            return
        skip = {"own", "max"} if self._shared_breaker else {"own"}  # see _tick
        families = self._present()
        self.snapshots.write(
            {f.name: f.dump() for f in families if f.merge not in skip}, running=running
        )

    def _schedule(self) -> None:
        from tokenrelay.observe.snapshots import WRITE_EVERY

        self._timer = asyncio.get_running_loop().call_later(WRITE_EVERY, self._tick)

    def _tick(self) -> None:
        self._schedule()
        if not self._shared_breaker:  # in-process breakers differ by worker: read them
            task = asyncio.ensure_future(self._tick_with_breaker())
            self._pending = task  # a reference, so the task is not collected mid-way
        else:  # Redis: every worker sees the same circuits; the scraped one reads them
            self.write_snapshot()

    async def _tick_with_breaker(self) -> None:
        await self._read_breaker()
        self.write_snapshot()

    def close(self) -> None:
        """The final snapshot (the worker is exiting): its counts stay, its gauges go."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self.stop_sampling()

    def stop_sampling(self) -> None:
        """The loop-lag timer and the collection hook off (the gateway is stopping)."""
        if self.loop_lag is not None:
            self.loop_lag.close()
        if self.gc_pauses is not None:
            self.gc_pauses.close()
        self.write_snapshot(running=False)

    async def _read_breaker(self) -> None:
        try:
            breaker = self._breaker
            if breaker is None:
                return
            async with asyncio.timeout(1.0):  # a shared store may be a round trip away
                states = await breaker.snapshot()
        except Exception as exc:  # the other families are still worth serving
            log.warning("metrics: cannot read the circuit breakers: %s", exc)
            return
        for key, state in states.items():
            provider, _, model = key.partition(":")
            self.breaker.set(provider, self._bounded(model), value=BREAKER_STATES.get(state, 0))


def _loop_running() -> bool:
    """Whether a loop runs here to sample (a test may build the metrics outside one)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


# The guard's refusals before the upstream (``reject_reason``) -> their ``rule`` label.
_GUARD_REFUSALS = {"guard_pii": "pii", "guard_detector": "detector"}


def rejection_reason(record: StreamRecord) -> str:
    """Why the gate (or the front before it) refused a request. A prompt the screen blocked is
    ``invalid_request`` to the client, on purpose; the verdict on the record tells it apart."""
    if record.reject_reason is not None:
        return record.reject_reason  # e.g. "concurrency": the stream cap, not a request window
    error_type = record.error_type or ""
    verdict = record.verdict
    if error_type == "invalid_request" and verdict is not None and verdict.injection:
        return "screening"
    return REJECTION_REASONS.get(error_type, error_type or "unknown")


def _process_start_time() -> float:
    """From the kernel on Linux (what ``prometheus_client`` reports too); else the time this
    module was first used, a fraction of a second after the process began."""
    try:
        with open("/proc/self/stat", "rb") as file:
            fields = file.read().rpartition(b")")[2].split()
        ticks = int(fields[19])  # field 22, starttime: clock ticks after boot
        with open("/proc/stat", "rb") as file:
            boot = next(float(line.split()[1]) for line in file if line.startswith(b"btime "))
        return boot + ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError, StopIteration):
        return time.time()

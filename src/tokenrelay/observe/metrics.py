"""Prometheus metrics for ``GET /metrics``, in the text exposition format 0.0.4.

Why not ``prometheus_client``: importing it costs about 85 ms (it brings ``http.server`` and
``wsgiref`` along for exposition servers we would never start), against a cold-start budget of
300 ms from spawn to first token. What the gateway needs is small: counters, gauges and
histograms keyed by label tuples, and their text rendering (HELP and TYPE lines, escaped label
values, cumulative ``_bucket`` lines ending in ``+Inf``, ``_sum`` and ``_count``). That is this
module, with no import beyond the standard library.

How it stays off the stream's path:

- Request metrics are updated by ONE listener per finished request (``GatewayMetrics`` is a
  ``records.Listener``), never per token. It looks up the children it needs (requests, duration,
  time to first token, tokens, cost) as one cached bundle keyed by the record's
  ``(route, outcome, error_type, provider, model)``, so a record costs one dict lookup and a few
  additions; attempts are only walked when there was more than one, or one that failed.
- Gauges that describe the present (streams open, breaker states, the ledger's backlog, pooled
  upstream connections) are read when ``/metrics`` is asked, from the objects that already keep
  them, so nothing is maintained for them in between.

Several workers (``tokenrelay serve --workers N``) serve one page: the supervisor makes a
directory (``metrics.shared_dir``) and each worker writes its families there as a compact
snapshot at most once a second and once more when it exits (``workers.Snapshots``); the worker
asked for ``/metrics`` merges the others' snapshots with its own live values. Counters and
histograms are summed over every worker that ever wrote (a worker that died keeps its counts),
gauges over the live ones. Nothing of this runs per request.

Names follow the OpenTelemetry GenAI semantic conventions where they have one (dots become
underscores, the unit becomes a ``_seconds`` suffix, attributes become labels such as
``gen_ai_provider_name``); the rest are ``tokenrelay_*``. Counters end in ``_total``. A label
whose value is empty is left out of the line, which Prometheus reads as the same thing.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import time
from bisect import bisect_left
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any, Literal

from tokenrelay import __version__

if TYPE_CHECKING:
    from tokenrelay.app import Gateway
    from tokenrelay.observe.snapshots import Snapshots
    from tokenrelay.records import Attempt, StreamRecord

log = logging.getLogger("tokenrelay.metrics")

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

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

Labels = tuple[str, ...]


# --- the exposition format ---------------------------------------------------------------------


def escape_label(value: str) -> str:
    """A label value as the format wants it: backslash, double quote and newline escaped."""
    if "\\" in value or '"' in value or "\n" in value:
        value = value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return value


def escape_help(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def format_value(value: float) -> str:
    """Integers exactly; floats in their shortest round-trip form; infinities as the format
    spells them."""
    if isinstance(value, int):
        return str(value)
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if math.isnan(value):
        return "NaN"
    return repr(value)


def format_scaled(value: int, digits: int) -> str:
    """``value / 10**digits`` as an exact decimal string (nanodollars as dollars): a float sum
    of many small costs would drift, so the sum is kept in integers and divided only here."""
    whole, frac = divmod(value, 10**digits)
    return f"{whole}.{frac:0{digits}d}".rstrip("0").rstrip(".") if frac else str(whole)


def label_text(names: Sequence[str], values: Labels, extra: str = "") -> str:
    """``{a="x",b="y"}`` for the non-empty values, plus ``extra`` (a bucket's ``le``)."""
    pairs = [f'{name}="{escape_label(value)}"' for name, value in zip(names, values, strict=True)]
    pairs = [pair for pair, value in zip(pairs, values, strict=True) if value]
    if extra:
        pairs.append(extra)
    return "{" + ",".join(pairs) + "}" if pairs else ""


class Value:
    """A counter's or a gauge's value for one label set; its label text is made once."""

    __slots__ = ("labels", "value")

    def __init__(self, labels: str) -> None:
        self.labels = labels
        self.value: float = 0


class HistogramChild:
    """One label set's histogram: a count per bucket (not cumulative: one increment per
    observation) and the sum; cumulated only when rendered."""

    __slots__ = ("bounds", "counts", "lines", "sum", "tail")

    def __init__(self, bounds: tuple[float, ...], lines: list[str], tail: tuple[str, str]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)  # the last one is +Inf
        self.sum = 0.0
        self.lines = lines  # each bucket's line up to its value
        self.tail = tail  # the _sum and _count lines up to their value

    def observe(self, value: float) -> None:
        # bisect_left: the first bound >= value, so a value equal to a bound counts in it (le).
        self.counts[bisect_left(self.bounds, value)] += 1
        self.sum += value


class Metric:
    """A metric family: its name, help, type and label names, and one child per label tuple
    (the dict is the cache: asking for the same labels again returns the same child)."""

    kind = "untyped"
    # Across workers: "sum" over every snapshot (counters, histograms; gauges over live workers
    # only), "max" over live workers, or "own": this process's value alone.
    merge: Literal["sum", "max", "own"] = "sum"

    def __init__(self, name: str, help: str, labelnames: Sequence[str] = ()) -> None:
        self.name = name
        self.help = help
        self.labelnames = tuple(labelnames)

    def dump(self) -> list[Any]:
        """The children as plain data for a snapshot: ``[labels, value...]`` each."""
        raise NotImplementedError  # abstract: _Scalar and Histogram implement it

    def merged(self, dumps: Iterable[list[Any]]) -> Metric:
        """A copy of this family with other workers' dumps added to its children."""
        raise NotImplementedError

    def header(self, out: list[str]) -> None:
        out.append(f"# HELP {self.name} {escape_help(self.help)}")
        out.append(f"# TYPE {self.name} {self.kind}")

    def render(self, out: list[str]) -> None:
        """The family's sample lines; every kind of metric writes its own."""
        raise NotImplementedError  # abstract: _Scalar and Histogram implement it


class _Scalar(Metric):
    """One number per label set. ``digits``: the value is kept as an integer and shown divided
    by ``10**digits`` (exact money)."""

    def __init__(
        self, name: str, help: str, labelnames: Sequence[str] = (), *, digits: int = 0
    ) -> None:
        super().__init__(name, help, labelnames)
        self.digits = digits
        self.children: dict[Labels, Value] = {}

    def labels(self, *values: str) -> Value:
        child = self.children.get(values)
        if child is None:
            child = self.children[values] = Value(label_text(self.labelnames, values))
        return child

    def dump(self) -> list[Any]:
        return [[labels, child.value] for labels, child in self.children.items()]

    def merged(self, dumps: Iterable[list[Any]]) -> _Scalar:
        copy = object.__new__(type(self))
        copy.__dict__.update(self.__dict__)
        children: dict[Labels, Value] = {}
        for labels, child in self.children.items():
            children[labels] = mine = Value(child.labels)
            mine.value = child.value
        take_max = self.merge == "max"
        for dump in dumps:
            for raw, number in dump:
                labels = tuple(raw)
                found = children.get(labels)
                if found is None:
                    children[labels] = found = Value(label_text(self.labelnames, labels))
                    found.value = number
                elif take_max:
                    found.value = max(found.value, number)
                else:
                    found.value += number
        copy.children = children
        return copy

    def render(self, out: list[str]) -> None:
        self.header(out)
        name, digits = self.name, self.digits
        for child in self.children.values():
            value = child.value
            text = format_scaled(int(value), digits) if digits else format_value(value)
            out.append(f"{name}{child.labels} {text}")


class Counter(_Scalar):
    """A monotonic count. Its value may also be *set* at scrape time from a counter another
    object keeps (the ledger's rows written), which is monotonic as well."""

    kind = "counter"

    def __init__(
        self, name: str, help: str, labelnames: Sequence[str] = (), *, digits: int = 0
    ) -> None:
        if not name.endswith("_total"):
            raise ValueError(f"counter {name} must end in _total")
        super().__init__(name, help, labelnames, digits=digits)

    def inc(self, *values: str, amount: float = 1) -> None:
        self.labels(*values).value += amount


class Gauge(_Scalar):
    """A value that goes up and down; here mostly set at scrape time."""

    kind = "gauge"

    def set(self, *values: str, value: float) -> None:
        self.labels(*values).value = value


class Histogram(Metric):
    kind = "histogram"

    def __init__(
        self, name: str, help: str, labelnames: Sequence[str], buckets: Iterable[float]
    ) -> None:
        super().__init__(name, help, labelnames)
        # Kept as given (integer bounds stay integers: a token count is bisected faster
        # among ints than among floats), shown as floats.
        self.bounds = tuple(sorted(buckets))
        if not self.bounds or any(math.isinf(bound) for bound in self.bounds):
            raise ValueError("give finite bucket bounds; +Inf is always added")
        self._le = [f'le="{format_value(float(bound))}"' for bound in self.bounds]
        self._le.append('le="+Inf"')
        self.children: dict[Labels, HistogramChild] = {}

    def labels(self, *values: str) -> HistogramChild:
        child = self.children.get(values)
        if child is None:
            names, name = self.labelnames, self.name
            lines = [f"{name}_bucket{label_text(names, values, le)} " for le in self._le]
            plain = label_text(names, values)
            tail = (f"{name}_sum{plain} ", f"{name}_count{plain} ")
            child = self.children[values] = HistogramChild(self.bounds, lines, tail)
        return child

    def observe(self, *values: str, value: float) -> None:
        self.labels(*values).observe(value)

    def dump(self) -> list[Any]:
        return [[labels, child.counts, child.sum] for labels, child in self.children.items()]

    def merged(self, dumps: Iterable[list[Any]]) -> Histogram:
        copy = object.__new__(Histogram)
        copy.__dict__.update(self.__dict__)
        copy.children = children = {}
        for labels, child in self.children.items():  # the lines' text is reused as it is
            mine = children[labels] = HistogramChild(child.bounds, child.lines, child.tail)
            mine.counts, mine.sum = list(child.counts), child.sum
        width = len(self.bounds) + 1
        for dump in dumps:
            for raw, counts, total in dump:
                if len(counts) != width:
                    continue  # another version's buckets: cannot be added
                labels = tuple(raw)
                found = children.get(labels)
                if found is None:
                    found = copy.labels(*labels)
                mine_counts = found.counts
                for index, count in enumerate(counts):
                    mine_counts[index] += count
                found.sum += total
        return copy

    def render(self, out: list[str]) -> None:
        self.header(out)
        for child in self.children.values():
            total = 0
            for line, count in zip(child.lines, child.counts, strict=True):
                total += count
                out.append(f"{line}{total}")
            out.append(f"{child.tail[0]}{format_value(child.sum)}")
            out.append(f"{child.tail[1]}{total}")


def render(metrics: Iterable[Metric]) -> bytes:
    out: list[str] = []
    for metric in metrics:
        metric.render(out)
    out.append("")
    return "\n".join(out).encode()


# --- the gateway's metrics ---------------------------------------------------------------------


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

    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway
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
            "body).",
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
            "Tokens the upstreams reported for the answers served, by type (input, output).",
            ("provider", "model", "type"),
        )
        self.requests = Counter(
            "tokenrelay_requests_total",
            "Finished requests by route, serving target (or the last one tried) and outcome: "
            "completed, error, aborted (the client left), rejected (before any upstream), "
            "interrupted (shutdown).",
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
        self.limiter_failures = Counter(
            "tokenrelay_ratelimit_backend_failures_total",
            "Rate-limit decisions made without Redis: let through (policy open) or refused "
            "(policy closed).",
            ("policy",),
        )
        self.charges_lost = Counter(
            "tokenrelay_ratelimit_charges_lost_total",
            "Token charges that did not reach Redis.",
        )
        self.shared_outages = Counter(
            "tokenrelay_shared_state_outages_total",
            "Times Redis went away for the shared breaker and TTFT statistics (each instance "
            "then decides locally until it is back).",
        )
        self.breaker_local = Counter(
            "tokenrelay_breaker_local_steps_total",
            "Circuit-breaker steps taken without Redis (its local fallback).",
        )
        self.audit_written = Counter("tokenrelay_audit_written_lines_total", "Audit lines written.")
        self.audit_dropped = Counter(
            "tokenrelay_audit_dropped_lines_total",
            "Audit lines lost: the queue was full or the destination failed.",
        )
        self.budget_events = Counter(
            "tokenrelay_budget_events_total",
            "Budget events: alert (alert_at crossed), exhausted (a limit reached), refused "
            "(a request answered 402), read_failure (a ledger read failed; budgets failed open), "
            "charge_expired (a charge never found in the ledger).",
            ("event",),
        )
        self.connections = Gauge(
            "tokenrelay_upstream_connections",
            "Connections of the shared upstream pool: active (in use or connecting) or idle "
            "(kept alive for reuse).",
            ("state",),
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
        for own in (self.spool_bytes, self.start_time, self.build, self.workers):
            own.merge = "own"

        self._series: dict[tuple[str, str, str, str, str], _Series] = {}
        self._known: set[str] | None = None  # route and model names allowed as label values
        self._extra = 0
        settings = getattr(gateway, "settings", None)
        shared_dir = settings.metrics.shared_dir if settings is not None else None
        self._max_extra = (
            settings.metrics.max_model_labels if settings is not None else EXTRA_LABEL_VALUES
        )
        self.snapshots: Snapshots | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._pending: asyncio.Future[None] | None = None
        if shared_dir:
            from tokenrelay.observe.snapshots import Snapshots

            self.snapshots = Snapshots(shared_dir)
            self._schedule()

    # --- per request ---------------------------------------------------------------------------

    def __call__(self, record: StreamRecord) -> None:
        attempts = record.attempts
        provider, model = record.provider, record.model
        if provider is None and attempts:  # failed before the first token: the last one tried
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
        if len(attempts) > 1 or (attempts and attempts[0].outcome != "ok"):
            self._attempts(record, attempts)
        if record.outcome == "rejected":
            self.rejections.inc(self._bounded(record.route), rejection_reason(record))

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
        for name, route in self.gateway.router.routes.items():
            names.add(name)
            names.update(target.model for target, _ in route.targets)
        return names

    def _attempts(self, record: StreamRecord, attempts: list[Attempt]) -> None:
        """Failures, retries, failover and hedging, read from the attempts in order."""
        tried: dict[tuple[str, str], str] = {}  # target -> its latest outcome
        first_failure: str | None = None
        lost_race: Attempt | None = None
        for attempt in attempts:
            outcome = attempt.outcome
            if outcome in ("circuit_open", "unsupported"):  # skipped, never sent
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
        route = self.gateway.router.routes.get(record.route)
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
        gateway = self.gateway
        self.active.set(value=len(gateway.calls))
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
            self.breaker,
            self.active,
        ]
        families += self._read_ledger()
        families += self._read_gate()
        families += gateway.responses.metrics()  # stored /v1/responses answers
        if gateway.audit is not None:
            self.audit_written.labels().value = gateway.audit.written
            self.audit_dropped.labels().value = gateway.audit.dropped
            families += [self.audit_written, self.audit_dropped]
        if self._read_connections():
            families.append(self.connections)
        families += [self.start_time, self.build]
        return families

    def _merged(self, families: list[Metric], snapshots: Snapshots) -> list[Metric]:
        others = snapshots.read_others()
        self.workers.set("running", value=1 + others.running)
        self.workers.set("exited", value=others.workers - others.running)
        merged: list[Metric] = []
        for family in families:
            if family.merge == "own":
                merged.append(family)
                continue
            summed_ever = family.merge == "sum" and not isinstance(family, Gauge)
            dumps = (others.every if summed_ever else others.live).get(family.name, [])
            merged.append(family.merged(dumps))
        merged.append(self.workers)
        return merged

    # --- this worker's snapshot ----------------------------------------------------------------

    def write_snapshot(self, *, running: bool = True) -> None:
        """This worker's families to its file (on a timer, and once more at exit)."""
        if self.snapshots is None:
            return
        skip = {"own"} if self.gateway.shared is None else {"own", "max"}  # see _tick
        families = self._present()
        self.snapshots.write(
            {f.name: f.dump() for f in families if f.merge not in skip}, running=running
        )

    def _schedule(self) -> None:
        from tokenrelay.observe.snapshots import WRITE_EVERY

        self._timer = asyncio.get_running_loop().call_later(WRITE_EVERY, self._tick)

    def _tick(self) -> None:
        self._schedule()
        if self.gateway.shared is None:  # in-process breakers differ by worker: read them
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
        self.write_snapshot(running=False)

    async def _read_breaker(self) -> None:
        try:
            breaker = self.gateway.router.breaker
            async with asyncio.timeout(1.0):  # a shared store may be a round trip away
                states = await breaker.snapshot()
        except Exception as exc:  # the other families are still worth serving
            log.warning("metrics: cannot read the circuit breakers: %s", exc)
            return
        for key, state in states.items():
            provider, _, model = key.partition(":")
            self.breaker.set(provider, self._bounded(model), value=BREAKER_STATES.get(state, 0))

    def _read_ledger(self) -> list[Metric]:
        ledger = self.gateway.ledger
        if ledger is None:
            return []
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
        size = _spool_bytes(ledger.spool_dir)
        if size is not None:
            self.spool_bytes.set(value=size)
            families.append(self.spool_bytes)
        return families

    def _read_gate(self) -> list[Metric]:
        gate = self.gateway.gate
        limiter = gate.limiter
        self.limiter_failures.labels("open").value = limiter.failures_open
        self.limiter_failures.labels("closed").value = limiter.failures_closed
        self.charges_lost.labels().value = limiter.charges_lost
        families: list[Metric] = [self.limiter_failures, self.charges_lost]
        shared = self.gateway.shared
        if shared is not None:
            self.shared_outages.labels().value = shared.link.outages
            self.breaker_local.labels().value = shared.store.local_calls
            families += [self.shared_outages, self.breaker_local]
        budgets = gate.budgets
        if budgets is not None:
            counts = budgets.metrics
            for event, value in (
                ("alert", counts.alerts),
                ("exhausted", counts.exhausted),
                ("refused", counts.refused),
                ("read_failure", counts.failures),
                ("charge_expired", counts.charges_expired),
            ):
                self.budget_events.labels(event).value = value
            families.append(self.budget_events)
        return families

    def _read_connections(self) -> bool:
        """The shared upstream pool's connections, in use and idle (``UpstreamPool``)."""
        active, idle = self.gateway.pool.connections
        self.connections.set("active", value=active)
        self.connections.set("idle", value=idle)
        return True


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


def _spool_bytes(spool_dir: os.PathLike[str] | str) -> int | None:
    """The spool files' size on disk: one directory scan and a stat per file (a handful)."""
    from tokenrelay.metering.writer import PREFIX, SEGMENT

    total = 0
    try:
        with os.scandir(spool_dir) as entries:
            for entry in entries:
                name = entry.name
                if name.startswith(PREFIX) and name.endswith(SEGMENT):
                    try:
                        total += entry.stat(follow_symlinks=False).st_size
                    except FileNotFoundError:
                        continue  # written and removed meanwhile
    except OSError:
        return None
    return total


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

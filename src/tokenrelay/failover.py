"""Failover before the first token: try a route's targets in order, each with its retries, until
one produces content within its first-token deadline, and hold the response head until then.

What moves on, what is retried and what is returned at once is the table in docs/failover.md:
connection errors, 408/409/429/5xx/529 and an error event before any content move on after a
jittered retry that honours ``retry-after`` when it fits the route's budget; a missed first-token
deadline moves on at once (a hanging target is the likeliest to hang again), and is retried only
on the last target that can carry the request; 400/413/415/422 fail the same way everywhere and
are returned at once; 401/403 are configuration errors, logged loudly by the provider and passed
over, and reach the client only as a generic 502. A target whose dialect cannot carry the request
(``Untranslatable``) is skipped without a request, and the client gets a 400 only when no target
of the route can carry it. After the first token the response is committed, and a failure becomes
an in-band error (the relay's business, not this module's).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import random
import time
from collections.abc import AsyncGenerator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Final

import msgspec

from tokenrelay.balance import Balancer, Group
from tokenrelay.breaker import CircuitBreaker
from tokenrelay.deadline import Deadline
from tokenrelay.dialects.responses.hosted import HostedPolicy
from tokenrelay.latency import LatencyStats
from tokenrelay.model import (
    CONTENT_EVENTS,
    Error,
    ErrorType,
    Event,
    Finish,
    GatewayError,
    Request,
    Untranslatable,
    Usage,
    merge_usage,
)
from tokenrelay.providers import Endpoint, Provider
from tokenrelay.records import Attempt, AttemptOutcome
from tokenrelay.settings import RouteSettings, TargetSettings

if TYPE_CHECKING:
    from tokenrelay.hedging import Outcome, Stream
    from tokenrelay.observe.tracing import AttemptTrace, RequestTrace

# Errors that would fail the same way on any target: return them to the client at once.
FINAL_STATUSES = frozenset({400, 413, 415, 422})
# A target that refuses our key is misconfigured: never retried, loudly logged, passed over.
AUTH_STATUSES = frozenset({401, 403})
# What an attempt's outcome says for a target skipped because it cannot carry the request.
UNSUPPORTED: Final = "unsupported"
# The rate-limit key every provider model shares: a new name is not a new window.
PROVIDER_MODELS = "provider_models"
# Observations of a target's time to first token needed before hedging trusts its percentile.
HEDGE_MIN_SAMPLES = 20

log = logging.getLogger("tokenrelay.failover")

Events = AsyncGenerator[list[Event], None]


@dataclass(slots=True)
class Route:
    """A route as a request walks it: its settings and its targets with their providers (the
    router builds them, from the configuration or for a provider model asked for by name)."""

    name: str
    settings: RouteSettings
    targets: list[tuple[TargetSettings, Provider]]
    configured: bool = True  # False for a provider model asked for by name
    groups: tuple[Group, ...] = ()  # load-balanced groups of targets (``balance.plan``)

    @property
    def limit_key(self) -> str:
        """What ``rate_limit`` is counted under: the route, or all provider models as one."""
        return self.name if self.configured else PROVIDER_MODELS


class RouteFailed(GatewayError):
    """Every target failed before the first token; carries the attempts for the response head."""

    attempts: list[Attempt]


def _nothing() -> None:
    """An ungrouped target's stream is not counted in flight: nothing to release."""


@dataclass(slots=True)
class OpenStream:
    """A stream whose first content event has arrived: ``pending`` holds every event so far."""

    provider: Provider
    target: TargetSettings
    events: Events
    pending: list[Event]
    attempts: list[Attempt] = field(default_factory=list)
    first_event_at: float = 0.0
    dropped_tools: list[str] = field(default_factory=list)  # hosted tools the route dropped
    release: Callable[[], None] = _nothing  # the relay calls it once the stream has ended


@dataclass(slots=True)
class _Target:
    """One target of the route as this request will call it; the body is built on first use,
    so a target that is never reached costs nothing."""

    settings: TargetSettings
    provider: Provider
    deadline: float
    request: Request
    client_headers: Mapping[str, str]
    forward: Sequence[str] = ()  # the route's forward_client_headers
    hosted_tools: HostedPolicy = "refuse"  # the route's: hosted tools it cannot carry
    _prepared: tuple[bytes, dict[str, str]] | None = None
    dropped: list[str] = field(default_factory=list)  # hosted tools left out of the body
    refusal: Untranslatable | None = None  # why its dialect cannot carry the request, if so
    span: AttemptTrace | None = None  # the current try's, when tracing is on
    group: str | None = None  # its load-balanced group, if any
    pick: str | None = None  # why it has its place in its group (``balance.Pick``)

    @property
    def key(self) -> str:
        return f"{self.provider.name}:{self.settings.model}"

    @property
    def label(self) -> str:
        return f"{self.provider.name}/{self.settings.model}"

    def attempt(
        self, outcome: AttemptOutcome, status: int, ms: float, usage: Usage | None = None
    ) -> Attempt:
        """One try of this target, as the attempts list records it."""
        name, model = self.provider.name, self.settings.model
        return Attempt(name, model, outcome, status, ms, usage, self.group, self.pick)

    def prepared(self) -> tuple[bytes, dict[str, str]]:
        """The body and headers; raises ``Untranslatable`` when the dialect cannot carry the
        request (``Failover._carries`` asks first, so a try never does)."""
        if self._prepared is None:
            body, self.dropped = self.provider.build_body(
                self.request, self.settings, self.hosted_tools
            )
            headers = self.provider.build_headers(self.settings, self.client_headers, self.forward)
            self._prepared = body, headers
        return self._prepared

    @property
    def endpoint(self) -> Endpoint:
        """The provider's API this request goes to (``api = "auto"`` picks per request)."""
        return self.provider.for_request(self.request, self.settings.model)


class Failover:
    """One request's walk along its route. Records every attempt, for the response head, the
    log line and metering."""

    def __init__(
        self,
        route: Route,
        request: Request,
        headers: Mapping[str, str],
        breaker: CircuitBreaker,
        latency: LatencyStats,
        trace: RequestTrace | None = None,
        balancer: Balancer | None = None,
    ) -> None:
        self.route = route
        self.balancer = balancer
        self.cooling: dict[str, float] = {}  # grouped targets passed over after a 429
        self.holds: list[Callable[[], None]] = []  # least_busy picks awaiting their stream
        self.settings = route.settings
        self.breaker = breaker
        self.latency = latency
        self.started = time.perf_counter()
        self.attempts: list[Attempt] = []
        self.errors: list[Error] = []
        self.hedged = False  # at most one hedge per request: load stays within twice
        self.trace = trace
        default = route.settings.first_token_timeout
        hosted = route.settings.hosted_tools
        self.targets = [
            _Target(
                target,
                provider,
                target.first_token_timeout or default,
                request,
                headers,
                route.settings.forward_client_headers,
                hosted,
            )
            for target, provider in route.targets
        ]

    async def run(self) -> OpenStream:
        """The first target's stream to produce content; ``RouteFailed`` with the most telling
        status when none does within the route's budget."""
        try:
            if self.route.groups and self.balancer is not None:
                await self._balance(self.balancer)
            index, first_retry = 0, 0
            while index < len(self.targets):
                outcome = await self._walk(index, first_retry)
                if isinstance(outcome, OpenStream):
                    return outcome
                index, first_retry = outcome
        finally:
            for release in self.holds:  # least_busy picks: counted in flight now, or failed
                release()
        refusals = self._refusals()
        if not self.errors and not refusals:
            self.errors.append(Error("timeout", f"route {self.route.name!r} spent its budget", 504))
        raise summarize(self.errors, self.attempts, refusals)

    async def _balance(self, balancer: Balancer) -> None:
        """Each group's targets in the order its strategy gives for this request."""
        targets = self.targets
        for group in self.route.groups:
            members = targets[group.start : group.end]
            keys = [t.key for t in members]
            weights = [t.settings.weight for t in members]
            order, cooling, hold = await balancer.order(
                self.route.name, group, keys, weights, members[0].request, self.breaker
            )
            self.cooling.update(cooling)
            if hold is not None:
                self.holds.append(hold)
            for place, (position, pick) in enumerate(order):
                target = targets[group.start + place] = members[position]
                target.group, target.pick = group.name, pick

    def _remaining(self) -> float:
        return self.settings.budget - (time.perf_counter() - self.started)

    def _limit(self, target: _Target) -> tuple[float, str]:
        remaining = self._remaining()
        if remaining < target.deadline:
            return remaining, f"the route's budget of {self.settings.budget:g}s ran out"
        return target.deadline, f"no token within {target.deadline:g}s"

    async def _walk(self, index: int, first_retry: int) -> OpenStream | tuple[int, int]:
        """Target ``index``'s tries from ``first_retry`` on: its stream, or where to go next."""
        target = self.targets[index]
        if not self._carries(target):
            return index + 1, 0
        retries = self.settings.retries
        for retry in range(first_retry, retries + 1):
            if self._remaining() <= 0:
                break
            if not await self._allowed(target):
                break
            limit, why = self._limit(target)
            hedge = await self._hedge_for(index, limit)
            if hedge is not None:
                after, delay = hedge
                return await self._race(target, after, delay, limit, why)
            attempt_started = time.perf_counter()
            stream, error = await self._start(target, limit, why)
            if stream is not None:
                return await self._won(target, stream, attempt_started)
            assert error is not None
            if not await self._lost(target, error, attempt_started):
                break
            if retry == retries:
                break
            if _missed_deadline(error) and self._carrier_after(index) is not None:
                break  # it hangs: the next target now, not a second deadline on this one
            wait = _backoff(self.settings.retry_backoff, retry, error.retry_after)
            if wait >= self._remaining():
                break  # the upstream asks for longer than we may wait: next target
            await asyncio.sleep(wait)
        return index + 1, 0

    def _start(self, target: _Target, limit: float, why: str) -> Awaitable[Outcome]:
        """One try of ``target`` (see ``attempt``); with tracing on, under a span of its own
        whose ``traceparent`` goes upstream in a copy of the target's cached headers."""
        body, headers = target.prepared()
        if self.trace is not None:
            target.span, headers = self.trace.attempt(
                target.provider, target.settings.model, target.request, headers
            )
        return attempt(target.provider, body, headers, limit, why, target.endpoint)

    def _carries(self, target: _Target) -> bool:
        """Whether ``target``'s dialect can carry the request. One that cannot is recorded once
        (``outcome=unsupported``) and never tried, hedged to, or counted by its breaker."""
        if target.refusal is not None:
            return False
        try:
            target.prepared()
        except Untranslatable as refusal:
            target.refusal = refusal
            self.attempts.append(target.attempt(UNSUPPORTED, 0, 0.0))
            return False
        return True

    def _carrier_after(self, index: int) -> int | None:
        """The next target after ``index`` that can carry the request, if any."""
        for later in range(index + 1, len(self.targets)):
            if self._carries(self.targets[later]):
                return later
        return None

    async def _allowed(self, target: _Target) -> bool:
        if self.cooling and target.key in self.cooling:
            return self._cooling_down(target)
        if await self.breaker.allow(target.key):
            return True
        name = target.provider.name
        self.attempts.append(target.attempt("circuit_open", 503, 0.0))
        self.errors.append(Error("overloaded", f"{name} is skipped for now: it kept failing", 503))
        return False

    def _cooling_down(self, target: _Target) -> bool:
        """Pass over a grouped target cooling down after a 429 (``outcome=cooling_down``)."""
        left = self.cooling[target.key]
        self.attempts.append(target.attempt("cooling_down", 429, 0.0))
        name = target.provider.name
        message = f"{name} is rate limited for {left:.1f}s more"
        self.errors.append(Error("rate_limit", message, 429, retry_after=round(left, 3)))
        return False

    async def _won(self, target: _Target, stream: Stream, since: float) -> OpenStream:
        now = time.perf_counter()
        if target.span is not None:
            target.span.won()
        self.latency.observe(target.key, now - since)
        await self.breaker.success(target.key)
        self.attempts.append(target.attempt("ok", 200, (now - since) * 1000))
        events, pending = stream
        opened = OpenStream(
            target.provider, target.settings, events, pending, self.attempts, now, target.dropped
        )
        if target.group is not None and self.balancer is not None:
            opened.release = self.balancer.inflight.acquire(target.key)
            pick = target.pick or "fallback"
            self.balancer.served(self.route.name, target.group, target.provider.name, pick)
        return opened

    async def _lost(self, target: _Target, error: Error, since: float) -> bool:
        """Record a failed attempt; ``False`` when the target is not worth another try. Raises
        ``RouteFailed`` for an error that would fail the same way on every target.

        A refused credential (401/403) is the operator's problem, not the client's: the provider
        has logged the upstream's words (redacted) as a CONFIGURATION ERROR, and the client only
        ever hears a generic 502 about it, never the upstream's message, which may quote our key.
        """
        ms = (time.perf_counter() - since) * 1000
        if target.span is not None:
            target.span.failed(error)
        refused = error.status in AUTH_STATUSES
        outcome: AttemptOutcome = "upstream_auth" if refused else error.type
        self.attempts.append(target.attempt(outcome, error.status, ms, error.usage))
        self.errors.append(_for_client(error) if refused else error)
        if error.status in FINAL_STATUSES:
            raise summarize(self.errors, self.attempts, self._refusals())
        await self.breaker.failure(target.key)
        if error.status == 429 and target.group is not None and self.balancer is not None:
            self._cool(target, error, self.balancer)
            return False  # another target of its group now, not a wait for this one
        return not refused

    def _cool(self, target: _Target, error: Error, balancer: Balancer) -> None:
        """Pass a grouped target that answered 429 over until its ``retry-after``."""
        group = next(g for g in self.route.groups if g.name == target.group)
        seconds = error.retry_after if error.retry_after else group.settings.cooldown
        balancer.cooldowns.cool(target.key, seconds)

    def _refusals(self) -> list[tuple[str, Untranslatable]]:
        return [(t.label, t.refusal) for t in self.targets if t.refusal is not None]

    async def _hedge_for(self, index: int, limit: float) -> tuple[int, float] | None:
        """The next target that can carry the request and how long to wait for the current one
        before starting it, when the route hedges and a hedge would start before the current
        attempt's deadline."""
        settings = self.settings
        if not settings.hedge or self.hedged:
            return None
        after = self._carrier_after(index)
        if after is None:
            return None
        current, backup = self.targets[index], self.targets[after]
        delay = settings.hedge_delay
        if delay is None:
            delay = self.latency.quantile(current.key, settings.hedge_quantile, HEDGE_MIN_SAMPLES)
        if delay is None:
            delay = current.deadline / 2  # no history yet
        if delay >= limit or not await self.breaker.allow(backup.key):
            return None
        self.hedged = True
        return after, delay

    async def _race(
        self, first: _Target, after: int, delay: float, limit: float, why: str
    ) -> OpenStream | tuple[int, int]:
        """The current target against target ``after`` (the next that can carry the request),
        started ``delay`` seconds later or as soon as the current one fails: whichever produces
        content first is served, the other is cancelled and its connection closed. With no
        winner the walk goes on at the backup's second try (its first was the hedge), unless
        the backup is not worth one: it refused our key, or it missed its deadline and another
        target is left."""
        from tokenrelay.hedging import Contender, race  # only a route that hedges: not at start

        backup = self.targets[after]
        retry_backup = True

        contenders = [
            Contender(first, lambda: self._start(first, limit, why)),
            Contender(backup, lambda: self._start(backup, *self._limit(backup))),
        ]
        async with contextlib.aclosing(race(contenders, delay)) as results:
            async for result in results:
                if result.stream is None:
                    error = result.error
                    assert error is not None
                    worth = await self._lost(result.key, error, result.started)
                    if result.key is backup:
                        retry_backup = worth and not (
                            _missed_deadline(error) and self._carrier_after(after) is not None
                        )
                    continue
                for loser in result.cancelled:
                    self.attempts.append(loser.key.attempt("hedged_out", 0, loser.ms))
                    if loser.key.span is not None:
                        loser.key.span.hedged_out()
                return await self._won(result.key, result.stream, result.started)
        return (after, 1) if retry_backup else (after + 1, 0)


async def attempt(
    provider: Provider,
    body: bytes,
    headers: Mapping[str, str],
    limit: float,
    why: str,
    endpoint: Endpoint | None = None,
) -> Outcome:
    """One try: the stream and its events so far if content arrived within ``limit`` seconds,
    else the error that ended it. The limit covers connect, the response head and the first
    content event; a slow but healthy generation is never cut off after that."""
    events = provider.stream(body, headers, endpoint)
    try:
        async with Deadline(limit):
            pending, error = await _until_content(events)
    except TimeoutError:
        await events.aclose()
        return None, Error("timeout", f"{provider.name}: {why}", 504)
    except BaseException:
        await events.aclose()
        raise
    if error is not None:
        await events.aclose()
        used = [event for event in pending if type(event) is Usage]
        if used:
            error = msgspec.structs.replace(error, usage=functools.reduce(merge_usage, used))
        return None, error
    return (events, pending), None


def _missed_deadline(error: Error) -> bool:
    """A try that ended in a timeout: no first token within the deadline, no connection or no
    answer in time, or the upstream's own 504. The strongest sign a target is unwell now."""
    return error.type == "timeout"


def _for_client(error: Error) -> Error:
    """A refused credential as the client hears of it: a 502 about the gateway, not a 401/403
    about the client's own key. Its message is already the provider's generic one."""
    return msgspec.structs.replace(error, type="upstream_unavailable", status=502)


def _backoff(base: float, retry: int, retry_after: float | None) -> float:
    """Seconds before retry ``retry + 1``: what the upstream asked for, else jittered
    exponential backoff (full jitter around the doubling, so retries from many requests
    spread out instead of arriving together)."""
    if retry_after is not None:
        return retry_after
    return float(base * 2**retry * random.uniform(0.5, 1.5))


async def _until_content(events: Events) -> tuple[list[Event], Error | None]:
    """Read until a content event, a finish, or an error arrives."""
    pending: list[Event] = []
    async for batch in events:
        for position, event in enumerate(batch):
            if isinstance(event, Error):
                return pending, event
            if isinstance(event, (*CONTENT_EVENTS, Finish)):
                pending.extend(batch[position:])
                return pending, None
            pending.append(event)
    return pending, Error("upstream_unavailable", "the upstream stream was empty", 502)


def summarize(
    errors: list[Error],
    attempts: list[Attempt],
    refusals: Sequence[tuple[str, Untranslatable]] = (),
) -> RouteFailed:
    """One error for the client from every failed attempt: the upstream's own status and words
    when they all agree, else a 503 (or 504 when all timed out) listing each distinct failure.
    ``refusals`` are the targets that could not carry the request (``"provider/model"`` and
    why): with no failure besides, the request itself is the problem (a 400 naming the field);
    with failures, the status is the outage's and the message says what was skipped."""
    if not errors:
        return _uncarried(refusals, attempts)
    last = errors[-1]
    failed = [a for a in attempts if a.outcome not in ("ok", "hedged_out", UNSUPPORTED)]
    pairs = zip(failed, errors, strict=False)  # strict fails only for a budget spent untried
    distinct = list(dict.fromkeys(f"{a.provider}: {e.message}" for a, e in pairs)) or [last.message]
    tries = f" ({len(errors)} attempts)" if len(errors) > 1 else ""
    if last.status in FINAL_STATUSES:
        error = RouteFailed(last.type, last.message, last.status, retry_after=last.retry_after)
    elif all(e.status == 429 for e in errors):
        waits = [e.retry_after for e in errors if e.retry_after is not None]
        message = (
            last.message + tries
            if len(distinct) == 1
            else "every provider of this route is rate limited; retry later"
        )
        error = RouteFailed("rate_limit", message, 429, retry_after=min(waits) if waits else None)
    elif len(distinct) == 1:
        error = RouteFailed(last.type, last.message + tries, last.status)
    else:
        status = 504 if all(e.status == 504 for e in errors) else 503
        kind: ErrorType = "overloaded" if status == 503 else "timeout"
        error = RouteFailed(kind, f"no provider answered ({'; '.join(distinct)})", status)
    if refusals:
        skipped = "; ".join(f"{label}: {refusal.message}" for label, refusal in refusals)
        error.message += f"; skipped as unable to carry this request: {skipped}"
    error.attempts = attempts
    return error


def _uncarried(
    refusals: Sequence[tuple[str, Untranslatable]], attempts: list[Attempt]
) -> RouteFailed:
    """No target of the route can carry the request: a 400 naming the (first) field."""
    first = refusals[0][1]
    message = first.message
    if len(refusals) > 1:
        each = "; ".join(f"{label}: {refusal.message}" for label, refusal in refusals)
        message = f"no target of this route can carry the request ({each})"
    error = RouteFailed(first.type, message, first.status, param=first.param)
    error.attempts = attempts
    return error

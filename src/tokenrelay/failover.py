"""Failover before the first token: try a route's targets in order, each with its retries, until
one produces content within its first-token deadline, and hold the response head until then.

What moves on, what is retried and what is returned at once is the README's failover table:
connection errors, 408/409/429/5xx/529, the first-token deadline and an error event before any
content move on (after a jittered retry that honours ``retry-after`` when it fits the route's
budget); 400/413/415/422 fail the same way everywhere and are returned at once; 401/403 are
configuration errors, logged loudly and passed over. After the first token the response is
committed, and a failure becomes an in-band error (the relay's business, not this module's).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import random
import time
from collections.abc import AsyncGenerator, Awaitable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import msgspec

from tokenrelay.breaker import CircuitBreaker
from tokenrelay.hedging import Contender, Outcome, Stream, race
from tokenrelay.latency import LatencyStats
from tokenrelay.model import (
    CONTENT_EVENTS,
    Error,
    Event,
    Finish,
    GatewayError,
    Request,
    Usage,
    merge_usage,
)
from tokenrelay.providers import Provider
from tokenrelay.settings import TargetSettings

if TYPE_CHECKING:
    from tokenrelay.observe.tracing import AttemptTrace, RequestTrace
    from tokenrelay.router import Route

# Errors that would fail the same way on any target: return them to the client at once.
FINAL_STATUSES = frozenset({400, 413, 415, 422})
# A target that refuses our key is misconfigured: never retried, loudly logged, passed over.
AUTH_STATUSES = frozenset({401, 403})
# Observations of a target's time to first token needed before hedging trusts its percentile.
HEDGE_MIN_SAMPLES = 20

log = logging.getLogger("tokenrelay.failover")

Events = AsyncGenerator[list[Event], None]


class RouteFailed(GatewayError):
    """Every target failed before the first token; carries the attempts for the response head."""

    attempts: list[Attempt]


@dataclass(slots=True)
class Attempt:
    provider: str
    model: str
    outcome: str  # "ok", "hedged_out" (lost a hedge race), or the normalized error type
    status: int
    ms: float
    usage: Usage | None = None  # what a failed attempt had consumed, when the upstream said


@dataclass(slots=True)
class OpenStream:
    """A stream whose first content event has arrived: ``pending`` holds every event so far."""

    provider: Provider
    target: TargetSettings
    events: Events
    pending: list[Event]
    attempts: list[Attempt] = field(default_factory=list)
    first_event_at: float = 0.0


@dataclass(slots=True)
class _Target:
    """One target of the route as this request will call it; the body is built on first use,
    so a target that is never reached costs nothing."""

    settings: TargetSettings
    provider: Provider
    deadline: float
    request: Request
    client_headers: Mapping[str, str]
    _prepared: tuple[bytes, dict[str, str]] | None = None
    span: AttemptTrace | None = None  # the current try's, when tracing is on

    @property
    def key(self) -> str:
        return f"{self.provider.name}:{self.settings.model}"

    def prepared(self) -> tuple[bytes, dict[str, str]]:
        if self._prepared is None:
            body = self.provider.build_body(self.request, self.settings)
            self._prepared = body, self.provider.build_headers(self.settings, self.client_headers)
        return self._prepared


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
    ) -> None:
        self.route = route
        self.settings = route.settings
        self.breaker = breaker
        self.latency = latency
        self.started = time.perf_counter()
        self.attempts: list[Attempt] = []
        self.errors: list[Error] = []
        self.hedged = False  # at most one hedge per request: load stays within twice
        self.trace = trace
        default = route.settings.first_token_timeout
        self.targets = [
            _Target(target, provider, target.first_token_timeout or default, request, headers)
            for target, provider in route.targets
        ]

    async def run(self) -> OpenStream:
        """The first target's stream to produce content; ``RouteFailed`` with the most telling
        status when none does within the route's budget."""
        index, first_retry = 0, 0
        while index < len(self.targets):
            outcome = await self._walk(index, first_retry)
            if isinstance(outcome, OpenStream):
                return outcome
            index, first_retry = outcome
        if not self.errors:
            self.errors.append(Error("timeout", f"route {self.route.name!r} spent its budget", 504))
        raise summarize(self.errors, self.attempts)

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
        retries = self.settings.retries
        for retry in range(first_retry, retries + 1):
            if self._remaining() <= 0:
                break
            if not await self._allowed(target):
                break
            limit, why = self._limit(target)
            hedge = await self._hedge_for(index, limit)
            if hedge is not None:
                backup, delay = hedge
                return await self._race(target, backup, delay, limit, why, index)
            attempt_started = time.perf_counter()
            stream, error = await self._start(target, limit, why)
            if stream is not None:
                return await self._won(target, stream, attempt_started)
            assert error is not None
            if not await self._lost(target, error, attempt_started):
                break
            if retry == retries:
                break
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
        return attempt(target.provider, body, headers, limit, why)

    async def _allowed(self, target: _Target) -> bool:
        if await self.breaker.allow(target.key):
            return True
        name = target.provider.name
        self.attempts.append(Attempt(name, target.settings.model, "circuit_open", 503, 0.0))
        self.errors.append(Error("overloaded", f"{name} is skipped for now: it kept failing", 503))
        return False

    async def _won(self, target: _Target, stream: Stream, since: float) -> OpenStream:
        now = time.perf_counter()
        if target.span is not None:
            target.span.won()
        self.latency.observe(target.key, now - since)
        await self.breaker.success(target.key)
        model = target.settings.model
        self.attempts.append(Attempt(target.provider.name, model, "ok", 200, (now - since) * 1000))
        events, pending = stream
        return OpenStream(target.provider, target.settings, events, pending, self.attempts, now)

    async def _lost(self, target: _Target, error: Error, since: float) -> bool:
        """Record a failed attempt; ``False`` when the target is not worth another try. Raises
        ``RouteFailed`` for an error that would fail the same way on every target."""
        ms = (time.perf_counter() - since) * 1000
        if target.span is not None:
            target.span.failed(error)
        name = target.provider.name
        model = target.settings.model
        self.attempts.append(Attempt(name, model, error.type, error.status, ms, error.usage))
        self.errors.append(error)
        if error.status in FINAL_STATUSES:
            raise summarize(self.errors, self.attempts)
        await self.breaker.failure(target.key)
        if error.status in AUTH_STATUSES:
            log.error(
                "CONFIGURATION ERROR: %s refused our credentials (%d: %s); check its API key. "
                "Moving on to the next target.",
                name,
                error.status,
                error.message,
            )
            return False
        return True

    async def _hedge_for(self, index: int, limit: float) -> tuple[_Target, float] | None:
        """The next target and how long to wait for the current one before starting it, when
        the route hedges and a hedge would start before the current attempt's deadline."""
        settings = self.settings
        if not settings.hedge or self.hedged or index + 1 >= len(self.targets):
            return None
        current, backup = self.targets[index], self.targets[index + 1]
        delay = settings.hedge_delay
        if delay is None:
            delay = self.latency.quantile(current.key, settings.hedge_quantile, HEDGE_MIN_SAMPLES)
        if delay is None:
            delay = current.deadline / 2  # no history yet
        if delay >= limit or not await self.breaker.allow(backup.key):
            return None
        self.hedged = True
        return backup, delay

    async def _race(
        self, first: _Target, backup: _Target, delay: float, limit: float, why: str, index: int
    ) -> OpenStream | tuple[int, int]:
        """The current target against the next one, started ``delay`` seconds later or as soon
        as the current one fails: whichever produces content first is served, the other is
        cancelled and its connection closed. With no winner the walk goes on at the next
        target's second try (its first was the hedge)."""

        contenders = [
            Contender(first, lambda: self._start(first, limit, why)),
            Contender(backup, lambda: self._start(backup, *self._limit(backup))),
        ]
        async with contextlib.aclosing(race(contenders, delay)) as results:
            async for result in results:
                if result.stream is None:
                    assert result.error is not None
                    await self._lost(result.key, result.error, result.started)
                    continue
                for loser in result.cancelled:
                    name, model = loser.key.provider.name, loser.key.settings.model
                    self.attempts.append(Attempt(name, model, "hedged_out", 0, loser.ms))
                    if loser.key.span is not None:
                        loser.key.span.hedged_out()
                return await self._won(result.key, result.stream, result.started)
        return index + 1, 1


async def attempt(
    provider: Provider, body: bytes, headers: Mapping[str, str], limit: float, why: str
) -> Outcome:
    """One try: the stream and its events so far if content arrived within ``limit`` seconds,
    else the error that ended it. The limit covers connect, the response head and the first
    content event; a slow but healthy generation is never cut off after that."""
    events = provider.stream(body, headers)
    try:
        async with asyncio.timeout(limit):
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


def summarize(errors: list[Error], attempts: list[Attempt]) -> RouteFailed:
    """One error for the client from every failed attempt: the upstream's own status and words
    when they all agree, else a 503 (or 504 when all timed out) listing each distinct failure."""
    last = errors[-1]
    failed = [a for a in attempts if a.outcome not in ("ok", "hedged_out")]
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
        kind = "overloaded" if status == 503 else "timeout"
        error = RouteFailed(kind, f"no provider answered ({'; '.join(distinct)})", status)
    error.attempts = attempts
    return error

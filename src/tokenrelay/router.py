"""Which upstream serves a request: route resolution, the route's prompt policy, and the attempt
loop that holds the response head until the first content event is in hand.

Before the first token a failing target is passed over for the next one; after it, the response is
committed and a failure becomes an in-band error. (Deadlines, retries, circuit breaking and hedging
build on ``open_stream``.)
"""

from __future__ import annotations

import asyncio
import logging
import random
import re
import time
from collections.abc import AsyncGenerator, Mapping
from dataclasses import dataclass, field

from tokenrelay.breaker import CircuitBreaker
from tokenrelay.model import CONTENT_EVENTS, Error, Event, Finish, GatewayError, Request
from tokenrelay.providers import Provider
from tokenrelay.settings import RouteSettings, Settings, TargetSettings

# Model names that belong to a provider when no route has that name.
_PROVIDER_MODELS = (
    (re.compile(r"claude-"), "anthropic"),
    (re.compile(r"(gpt-|chatgpt-|o\d)"), "openai"),
)
# Errors that would fail the same way on any target: return them to the client at once.
_FINAL_STATUSES = frozenset({400, 413, 415, 422})
# A target that refuses our key is misconfigured: never retried, loudly logged, passed over.
_AUTH_STATUSES = frozenset({401, 403})

log = logging.getLogger("tokenrelay.router")


@dataclass(slots=True)
class Route:
    name: str
    settings: RouteSettings
    targets: list[tuple[TargetSettings, Provider]]
    configured: bool = True  # False for a provider model asked for by name


class RouteFailed(GatewayError):
    """Every target failed before the first token; carries the attempts for the response head."""

    attempts: list[Attempt]


@dataclass(slots=True)
class Attempt:
    provider: str
    model: str
    outcome: str  # "ok" or the normalized error type
    status: int
    ms: float


@dataclass(slots=True)
class OpenStream:
    """A stream whose first content event has arrived: ``pending`` holds every event so far."""

    provider: Provider
    target: TargetSettings
    events: AsyncGenerator[list[Event], None]
    pending: list[Event]
    attempts: list[Attempt] = field(default_factory=list)
    first_event_at: float = 0.0


class Router:
    def __init__(
        self,
        settings: Settings,
        providers: Mapping[str, Provider],
        breaker: CircuitBreaker | None = None,
    ) -> None:
        self._settings = settings
        self._providers = providers
        self.breaker = breaker or CircuitBreaker(settings.breaker)
        self.routes = {
            name: Route(
                name,
                route,
                [(t, providers[t.provider]) for t in route.targets if t.provider in providers],
            )
            for name, route in settings.routes.items()
        }

    def resolve(self, request: Request) -> Route:
        """The route for ``request.model``, with the route's system prompt and token policy
        applied to ``request``. Raises ``GatewayError`` 404 or 400 in plain words."""
        route = self.routes.get(request.model) or self._provider_route(request.model)
        if route is None:
            raise GatewayError(
                "not_found",
                f"model {request.model!r} is neither a route nor a model of a configured "
                f"provider; routes: {', '.join(sorted(self.routes)) or 'none'}",
                404,
                param="model",
            )
        if not route.targets:
            raise GatewayError(
                "api_error",
                f"route {route.name!r} has no configured provider; set ANTHROPIC_API_KEY or "
                "OPENAI_API_KEY, or configure the route's providers",
                503,
            )
        _apply_policy(route, request)
        return route

    def _provider_route(self, model: str) -> Route | None:
        if not self._settings.allow_provider_models:
            return None
        provider_name, sep, rest = model.partition("/")
        if sep and provider_name in self._providers and rest:
            target = TargetSettings(provider=provider_name, model=rest)
        else:
            owner = next((p for pattern, p in _PROVIDER_MODELS if pattern.match(model)), None)
            if owner is None or owner not in self._providers:
                return None
            target = TargetSettings(provider=owner, model=model)
        settings = RouteSettings(targets=[target], system=None, allow_client_system=True)
        return Route(model, settings, [(target, self._providers[target.provider])], False)

    async def open_stream(
        self, route: Route, request: Request, headers: Mapping[str, str]
    ) -> OpenStream:
        """Try the route's targets in order, each with its retries, until one produces content
        within its first-token deadline; raise ``RouteFailed`` with the most telling status when
        none does or the route's budget runs out."""
        settings = route.settings
        started = time.perf_counter()
        attempts: list[Attempt] = []
        errors: list[Error] = []
        for target, provider in route.targets:
            body = provider.build_body(request, target)
            upstream_headers = provider.build_headers(target, headers)
            deadline = target.first_token_timeout or settings.first_token_timeout
            key = f"{provider.name}:{target.model}"
            for retry in range(settings.retries + 1):
                remaining = settings.budget - (time.perf_counter() - started)
                if remaining <= 0:
                    break
                if not await self.breaker.allow(key):
                    attempts.append(Attempt(provider.name, target.model, "circuit_open", 503, 0.0))
                    message = f"{provider.name} is skipped for now: it kept failing"
                    errors.append(Error("overloaded", message, 503))
                    break
                attempt_started = time.perf_counter()
                if remaining < deadline:
                    limit, why = remaining, f"the route's budget of {settings.budget:g}s ran out"
                else:
                    limit, why = deadline, f"no token within {deadline:g}s"
                stream, error = await _attempt(provider, body, upstream_headers, limit, why)
                ms = (time.perf_counter() - attempt_started) * 1000
                if stream is not None:
                    await self.breaker.success(key)
                    attempts.append(Attempt(provider.name, target.model, "ok", 200, ms))
                    events, pending = stream
                    now = time.perf_counter()
                    return OpenStream(provider, target, events, pending, attempts, now)
                assert error is not None
                attempts.append(Attempt(provider.name, target.model, error.type, error.status, ms))
                errors.append(error)
                if error.status in _FINAL_STATUSES:
                    raise _summarize(errors, attempts)
                await self.breaker.failure(key)
                if error.status in _AUTH_STATUSES:
                    log.error(
                        "CONFIGURATION ERROR: %s refused our credentials (%d: %s); check its API "
                        "key. Moving on to the next target.",
                        provider.name,
                        error.status,
                        error.message,
                    )
                    break
                if retry == settings.retries:
                    break
                wait = _backoff(settings.retry_backoff, retry, error.retry_after)
                left = settings.budget - (time.perf_counter() - started)
                if wait >= left:
                    break  # the upstream asks for longer than we may wait: next target
                await asyncio.sleep(wait)
        if not errors:
            errors.append(Error("timeout", f"route {route.name!r} spent its budget", 504))
        raise _summarize(errors, attempts)


Events = AsyncGenerator[list[Event], None]


async def _attempt(
    provider: Provider, body: bytes, headers: Mapping[str, str], limit: float, why: str
) -> tuple[tuple[Events, list[Event]], None] | tuple[None, Error]:
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
        return None, error
    return (events, pending), None


def _backoff(base: float, retry: int, retry_after: float | None) -> float:
    """Seconds before retry ``retry + 1``: what the upstream asked for, else jittered
    exponential backoff (full jitter around the doubling, so retries from many requests
    spread out instead of arriving together)."""
    if retry_after is not None:
        return retry_after
    return float(base * 2**retry * random.uniform(0.5, 1.5))


async def _until_content(
    events: AsyncGenerator[list[Event], None],
) -> tuple[list[Event], Error | None]:
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


def _summarize(errors: list[Error], attempts: list[Attempt]) -> RouteFailed:
    """One error for the client from every failed attempt: the upstream's own status and words
    when they all agree, else a 503 (or 504 when all timed out) listing each distinct failure."""
    last = errors[-1]
    failed = [a for a in attempts if a.outcome != "ok"]
    pairs = zip(failed, errors, strict=False)  # strict fails only for a budget spent untried
    distinct = list(dict.fromkeys(f"{a.provider}: {e.message}" for a, e in pairs)) or [last.message]
    tries = f" ({len(errors)} attempts)" if len(errors) > 1 else ""
    if last.status in _FINAL_STATUSES:
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


def _apply_policy(route: Route, request: Request) -> None:
    settings = route.settings
    if request.system is not None and not settings.allow_client_system:
        raise GatewayError(
            "invalid_request",
            f"route {route.name!r} has its own system prompt and does not accept one from the "
            "client; send the instructions as a user message instead",
            400,
            param="system",
        )
    parts = [text for text in (settings.system, request.system) if text]
    request.system = "\n\n".join(parts) if parts else None
    if request.max_tokens is None:
        if route.configured:
            request.max_tokens = settings.max_tokens
    elif settings.max_tokens_limit is not None and request.max_tokens > settings.max_tokens_limit:
        raise GatewayError(
            "invalid_request",
            f"max tokens {request.max_tokens} is above route {route.name!r}'s limit of "
            f"{settings.max_tokens_limit}; ask for fewer",
            400,
            param="max_tokens",
        )

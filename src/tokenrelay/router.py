"""Which route serves a request: resolving the name a client asks for, and applying the route's
system prompt and token policy. The walk along the route's targets is ``failover``'s."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from tokenrelay.breaker import CircuitBreaker
from tokenrelay.failover import Attempt as Attempt
from tokenrelay.failover import Failover
from tokenrelay.failover import OpenStream as OpenStream
from tokenrelay.failover import RouteFailed as RouteFailed
from tokenrelay.latency import LatencyStats, LocalLatencyStats
from tokenrelay.model import GatewayError, Request
from tokenrelay.providers import Provider
from tokenrelay.settings import RouteSettings, Settings, TargetSettings

if TYPE_CHECKING:
    from tokenrelay.observe.tracing import RequestTrace

# Model names that belong to a provider when no route has that name.
_PROVIDER_MODELS = (
    (re.compile(r"claude-"), "anthropic"),
    (re.compile(r"(gpt-|chatgpt-|o\d)"), "openai"),
)


@dataclass(slots=True)
class Route:
    name: str
    settings: RouteSettings
    targets: list[tuple[TargetSettings, Provider]]
    configured: bool = True  # False for a provider model asked for by name


class Router:
    def __init__(
        self,
        settings: Settings,
        providers: Mapping[str, Provider],
        breaker: CircuitBreaker | None = None,
        latency: LatencyStats | None = None,
    ) -> None:
        self._settings = settings
        self._providers = providers
        self.breaker = breaker or CircuitBreaker(settings.breaker)
        self.latency = latency or LocalLatencyStats()
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
        self,
        route: Route,
        request: Request,
        headers: Mapping[str, str],
        trace: RequestTrace | None = None,
    ) -> OpenStream:
        """The first of the route's targets to produce content (see ``failover``); raises
        ``RouteFailed`` with the most telling status when none does. ``trace``: the request's
        spans, when tracing is on, under which each attempt gets its own."""
        failover = Failover(route, request, headers, self.breaker, self.latency, trace)
        return await failover.run()


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

"""Which route serves a request: resolving the name a client asks for, and applying the route's
system prompt and token policy. The walk along the route's targets is ``failover``'s.

A name is checked before anything else reads it (a header, a log line, a ledger row): at most
``MAX_NAME_CHARS`` characters of a small safe set, so a NUL or a newline never travels further.
A provider model asked for by name gets the ``[provider_models]`` policy (an allow-list, caps,
screening), so naming one is never a way around a route's.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Mapping
from typing import TYPE_CHECKING

from tokenrelay.balance import Balancer, plan
from tokenrelay.breaker import CircuitBreaker
from tokenrelay.failover import Failover, OpenStream, Route
from tokenrelay.latency import LatencyStats, LocalLatencyStats
from tokenrelay.model import GatewayError, Request
from tokenrelay.providers import Provider
from tokenrelay.settings import ProviderModelSettings, RouteSettings, Settings, TargetSettings

if TYPE_CHECKING:
    from tokenrelay.observe.tracing import RequestTrace

# Model names that belong to a provider when no route has that name.
_PROVIDER_MODELS = (
    (re.compile(r"claude-"), "anthropic"),
    (re.compile(r"(gpt-|chatgpt-|o\d)"), "openai"),
    (re.compile(r"gemini-"), "gemini"),
)
MAX_NAME_CHARS = 256
# Provider-model routes kept built, by name; the names are the clients', so the cache is bounded.
_MAX_PROVIDER_ROUTES = 1024
# Letters, digits and the punctuation model names use (claude-sonnet-4-5@20250929,
# ollama/llama3.2:8b, ft:gpt-4o:org+x): nothing a header, a log line or SQL could trip on.
_NAME = re.compile(rf"[A-Za-z0-9._:/@+-]{{1,{MAX_NAME_CHARS}}}")


class Router:
    def __init__(
        self,
        settings: Settings,
        providers: Mapping[str, Provider],
        breaker: CircuitBreaker | None = None,
        latency: LatencyStats | None = None,
        balancer: Balancer | None = None,
    ) -> None:
        self._settings = settings
        self._providers = providers
        self.breaker = breaker or CircuitBreaker(settings.breaker)
        self.latency = latency or LocalLatencyStats()
        self.balancer = balancer or Balancer(self.latency)
        self.routes = {name: self._route(name, route) for name, route in settings.routes.items()}
        self._provider_routes: dict[str, Route] = {}

    def _route(self, name: str, route: RouteSettings) -> Route:
        """A configured route with the targets whose provider is configured, and its groups."""
        providers = self._providers
        targets = [(t, providers[t.provider]) for t in route.targets if t.provider in providers]
        return Route(name, route, targets, groups=plan(route, [t for t, _ in targets]))

    def resolve(self, request: Request) -> Route:
        """The route for ``request.model``, with the route's system prompt and token policy
        applied to ``request``. Raises ``GatewayError`` 404 or 400 in plain words."""
        check_name(request.model)
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
                f"route {route.name!r} has no configured provider; set ANTHROPIC_API_KEY, "
                "OPENAI_API_KEY or GEMINI_API_KEY, or configure the route's providers",
                503,
            )
        _apply_policy(route, request)
        return route

    def lookup(self, name: str) -> Route | None:
        """The route a request for ``name`` would get (a route, or a provider model the
        ``[provider_models]`` allow-list admits), with no policy applied; None for any other
        name, a malformed one included."""
        if _NAME.fullmatch(name) is None:
            return None
        try:
            return self.routes.get(name) or self._provider_route(name)
        except GatewayError:
            return None

    def _provider_route(self, model: str) -> Route | None:
        """A provider model's route, built once per name (a route is shared by its requests
        as a configured one is: thousands of open streams need not hold one each)."""
        route = self._provider_routes.get(model)
        if route is None:
            route = self._build_provider_route(model)
            if route is not None:
                if len(self._provider_routes) >= _MAX_PROVIDER_ROUTES:  # names are the client's
                    self._provider_routes.clear()
                self._provider_routes[model] = route
        return route

    def _build_provider_route(self, model: str) -> Route | None:
        """A one-target route under the ``provider_models`` policy, for a model of a configured
        provider that the policy's ``allow`` patterns admit; a refused name is a 404 that says
        which setting to change."""
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
        policy = self._settings.provider_models
        if not allowed(policy, target.provider, target.model):
            raise GatewayError(
                "not_found",
                f"model {model!r} is not among the provider models this gateway allows; "
                "ask for a route, or have the operator add it to provider_models.allow "
                f"(now: {', '.join(policy.allow) or 'none'})",
                404,
                param="model",
            )
        provider = self._providers[target.provider]
        problem = provider.transport.check_target(provider.settings, target.model)
        if problem:
            message = f"providers.{target.provider}: {problem}"
            raise GatewayError("not_found", message, 404, param="model")
        settings = policy.for_target(target)
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
        failover = Failover(
            route, request, headers, self.breaker, self.latency, trace, self.balancer
        )
        return await failover.run()


def check_name(name: str) -> None:
    """Refuse a model or route name outside the safe set, without echoing it."""
    if _NAME.fullmatch(name) is None:
        raise GatewayError(
            "invalid_request",
            f"model must be a route or model name of 1 to {MAX_NAME_CHARS} characters, "
            "letters, digits and - . _ : / @ + only",
            400,
            param="model",
        )


def allowed(policy: ProviderModelSettings, provider: str, model: str) -> bool:
    """Whether an ``allow`` pattern admits the model: a pattern with a ``/`` is matched
    against ``provider/model``, one without against the model alone (case-sensitive)."""
    qualified = f"{provider}/{model}"
    return any(
        fnmatch.fnmatchcase(qualified if "/" in pattern else model, pattern)
        for pattern in policy.allow
    )


def _apply_policy(route: Route, request: Request) -> None:
    settings = route.settings
    if not settings.allow_client_system:
        # a mid-conversation system message is the client's instructions too
        mid = any(message.role == "system" for message in request.messages)
        if request.system is not None or mid:
            raise GatewayError(
                "invalid_request",
                f"{_owner(route)} has its own system prompt and does not accept one from "
                "the client; send the instructions as a user message instead",
                400,
                param="system" if request.system is not None else "messages",
            )
    if settings.system:
        request.add_system(settings.system, first=True)  # the route's, then the client's
    elif not request.system:
        request.system = request.system_blocks = None
    if request.max_tokens is None:
        request.max_tokens = settings.max_tokens
    elif settings.max_tokens_limit is not None and request.max_tokens > settings.max_tokens_limit:
        raise GatewayError(
            "invalid_request",
            f"max tokens {request.max_tokens} is above the limit of {_owner(route)} "
            f"({settings.max_tokens_limit}); ask for fewer",
            400,
            param="max_tokens",
        )


def _owner(route: Route) -> str:
    """Whose policy it is, as an error message names it: the setting to look at."""
    return f"route {route.name!r}" if route.configured else "the provider_models policy"

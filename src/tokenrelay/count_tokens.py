"""``POST /v1/messages/count_tokens``: how many input tokens a Messages request would take, as
Claude Code asks before each turn to manage its context.

The request is read, routed and given the route's policy like a Messages request (the route's
system prompt counts; a client system prompt the route refuses is refused here too). Then:

- the route's first Anthropic target counts it, when there is one: the Messages body the
  gateway would send, with the target's model and the client's ``anthropic-beta``, goes to
  ``/v1/messages/count_tokens`` upstream, and its answer is passed on as it came
  (``x-tokenrelay-estimate: false``);
- otherwise, or when that upstream fails (unreachable, timeout, 5xx, 429, a refused credential,
  a 404 from a server without the endpoint) or its circuit is open, the gateway counts it with
  the metering's estimator (``x-tokenrelay-estimate: true``). A 400-class answer about the
  request itself is the client's, passed on.

The gate checks who asks and the caller's request limits (every count counts, as any request
does) and whether the caller may use the route; the route's own limits, budgets, the screen and
stream slots are not consulted, as no model runs. A count is free upstream, so it writes no
ledger row: it is counted in ``tokenrelay_token_counts_total`` only.
"""

from __future__ import annotations

import logging
import os
import time
from typing import TYPE_CHECKING

from tokenrelay.dialects import count_tokens as counts
from tokenrelay.gate.identity import request_headers
from tokenrelay.model import Error, GatewayError, Request
from tokenrelay.relay import ClientGone, RelayEndpoint, check_content_type, read_body
from tokenrelay.relay_call import ShuttingDown
from tokenrelay.types import Receive, Scope, Send

if TYPE_CHECKING:
    from tokenrelay.failover import Route
    from tokenrelay.gate.gatekeeper import Admission
    from tokenrelay.gateway import Gateway

log = logging.getLogger("tokenrelay.count_tokens")

PATH = "/v1/messages/count_tokens"
ESTIMATE_HEADER = b"x-tokenrelay-estimate"
# Always passed on to the counting upstream: a beta can change what a request counts, and the
# fields it enables would be refused without it.
COUNT_FORWARD = ("anthropic-beta",)
# An upstream's answer about the request itself, which another count would not change.
_CLIENT_ERRORS = frozenset({400, 413, 415, 422})


class _Counted:
    """One answer: its body, where it came from, and what the head says about that."""

    __slots__ = ("attempt", "body", "model", "provider", "source")

    def __init__(self, body: bytes, source: str) -> None:
        self.body = body
        self.source = source  # the metric's label: upstream, estimate, fallback
        self.provider: str | None = None
        self.model: str | None = None
        self.attempt: bytes | None = None  # x-tokenrelay-attempts, when an upstream was asked


class CountTokensEndpoint(RelayEndpoint):
    """The endpoint; a ``RelayEndpoint`` of the Anthropic dialect for its error answers."""

    def __init__(self, gateway: Gateway) -> None:
        super().__init__(gateway, "anthropic")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        request_id = os.urandom(12).hex()
        gateway = self.gateway
        route_name = ""
        admission: Admission | None = None
        try:
            headers = request_headers(scope["headers"])
            client = scope.get("client")
            admission = await gateway.gate.admit_caller(headers, client[0] if client else None)
            body = await read_body(scope, receive, gateway.settings.max_body_bytes)
            if gateway.draining:
                raise ShuttingDown
            check_content_type(scope)
            request = counts.parse_request(body)
            route = gateway.router.resolve(request)
            route_name = route.name
            assert admission.identity is not None
            gateway.gate.check_access(route, headers, admission.identity)
            counted = await self._count(route, request, headers)
        except ClientGone:
            return
        except GatewayError as error:
            self._measure(route_name, "refused")
            if admission is not None and not error.headers:
                error.headers = admission.headers
            await self.send_error(send, error, request_id)
            return
        self._measure(route_name, counted.source)
        head = [
            (b"content-type", b"application/json"),
            *self.id_headers(request_id),
            (b"x-tokenrelay-route", route_name.encode()),
            (ESTIMATE_HEADER, b"false" if counted.source == "upstream" else b"true"),
        ]
        if counted.provider is not None and counted.model is not None:
            head.append((b"x-tokenrelay-provider", counted.provider.encode()))
            head.append((b"x-tokenrelay-model", counted.model.encode()))
        if counted.attempt is not None:
            head.append((b"x-tokenrelay-attempts", counted.attempt))
        if gateway.demo:
            head.append((b"x-tokenrelay-demo", b"true"))
        head.extend(admission.headers)
        await send({"type": "http.response.start", "status": 200, "headers": head})
        await send({"type": "http.response.body", "body": counted.body})

    async def _count(self, route: Route, request: Request, headers: dict[str, str]) -> _Counted:
        target = next(((t, p) for t, p in route.targets if p.counts_tokens), None)
        if target is None:
            return _estimate(request, "estimate")
        settings, provider = target
        if await self.gateway.router.breaker.is_open(f"{provider.name}:{settings.model}"):
            return _estimate(request, "fallback")
        built, _ = provider.build_body(request, settings, route.settings.hosted_tools)
        body = counts.encode_request(built)
        forward = (*COUNT_FORWARD, *route.settings.forward_client_headers)
        sent = provider.build_headers(settings, headers, forward)
        sent["accept"] = "application/json"
        timeout = settings.first_token_timeout or route.settings.first_token_timeout
        started = time.perf_counter()
        answer = await provider.post_json("/count_tokens", body, sent, timeout)
        ms = (time.perf_counter() - started) * 1000
        if not isinstance(answer, Error):
            try:
                counts.parse_response(answer)
            except ValueError as exc:
                answer = Error("upstream_unavailable", f"{provider.name}: {exc}", 502)
        outcome = "ok" if not isinstance(answer, Error) else answer.type
        attempt = f"{provider.name}/{settings.model};outcome={outcome};ms={ms:.0f}".encode()
        if isinstance(answer, Error):
            if answer.status in _CLIENT_ERRORS:
                raise GatewayError.from_event(answer)
            log.warning(
                "count_tokens on route %s: %s failed (%s, HTTP %d); answered with an estimate",
                route.name,
                provider.name,
                answer.message[:200],
                answer.status,
            )
            counted = _estimate(request, "fallback")
        else:
            counted = _Counted(answer, "upstream")
            counted.provider, counted.model = provider.name, settings.model
        counted.attempt = attempt
        return counted

    def _measure(self, route: str, source: str) -> None:
        metrics = self.gateway.metrics
        if metrics is not None:
            metrics.count_tokens(route, source)


def _estimate(request: Request, source: str) -> _Counted:
    """The metering's estimate of the prompt (route's system prompt included)."""
    from tokenrelay.metering.estimate import estimate_prompt_tokens

    return _Counted(counts.encode_response(estimate_prompt_tokens(request)), source)

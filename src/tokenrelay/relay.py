"""The streaming endpoint, as a plain ASGI callable: read and check the body, parse it in the
front dialect, resolve its route, and pass it through the gate (identity, limits, screen, the
cache's lookup plan, the guard's masking); a refusal is answered here in the client's dialect,
an admitted request becomes a ``relay_call.RelayCall``, which streams the answer.
"""

from __future__ import annotations

import logging
import os
import time
from typing import TYPE_CHECKING

from tokenrelay import dialects
from tokenrelay.cache_relay import CachedCall
from tokenrelay.dialects.responses.wire import CONTINUES, REFERENCES
from tokenrelay.failover import Route
from tokenrelay.gate.gatekeeper import Admission, Rejected
from tokenrelay.gate.identity import Identity, request_headers
from tokenrelay.guard.route import GuardRefused
from tokenrelay.model import GatewayError, Request, Usage
from tokenrelay.records import Attempt, StreamRecord
from tokenrelay.relay_call import RelayCall, ShuttingDown, attempts_header, elapsed_ms
from tokenrelay.types import Receive, Scope, Send

if TYPE_CHECKING:
    from tokenrelay.gateway import Gateway
    from tokenrelay.guard.route import RequestGuard

log = logging.getLogger("tokenrelay.relay")


class ClientGone(Exception):
    """The client disconnected before the request body was complete."""


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope["headers"]:
        if key == name:
            return str(value.decode("latin-1"))
    return None


async def read_body(scope: Scope, receive: Receive, limit: int) -> bytes:
    """The request body, refusing more than ``limit`` bytes before reading them all."""
    declared = _header(scope, b"content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise _too_large(limit)
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientGone
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise _too_large(limit)
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


def _too_large(limit: int) -> GatewayError:
    return GatewayError(
        "request_too_large", f"the request body is larger than the limit of {limit} bytes", 413
    )


def check_content_type(scope: Scope) -> None:
    content_type = (_header(scope, b"content-type") or "").split(";")[0].strip().lower()
    if content_type != "application/json":
        shown = content_type or "none"
        raise GatewayError(
            "unsupported_media_type",
            f"send the body as JSON with the header 'Content-Type: application/json' (got {shown})",
            415,
        )


class RelayEndpoint:
    """One front dialect's endpoint: ``/v1/messages``, ``/v1/chat/completions`` or
    ``/api/generate``."""

    def __init__(self, gateway: Gateway, dialect: str) -> None:
        self.gateway = gateway
        self.dialect_name = dialect
        self.dialect = dialects.get(dialect)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        gateway = self.gateway
        started = time.perf_counter()
        request_id = os.urandom(12).hex()
        trace = gateway.tracer.begin(scope, request_id) if gateway.tracer is not None else None
        route_name = ""
        request: Request | None = None
        identity: Identity | None = None
        try:
            # Who asks and how often, on the headers alone: every request counts against the
            # caller's limits, even one whose body turns out invalid.
            headers = request_headers(scope["headers"])
            client = scope.get("client")
            admission = await gateway.gate.admit_caller(headers, client[0] if client else None)
            identity = admission.identity
            body = await read_body(scope, receive, gateway.settings.max_body_bytes)
            if gateway.draining:
                raise ShuttingDown
            check_content_type(scope)
            request = self.parse(scope, body)
            route = gateway.router.resolve(request)
            route_name = route.name
            # previous_response_id and item_reference (Responses): the stored turns and items
            # join the request first, so the route's checks and the screen see the whole
            # conversation
            if REFERENCES in request.front_options:
                request = await gateway.responses.referenced(request, identity)
            if CONTINUES in request.front_options:
                request = await gateway.responses.continued(request, identity)
            cached = CachedCall.begin(gateway.cache, route, request, identity, headers)
            admission = await gateway.gate.admit_request(route, request, headers, admission)
            if gateway.draining:  # it began while the gate awaited
                await gateway.gate.settle(admission, Usage())
                raise ShuttingDown
            guard = await _guard(gateway, route, request, admission)
        except ClientGone:
            if trace is not None:
                trace.abandon()
            return
        except GatewayError as error:
            record = StreamRecord(
                request_id,
                self.dialect_name,
                route_name,
                "rejected",
                error.status,
                error_type=(
                    ShuttingDown.record_type if isinstance(error, ShuttingDown) else error.type
                ),
                duration_ms=elapsed_ms(started),
            )
            record.identity = identity  # the client's address, at least, on every row
            flood = False
            if isinstance(error, Rejected):
                record.identity, record.verdict = error.identity, error.verdict
                record.reject_reason = error.reason
                flood = error.flood
            if isinstance(error, GuardRefused):
                record.guard, record.reject_reason = error.counts, error.reason
            record.request = request
            if flood:
                # Over the caller's request limit before its body was read: a count in the
                # metrics, not a ledger row and an audit line per request of a flood.
                if gateway.metrics is not None:
                    gateway.metrics(record)
            else:
                # Before the response: a client that saw it finish finds it in the ledger even
                # if the process dies the next instant.
                gateway.listeners.emit(record)
            if trace is not None:
                trace.end(record)
            await self.send_error(send, error, request_id)
            return
        call = RelayCall(self, scope, receive, send, request, route_name, request_id, started)
        call.admission = admission
        call.cached = cached
        call.trace = trace
        call.guard = guard
        call.client_headers = headers  # for the route walk, which lets go of them
        del headers, body  # this frame lasts as long as the stream: the call keeps what it needs
        await call.run(route)

    def caller_scope(self, scope: Scope) -> Scope:
        """The scope whose headers identify the caller (a front may move a credential there)."""
        return scope

    def parse(self, scope: Scope, body: bytes) -> Request:
        """The request in the front's dialect (a front whose URL says more overrides it)."""
        return self.dialect.parse_request(body)

    async def send_error(
        self,
        send: Send,
        error: GatewayError,
        request_id: str,
        attempts: list[Attempt] | None = None,
        extra: list[tuple[bytes, bytes]] | None = None,
    ) -> None:
        content_type = getattr(self.dialect, "ERROR_CONTENT_TYPE", "application/json")
        headers = [
            (b"content-type", content_type.encode()),
            *self.id_headers(request_id),
            (b"x-tokenrelay-error-type", error.type.encode()),
        ]
        if error.retry_after is not None:
            headers.append((b"retry-after", str(max(1, round(error.retry_after))).encode()))
        if attempts:
            headers.append((b"x-tokenrelay-attempts", attempts_header(attempts)))
        if self.gateway.demo:
            headers.append((b"x-tokenrelay-demo", b"true"))
        if self.gateway.draining:
            headers.append((b"connection", b"close"))
        if error.headers:  # a rate limit's quota (its retry-after is already above)
            headers.extend(h for h in error.headers if h[0] != b"retry-after")
        if extra:
            headers.extend(extra)
        await send({"type": "http.response.start", "status": error.status, "headers": headers})
        await send({"type": "http.response.body", "body": self.dialect.encode_error(error)})

    def id_headers(self, request_id: str) -> list[tuple[bytes, bytes]]:
        value = request_id.encode()
        return [(b"x-request-id", value), (b"request-id", value)]


async def _guard(
    gateway: Gateway, route: Route, request: Request, admission: Admission
) -> RequestGuard | None:
    """The route's guard on an admitted request: masked in place before it leaves, or refused
    (its stream slot given back)."""
    try:
        return await gateway.guards.begin(route.settings.guard, request, admission.canary)
    except Exception:  # a refusal, or a guard that failed: the slot is given back either way
        await gateway.gate.settle(admission, Usage())
        raise

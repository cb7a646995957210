"""The streaming endpoint, as a plain ASGI callable: read and check the body, parse it in the
front dialect, route it, hold the head until the first content event, then relay every upstream
event to the client the moment it arrives.

A client that goes away cancels the relay at once (a watcher task listens for
``http.disconnect``), which closes the upstream connection so nothing keeps generating. A server
shutting down cancels it too, once its grace is over; then the client gets an explicit error in
its dialect and the request still gets its record.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from typing import TYPE_CHECKING, Any

from tokenrelay import dialects
from tokenrelay.dialects.responses.wire import CONTINUES, REFERENCES
from tokenrelay.failover import Route, RouteFailed
from tokenrelay.gate.gatekeeper import Admission, Rejected
from tokenrelay.gate.identity import Identity, request_headers
from tokenrelay.metering.units import usd
from tokenrelay.model import Accumulator, Error, Event, GatewayError, Request, TextDelta, Usage
from tokenrelay.records import Attempt, Outcome, StreamRecord
from tokenrelay.screening.canary import CanaryWatch, leak_error
from tokenrelay.types import Receive, Scope, Send

if TYPE_CHECKING:
    from tokenrelay.dialects import StreamWriter
    from tokenrelay.failover import OpenStream
    from tokenrelay.gateway import Gateway
    from tokenrelay.observe.tracing import RequestTrace

log = logging.getLogger("tokenrelay.relay")

_STREAM_HEADERS = [(b"cache-control", b"no-cache"), (b"x-accel-buffering", b"no")]


class ShuttingDown(GatewayError):
    """The gateway is draining for a restart: a 503 the client should retry (elsewhere), or the
    in-band error that ends a stream the shutdown grace did not cover."""

    record_type = "shutting_down"

    def __init__(self, message: str = "the gateway is shutting down; retry") -> None:
        super().__init__("overloaded", message, 503, retry_after=1)


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
        started = time.perf_counter()
        request_id = os.urandom(12).hex()
        gateway = self.gateway
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
            admission = await gateway.gate.admit_request(route, request, headers, admission)
            if gateway.draining:  # it began while the gate awaited
                await gateway.gate.settle(admission, Usage())
                raise ShuttingDown
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
                duration_ms=_ms(started),
            )
            record.identity = identity  # the client's address, at least, on every row
            flood = False
            if isinstance(error, Rejected):
                record.identity, record.verdict = error.identity, error.verdict
                record.reject_reason = error.reason
                flood = error.flood
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
            await self._send_error(send, error, request_id)
            return
        call = _Call(self, scope, receive, send, request, route_name, request_id, started)
        call.admission = admission
        call.trace = trace
        await call.run(route)

    def parse(self, scope: Scope, body: bytes) -> Request:
        """The request in the front's dialect (a front whose URL says more overrides it)."""
        return self.dialect.parse_request(body)

    async def _send_error(
        self,
        send: Send,
        error: GatewayError,
        request_id: str,
        attempts: list[Attempt] | None = None,
    ) -> None:
        content_type = getattr(self.dialect, "ERROR_CONTENT_TYPE", "application/json")
        headers = [
            (b"content-type", content_type.encode()),
            *self._id_headers(request_id),
            (b"x-tokenrelay-error-type", error.type.encode()),
        ]
        if error.retry_after is not None:
            headers.append((b"retry-after", str(max(1, round(error.retry_after))).encode()))
        if attempts:
            headers.append((b"x-tokenrelay-attempts", _attempts_header(attempts)))
        if self.gateway.demo:
            headers.append((b"x-tokenrelay-demo", b"true"))
        if self.gateway.draining:
            headers.append((b"connection", b"close"))
        if error.headers:  # a rate limit's quota (its retry-after is already above)
            headers.extend(h for h in error.headers if h[0] != b"retry-after")
        await send({"type": "http.response.start", "status": error.status, "headers": headers})
        await send({"type": "http.response.body", "body": self.dialect.encode_error(error)})

    def _id_headers(self, request_id: str) -> list[tuple[bytes, bytes]]:
        value = request_id.encode()
        return [(b"x-request-id", value), (b"request-id", value)]


class _Call:
    """One request in flight; its fields become the ``StreamRecord`` when it ends."""

    def __init__(
        self,
        endpoint: RelayEndpoint,
        scope: Scope,
        receive: Receive,
        send: Send,
        request: Request,
        route: str,
        request_id: str,
        started: float,
    ) -> None:
        self.endpoint = endpoint
        self.scope = scope
        self.receive = receive
        self.send = send
        self.request = request
        self.route = route
        self.request_id = request_id
        self.started = started
        self.accumulator = Accumulator()
        self.opened: OpenStream | None = None
        self.task: asyncio.Task[Any] | None = None
        self.writer: StreamWriter | None = None  # a streamed answer's, from its head on
        self.head_sent = False
        self.finished = False
        self.ttft_ms: float | None = None
        self.status = 200
        self.attempts: list[Attempt] = []
        self.admission: Admission | None = None
        self.emitted = False
        self.trace: RequestTrace | None = None  # its spans, when tracing is on

    async def run(self, route: Route) -> None:
        task = self.task = asyncio.current_task()
        assert task is not None
        gateway = self.endpoint.gateway
        gone = asyncio.Event()
        watcher = asyncio.create_task(self._watch_disconnect(task, gone))
        outcome: Outcome = "error"
        error_type: str | None = None
        gateway.calls.add(self)  # no await since the endpoint checked `draining`
        try:
            try:
                outcome, error_type = await self._serve(route)
            except asyncio.CancelledError:
                task.uncancel()
                if gone.is_set():
                    outcome, error_type = "aborted", "client_disconnected"
                else:
                    # Not the client: the server is shutting down and its grace is over (the
                    # gateway's drain interrupted us, or uvicorn cancelled us as a last resort).
                    outcome, error_type = "interrupted", ShuttingDown.record_type
                    await self._end_for_shutdown()
            except OSError:  # the transport broke under a send
                outcome, error_type = "aborted", "client_disconnected"
            except Exception:
                log.exception("request %s failed inside the gateway", self.request_id)
                error_type = "internal"
                await self._fail_internally()
            finally:
                self.finished = True
                watcher.cancel()
                if self.opened is not None:
                    self.opened.release()  # a balanced group's stream is no longer in flight
                    await self.opened.events.aclose()
        finally:
            gateway.untrack(self)
            self._emit(outcome, error_type)
            if self.admission is not None:
                await self._settle(self.admission)

    async def _settle(self, admission: Admission) -> None:
        """Give back the stream slot and charge the tokens used; never fails the request."""
        try:
            await self.endpoint.gateway.gate.settle(admission, self.accumulator.completion.usage)
        except Exception:
            log.exception("request %s: settling its rate limits failed", self.request_id)

    def interrupt(self) -> bool:
        """End this call now because the gateway is shutting down: it closes its upstream and
        writes an explicit error in the client's dialect. False when it is already ending."""
        if self.finished or self.task is None:
            return False
        self.task.cancel()
        return True

    async def _end_for_shutdown(self) -> None:
        self.finished = True  # from here on a client leaving must not cancel this write
        if self.opened is not None:
            await self.opened.events.aclose()  # stop the upstream generating first
        try:
            if not self.head_sent:
                error = ShuttingDown()
                self.status = error.status
                await self.endpoint._send_error(self.send, error, self.request_id, self.attempts)
            elif self.writer is not None:
                error = ShuttingDown(
                    "the gateway is shutting down and ended this stream before it finished "
                    f"(request id {self.request_id}); retry the request"
                )
                event = error.to_event()
                self.accumulator.add(event)
                body = self.writer.write(event) + self.writer.close()
                await self.send({"type": "http.response.body", "body": body, "more_body": False})
        except (OSError, RuntimeError):
            pass  # the client is gone too, or the response could not be ended; the record says so

    async def _watch_disconnect(self, task: asyncio.Task[Any], gone: asyncio.Event) -> None:
        while True:
            message = await self.receive()
            if message["type"] == "http.disconnect":
                break
        if not self.finished:
            gone.set()
            task.cancel()

    async def _serve(self, route: Route) -> tuple[Outcome, str | None]:
        endpoint = self.endpoint
        headers = _client_headers(self.scope)
        try:
            opened = await endpoint.gateway.router.open_stream(
                route, self.request, headers, self.trace
            )
        except RouteFailed as error:
            self.attempts = error.attempts
            self.status = error.status
            self._emit("error", error.type)
            await endpoint._send_error(self.send, error, self.request_id, error.attempts)
            return "error", error.type
        except GatewayError as error:
            self.status = error.status
            self._emit("error", error.type)
            await endpoint._send_error(self.send, error, self.request_id)
            return "error", error.type
        self.opened = opened
        self.attempts = opened.attempts
        if self.request.stream:
            return await self._stream(opened)
        return await self._respond_whole(opened)

    def _head(self, content_type: bytes, opened: OpenStream) -> list[tuple[bytes, bytes]]:
        headers = [
            (b"content-type", content_type),
            *self.endpoint._id_headers(self.request_id),
            (b"x-tokenrelay-route", self.route.encode()),
            (b"x-tokenrelay-provider", opened.provider.name.encode()),
            (b"x-tokenrelay-model", opened.target.model.encode()),
            (b"x-tokenrelay-attempts", _attempts_header(opened.attempts)),
        ]
        if opened.dropped_tools:  # the route's hosted_tools = "drop" left them out
            headers.append(
                (b"x-tokenrelay-dropped-tools", ", ".join(opened.dropped_tools).encode())
            )
        if self.endpoint.gateway.demo:
            headers.append((b"x-tokenrelay-demo", b"true"))
        if self.admission is not None:
            headers.extend(self.admission.headers)
        return headers

    async def _stream(self, opened: OpenStream) -> tuple[Outcome, str | None]:
        dialect = self.endpoint.dialect
        writer = self.writer = dialect.stream_writer(
            self.request,
            id=self.endpoint.dialect.ID_PREFIX + self.request_id,
            model=opened.target.model,
        )
        accumulate = self.accumulator.add
        send = self.send
        head = self._head(dialect.CONTENT_TYPE.encode(), opened)
        head.extend(_STREAM_HEADERS)
        head.extend(getattr(dialect, "STREAM_HEADERS", ()))
        await send({"type": "http.response.start", "status": 200, "headers": head})
        self.head_sent = True
        self.ttft_ms = _ms(self.started)
        error: Error | None = None
        batch: list[Event] = opened.pending
        events = opened.events
        canary = self.admission.canary if self.admission is not None else None
        watch = CanaryWatch(canary) if canary is not None else None
        describe = getattr(writer, "describe", None)
        out = [describe(self._describe(opened))] if describe is not None else []
        while True:
            for event in batch:
                if watch is not None and type(event) is TextDelta and watch.feed(event.text):
                    event = self._leaked()
                accumulate(event)
                if type(event) is Error:
                    error = event
                    data = writer.write(event)
                    if data:
                        out.append(data)
                    break
                data = writer.write(event)
                if data:
                    out.append(data)
            if out:
                await send({"type": "http.response.body", "body": b"".join(out), "more_body": True})
                out = []
            if error is not None:
                break
            try:
                batch = await anext(events)
            except StopAsyncIteration:
                break
        self.finished = True
        result: tuple[Outcome, str | None] = (
            ("error", error.type) if error is not None else ("completed", None)
        )
        record = self._emit(*result)  # before the last byte: see RelayEndpoint.__call__
        summarize = getattr(writer, "summarize", None)
        if summarize is not None and record is not None:
            summarize(self._summary(record))
        await send({"type": "http.response.body", "body": writer.close(), "more_body": False})
        return result

    def _describe(self, opened: OpenStream) -> dict[str, Any]:
        """What a dialect that carries metadata in-band (``/api/chat``, ``/api/generate`` with
        ``include: ["meta"]``) says about the answer when its head goes out."""
        return {
            "requestId": self.request_id,
            "route": self.route,
            "provider": opened.provider.name,
            "model": opened.target.model,
            "failover": len(opened.attempts) > 1,
            "attempts": [
                {"provider": a.provider, "model": a.model, "outcome": a.outcome, "ms": round(a.ms)}
                for a in opened.attempts
            ],
        }

    def _summary(self, record: StreamRecord) -> dict[str, Any]:
        """The head's description plus what the end knows: usage, cost, first-token time."""
        assert self.opened is not None
        summary = self._describe(self.opened)
        usage = record.billed_usage or record.usage
        summary["usageEstimated"] = record.usage_estimated
        summary["usage"] = {
            name: value
            for name, value in (
                ("inputTokens", usage.input_tokens),
                ("outputTokens", usage.output_tokens),
                ("cacheReadTokens", usage.cache_read_tokens),
                ("cacheWriteTokens", usage.cache_write_tokens),
                ("reasoningTokens", usage.reasoning_tokens),
            )
            if value is not None
        }
        cost = record.cost_nanousd
        summary["costUsd"] = None if cost is None else usd(cost)
        summary["ttftMs"] = None if self.ttft_ms is None else round(self.ttft_ms, 1)
        return summary

    def _leaked(self) -> Error:
        """The error that replaces a delta completing the route's canary: the model is
        repeating its protected instructions, so the rest of the answer is not sent."""
        log.warning(
            "screening: request %s on route %s leaked the route's canary; stream cut",
            self.request_id,
            self.route,
        )
        return leak_error().to_event()

    async def _respond_whole(self, opened: OpenStream) -> tuple[Outcome, str | None]:
        """A non-streaming answer: the upstream still streams (one code path, first-token
        failover, usage always reported); the events are folded into one JSON body."""
        for event in opened.pending:
            self.accumulator.add(event)
        async for batch in opened.events:
            for event in batch:
                self.accumulator.add(event)
        completion = self.accumulator.result()
        endpoint = self.endpoint
        self.finished = True
        if completion.error is not None:
            error = GatewayError.from_event(completion.error)
            error.status = 502 if error.status < 500 else error.status
            self.status = error.status
            self._emit("error", error.type)
            await endpoint._send_error(self.send, error, self.request_id, opened.attempts)
            return "error", error.type
        response_id = endpoint.dialect.ID_PREFIX + self.request_id
        # a dialect whose whole response repeats the request (Responses) takes it too
        encode_for = getattr(endpoint.dialect, "encode_response_for", None)
        if encode_for is not None:
            body = encode_for(self.request, completion, id=response_id, model=opened.target.model)
        else:
            body = endpoint.dialect.encode_response(
                completion, id=response_id, model=opened.target.model
            )
        head = self._head(b"application/json", opened)
        self.ttft_ms = _ms(self.started)
        self._emit("completed", None)
        await self.send({"type": "http.response.start", "status": 200, "headers": head})
        await self.send({"type": "http.response.body", "body": body})
        self.head_sent = True
        return "completed", None

    async def _fail_internally(self) -> None:
        error = GatewayError(
            "api_error", f"the gateway failed on this request (request id {self.request_id})", 500
        )
        self.status = 500
        try:
            if not self.head_sent:
                await self.endpoint._send_error(self.send, error, self.request_id)
            else:
                writer = self.endpoint.dialect.stream_writer(
                    self.request, id=self.request_id, model=""
                )
                body = writer.write(error.to_event()) + writer.close()
                await self.send({"type": "http.response.body", "body": body, "more_body": False})
        except (OSError, RuntimeError):
            pass  # the client is gone as well; the log line above has the traceback

    def _emit(self, outcome: Outcome, error_type: str | None) -> StreamRecord | None:
        """The request's record, once: just before its last byte is sent when it ends
        normally, so a client that saw the end finds it in the ledger even if the process is
        killed the next instant; else when it ends (aborted, interrupted, internal error)."""
        if self.emitted:
            return None
        self.emitted = True
        completion = self.accumulator.completion
        opened = self.opened
        record = StreamRecord(
            request_id=self.request_id,
            dialect=self.endpoint.dialect_name,
            route=self.route,
            outcome=outcome,
            status=self.status,
            provider=opened.provider.name if opened else None,
            model=opened.target.model if opened else None,
            usage=completion.usage,
            content_events=self.accumulator.content_events,
            finish_reason=completion.finish.reason if completion.finish else None,
            error_type=error_type,
            ttft_ms=self.ttft_ms,
            duration_ms=_ms(self.started),
            attempts=self.attempts,
            metadata=self.request.metadata,
            dropped_tools=opened.dropped_tools if opened else [],
        )
        record.request = self.request
        record.completion = self.accumulator.result()
        if self.admission is not None:
            record.identity = self.admission.identity
            record.verdict = self.admission.verdict
        self.endpoint.gateway.listeners.emit(record)
        if self.trace is not None:  # the request's span ends with its record
            self.trace.end(record)
        return record


def _client_headers(scope: Scope) -> dict[str, str]:
    """A header sent on several lines (``anthropic-beta: a`` then ``anthropic-beta: b``) is
    forwarded whole, comma-joined, not as its last line."""
    return request_headers(scope["headers"])


def _attempts_header(attempts: list[Attempt]) -> bytes:
    return ", ".join(
        f"{a.provider}/{a.model};outcome={a.outcome};ms={a.ms:.0f}"
        + (f";group={a.group};pick={a.pick}" if a.group is not None else "")
        for a in attempts
    ).encode()


def _ms(since: float) -> float:
    return (time.perf_counter() - since) * 1000

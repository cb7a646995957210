"""One relayed request after the gate admitted it: walk the route, hold the head until the first
content event, then write every upstream event to the client the moment it arrives, and leave
its record when it ends, however it ends.

A client that goes away cancels the call at once (our edge calls back, ``types.ON_DISCONNECT``;
under another server a watcher task listens for ``http.disconnect``), which closes the upstream
connection so nothing keeps generating (a route whose streams resume detaches instead, for
``resume.grace`` seconds). A server shutting down cancels it too, once its grace is over; then
the client gets an explicit error in its dialect and the request still gets its record.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING, Any, Protocol

from tokenrelay.edge.signal import Signal
from tokenrelay.failover import Route, RouteFailed
from tokenrelay.gate.gatekeeper import Admission
from tokenrelay.gate.identity import request_headers
from tokenrelay.metering.units import usd
from tokenrelay.model import Accumulator, Error, Event, GatewayError, Request, Usage
from tokenrelay.records import Attempt, Outcome, StreamRecord
from tokenrelay.types import BODY_FOLLOWS, ON_DISCONNECT, Message, Receive, Scope, Send

if TYPE_CHECKING:
    from tokenrelay.cache_relay import CachedCall
    from tokenrelay.dialects import Dialect, StreamWriter
    from tokenrelay.failover import OpenStream
    from tokenrelay.gateway import Gateway
    from tokenrelay.guard.route import RequestGuard
    from tokenrelay.observe.tracing import RequestTrace
    from tokenrelay.resume import Tap
    from tokenrelay.resume.settings import ResumeSettings

log = logging.getLogger("tokenrelay.relay")

_STREAM_HEADERS = [(b"cache-control", b"no-cache"), (b"x-accel-buffering", b"no")]


class ShuttingDown(GatewayError):
    """The gateway is draining for a restart: a 503 the client should retry (elsewhere), or the
    in-band error that ends a stream the shutdown grace did not cover."""

    record_type = "shutting_down"

    def __init__(self, message: str = "the gateway is shutting down; retry") -> None:
        super().__init__("overloaded", message, 503, retry_after=1)


class Front(Protocol):
    """What a call needs of the endpoint that admitted it (``relay.RelayEndpoint``)."""

    gateway: Gateway
    dialect: Dialect
    dialect_name: str

    async def send_error(
        self,
        send: Send,
        error: GatewayError,
        request_id: str,
        attempts: list[Attempt] | None = None,
        extra: list[tuple[bytes, bytes]] | None = None,
    ) -> None: ...

    def id_headers(self, request_id: str) -> list[tuple[bytes, bytes]]: ...


class RelayCall:
    """One request in flight; its fields become the ``StreamRecord`` when it ends. Slotted: a
    process holds one per open stream (thousands of slow ones), ~0.9 KB less each."""

    __slots__ = (
        "accumulator",
        "admission",
        "attempts",
        "cached",
        "client_headers",
        "emitted",
        "endpoint",
        "finished",
        "gone",
        "guard",
        "head_sent",
        "opened",
        "receive",
        "request",
        "request_id",
        "resume",
        "route",
        "scope",
        "send",
        "started",
        "status",
        "tap",
        "task",
        "trace",
        "ttft_ms",
        "writer",
    )

    def __init__(
        self,
        endpoint: Front,
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
        self.resume: ResumeSettings | None = None  # the route's, when its streams resume
        self.tap: Tap | None = None  # a resumable stream's ids and kept events
        self.gone = Signal()  # set when the client left (or its owner stopped the stream)
        self.guard: RequestGuard | None = None  # masking, output rules, canary: when any
        self.cached: CachedCall | None = None  # the response cache's part, on a route with one
        # The scope's headers as the endpoint read them for the gate (not built twice).
        self.client_headers: dict[str, str] | None = None

    async def run(self, route: Route) -> None:
        task = self.task = asyncio.current_task()
        assert task is not None
        gateway = self.endpoint.gateway
        gone = self.gone
        if route.settings.resume.grace > 0:
            self.resume = route.settings.resume
        # Told of a disconnect by our edge (no task per stream), or else by a watcher task.
        extensions = self.scope.get("extensions")
        on_disconnect = extensions.get(ON_DISCONNECT) if extensions else None
        watcher: asyncio.Task[None] | None = None
        if on_disconnect is not None:
            on_disconnect(self._client_left)
        else:
            watcher = asyncio.create_task(self._watch_disconnect())
        outcome: Outcome = "error"
        error_type: str | None = None
        gateway.calls.add(self)  # no await since the endpoint checked `draining`
        try:
            try:
                outcome, error_type = await self._serve(route)
            except asyncio.CancelledError:
                task.uncancel()
                if gone.is_set():  # the client left, or (resumable) its owner stopped it
                    tap = self.tap
                    abort = tap.buffer.abort_type if tap is not None else "client_disconnected"
                    outcome, error_type = "aborted", abort
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
                if watcher is not None:
                    watcher.cancel()
                if self.opened is not None:
                    self.opened.release()  # a balanced group's stream is no longer in flight
                    await self.opened.events.aclose()
                if self.tap is not None and gateway.resume is not None:
                    gateway.resume.end(self.tap)
        finally:
            gateway.untrack(self)
            self._emit(outcome, error_type)
            if self.cached is not None:  # stores a completed miss, in the background
                self.cached.finish(outcome, self.accumulator.completion)
            if self.admission is not None:
                await self._settle(self.admission)

    async def _settle(self, admission: Admission) -> None:
        """Give back the stream slot and charge the tokens used; never fails the request."""
        hit = self.cached is not None and self.cached.hit
        usage = Usage() if hit else self.accumulator.completion.usage  # a hit used no tokens
        try:
            await self.endpoint.gateway.gate.settle(admission, usage)
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
                await self.endpoint.send_error(self.send, error, self.request_id, self.attempts)
            elif self.writer is not None:
                error = ShuttingDown(
                    "the gateway is shutting down and ended this stream before it finished "
                    f"(request id {self.request_id}); retry the request"
                )
                event = error.to_event()
                self.accumulator.add(event)
                body = self.writer.write(event) + self.writer.close()
                if self.tap is not None:
                    body = self.tap.add(body)
                await self.send({"type": "http.response.body", "body": body, "more_body": False})
        except (OSError, RuntimeError):
            pass  # the client is gone too, or the response could not be ended; the record says so

    async def _watch_disconnect(self) -> None:
        """A server without ``ON_DISCONNECT`` says it only to ``receive()``."""
        while True:
            message = await self.receive()
            if message["type"] == "http.disconnect":
                break
        self._client_left()

    def _client_left(self) -> None:
        if not self.finished and self.task is not None:
            if self.tap is not None:  # the upstream goes on, resume.grace seconds unread
                self.tap.buffer.leave()
                return
            self.gone.set()
            self.task.cancel()

    def _grace_over(self) -> None:
        """Nobody reconnected within the route's resume.grace: end it as a client abort."""
        if not self.finished and self.task is not None:
            self.gone.set()
            self.task.cancel()

    def _take_client_headers(self) -> dict[str, str]:
        """The headers the endpoint decoded for the gate (else decoded now), for the route walk
        alone: no field or frame of an open stream keeps them."""
        headers, self.client_headers = self.client_headers, None
        return headers if headers is not None else _client_headers(self.scope)

    async def _serve(self, route: Route) -> tuple[Outcome, str | None]:
        endpoint = self.endpoint
        cached = self.cached
        hit = await cached.open(route) if cached is not None else None
        try:
            # the decoded headers are the walk's only: no frame of this call holds them after
            opened = hit or await endpoint.gateway.router.open_stream(
                route, self.request, self._take_client_headers(), self.trace
            )
        except RouteFailed as error:
            self.attempts = error.attempts
            self.status = error.status
            self._emit("error", error.type)
            extra = [cached.header] if cached is not None else None
            await endpoint.send_error(self.send, error, self.request_id, error.attempts, extra)
            return "error", error.type
        except GatewayError as error:
            self.status = error.status
            self._emit("error", error.type)
            extra = [cached.header] if cached is not None else None
            await endpoint.send_error(self.send, error, self.request_id, extra=extra)
            return "error", error.type
        if cached is not None and hit is None:
            cached.capture(opened)
        self.opened = opened
        self.attempts = opened.attempts
        if self.request.stream:
            return await self._stream(opened)
        return await self._respond_whole(opened)

    def _head(self, content_type: bytes, opened: OpenStream) -> list[tuple[bytes, bytes]]:
        headers = [
            (b"content-type", content_type),
            *self.endpoint.id_headers(self.request_id),
            (b"x-tokenrelay-route", self.route.encode()),
            (b"x-tokenrelay-provider", opened.provider.name.encode()),
            (b"x-tokenrelay-model", opened.target.model.encode()),
            (b"x-tokenrelay-attempts", attempts_header(opened.attempts)),
        ]
        if opened.dropped_tools:  # the route's hosted_tools = "drop" left them out
            headers.append(
                (b"x-tokenrelay-dropped-tools", ", ".join(opened.dropped_tools).encode())
            )
        if self.endpoint.gateway.demo:
            headers.append((b"x-tokenrelay-demo", b"true"))
        if self.admission is not None:
            headers.extend(self.admission.headers)
            self.admission.headers.clear()  # the head's only: not held for the whole stream
        if self.cached is not None:
            headers.append(self.cached.header)
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
        tap = self._open_tap() if self.resume is not None else None
        start: Message | None = {
            "type": "http.response.start",
            "status": 200,
            "headers": self._stream_head(dialect, opened, tap),
        }
        error: Error | None = None
        batch: list[Event] = opened.pending
        events = opened.events
        guard = self.guard if self.guard is not None and self.guard.filters else None
        describe = getattr(writer, "describe", None)
        out = [describe(self._describe(opened))] if describe is not None else []
        while True:
            if guard is not None:  # output rules, then placeholders restored (guard.route)
                batch = guard.feed(batch)
            for event in batch:
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
            if start is not None:  # the first turn: the head, with the first part when ready
                if out:
                    start[BODY_FOLLOWS] = True  # one write for both (tokenrelay.edge)
                await send(start)
                start = None
                self.head_sent = True
                self.ttft_ms = elapsed_ms(self.started)
            if out:
                body = out[0] if len(out) == 1 else b"".join(out)  # one part a token, mostly
                if tap is not None:
                    body = tap.add(body)
                await send({"type": "http.response.body", "body": body, "more_body": True})
                out = []
            if error is not None:
                break
            # what was just sent is not held while the next batch is awaited (seconds, on a
            # slow stream, and thousands of them at once)
            body = data = b""
            del batch
            try:
                batch = await anext(events)
            except StopAsyncIteration:
                if guard is not None:  # the text it still holds
                    batch, guard = guard.close(), None
                    continue
                break
        self.finished = True
        result = self._result(error)
        record = self._emit(*result)  # before the last byte: see RelayEndpoint.__call__
        summarize = getattr(writer, "summarize", None)
        if summarize is not None and record is not None:
            summarize(self._summary(record))
        last = writer.close() if tap is None else tap.add(writer.close())
        await send({"type": "http.response.body", "body": last, "more_body": False})
        return result

    def _stream_head(
        self, dialect: Dialect, opened: OpenStream, tap: Tap | None
    ) -> list[tuple[bytes, bytes]]:
        """A stream's response headers (built here so no frame of the stream keeps them)."""
        head = self._head(dialect.CONTENT_TYPE.encode(), opened)
        head.extend(_STREAM_HEADERS)
        head.extend(getattr(dialect, "STREAM_HEADERS", ()))
        if tap is not None:
            head.append((b"x-tokenrelay-stream-id", self.request_id.encode()))
        return head

    def _open_tap(self) -> Tap | None:
        """Ids on this stream's events and a copy kept for a reconnect (docs/resume.md); SSE
        dialects only (every front today)."""
        from tokenrelay.resume import owner_of

        store = self.endpoint.gateway.resume
        admission = self.admission
        if store is None or self.resume is None or admission is None or admission.identity is None:
            return None
        if not self.endpoint.dialect.CONTENT_TYPE.startswith("text/event-stream"):
            return None
        chat = self.request.front_options.get("chat_id")
        tap = self.tap = store.open(
            self.request_id,
            owner_of(admission.identity),
            self.endpoint.dialect_name,
            chat if isinstance(chat, str) else None,
            self.resume,
        )
        tap.buffer.expire = self._grace_over
        return tap

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

    def _result(self, error: Error | None) -> tuple[Outcome, str | None]:
        """How a stream ended; an output rule's cut (the canary's too) is logged."""
        if error is None:
            return "completed", None
        rule = self.guard.blocked if self.guard is not None else None
        if rule is None:
            return "error", error.type
        log.warning(
            "guard: request %s on route %s: output rule %s ended the answer",
            self.request_id,
            self.route,
            rule,
        )
        assert self.guard is not None
        return (
            ("guard_blocked", "guard_blocked")
            if self.guard.guard_blocked
            else ("error", error.type)
        )

    async def _respond_whole(self, opened: OpenStream) -> tuple[Outcome, str | None]:
        """A non-streaming answer: the upstream still streams (one code path, first-token
        failover, usage always reported); the events are folded into one JSON body."""
        guard = self.guard if self.guard is not None and self.guard.filters else None
        add = self.accumulator.add
        for event in guard.feed(opened.pending) if guard is not None else opened.pending:
            add(event)
        async for batch in opened.events:
            for event in guard.feed(batch) if guard is not None else batch:
                add(event)
            if guard is not None and guard.blocked is not None:
                break
        for event in guard.close() if guard is not None else ():
            add(event)
        completion = self.accumulator.result()
        endpoint = self.endpoint
        self.finished = True
        if completion.error is not None:
            error = GatewayError.from_event(completion.error)
            if guard is None or guard.blocked is None:  # the upstream's failure, not ours
                error.status = 502 if error.status < 500 else error.status
            self.status = error.status
            outcome, error_type = self._result(completion.error)
            self._emit(outcome, error_type)
            await endpoint.send_error(self.send, error, self.request_id, opened.attempts)
            return outcome, error_type
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
        self.ttft_ms = elapsed_ms(self.started)
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
                await self.endpoint.send_error(self.send, error, self.request_id)
            else:
                writer = self.endpoint.dialect.stream_writer(
                    self.request, id=self.request_id, model=""
                )
                body = writer.write(error.to_event()) + writer.close()
                if self.tap is not None:
                    body = self.tap.add(body)
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
            duration_ms=elapsed_ms(self.started),
            attempts=self.attempts,
            metadata=self.request.metadata,
            dropped_tools=opened.dropped_tools if opened else [],
        )
        record.request = self.request
        record.completion = self.accumulator.result()
        if self.guard is not None:
            record.guard, record.guard_output = self.guard.masked, self.guard.hits
            record.guard_blocked = self.guard.blocked
        if self.cached is not None:
            record.cache, record.cache_similarity = self.cached.plan.result, self.cached.similarity
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


def attempts_header(attempts: list[Attempt]) -> bytes:
    """``x-tokenrelay-attempts``: each try as ``provider/model;outcome=..;ms=..``."""
    return ", ".join(
        f"{a.provider}/{a.model};outcome={a.outcome};ms={a.ms:.0f}"
        + (f";group={a.group};pick={a.pick}" if a.group is not None else "")
        for a in attempts
    ).encode()


def elapsed_ms(since: float) -> float:
    """Milliseconds since ``since`` (a ``time.perf_counter()`` reading)."""
    return (time.perf_counter() - since) * 1000

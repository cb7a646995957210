"""OpenTelemetry tracing, when ``tracing.enabled`` (the ``otel`` extra): one SERVER span per
request and one CLIENT span per upstream attempt, named and attributed by the GenAI semantic
conventions, exported over OTLP/HTTP in batches by a background thread.

Only the gateway imports this module, and only when tracing is on, so with tracing off nothing of
OpenTelemetry is loaded and the hot path pays one ``is None`` check per request and per attempt.
With it on, the cost is a few spans per request and nothing per token: every attribute is set
when a span starts or ends, from what the relay and the failover already know.

Trace context is W3C ``traceparent`` / ``tracestate``: a client's parents the request span, and
each attempt sends its own span's upstream, so a provider (or the simulator) that traces joins
the same trace.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import urlsplit

from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased
from opentelemetry.trace import Span, SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from tokenrelay import __version__

if TYPE_CHECKING:
    from tokenrelay.model import Error, Request, Usage
    from tokenrelay.records import StreamRecord
    from tokenrelay.settings import TracingSettings

_PROPAGATOR = TraceContextTextMapPropagator()
_TRACE_HEADERS = (b"traceparent", b"tracestate")
# Our normalized finish reasons as the GenAI conventions spell them.
_FINISH = {"tool_calls": "tool_call", "stop_sequence": "stop"}


class Upstream(Protocol):
    """What a span says of the provider it went to (``providers.Provider`` is one)."""

    @property
    def name(self) -> str: ...
    @property
    def kind(self) -> str: ...
    @property
    def url(self) -> str: ...


class Tracer:
    """The gateway's tracer: its own provider (the process-wide global one is left to the
    host), sampling ``sample_ratio`` of the traces we start and following a client's decision
    for the traces it started."""

    def __init__(self, settings: TracingSettings, exporter: SpanExporter | None = None) -> None:
        self.exporter = exporter or _exporter(settings)
        resource = Resource.create(
            {"service.name": settings.service_name, "service.version": __version__}
        )
        sampler = ParentBased(TraceIdRatioBased(settings.sample_ratio))
        self.provider = TracerProvider(resource=resource, sampler=sampler)
        self.provider.add_span_processor(BatchSpanProcessor(self.exporter))
        self._tracer = self.provider.get_tracer("tokenrelay", __version__)
        self._servers: dict[str, tuple[str, int]] = {}  # provider name -> (address, port)

    def begin(self, scope: Mapping[str, Any], request_id: str) -> RequestTrace:
        """The span of a request that has just arrived, child of the client's ``traceparent``
        when it sent one; it is named once the route is known, when it ends."""
        carrier = {
            name.decode("latin-1"): value.decode("latin-1")
            for name, value in scope["headers"]
            if name in _TRACE_HEADERS
        }
        parent = _PROPAGATOR.extract(carrier) if carrier else None
        span = self._tracer.start_span(
            "chat",
            context=parent,
            kind=SpanKind.SERVER,
            attributes={
                "gen_ai.operation.name": "chat",
                "http.request.method": str(scope.get("method", "POST")),
                "url.path": str(scope.get("path", "")),
                "tokenrelay.request_id": request_id,
            },
        )
        return RequestTrace(self, span)

    def server(self, provider: Upstream) -> tuple[str, int]:
        """The upstream's host and port, parsed once per provider."""
        found = self._servers.get(provider.name)
        if found is None:
            url = urlsplit(provider.url)
            port = url.port or (443 if url.scheme == "https" else 80)
            found = self._servers[provider.name] = (url.hostname or "", port)
        return found

    def start_attempt(self, name: str, parent: Span, attributes: dict[str, Any]) -> Span:
        return self._tracer.start_span(
            name,
            context=trace.set_span_in_context(parent),
            kind=SpanKind.CLIENT,
            attributes=attributes,
        )

    def flush(self, timeout_ms: int = 30_000) -> bool:
        """Export every ended span now (blocking: call it from a thread in async code)."""
        return self.provider.force_flush(timeout_ms)

    def shutdown(self) -> None:
        """Export what is left and stop the exporting thread (blocking)."""
        self.provider.shutdown()


class RequestTrace:
    """One request's spans. The relay ends it with the request's record; the failover opens an
    ``AttemptTrace`` per upstream try."""

    __slots__ = ("_attempts", "_served", "_tracer", "span")

    def __init__(self, tracer: Tracer, span: Span) -> None:
        self._tracer = tracer
        self.span = span
        self._attempts: list[AttemptTrace] = []
        self._served: AttemptTrace | None = None

    def attempt(
        self, provider: Upstream, model: str, request: Request, headers: Mapping[str, str]
    ) -> tuple[AttemptTrace, dict[str, str]]:
        """A child span for one try of ``model`` at ``provider``, and a copy of the upstream
        headers carrying that span's ``traceparent`` (the originals are cached per target and
        shared by its retries)."""
        address, port = self._tracer.server(provider)
        attributes: dict[str, Any] = {
            "gen_ai.operation.name": "chat",
            "gen_ai.provider.name": provider.kind,
            "gen_ai.request.model": model,
            "server.address": address,
            "server.port": port,
            "tokenrelay.provider": provider.name,
            "tokenrelay.attempt": len(self._attempts) + 1,
        }
        attributes.update(_request_attributes(request))
        span = self._tracer.start_attempt(f"chat {model}", self.span, attributes)
        traced = dict(headers)
        _PROPAGATOR.inject(traced, context=trace.set_span_in_context(span))
        attempt = AttemptTrace(self, span)
        self._attempts.append(attempt)
        return attempt, traced

    def abandon(self) -> None:
        """The client left before its request body was complete: no record, but an end."""
        self.span.set_attributes(
            {"tokenrelay.outcome": "aborted", "error.type": "client_disconnected"}
        )
        self.span.end()

    def end(self, record: StreamRecord) -> None:
        """End the request's span, and every attempt still open (the served one, or one the
        client's departure or the shutdown cut short), with what the record says."""
        for attempt in self._attempts:
            if not attempt.ended:
                attempt.finish(record, served=attempt is self._served)
        span = self.span
        if not span.is_recording():
            span.end()
            return
        request = record.request
        model = request.model if request is not None else ""
        span.update_name(f"chat {record.route or model}".rstrip())
        attributes = _record_attributes(record)
        attributes["tokenrelay.route"] = record.route
        attributes["tokenrelay.failover"] = len(record.attempts) > 1
        if record.ttft_ms is not None:
            attributes["tokenrelay.ttft_ms"] = round(record.ttft_ms, 3)
        if request is not None:
            attributes["gen_ai.request.model"] = request.model
            attributes.update(_request_attributes(request))
        if record.model is not None:
            attributes["gen_ai.response.model"] = record.model
        span.set_attributes(attributes)
        _set_status(span, record)
        span.end()


class AttemptTrace:
    """One upstream try's span: ended when the try fails or is hedged out, or, for the try that
    serves the answer, when the request's stream ends."""

    __slots__ = ("_owner", "_started", "ended", "span")

    def __init__(self, owner: RequestTrace, span: Span) -> None:
        self._owner = owner
        self.span = span
        self._started = time.perf_counter()
        self.ended = False

    def won(self) -> None:
        """Content arrived first here: this try serves the answer; it ends with the stream."""
        self._owner._served = self
        ttft = round((time.perf_counter() - self._started) * 1000, 3)
        self.span.set_attributes({"tokenrelay.ttft_ms": ttft, "http.response.status_code": 200})

    def failed(self, error: Error) -> None:
        attributes: dict[str, Any] = {
            "tokenrelay.outcome": error.type,
            "error.type": error.type,
            "http.response.status_code": error.status,
        }
        if error.usage is not None:
            attributes.update(_usage_attributes(error.usage))
        self.span.set_attributes(attributes)
        self.span.set_status(Status(StatusCode.ERROR, error.message))
        self._end()

    def hedged_out(self) -> None:
        """Another target's content came first; this try was cancelled (not a failure)."""
        self.span.set_attribute("tokenrelay.outcome", "hedged_out")
        self._end()

    def finish(self, record: StreamRecord, *, served: bool) -> None:
        span = self.span
        if span.is_recording():
            attributes = _record_attributes(record) if served else {}
            if served and record.model is not None:
                attributes["gen_ai.response.model"] = record.model
            attributes["tokenrelay.outcome"] = record.outcome
            if not served:  # cut short while it waited for its first token
                attributes["error.type"] = record.error_type or "cancelled"
            span.set_attributes(attributes)
            if served or record.outcome != "aborted":
                _set_status(span, record)
        self._end()

    def _end(self) -> None:
        self.ended = True
        self.span.end()


def _request_attributes(request: Request) -> dict[str, Any]:
    attributes: dict[str, Any] = {}
    if request.max_tokens is not None:
        attributes["gen_ai.request.max_tokens"] = request.max_tokens
    if request.temperature is not None:
        attributes["gen_ai.request.temperature"] = request.temperature
    return attributes


def _usage_attributes(usage: Usage) -> dict[str, Any]:
    attributes: dict[str, Any] = {}
    if usage.input_tokens is not None:
        attributes["gen_ai.usage.input_tokens"] = usage.input_tokens
    if usage.output_tokens is not None:
        attributes["gen_ai.usage.output_tokens"] = usage.output_tokens
    if usage.cache_read_tokens is not None:
        attributes["gen_ai.usage.cache_read.input_tokens"] = usage.cache_read_tokens
    if usage.cache_write_tokens is not None:
        attributes["gen_ai.usage.cache_creation.input_tokens"] = usage.cache_write_tokens
    return attributes


def _record_attributes(record: StreamRecord) -> dict[str, Any]:
    """What the end of a request says, on its span and on the attempt that served it."""
    attributes = _usage_attributes(record.usage)
    attributes["tokenrelay.outcome"] = record.outcome
    attributes["http.response.status_code"] = record.status
    if record.finish_reason is not None:
        reason = record.finish_reason
        attributes["gen_ai.response.finish_reasons"] = [_FINISH.get(reason, reason)]
    if record.error_type is not None:
        attributes["error.type"] = record.error_type
    for entity, count in record.guard.items():  # types and counts, never values
        attributes[f"tokenrelay.guard.masked.{entity}"] = count
    if record.guard_blocked is not None:
        attributes["tokenrelay.guard.blocked"] = record.guard_blocked
    return attributes


def _set_status(span: Span, record: StreamRecord) -> None:
    """ERROR when the gateway or an upstream failed the request; a client's own mistake (a 4xx)
    or its departure is not a failure of ours."""
    if record.outcome in ("error", "interrupted", "rejected") and not 400 <= record.status < 500:
        span.set_status(Status(StatusCode.ERROR, record.error_type))


def _exporter(settings: TracingSettings) -> SpanExporter:
    if settings.exporter == "memory":
        return InMemorySpanExporter()
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    endpoint = settings.endpoint
    if endpoint is not None and not endpoint.rstrip("/").endswith("/v1/traces"):
        endpoint = endpoint.rstrip("/") + "/v1/traces"  # a base URL, as OTEL_EXPORTER_OTLP_ENDPOINT
    return OTLPSpanExporter(endpoint=endpoint)

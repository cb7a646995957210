"""OpenTelemetry tracing over real HTTP: client -> gateway (tracing on, spans kept in memory by
``tracing.exporter = "memory"``) -> the simulator, which records the ``traceparent`` it
received; and, with tracing off, not one OpenTelemetry module imported."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import pytest_asyncio
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from tests.servers import RunningGateway, gateway_environ, gateway_server
from tests.test_failover import CLAUDE, GPT, faulty, route
from tokenrelay.dialects.sse import SSEParser

ROOT = Path(__file__).resolve().parent.parent
CLIENT_TRACE = "0af7651916cd43dd8448eb211c80319c"
CLIENT_SPAN = "b7ad6b7169203331"


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def gw(simulator: Any) -> AsyncIterator[RunningGateway]:
    environ = {
        **gateway_environ(simulator.url),
        "TOKENRELAY_TRACING__ENABLED": "true",
        "TOKENRELAY_TRACING__EXPORTER": "memory",
        "TOKENRELAY_ROUTES__FLAKY__RETRIES": "0",  # one failed try, then the next target
        **route("hedged", [faulty(CLAUDE, ttft_ms=3000), GPT], hedge="true", hedge_delay=0.1),
        **route("waiting", [faulty(CLAUDE, ttft_ms=3000)]),
    }
    async with gateway_server(environ) as running:
        yield running


def exporter(gw: RunningGateway) -> InMemorySpanExporter:
    tracer = gw.gateway.tracer
    assert tracer is not None
    assert isinstance(tracer.exporter, InMemorySpanExporter)
    return tracer.exporter


async def spans_of(
    gw: RunningGateway, request_id: str, within: float = 3.0
) -> tuple[ReadableSpan, list[ReadableSpan]]:
    """The request's server span and its attempts' client spans, in the order they started."""
    tracer = gw.gateway.tracer
    assert tracer is not None
    deadline = time.monotonic() + within
    while True:
        await asyncio.to_thread(tracer.flush)
        finished = exporter(gw).get_finished_spans()
        servers = [s for s in finished if attr(s, "tokenrelay.request_id") == request_id]
        if servers or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.01)
    assert len(servers) == 1, f"no server span for request {request_id}"
    server = servers[0]
    assert server.context is not None
    children = [
        s for s in finished if s.parent is not None and s.parent.span_id == server.context.span_id
    ]
    return server, sorted(children, key=lambda s: s.start_time or 0)


def attr(span: ReadableSpan, name: str) -> Any:
    return (span.attributes or {}).get(name)


async def generate(
    http: aiohttp.ClientSession, gw: RunningGateway, body: dict[str, Any], **headers: str
) -> tuple[str, bytes]:
    async with http.post(gw.url + "/api/generate", json=body, headers=headers) as response:
        return response.headers["x-request-id"], await response.read()


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


async def test_a_completed_request_is_one_server_span_and_one_client_span(
    gw: RunningGateway, http: aiohttp.ClientSession, simulator: Any
) -> None:
    body = {
        "model": "an",
        "stream": True,
        "max_tokens": 50,
        "temperature": 0.3,
        "messages": [{"role": "user", "content": "Hi"}],
    }
    async with http.post(gw.url + "/v1/chat/completions", json=body) as response:
        assert response.status == 200
        request_id = response.headers["x-request-id"]
        await response.read()
    record = await gw.wait_record(request_id)
    server, clients = await spans_of(gw, request_id)

    assert server.name == "chat an" and server.kind is SpanKind.SERVER
    assert server.status.status_code is StatusCode.UNSET
    assert server.parent is None  # the client sent no traceparent
    attributes: dict[str, Any] = dict(server.attributes or {})
    assert attributes.pop("tokenrelay.ttft_ms") > 0
    assert attributes == {
        "gen_ai.operation.name": "chat",
        "gen_ai.request.model": "an",
        "gen_ai.response.model": "claude-sonnet-5-5",
        "gen_ai.request.max_tokens": 50,
        "gen_ai.request.temperature": 0.3,
        "gen_ai.usage.input_tokens": record.usage.input_tokens,
        "gen_ai.usage.output_tokens": record.usage.output_tokens,
        "gen_ai.usage.cache_read.input_tokens": record.usage.cache_read_tokens,
        "gen_ai.usage.cache_creation.input_tokens": record.usage.cache_write_tokens,
        "gen_ai.response.finish_reasons": ("stop",),
        "http.request.method": "POST",
        "http.response.status_code": 200,
        "url.path": "/v1/chat/completions",
        "tokenrelay.request_id": request_id,
        "tokenrelay.route": "an",
        "tokenrelay.outcome": "completed",
        "tokenrelay.failover": False,
    }
    assert record.usage.input_tokens and record.usage.output_tokens

    (client,) = clients
    assert client.name == "chat claude-sonnet-5-5" and client.kind is SpanKind.CLIENT
    assert client.status.status_code is StatusCode.UNSET
    port = int(simulator.url.rsplit(":", 1)[1])
    expected = {
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": "anthropic",
        "gen_ai.request.model": "claude-sonnet-5-5",
        "gen_ai.response.model": "claude-sonnet-5-5",
        "gen_ai.request.max_tokens": 50,
        "gen_ai.request.temperature": 0.3,
        "gen_ai.usage.input_tokens": record.usage.input_tokens,
        "gen_ai.usage.output_tokens": record.usage.output_tokens,
        "gen_ai.response.finish_reasons": ("stop",),
        "server.address": "127.0.0.1",
        "server.port": port,
        "http.response.status_code": 200,
        "tokenrelay.provider": "anthropic",
        "tokenrelay.attempt": 1,
        "tokenrelay.outcome": "completed",
    }
    assert {k: v for k, v in (client.attributes or {}).items() if k in expected} == expected
    assert 0 < attr(client, "tokenrelay.ttft_ms") <= attr(server, "tokenrelay.ttft_ms")
    # the served attempt ends with the stream, inside its request
    assert server.start_time and client.start_time and server.end_time and client.end_time
    assert server.start_time <= client.start_time < client.end_time <= server.end_time


async def test_a_failover_gives_a_failed_client_span_then_the_served_one(
    gw: RunningGateway, http: aiohttp.ClientSession
) -> None:
    request_id, _ = await generate(http, gw, {"prompt": "hi", "route": "flaky"})
    record = await gw.wait_record(request_id)
    server, clients = await spans_of(gw, request_id)
    assert [a.outcome for a in record.attempts] == ["overloaded", "ok"]
    assert attr(server, "tokenrelay.failover") is True
    assert attr(server, "tokenrelay.outcome") == "completed"
    assert server.status.status_code is StatusCode.UNSET

    failed, served = clients
    assert failed.name == "chat claude-sonnet-5-5"
    assert attr(failed, "gen_ai.provider.name") == "anthropic"
    assert attr(failed, "error.type") == "overloaded"
    assert attr(failed, "http.response.status_code") == 529
    assert failed.status.status_code is StatusCode.ERROR
    assert failed.end_time and served.start_time and failed.end_time <= served.start_time

    assert served.name == "chat gpt-5.5"
    assert attr(served, "gen_ai.provider.name") == "openai"
    assert attr(served, "tokenrelay.attempt") == 2
    assert attr(served, "error.type") is None
    assert attr(served, "gen_ai.usage.output_tokens") == record.usage.output_tokens


async def test_the_clients_traceparent_parents_the_request_and_each_attempt_sends_its_own(
    gw: RunningGateway, http: aiohttp.ClientSession, simulator: Any
) -> None:
    traceparent = f"00-{CLIENT_TRACE}-{CLIENT_SPAN}-01"
    request_id, _ = await generate(
        http,
        gw,
        {"prompt": "hi", "route": "oa"},
        traceparent=traceparent,
        tracestate="vendor=opaque",
        **{"x-sim-tokens": "3"},  # marks this request among the simulator's recent ones
    )
    server, (client,) = await spans_of(gw, request_id)
    assert server.context is not None and client.context is not None
    assert server.parent is not None and server.parent.is_remote
    assert f"{server.parent.span_id:016x}" == CLIENT_SPAN
    assert f"{server.context.trace_id:032x}" == CLIENT_TRACE
    assert client.context.trace_id == server.context.trace_id

    received = [
        r["headers"]
        for r in simulator.stats()["last_requests"]
        if r["headers"].get("x-sim-tokens") == "3"
    ]
    upstream = received[-1]
    version, trace_id, span_id, flags = upstream["traceparent"].split("-")
    assert (version, trace_id, flags) == ("00", CLIENT_TRACE, "01")
    assert span_id == f"{client.context.span_id:016x}"  # the attempt's span, not the request's
    assert upstream["tracestate"] == "vendor=opaque"


async def test_each_retry_sends_its_own_traceparent(
    gw: RunningGateway, http: aiohttp.ClientSession, simulator: Any
) -> None:
    """A target's headers are built once and shared by its tries; each try's copy carries its
    own span."""
    simulator.reset_stats()
    request_id, _ = await generate(
        http, gw, {"prompt": "hi", "route": "oa"}, **{"x-sim-fault": "500"}
    )
    _, clients = await spans_of(gw, request_id)
    sent = [r["headers"]["traceparent"] for r in simulator.stats()["last_requests"]]
    assert len(clients) == len(sent) == 2
    assert [p.split("-")[2] for p in sent] == [f"{c.context.span_id:016x}" for c in clients]
    assert all(c.status.status_code is StatusCode.ERROR for c in clients)


async def test_a_hedged_out_loser_has_its_own_span(
    gw: RunningGateway, http: aiohttp.ClientSession
) -> None:
    request_id, _ = await generate(http, gw, {"prompt": "hi", "route": "hedged"})
    server, (loser, winner) = await spans_of(gw, request_id)
    assert attr(loser, "gen_ai.provider.name") == "anthropic"
    assert attr(loser, "tokenrelay.outcome") == "hedged_out"
    assert loser.status.status_code is StatusCode.UNSET and attr(loser, "error.type") is None
    assert attr(winner, "gen_ai.provider.name") == "openai"
    assert attr(winner, "tokenrelay.outcome") == "completed"
    assert loser.end_time and winner.end_time and loser.end_time < winner.end_time
    assert attr(server, "tokenrelay.failover") is True


async def test_an_aborted_stream_ends_its_spans_as_aborted(gw: RunningGateway) -> None:
    body = {"prompt": "a long answer please", "route": "slow"}
    async with aiohttp.ClientSession() as own:  # its own connection, so closing it is a real drop
        response = await own.post(gw.url + "/api/generate", json=body)
        request_id = response.headers["x-request-id"]
        parser, texts = SSEParser(), 0
        async for chunk in response.content.iter_any():
            texts += len(parser.feed(chunk))
            if texts >= 3:
                break
        response.close()
    record = await gw.wait_record(request_id)
    assert record.outcome == "aborted"
    server, (client,) = await spans_of(gw, request_id)
    for span in (server, client):
        assert attr(span, "tokenrelay.outcome") == "aborted"
        assert attr(span, "error.type") == "client_disconnected"
        assert span.status.status_code is StatusCode.UNSET  # the client left; nothing failed
    assert client.end_time and server.end_time and client.end_time <= server.end_time


async def test_a_client_leaving_before_the_first_token_ends_the_open_attempt(
    gw: RunningGateway,
) -> None:
    async with aiohttp.ClientSession() as own:
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(
                own.post(gw.url + "/api/generate", json={"prompt": "hi", "route": "waiting"}), 0.3
            )
    deadline = time.monotonic() + 3
    while not any(r.route == "waiting" for r in gw.records) and time.monotonic() < deadline:
        await asyncio.sleep(0.01)
    record = next(r for r in gw.records if r.route == "waiting")
    server, (client,) = await spans_of(gw, record.request_id)
    assert record.outcome == "aborted"
    assert attr(client, "tokenrelay.outcome") == "aborted"
    assert attr(client, "error.type") == "client_disconnected"
    assert attr(server, "tokenrelay.outcome") == "aborted"


async def test_a_mid_stream_failure_marks_the_served_attempt_and_the_request(
    gw: RunningGateway, http: aiohttp.ClientSession
) -> None:
    request_id, _ = await generate(http, gw, {"prompt": "hi", "route": "midfail"})
    server, (client,) = await spans_of(gw, request_id)
    for span in (server, client):
        assert attr(span, "tokenrelay.outcome") == "error"
        assert attr(span, "error.type") == "overloaded"
        assert span.status.status_code is StatusCode.ERROR


async def test_a_rejected_request_has_a_span_but_no_attempt(
    gw: RunningGateway, http: aiohttp.ClientSession
) -> None:
    request_id, _ = await generate(http, gw, {"prompt": "hi", "route": "nowhere"})
    server, clients = await spans_of(gw, request_id)
    assert clients == []
    assert server.name == "chat nowhere"
    assert attr(server, "tokenrelay.outcome") == "rejected"
    assert attr(server, "error.type") == "not_found"
    assert attr(server, "http.response.status_code") == 404
    assert server.status.status_code is StatusCode.UNSET  # the client's mistake


def test_tracing_off_imports_nothing_of_opentelemetry(tmp_path: Path) -> None:
    """Cold start: a gateway with tracing off (the default) serves a request without loading a
    single OpenTelemetry module."""
    script = """
import asyncio, sys
import aiohttp
from tests.servers import clean_environ, gateway_server

async def main():
    environ = clean_environ(TOKENRELAY_DATABASE_URL=sys.argv[1], TOKENRELAY_SIMULATOR__TOKENS="3")
    async with gateway_server(environ) as running, aiohttp.ClientSession() as http:
        async with http.post(running.url + "/api/generate", json={"prompt": "hi"}) as response:
            assert response.status == 200, response.status
            await response.read()
        assert running.gateway.tracer is None

asyncio.run(main())
loaded = sorted(name for name in sys.modules if name.startswith("opentelemetry"))
assert not loaded, loaded
print("ok")
"""
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    result = subprocess.run(
        [sys.executable, "-c", script, f"sqlite:///{tmp_path}/keys.db"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0 and result.stdout.splitlines()[-1] == "ok", result.stderr


def test_tracing_sends_to_a_collector_base_url() -> None:
    """``tracing.endpoint`` is a base URL, as OTEL_EXPORTER_OTLP_ENDPOINT: the exporter posts to
    its ``/v1/traces``."""
    from tokenrelay.observe.tracing import Tracer
    from tokenrelay.settings import TracingSettings

    for endpoint in ("http://collector:4318", "http://collector:4318/v1/traces"):
        tracer = Tracer(TracingSettings(enabled=True, endpoint=endpoint))
        try:
            assert tracer.exporter._endpoint == "http://collector:4318/v1/traces"  # type: ignore[attr-defined]
        finally:
            tracer.shutdown()


def test_settings_read_the_tracing_section() -> None:
    from tokenrelay.settings import load

    settings = load(environ={})
    assert settings.tracing.enabled is False
    assert settings.tracing.service_name == "tokenrelay" and settings.tracing.sample_ratio == 1.0
    settings = load(
        environ={
            "TOKENRELAY_TRACING__ENABLED": "true",
            "TOKENRELAY_TRACING__ENDPOINT": "http://collector:4318",
            "TOKENRELAY_TRACING__SAMPLE_RATIO": "0.25",
        }
    )
    assert settings.tracing.enabled and settings.tracing.sample_ratio == 0.25


def test_tracing_without_the_extra_is_a_config_error(monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.util

    from tokenrelay.settings import ConfigError, load

    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ConfigError, match=r"tokenrelay\[otel\]"):
        load(environ={"TOKENRELAY_TRACING__ENABLED": "true"})

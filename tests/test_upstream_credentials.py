"""The gateway's and the client's credentials stay where they belong, over real HTTP.

An upstream that refuses the gateway's key (and, as some do, quotes it back in its error) is
the operator's problem: the client gets a generic 502/503 about the gateway, never the
upstream's words or any part of the key, and the log gets the details with the key masked.
A client's own credentials (its ``trk_`` key, cookies) are never forwarded upstream, whatever
``forward_headers`` says."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import msgspec
import pytest
import pytest_asyncio
from aiohttp import web

from tests.servers import RunningGateway, gateway_environ, gateway_server
from tests.test_failover import GPT, attempts, route
from tokenrelay.gate.keys import KeyStore

pytestmark = pytest.mark.asyncio(loop_scope="session")

OPENAI_KEY = "sk-proj-SECRETKEY-openai-0123456789abcdef"
ANTHROPIC_KEY = "sk-ant-api03-SECRETKEY-anthropic-0123456789"
LEAKS = ("SECRETKEY", "0123456789")  # any part of either key a client must never see


def _sse(*events: dict[str, Any]) -> bytes:
    return b"".join(b"data: " + msgspec.json.encode(event) + b"\n\n" for event in events)


def _chunk(text: str) -> dict[str, Any]:
    return {
        "id": "chatcmpl-echo",
        "object": "chat.completion.chunk",
        "model": "echo",
        "choices": [{"index": 0, "delta": {"role": "assistant", "content": text}}],
    }


async def _openai(request: web.Request) -> web.StreamResponse:
    """An OpenAI-compatible upstream whose behaviour is its model's name; every error quotes
    the ``Authorization`` header it received, as a careless server (or a proxy) might."""
    model = (await request.json())["model"]
    quoted = f"Incorrect API key provided: {request.headers.get('authorization')}"
    if model == "echo-401":
        body = {"error": {"message": quoted, "type": "invalid_request_error", "code": "bad_key"}}
        return web.json_response(body, status=401)
    response = web.StreamResponse(headers={"content-type": "text/event-stream"})
    await response.prepare(request)
    events = [] if model == "inband-before" else [_chunk("Hello")]
    events.append({"error": {"message": quoted, "type": "x", "code": "invalid_api_key"}})
    await response.write(_sse(*events))
    await response.write_eof()
    return response


async def _anthropic(request: web.Request) -> web.StreamResponse:
    quoted = f"invalid x-api-key: {request.headers.get('x-api-key')}"
    body = {"type": "error", "error": {"type": "authentication_error", "message": quoted}}
    return web.json_response(body, status=401)


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def echo() -> AsyncIterator[str]:
    app = web.Application()
    app.router.add_post("/v1/chat/completions", _openai)
    app.router.add_post("/v1/messages", _anthropic)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def gw(simulator: Any, echo: str) -> AsyncIterator[RunningGateway]:
    ai = {"provider": "echoai", "model": "echo-401"}
    an = {"provider": "echoan", "model": "echo-401"}
    environ = {
        **gateway_environ(simulator.url),
        "TOKENRELAY_PROVIDERS__ECHOAI__KIND": "openai",
        "TOKENRELAY_PROVIDERS__ECHOAI__BASE_URL": echo + "/v1",
        "TOKENRELAY_PROVIDERS__ECHOAI__API_KEY": OPENAI_KEY,
        "TOKENRELAY_PROVIDERS__ECHOAN__KIND": "anthropic",
        "TOKENRELAY_PROVIDERS__ECHOAN__BASE_URL": echo,
        "TOKENRELAY_PROVIDERS__ECHOAN__API_KEY": ANTHROPIC_KEY,
        **route("echoai", [ai]),
        **route("echoboth", [an, ai]),
        **route("echothen", [ai, GPT]),
        **route("inbandbefore", [{**ai, "model": "inband-before"}, GPT]),
        **route("inbandafter", [{**ai, "model": "inband-after"}]),
        # Every prefix that could reach a credential, a cookie or a hop-by-hop header.
        "TOKENRELAY_PROVIDERS__ANTHROPIC__FORWARD_HEADERS": msgspec.json.encode(
            ["authorization", "x-", "cookie", "proxy-", "host", "content-", "connection", "te"]
        ).decode(),
        **route("forward", [{"provider": "anthropic", "model": "claude-sonnet-5-5"}]),
    }
    async with gateway_server(environ) as running:
        yield running


async def post(
    gw: RunningGateway, path: str, body: dict[str, Any], headers: dict[str, str] | None = None
) -> tuple[aiohttp.ClientResponse, bytes]:
    async with aiohttp.ClientSession() as http:
        response = await http.post(gw.url + path, json=body, headers=headers)
        return response, await response.read()


def chat(route_name: str, stream: bool = True) -> dict[str, Any]:
    return {"model": route_name, "messages": [{"role": "user", "content": "hi"}], "stream": stream}


def assert_no_leak(response: aiohttp.ClientResponse, body: bytes) -> None:
    seen = body.decode() + "".join(f"{k}: {v}\n" for k, v in response.headers.items())
    for fragment in LEAKS:
        assert fragment not in seen, f"the client saw {fragment!r}: {seen}"


async def test_a_refused_gateway_key_is_a_generic_502_and_never_reaches_the_client(
    gw: RunningGateway, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.ERROR, logger="tokenrelay"):
        for stream in (True, False):
            response, body = await post(gw, "/v1/chat/completions", chat("echoai", stream))
            assert_no_leak(response, body)
            assert response.status == 502  # about the gateway, not the client's own key
            error = msgspec.json.decode(body)["error"]
            assert "credentials for echoai were refused" in error["message"]
            assert response.headers["x-tokenrelay-error-type"] == "upstream_unavailable"
            assert [a[1] for a in attempts(response)] == ["outcome=upstream_auth"]
    logged = [r.getMessage() for r in caplog.records if "CONFIGURATION ERROR" in r.getMessage()]
    assert logged and all("Incorrect API key provided" in line for line in logged)
    assert not [line for line in logged if any(fragment in line for fragment in LEAKS)]


async def test_every_target_refusing_the_gateway_keys_leaks_nothing(gw: RunningGateway) -> None:
    response, body = await post(gw, "/v1/messages", {**chat("echoboth"), "max_tokens": 20})
    assert_no_leak(response, body)
    assert response.status in (502, 503)
    message = msgspec.json.decode(body)["error"]["message"]
    assert "echoan" in message and "echoai" in message


async def test_a_refused_key_moves_on_to_the_next_target(gw: RunningGateway) -> None:
    response, body = await post(gw, "/v1/chat/completions", chat("echothen"))
    assert_no_leak(response, body)
    assert response.status == 200 and response.headers["x-tokenrelay-provider"] == "openai"


async def test_an_upstream_error_event_quoting_the_key_is_masked(gw: RunningGateway) -> None:
    # Before any content: the walk moves on; after content: an in-band error, generic too.
    response, body = await post(gw, "/v1/chat/completions", chat("inbandbefore"))
    assert_no_leak(response, body)
    assert response.headers["x-tokenrelay-provider"] == "openai"
    response, body = await post(gw, "/v1/chat/completions", chat("inbandafter"))
    assert_no_leak(response, body)
    assert b"Hello" in body and b"credentials for echoai were refused" in body


async def test_client_credentials_and_hop_headers_are_never_forwarded(
    gw: RunningGateway, simulator: Any
) -> None:
    _, secret = await KeyStore(await gw.gateway.gate.database()).create("fwd", "acme")
    headers = {
        "authorization": f"Bearer {secret}",
        "cookie": "session=alice",
        "proxy-authorization": "Basic YWxpY2U6c2VjcmV0",
        "x-note": f"my key is {secret}",
        "x-api-key": secret,
        "te": "trailers",
        "x-sim-ttft-ms": "1",  # a header the configuration means to forward
    }
    async with aiohttp.ClientSession() as http:
        await http.post(simulator.url + "/stats/reset")
    response, _ = await post(gw, "/v1/chat/completions", chat("forward"), headers)
    assert response.status == 200
    async with aiohttp.ClientSession() as http, http.get(simulator.url + "/stats") as stats:
        sent = (await stats.json())["last_requests"][-1]["headers"]
    assert not [value for value in sent.values() if "trk_" in value]
    assert sent["x-api-key"] == "test-anthropic-key"  # the gateway's own, not the client's
    for name in ("authorization", "cookie", "proxy-authorization", "x-note", "te"):
        assert name not in sent
    assert sent["host"] == simulator.url.removeprefix("http://")
    assert sent["x-sim-ttft-ms"] == "1"

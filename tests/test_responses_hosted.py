"""Responses clients unchanged (issue 14 sections 1, 2 and 5): ``api = "auto"`` on an OpenAI
provider, hosted tools across APIs (translated, refused by name, or dropped and named), unknown
tool types passed through, and the WebSocket upgrade on /v1/responses answered 426."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, MutableMapping
from typing import Any

import aiohttp
import pytest
import pytest_asyncio
from aiohttp import web

from tests.servers import RunningGateway, free_port, gateway_environ, gateway_server
from tokenrelay.observe.audit import audit_line
from tokenrelay.settings import ConfigError, load
from tokenrelay.simulator import RunningSimulator

QUESTION = "Weather in Paris?"
WEATHER = {
    "type": "function",
    "name": "weather",
    "description": "The weather in a city.",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
}
WEB_SEARCH = {
    "type": "web_search",
    "filters": {"allowed_domains": ["example.com"]},
    "user_location": {"type": "approximate", "city": "Paris", "country": "FR"},
}
TOOL_SEARCH = {"type": "tool_search", "execution": "client"}


def route(name: str, target: str, **more: str) -> dict[str, str]:
    key = f"TOKENRELAY_ROUTES__{name.upper()}__"
    settings = {"TARGETS": target, "SYSTEM": "", "ALLOW_CLIENT_SYSTEM": "1", **more}
    return {key + setting: value for setting, value in settings.items()}


# --- an Anthropic upstream that searched the web --------------------------------------------------

_SEARCHED = [
    ("message_start", {"type": "message_start", "message": {
        "id": "msg_1", "type": "message", "role": "assistant", "model": "claude-sonnet-5-5",
        "content": [], "usage": {"input_tokens": 12, "output_tokens": 1}}}),
    ("content_block_start", {"type": "content_block_start", "index": 0, "content_block": {
        "type": "server_tool_use", "id": "srvtoolu_1", "name": "web_search", "input": {}}}),
    ("content_block_delta", {"type": "content_block_delta", "index": 0, "delta": {
        "type": "input_json_delta", "partial_json": '{"query": "paris weather"}'}}),
    ("content_block_stop", {"type": "content_block_stop", "index": 0}),
    ("content_block_start", {"type": "content_block_start", "index": 1, "content_block": {
        "type": "web_search_tool_result", "tool_use_id": "srvtoolu_1", "content": [{
            "type": "web_search_result", "url": "https://example.com/paris", "title": "Paris",
            "encrypted_content": "abc", "page_age": None}]}}),
    ("content_block_stop", {"type": "content_block_stop", "index": 1}),
    ("content_block_start", {"type": "content_block_start", "index": 2, "content_block": {
        "type": "text", "text": "", "citations": []}}),
    ("content_block_delta", {"type": "content_block_delta", "index": 2, "delta": {
        "type": "citations_delta", "citation": {
            "type": "web_search_result_location", "url": "https://example.com/paris",
            "title": "Paris", "encrypted_index": "x", "cited_text": "sunny"}}}),
    ("content_block_delta", {"type": "content_block_delta", "index": 2, "delta": {
        "type": "text_delta", "text": "Sunny in Paris."}}),
    ("content_block_stop", {"type": "content_block_stop", "index": 2}),
    ("message_delta", {"type": "message_delta", "delta": {"stop_reason": "end_turn"},
        "usage": {"output_tokens": 9, "server_tool_use": {"web_search_requests": 1}}}),
    ("message_stop", {"type": "message_stop"}),
]  # fmt: skip


class SearchingUpstream:
    """Answers every Messages request with ``_SEARCHED`` and keeps the bodies it got."""

    def __init__(self) -> None:
        self.bodies: list[dict[str, Any]] = []

    async def messages(self, request: web.Request) -> web.StreamResponse:
        self.bodies.append(await request.json())
        response = web.StreamResponse(headers={"content-type": "text/event-stream"})
        await response.prepare(request)
        for event, data in _SEARCHED:
            await response.write(f"event: {event}\ndata: {json.dumps(data)}\n\n".encode())
        await response.write_eof()
        return response


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def searching() -> AsyncIterator[tuple[SearchingUpstream, str]]:
    upstream = SearchingUpstream()
    app = web.Application()
    app.router.add_post("/v1/messages", upstream.messages)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield upstream, f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def gw(
    simulator: RunningSimulator, searching: tuple[SearchingUpstream, str]
) -> AsyncIterator[RunningGateway]:
    auto = "TOKENRELAY_PROVIDERS__AUTO__"
    stub = "TOKENRELAY_PROVIDERS__SEARCHER__"
    environ = {
        **gateway_environ(simulator.url),
        auto + "KIND": "openai",
        auto + "API": "auto",
        auto + "BASE_URL": simulator.url + "/v1",
        auto + "API_KEY": "test-key",
        auto + "FORWARD_HEADERS": '["x-sim-"]',
        stub + "KIND": "anthropic",
        stub + "BASE_URL": searching[1],
        stub + "API_KEY": "test-key",
        **route("to_auto", "auto:gpt-5.5"),
        **route("to_auto_ruled", "auto:gpt-5.5", SYSTEM="Route rules."),
        **route("to_claude", "anthropic:claude-sonnet-5-5"),
        **route("to_claude_drop", "anthropic:claude-sonnet-5-5", HOSTED_TOOLS="drop"),
        **route("to_chat", "openai:gpt-5.5"),
        **route("to_chat_search", "openai:gpt-5-search-api"),
        **route("to_searcher", "searcher:claude-sonnet-5-5"),
    }
    async with gateway_server(environ) as running:
        yield running


async def post(
    gw: RunningGateway, path: str, body: dict[str, Any]
) -> tuple[int, dict[str, str], str]:
    async with (
        aiohttp.ClientSession() as http,
        http.post(gw.url + path, json=body, headers={"x-sim-tokens": "3"}) as response,
    ):
        headers = {name.lower(): value for name, value in response.headers.items()}
        return response.status, headers, await response.text()


def upstream_request(simulator: RunningSimulator) -> tuple[str, dict[str, Any]]:
    [request] = simulator.stats()["last_requests"]
    return request["path"], request["body"]


def responses_body(model: str, *tools: dict[str, Any], **more: Any) -> dict[str, Any]:
    return {"model": model, "input": QUESTION, "tools": list(tools), **more}


# --- api = "auto" ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "body", "upstream_path"),
    [
        ("/v1/responses", responses_body("to_auto", WEATHER, TOOL_SEARCH), "/v1/responses"),
        (
            "/v1/chat/completions",
            {"model": "to_auto", "messages": [{"role": "user", "content": QUESTION}]},
            "/v1/chat/completions",
        ),
        (
            "/v1/messages",
            {"model": "to_auto", "max_tokens": 50, "messages": [{"role": "user", "content": "hi"}]},
            "/v1/chat/completions",
        ),
    ],
)
async def test_api_auto_sends_responses_clients_to_responses_and_others_to_chat(
    gw: RunningGateway,
    simulator: RunningSimulator,
    path: str,
    body: dict[str, Any],
    upstream_path: str,
) -> None:
    simulator.reset_stats()
    status, _, text = await post(gw, path, body)
    assert status == 200, text
    sent_to, sent = upstream_request(simulator)
    assert sent_to == upstream_path
    if upstream_path == "/v1/responses":  # hosted tools as sent
        assert sent["tools"] == body["tools"]


def test_api_settings() -> None:
    settings = load(environ={})
    assert settings.providers["openai"].api == "auto"  # OpenAI's own API serves both
    mine = load(
        environ={
            "TOKENRELAY_PROVIDERS__VLLM__KIND": "openai",
            "TOKENRELAY_PROVIDERS__VLLM__BASE_URL": "http://127.0.0.1:9/v1",
        }
    )
    assert mine.providers["vllm"].api == "chat"  # an OpenAI-compatible server may lack it
    assert mine.routes["default"].hosted_tools == "refuse"
    assert mine.provider_models.hosted_tools == "drop"
    with pytest.raises(ConfigError) as raised:
        load(environ={"TOKENRELAY_PROVIDERS__ANTHROPIC__API": "auto"})
    assert "kind 'openai'" in str(raised.value)


# --- hosted tools across APIs ---------------------------------------------------------------------


async def test_web_search_becomes_anthropics_server_tool(
    gw: RunningGateway, simulator: RunningSimulator
) -> None:
    simulator.reset_stats()
    status, _, text = await post(
        gw, "/v1/responses", responses_body("to_claude", WEATHER, WEB_SEARCH)
    )
    assert status == 200, text
    path, sent = upstream_request(simulator)
    assert path == "/v1/messages"
    assert [t["name"] for t in sent["tools"]] == ["weather", "web_search"]
    assert sent["tools"][1] == {
        "type": "web_search_20250305",
        "name": "web_search",
        "allowed_domains": ["example.com"],
        "user_location": {"type": "approximate", "city": "Paris", "country": "FR"},
    }


@pytest.mark.parametrize(
    ("model", "tool", "why"),
    [
        ("to_claude", TOOL_SEARCH, "cannot be sent to an Anthropic model"),
        ("to_claude", {"type": "web_search", "external_web_access": False}, "cached-only"),
        ("to_chat", WEB_SEARCH, "only with a search model"),
        ("to_chat", {"type": "teleport_2027", "x": 1}, "cannot be sent to a Chat Completions"),
    ],
)
async def test_a_hosted_tool_without_an_equivalent_is_refused_by_name(
    gw: RunningGateway, simulator: RunningSimulator, model: str, tool: dict[str, Any], why: str
) -> None:
    simulator.reset_stats()
    status, _, text = await post(gw, "/v1/responses", responses_body(model, WEATHER, tool))
    assert status == 400, text
    error = json.loads(text)["error"]
    assert error["param"] == "tools[1]"
    assert error["message"].startswith(f"tools[1] ({tool['type']})"), error["message"]
    assert why in error["message"] and "hosted_tools = 'drop'" in error["message"]
    assert simulator.stats()["last_requests"] == []


async def test_web_search_on_a_chat_search_model_becomes_web_search_options(
    gw: RunningGateway, simulator: RunningSimulator
) -> None:
    simulator.reset_stats()
    tool = {"type": "web_search", "search_context_size": "low", "user_location": {"city": "Oslo"}}
    status, _, text = await post(gw, "/v1/responses", responses_body("to_chat_search", tool))
    assert status == 200, text
    path, sent = upstream_request(simulator)
    assert path == "/v1/chat/completions"
    assert sent["web_search_options"] == {
        "search_context_size": "low",
        "user_location": {"type": "approximate", "approximate": {"city": "Oslo"}},
    }
    assert "tools" not in sent


async def test_a_route_that_drops_hosted_tools_names_them(
    gw: RunningGateway, simulator: RunningSimulator
) -> None:
    simulator.reset_stats()
    body = responses_body("to_claude_drop", WEATHER, TOOL_SEARCH, {"type": "namespace"})
    status, headers, text = await post(gw, "/v1/responses", body)
    assert status == 200, text
    assert headers["x-tokenrelay-dropped-tools"] == "tool_search, namespace"
    _, sent = upstream_request(simulator)
    assert [t["name"] for t in sent["tools"]] == ["weather"]
    record = await gw.wait_record(headers["x-request-id"])
    assert record.dropped_tools == ["tool_search", "namespace"]
    line = json.loads(audit_line(record, None, None))
    assert line["dropped_tools"] == ["tool_search", "namespace"]


async def test_no_header_when_nothing_was_dropped(
    gw: RunningGateway, simulator: RunningSimulator
) -> None:
    status, headers, text = await post(
        gw, "/v1/responses", responses_body("to_claude_drop", WEATHER)
    )
    assert status == 200, text
    assert "x-tokenrelay-dropped-tools" not in headers


@pytest.mark.parametrize("stream", [True, False])
async def test_anthropics_web_search_results_come_back_as_the_answer_text(
    gw: RunningGateway, searching: tuple[SearchingUpstream, str], stream: bool
) -> None:
    """server_tool_use and web_search_tool_result blocks do not break the Responses writer:
    the answer is the model's text, one message item, and the search was asked for."""
    upstream, _ = searching
    body = responses_body("to_searcher", WEB_SEARCH, stream=stream)
    status, _, text = await post(gw, "/v1/responses", body)
    assert status == 200, text
    assert upstream.bodies[-1]["tools"][0]["type"] == "web_search_20250305"
    if stream:
        events = [json.loads(line[6:]) for line in text.splitlines() if line.startswith("data: ")]
        response = events[-1]["response"]
        assert events[-1]["type"] == "response.completed"
    else:
        response = json.loads(text)
    assert [item["type"] for item in response["output"]] == ["message"]
    assert response["output"][0]["content"][0]["text"] == "Sunny in Paris."


async def test_an_unknown_tool_type_passes_to_a_responses_upstream_untouched(
    gw: RunningGateway, simulator: RunningSimulator
) -> None:
    simulator.reset_stats()
    tool = {"type": "teleport_2027", "x": {"y": [1, 2]}}
    body = responses_body("to_auto", WEATHER, tool, client_metadata={"session": "s1"})
    status, _, text = await post(gw, "/v1/responses", body)
    assert status == 200, text
    _, sent = upstream_request(simulator)
    assert sent["tools"] == [WEATHER, tool] and sent["client_metadata"] == {"session": "s1"}


async def test_the_input_reaches_a_responses_upstream_as_sent(
    gw: RunningGateway, simulator: RunningSimulator
) -> None:
    """Item ids, developer messages and item fields this gateway does not model arrive as the
    client sent them; the route's system prompt and the client's instructions go first in
    ``instructions``, without the developer messages (they stay in the input)."""
    items = [
        {"type": "message", "id": "msg_a", "role": "developer", "content": "Be brief."},
        {"type": "message", "id": "msg_b", "role": "user", "content": [
            {"type": "input_text", "text": QUESTION, "future_field": 1}]},
    ]  # fmt: skip
    body = {"model": "to_auto_ruled", "input": items, "instructions": "Answer in French."}
    simulator.reset_stats()
    status, _, text = await post(gw, "/v1/responses", body)
    assert status == 200, text
    _, sent = upstream_request(simulator)
    assert sent["input"] == items
    assert sent["instructions"] == "Route rules.\n\nAnswer in French."


# --- the WebSocket upgrade ------------------------------------------------------------------------

UPGRADE = (
    b"GET /v1/responses HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: Upgrade\r\n"
    b"Upgrade: websocket\r\nSec-WebSocket-Version: 13\r\n"
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
    b"OpenAI-Beta: responses_websockets=2026-02-06\r\n\r\n"
)


async def test_a_websocket_upgrade_is_answered_426_on_a_raw_socket(gw: RunningGateway) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", gw.port)
    try:
        writer.write(UPGRADE)
        await writer.drain()
        answer = await asyncio.wait_for(reader.read(), 5)  # the gateway closes after it
    finally:
        writer.close()
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 426 "), head
    error = json.loads(body)["error"]
    assert "POST to /v1/responses" in error["message"]
    assert error["type"] == "invalid_request_error"


async def test_a_websocket_scope_is_refused_426_or_closed(gw: RunningGateway) -> None:
    """With a WebSocket library installed, uvicorn delivers a ``websocket`` scope instead: a
    426 denial response where the server offers the extension, else a close before accept."""
    sent: list[MutableMapping[str, Any]] = []

    async def send(message: MutableMapping[str, Any]) -> None:
        sent.append(message)

    for extensions, expected in (({"websocket.http.response": {}}, 426), ({}, "close")):
        sent.clear()
        scope = {
            "type": "websocket",
            "path": "/v1/responses",
            "headers": [(b"upgrade", b"websocket")],
            "extensions": extensions,
        }

        async def receive() -> dict[str, Any]:
            return {"type": "websocket.connect"}

        await gw.app(scope, receive, send)
        if expected == 426:
            assert sent[0]["type"] == "websocket.http.response.start"
            assert sent[0]["status"] == 426
        else:
            assert [m["type"] for m in sent] == ["websocket.close"]


async def test_a_plain_get_on_responses_is_still_405(gw: RunningGateway) -> None:
    async with aiohttp.ClientSession() as http, http.get(gw.url + "/v1/responses") as response:
        assert response.status == 405


def test_tokenrelay_serve_answers_the_upgrade_426_without_a_warning() -> None:
    """Through ``tokenrelay serve``'s own HTTP edge (``tokenrelay.edge``), in demo mode."""
    import socket

    from tests.servers import ServeProcess, clean_environ

    server = ServeProcess(clean_environ(TOKENRELAY_DATABASE_URL="sqlite:///:memory:"))
    try:
        with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
            sock.sendall(UPGRADE)
            answer = b""
            while chunk := sock.recv(65536):
                answer += chunk
    finally:
        _, output = server.stop()
    assert answer.startswith(b"HTTP/1.1 426 "), answer[:200]
    assert "Unsupported upgrade" not in output and "WebSocket library" not in output, output

"""The web side over real HTTP: ``/api/chat`` (the AI SDK's UI message stream), the metadata the
playground shows, CORS for pages on other origins, and the demo routes."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import msgspec
import pytest
import pytest_asyncio

from tests.servers import RunningGateway, clean_environ, gateway_environ, gateway_server
from tokenrelay.dialects.sse import SSEParser
from tokenrelay.settings import ConfigError, load

pytestmark = pytest.mark.asyncio(loop_scope="session")

PAGE = "https://app.example.com"


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def gw(simulator: Any) -> AsyncIterator[RunningGateway]:
    environ = gateway_environ(simulator.url)
    environ["TOKENRELAY_CORS__ALLOW_ORIGINS"] = f'["{PAGE}"]'
    async with gateway_server(environ) as running:
        yield running


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


def chat_body(prompt: str = "Explain SSE", **fields: Any) -> dict[str, Any]:
    message = {"id": "u1", "role": "user", "parts": [{"type": "text", "text": prompt}]}
    return {"id": "chat", "messages": [message], "trigger": "submit-message", **fields}


async def read_chunks(response: aiohttp.ClientResponse) -> list[Any]:
    parser = SSEParser()
    out: list[Any] = []
    async for data in response.content.iter_any():
        for event in parser.feed(data):
            out.append(event.data if event.data == "[DONE]" else msgspec.json.decode(event.data))
    return out


# --- /api/chat ----------------------------------------------------------------------------------


async def test_api_chat_streams_ui_message_chunks(
    gw: RunningGateway, http: aiohttp.ClientSession
) -> None:
    async with http.post(gw.url + "/api/chat", json=chat_body(route="oa")) as response:
        assert response.status == 200
        assert response.headers["x-vercel-ai-ui-message-stream"] == "v1"
        assert response.headers["content-type"] == "text/event-stream"
        request_id = response.headers["x-request-id"]
        chunks = await read_chunks(response)
    record = await gw.wait_record(request_id)
    kinds = [c if c == "[DONE]" else c["type"] for c in chunks]
    deltas = [c["delta"] for c in chunks if c != "[DONE]" and c["type"] == "text-delta"]
    assert kinds[:3] == ["start", "start-step", "text-start"]
    assert kinds[-4:] == ["text-end", "finish-step", "finish", "[DONE]"]
    assert len(deltas) == 20 and "".join(deltas) == record.completion.text  # type: ignore[union-attr]
    start, finish = chunks[0], chunks[-2]
    assert start["messageId"] == "msg_" + request_id
    assert start["messageMetadata"] == {
        "requestId": request_id,
        "route": "oa",
        "provider": "openai",
        "model": "gpt-5.5",
        "failover": False,
        "attempts": [
            {
                "provider": "openai",
                "model": "gpt-5.5",
                "outcome": "ok",
                "ms": start["messageMetadata"]["attempts"][0]["ms"],
            }
        ],
    }
    meta = finish["messageMetadata"]
    assert finish["finishReason"] == "stop"
    assert meta["usage"]["inputTokens"] == record.usage.input_tokens
    assert meta["usage"]["outputTokens"] == record.usage.output_tokens == 20
    assert meta["ttftMs"] == pytest.approx(record.ttft_ms, abs=0.1)
    assert record.dialect == "uichat" and record.outcome == "completed"


async def test_api_chat_cost_is_the_ledgers_exact_cost(
    gw: RunningGateway, http: aiohttp.ClientSession
) -> None:
    meter = gw.gateway.meter
    assert meter is not None
    await meter.pricer.load()  # the table loads 1 s after start; until then costUsd is null
    async with http.post(gw.url + "/api/chat", json=chat_body(route="an")) as response:
        request_id = response.headers["x-request-id"]
        chunks = await read_chunks(response)
    record = await gw.wait_record(request_id)
    assert record.cost_nanousd is not None and record.cost_nanousd > 0
    assert chunks[-2]["messageMetadata"]["costUsd"] == _usd(record.cost_nanousd)


async def test_api_chat_failover_is_in_the_metadata(
    gw: RunningGateway, http: aiohttp.ClientSession
) -> None:
    async with http.post(gw.url + "/api/chat", json=chat_body(route="flaky")) as response:
        chunks = await read_chunks(response)
    meta = chunks[0]["messageMetadata"]
    assert meta["failover"] is True and meta["provider"] == "openai"
    assert [a["outcome"] for a in meta["attempts"]][-1] == "ok"
    assert meta["attempts"][0]["provider"] == "anthropic"
    assert meta["attempts"][0]["outcome"] != "ok"


async def test_api_chat_mid_stream_error_is_an_error_chunk(
    gw: RunningGateway, http: aiohttp.ClientSession
) -> None:
    async with http.post(gw.url + "/api/chat", json=chat_body(route="midfail")) as response:
        assert response.status == 200
        chunks = await read_chunks(response)
    kinds = [c if c == "[DONE]" else c["type"] for c in chunks]
    assert kinds[-4:] == ["text-end", "message-metadata", "error", "[DONE]"]
    assert "overload" in chunks[-2]["errorText"]
    meta = chunks[-3]["messageMetadata"]
    # The upstream never reported usage: the billed usage is the estimate, and says so.
    assert meta["usageEstimated"] is True and meta["usage"]["outputTokens"] > 0


async def test_api_chat_errors_before_the_stream_are_text(
    gw: RunningGateway, http: aiohttp.ClientSession
) -> None:
    async with http.post(gw.url + "/api/chat", json=chat_body(route="limited")) as response:
        assert response.status == 429
        assert response.headers["content-type"] == "text/plain; charset=utf-8"
        assert response.headers["x-tokenrelay-error-type"] == "rate_limit"
        assert "retry-after" in response.headers
        message = await response.text()
    assert not message.startswith("{") and "rate" in message.lower()
    async with http.post(gw.url + "/api/chat", json=chat_body(route="nowhere")) as response:
        assert response.status in (400, 404)
        assert "nowhere" in await response.text()
    async with http.post(gw.url + "/api/chat", json={"messages": "hi"}) as response:
        assert response.status == 422
        assert await response.text() == "'messages' is required: a non-empty list of UI messages"


async def test_api_chat_stop_closes_the_upstream(
    gw: RunningGateway, http: aiohttp.ClientSession, simulator: Any
) -> None:
    await http.post(simulator.url + "/stats/reset")
    async with aiohttp.ClientSession() as own:
        response = await own.post(gw.url + "/api/chat", json=chat_body(route="slow"))
        request_id = response.headers["x-request-id"]
        async for _ in response.content.iter_any():
            break
        response.close()
    deadline = time.monotonic() + 3
    disconnects: list[Any] = []
    while not disconnects and time.monotonic() < deadline:
        await asyncio.sleep(0.01)
        async with http.get(simulator.url + "/stats") as stats:
            disconnects = (await stats.json())["disconnects"]
    assert disconnects and disconnects[0]["tokens_sent"] < 500
    assert (await gw.wait_record(request_id)).outcome == "aborted"


async def test_resuming_a_chat_stream_finds_nothing(
    gw: RunningGateway, http: aiohttp.ClientSession
) -> None:
    async with http.get(gw.url + "/api/chat/chat-1/stream") as response:
        assert response.status == 204


# --- /api/generate's meta ------------------------------------------------------------------------


async def test_generate_meta_describes_the_answer(
    gw: RunningGateway, http: aiohttp.ClientSession
) -> None:
    body = {"prompt": "Hi", "route": "flaky", "include": ["meta"]}
    async with http.post(gw.url + "/api/generate", json=body) as response:
        request_id = response.headers["x-request-id"]
        events = [e for e in await read_chunks(response) if e != "[DONE]"]
    meta = events[-1]["meta"]
    record = await gw.wait_record(request_id)
    assert all("text" in e for e in events[:-1])  # no usage or finish: only what was asked
    assert meta["requestId"] == request_id and meta["failover"] is True
    assert meta["usage"]["outputTokens"] == record.usage.output_tokens
    body = {"prompt": "Hi", "route": "midfail", "include": ["meta", "usage"]}
    async with http.post(gw.url + "/api/generate", json=body) as response:
        events = await read_chunks(response)
    # After an in-band error: the error, then the meta (what the failed answer cost), then [DONE].
    assert "error" in events[-3] and "meta" in events[-2] and events[-1] == "[DONE]"
    assert not any("usage" in e for e in events if e != "[DONE]")


# --- CORS ----------------------------------------------------------------------------------------


async def test_cors_preflight_allows_the_configured_origin(
    gw: RunningGateway, http: aiohttp.ClientSession
) -> None:
    headers = {
        "origin": PAGE,
        "access-control-request-method": "POST",
        "access-control-request-headers": "content-type, authorization, x-stainless-os",
    }
    async with http.options(gw.url + "/v1/chat/completions", headers=headers) as response:
        assert response.status == 200
        assert response.headers["access-control-allow-origin"] == PAGE
        assert "POST" in response.headers["access-control-allow-methods"]
        allowed = response.headers["access-control-allow-headers"].lower()
        assert "authorization" in allowed and "x-stainless-os" in allowed
        assert response.headers["access-control-max-age"] == "600"
    stop = {"origin": PAGE, "access-control-request-method": "DELETE"}  # a resumable's Stop
    async with http.options(gw.url + "/v1/streams/" + "0" * 24, headers=stop) as response:
        assert response.status == 200
        assert "DELETE" in response.headers["access-control-allow-methods"]
    headers["origin"] = "https://evil.example.com"
    async with http.options(gw.url + "/v1/chat/completions", headers=headers) as response:
        assert response.status == 400
        assert "access-control-allow-origin" not in response.headers


async def test_cors_marks_streams_for_the_origin_and_exposes_headers(
    gw: RunningGateway, http: aiohttp.ClientSession
) -> None:
    body = {"prompt": "Hi", "route": "oa"}
    async with http.post(gw.url + "/api/generate", json=body, headers={"origin": PAGE}) as response:
        assert response.headers["access-control-allow-origin"] == PAGE
        exposed = response.headers["access-control-expose-headers"].lower()
        assert "x-request-id" in exposed and "x-tokenrelay-attempts" in exposed
        assert (await read_chunks(response))[-1] == "[DONE]"
    async with http.post(
        gw.url + "/api/generate", json=body, headers={"origin": "https://evil.example.com"}
    ) as response:
        assert "access-control-allow-origin" not in response.headers


async def test_no_cors_unless_configured(simulator: Any) -> None:
    async with (
        gateway_server(gateway_environ(simulator.url)) as plain,
        aiohttp.ClientSession() as http,
    ):
        headers = {"origin": PAGE, "access-control-request-method": "POST"}
        async with http.options(plain.url + "/api/generate", headers=headers) as response:
            assert "access-control-allow-origin" not in response.headers
            assert response.status == 405


@pytest.mark.parametrize(
    ("origins", "credentials", "says"),
    [
        ('["app.example.com"]', "false", "must look like"),
        ('["https://app.example.com/"]', "false", "must not end"),
        ('["*"]', "true", "cannot be used"),
    ],
)
async def test_bad_cors_settings_are_refused_at_start(
    origins: str, credentials: str, says: str
) -> None:
    environ = clean_environ(
        TOKENRELAY_CORS__ALLOW_ORIGINS=origins, TOKENRELAY_CORS__ALLOW_CREDENTIALS=credentials
    )
    with pytest.raises(ConfigError, match=says):
        load(environ=environ)


# --- demo routes ---------------------------------------------------------------------------------


async def test_demo_mode_offers_failover_and_error_routes() -> None:
    environ = clean_environ(TOKENRELAY_ANONYMOUS_LIMIT="1000/minute")
    environ["TOKENRELAY_DATABASE_URL"] = gateway_environ("http://x")["TOKENRELAY_DATABASE_URL"]
    async with gateway_server(environ) as demo, aiohttp.ClientSession() as http:
        async with http.get(demo.url + "/v1/models") as response:
            routes = {m["id"] for m in (await response.json())["data"]}
        assert {"default", "demo-failover", "demo-error"} <= routes
        body = {"prompt": "Hi", "route": "demo-failover", "include": ["meta"]}
        async with http.post(demo.url + "/api/generate", json=body) as response:
            meta = [e for e in await read_chunks(response) if e != "[DONE]"][-1]["meta"]
        assert meta["failover"] is True and meta["provider"] == "openai"
        body = {"prompt": "Hi", "route": "demo-error"}
        async with http.post(demo.url + "/api/generate", json=body) as response:
            events = await read_chunks(response)
        assert "error" in events[-2]


def _usd(nanousd: int | None) -> str | None:
    if nanousd is None:
        return None
    whole, frac = divmod(nanousd, 1_000_000_000)
    return f"{whole}.{frac:09d}".rstrip("0").rstrip(".") if frac else str(whole)

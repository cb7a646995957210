"""The gateway end to end over real HTTP: clients (raw and the official SDKs) -> tokenrelay ->
the wire-exact simulator."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import anthropic
import msgspec
import openai
import pytest
import pytest_asyncio

from tests.servers import ROUTE_SYSTEM, RunningGateway, gateway_environ, gateway_server
from tokenrelay.dialects.sse import SSEParser

pytestmark = pytest.mark.asyncio(loop_scope="session")


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def gw(simulator: Any) -> AsyncIterator[RunningGateway]:
    async with gateway_server(gateway_environ(simulator.url)) as running:
        yield running


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


async def sim_stats(http: aiohttp.ClientSession, simulator: Any) -> dict[str, Any]:
    async with http.get(simulator.url + "/stats") as response:
        data: dict[str, Any] = await response.json()
        return data


async def sse_data(response: aiohttp.ClientResponse) -> list[str]:
    parser = SSEParser()
    out: list[str] = []
    async for chunk in response.content.iter_any():
        out.extend(event.data for event in parser.feed(chunk))
    return out


# --- the three endpoints ----------------------------------------------------------------------


async def test_generate_streams_the_article_protocol(
    gw: RunningGateway, http: aiohttp.ClientSession
) -> None:
    async with http.post(gw.url + "/api/generate", json={"prompt": "Explain SSE"}) as response:
        assert response.status == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        assert response.headers["cache-control"] == "no-cache"
        assert response.headers["x-accel-buffering"] == "no"
        assert response.headers["x-tokenrelay-provider"] == "anthropic"
        assert response.headers["x-tokenrelay-model"] == "claude-sonnet-5-5"
        request_id = response.headers["x-request-id"]
        data = await sse_data(response)
    assert data[-1] == "[DONE]"
    texts = [msgspec.json.decode(item) for item in data[:-1]]
    assert texts and all(list(item) == ["text"] for item in texts)  # nothing but text by default
    record = await gw.wait_record(request_id)
    assert record.outcome == "completed" and record.usage.output_tokens == len(texts)
    assert record.usage.input_tokens and record.ttft_ms is not None


async def test_generate_include_usage_adds_events(
    gw: RunningGateway, http: aiohttp.ClientSession
) -> None:
    body = {"prompt": "Count", "include": ["usage", "finish"], "maxTokens": 5}
    async with http.post(gw.url + "/api/generate", json=body) as response:
        data = await sse_data(response)
    events = [msgspec.json.decode(item) for item in data[:-1]]
    assert [e["text"] for e in events if "text" in e] and len(
        [e for e in events if "text" in e]
    ) == 5
    usage = next(e["usage"] for e in events if "usage" in e)
    assert usage["outputTokens"] == 5 and usage["inputTokens"] > 0
    assert next(e["finish"] for e in events if "finish" in e) == {"reason": "length"}


async def test_upstream_request_is_what_the_provider_expects(
    gw: RunningGateway, http: aiohttp.ClientSession, simulator: Any
) -> None:
    await http.post(simulator.url + "/stats/reset")
    async with http.post(gw.url + "/api/generate", json={"prompt": "hello"}) as response:
        await response.read()
    async with http.post(
        gw.url + "/api/generate", json={"prompt": "hello", "route": "oa"}
    ) as response:
        await response.read()
    first, second = (await sim_stats(http, simulator))["last_requests"][-2:]
    assert first["path"] == "/v1/messages"
    assert first["headers"]["x-api-key"] == "test-anthropic-key"
    assert first["headers"]["anthropic-version"] == "2023-06-01"
    assert first["body"]["system"] == ROUTE_SYSTEM and first["body"]["stream"] is True
    assert first["body"]["max_tokens"] == 1024
    assert second["path"] == "/v1/chat/completions"
    assert second["headers"]["authorization"] == "Bearer test-openai-key"
    assert second["body"]["stream_options"] == {"include_usage": True}
    assert second["body"]["messages"][0] == {
        "role": "system",
        "content": "You are a helpful assistant.",
    }


async def test_openai_sdk_streams_through_an_anthropic_route(gw: RunningGateway) -> None:
    client = openai.AsyncOpenAI(base_url=gw.url + "/v1", api_key="unused", max_retries=0)
    stream = await client.chat.completions.create(
        model="default",
        messages=[{"role": "user", "content": "Tell me about relays"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    texts, usage, finish = [], None, None
    async for chunk in stream:
        if chunk.choices:
            texts.append(chunk.choices[0].delta.content or "")
            finish = chunk.choices[0].finish_reason or finish
        if chunk.usage:
            usage = chunk.usage
    assert "".join(texts).strip()
    assert finish == "stop"
    assert usage is not None and usage.completion_tokens > 0 and usage.prompt_tokens > 0
    await client.close()


async def test_openai_sdk_provider_model_and_whole_response(gw: RunningGateway) -> None:
    client = openai.AsyncOpenAI(base_url=gw.url + "/v1", api_key="unused", max_retries=0)
    completion = await client.chat.completions.create(
        model="gpt-5.5",
        messages=[
            {"role": "system", "content": "Answer in English."},  # allowed on a provider model
            {"role": "user", "content": "Tell me about relays"},
        ],
    )
    assert completion.choices[0].message.content
    assert completion.usage is not None and completion.usage.completion_tokens > 0
    raw = await client.chat.completions.with_raw_response.create(
        model="gpt-5.5", messages=[{"role": "user", "content": "hi"}]
    )
    assert raw.headers["x-tokenrelay-provider"] == "openai"
    await client.close()


async def test_anthropic_sdk_streams_and_gets_usage(gw: RunningGateway) -> None:
    client = anthropic.AsyncAnthropic(base_url=gw.url, api_key="unused", max_retries=0)
    async with client.messages.stream(
        model="claude-sonnet-5-5",
        max_tokens=64,
        system="Be concise.",
        messages=[{"role": "user", "content": "Tell me about relays"}],
    ) as stream:
        text = "".join([piece async for piece in stream.text_stream])
        message = await stream.get_final_message()
    assert text.strip() and message.content[0].text == text  # type: ignore[union-attr]
    assert message.stop_reason == "end_turn"
    assert message.usage.input_tokens > 0 and message.usage.output_tokens > 0
    await client.close()


async def test_anthropic_sdk_through_an_openai_route_and_whole_response(gw: RunningGateway) -> None:
    client = anthropic.AsyncAnthropic(base_url=gw.url, api_key="unused", max_retries=0)
    message = await client.messages.create(
        model="oa", max_tokens=64, messages=[{"role": "user", "content": "Tell me about relays"}]
    )
    assert message.content[0].text  # type: ignore[union-attr]
    assert message.usage.output_tokens > 0
    await client.close()


# --- abort propagation ------------------------------------------------------------------------


@pytest.mark.parametrize("route", ["an", "oa"])
async def test_client_abort_closes_the_upstream_within_100ms(
    gw: RunningGateway, http: aiohttp.ClientSession, simulator: Any, route: str
) -> None:
    await http.post(simulator.url + "/stats/reset")
    headers = {"x-sim-tokens": "500", "x-sim-token-delay-ms": "20"}
    body = {"prompt": "a long answer please", "route": route}
    async with aiohttp.ClientSession() as own:  # its own connection, so closing it is a real drop
        response = await own.post(gw.url + "/api/generate", json=body, headers=headers)
        request_id = response.headers["x-request-id"]
        parser, texts = SSEParser(), 0
        async for chunk in response.content.iter_any():
            texts += len(parser.feed(chunk))
            if texts >= 3:
                break
        dropped_at = time.monotonic()
        response.close()
    disconnects: list[dict[str, Any]] = []
    deadline = time.monotonic() + 3
    while not disconnects and time.monotonic() < deadline:
        await asyncio.sleep(0.01)
        disconnects = (await sim_stats(http, simulator))["disconnects"]
    assert disconnects, "the simulator never saw the upstream connection close"
    latency = disconnects[0]["at_monotonic"] - dropped_at
    assert latency < 0.1, f"upstream closed {latency * 1000:.0f} ms after the client left"
    assert disconnects[0]["tokens_sent"] < 100  # it stopped generating, long before 500
    record = await gw.wait_record(request_id)
    assert record.outcome == "aborted"
    assert record.content_events >= 3
    # What the upstream reported before the drop reaches the metering hook: Anthropic sends the
    # input count in message_start; OpenAI reports nothing until its final chunk, so metering
    # estimates from the content events counted here.
    if route == "an":
        assert record.usage.input_tokens
    else:
        assert record.usage.input_tokens is None


# --- failures before and after the first token -------------------------------------------------


async def test_failover_before_the_first_token(
    gw: RunningGateway, http: aiohttp.ClientSession
) -> None:
    async with http.post(
        gw.url + "/api/generate", json={"prompt": "hi", "route": "flaky"}
    ) as response:
        assert response.status == 200
        assert response.headers["x-tokenrelay-provider"] == "openai"
        attempts = response.headers["x-tokenrelay-attempts"]
        data = await sse_data(response)
    assert "anthropic/claude-sonnet-5-5;outcome=overloaded" in attempts
    assert "openai/gpt-5.5;outcome=ok" in attempts
    assert data[-1] == "[DONE]" and len(data) > 1


async def test_rate_limited_upstream_gives_429_with_retry_after(
    gw: RunningGateway, http: aiohttp.ClientSession
) -> None:
    body = {"model": "limited", "messages": [{"role": "user", "content": "hi"}], "stream": True}
    async with http.post(gw.url + "/v1/chat/completions", json=body) as response:
        assert response.status == 429
        assert response.headers["retry-after"] == "1"
        error = (await response.json())["error"]
    assert error["message"] and error["type"]


async def test_unreachable_upstream_is_a_clear_5xx(
    gw: RunningGateway, http: aiohttp.ClientSession
) -> None:
    body = {"model": "down", "max_tokens": 10, "messages": [{"role": "user", "content": "hi"}]}
    async with http.post(gw.url + "/v1/messages", json=body) as response:
        assert response.status == 502
        payload = await response.json()
    assert payload["type"] == "error"
    assert "could not reach dead" in payload["error"]["message"]


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/api/generate", {"prompt": "hi", "route": "an"}),
        (
            "/v1/messages",
            {
                "model": "an",
                "max_tokens": 50,
                "stream": True,
                "messages": [{"role": "user", "content": "hi"}],
            },
        ),
        (
            "/v1/chat/completions",
            {"model": "an", "stream": True, "messages": [{"role": "user", "content": "hi"}]},
        ),
    ],
)
async def test_error_after_tokens_is_explicit_in_band(
    gw: RunningGateway, http: aiohttp.ClientSession, path: str, body: dict[str, Any]
) -> None:
    headers = {"x-sim-fault": "error_after", "x-sim-fault-after": "3"}
    async with http.post(gw.url + path, json=body, headers=headers) as response:
        assert response.status == 200
        request_id = response.headers["x-request-id"]
        raw = b"".join([chunk async for chunk in response.content.iter_any()])
    events = SSEParser().feed(raw)
    errors = [e for e in events if e.event == "error" or '"error"' in e.data]
    assert len(errors) == 1, "the stream must end with one explicit error"
    assert "overloaded" in errors[0].data.lower()
    record = await gw.wait_record(request_id)
    assert record.outcome == "error" and record.content_events == 3


async def test_stream_is_relayed_as_it_arrives(
    gw: RunningGateway, http: aiohttp.ClientSession
) -> None:
    headers = {"x-sim-tokens": "8", "x-sim-token-delay-ms": "40"}
    arrivals = []
    async with http.post(
        gw.url + "/api/generate", json={"prompt": "slow"}, headers=headers
    ) as response:
        async for _ in response.content.iter_any():
            arrivals.append(time.monotonic())
    # Buffering anywhere would deliver the 8 tokens (7 gaps of 40 ms) in one lump.
    assert len(arrivals) >= 5
    assert arrivals[-1] - arrivals[0] >= 0.2


async def test_a_stream_that_stalls_midway_ends_with_a_timeout_error(simulator: Any) -> None:
    environ = {**gateway_environ(simulator.url), "TOKENRELAY_IDLE_TIMEOUT": "0.3"}
    headers = {"x-sim-fault": "hang_mid", "x-sim-fault-after": "3"}
    async with gateway_server(environ) as gateway, aiohttp.ClientSession() as own:
        started = time.monotonic()
        body = {"prompt": "stall", "route": "an"}
        async with own.post(gateway.url + "/api/generate", json=body, headers=headers) as response:
            assert response.status == 200
            data = await sse_data(response)
        elapsed = time.monotonic() - started
        texts = [item for item in data if item.startswith('{"text"')]
        assert len(texts) == 3
        error = msgspec.json.decode(data[-2])["error"]
        assert error["type"] == "timeout" and "0.3s" in error["message"]
        assert data[-1] == "[DONE]"
        assert 0.3 <= elapsed < 2.0
        record = await gateway.wait_record(response.headers["x-request-id"])
        assert record.outcome == "error" and record.error_type == "timeout"


async def test_an_upstream_that_never_answers_is_a_504_in_the_client_dialect(
    simulator: Any,
) -> None:
    environ = {**gateway_environ(simulator.url), "TOKENRELAY_IDLE_TIMEOUT": "0.3"}
    headers = {"x-sim-fault": "hang_before_first_byte"}
    body = {"model": "an", "stream": True, "messages": [{"role": "user", "content": "hi"}]}
    async with gateway_server(environ) as gateway, aiohttp.ClientSession() as own:
        url = gateway.url + "/v1/chat/completions"
        async with own.post(url, json=body, headers=headers) as response:
            assert response.status == 504
            payload = await response.json()
    assert payload["error"]["message"].startswith("anthropic did not answer within 0.3s")


# --- bad input --------------------------------------------------------------------------------


def anthropic_error(payload: dict[str, Any]) -> str:
    assert payload["type"] == "error"
    return str(payload["error"]["type"])


def openai_error(payload: dict[str, Any]) -> str:
    assert set(payload["error"]) >= {"message", "type"}
    return str(payload["error"]["type"])


BAD_INPUT = [
    # path, body bytes, content type, status, message fragment
    ("/api/generate", b"{oops", "application/json", 400, "JSON"),
    ("/api/generate", b'{"prompt": 5}', "application/json", 422, "prompt"),
    ("/api/generate", b'{"prompt": ""}', "application/json", 422, "empty"),
    ("/api/generate", b'{"prompt": "hi"}', "text/plain", 415, "Content-Type"),
    ("/api/generate", b'{"prompt": "hi"}', "", 415, "Content-Type"),
    ("/api/generate", b'{"prompt": "' + b"x" * 5000 + b'"}', "application/json", 413, "4096"),
    ("/api/generate", b'{"prompt": "hi", "route": "nope"}', "application/json", 404, "nope"),
    (
        "/api/generate",
        b'{"prompt": "hi", "systemPrompt": "Obey me"}',
        "application/json",
        400,
        "system",
    ),
    ("/v1/messages", b'{"model": "an", "messages": []}', "application/json", 400, "max_tokens"),
    ("/v1/messages", b"\xff\xfe\x00", "application/json", 400, "UTF-8"),
    (
        "/v1/messages",
        b'{"model": "mystery-1", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]}',
        "application/json",
        404,
        "mystery-1",
    ),
    ("/v1/chat/completions", b'{"model": "default"}', "application/json", 400, "messages"),
    (
        "/v1/chat/completions",
        b'{"model": "default", "messages": "hi"}',
        "application/json",
        400,
        "messages",
    ),
    (
        "/v1/chat/completions",
        b'{"model": "default", "messages": [{"role": "system", "content": "x"}, '
        b'{"role": "user", "content": "hi"}]}',
        "application/json",
        400,
        "system",
    ),
]


@pytest.mark.parametrize(("path", "body", "content_type", "status", "fragment"), BAD_INPUT)
async def test_bad_input_gets_a_clear_error_in_the_clients_dialect(
    gw: RunningGateway,
    http: aiohttp.ClientSession,
    path: str,
    body: bytes,
    content_type: str,
    status: int,
    fragment: str,
) -> None:
    headers = {"content-type": content_type} if content_type else {}
    async with http.post(
        gw.url + path, data=body, headers=headers, skip_auto_headers=["Content-Type"]
    ) as response:
        assert response.status == status
        assert response.headers["content-type"] == "application/json"
        payload = await response.json()
    if path == "/v1/messages":
        anthropic_error(payload)
    elif path == "/v1/chat/completions":
        openai_error(payload)
    message = str(payload["error"]["message"])
    assert fragment.lower() in message.lower(), message
    assert "Traceback" not in message


async def test_sdks_raise_their_own_error_types(gw: RunningGateway) -> None:
    oa = openai.AsyncOpenAI(base_url=gw.url + "/v1", api_key="unused", max_retries=0)
    with pytest.raises(openai.NotFoundError):
        await oa.chat.completions.create(model="nope", messages=[{"role": "user", "content": "hi"}])
    an = anthropic.AsyncAnthropic(base_url=gw.url, api_key="unused", max_retries=0)
    with pytest.raises(anthropic.BadRequestError) as raised:
        await an.messages.create(
            model="default",
            max_tokens=5,
            system="Obey me",
            messages=[{"role": "user", "content": "hi"}],
        )
    assert "system prompt" in str(raised.value)
    await oa.close()
    await an.close()


async def test_unknown_path_and_method(gw: RunningGateway, http: aiohttp.ClientSession) -> None:
    async with http.get(gw.url + "/v2/nothing") as response:
        assert response.status == 404
        assert "no endpoint" in (await response.json())["error"]["message"]
    async with http.get(gw.url + "/v1/messages") as response:
        assert response.status == 405


async def test_playground_and_health(gw: RunningGateway, http: aiohttp.ClientSession) -> None:
    async with http.get(gw.url + "/") as response:
        assert response.status == 200
        page = await response.text()
    assert 'import { stream } from "/client.js"' in page and "AbortController" in page
    async with http.get(gw.url + "/client.js") as response:
        assert response.status == 200
        assert response.headers["content-type"].startswith("text/javascript")
        assert "/api/generate" in await response.text()
    for missing in ("/static/nothing.js", "/static/index.html", "/static/..%2Fapp.py"):
        async with http.get(gw.url + missing) as response:
            assert response.status == 404, missing
    async with http.get(gw.url + "/healthz") as response:
        assert (await response.json())["status"] == "ok"
    async with http.get(gw.url + "/v1/models") as response:
        ids = {model["id"] for model in (await response.json())["data"]}
    assert {"default", "an", "oa"} <= ids

"""The simulator over real HTTP on loopback, read by aiohttp and by the official ``anthropic`` and
``openai`` SDKs: if the SDKs parse it, the dialect modules it is built on speak the real wire."""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import anthropic
import httpx2
import openai
import pytest
import pytest_asyncio

from tokenrelay.dialects.sse import SSEEvent, SSEParser
from tokenrelay.simulator import RunningSimulator, SimulatorSettings, start

pytestmark = pytest.mark.asyncio(loop_scope="session")

PROMPT = "Explain server-sent events"
ESTIMATE = max(1, len(PROMPT) // 4)  # the simulator's input token estimate for PROMPT
MESSAGES: list[Any] = [{"role": "user", "content": PROMPT}]
ANTHROPIC_BODY: dict[str, Any] = {
    "model": "claude-haiku-4-5",
    "max_tokens": 100,
    "messages": MESSAGES,
}
OPENAI_BODY: dict[str, Any] = {"model": "gpt-5.5", "messages": MESSAGES}
TOOLS_ANTHROPIC: list[Any] = [
    {
        "name": "search",
        "description": "Search the web",
        "input_schema": {"type": "object", "properties": {"query": {"type": "string"}}},
    }
]
TOOLS_OPENAI: list[Any] = [
    {
        "type": "function",
        "function": {
            "name": "lookup",
            "parameters": {"type": "object", "properties": {"query": {"type": "string"}}},
        },
    }
]


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:
        yield session


@pytest_asyncio.fixture(loop_scope="session")
async def an(simulator: RunningSimulator) -> AsyncIterator[anthropic.AsyncAnthropic]:
    client = anthropic.AsyncAnthropic(
        base_url=simulator.url, api_key="test-key", max_retries=0, timeout=10
    )
    yield client
    await client.close()


@pytest_asyncio.fixture(loop_scope="session")
async def oa(simulator: RunningSimulator) -> AsyncIterator[openai.AsyncOpenAI]:
    client = openai.AsyncOpenAI(
        base_url=simulator.url + "/v1", api_key="test-key", max_retries=0, timeout=10
    )
    yield client
    await client.close()


async def read_events(response: aiohttp.ClientResponse) -> list[SSEEvent]:
    parser = SSEParser()
    events = []
    async for chunk in response.content.iter_any():
        events.extend(parser.feed(chunk))
    return events


def openai_texts(events: list[SSEEvent]) -> list[str]:
    out = []
    for event in events:
        if event.data == "[DONE]":
            continue
        for choice in json.loads(event.data).get("choices", []):
            if choice["delta"].get("content"):
                out.append(choice["delta"]["content"])
    return out


async def anthropic_text(an: anthropic.AsyncAnthropic, prompt: str, **headers: str) -> str:
    async with an.messages.stream(
        model="claude-haiku-4-5",
        max_tokens=100,
        messages=[{"role": "user", "content": prompt}],
        extra_headers=headers,
    ) as stream:
        return "".join([text async for text in stream.text_stream])


async def wait_disconnect(simulator: RunningSimulator, within: float = 3.0) -> dict[str, Any]:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        disconnects = simulator.stats()["disconnects"]
        if disconnects:
            found: dict[str, Any] = disconnects[-1]
            return found
        await asyncio.sleep(0.005)
    raise AssertionError("the simulator recorded no disconnect")


# --- streaming through the official SDKs --------------------------------------------------------


async def test_openai_sdk_streams_text_usage_and_finish(oa: openai.AsyncOpenAI) -> None:
    stream = await oa.chat.completions.create(
        model="gpt-5.5", messages=MESSAGES, stream=True, stream_options={"include_usage": True}
    )
    texts, finish, usage = [], None, None
    async for chunk in stream:
        if chunk.choices:
            if chunk.choices[0].delta.content:
                texts.append(chunk.choices[0].delta.content)
            finish = chunk.choices[0].finish_reason or finish
        if chunk.usage is not None:
            usage = chunk.usage
    assert len(texts) == 20
    assert texts[0][0].isupper() and all(text.startswith(" ") for text in texts[1:])
    assert finish == "stop"
    assert usage is not None
    assert usage.completion_tokens == 20 and usage.prompt_tokens == ESTIMATE


async def test_anthropic_sdk_streams_text_usage_and_finish(an: anthropic.AsyncAnthropic) -> None:
    async with an.messages.stream(**ANTHROPIC_BODY) as stream:
        texts = [text async for text in stream.text_stream]
        message = await stream.get_final_message()
    assert len(texts) == 20
    assert message.content[0].type == "text" and message.content[0].text == "".join(texts)
    assert message.stop_reason == "end_turn"
    assert message.model == "claude-haiku-4-5"
    assert message.usage.input_tokens == ESTIMATE and message.usage.output_tokens == 20


async def test_stream_head_comes_at_once_and_tokens_one_by_one(
    simulator: RunningSimulator, http: aiohttp.ClientSession
) -> None:
    headers = {"x-sim-ttft-ms": "300", "x-sim-tokens": "6", "x-sim-token-delay-ms": "30"}
    began = time.monotonic()
    body = {**ANTHROPIC_BODY, "stream": True}
    async with http.post(simulator.url + "/v1/messages", json=body, headers=headers) as response:
        head_after = time.monotonic() - began
        assert response.status == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        assert response.headers["cache-control"] == "no-cache"
        assert response.headers["request-id"]
        parser, arrivals = SSEParser(), []
        async for chunk in response.content.iter_any():
            for event in parser.feed(chunk):
                if event.event == "content_block_delta":
                    arrivals.append(time.monotonic())
    assert head_after < 0.2, "the head must not wait for the first token"
    assert len(arrivals) == 6
    assert arrivals[0] - began >= 0.29  # ttft
    assert arrivals[-1] - arrivals[0] >= 5 * 0.03 * 0.9  # each token on its own, not batched


async def test_openai_stream_has_request_id_and_no_usage_unless_asked(
    simulator: RunningSimulator, http: aiohttp.ClientSession
) -> None:
    body = {**OPENAI_BODY, "stream": True}
    async with http.post(simulator.url + "/v1/chat/completions", json=body) as response:
        assert response.status == 200
        assert response.headers["x-request-id"]
        events = await read_events(response)
    assert events[-1].data == "[DONE]"
    assert len(openai_texts(events)) == 20
    assert all('"usage":{' not in event.data for event in events)


# --- whole responses, determinism, limits ---------------------------------------------------------


async def test_non_streaming_answers_match_the_stream(
    an: anthropic.AsyncAnthropic, oa: openai.AsyncOpenAI
) -> None:
    streamed = await anthropic_text(an, PROMPT)
    message = await an.messages.create(**ANTHROPIC_BODY)
    assert message.content[0].type == "text" and message.content[0].text == streamed
    assert message.stop_reason == "end_turn" and message.usage.output_tokens == 20
    completion = await oa.chat.completions.create(model="gpt-5.5", messages=MESSAGES)
    assert completion.choices[0].message.content == streamed  # same prompt, same words
    assert completion.choices[0].finish_reason == "stop"
    assert completion.usage is not None and completion.usage.completion_tokens == 20


async def test_text_is_deterministic_per_prompt(an: anthropic.AsyncAnthropic) -> None:
    first = await anthropic_text(an, "What is a relay?")
    again = await anthropic_text(an, "What is a relay?")
    other = await anthropic_text(an, "What is a gateway?")
    assert first == again and first != other


async def test_fixed_text_is_split_into_word_tokens(
    simulator: RunningSimulator, http: aiohttp.ClientSession
) -> None:
    body = {**OPENAI_BODY, "stream": True}
    async with http.post(
        simulator.url + "/v1/chat/completions?text=Hello%20wide%20world", json=body
    ) as response:
        texts = openai_texts(await read_events(response))
    assert texts == ["Hello", " wide", " world"]


async def test_max_tokens_stops_with_length(
    an: anthropic.AsyncAnthropic, oa: openai.AsyncOpenAI
) -> None:
    async with an.messages.stream(
        model="claude-haiku-4-5", max_tokens=5, messages=MESSAGES
    ) as stream:
        texts = [text async for text in stream.text_stream]
        message = await stream.get_final_message()
    assert len(texts) == 5
    assert message.stop_reason == "max_tokens" and message.usage.output_tokens == 5
    completion = await oa.chat.completions.create(model="gpt-5.5", messages=MESSAGES, max_tokens=7)
    assert completion.choices[0].finish_reason == "length"
    assert completion.usage is not None and completion.usage.completion_tokens == 7


async def test_thinking_comes_first_with_a_signature(
    an: anthropic.AsyncAnthropic, oa: openai.AsyncOpenAI
) -> None:
    headers = {"x-sim-thinking-tokens": "4", "x-sim-tokens": "3"}
    async with an.messages.stream(**ANTHROPIC_BODY, extra_headers=headers) as stream:
        message = await stream.get_final_message()
    thinking, text = message.content
    assert thinking.type == "thinking" and len(thinking.thinking.split()) == 4
    assert thinking.signature
    assert text.type == "text" and len(text.text.split()) == 3
    assert message.usage.output_tokens == 7
    again = await an.messages.create(**ANTHROPIC_BODY, extra_headers=headers)
    assert again.content[0].type == "thinking"
    assert again.content[0].signature == thinking.signature  # deterministic
    completion = await oa.chat.completions.create(
        model="gpt-5.5", messages=MESSAGES, extra_headers=headers
    )
    assert completion.usage is not None and completion.usage.completion_tokens == 7
    details = completion.usage.completion_tokens_details
    assert details is not None and details.reasoning_tokens == 4


async def test_anthropic_tool_call_reaches_the_sdk_as_parsed_input(
    an: anthropic.AsyncAnthropic,
) -> None:
    async with an.messages.stream(
        **ANTHROPIC_BODY, tools=TOOLS_ANTHROPIC, extra_headers={"x-sim-tool": "auto"}
    ) as stream:
        message = await stream.get_final_message()
    text, call = message.content
    assert text.type == "text"
    assert call.type == "tool_use" and call.name == "search"
    assert call.id.startswith("toolu_sim_")
    assert isinstance(call.input, dict) and isinstance(call.input["query"], str)
    assert call.input["query"]
    assert message.stop_reason == "tool_use"


async def test_openai_tool_call_streams_in_fragments(
    simulator: RunningSimulator, oa: openai.AsyncOpenAI, http: aiohttp.ClientSession
) -> None:
    stream = await oa.chat.completions.create(
        model="gpt-5.5",
        messages=MESSAGES,
        tools=TOOLS_OPENAI,
        stream=True,
        extra_headers={"x-sim-tool": "auto"},
    )
    fragments, name, call_id, finish = [], None, None, None
    async for chunk in stream:
        delta = chunk.choices[0].delta
        for call in delta.tool_calls or ():
            name = call.function.name or name if call.function else name
            call_id = call.id or call_id
            if call.function and call.function.arguments:
                fragments.append(call.function.arguments)
        finish = chunk.choices[0].finish_reason or finish
    assert name == "lookup" and call_id is not None and call_id.startswith("call_sim_")
    assert len(fragments) >= 3
    assert set(json.loads("".join(fragments))) == {"query"}
    assert finish == "tool_calls"
    # a named tool, whole response
    completion = await oa.chat.completions.create(
        model="gpt-5.5", messages=MESSAGES, extra_headers={"x-sim-tool": "calculator"}
    )
    calls = completion.choices[0].message.tool_calls
    assert calls is not None and calls[0].function.name == "calculator"  # type: ignore[union-attr]
    assert json.loads(calls[0].function.arguments)["query"]  # type: ignore[union-attr]
    assert completion.choices[0].finish_reason == "tool_calls"


async def test_tool_auto_without_tools_is_a_400(oa: openai.AsyncOpenAI) -> None:
    with pytest.raises(openai.BadRequestError, match="tool"):
        await oa.chat.completions.create(
            model="gpt-5.5", messages=MESSAGES, extra_headers={"x-sim-tool": "auto"}
        )


async def test_cache_token_counts(an: anthropic.AsyncAnthropic, oa: openai.AsyncOpenAI) -> None:
    headers = {"x-sim-cache-read-tokens": "700", "x-sim-cache-write-tokens": "300"}
    async with an.messages.stream(**ANTHROPIC_BODY, extra_headers=headers) as stream:
        message = await stream.get_final_message()
    usage = message.usage
    assert usage.cache_read_input_tokens == 700 and usage.cache_creation_input_tokens == 300
    assert usage.input_tokens == ESTIMATE  # Anthropic counts cached tokens apart
    completion = await oa.chat.completions.create(
        model="gpt-5.5", messages=MESSAGES, extra_headers=headers
    )
    assert completion.usage is not None
    assert completion.usage.prompt_tokens == ESTIMATE + 1000  # OpenAI's total includes them
    details = completion.usage.prompt_tokens_details
    assert details is not None and details.cached_tokens == 700


# --- status faults ------------------------------------------------------------------------------

STATUS_FAULTS = [
    # fault, anthropic exception, openai exception, retry-after
    ("429", anthropic.RateLimitError, openai.RateLimitError, "1"),
    ("500", anthropic.InternalServerError, openai.InternalServerError, None),
    ("503", anthropic.ServiceUnavailableError, openai.InternalServerError, "1"),
    ("529", anthropic.OverloadedError, openai.InternalServerError, "1"),
    ("401", anthropic.AuthenticationError, openai.AuthenticationError, None),
    ("400", anthropic.BadRequestError, openai.BadRequestError, None),
]


@pytest.mark.parametrize(("fault", "an_error", "oa_error", "retry_after"), STATUS_FAULTS)
async def test_status_faults_raise_the_sdk_exceptions(
    an: anthropic.AsyncAnthropic,
    oa: openai.AsyncOpenAI,
    fault: str,
    an_error: type[anthropic.APIStatusError],
    oa_error: type[openai.APIStatusError],
    retry_after: str | None,
) -> None:
    headers = {"x-sim-fault": fault}
    with pytest.raises(an_error) as raised_an:
        async with an.messages.stream(**ANTHROPIC_BODY, extra_headers=headers) as stream:
            await stream.get_final_message()
    assert raised_an.value.status_code == int(fault)
    assert raised_an.value.response.headers.get("retry-after") == retry_after
    assert raised_an.value.response.headers["request-id"]
    with pytest.raises(oa_error) as raised_oa:
        await oa.chat.completions.create(
            model="gpt-5.5", messages=MESSAGES, stream=True, extra_headers=headers
        )
    assert raised_oa.value.status_code == int(fault)
    assert raised_oa.value.response.headers.get("retry-after") == retry_after
    if retry_after is not None:
        assert raised_oa.value.response.headers["retry-after-ms"] == "1000"
    assert raised_oa.value.response.headers["x-request-id"]


async def test_retry_after_follows_its_knob(
    simulator: RunningSimulator, http: aiohttp.ClientSession
) -> None:
    async with http.post(
        simulator.url + "/v1/chat/completions?fault=429&retry_after=2.5", json=OPENAI_BODY
    ) as response:
        assert response.status == 429
        assert response.headers["retry-after"] == "2.5"
        assert response.headers["retry-after-ms"] == "2500"
        error = (await response.json())["error"]
    assert error["code"] == "rate_limit_exceeded" and error["message"]


# --- faults inside the stream -------------------------------------------------------------------


async def test_error_after_tokens_reaches_both_sdks(
    an: anthropic.AsyncAnthropic, oa: openai.AsyncOpenAI
) -> None:
    headers = {"x-sim-fault": "error_after", "x-sim-fault-after": "4"}
    texts: list[str] = []
    with pytest.raises(anthropic.APIStatusError, match="overload"):
        async with an.messages.stream(**ANTHROPIC_BODY, extra_headers=headers) as stream:
            async for text in stream.text_stream:
                texts.append(text)
    assert len(texts) == 4
    texts = []
    chunks = await oa.chat.completions.create(
        model="gpt-5.5", messages=MESSAGES, stream=True, extra_headers=headers
    )
    with pytest.raises(openai.APIError, match="overload"):
        async for chunk in chunks:
            if chunk.choices and chunk.choices[0].delta.content:
                texts.append(chunk.choices[0].delta.content)
    assert len(texts) == 4


async def test_error_before_content(
    simulator: RunningSimulator,
    http: aiohttp.ClientSession,
    an: anthropic.AsyncAnthropic,
    oa: openai.AsyncOpenAI,
) -> None:
    headers = {"x-sim-fault": "error_before_content"}
    body = {**ANTHROPIC_BODY, "stream": True}
    async with http.post(simulator.url + "/v1/messages", json=body, headers=headers) as response:
        assert response.status == 200
        events = await read_events(response)
    kinds = [event.event for event in events]
    assert "error" in kinds and "content_block_delta" not in kinds
    assert json.loads(events[kinds.index("error")].data)["error"]["type"] == "overloaded_error"
    texts: list[str] = []
    with pytest.raises(anthropic.APIStatusError):
        async with an.messages.stream(**ANTHROPIC_BODY, extra_headers=headers) as stream:
            async for text in stream.text_stream:
                texts.append(text)
    stream_oa = await oa.chat.completions.create(
        model="gpt-5.5", messages=MESSAGES, stream=True, extra_headers=headers
    )
    with pytest.raises(openai.APIError):
        async for chunk in stream_oa:
            if chunk.choices and chunk.choices[0].delta.content:
                texts.append(chunk.choices[0].delta.content)
    assert texts == []


@pytest.mark.parametrize("path", ["/v1/messages", "/v1/chat/completions"])
async def test_reset_is_a_client_side_connection_error(
    simulator: RunningSimulator, http: aiohttp.ClientSession, path: str
) -> None:
    body = {**(ANTHROPIC_BODY if path == "/v1/messages" else OPENAI_BODY), "stream": True}
    headers = {"x-sim-fault": "reset", "x-sim-fault-after": "3", "x-sim-token-delay-ms": "5"}
    before = len(simulator.stats()["disconnects"])
    parser, events = SSEParser(), []
    async with aiohttp.ClientSession() as own:
        with pytest.raises((aiohttp.ClientPayloadError, aiohttp.ClientConnectionError)):
            async with own.post(simulator.url + path, json=body, headers=headers) as response:
                assert response.status == 200
                async for chunk in response.content.iter_any():
                    events.extend(parser.feed(chunk))
    if path == "/v1/messages":
        texts = [e.data for e in events if e.event == "content_block_delta"]
    else:
        texts = openai_texts(events)
    assert len(texts) <= 3  # the RST may take unread bytes with it, never add more
    assert len(simulator.stats()["disconnects"]) == before  # its own abort is not a client leaving


async def test_reset_surfaces_in_the_sdks(
    an: anthropic.AsyncAnthropic, oa: openai.AsyncOpenAI
) -> None:
    headers = {"x-sim-fault": "reset", "x-sim-token-delay-ms": "5"}
    stream = await oa.chat.completions.create(
        model="gpt-5.5", messages=MESSAGES, stream=True, extra_headers=headers
    )
    with pytest.raises(openai.APIConnectionError):
        async for _ in stream:
            pass
    with pytest.raises(openai.APIConnectionError):  # not streaming: reset before the answer
        await oa.chat.completions.create(model="gpt-5.5", messages=MESSAGES, extra_headers=headers)
    # the Anthropic SDK lets the transport's own error through while it iterates a stream
    with pytest.raises((anthropic.APIConnectionError, httpx2.TransportError)):
        async with an.messages.stream(**ANTHROPIC_BODY, extra_headers=headers) as an_stream:
            async for _ in an_stream.text_stream:
                pass


async def test_hang_before_first_byte_times_out_and_is_recorded(
    simulator: RunningSimulator, oa: openai.AsyncOpenAI
) -> None:
    simulator.reset_stats()
    began = time.monotonic()
    with pytest.raises(openai.APITimeoutError):
        await oa.chat.completions.create(
            model="gpt-5.5",
            messages=MESSAGES,
            stream=True,
            timeout=0.3,
            extra_headers={"x-sim-fault": "hang_before_first_byte"},
        )
    gave_up = time.monotonic()
    assert gave_up - began < 2
    disconnect = await wait_disconnect(simulator)
    assert disconnect["path"] == "/v1/chat/completions" and disconnect["tokens_sent"] == 0
    assert disconnect["at_monotonic"] - gave_up < 0.5


async def test_hang_mid_stops_sending_after_n_tokens(simulator: RunningSimulator) -> None:
    simulator.reset_stats()
    headers = {"x-sim-fault": "hang_mid", "x-sim-fault-after": "5"}
    body = {**OPENAI_BODY, "stream": True}
    parser, texts = SSEParser(), []
    timeout = aiohttp.ClientTimeout(total=5, sock_read=0.3)
    async with aiohttp.ClientSession(timeout=timeout) as own:
        with pytest.raises(asyncio.TimeoutError):
            async with own.post(
                simulator.url + "/v1/chat/completions", json=body, headers=headers
            ) as response:
                async for chunk in response.content.iter_any():
                    texts.extend(openai_texts(parser.feed(chunk)))
    assert len(texts) == 5
    disconnect = await wait_disconnect(simulator)
    assert disconnect["tokens_sent"] == 5


async def test_client_that_stops_reading_is_seen_as_a_disconnect(
    simulator: RunningSimulator,
) -> None:
    simulator.reset_stats()
    headers = {"x-sim-tokens": "500", "x-sim-token-delay-ms": "2"}
    body = {**ANTHROPIC_BODY, "max_tokens": 1000, "stream": True}
    async with aiohttp.ClientSession() as own:
        response = await own.post(simulator.url + "/v1/messages", json=body, headers=headers)
        parser, deltas = SSEParser(), 0
        async for chunk in response.content.iter_any():
            deltas += sum(e.event == "content_block_delta" for e in parser.feed(chunk))
            if deltas >= 3:
                break
        left = time.monotonic()
        response.close()
    disconnect = await wait_disconnect(simulator)
    assert disconnect["path"] == "/v1/messages"
    assert 3 <= disconnect["tokens_sent"] < 500
    assert disconnect["at_monotonic"] - left < 0.1
    stats = simulator.stats()
    assert stats["completed"] == 0 and stats["tokens_sent"] == disconnect["tokens_sent"]


# --- authentication, knobs, bad bodies ----------------------------------------------------------


async def test_api_key_is_enforced() -> None:
    keyed = await start(SimulatorSettings(ttft_ms=1, tokens=3, token_delay_ms=0, api_key="sekrit"))
    try:
        good_an = anthropic.AsyncAnthropic(base_url=keyed.url, api_key="sekrit", max_retries=0)
        bad_an = anthropic.AsyncAnthropic(base_url=keyed.url, api_key="wrong", max_retries=0)
        good_oa = openai.AsyncOpenAI(base_url=keyed.url + "/v1", api_key="sekrit", max_retries=0)
        bad_oa = openai.AsyncOpenAI(base_url=keyed.url + "/v1", api_key="wrong", max_retries=0)
        message = await good_an.messages.create(**ANTHROPIC_BODY)
        assert message.usage.output_tokens == 3
        completion = await good_oa.chat.completions.create(model="gpt-5.5", messages=MESSAGES)
        assert completion.choices[0].message.content
        with pytest.raises(anthropic.AuthenticationError):
            await bad_an.messages.create(**ANTHROPIC_BODY)
        with pytest.raises(openai.AuthenticationError):
            await bad_oa.chat.completions.create(model="gpt-5.5", messages=MESSAGES)
        with pytest.raises(anthropic.BadRequestError, match="api-key"):  # not a per-request knob
            await good_an.messages.create(**ANTHROPIC_BODY, extra_headers={"x-sim-api-key": "x"})
        for client in (good_an, bad_an, good_oa, bad_oa):
            await client.close()
    finally:
        await keyed.stop()


@pytest.mark.parametrize(
    ("path", "headers", "query", "fragment"),
    [
        ("/v1/messages", {"x-sim-token-delay-ms": "fast"}, "", "token_delay_ms"),
        ("/v1/messages", {"x-sim-tokens": "-3"}, "", "tokens"),
        ("/v1/chat/completions", {}, "?ttft_ms=nan", "ttft_ms"),
        ("/v1/chat/completions", {"x-sim-fault": "meltdown"}, "", "error_before_content"),
        ("/v1/chat/completions", {"x-sim-colour": "blue"}, "", "x-sim-colour"),
        ("/v1/chat/completions", {"x-sim-slow-fraction": "1.5"}, "", "from 0 to 1"),
    ],
)
async def test_bad_knobs_are_a_400_in_the_dialect(
    simulator: RunningSimulator,
    http: aiohttp.ClientSession,
    path: str,
    headers: dict[str, str],
    query: str,
    fragment: str,
) -> None:
    body = ANTHROPIC_BODY if path == "/v1/messages" else OPENAI_BODY
    async with http.post(simulator.url + path + query, json=body, headers=headers) as response:
        assert response.status == 400
        payload = await response.json()
    if path == "/v1/messages":
        assert payload["type"] == "error"
        assert payload["error"]["type"] == "invalid_request_error"
    else:
        assert payload["error"]["type"] == "invalid_request_error"
    assert fragment in payload["error"]["message"]


async def test_query_knobs_override(
    simulator: RunningSimulator, http: aiohttp.ClientSession
) -> None:
    body = {**OPENAI_BODY, "stream": True}
    async with http.post(
        simulator.url + "/v1/chat/completions?tokens=2&ttft_ms=0", json=body
    ) as response:
        texts = openai_texts(await read_events(response))
    assert len(texts) == 2


async def test_slow_fraction_delays_that_share_of_first_tokens(
    simulator: RunningSimulator, http: aiohttp.ClientSession
) -> None:
    body = {**OPENAI_BODY, "stream": True}
    url = simulator.url + "/v1/chat/completions?tokens=1&ttft_ms=0&slow_ttft_ms=150"
    for fraction, slow in (("1", True), ("0", False)):
        started = time.perf_counter()
        async with http.post(url + "&slow_fraction=" + fraction, json=body) as response:
            await read_events(response)
        elapsed = time.perf_counter() - started
        assert (elapsed >= 0.15) is slow, (fraction, elapsed)


async def test_bad_bodies_are_refused_like_the_real_apis(
    simulator: RunningSimulator, http: aiohttp.ClientSession, an: anthropic.AsyncAnthropic
) -> None:
    no_max = {"model": "claude-haiku-4-5", "messages": MESSAGES}
    async with http.post(simulator.url + "/v1/messages", json=no_max) as response:
        assert response.status == 400
        payload = await response.json()
    assert payload["type"] == "error" and "max_tokens" in payload["error"]["message"]
    async with http.post(
        simulator.url + "/v1/chat/completions",
        data=b"{nope",
        headers={"content-type": "application/json"},
    ) as response:
        assert response.status == 400
        assert "JSON" in (await response.json())["error"]["message"]


# --- stats, health, settings, import ------------------------------------------------------------


async def test_stats_and_reset(simulator: RunningSimulator, http: aiohttp.ClientSession) -> None:
    async with http.post(simulator.url + "/stats/reset") as response:
        assert response.status == 200
    async with http.get(simulator.url + "/stats") as response:
        stats = await response.json()
    assert stats == {
        "requests": {},
        "completed": 0,
        "tokens_sent": 0,
        "last_requests": [],
        "disconnects": [],
    }
    body = {**ANTHROPIC_BODY, "stream": True}
    headers = {"x-api-key": "k1", "anthropic-version": "2023-06-01"}
    async with http.post(simulator.url + "/v1/messages", json=body, headers=headers) as response:
        await response.read()
    async with http.post(simulator.url + "/v1/chat/completions", json=OPENAI_BODY) as response:
        await response.read()
    async with http.get(simulator.url + "/stats") as response:
        stats = await response.json()
    assert stats["requests"] == {"/v1/messages": 1, "/v1/chat/completions": 1}
    assert stats["completed"] == 2 and stats["tokens_sent"] == 40
    first, second = stats["last_requests"]
    assert first["path"] == "/v1/messages" and first["body"] == body
    assert first["headers"]["x-api-key"] == "k1"
    assert first["headers"]["anthropic-version"] == "2023-06-01"
    assert second["path"] == "/v1/chat/completions" and second["body"] == OPENAI_BODY
    assert simulator.stats() == stats
    async with http.post(simulator.url + "/stats/reset") as response:
        assert response.status == 200
    assert simulator.stats()["requests"] == {} and simulator.stats()["last_requests"] == []


async def test_last_requests_keeps_fifty(
    simulator: RunningSimulator, http: aiohttp.ClientSession
) -> None:
    simulator.reset_stats()
    for i in range(55):
        async with http.post(
            simulator.url + "/v1/chat/completions?fault=400",
            json={**OPENAI_BODY, "user": str(i)},
        ) as response:
            assert response.status == 400
    stats = simulator.stats()
    assert stats["requests"] == {"/v1/chat/completions": 55}
    assert [r["body"]["user"] for r in stats["last_requests"]] == [str(i) for i in range(5, 55)]


async def test_healthz(simulator: RunningSimulator, http: aiohttp.ClientSession) -> None:
    async with http.get(simulator.url + "/healthz") as response:
        assert response.status == 200
        assert (await response.json())["status"] == "ok"
    assert simulator.url == f"http://127.0.0.1:{simulator.port}"


async def test_bad_server_settings_fail_at_start() -> None:
    with pytest.raises(ValueError, match="fault"):
        await start(SimulatorSettings(fault="meltdown"))
    with pytest.raises(ValueError, match="tokens"):
        await start(SimulatorSettings(tokens=-1))


async def test_server_defaults_apply_and_stop_is_clean() -> None:
    sim = await start(SimulatorSettings(ttft_ms=0, text="Only this.", fault=None))
    try:
        async with (
            aiohttp.ClientSession() as session,
            session.post(sim.url + "/v1/chat/completions", json=OPENAI_BODY) as response,
        ):
            assert (await response.json())["choices"][0]["message"]["content"] == "Only this."
    finally:
        await sim.stop()


async def test_import_is_cheap() -> None:
    code = (
        "import sys, tokenrelay.simulator as s; s.SimulatorSettings(); "
        "assert 'aiohttp' not in sys.modules, 'aiohttp imported'; "
        "assert 'tokenrelay.dialects.anthropic' not in sys.modules"
    )
    proc = await asyncio.create_subprocess_exec(sys.executable, "-c", code)
    assert await asyncio.wait_for(proc.wait(), 30) == 0

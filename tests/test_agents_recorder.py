"""The recording listener the agent captures come from (``tests/recorder.py``): what it records,
and that its answers are streams the official SDKs accept, so an agent's run against it is the
run it would have against the provider."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import aiohttp
import anthropic
import openai
import pytest_asyncio

from tests import recorder


@pytest_asyncio.fixture
async def rec() -> AsyncIterator[recorder.RunningRecorder]:
    running = await recorder.start()
    try:
        yield running
    finally:
        await running.stop()


async def test_messages_stream_and_record(rec: recorder.RunningRecorder) -> None:
    client = anthropic.AsyncAnthropic(base_url=rec.url, api_key="sk-test", max_retries=0)
    async with client.messages.stream(
        model="claude-sonnet-5-5",
        max_tokens=64,
        system=[{"type": "text", "text": "be brief"}],
        messages=[{"role": "user", "content": "say hi"}],
        extra_headers={"anthropic-beta": "a-beta,another-beta"},
        extra_query={"beta": "true"},
    ) as stream:
        message = await stream.get_final_message()
    assert [block.type for block in message.content] == ["text"]
    assert message.content[0].text == recorder.REPLY_TEXT  # type: ignore[union-attr]
    assert message.stop_reason == "end_turn"
    (record,) = rec.records
    assert (record["method"], record["path"], record["query"]) == (
        "POST",
        "/v1/messages",
        [["beta", "true"]],
    )
    headers = dict(record["headers"])
    assert headers["authorization"] == "Bearer sk-test"
    assert headers["anthropic-beta"] == "a-beta,another-beta"
    assert record["body"]["system"] == [{"type": "text", "text": "be brief"}]
    assert record["body"]["stream"] is True


async def test_responses_stream(rec: recorder.RunningRecorder) -> None:
    client = openai.AsyncOpenAI(base_url=rec.url + "/v1", api_key="sk-test", max_retries=0)
    async with client.responses.stream(model="gpt-5.5", input="say hi") as stream:
        response = await stream.get_final_response()
    assert response.output_text == recorder.REPLY_TEXT
    assert response.status == "completed"
    assert rec.records[0]["body"]["input"] == "say hi"


async def test_a_tool_call_is_answered_once() -> None:
    running = await recorder.start(tool_call={"name": "lookup", "arguments": '{"q": "x"}'})
    try:
        client = openai.AsyncOpenAI(base_url=running.url + "/v1", api_key="k", max_retries=0)
        tools = [{"type": "function", "name": "lookup", "parameters": {"type": "object"}}]
        first = await client.responses.create(model="m", input="go", tools=tools)  # type: ignore[arg-type]
        second = await client.responses.create(model="m", input="go", tools=tools)  # type: ignore[arg-type]
    finally:
        await running.stop()
    assert [item.type for item in first.output] == ["function_call"]
    assert second.output_text == recorder.REPLY_TEXT


async def test_websocket_upgrade_is_recorded_and_refused_with_426(
    rec: recorder.RunningRecorder,
) -> None:
    headers = {
        "connection": "Upgrade",
        "upgrade": "websocket",
        "sec-websocket-version": "13",
        "sec-websocket-key": "dGhlIHNhbXBsZSBub25jZQ==",
    }
    async with (
        aiohttp.ClientSession() as http,
        http.get(rec.url + "/v1/responses", headers=headers) as response,
    ):
        assert response.status == 426
    assert rec.records[0]["websocket_upgrade"] is True


async def test_forwarding_records_the_answer(rec: recorder.RunningRecorder) -> None:
    proxy = await recorder.start(upstream=rec.url)
    try:
        async with aiohttp.ClientSession() as http:
            async with http.post(proxy.url + "/v1/nowhere", json={"a": 1}) as response:
                assert response.status == 404
                body = json.loads(await response.read())
            async with http.post(
                proxy.url + "/v1/messages", json={"model": "m", "stream": True}
            ) as response:
                stream = await response.text()
    finally:
        await proxy.stop()
    assert body["error"]["message"] == "recorder: no /v1/nowhere"
    missing, streamed = proxy.records
    assert missing["response"]["status"] == 404 and missing["response"]["body"] == body
    assert streamed["response"]["status"] == 200
    assert streamed["response"]["body"] == stream and "event: message_stop" in stream
    assert [r["path"] for r in rec.records] == ["/v1/nowhere", "/v1/messages"]

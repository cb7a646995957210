"""Resumable streams end to end (docs/resume.md): a client drops a stream after 10 events and
reconnects with ``Last-Event-ID``, on the same instance and on another sharing Redis, and gets
events 11 onwards exactly once, while the simulator saw one request and the ledger has one row;
another caller gets 404; an expired window a 410 in the client's dialect; a route without
resume keeps stopping the upstream the moment the client leaves."""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import msgspec
import pytest
import pytest_asyncio

from tests.servers import RunningGateway, gateway_environ, gateway_server
from tests.test_scale_out import MACHINE_REDIS, machine_redis_or_skip
from tokenrelay.dialects.sse import SSEEvent, SSEParser
from tokenrelay.gate.keys import KeyStore

pytestmark = pytest.mark.asyncio(loop_scope="session")

SLOW = {"x-sim-tokens": "40", "x-sim-token-delay-ms": "25"}


def resume_routes(**extra: str) -> dict[str, str]:
    target = [{"provider": "anthropic", "model": "claude-sonnet-5-5", "headers": SLOW}]
    env = {
        "TOKENRELAY_ROUTES__RESUMABLE__TARGETS": msgspec.json.encode(target).decode(),
        "TOKENRELAY_ROUTES__RESUMABLE__RESUME__GRACE": "15",
        "TOKENRELAY_ROUTES__SHORTWIN__TARGETS": "anthropic:claude-sonnet-5-5",
        "TOKENRELAY_ROUTES__SHORTWIN__RESUME__GRACE": "15",
        "TOKENRELAY_ROUTES__SHORTWIN__RESUME__WINDOW": "0.3",
        "TOKENRELAY_ROUTES__SHORTGRACE__TARGETS": msgspec.json.encode(target).decode(),
        "TOKENRELAY_ROUTES__SHORTGRACE__RESUME__GRACE": "0.3",
    }
    env.update(extra)
    return env


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def gw(simulator: Any) -> AsyncIterator[RunningGateway]:
    async with gateway_server({**gateway_environ(simulator.url), **resume_routes()}) as running:
        yield running


def messages_body(route: str, text: str = "Tell me a story") -> dict[str, Any]:
    return {
        "model": route,
        "max_tokens": 200,
        "stream": True,
        "messages": [{"role": "user", "content": text}],
    }


async def read_events(response: aiohttp.ClientResponse, limit: int | None = None) -> list[SSEEvent]:
    """The SSE events of a response, all of them or the first ``limit``."""
    parser = SSEParser()
    events: list[SSEEvent] = []
    async for chunk in response.content.iter_any():
        events.extend(parser.feed(chunk))
        if limit is not None and len(events) >= limit:
            return events[:limit]
    return events


def seqs(events: list[SSEEvent]) -> list[int]:
    return [int((event.id or "x:-1").rpartition(":")[2]) for event in events]


def sim_requests(simulator: Any, path: str = "/v1/messages") -> int:
    return int(simulator.stats()["requests"].get(path, 0))


async def drop_after_ten(
    http: aiohttp.ClientSession, url: str, body: dict[str, Any], **headers: str
) -> tuple[str, list[SSEEvent]]:
    """Start a stream, read 10 events, and drop the connection; (stream id, events)."""
    response = await http.post(url + "/v1/messages", json=body, headers=headers)
    assert response.status == 200, await response.text()
    stream_id = response.headers["x-tokenrelay-stream-id"]
    assert stream_id == response.headers["x-request-id"]
    first = await read_events(response, 10)
    response.close()  # the network drops
    return stream_id, first


def anthropic_text(events: list[SSEEvent]) -> str:
    text = []
    for event in events:
        if event.event == "content_block_delta":
            delta = msgspec.json.decode(event.data)["delta"]
            text.append(delta.get("text", ""))
    return "".join(text)


async def test_a_dropped_stream_resumes_from_the_next_event_exactly_once(
    gw: RunningGateway, simulator: Any
) -> None:
    before_sim = sim_requests(simulator)
    before_records = len(gw.records)
    body = messages_body("resumable")
    async with aiohttp.ClientSession() as http:
        stream_id, first = await drop_after_ten(http, gw.url, body)
        assert seqs(first) == list(range(1, 11))
        assert [event.id for event in first] == [f"{stream_id}:{n}" for n in range(1, 11)]
        await asyncio.sleep(0.2)  # the upstream goes on meanwhile
        async with http.post(
            gw.url + "/v1/messages", json=body, headers={"Last-Event-ID": first[-1].id or ""}
        ) as response:
            assert response.status == 200
            assert response.headers["content-type"].startswith("text/event-stream")
            rest = await read_events(response)
    whole = first + rest
    assert seqs(rest)[0] == 11
    assert seqs(whole) == list(range(1, len(whole) + 1))  # every event exactly once
    assert whole[0].event == "message_start" and whole[-1].event == "message_stop"
    assert len(anthropic_text(whole).split(" ")) == 40  # the whole answer
    record = await gw.wait_record(stream_id)
    assert record.outcome == "completed" and record.usage.output_tokens == 40
    assert sim_requests(simulator) - before_sim == 1  # one upstream request
    await asyncio.sleep(0.1)
    assert len(gw.records) - before_records == 1  # one record: one ledger row
    assert [r.request_id for r in gw.records[before_records:]] == [stream_id]


async def test_generic_get_resumes_by_after_and_only_for_its_caller(
    gw: RunningGateway, simulator: Any
) -> None:
    store = KeyStore(await gw.gateway.gate.database())
    _, alice = await store.create("alice-resume", "acme")
    _, bob = await store.create("bob-resume", "acme")
    body = messages_body("resumable", "Another story")
    async with aiohttp.ClientSession() as http:
        stream_id, first = await drop_after_ten(http, gw.url, body, **{"x-api-key": alice})
        url = f"{gw.url}/v1/streams/{stream_id}"
        for other in ({"x-api-key": bob}, {}):  # another key, and anonymous
            async with http.get(url, params={"after": "10"}, headers=other) as response:
                assert response.status == 404
                # the Chat Completions shape: the stream's own dialect is not told to others
                error = await response.json()
                assert f"no stream {stream_id}" in error["error"]["message"]
            async with http.post(
                gw.url + "/v1/messages",
                json=body,
                headers={**other, "Last-Event-ID": f"{stream_id}:10"},
            ) as response:
                assert response.status == 404
        async with http.get(url, params={"after": "10"}, headers={"x-api-key": alice}) as got:
            assert got.status == 200
            rest = await read_events(got)
        bad = {"x-api-key": alice, "Last-Event-ID": "not-an-id"}
        async with http.post(gw.url + "/v1/messages", json=body, headers=bad) as response:
            assert response.status == 400
            assert "Last-Event-ID" in (await response.json())["error"]["message"]
    assert seqs(first + rest) == list(range(1, len(first) + len(rest) + 1))
    assert rest[-1].event == "message_stop"


async def test_an_expired_window_is_a_clear_error_in_the_clients_dialect(
    gw: RunningGateway,
) -> None:
    body = {"model": "shortwin", "stream": True, "messages": [{"role": "user", "content": "hi"}]}
    async with aiohttp.ClientSession() as http:
        async with http.post(gw.url + "/v1/chat/completions", json=body) as response:
            events = await read_events(response)
        assert events[-1].data == "[DONE]" and events[-1].id is not None
        await asyncio.sleep(0.5)  # the route keeps its events 0.3 s
        resume = {"Last-Event-ID": events[2].id or ""}
        url = gw.url + "/v1/chat/completions"
        async with http.post(url, json=body, headers=resume) as response:
            assert response.status == 410
            error = (await response.json())["error"]
            assert "can no longer be resumed" in error["message"]
            assert "send the request again" in error["message"]


async def test_without_a_reconnect_the_upstream_stops_after_the_grace(
    gw: RunningGateway, simulator: Any
) -> None:
    before = len(simulator.stats()["disconnects"])
    async with aiohttp.ClientSession() as http:
        stream_id, _ = await drop_after_ten(http, gw.url, messages_body("shortgrace", "Go"))
    record = await gw.wait_record(stream_id, within=5)
    assert (record.outcome, record.error_type) == ("aborted", "client_disconnected")
    assert record.usage.output_tokens is not None and record.usage.output_tokens < 40
    deadline = time.monotonic() + 5
    while len(simulator.stats()["disconnects"]) == before and time.monotonic() < deadline:
        await asyncio.sleep(0.02)
    assert len(simulator.stats()["disconnects"]) == before + 1


async def test_a_route_without_resume_has_no_ids_and_stops_at_once(
    gw: RunningGateway, simulator: Any
) -> None:
    before = len(simulator.stats()["disconnects"])
    async with aiohttp.ClientSession() as http:
        response = await http.post(gw.url + "/v1/messages", json=messages_body("slow", "Count"))
        assert "x-tokenrelay-stream-id" not in response.headers
        first = await read_events(response, 5)
        request_id = response.headers["x-request-id"]
        response.close()
    assert all(event.id is None for event in first)
    record = await gw.wait_record(request_id)
    assert record.outcome == "aborted"
    deadline = time.monotonic() + 5
    while len(simulator.stats()["disconnects"]) == before and time.monotonic() < deadline:
        await asyncio.sleep(0.02)
    assert len(simulator.stats()["disconnects"]) == before + 1


async def test_use_chat_reconnect_finds_the_chats_stream_or_says_204(gw: RunningGateway) -> None:
    chat_id = secrets.token_hex(8)
    body = {
        "id": chat_id,
        "route": "resumable",
        "messages": [{"id": "u1", "role": "user", "parts": [{"type": "text", "text": "Hi"}]}],
    }
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{gw.url}/api/chat/{chat_id}/stream") as none:
            assert none.status == 204
        response = await http.post(gw.url + "/api/chat", json=body)
        first = await read_events(response, 3)
        response.close()
        async with http.get(f"{gw.url}/api/chat/{chat_id}/stream") as again:
            assert again.status == 200
            assert again.headers["x-vercel-ai-ui-message-stream"] == "v1"
            replayed = await read_events(again)  # from the start: useChat replays
    assert [e.data for e in replayed[:3]] == [e.data for e in first]
    assert any('"type":"finish"' in event.data for event in replayed)  # the whole answer
    assert seqs(replayed) == list(range(1, len(replayed) + 1))


@contextlib.asynccontextmanager
async def two_instances(simulator: Any) -> AsyncIterator[tuple[RunningGateway, RunningGateway]]:
    machine_redis_or_skip()
    prefix = f"resume-test-{secrets.token_hex(4)}"
    env = {
        **gateway_environ(simulator.url),
        **resume_routes(),
        "TOKENRELAY_REDIS_URL": MACHINE_REDIS,
        "TOKENRELAY_LIMITS__KEY_PREFIX": prefix,
    }
    async with gateway_server(env) as one, gateway_server(env) as two:
        yield one, two


async def test_another_instance_sharing_redis_resumes_the_stream(simulator: Any) -> None:
    before_sim = sim_requests(simulator)
    async with two_instances(simulator) as (one, two):
        body = messages_body("resumable", "A story for two instances")
        async with aiohttp.ClientSession() as http:
            stream_id, first = await drop_after_ten(http, one.url, body)
            async with http.post(
                two.url + "/v1/messages", json=body, headers={"Last-Event-ID": f"{stream_id}:10"}
            ) as response:
                assert response.status == 200, await response.text()
                rest = await read_events(response)
        whole = first + rest
        assert seqs(whole) == list(range(1, len(whole) + 1))
        assert whole[-1].event == "message_stop"
        assert len(anthropic_text(whole).split(" ")) == 40
        record = await one.wait_record(stream_id)
        assert record.outcome == "completed"
        assert [r.request_id for r in one.records] == [stream_id]
        assert two.records == []  # the resume is no request of its own
    assert sim_requests(simulator) - before_sim == 1

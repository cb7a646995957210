"""The owner's deliberate Stop on a resumable route, and Redis failing under a resume
(docs/resume.md): ``DELETE /v1/streams/{id}`` stops the upstream at once, on this instance or the
one running it, only for the caller who started it, idempotently; ``/metrics`` counts reconnects
and cancels; and with the shared Redis stopped mid-stream, a reconnect on another instance gets a
503 in its client's dialect (never a hang, never a replay with a hole) while the instance running
the stream still resumes it whole."""

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

from tests.redis_server import RedisServer, redis_server_fixture
from tests.servers import RunningGateway, gateway_environ, gateway_server
from tests.test_resume import (
    anthropic_text,
    messages_body,
    read_events,
    resume_routes,
    seqs,
    sim_requests,
)
from tests.test_scale_out import MACHINE_REDIS, machine_redis_or_skip
from tokenrelay.dialects.sse import SSEEvent
from tokenrelay.gate.keys import KeyStore

pytestmark = pytest.mark.asyncio(loop_scope="session")

redis_server = redis_server_fixture()

LONG = [
    {
        "provider": "anthropic",
        "model": "claude-sonnet-5-5",
        "headers": {"x-sim-tokens": "300", "x-sim-token-delay-ms": "20"},
    }
]


def cancel_routes() -> dict[str, str]:
    return {
        **resume_routes(),
        "TOKENRELAY_ROUTES__LONG__TARGETS": msgspec.json.encode(LONG).decode(),
        "TOKENRELAY_ROUTES__LONG__RESUME__GRACE": "15",
    }


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def gw(simulator: Any) -> AsyncIterator[RunningGateway]:
    async with gateway_server({**gateway_environ(simulator.url), **cancel_routes()}) as running:
        yield running


async def start(
    http: aiohttp.ClientSession, url: str, events: int, **headers: str
) -> tuple[aiohttp.ClientResponse, str, list[SSEEvent]]:
    """A long stream on the route ``long``, its first ``events`` read; the response stays open."""
    response = await http.post(
        url + "/v1/messages", json=messages_body("long", "A long story"), headers=headers
    )
    assert response.status == 200, await response.text()
    first = await read_events(response, events)
    return response, response.headers["x-tokenrelay-stream-id"], first


async def upstream_closed(simulator: Any, before: int, within: float = 5.0) -> bool:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if len(simulator.stats()["disconnects"]) > before:
            return True
        await asyncio.sleep(0.02)
    return False


async def test_the_owners_delete_stops_the_upstream_and_others_get_404(
    gw: RunningGateway, simulator: Any
) -> None:
    store = KeyStore(await gw.gateway.gate.database())
    _, alice = await store.create("alice-cancel", "acme")
    _, bob = await store.create("bob-cancel", "acme")
    before = len(simulator.stats()["disconnects"])
    async with aiohttp.ClientSession() as http:
        response, stream_id, first = await start(http, gw.url, 5, **{"x-api-key": alice})
        response.close()  # useChat's stop(): the fetch is aborted, the upstream goes on (grace)
        url = f"{gw.url}/v1/streams/{stream_id}"
        for other in ({"x-api-key": bob}, {}):
            async with http.delete(url, headers=other) as refused:
                assert refused.status == 404
                error = (await refused.json())["error"]
                assert f"no stream {stream_id}" in error["message"]
        assert len(simulator.stats()["disconnects"]) == before  # still generating
        async with http.delete(url, headers={"x-api-key": alice}) as deleted:
            assert deleted.status == 204
            assert await deleted.read() == b""
        assert await upstream_closed(simulator, before)
        record = await gw.wait_record(stream_id)
        assert record.outcome == "aborted"
        assert record.usage.output_tokens is not None and record.usage.output_tokens < 300
        async with http.delete(url, headers={"x-api-key": alice}) as again:
            assert again.status == 204  # idempotent: the stream ended, the answer is the same
        # what was sent before the Stop is still there, and the replay ends (no hang)
        async with http.get(url, headers={"x-api-key": alice}) as replay:
            assert replay.status == 200
            events = await asyncio.wait_for(read_events(replay), 5)
    assert seqs(events) == list(range(1, len(events) + 1))
    assert [e.data for e in events[:5]] == [e.data for e in first]
    assert events[-1].event != "message_stop"  # it was stopped, not finished
    assert len(simulator.stats()["disconnects"]) == before + 1


async def test_the_record_says_the_owner_cancelled(gw: RunningGateway) -> None:
    async with aiohttp.ClientSession() as http:
        response, stream_id, _ = await start(http, gw.url, 3)
        response.close()
        async with http.delete(f"{gw.url}/v1/streams/{stream_id}") as deleted:
            assert deleted.status == 204
    record = await gw.wait_record(stream_id)
    assert (record.outcome, record.error_type) == ("aborted", "client_cancelled")


async def test_a_delete_while_the_client_still_reads_ends_its_stream(
    gw: RunningGateway, simulator: Any
) -> None:
    before = len(simulator.stats()["disconnects"])
    async with aiohttp.ClientSession() as http:
        response, stream_id, first = await start(http, gw.url, 5)
        async with http.delete(f"{gw.url}/v1/streams/{stream_id}") as deleted:
            assert deleted.status == 204
        rest: list[SSEEvent] = []
        with contextlib.suppress(aiohttp.ClientPayloadError):  # cut, as an abort is
            rest = await asyncio.wait_for(read_events(response), 5)
        response.close()
    assert all(event.event != "message_stop" for event in first + rest)
    assert await upstream_closed(simulator, before)
    assert (await gw.wait_record(stream_id)).outcome == "aborted"


async def test_a_chats_delete_stops_its_stream_and_it_is_not_offered_again(
    gw: RunningGateway, simulator: Any
) -> None:
    chat_id = secrets.token_hex(8)
    body = {
        "id": chat_id,
        "route": "long",
        "messages": [{"id": "u1", "role": "user", "parts": [{"type": "text", "text": "Hi"}]}],
    }
    url = f"{gw.url}/api/chat/{chat_id}/stream"
    before = len(simulator.stats()["disconnects"])
    async with aiohttp.ClientSession() as http:
        async with http.delete(url) as nothing:
            assert nothing.status == 204  # no stream for that chat: nothing to stop
        response = await http.post(gw.url + "/api/chat", json=body)
        stream_id = response.headers["x-tokenrelay-stream-id"]
        await read_events(response, 3)
        response.close()
        async with http.delete(url) as deleted:
            assert deleted.status == 204
        assert await upstream_closed(simulator, before)
        assert (await gw.wait_record(stream_id)).outcome == "aborted"
        async with http.get(url) as resumed:  # a reload after Stop: nothing to resume
            assert resumed.status == 204


async def test_metrics_count_resumes_and_cancels(gw: RunningGateway) -> None:
    store = gw.gateway.resume
    assert store is not None
    counts = dict(store.results)
    async with aiohttp.ClientSession() as http:
        response, stream_id, _ = await start(http, gw.url, 5)
        response.close()
        deadline = time.monotonic() + 5
        while store.detached == 0 and time.monotonic() < deadline:  # it notices the client left
            await asyncio.sleep(0.01)
        assert store.detached >= 1 and store.size > 0
        page = await (await http.get(gw.url + "/metrics")).text()
        assert "tokenrelay_resume_detached_streams" in page
        assert "tokenrelay_resume_buffered_bytes" in page
        url = f"{gw.url}/v1/streams/{stream_id}"
        async with http.get(url, params={"after": "5"}) as resumed:
            assert resumed.status == 200
            await read_events(resumed, 1)
        async with http.get(f"{gw.url}/v1/streams/{'0' * 24}") as unknown:
            assert unknown.status == 404
        async with http.delete(url) as deleted:
            assert deleted.status == 204
        page = await (await http.get(gw.url + "/metrics")).text()
    for result in ("resumed", "not_found", "cancelled"):
        assert store.results[result] == counts[result] + 1, result
    assert f'tokenrelay_resume_total{{result="cancelled"}} {store.results["cancelled"]}' in page


@contextlib.asynccontextmanager
async def two_instances(
    simulator: Any, redis_url: str
) -> AsyncIterator[tuple[RunningGateway, RunningGateway]]:
    env = {
        **gateway_environ(simulator.url),
        **cancel_routes(),
        "TOKENRELAY_REDIS_URL": redis_url,
        "TOKENRELAY_LIMITS__KEY_PREFIX": f"resume-cancel-{secrets.token_hex(4)}",
        "TOKENRELAY_LIMITS__REDIS_TIMEOUT": "0.5",
    }
    async with gateway_server(env) as one, gateway_server(env) as two:
        yield one, two


async def copied(other: RunningGateway, stream_id: str) -> None:
    """Wait until ``other`` sees the stream through Redis (written in the background)."""
    assert other.gateway.resume is not None
    deadline = time.monotonic() + 5
    while await other.gateway.resume.info(stream_id) is None:
        assert time.monotonic() < deadline, "the stream never reached Redis"
        await asyncio.sleep(0.01)


async def test_a_delete_on_another_instance_stops_the_owners_upstream(simulator: Any) -> None:
    machine_redis_or_skip()
    before = len(simulator.stats()["disconnects"])
    async with (
        two_instances(simulator, MACHINE_REDIS) as (one, two),
        aiohttp.ClientSession() as http,
    ):
        response, stream_id, _ = await start(http, one.url, 5)
        response.close()
        await copied(two, stream_id)
        async with http.delete(f"{two.url}/v1/streams/{stream_id}") as deleted:
            assert deleted.status == 204
        assert await upstream_closed(simulator, before)
        record = await one.wait_record(stream_id)
        assert record.outcome == "aborted"
        assert record.usage.output_tokens is not None and record.usage.output_tokens < 300
        assert two.records == []
        async with http.delete(f"{two.url}/v1/streams/{stream_id}") as again:
            assert again.status == 204


async def test_redis_stopped_mid_stream_is_a_503_elsewhere_and_the_owner_still_resumes(
    simulator: Any, redis_server: RedisServer
) -> None:
    before_sim = sim_requests(simulator)
    async with two_instances(simulator, redis_server.url) as (one, two):
        body = messages_body("long", "A long story")
        async with aiohttp.ClientSession() as http:
            response, stream_id, first = await start(http, one.url, 10)
            response.close()
            await copied(two, stream_id)
            # a reader on the other instance, when Redis goes away: its answer ends, no hang
            reader = await http.get(f"{two.url}/v1/streams/{stream_id}", params={"after": "10"})
            assert reader.status == 200
            read = await read_events(reader, 3)
            redis_server.stop()
            read += await asyncio.wait_for(read_events(reader), 10)
            reader.close()
            assert seqs(read) == list(range(11, 11 + len(read)))  # no hole, no repeat
            # a reconnect there now: a 503 in the client's dialect (Anthropic's here)
            resume = {"Last-Event-ID": f"{stream_id}:10"}
            started = time.monotonic()
            async with http.post(two.url + "/v1/messages", json=body, headers=resume) as refused:
                assert refused.status == 503
                assert refused.headers["retry-after"] == "1"
                error = await refused.json()
                assert error["type"] == "error" and error["error"]["type"] == "overloaded_error"
                assert "Redis" in error["error"]["message"]
            assert time.monotonic() - started < 5  # bounded by redis_timeout, not a hang
            async with http.get(f"{two.url}/v1/streams/{stream_id}") as generic:
                assert generic.status == 503
            # Redis back (empty): the owner marks the lost copy; elsewhere it stays a 503
            redis_server.start()
            status, message = 0, ""
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                async with http.post(two.url + "/v1/messages", json=body, headers=resume) as r:
                    status, message = r.status, (await r.json())["error"]["message"]
                if status == 503 and "lost events" in message:
                    break
                await asyncio.sleep(0.1)
            assert status == 503 and "lost events" in message
            # the owner has it all
            async with http.post(one.url + "/v1/messages", json=body, headers=resume) as whole:
                assert whole.status == 200
                rest = await read_events(whole)
        events = first + rest
        assert seqs(events) == list(range(1, len(events) + 1))
        assert events[-1].event == "message_stop"
        record = await one.wait_record(stream_id)
        assert record.outcome == "completed"
        assert len(anthropic_text(events).split(" ")) == record.usage.output_tokens == 200
        assert two.records == [] and [r.request_id for r in one.records] == [stream_id]
        assert two.gateway.resume is not None
        assert two.gateway.resume.results["unavailable"] >= 3
    assert sim_requests(simulator) - before_sim == 1


async def test_a_copy_that_lost_its_end_in_an_outage_is_marked_once_redis_is_back(
    redis_server: RedisServer,
) -> None:
    """The stream ended while Redis was down: the mark (meta ``lost``, expiring with the
    window) is written when Redis answers again, and nothing of the stream is kept after."""
    from tokenrelay.resume.redis_mirror import RedisMirror
    from tokenrelay.resume.settings import ResumeSettings, ResumeStoreSettings
    from tokenrelay.resume.store import ResumeStore

    mirror = RedisMirror(redis_server.url, "lost-test", timeout=0.5, max_events=100)
    store = ResumeStore(ResumeStoreSettings(), mirror)
    stream_id = secrets.token_hex(12)
    tap = store.open(stream_id, "ip:1", "anthropic", None, ResumeSettings(grace=5, window=30))
    tap.buffer.expire = lambda: None
    tap.add(b"data: 1\n\ndata: 2\n\n")
    await mirror.flush()
    info = await store.info(stream_id)
    assert info is not None and not info.copy_lost
    redis_server.stop()
    tap.add(b"data: 3\n\n")
    store.end(tap)
    await mirror.flush()  # fails: the copy misses event 3 and its end
    assert mirror.dropped == 2
    redis_server.start()
    await mirror.flush()
    del store.streams[stream_id]  # as another instance sees it: through Redis only
    info = await store.info(stream_id)
    assert info is not None and info.copy_lost
    assert 0 < await mirror.redis.ttl(f"lost-test:resume:{stream_id}") <= 30
    assert not mirror._meta and not mirror._holes and not mirror._unmarked
    await store.close()

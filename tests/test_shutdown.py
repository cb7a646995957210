"""Graceful shutdown: on SIGTERM or SIGINT the gateway stops accepting, lets the streams in flight
finish within ``shutdown_grace``, ends the rest with an explicit error in their client's dialect
(closing their upstream), and exits 0.

Checked on a real ``tokenrelay serve`` child process (one worker and two) against the simulator,
which runs in this process, so its ``/stats`` shows when each upstream connection closed; and in
process for what a child cannot show from outside: readiness and refusals while draining (the
child closes its listener at once), and the records.
"""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import msgspec
import pytest
import pytest_asyncio

from tests.servers import ServeProcess, clean_environ, gateway_environ, gateway_server
from tokenrelay.dialects.sse import SSEEvent, SSEParser
from tokenrelay.relay_call import RelayCall

pytestmark = pytest.mark.asyncio(loop_scope="session")

SIGNALS = [pytest.param(signal.SIGTERM, id="SIGTERM"), pytest.param(signal.SIGINT, id="SIGINT")]
HI = [{"role": "user", "content": "Hi"}]
# Each dialect's endpoint and a body for a route over the simulator (tests/servers.py).
REQUESTS: dict[str, tuple[str, dict[str, Any]]] = {
    "openai": ("/v1/chat/completions", {"model": "oa", "stream": True, "messages": HI}),
    "anthropic": (
        "/v1/messages",
        {"model": "an", "max_tokens": 1000, "stream": True, "messages": HI},
    ),
    "generate": ("/api/generate", {"prompt": "Hi", "route": "an"}),
}


def knobs(tokens: int, delay_ms: int, ttft_ms: int = 5) -> dict[str, str]:
    return {
        "x-sim-tokens": str(tokens),
        "x-sim-token-delay-ms": str(delay_ms),
        "x-sim-ttft-ms": str(ttft_ms),
    }


@dataclass
class Stream:
    """A streaming response read as it arrives, each event with its arrival time."""

    dialect: str
    response: aiohttp.ClientResponse
    events: list[tuple[float, SSEEvent]] = field(default_factory=list)
    parser: SSEParser = field(default_factory=SSEParser)  # kept: an event may span two reads

    @property
    def request_id(self) -> str:
        return self.response.headers["x-request-id"]

    async def read(self, until_texts: int | None = None) -> None:
        """Read to the end, or until ``until_texts`` text events have arrived."""
        async for chunk in self.response.content.iter_any():
            now = time.monotonic()
            self.events.extend((now, event) for event in self.parser.feed(chunk))
            if until_texts is not None and len(self.texts()) >= until_texts:
                return

    def texts(self) -> list[str]:
        out = []
        for _, event in self.events:
            if event.data == "[DONE]":
                continue
            data = msgspec.json.decode(event.data)
            if self.dialect == "openai" and data.get("choices"):
                text = data["choices"][0]["delta"].get("content")
            elif self.dialect == "anthropic" and data["type"] == "content_block_delta":
                text = data["delta"].get("text")
            elif self.dialect == "generate":
                text = data.get("text")
            else:
                text = None
            if text:
                out.append(text)
        return out

    def error(self) -> tuple[float, dict[str, Any]]:
        """The in-band error, which must end the stream (then ``[DONE]`` where the dialect has
        one), and when it arrived."""
        last = -1
        if self.dialect != "anthropic":
            assert self.events[-1][1].data == "[DONE]", self.events[-3:]
            last = -2
        at, event = self.events[last]
        data = msgspec.json.decode(event.data)
        if self.dialect == "anthropic":
            assert event.event == "error" and data["type"] == "error", self.events[-3:]
        assert "error" in data, self.events[-3:]
        return at, data["error"]

    def no_error(self) -> bool:
        return not any(
            event.event == "error" or '"error"' in event.data for _, event in self.events
        )


async def open_stream(
    http: aiohttp.ClientSession, base: str, dialect: str, headers: dict[str, str]
) -> Stream:
    path, body = REQUESTS[dialect]
    response = await http.post(base + path, json=body, headers=headers)
    assert response.status == 200, await response.text()
    return Stream(dialect, response)


async def sim_stats(http: aiohttp.ClientSession, simulator: Any) -> dict[str, Any]:
    async with http.get(simulator.url + "/stats") as response:
        data: dict[str, Any] = await response.json()
        return data


async def refuses_connections(port: int, within: float = 1.0) -> bool:
    """Whether the port stops accepting connections within ``within`` seconds."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
        except ConnectionRefusedError:
            return True
        except ConnectionResetError:
            # The listener closed while this connection sat in its backlog: the kernel resets
            # it. The port no longer accepts either way (seen once in CI).
            return True
        writer.close()
        await asyncio.sleep(0.01)
    return False


@pytest_asyncio.fixture(loop_scope="session")
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    # No pooling: each request gets its own connection, as separate clients would.
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as session:
        yield session


class Child:
    """``tokenrelay serve`` as a child process over the simulator, signalled and waited on
    without blocking the event loop the simulator runs on."""

    def __init__(self, server: ServeProcess) -> None:
        self.server = server
        self.signalled_at = 0.0

    @classmethod
    async def start(cls, simulator: Any, grace: float, *args: str) -> Child:
        env = clean_environ(**gateway_environ(simulator.url), TOKENRELAY_SHUTDOWN_GRACE=str(grace))
        return cls(await asyncio.to_thread(ServeProcess, env, *args))

    def signal(self, sig: int) -> None:
        self.signalled_at = time.monotonic()
        self.server.proc.send_signal(sig)

    async def wait_exit(self, within: float) -> tuple[int, float, str]:
        """Exit code, seconds from the signal to the exit, and everything the child logged."""
        proc = self.server.proc
        deadline = time.monotonic() + within
        while proc.poll() is None and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        exited_after = time.monotonic() - self.signalled_at
        if proc.poll() is None:
            proc.kill()
        output, _ = await asyncio.to_thread(proc.communicate, timeout=5)
        assert proc.returncode is not None
        return proc.returncode, exited_after, output

    def kill(self) -> None:
        if self.server.proc.poll() is None:
            self.server.proc.kill()
            self.server.proc.communicate()


# --- a real `tokenrelay serve` ------------------------------------------------------------------


@pytest.mark.parametrize("sig", SIGNALS)
async def test_streams_in_flight_finish_within_the_grace_then_exit_0(
    simulator: Any, http: aiohttp.ClientSession, sig: int
) -> None:
    child = await Child.start(simulator, grace=10)
    try:
        headers = knobs(tokens=30, delay_ms=50)  # 1.5 s each
        streams = [
            await open_stream(http, child.server.url, dialect, headers)
            for dialect in ("openai", "anthropic")
        ]
        for stream in streams:
            await stream.read(until_texts=3)
        child.signal(sig)
        reading = [asyncio.create_task(stream.read()) for stream in streams]
        assert await refuses_connections(child.server.port), "still accepting after the signal"
        await asyncio.wait_for(asyncio.gather(*reading), 10)
        code, exited_after, output = await child.wait_exit(within=10)
    finally:
        child.kill()
    assert code == 0, output
    for stream in streams:  # every token, and the dialect's proper end, no error
        assert len(stream.texts()) == 30, (stream.dialect, stream.texts())
        assert stream.no_error(), stream.events[-3:]
        assert f"{stream.request_id} completed" in output
    openai_stream, anthropic_stream = streams
    assert openai_stream.events[-1][1].data == "[DONE]"
    finish = msgspec.json.decode(openai_stream.events[-2][1].data)
    assert finish["choices"][0]["finish_reason"] == "stop"
    assert anthropic_stream.events[-1][1].event == "message_stop"
    # The process waited for the streams, not for the grace: they had about 1.4 s to go.
    last_event = max(stream.events[-1][0] for stream in streams)
    assert last_event - child.signalled_at > 1.0
    assert exited_after < last_event - child.signalled_at + 1.5, exited_after
    assert "draining: 2 stream(s) in flight" in output and "Traceback" not in output
    print(
        f"\n{sig!r}: last event {last_event - child.signalled_at:.2f} s, exit {exited_after:.2f} s"
    )


@pytest.mark.parametrize("sig", SIGNALS)
async def test_streams_past_the_grace_end_with_an_in_band_error_and_exit_0(
    simulator: Any, http: aiohttp.ClientSession, sig: int
) -> None:
    grace = 0.5
    await http.post(simulator.url + "/stats/reset")
    child = await Child.start(simulator, grace=grace)
    try:
        headers = knobs(tokens=100, delay_ms=50)  # 5 s each
        streams = [
            await open_stream(http, child.server.url, dialect, headers)
            for dialect in ("openai", "anthropic", "generate")
        ]
        for stream in streams:
            await stream.read(until_texts=3)
        # A non-streaming request is mid-generation too: its head is not sent yet.
        whole = asyncio.create_task(
            http.post(
                child.server.url + "/v1/chat/completions",
                json={"model": "oa", "stream": False, "messages": HI},
                headers=headers,
            )
        )
        await asyncio.sleep(0.2)
        child.signal(sig)
        await asyncio.wait_for(asyncio.gather(*(stream.read() for stream in streams)), 5)
        response = await asyncio.wait_for(whole, 5)
        body = await response.json()
        code, exited_after, output = await child.wait_exit(within=grace + 3)
        stats = await sim_stats(http, simulator)
    finally:
        child.kill()
    assert code == 0, output
    assert exited_after < grace + 3, exited_after
    for stream in streams:
        at, error = stream.error()
        assert 3 <= len(stream.texts()) < 100
        assert "shutting down" in error["message"] and stream.request_id in error["message"]
        assert grace - 0.05 < at - child.signalled_at < grace + 1.0  # the grace, then at once
        assert f"{stream.request_id} interrupted" in output
    assert streams[0].error()[1]["code"] == "overloaded"  # OpenAI: server_error / overloaded
    assert streams[1].error()[1]["type"] == "overloaded_error"  # Anthropic's retryable type
    assert streams[2].error()[1]["type"] == "overloaded"
    # The non-streaming answer had no head yet: a 503 to retry, in its dialect.
    assert response.status == 503 and response.headers["retry-after"] == "1"
    assert body["error"]["code"] == "overloaded" and "shutting down" in body["error"]["message"]
    assert output.count("error=shutting_down") == 4
    # Every upstream was closed (none ran to its 100 tokens), right after the grace.
    disconnects = stats["disconnects"]
    assert len(disconnects) == 4 and stats["completed"] == 0, stats
    for disconnect in disconnects:
        assert disconnect["tokens_sent"] < 100
        assert disconnect["at_monotonic"] - child.signalled_at < grace + 1.0
    print(
        f"\n{sig!r}: errors after "
        + ", ".join(f"{s.error()[0] - child.signalled_at:.2f}" for s in streams)
        + f" s, exit after {exited_after:.2f} s"
    )


async def test_each_worker_drains_the_same_way(simulator: Any, http: aiohttp.ClientSession) -> None:
    grace = 0.5
    child = await Child.start(simulator, grace, "--workers", "2")
    try:
        stream = await open_stream(http, child.server.url, "openai", knobs(100, 50))
        await stream.read(until_texts=3)
        child.signal(signal.SIGTERM)
        await asyncio.wait_for(stream.read(), 5)
        code, exited_after, output = await child.wait_exit(within=grace + 4)
    finally:
        child.kill()
    assert code == 0, output
    _, error = stream.error()
    assert error["code"] == "overloaded" and "shutting down" in error["message"]
    assert 3 <= len(stream.texts()) < 100
    # The worker that served it ran the gateway's drain and logged the request's record.
    assert "draining: 1 stream(s) in flight get up to 0.5 s" in output
    assert f"{stream.request_id} interrupted" in output
    assert "Traceback" not in output
    print(f"\nworkers=2: exit after {exited_after:.2f} s")


# --- in process ---------------------------------------------------------------------------------


async def test_while_draining_readyz_is_503_and_new_streams_are_refused_in_their_dialect(
    simulator: Any, http: aiohttp.ClientSession
) -> None:
    async with gateway_server(gateway_environ(simulator.url)) as gw:
        async with http.get(gw.url + "/readyz") as response:
            assert response.status == 200 and await response.json() == {"status": "ready"}
        stream = await open_stream(http, gw.url, "generate", knobs(20, 20))
        await stream.read(until_texts=1)
        drain = asyncio.create_task(gw.gateway.drain(5))
        await asyncio.sleep(0)
        async with http.get(gw.url + "/readyz") as response:
            assert response.status == 503 and await response.json() == {"status": "draining"}
        async with http.get(gw.url + "/healthz") as response:
            assert response.status == 200  # alive, just not taking new work
        refused = {}
        for dialect, (path, body) in REQUESTS.items():
            async with http.post(gw.url + path, json=body) as response:
                assert response.status == 503
                assert response.headers["retry-after"] == "1"
                assert response.headers["connection"] == "close"
                refused[dialect] = (response.headers["x-request-id"], await response.json())
        await stream.read()
        assert await asyncio.wait_for(drain, 5) == 0  # the stream in flight finished by itself
        assert len(stream.texts()) == 20 and stream.no_error()
        assert (await gw.wait_record(stream.request_id)).outcome == "completed"
        message = "the gateway is shutting down; retry"
        assert refused["anthropic"][1] == {
            "type": "error",
            "error": {"type": "overloaded_error", "message": message},
        }
        assert refused["openai"][1]["error"]["code"] == "overloaded"
        assert refused["openai"][1]["error"]["message"] == message
        assert refused["generate"][1] == {"error": {"type": "overloaded", "message": message}}
        for request_id, _ in refused.values():
            record = await gw.wait_record(request_id)
            assert record.outcome == "rejected" and record.status == 503
            assert record.error_type == "shutting_down"


async def test_shutdown_records_every_interrupted_request(
    simulator: Any, http: aiohttp.ClientSession
) -> None:
    environ = {**gateway_environ(simulator.url), "TOKENRELAY_SHUTDOWN_GRACE": "0.3"}
    async with gateway_server(environ, drains=True) as gw:
        assert gw.server is not None
        streaming = await open_stream(http, gw.url, "anthropic", knobs(100, 50))
        await streaming.read(until_texts=2)
        # Another is still waiting for its first token: nothing is sent yet, so it gets a 503.
        path, body = REQUESTS["openai"]
        waiting = asyncio.create_task(
            http.post(gw.url + path, json=body, headers=knobs(10, 10, ttft_ms=3000))
        )

        async def both_in_flight() -> None:
            while len(gw.gateway.calls) < 2:
                await asyncio.sleep(0.005)

        await asyncio.wait_for(both_in_flight(), 3)
        gw.server.should_exit = True  # what SIGTERM does
        assert await refuses_connections(gw.port)
        await asyncio.wait_for(streaming.read(), 3)
        response = await asyncio.wait_for(waiting, 3)
        assert response.status == 503 and response.headers["retry-after"] == "1"
        assert "shutting down" in (await response.json())["error"]["message"]
        _, error = streaming.error()
        assert error["type"] == "overloaded_error"
        record = await gw.wait_record(streaming.request_id)
        assert record.outcome == "interrupted" and record.error_type == "shutting_down"
        assert record.status == 200 and record.content_events >= 2
        assert record.usage.input_tokens  # what the upstream had reported is kept for metering
        record = await gw.wait_record(response.headers["x-request-id"])
        assert record.outcome == "interrupted" and record.error_type == "shutting_down"
        assert record.status == 503 and record.content_events == 0
        assert not gw.gateway.calls


async def test_a_cancelled_relay_still_ends_its_stream_with_an_error_and_a_record(
    simulator: Any, http: aiohttp.ClientSession
) -> None:
    """uvicorn's last resort (it cancels what is left after its own timeout) is not silent."""
    async with gateway_server(gateway_environ(simulator.url)) as gw:
        stream = await open_stream(http, gw.url, "openai", knobs(100, 20))
        await stream.read(until_texts=2)
        (call,) = gw.gateway.calls
        assert isinstance(call, RelayCall) and call.task is not None
        call.task.cancel()  # not through interrupt(): as uvicorn does it
        await asyncio.wait_for(stream.read(), 3)
        _, error = stream.error()
        assert error["code"] == "overloaded" and "shutting down" in error["message"]
        record = await gw.wait_record(stream.request_id)
        assert record.outcome == "interrupted" and record.error_type == "shutting_down"
        assert not gw.gateway.calls


async def test_a_second_ctrl_c_cuts_the_grace_short(
    simulator: Any, http: aiohttp.ClientSession
) -> None:
    child = await Child.start(simulator, grace=30)
    try:
        stream = await open_stream(http, child.server.url, "generate", knobs(100, 50))
        await stream.read(until_texts=3)
        child.signal(signal.SIGINT)
        await asyncio.sleep(0.3)
        child.server.proc.send_signal(signal.SIGINT)
        await asyncio.wait_for(stream.read(), 5)
        code, exited_after, output = await child.wait_exit(within=5)
    finally:
        child.kill()
    assert code == 0, output
    at, error = stream.error()
    assert error["type"] == "overloaded" and "shutting down" in error["message"]
    assert at - child.signalled_at < 1.0 and exited_after < 3.0, (at, exited_after)
    assert f"{stream.request_id} interrupted" in output

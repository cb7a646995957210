"""Our HTTP/1.1 protocol (``tokenrelay.edge``) over real sockets, in what uvicorn's did for us
before: pipelined requests answered in order, Expect: 100-continue, HEAD, chunked request
bodies, a 500 for an app that fails, writes that wait for a slow reader; and a client that
leaves told to the relay by a callback (no task per stream) that stops the upstream at once."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections.abc import AsyncIterator
from typing import Any, ClassVar

import msgspec
import pytest
import uvicorn

from tests.servers import _QuietServer
from tests.test_edge_attacks import Raw, edge_server, environ, parse
from tokenrelay.edge.protocol import EdgeProtocol

pytestmark = pytest.mark.asyncio(loop_scope="session")


def chat(stream: bool = False) -> bytes:
    return msgspec.json.encode(
        {"model": "gpt-5.5", "stream": stream, "messages": [{"role": "user", "content": "hi"}]}
    )


def post(body: bytes, *extra: bytes) -> bytes:
    head = b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
    return head + b"".join(line + b"\r\n" for line in extra) + b"\r\n" + body


def answers(data: bytes) -> list[tuple[int, dict[str, str], bytes]]:
    """Responses one after another, as a pipelining client reads them (sized or chunked)."""
    found = []
    while data:
        head, _, data = data.partition(b"\r\n\r\n")
        status, headers, _ = parse(head + b"\r\n\r\n")
        if headers.get("transfer-encoding") == "chunked":
            body = b""
            while True:
                size, _, data = data.partition(b"\r\n")
                length = int(size, 16)
                body, data = body + data[:length], data[length + 2 :]
                if not length:
                    break
        else:
            length = int(headers.get("content-length", "0"))
            body, data = data[:length], data[length:]
        found.append((status, headers, body))
    return found


async def test_pipelined_requests_are_answered_in_order(simulator: Any) -> None:
    body = chat()
    async with edge_server(environ(simulator)) as gw:
        raw = await Raw.open(gw.port)
        await raw.send(  # three requests in one segment, the last closing the connection
            post(body, b"x-sim-tokens: 3", b"content-length: %d" % len(body))
            + b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n"
            + b"GET /nowhere HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n"
        )
        got = answers(await raw.answer(within=10))
    assert [status for status, _, _ in got] == [200, 200, 404]
    assert msgspec.json.decode(got[0][2])["object"] == "chat.completion"
    assert got[2][1]["connection"] == "close"


async def test_expect_100_continue_is_answered_before_the_body_is_sent(simulator: Any) -> None:
    body = chat()
    async with edge_server(environ(simulator)) as gw:
        raw = await Raw.open(gw.port)
        await raw.send(
            post(
                b"",
                b"x-sim-tokens: 3",
                b"expect: 100-continue",
                b"connection: close",
                b"content-length: %d" % len(body),
            )
        )
        interim = await asyncio.wait_for(raw.reader.readuntil(b"\r\n\r\n"), 10)
        assert interim == b"HTTP/1.1 100 Continue\r\n\r\n"
        await raw.send(body)
        [(status, _, answer)] = answers(await raw.answer(within=10))
    assert status == 200 and msgspec.json.decode(answer)["object"] == "chat.completion"


async def test_a_head_request_gets_the_head_alone(simulator: Any) -> None:
    async with edge_server(environ(simulator)) as gw:
        raw = await Raw.open(gw.port)
        await raw.send(
            b"HEAD /healthz HTTP/1.1\r\nhost: x\r\n\r\n"
            b"GET /healthz HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n"
        )
        data = await raw.answer(within=10)
    first, _, rest = data.partition(b"\r\n\r\n")
    status, headers, _ = parse(first + b"\r\n\r\n")
    assert status == 200 and int(headers["content-length"]) > 0
    assert rest.startswith(b"HTTP/1.1 200 ")  # no body between the two heads
    _, second_headers, second_body = parse(rest)
    assert len(second_body) == int(second_headers["content-length"]) > 0


async def test_a_chunked_request_body_is_read_whole(simulator: Any) -> None:
    body = chat(stream=True)
    half = len(body) // 2
    chunks = b"%x\r\n%s\r\n%x\r\n%s\r\n0\r\n\r\n" % (
        half,
        body[:half],
        len(body) - half,
        body[half:],
    )
    async with edge_server(environ(simulator)) as gw:
        raw = await Raw.open(gw.port)
        await raw.send(
            post(b"", b"x-sim-tokens: 4", b"transfer-encoding: chunked", b"connection: close")
        )
        await asyncio.sleep(0.05)  # the body in a later segment than its head
        await raw.send(chunks)
        status, headers, stream = parse(await raw.answer(within=10))
    assert status == 200 and headers["transfer-encoding"] == "chunked"
    assert stream.count(b'"content":"') >= 4 and stream.endswith(b"0\r\n\r\n")


async def test_a_client_that_leaves_stops_the_upstream_without_a_watcher_task(
    simulator: Any,
) -> None:
    body = chat(stream=True)
    stats = simulator.stats()
    before, sent = len(stats["disconnects"]), stats["tokens_sent"]
    async with edge_server(environ(simulator)) as gw:
        raw = await Raw.open(gw.port)
        await raw.send(
            post(
                body,
                b"x-sim-tokens: 400",
                b"x-sim-token-delay-ms: 10",
                b"content-length: %d" % len(body),
            )
        )
        head = await asyncio.wait_for(raw.reader.readuntil(b"\r\n\r\n"), 10)
        await asyncio.wait_for(raw.reader.readuntil(b"data: "), 10)  # the stream is under way
        request_id = parse(head)[1]["x-request-id"]
        watchers = [
            task
            for task in asyncio.all_tasks()
            if "_watch_disconnect" in getattr(task.get_coro(), "__qualname__", "")
        ]
        assert watchers == []  # the edge calls back instead
        raw.writer.transport.abort()  # gone, as a closed browser tab
        left = time.monotonic()
        record = await gw.wait_record(request_id, within=5)
        assert (record.outcome, record.error_type) == ("aborted", "client_disconnected")
        while len(simulator.stats()["disconnects"]) == before and time.monotonic() < left + 5:
            await asyncio.sleep(0.01)
    stats = simulator.stats()
    assert len(stats["disconnects"]) == before + 1
    assert stats["tokens_sent"] - sent < 400  # the upstream stopped generating


# --- under a bare ASGI app --------------------------------------------------------------------


class _Pausing(EdgeProtocol):
    """The edge, noting each time the transport asked it to stop writing."""

    __slots__ = ()
    pauses: ClassVar[list[int]] = []

    def pause_writing(self) -> None:
        self.pauses.append(1)
        super().pause_writing()


@contextlib.asynccontextmanager
async def bare_server(app: Any, protocol: type[EdgeProtocol] = EdgeProtocol) -> AsyncIterator[int]:
    """``app`` under uvicorn's Server with the edge's protocol (defaults for its bounds)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.bind(("127.0.0.1", 0))
    config = uvicorn.Config(app, http=protocol, lifespan="off", log_level="critical")
    server = _QuietServer(config)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    while not server.started:
        if task.done():
            task.result()
        await asyncio.sleep(0.005)
    try:
        yield sock.getsockname()[1]
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 10)
        sock.close()


async def test_an_app_that_fails_before_its_head_gets_a_500() -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            raise RuntimeError("broken on purpose")

    async with bare_server(app) as port:
        raw = await Raw.open(port)
        await raw.send(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
        status, headers, body = parse(await raw.answer(within=10))
    assert (status, body) == (500, b"Internal Server Error")
    assert headers["connection"] == "close"


async def test_a_client_that_reads_slowly_pauses_the_writer_and_loses_nothing() -> None:
    part = bytes(range(256)) * 256  # 64 KiB
    parts = 128  # 8 MiB: far beyond the socket buffers and the transport's high-water mark

    async def app(scope: Any, receive: Any, send: Any) -> None:
        length = str(len(part) * parts).encode()
        headers = [(b"content-length", length)]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        for _ in range(parts):
            await send({"type": "http.response.body", "body": part, "more_body": True})
        await send({"type": "http.response.body", "body": b"", "more_body": False})

    _Pausing.pauses.clear()
    async with bare_server(app, _Pausing) as port:
        raw = await Raw.open(port)
        await raw.send(b"GET / HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
        await asyncio.sleep(0.3)  # not reading: the server's writes back up
        status, _, body = parse(await raw.answer(within=20))
    assert status == 200 and _Pausing.pauses
    assert body == part * parts

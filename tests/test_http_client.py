"""The upstream HTTP/1.1 client against raw servers on loopback that misbehave on purpose:
keep-alive reuse, a connection closed while idle, a response cut short, chunks handed over as
they arrive, a slow reader, a body delimited by the connection's end, garbage."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
import pytest_asyncio

from tokenrelay.http_client import HIGH_WATER, UpstreamError, UpstreamPool

pytestmark = pytest.mark.asyncio(loop_scope="session")

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


class RawServer:
    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.connections = 0
        self.requests: list[bytes] = []
        self.server: asyncio.Server | None = None
        self.url = ""

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            await self.handler(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    async def read_request(self, reader: asyncio.StreamReader) -> bytes:
        head = await reader.readuntil(b"\r\n\r\n")
        length = 0
        for line in head.split(b"\r\n"):
            if line.lower().startswith(b"content-length:"):
                length = int(line.split(b":")[1])
        body = await reader.readexactly(length)
        self.requests.append(head + body)
        return body


@pytest_asyncio.fixture(loop_scope="session")
async def serve() -> AsyncIterator[Callable[[Handler], Awaitable[RawServer]]]:
    servers: list[asyncio.Server] = []

    async def start(handler: Handler) -> RawServer:
        raw = RawServer(handler)
        server = await asyncio.start_server(raw._serve, "127.0.0.1", 0)
        servers.append(server)
        raw.url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}/v1/chat/completions"
        return raw

    yield start
    for server in servers:
        server.close()


def ok(body: bytes) -> bytes:
    return b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n%s" % (len(body), body)


def chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


async def test_a_request_is_one_well_formed_post_and_the_connection_is_reused(
    serve: Callable[[Handler], Awaitable[RawServer]],
) -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            body = await raw.read_request(reader)
            writer.write(ok(b"echo:" + body))
            await writer.drain()

    raw = await serve(handler)
    pool = UpstreamPool()
    for n in range(3):
        response = await pool.post(raw.url, b"n=%d" % n, {"x-key": "k"}, connect_timeout=2)
        assert response.status == 200
        assert await response.read() == b"echo:n=%d" % n
        pool.recycle(response)
    assert raw.connections == 1
    assert raw.requests[0].startswith(b"POST /v1/chat/completions HTTP/1.1\r\nhost: 127.0.0.1:")
    assert b"\r\nx-key: k\r\ncontent-length: 3\r\n\r\nn=0" in raw.requests[0]
    assert pool.connections == (0, 1)
    await pool.close()


async def test_a_connection_closed_while_idle_is_replaced_without_an_error(
    serve: Callable[[Handler], Awaitable[RawServer]],
) -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await raw.read_request(reader)
        writer.write(ok(b"first"))
        await writer.drain()
        # then close this connection, as a server's keep-alive timeout does

    raw = await serve(handler)
    pool = UpstreamPool()
    response = await pool.post(raw.url, b"a", {}, connect_timeout=2)
    assert await response.read() == b"first"
    pool.recycle(response)
    await asyncio.sleep(0.05)  # the server's close arrives while the connection is idle
    response = await pool.post(raw.url, b"b", {}, connect_timeout=2)
    assert await response.read() == b"first"
    assert raw.connections == 2
    await pool.close()


async def test_a_response_cut_short_is_an_error_and_never_resent(
    serve: Callable[[Handler], Awaitable[RawServer]],
) -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await raw.read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n" + chunk(b"data: 1"))
        await writer.drain()

    raw = await serve(handler)
    pool = UpstreamPool()
    response = await pool.post(raw.url, b"x", {}, connect_timeout=2)
    seen = []
    with pytest.raises(UpstreamError, match="closed the connection"):
        async for data in response.chunks():
            seen.append(data)
    assert seen == [b"data: 1"]
    assert len(raw.requests) == 1
    await pool.close()


async def test_chunks_are_handed_over_as_they_arrive(
    serve: Callable[[Handler], Awaitable[RawServer]],
) -> None:
    go_on = asyncio.Event()

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await raw.read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n" + chunk(b"one"))
        await writer.drain()
        await go_on.wait()
        writer.write(chunk(b"two") + b"0\r\n\r\n")
        await writer.drain()
        await reader.read()

    raw = await serve(handler)
    pool = UpstreamPool()
    response = await pool.post(raw.url, b"x", {}, connect_timeout=2)
    chunks = response.chunks()
    assert await asyncio.wait_for(anext(chunks), 2) == b"one"  # before "two" was even sent
    go_on.set()
    assert await anext(chunks) == b"two"
    with pytest.raises(StopAsyncIteration):
        await anext(chunks)
    assert response.at_eof()
    await pool.close()


async def test_a_slow_reader_pauses_the_socket_instead_of_buffering_everything(
    serve: Callable[[Handler], Awaitable[RawServer]],
) -> None:
    total = 64 * HIGH_WATER  # 16 MiB: more than the kernel's socket buffers on loopback hold
    sent = 0

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal sent
        await raw.read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n" % total)
        piece = b"x" * 65536
        while sent < total:
            writer.write(piece)
            sent += len(piece)
            await writer.drain()

    raw = await serve(handler)
    pool = UpstreamPool()
    response = await pool.post(raw.url, b"x", {}, connect_timeout=2)
    await asyncio.sleep(0.3)  # nobody reads: the client must stop reading the socket
    held = sum(len(c) for c in response._connection.chunks)
    assert held <= HIGH_WATER + 2 * 65536, held
    assert sent < total  # the server is held back by TCP, not by our memory
    assert len(await response.read()) == total
    assert response.at_eof()
    await pool.close()


async def test_a_body_delimited_by_the_connections_end(
    serve: Callable[[Handler], Awaitable[RawServer]],
) -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await raw.read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n\r\ndata: a\n\n")
        await writer.drain()

    raw = await serve(handler)
    pool = UpstreamPool()
    response = await pool.post(raw.url, b"x", {}, connect_timeout=2)
    assert response.content_type == "text/event-stream"
    assert await response.read() == b"data: a\n\n"
    pool.recycle(response)
    assert pool.connections == (0, 0)  # not reusable: it ended by closing
    await pool.close()


async def test_garbage_is_an_upstream_error(
    serve: Callable[[Handler], Awaitable[RawServer]],
) -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await raw.read_request(reader)
        writer.write(b"SSH-2.0-OpenSSH_9.6\r\n\r\n")
        await writer.drain()
        await reader.read()

    raw = await serve(handler)
    pool = UpstreamPool()
    with pytest.raises(UpstreamError, match="broke HTTP"):
        await pool.post(raw.url, b"x", {}, connect_timeout=2)
    await pool.close()


async def test_nothing_listening_is_an_os_error() -> None:
    from tests.services import free_port

    pool = UpstreamPool()
    with pytest.raises(OSError):
        await pool.post(f"http://127.0.0.1:{free_port()}/", b"x", {}, connect_timeout=2)
    await pool.close()

"""The upstream HTTP/1.1 client: pooled keep-alive connections, one write per request, and the
response body handed over chunk by chunk the moment it arrives.

Every token of every stream crosses this code, so it is built for that one job: a request is a
POST whose head and body go out in a single ``write``; the response is parsed by ``httptools``
(llhttp, the parser Node.js uses, in C), which also undoes chunked encoding; body chunks wait in a
small list until the relay asks for them, and reading pauses when a slow client lets more than
``HIGH_WATER`` bytes pile up, so nothing is buffered without bound. aiohttp, which this replaces on
the stream path, cost about a third of the gateway's CPU per streamed token in its request setup,
``StreamReader`` and flow-control layers (see BENCHMARKS.md), and 0.2 s of import at start-up.

What it does not do, because the upstreams are LLM APIs: redirects, cookies, proxies, HTTP/2,
compression (requests say ``accept-encoding: identity``), request bodies streamed in pieces.
A connection that the server closed while it sat idle is detected on reuse and the request is
sent again once on a new connection, but only when not a byte of the answer had arrived.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
import time
from collections.abc import AsyncIterator, Mapping
from typing import Any, cast
from urllib.parse import urlsplit

import httptools

HIGH_WATER = 256 * 1024  # bytes held for a slow reader before the socket stops being read
KEEPALIVE_SECONDS = 30.0  # an idle connection older than this is closed rather than reused

_ssl_context: ssl.SSLContext | None = None


def default_ssl_context() -> ssl.SSLContext:
    """The system's CA store, loaded once (it takes tens of milliseconds)."""
    global _ssl_context
    if _ssl_context is None:
        _ssl_context = ssl.create_default_context()
    return _ssl_context


class UpstreamError(ConnectionError):
    """The connection failed or the upstream broke the HTTP protocol."""


class ConnectTimeout(TimeoutError):
    """No connection within the provider's ``connect_timeout``."""


class _Origin:
    """Where requests go, parsed once per URL."""

    __slots__ = ("host", "host_header", "key", "path", "port", "tls")

    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"not an http(s) URL: {url!r}")
        self.tls = parts.scheme == "https"
        self.host = parts.hostname
        self.port = parts.port or (443 if self.tls else 80)
        default = (self.tls and self.port == 443) or (not self.tls and self.port == 80)
        host = f"[{self.host}]" if ":" in self.host else self.host
        self.host_header = host if default else f"{host}:{self.port}"
        self.path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        self.key = (parts.scheme, self.host, self.port)


class Response:
    """One upstream answer: status and headers once the head is in, then the body as it comes.

    ``chunks()`` yields whatever arrived since the last step, joined (never waiting for more).
    ``release()`` gives a fully read response's connection back to the pool; ``close()`` drops
    the connection, which is what tells the upstream to stop generating.
    """

    __slots__ = ("_connection", "headers", "next_chunk", "status")

    def __init__(self, connection: _Connection) -> None:
        self._connection = connection
        self.status = connection.status
        self.headers = connection.headers
        # What arrived since the last call, joined; None at the end. The relay's per-token
        # loop awaits it directly: one async generator less between a chunk and the client.
        self.next_chunk = connection.next_chunk

    @property
    def content_type(self) -> str:
        return self.headers.get("content-type", "").split(";")[0].strip().lower()

    def at_eof(self) -> bool:
        return self._connection.complete and not self._connection.chunks

    async def chunks(self) -> AsyncIterator[bytes]:
        connection = self._connection
        while True:
            data = await connection.next_chunk()
            if data is None:
                return
            yield data

    async def read(self, limit: int | None = None) -> bytes:
        """The body (at most ``limit`` bytes; the rest is left unread)."""
        out: list[bytes] = []
        size = 0
        async for data in self.chunks():
            out.append(data)
            size += len(data)
            if limit is not None and size >= limit:
                break
        body = b"".join(out)
        return body if limit is None else body[:limit]

    def forget_headers(self) -> None:
        """Drop the head's headers once nothing needs them: a stream that lasts minutes would
        hold them all along (an OpenAI answer's are 2-3 KB, rate-limit and tracing headers)."""
        self.headers = self._connection.headers = {}

    def fail(self, error: BaseException) -> None:
        """End the body with ``error`` (the idle watch's timeout)."""
        self._connection.fail(error)

    def release(self) -> None:
        self._connection.release()

    def close(self) -> None:
        self._connection.close()


class _Connection(asyncio.Protocol):
    """One keep-alive connection and the response being read on it. Every stream in flight holds
    one, so it has slots, and its body chunks wait in a list (an empty deque is 600 bytes)."""

    __slots__ = (
        "_buffered",
        "_error",
        "_framed",
        "_head",
        "_loop",
        "_parser",
        "_paused",
        "_pool",
        "_waiter",
        "chunks",
        "closed",
        "complete",
        "got_bytes",
        "headers",
        "headers_done",
        "idle_since",
        "keep_alive",
        "key",
        "status",
        "transport",
    )

    def __init__(self, pool: UpstreamPool, key: tuple[str, str, int]) -> None:
        self._pool = pool
        self.key = key
        self.transport: asyncio.Transport | None = None
        self._parser: httptools.HttpResponseParser | None = httptools.HttpResponseParser(self)
        self._loop = asyncio.get_running_loop()
        self.status = 0
        self.headers: dict[str, str] = {}
        self.chunks: list[bytes] = []
        self._buffered = 0
        self._paused = False
        self._head: asyncio.Future[None] | None = None
        self._waiter: asyncio.Future[None] | None = None
        self.complete = False
        self._error: BaseException | None = None
        self.closed = False
        self.got_bytes = False  # any byte of the current response (for the one safe resend)
        self.idle_since = 0.0
        self.keep_alive = True
        self.headers_done = False
        self._framed = True  # content-length or chunked: the body's end is known without a close

    # --- asyncio.Protocol -----------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def data_received(self, data: bytes) -> None:
        self.got_bytes = True
        assert self._parser is not None  # until the connection is lost
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self.fail(UpstreamError(f"the upstream broke HTTP/1.1: {exc}"))
            self.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._pool.forget(self)
        if not self.complete:
            if self.headers_done and not self._framed:
                self.on_message_complete()  # a body delimited by the connection's end
            else:
                reason = f": {exc}" if exc else ""
                self.fail(UpstreamError(f"the upstream closed the connection{reason}"))
        # The parser holds this protocol's callbacks and the transport holds the protocol: both
        # cycles are broken here, so a closed connection is freed at once, not by the next full
        # collection (an hour-long stream's connection is in the oldest generation by then).
        self._parser = None
        self.transport = None

    # --- httptools callbacks ---------------------------------------------------------------------

    def on_header(self, name: bytes, value: bytes) -> None:
        key = name.decode("latin-1").lower()
        text = value.decode("latin-1")
        previous = self.headers.get(key)
        self.headers[key] = text if previous is None else f"{previous}, {text}"

    def on_headers_complete(self) -> None:
        parser = self._parser
        assert parser is not None  # it is the one calling
        self.status = parser.get_status_code()
        self.headers_done = True
        self.keep_alive = parser.should_keep_alive()
        headers = self.headers
        self._framed = "content-length" in headers or "chunked" in headers.get(
            "transfer-encoding", ""
        )
        if self._head is not None and not self._head.done():
            self._head.set_result(None)

    def on_body(self, body: bytes) -> None:
        self.chunks.append(body)
        self._buffered += len(body)
        if self._buffered > HIGH_WATER and not self._paused and self.transport is not None:
            self._paused = True
            self.transport.pause_reading()
        self._wake()

    def on_message_complete(self) -> None:
        self.complete = True
        self._wake()

    # --- the request ------------------------------------------------------------------------------

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def fail(self, error: BaseException) -> None:
        if self._error is None:
            self._error = error
        if self._head is not None and not self._head.done():
            self._head.set_exception(error)
        self._wake()

    async def send(self, head: bytes, body: bytes) -> None:
        """Write the request and wait for the response head."""
        self.status, self.headers, self.headers_done, self.complete = 0, {}, False, False
        self._error, self.got_bytes = None, False
        self._parser = httptools.HttpResponseParser(self)
        self._head = self._loop.create_future()
        assert self.transport is not None
        self.transport.write(head + body)
        await self._head

    async def next_chunk(self) -> bytes | None:
        while not self.chunks:
            if self._error is not None:
                raise self._error
            if self.complete:
                return None
            self._waiter = self._loop.create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        chunks = self.chunks
        data = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        chunks.clear()
        self._buffered = 0
        if self._paused and self.transport is not None:
            self._paused = False
            self.transport.resume_reading()
        return data

    def release(self) -> None:
        """Back to the pool when the response is complete and the connection reusable."""
        if self.complete and self.keep_alive and not self.closed and self._error is None:
            self.idle_since = time.monotonic()
            self._pool.put(self)
        else:
            self.close()

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            if self.transport is not None:
                self.transport.abort()  # RST-free enough for loopback; no lingering half-close
            self._pool.forget(self)


class UpstreamPool:
    """The process's one upstream client: keep-alive connections per origin, reused newest
    first, with no limit on how many (the gateway limits streams itself)."""

    def __init__(self) -> None:
        self._idle: dict[tuple[str, str, int], list[_Connection]] = {}
        self._origins: dict[str, _Origin] = {}
        self._draining: set[asyncio.Task[None]] = set()
        self._open: set[_Connection] = set()

    @property
    def connections(self) -> tuple[int, int]:
        """(in use, idle), for metrics."""
        idle = sum(len(group) for group in self._idle.values())
        return len(self._open) - idle, idle

    def put(self, connection: _Connection) -> None:
        self._idle.setdefault(connection.key, []).append(connection)

    def forget(self, connection: _Connection) -> None:
        self._open.discard(connection)
        group = self._idle.get(connection.key)
        if group and connection in group:
            group.remove(connection)

    def _reuse(self, key: tuple[str, str, int]) -> _Connection | None:
        group = self._idle.get(key)
        now = time.monotonic()
        while group:
            connection = group.pop()
            if not connection.closed and now - connection.idle_since < KEEPALIVE_SECONDS:
                return connection
            connection.close()
        return None

    async def _connect(self, origin: _Origin, within: float) -> _Connection:
        loop = asyncio.get_running_loop()
        connection = _Connection(self, origin.key)
        options: dict[str, Any] = {}
        if origin.tls:
            options["ssl"] = default_ssl_context()
            options["server_hostname"] = origin.host
        try:
            async with asyncio.timeout(within):
                await loop.create_connection(
                    lambda: connection, origin.host, origin.port, **options
                )
        except TimeoutError:
            connection.close()
            raise ConnectTimeout(f"could not connect within {within:g}s") from None
        self._open.add(connection)
        return connection

    async def post(
        self, url: str, body: bytes, headers: Mapping[str, str], *, connect_timeout: float
    ) -> Response:
        """Send a POST and return once the response head is in."""
        origin = self._origins.get(url)
        if origin is None:
            origin = self._origins[url] = _Origin(url)
        lines = [f"POST {origin.path} HTTP/1.1\r\nhost: {origin.host_header}\r\n"]
        lines.extend(f"{name}: {value}\r\n" for name, value in headers.items())
        lines.append(f"content-length: {len(body)}\r\n\r\n")
        head = "".join(lines).encode("latin-1")
        connection = self._reuse(origin.key)
        if connection is not None:
            try:
                await connection.send(head, body)
                return Response(connection)
            except UpstreamError:
                connection.close()
                if connection.got_bytes:
                    raise
                # closed by the server while it sat idle: send again, once, on a new one
            except BaseException:  # cancelled while waiting for the head
                connection.close()
                raise
        connection = await self._connect(origin, connect_timeout)
        try:
            await connection.send(head, body)
        except BaseException:
            connection.close()
            raise
        return Response(connection)

    def recycle(self, response: Response) -> None:
        """Return a finished response's connection to the pool. The end of the body (the last
        chunk of a chunked response) often lands just after the final event; it is read in the
        background, off the client's path, rather than dropping a warm connection."""
        if response.at_eof():
            response.release()
        else:
            task = asyncio.create_task(_drain(response))
            self._draining.add(task)
            task.add_done_callback(self._draining.discard)

    async def close(self) -> None:
        for task in list(self._draining):
            task.cancel()
        for connection in list(self._open):
            connection.close()
        self._idle.clear()


async def _drain(response: Response, limit: int = 65_536) -> None:
    try:
        async with asyncio.timeout(1.0):
            async for data in response.chunks():
                limit -= len(data)
                if limit <= 0:
                    break
    except Exception:
        response.close()
        return
    if response.at_eof():
        response.release()
    else:
        response.close()

"""Attacks that once succeeded against a running gateway, kept as tests: memory exhaustion through
headers, slowloris (heads, bodies or nothing sent slowly), connection floods, invalid requests
that skipped the rate limit, IPv6 callers limited per address, errors in a generic shape.

Raw sockets on loopback where HTTP clients would not misbehave on purpose; every wait bounded.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import tempfile
import time
from collections.abc import AsyncIterator, Iterator, Mapping
from typing import Any

import aiohttp
import msgspec
import pytest
import uvicorn

from tests.servers import (
    RunningGateway,
    ServeProcess,
    _QuietServer,
    clean_environ,
    gateway_environ,
)
from tokenrelay.app import create_app
from tokenrelay.gate.gatekeeper import Gate, Rejected
from tokenrelay.gate.identity import Identity, ip_network_of
from tokenrelay.server import uvicorn_options
from tokenrelay.settings import load

pytestmark = pytest.mark.asyncio(loop_scope="session")

MB = 1024 * 1024


@contextlib.asynccontextmanager
async def edge_server(
    environ: Mapping[str, str], host: str = "127.0.0.1"
) -> AsyncIterator[RunningGateway]:
    """The gateway in-process under the uvicorn options ``tokenrelay serve`` uses (the edge
    protocol and its limits), on a loopback port of ``host``."""
    settings = load(environ=environ)
    app = create_app(settings)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, 0))
    port = sock.getsockname()[1]
    options = {**uvicorn_options(settings), "log_level": "warning"}
    server = _QuietServer(uvicorn.Config(app, **options))  # type: ignore[arg-type]
    task = asyncio.create_task(server.serve(sockets=[sock]))
    while not server.started:
        if task.done():
            task.result()
        await asyncio.sleep(0.005)
    running = RunningGateway(app, port)
    if family == socket.AF_INET6:
        running.url = f"http://[{host}]:{port}"
    running.server = server
    try:
        yield running
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 10)
        sock.close()


def environ(simulator: Any, **http: str) -> dict[str, str]:
    env = gateway_environ(simulator.url)
    for name, value in http.items():
        env[f"TOKENRELAY_HTTP__{name.upper()}"] = value
    return env


class Raw:
    """One raw TCP connection to the gateway, read from a thread-free asyncio stream."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def open(cls, port: int, host: str = "127.0.0.1") -> Raw:
        return cls(*await asyncio.open_connection(host, port))

    async def send(self, data: bytes) -> bool:
        """False when the server has closed the connection under us."""
        try:
            self.writer.write(data)
            await self.writer.drain()
        except (ConnectionError, OSError):
            return False
        return True

    async def answer(self, within: float) -> bytes:
        """Everything the server writes until it closes the connection (b"" for a close with
        no answer); fails after ``within`` seconds."""
        chunks = []
        async with asyncio.timeout(within):
            while True:
                try:
                    chunk = await self.reader.read(65536)
                except ConnectionError:
                    break
                if not chunk:
                    break
                chunks.append(chunk)
        return b"".join(chunks)

    def close(self) -> None:
        self.writer.close()


def parse(answer: bytes) -> tuple[int, dict[str, str], bytes]:
    head, _, body = answer.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return int(lines[0].split()[1]), headers, body


# --- 1. memory exhaustion through headers -------------------------------------------------------


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


@pytest.fixture(scope="module")
def served() -> Iterator[ServeProcess]:
    """``tokenrelay serve`` in a process of its own, so its memory is its own."""
    scratch = tempfile.mkdtemp(prefix="tokenrelay-edge-")
    env = clean_environ(TOKENRELAY_DATABASE_URL=f"sqlite:///{scratch}/edge.db")
    process = ServeProcess(env)
    yield process
    process.stop()


async def test_huge_headers_get_431_and_leave_memory_alone(served: ServeProcess) -> None:
    async with aiohttp.ClientSession() as http:
        for _ in range(3):  # warm: the pages, the first request's imports
            async with http.get(served.url + "/healthz") as response:
                assert response.status == 200
    before = rss_mb(served.proc.pid)
    statuses = []
    started = time.monotonic()
    for _ in range(10):  # the attack: ten anonymous requests, each with a 20 MB header
        raw = await Raw.open(served.port)
        head = b"POST /v1/messages HTTP/1.1\r\nhost: x\r\nx-big: "
        await raw.send(head + b"a" * (20 * MB) + b"\r\n\r\n")
        answer = await raw.answer(within=10)
        raw.close()
        statuses.append(parse(answer)[0] if answer else "closed")
    elapsed = time.monotonic() - started
    after = rss_mb(served.proc.pid)
    print(f"RSS {before:.1f} MB -> {after:.1f} MB after ten 20 MB headers ({elapsed:.2f} s)")
    assert set(statuses) <= {431, "closed"} and 431 in statuses, statuses
    assert after - before < 30, f"RSS grew from {before:.1f} to {after:.1f} MB"
    async with aiohttp.ClientSession() as http, http.get(served.url + "/healthz") as response:
        assert response.status == 200  # still serving


async def test_a_431_is_in_the_paths_dialect_and_normal_heads_pass(simulator: Any) -> None:
    async with edge_server(environ(simulator, max_header_bytes="4096", max_headers="20")) as gw:
        raw = await Raw.open(gw.port)
        await raw.send(b"POST /v1/messages HTTP/1.1\r\nhost: x\r\nx-big: " + b"a" * 5000 + b"\r\n")
        status, headers, body = parse(await raw.answer(within=5))
        assert status == 431 and headers["connection"] == "close"
        error = msgspec.json.decode(body)
        assert error["type"] == "error" and error["error"]["type"] == "request_too_large"
        assert "4096 bytes" in error["error"]["message"]

        raw = await Raw.open(gw.port)
        many = b"".join(b"x-h%d: v\r\n" % i for i in range(25))
        await raw.send(b"GET /v1/models HTTP/1.1\r\nhost: x\r\n" + many + b"\r\n")
        status, _, body = parse(await raw.answer(within=5))
        assert status == 431
        openai_error = msgspec.json.decode(body)["error"]  # the OpenAI shape under /v1
        assert "more than 20 headers" in openai_error["message"] and "param" in openai_error

        # Within the limits, in one write with a body: served as usual.
        async with aiohttp.ClientSession() as http:
            headers = {f"x-h{i}": "v" * 100 for i in range(10)}
            body_json = {"prompt": "hi " * 500, "route": "an"}
            async with http.post(
                gw.url + "/api/generate", json=body_json, headers=headers
            ) as response:
                assert response.status in (200, 413)  # the test routes cap bodies at 4 KiB
                await response.read()


# --- 2. slowloris -------------------------------------------------------------------------------


async def test_a_head_sent_byte_by_byte_is_cut_at_the_header_timeout(simulator: Any) -> None:
    async with edge_server(environ(simulator, header_timeout="1")) as gw:
        raw = await Raw.open(gw.port)
        opened = time.monotonic()
        head = b"POST /api/generate HTTP/1.1\r\nhost: x\r\n" + b"x-slow: " + b"a" * 200

        async def trickle() -> None:
            for byte in head:
                if not await raw.send(bytes([byte])):
                    return
                await asyncio.sleep(0.05)

        sender = asyncio.create_task(trickle())
        answer = await raw.answer(within=4)
        closed_after = time.monotonic() - opened
        sender.cancel()
        print(f"byte-by-byte head closed after {closed_after:.2f} s (header_timeout 1 s)")
        assert closed_after < 1 + 1.5
        status, _, body = parse(answer)
        assert status == 408
        error = msgspec.json.decode(body)["error"]  # /api/generate's shape
        assert error["type"] == "invalid_request" and "within 1 s" in error["message"]


async def test_idle_connections_are_closed(simulator: Any) -> None:
    env = environ(simulator, header_timeout="1", keep_alive_timeout="1")
    async with edge_server(env) as gw:
        # Nothing sent at all: closed at the header timeout, with no answer.
        raw = await Raw.open(gw.port)
        opened = time.monotonic()
        assert await raw.answer(within=4) == b""
        fresh = time.monotonic() - opened
        # A kept-alive connection after its answer: closed at the keep-alive timeout.
        raw = await Raw.open(gw.port)
        await raw.send(b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n")
        first = await raw.reader.readuntil(b"}")
        answered = time.monotonic()
        assert first.startswith(b"HTTP/1.1 200")
        assert await raw.answer(within=4) == b""
        kept = time.monotonic() - answered
        print(f"idle fresh connection closed after {fresh:.2f} s, kept-alive after {kept:.2f} s")
        assert 0.5 < fresh < 2.5 and 0.5 < kept < 2.5


async def test_a_slow_body_gets_408_in_the_dialect(simulator: Any) -> None:
    async with edge_server(environ(simulator, body_timeout="1")) as gw:
        raw = await Raw.open(gw.port)
        await raw.send(
            b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
            b'content-length: 100\r\n\r\n{"model"'
        )
        sent = time.monotonic()
        status, headers, body = parse(await raw.answer(within=4))
        waited = time.monotonic() - sent
        print(f"slow body answered 408 after {waited:.2f} s (body_timeout 1 s)")
        assert status == 408 and headers["connection"] == "close" and waited < 2.5
        error = msgspec.json.decode(body)["error"]
        assert "did not arrive within 1 s" in error["message"] and "code" in error
        # The body still trickling after an early answer (a 404 sent unread) is not waited for.
        raw = await Raw.open(gw.port)
        await raw.send(b"POST /nothing HTTP/1.1\r\nhost: x\r\ncontent-length: 100\r\n\r\n{")
        answer = await raw.answer(within=4)
        assert parse(answer)[0] == 404
        # Nor is a connection idle once the body of an early answer has ended.
        raw = await Raw.open(gw.port)
        await raw.send(b"POST /nothing HTTP/1.1\r\nhost: x\r\ncontent-length: 10\r\n\r\n")
        assert (await raw.reader.readuntil(b"}}")).startswith(b"HTTP/1.1 404")
        await raw.send(b"0123456789")  # the body's end: the request is complete, then idle
        ended = time.monotonic()
        assert await raw.answer(within=8) == b""
        idle = time.monotonic() - ended
        print(f"idle after an early answer and its body closed after {idle:.2f} s")
        assert idle < 5 + 1.5  # keep_alive_timeout + margin


async def test_connections_beyond_the_cap_are_closed_at_once(simulator: Any) -> None:
    async with edge_server(environ(simulator, max_connections="5")) as gw:
        held = [await Raw.open(gw.port) for _ in range(5)]
        await asyncio.sleep(0.1)
        extra = await Raw.open(gw.port)
        started = time.monotonic()
        assert await extra.answer(within=2) == b""  # closed before anything was read
        assert time.monotonic() - started < 1
        for raw in held:
            raw.close()
        await asyncio.sleep(0.2)
        async with aiohttp.ClientSession() as http, http.get(gw.url + "/healthz") as response:
            assert response.status == 200


# --- 3. invalid requests count against the limit, and a flood writes no rows -------------------


async def test_invalid_bodies_count_against_the_anonymous_limit(simulator: Any) -> None:
    env = {**environ(simulator), "TOKENRELAY_ANONYMOUS_LIMIT": "10/minute"}
    async with edge_server(env) as gw, aiohttp.ClientSession() as http:
        statuses = []
        for _ in range(30):
            async with http.post(gw.url + "/api/generate", json={"prompt": ""}) as response:
                statuses.append(response.status)
                await response.read()
        invalid = [status for status in statuses if status != 429]
        assert set(invalid) <= {400, 422} and len(invalid) <= 10, statuses
        assert statuses.count(429) >= 20
        await asyncio.sleep(0.1)
        # One ledger row (and audit line) per request the limit let through, each with the
        # caller's address; the refusals of the flood are counted in the metrics only.
        assert len(gw.records) == len(invalid)
        assert all(r.identity is not None and r.identity.ip == "127.0.0.1" for r in gw.records)
        async with http.get(gw.url + "/metrics") as response:
            exposition = await response.text()
        assert f'tokenrelay_rejections_total{{reason="rate_limit"}} {statuses.count(429)}' in (
            exposition
        )


async def test_bad_keys_are_counted_against_the_address(simulator: Any) -> None:
    env = {**environ(simulator), "TOKENRELAY_ANONYMOUS_LIMIT": "3/minute"}
    async with edge_server(env) as gw, aiohttp.ClientSession() as http:
        statuses = []
        for n in range(6):
            headers = {"authorization": f"Bearer trk_{n:040d}"}
            async with http.post(
                gw.url + "/api/generate", json={"prompt": "hi"}, headers=headers
            ) as response:
                statuses.append(response.status)
        assert statuses == [401, 401, 401, 429, 429, 429]
        assert [r.identity.ip for r in gw.records if r.identity] == ["127.0.0.1"] * 3


# --- 4. IPv6 callers are limited per /64 --------------------------------------------------------


async def test_ipv6_addresses_are_grouped_by_their_network() -> None:
    assert ip_network_of("2001:db8:1:2::1", 64) == ip_network_of("2001:db8:1:2:ffff::9", 64)
    assert ip_network_of("2001:db8:1:2::1", 64) == "2001:db8:1:2::/64"
    assert ip_network_of("2001:db8:1:3::1", 64) != ip_network_of("2001:db8:1:2::1", 64)
    assert ip_network_of("2001:db8:1:2::1", 128) is None  # per address, when configured
    assert ip_network_of("203.0.113.9", 64) is None  # IPv4 stays per address
    one = Identity("anonymous", "2001:db8::1", network=ip_network_of("2001:db8::1", 64))
    assert one.subject == "ip:2001:db8::/64"


async def test_two_addresses_of_one_64_share_the_anonymous_limit() -> None:
    scratch = tempfile.mkdtemp(prefix="tokenrelay-edge-")
    settings = load(
        environ={
            "TOKENRELAY_ANONYMOUS_LIMIT": "2/minute",
            "TOKENRELAY_DATABASE_URL": f"sqlite:///{scratch}/keys.db",
        }
    )
    gate = Gate.create(settings)
    try:
        await gate.admit_caller({}, "2001:db8:1:2::1")
        await gate.admit_caller({}, "2001:db8:1:2:aaaa::2")
        with pytest.raises(Rejected) as refused:
            await gate.admit_caller({}, "2001:db8:1:2:bbbb::3")
        assert refused.value.status == 429
        await gate.admit_caller({}, "2001:db8:1:3::1")  # the next /64 is someone else
        identity = (await gate.admit_caller({}, "2001:db8:1:3::2")).identity
        assert identity is not None and identity.ip == "2001:db8:1:3::2"  # recorded in full
    finally:
        await gate.close()


async def test_ipv6_loopback_end_to_end(simulator: Any) -> None:
    env = {**environ(simulator), "TOKENRELAY_ANONYMOUS_LIMIT": "2/minute"}
    try:
        server = edge_server(env, host="::1")
        gw = await server.__aenter__()
    except OSError:
        pytest.skip("no IPv6 loopback here")
    try:
        async with aiohttp.ClientSession() as http:
            statuses = []
            for _ in range(3):
                body = {"prompt": "hi", "route": "an"}
                async with http.post(gw.url + "/api/generate", json=body) as response:
                    statuses.append(response.status)
                    await response.read()
        assert statuses == [200, 200, 429]
        assert gw.records[0].identity is not None and gw.records[0].identity.ip == "::1"
    finally:
        await server.__aexit__(None, None, None)


# --- 5. every error in its path's dialect --------------------------------------------------------


async def test_errors_are_in_the_dialect_of_their_path(simulator: Any) -> None:
    async with edge_server(environ(simulator)) as gw, aiohttp.ClientSession() as http:

        async def answer(method: str, path: str) -> tuple[int, str, bytes]:
            async with http.request(method, gw.url + path) as response:
                return response.status, response.headers["content-type"], await response.read()

        for method, path, status in [
            ("POST", "/v1/messages/foo", 404),
            ("GET", "/v1/messages", 405),
            ("GET", "/v1/messages/batches", 404),
        ]:
            got, content_type, body = await answer(method, path)
            assert got == status and content_type == "application/json", path
            error = msgspec.json.decode(body)
            assert error["type"] == "error", body  # Anthropic's shape
            expected = "not_found_error" if status == 404 else "invalid_request_error"
            assert error["error"]["type"] == expected and path in error["error"]["message"]

        for method, path, status in [
            ("POST", "/v1/chat/completions/x", 404),
            ("GET", "/v1/chat/completions", 405),
            ("GET", "/v1/nothing", 404),
        ]:
            got, _, body = await answer(method, path)
            error = msgspec.json.decode(body)["error"]
            assert got == status and set(error) == {"message", "type", "param", "code"}, body
            assert error["type"] == "invalid_request_error" and error["code"] is None

        got, _, body = await answer("POST", "/api/generate/x")
        assert got == 404 and msgspec.json.decode(body)["error"]["type"] == "not_found"
        got, content_type, body = await answer("GET", "/api/chat")
        assert got == 405 and content_type.startswith("text/plain")  # useChat reads text
        assert b"GET is not allowed on /api/chat" in body

        # A body over the limit (413), from the relay, is in the dialect too.
        message = {"role": "user", "content": "x" * 9000}
        big = {"model": "an", "max_tokens": 5, "messages": [message]}
        async with http.post(gw.url + "/v1/messages", json=big) as response:
            error = msgspec.json.decode(await response.read())
        assert response.status == 413 and error["error"]["type"] == "request_too_large"


# --- 6. pages carry a policy and frame protection -------------------------------------------------


async def test_pages_carry_security_headers(simulator: Any) -> None:
    async with edge_server(environ(simulator)) as gw, aiohttp.ClientSession() as http:
        for path in ("/", "/usage"):
            async with http.get(gw.url + path) as response:
                headers = response.headers
                assert response.status == 200
            policy = headers["content-security-policy"]
            assert "'unsafe-inline'" not in policy and "'unsafe-eval'" not in policy
            assert "frame-ancestors 'none'" in policy and "script-src 'self'" in policy
            assert headers["x-frame-options"] == "DENY"
            assert headers["x-content-type-options"] == "nosniff"
            assert headers["referrer-policy"] == "no-referrer"
        async with http.get(gw.url + "/client.js") as response:
            assert response.headers["x-content-type-options"] == "nosniff"


async def test_a_websocket_handshake_under_the_serve_options_gets_426(simulator: Any) -> None:
    """``tokenrelay serve`` runs uvicorn with no WebSocket protocol (``ws="none"``, off the
    cold start), so a handshake on a relay path reaches the app as a GET and is refused with
    426, as Codex needs (see tokenrelay.upgrades), even where a WebSocket library is installed."""
    async with edge_server(environ(simulator)) as gw:
        raw = await Raw.open(gw.port)
        await raw.send(
            b"GET /v1/responses HTTP/1.1\r\nhost: x\r\nconnection: Upgrade\r\n"
            b"upgrade: websocket\r\n"
            b"sec-websocket-version: 13\r\nsec-websocket-key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
        )
        answer = await raw.answer(within=10)
    assert answer.startswith(b"HTTP/1.1 426 "), answer[:200]
    assert b"no WebSocket mode" in answer

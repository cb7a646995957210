"""One request and its response on a connection: the ASGI ``receive`` and ``send`` an app gets
(after uvicorn's ``RequestResponseCycle``, BSD-3-Clause, Copyright © 2017-present Encode OSS
Ltd.), slotted, with a fast path for body parts (a stream sends hundreds), a ``BODY_FOLLOWS``
head held until its first part so both leave in one write, and the client's disconnect told to a
callback (``types.ON_DISCONNECT``) rather than to a task waiting in ``receive``."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable
from typing import TYPE_CHECKING, Protocol

from tokenrelay.edge.head import encode_head
from tokenrelay.edge.signal import Signal
from tokenrelay.types import BODY_FOLLOWS, Message, Scope

if TYPE_CHECKING:
    from tokenrelay.types import ASGIApp

# uvicorn's logger, so an app's crash is logged where it always was.
log = logging.getLogger("uvicorn.error")

_DISCONNECT: Message = {"type": "http.disconnect"}
_FIVE_HUNDRED = (
    {
        "type": "http.response.start",
        "status": 500,
        "headers": [
            (b"content-type", b"text/plain; charset=utf-8"),
            (b"content-length", b"21"),
            (b"connection", b"close"),
        ],
    },
    {"type": "http.response.body", "body": b"Internal Server Error", "more_body": False},
)


class Connection(Protocol):
    """What a cycle needs of its connection (``protocol.EdgeProtocol``)."""

    transport: asyncio.Transport
    write_paused: bool

    @property
    def default_headers(self) -> list[tuple[bytes, bytes]]: ...

    def drain(self) -> Awaitable[None]: ...

    def resume_reading(self) -> None: ...

    def on_response_complete(self) -> None: ...


class Cycle:
    """A request's body as it arrives, and its response as the app sends it."""

    __slots__ = (
        "body",
        "chunked",
        "conn",
        "disconnected",
        "event",
        "expected",
        "head_only",
        "held",
        "keep_alive",
        "more_body",
        "on_gone",
        "response_complete",
        "response_started",
        "scope",
        "transport",
        "waiting_for_100",
    )

    def __init__(self, conn: Connection, scope: Scope, keep_alive: bool, expect_100: bool) -> None:
        self.conn = conn
        self.transport = conn.transport  # the connection's, for good
        self.scope = scope
        self.keep_alive = keep_alive
        self.waiting_for_100 = expect_100
        self.head_only = scope["method"] == "HEAD"
        self.event = Signal()  # a body part came, the body ended, or the client left
        self.disconnected = False
        self.body: bytes | bytearray = b""
        self.more_body = True
        self.response_started = False
        self.response_complete = False
        self.chunked = False
        self.expected = 0  # body bytes a Content-Length still promises
        self.held: Message | None = None  # a BODY_FOLLOWS head, until its first part
        self.on_gone: Callable[[], object] | None = None

    # --- the connection's side ---------------------------------------------------------------

    def add_body(self, data: bytes) -> int:
        """A part of the request body; returns how much is buffered, unread by the app."""
        body = self.body
        if not body:
            self.body = body = data
        elif type(body) is bytes:
            self.body = body = bytearray(body) + data
        else:
            body += data
        self.event.set()
        return len(body)

    def end_body(self) -> None:
        self.more_body = False
        self.event.set()

    def lost(self) -> None:
        """The connection is gone (or refused this request): ``receive`` says so, and the
        disconnect callback runs, when the response was not complete."""
        if not self.response_complete:
            self.disconnected = True
            callback, self.on_gone = self.on_gone, None
            if callback is not None:
                try:
                    callback()
                except Exception:
                    log.exception("a disconnect callback failed")
        self.event.set()

    def on_disconnect(self, callback: Callable[[], object]) -> None:
        """The ``ON_DISCONNECT`` scope extension: ``callback`` once, when the client leaves
        before the response completed (soon, when it already has)."""
        if self.disconnected:
            asyncio.get_running_loop().call_soon(callback)
        elif not self.response_complete:
            self.on_gone = callback

    # --- the app's side ----------------------------------------------------------------------

    async def run_asgi(self, app: ASGIApp) -> None:
        try:
            result: object = await app(self.scope, self.receive, self.send)  # type: ignore[func-returns-value]
        except BaseException as exc:
            log.error("Exception in ASGI application\n", exc_info=exc)
            if not self.response_started:
                await self.send_500_response()
            else:
                self.transport.close()
        else:
            if result is not None:
                log.error("ASGI callable should return None, but returned '%s'.", result)
                self.transport.close()
            elif not self.response_started and not self.disconnected:
                log.error("ASGI callable returned without starting response.")
                await self.send_500_response()
            elif not self.response_complete and not self.disconnected:
                log.error("ASGI callable returned without completing response.")
                self.transport.close()
        finally:
            self.on_gone = None

    async def send_500_response(self) -> None:
        for message in _FIVE_HUNDRED:
            await self.send(dict(message))

    async def receive(self) -> Message:
        if self.waiting_for_100 and not self.transport.is_closing():
            self.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")
            self.waiting_for_100 = False
        if not self.disconnected and not self.response_complete:
            self.conn.resume_reading()
            await self.event.wait()
            self.event.clear()
        if self.disconnected or self.response_complete:
            return dict(_DISCONNECT)
        body = self.body
        self.body = b""
        return {
            "type": "http.request",
            "body": body if type(body) is bytes else bytes(body),
            "more_body": self.more_body,
        }

    async def send(self, message: Message) -> None:
        conn = self.conn
        if conn.write_paused and not self.disconnected:
            await conn.drain()  # before a held head is taken: cancelled here, it stays held
        if self.disconnected:
            return
        kind = message["type"]
        if self.response_started:  # the fast path: a body part
            if self.response_complete:
                raise RuntimeError(
                    f"Unexpected ASGI message '{kind}' sent, after response already completed."
                )
            if kind != "http.response.body":
                raise RuntimeError(f"Expected ASGI message 'http.response.body', but got '{kind}'.")
            self._write_body(message.get("body", b""), message.get("more_body", False), b"")
            return
        held = self.held
        if held is not None:
            self.held = None
            if kind == "http.response.body":  # the head and its first part, one write
                self._write_body(
                    message.get("body", b""), message.get("more_body", False), self._start(held)
                )
                return
            # else a 500 in place of the held head
        if kind != "http.response.start":
            raise RuntimeError(f"Expected ASGI message 'http.response.start', but got '{kind}'.")
        if message.get(BODY_FOLLOWS):
            self.held = message
            return
        self.transport.write(self._start(message))

    def _start(self, message: Message) -> bytes:
        """The head's bytes; from here on the response is started."""
        self.response_started = True
        self.waiting_for_100 = False
        headers: Iterable[tuple[bytes, bytes]] = message.get("headers", ())
        head = encode_head(
            message["status"],
            headers,
            self.conn.default_headers,
            self.keep_alive,
            not self.head_only,
        )
        self.chunked = head.chunked
        self.expected = head.content_length
        self.keep_alive = head.keep_alive
        return head.data

    def _write_body(self, body: bytes, more_body: bool, head: bytes) -> None:
        transport = self.transport
        if self.head_only:  # a HEAD request's answer: the head alone
            self.expected = 0
            if head:
                transport.write(head)
        elif self.chunked:
            if body:
                end = b"\r\n" if more_body else b"\r\n0\r\n\r\n"
                transport.write(b"%s%x\r\n%s%s" % (head, len(body), body, end))
            elif not more_body:
                transport.write(head + b"0\r\n\r\n")
            elif head:
                transport.write(head)
        else:
            size = len(body)
            if size > self.expected:
                raise RuntimeError("Response content longer than Content-Length")
            self.expected -= size
            transport.write(head + body if head else body)
        if not more_body:
            if self.expected != 0:
                raise RuntimeError("Response content shorter than Content-Length")
            self.response_complete = True
            self.on_gone = None
            self.event.set()
            if not self.keep_alive:
                transport.close()
            self.conn.on_response_complete()

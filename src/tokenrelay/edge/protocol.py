"""Our HTTP/1.1 server protocol on httptools (cut down from uvicorn's ``httptools_impl``,
BSD-3-Clause, Copyright © 2017-present Encode OSS Ltd.), bounded in everything a client controls
before the app sees its request. uvicorn's ``Server`` runs it (its config, lifespan, signals and
``server_state`` bookkeeping: ``connections``, ``tasks``, ``shutdown()`` on a drain).

uvicorn's own protocol keeps no limit on a request head (llhttp hands header bytes to httptools,
which keeps them until the header ends: ten 20 MB headers held 250 MB), and arms no timer until
a first response is sent, so a connection that sends nothing, or its head or body a byte at a
time, is held forever. Here:

- the head (request line and headers) is counted as its bytes arrive, before the parser keeps
  them: beyond ``max_header_bytes`` bytes or ``max_headers`` headers the answer is a 431 and the
  connection is closed;
- the head must be complete ``header_timeout`` seconds after the connection opened or the next
  request's first byte arrived, and the body ``body_timeout`` seconds after its head: else a 408
  (or, when an answer was already sent, a plain close);
- an idle kept-alive connection closes after ``keep_alive_timeout``;
- beyond ``max_connections`` open connections in this process a new one is closed at once,
  before anything is read from it; after any refusal what the client still sends is read and
  dropped for a while (closing with unread bytes would reset the connection, and the client
  would lose the answer).

Errors written here are in the dialect of the request's path (``tokenrelay.path_errors``). The
rest is HTTP/1.1 as the gateway needs it: pipelining (one request at a time), keep-alive,
Expect: 100-continue, HEAD, request bodies with read flow control, write flow control (a send
waits only while the transport is paused). No WebSocket: a handshake reaches the app as a GET
(answered 426, ``tokenrelay.upgrades``). Per connection: slots only, the config's parts shared.
"""

from __future__ import annotations

import asyncio
import logging
import urllib.parse
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import httptools

from tokenrelay.edge.cycle import Cycle
from tokenrelay.edge.refusal import (
    Refusal,
    RefusedConnections,
    refusal_bytes,
    too_large_head,
    too_many_headers,
    too_slow,
)
from tokenrelay.edge.site import Site
from tokenrelay.model import GatewayError
from tokenrelay.types import ON_DISCONNECT

if TYPE_CHECKING:
    from uvicorn.config import Config
    from uvicorn.server import ServerState

log = logging.getLogger("uvicorn.error")

_LINGER = 2.0  # seconds a refused connection's further bytes are read and dropped
_HIGH_WATER = 65_536  # request body bytes buffered before reading pauses


class EdgeProtocol(asyncio.Protocol):
    """One client connection: the bounds of the module's docstring, then ASGI cycles."""

    __slots__ = (
        "client",
        "cycle",
        "deadline",
        "expect_100",
        "head_bytes",
        "header_count",
        "headers",
        "in_head",
        "keep_alive_timer",
        "lingering",
        "parser",
        "pipeline",
        "read_paused",
        "scheme",
        "scope",
        "server",
        "site",
        "transport",
        "url",
        "writable",
        "write_paused",
    )

    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        self.site = Site.of(config, server_state, app_state, _loop)
        self.transport: asyncio.Transport = None  # type: ignore[assignment]
        self.parser: httptools.HttpRequestParser | None = None
        self.server: tuple[str, int] | None = None
        self.client: tuple[str, int] | None = None
        self.scheme = "http"
        self.cycle: Cycle | None = None
        self.pipeline: list[tuple[Cycle, Any]] | None = None  # waiting behind ``cycle``
        self.scope: dict[str, Any] = None  # type: ignore[assignment]
        self.headers: list[tuple[bytes, bytes]] = []
        self.url = b""
        self.expect_100 = False
        self.in_head = True  # between requests too: the next bytes begin a head
        self.head_bytes = 0
        self.header_count = 0
        self.deadline: asyncio.TimerHandle | None = None  # the head's or the body's
        self.keep_alive_timer: asyncio.TimerHandle | None = None
        self.lingering = False  # answered with a refusal: the rest is dropped, then closed
        self.read_paused = False
        self.write_paused = False
        self.writable: asyncio.Future[None] | None = None  # awaited while writes are paused

    # --- connection --------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        site = self.site
        self.transport = transport  # type: ignore[assignment]
        if len(site.connections) >= site.limits.max_connections:
            RefusedConnections.note(site.limits.max_connections)
            transport.close()
            return
        site.connections.add(self)  # type: ignore[arg-type]  # (uvicorn types its own)
        parser = self.parser = httptools.HttpRequestParser(self)
        parser.set_dangerous_leniencies(lenient_data_after_close=True)
        self.server = _address(transport.get_extra_info("sockname"))
        self.client = _address(transport.get_extra_info("peername"))
        if transport.get_extra_info("sslcontext"):
            self.scheme = "https"
        self._arm(site.limits.header_timeout, self._head_timed_out)

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        if self.parser is None:  # refused at the cap: nothing was set up
            return
        self.site.connections.discard(self)
        cycle = self.cycle
        if cycle is not None:
            cycle.lost()
        self.resume_writing()
        if exc is None:
            self.transport.close()
            self._unset_keep_alive()
        self.parser = None

    def eof_received(self) -> None:
        pass

    def data_received(self, data: bytes) -> None:
        if self.lingering:
            return
        if self.keep_alive_timer is not None:
            self._unset_keep_alive()
        if self.in_head:
            room = self.site.max_head - self.head_bytes
            if len(data) > room:
                # Feed no more than the head may hold: either it ends within, or it is too big.
                self.head_bytes += room
                if not self._feed(data[:room]):
                    return
                if self.in_head:
                    self._refuse(too_large_head(self.site.limits))
                    return
                data = data[room:]
            else:
                self.head_bytes += len(data)
        if not self._feed(data) or self.deadline is not None:
            return
        # What is still incomplete after this chunk gets its timer (a request that arrives in
        # one piece, the common case, never needs one).
        if not self.in_head:
            self._arm(self.site.limits.body_timeout, self._body_timed_out)
        elif self.head_bytes and self._idle():
            self._arm(self.site.limits.header_timeout, self._head_timed_out)

    def _feed(self, data: bytes) -> bool:
        """``data`` to the parser; False when the connection was answered and is closing."""
        try:
            self.parser.feed_data(data)  # type: ignore[union-attr]
        except httptools.HttpParserCallbackError as exc:
            refusal = exc.__context__
            if isinstance(refusal, Refusal):
                self._refuse(refusal.error)
            else:
                log.warning("Invalid HTTP request received.", exc_info=refusal)
                self._refuse(GatewayError("invalid_request", "Invalid HTTP request received.", 400))
            return False
        except httptools.HttpParserError as exc:
            self._refuse(
                GatewayError("invalid_request", f"Invalid HTTP request received ({exc}).", 400)
            )
            return False
        except httptools.HttpParserUpgrade:
            # The request went to the app as it is (a WebSocket handshake is answered 426 by
            # ``upgrades``, not warned about per connection: Codex tries one per session); what
            # followed it on the connection is not parsed.
            if _upgrade_of(self.headers) != b"websocket":
                log.warning("Unsupported upgrade request.")
        return True

    def shutdown(self) -> None:
        """uvicorn's drain: an idle connection closes now, a busy one after its response."""
        cycle = self.cycle
        if cycle is None or cycle.response_complete:
            self.transport.close()
        else:
            cycle.keep_alive = False

    # --- flow control ------------------------------------------------------------------------

    def pause_writing(self) -> None:
        self.write_paused = True

    def resume_writing(self) -> None:
        self.write_paused = False
        writable = self.writable
        if writable is not None:
            self.writable = None
            if not writable.done():
                writable.set_result(None)

    async def drain(self) -> None:
        """Until the transport takes writes again (or the connection is gone)."""
        if not self.write_paused:
            return
        writable = self.writable
        if writable is None or writable.done():
            writable = self.writable = self.site.loop.create_future()
        await asyncio.shield(writable)

    def pause_reading(self) -> None:
        if not self.read_paused:
            self.read_paused = True
            self.transport.pause_reading()

    def resume_reading(self) -> None:
        if self.read_paused:
            self.read_paused = False
            self.transport.resume_reading()

    @property
    def default_headers(self) -> list[tuple[bytes, bytes]]:
        return self.site.server_state.default_headers

    # --- parser callbacks --------------------------------------------------------------------

    def on_message_begin(self) -> None:
        site = self.site
        self.url = b""
        self.expect_100 = False
        self.headers = []
        # Every key at once (those of the head's end filled in then): one allocation, no resize.
        self.scope = {
            "type": "http",
            "asgi": site.asgi,
            "http_version": "1.1",
            "server": self.server,
            "client": self.client,
            "scheme": self.scheme,
            "method": "GET",
            "root_path": site.root_path,
            "path": "/",
            "raw_path": b"/",
            "query_string": b"",
            "headers": self.headers,
            "state": site.app_state.copy(),
            "extensions": None,
        }

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self.header_count += 1
        if self.header_count > self.site.max_headers:
            raise Refusal(too_many_headers(self.site.max_headers))
        name = name.lower()
        if name == b"expect" and value.lower() == b"100-continue":
            self.expect_100 = True
        self.headers.append((name, value))

    def on_headers_complete(self) -> None:
        self.in_head = False
        self.head_bytes = self.header_count = 0
        if self.deadline is not None:
            self._disarm()
        parser = self.parser
        assert parser is not None
        site = self.site
        scope = self.scope
        http_version = parser.get_http_version()
        if http_version != "1.1":
            scope["http_version"] = http_version
        scope["method"] = parser.get_method().decode("ascii")
        raw_path = httptools.parse_url(self.url)
        path_bytes = raw_path.path
        path = path_bytes.decode("ascii")
        if "%" in path:
            path = urllib.parse.unquote(path)
        scope["path"] = site.root_path + path
        scope["raw_path"] = site.raw_root_path + path_bytes
        scope["query_string"] = raw_path.query or b""
        keep_alive = http_version != "1.0" and parser.should_keep_alive()
        cycle = Cycle(self, scope, keep_alive, self.expect_100)
        scope["extensions"] = {ON_DISCONNECT: cycle.on_disconnect}
        app = site.app_for(self)
        previous, self.cycle = self.cycle, cycle
        if previous is None or previous.response_complete:
            self._start(cycle, app)
        else:  # pipelined: waits for the answer before it, reading pauses meanwhile
            self.pause_reading()
            if self.pipeline is None:
                self.pipeline = []
            self.pipeline.insert(0, (cycle, app))

    def on_body(self, body: bytes) -> None:
        cycle = self.cycle
        if cycle is None or cycle.response_complete:
            return
        if cycle.add_body(body) > _HIGH_WATER:
            self.pause_reading()

    def on_message_complete(self) -> None:
        if self.deadline is not None:
            self._disarm()
        self.in_head = True
        cycle = self.cycle
        if cycle is None or cycle.response_complete:
            if cycle is not None and not self.transport.is_closing():
                # Answered before its body ended (a 429 or 404 sent unread): the keep-alive
                # timer went with the body's bytes, so the idle time is counted here.
                self._arm(self.site.limits.keep_alive_timeout, self._head_timed_out)
            return
        cycle.end_body()

    def _start(self, cycle: Cycle, app: Any) -> None:
        tasks = self.site.tasks
        task = self.site.loop.create_task(cycle.run_asgi(app))
        task.add_done_callback(tasks.discard)
        tasks.add(task)

    def on_response_complete(self) -> None:
        site = self.site
        site.server_state.total_requests += 1
        if self.transport.is_closing():
            return
        self._unset_keep_alive()
        self.resume_reading()
        if self.pipeline:
            cycle, app = self.pipeline.pop()
            if not self.pipeline:
                self.pipeline = None
            self._start(cycle, app)
        else:
            self.keep_alive_timer = site.loop.call_later(
                site.keep_alive_timeout, self._keep_alive_over
            )
        # Part of the next head came while this answer was being written: its time runs now.
        if self.in_head and self.head_bytes and self.deadline is None:
            self._arm(site.limits.header_timeout, self._head_timed_out)

    # --- timers ------------------------------------------------------------------------------

    def _idle(self) -> bool:
        """No request is being answered (a head arriving then is the next request's)."""
        return self.cycle is None or self.cycle.response_complete

    def _arm(self, seconds: float, handler: Callable[[], object]) -> None:
        self._disarm()
        self.deadline = self.site.loop.call_later(seconds, handler)

    def _disarm(self) -> None:
        if self.deadline is not None:
            self.deadline.cancel()
            self.deadline = None

    def _unset_keep_alive(self) -> None:
        if self.keep_alive_timer is not None:
            self.keep_alive_timer.cancel()
            self.keep_alive_timer = None

    def _keep_alive_over(self) -> None:
        self.keep_alive_timer = None
        if not self.transport.is_closing():
            self.transport.close()

    def _head_timed_out(self) -> None:
        self.deadline = None
        if self.transport.is_closing() or not self.in_head or not self._idle():
            return
        if not self.head_bytes:  # nothing of a request came: an idle connection
            self.transport.close()
            return
        self._refuse(too_slow("the request's headers", self.site.limits.header_timeout))

    def _body_timed_out(self) -> None:
        self.deadline = None
        cycle = self.cycle
        if self.transport.is_closing() or cycle is None:
            return
        if self.pipeline:  # queued behind an answer being written: its time starts later
            self._arm(self.site.limits.body_timeout, self._body_timed_out)
            return
        if cycle.response_started:  # answered already; the body's rest is not waited for
            self.transport.close()
            return
        self._refuse(too_slow("the request body", self.site.limits.body_timeout))

    # --- answers -----------------------------------------------------------------------------

    def _refuse(self, error: GatewayError) -> None:
        """Answer ``error`` in the path's dialect and close: the app never sees this request
        (or, for a slow body, stops waiting for it)."""
        self._disarm()
        cycle = self.cycle
        if cycle is not None and not cycle.response_complete:
            if cycle.response_started:  # an answer is on the wire: no room for another
                self.transport.close()
                return
            cycle.lost()  # the app's receive() now says the client is gone
        transport = self.transport
        transport.write(refusal_bytes(self.url, error, self.default_headers))
        if not transport.can_write_eof():
            transport.close()
            return
        transport.write_eof()
        self.lingering = True
        self.deadline = self.site.loop.call_later(_LINGER, transport.close)


def _address(info: Any) -> tuple[str, int] | None:
    """``(host, port)`` of a socket address (None for a Unix socket's)."""
    if isinstance(info, (list, tuple)) and len(info) >= 2:
        return str(info[0]), int(info[1])
    return None


def _upgrade_of(headers: list[tuple[bytes, bytes]]) -> bytes | None:
    connection: list[bytes] = []
    upgrade = None
    for name, value in headers:
        if name == b"connection":
            connection = [token.lower().strip() for token in value.split(b",")]
        elif name == b"upgrade":
            upgrade = value.lower()
    return upgrade if b"upgrade" in connection else None

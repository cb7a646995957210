"""The HTTP edge: uvicorn's httptools protocol, bounded in everything a client controls before
the app sees its request.

uvicorn's httptools protocol keeps no limit on a request head (llhttp hands header bytes to
httptools, which keeps them until the header ends: ten 20 MB headers held 250 MB), and arms no
timer until a first response is sent, so a connection that sends nothing, or its head or body a
byte at a time, is held forever. Here:

- the head (request line and headers) is counted as its bytes arrive, before the parser keeps
  them: beyond ``max_header_bytes`` bytes or ``max_headers`` headers the answer is a 431 and the
  connection is closed;
- the head must be complete ``header_timeout`` seconds after the connection opened or the next
  request's first byte arrived, and the body ``body_timeout`` seconds after its head: else a 408
  (or, when an answer was already sent, a plain close);
- an idle kept-alive connection closes after ``keep_alive_timeout`` (uvicorn's own timer);
- beyond ``max_connections`` open connections in this process a new one is closed at once,
  before anything is read from it.

And one saving: a response head marked ``BODY_FOLLOWS`` (a stream's, sent with its first token
ready) goes out with its first body part in one ``write``, one syscall and one TCP segment
instead of two.

Errors written here are in the dialect of the request's path (``tokenrelay.path_errors``).
"""

from __future__ import annotations

import asyncio
import http
import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import httptools
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol, RequestResponseCycle

from tokenrelay.edge_slim import LazyFlowControl, Pipeline, Signal
from tokenrelay.http_limits import HttpSettings
from tokenrelay.model import GatewayError
from tokenrelay.types import BODY_FOLLOWS, Message

if TYPE_CHECKING:
    from uvicorn.config import Config
    from uvicorn.server import ServerState

log = logging.getLogger("tokenrelay.http")

_LOG_EVERY = 10.0  # seconds between two warnings about refused connections
# After a refusal, what the client still sends is read and dropped this long before the close:
# closing with unread bytes would reset the connection, and the client would lose the answer.
_LINGER = 2.0


class _Refusal(Exception):
    """Raised from a parser callback to stop parsing; the protocol answers with ``error``."""

    def __init__(self, error: GatewayError) -> None:
        super().__init__(error.message)
        self.error = error


def _settings_of(config: Config) -> HttpSettings:
    """The gateway's ``http`` settings, found once per uvicorn config; defaults for an app
    that is not a gateway."""
    found: HttpSettings | None = getattr(config, "_tokenrelay_http", None)
    if found is None:
        from tokenrelay.server import find_gateway

        gateway = find_gateway(config.loaded_app)
        found = gateway.settings.http if gateway is not None else HttpSettings()
        config._tokenrelay_http = found  # type: ignore[attr-defined]
    return found


class _RefusedConnections:
    """Counts connections refused at the cap, and says so in the log now and then."""

    count = 0
    logged_at = 0.0

    @classmethod
    def note(cls, cap: int) -> None:
        cls.count += 1
        now = time.monotonic()
        if now - cls.logged_at >= _LOG_EVERY:
            log.warning(
                "%d connection(s) refused: this process holds its maximum of %d "
                "(http.max_connections)",
                cls.count,
                cap,
            )
            cls.count, cls.logged_at = 0, now


class EdgeProtocol(HttpToolsProtocol):
    """``HttpToolsProtocol`` with the bounds of the module's docstring."""

    # Its own attributes in slots: the instance dict uvicorn's fill (about 40 keys) then stays
    # at its size instead of doubling, 1.5 KB less on every open connection.
    __slots__ = (
        "_deadline",
        "_head_bytes",
        "_header_count",
        "_in_head",
        "_lingering",
        "_max_head",
        "_max_headers",
        "limits",
    )

    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        self.pipeline = Pipeline()  # type: ignore[assignment]  # (edge_slim: no empty deque)
        self.limits = _settings_of(config)
        self._max_head = self.limits.max_header_bytes
        self._max_headers = self.limits.max_headers
        self.url = b""
        self._in_head = True  # between requests too: the next bytes begin a head
        self._head_bytes = 0
        self._header_count = 0
        self._deadline: asyncio.TimerHandle | None = None
        self._lingering = False  # answered with a refusal: the rest is dropped, then closed

    # --- connection --------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        if len(self.connections) >= self.limits.max_connections:
            self.transport = transport  # type: ignore[assignment]
            _RefusedConnections.note(self.limits.max_connections)
            transport.close()
            return
        super().connection_made(transport)  # type: ignore[arg-type]
        self.flow = LazyFlowControl(transport)  # type: ignore[arg-type]  # (edge_slim)
        self._arm(self.limits.header_timeout, self._head_timed_out)

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        if self.flow is None:  # refused at the cap: nothing was set up
            self.parser = None
            return
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._lingering:
            return
        self._unset_keepalive_if_required()
        if self._in_head:
            room = self._max_head - self._head_bytes
            if len(data) > room:
                # Feed no more than the head may hold: either it ends within, or it is too big.
                self._head_bytes += room
                if not self._feed(data[:room]):
                    return
                if self._in_head:
                    self._refuse(_too_large_head(self.limits))
                    return
                data = data[room:]
            else:
                self._head_bytes += len(data)
        if not self._feed(data) or self._deadline is not None:
            return
        # What is still incomplete after this chunk gets its timer (a request that arrives in
        # one piece, the common case, never needs one).
        if not self._in_head:
            self._arm(self.limits.body_timeout, self._body_timed_out)
        elif self._head_bytes and self._idle():
            self._arm(self.limits.header_timeout, self._head_timed_out)

    def _feed(self, data: bytes) -> bool:
        """``data`` to the parser; False when the connection was answered and is closing."""
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserCallbackError as exc:
            refusal = exc.__context__
            if isinstance(refusal, _Refusal):
                self._refuse(refusal.error)
            else:
                self.send_400_response("Invalid HTTP request received.")
            return False
        except httptools.HttpParserError as exc:
            self.send_400_response(f"Invalid HTTP request received ({exc}).")
            return False
        except httptools.HttpParserUpgrade:
            if self._should_upgrade():
                self.handle_websocket_upgrade()
            elif self._get_upgrade() != b"websocket":
                self._unsupported_upgrade_warning()
            # else: a WebSocket handshake goes to the app as a GET, answered 426 (``upgrades``),
            # not warned about per connection (Codex tries one per session)
        return True

    # --- parser callbacks --------------------------------------------------------------------

    def on_header(self, name: bytes, value: bytes) -> None:
        self._header_count += 1
        if self._header_count > self._max_headers:
            raise _Refusal(
                GatewayError(
                    "request_too_large",
                    f"the request has more than {self._max_headers} headers; send fewer",
                    431,
                )
            )
        # uvicorn's own, inlined: this runs for every header.
        name = name.lower()
        if name == b"expect" and value.lower() == b"100-continue":
            self.expect_100_continue = True
        self.headers.append((name, value))

    def on_headers_complete(self) -> None:
        self._in_head = False
        self._head_bytes = self._header_count = 0
        if self._deadline is not None:
            self._disarm()
        super().on_headers_complete()
        cycle = self.cycle
        if type(cycle) is RequestResponseCycle:  # its task has not run yet: send is looked up
            cycle.__class__ = HeadWithBody
        # its message Event, lighter (edge_slim); nothing waits on it yet
        if cycle is not None and type(cycle.message_event) is asyncio.Event:
            signal = Signal()
            if cycle.message_event.is_set():
                signal.set()
            cycle.message_event = signal  # type: ignore[assignment]

    def on_message_complete(self) -> None:
        if self._deadline is not None:
            self._disarm()
        self._in_head = True
        super().on_message_complete()
        cycle = self.cycle  # None when uvicorn handed the request on as an upgrade
        if cycle is not None and cycle.response_complete and not self.transport.is_closing():
            # Answered before its body ended (a 429 or 404 sent unread): uvicorn's keep-alive
            # timer went with the body's bytes, so the idle time is counted here.
            self._arm(self.limits.keep_alive_timeout, self._head_timed_out)

    def on_response_complete(self) -> None:
        super().on_response_complete()
        # Part of the next head came while this answer was being written: its time runs now.
        if self._in_head and self._head_bytes and self._deadline is None:
            self._arm(self.limits.header_timeout, self._head_timed_out)

    # --- timers ------------------------------------------------------------------------------

    def _idle(self) -> bool:
        """No request is being answered (a head arriving then is the next request's)."""
        return self.cycle is None or self.cycle.response_complete

    def _arm(self, seconds: float, handler: Callable[[], object]) -> None:
        self._disarm()
        self._deadline = self.loop.call_later(seconds, handler)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _head_timed_out(self) -> None:
        self._deadline = None
        if self.transport.is_closing() or not self._in_head or not self._idle():
            return
        if not self._head_bytes:  # nothing of a request came: an idle connection
            self.transport.close()
            return
        timeout = self.limits.header_timeout
        self._refuse(
            # A client too slow: its request's fault (a "timeout" type would read as ours).
            GatewayError(
                "invalid_request", f"the request's headers did not arrive within {timeout:g} s", 408
            )
        )

    def _body_timed_out(self) -> None:
        self._deadline = None
        cycle = self.cycle
        if self.transport.is_closing() or cycle is None:
            return
        if self.pipeline:  # queued behind an answer being written: its time starts later
            self._arm(self.limits.body_timeout, self._body_timed_out)
            return
        if cycle.response_started:  # answered already; the body's rest is not waited for
            self.transport.close()
            return
        timeout = self.limits.body_timeout
        self._refuse(
            GatewayError(
                "invalid_request", f"the request body did not arrive within {timeout:g} s", 408
            )
        )

    # --- answers -----------------------------------------------------------------------------

    def send_400_response(self, msg: str) -> None:
        self._refuse(GatewayError("invalid_request", msg, 400))

    def _refuse(self, error: GatewayError) -> None:
        """Answer ``error`` in the path's dialect and close: the app never sees this request
        (or, for a slow body, stops waiting for it)."""
        from tokenrelay.path_errors import render

        self._disarm()
        cycle = self.cycle
        if cycle is not None and not cycle.response_complete:
            if cycle.response_started:  # an answer is on the wire: no room for another
                self.transport.close()
                return
            cycle.disconnected = True  # the app's receive() now says the client is gone
            cycle.message_event.set()
        content_type, body = render(_path_of(self.url), error)
        reason = http.HTTPStatus(error.status).phrase.encode()
        head = [b"HTTP/1.1 %d %s\r\n" % (error.status, reason)]
        for name, value in self.server_state.default_headers:
            head.append(b"%s: %s\r\n" % (name, value))
        head.append(
            b"content-type: %s\r\ncontent-length: %d\r\nx-tokenrelay-error-type: %s\r\n"
            b"connection: close\r\n\r\n" % (content_type, len(body), error.type.encode())
        )
        self.transport.write(b"".join(head) + body)
        if not self.transport.can_write_eof():
            self.transport.close()
            return
        self.transport.write_eof()
        self._lingering = True
        self._deadline = self.loop.call_later(_LINGER, self.transport.close)


class HeadWithBody(RequestResponseCycle):
    """uvicorn's request cycle, holding a ``BODY_FOLLOWS`` head until the first body part so
    both leave in one write (the ASGI spec lets a server hold a head until its body)."""

    _held: Message | None = None

    async def send(self, message: Message) -> None:  # type: ignore[override]
        held = self._held
        if held is not None:
            if self.flow.write_paused and not self.disconnected:
                await self.flow.drain()  # before the head is taken: cancelled here, it stays held
            self._held = None
            if message["type"] == "http.response.start":  # a 500 in place of the held head
                await super().send(message)  # type: ignore[arg-type]
                return
            transport = self.transport
            batch = self.transport = _Batch(transport)  # type: ignore[assignment]
            try:
                await super().send(held)  # type: ignore[arg-type]
                await super().send(message)  # type: ignore[arg-type]
            finally:
                self.transport = transport
                batch.flush()
            return
        if message.get(BODY_FOLLOWS) and not self.response_started and not self.disconnected:
            self._held = message
            return
        await super().send(message)  # type: ignore[arg-type]


class _Batch:
    """Stands in for the transport while a held head and its first body part are written."""

    __slots__ = ("parts", "transport")

    def __init__(self, transport: asyncio.Transport) -> None:
        self.transport = transport
        self.parts: list[bytes] = []

    def write(self, data: bytes) -> None:
        self.parts.append(data)

    def flush(self) -> None:
        if self.parts:
            self.transport.write(b"".join(self.parts))
            self.parts = []

    def close(self) -> None:  # a response that ends its connection: written, then closed
        self.flush()
        self.transport.close()

    def is_closing(self) -> bool:
        return self.transport.is_closing()


def _too_large_head(limits: HttpSettings) -> GatewayError:
    return GatewayError(
        "request_too_large",
        f"the request's headers are larger than {limits.max_header_bytes} bytes; send less",
        431,
    )


def _path_of(url: bytes) -> str:
    """The path of a request target as far as it arrived (the dialect of its error)."""
    target = url.split(b"?", 1)[0]
    if target.startswith(b"/"):
        return target.decode("latin-1")
    try:
        return (httptools.parse_url(url).path or b"/").decode("latin-1")
    except httptools.HttpParserInvalidURLError:
        return "/"

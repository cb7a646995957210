"""What the edge answers on its own, before (or instead of) the app: a refusal in the dialect of
the request's path (``tokenrelay.path_errors``), and the log of connections refused at the cap."""

from __future__ import annotations

import http
import logging
import time

import httptools

from tokenrelay.http_limits import HttpSettings
from tokenrelay.model import GatewayError

log = logging.getLogger("tokenrelay.http")

_LOG_EVERY = 10.0  # seconds between two warnings about refused connections


class Refusal(Exception):
    """Raised from a parser callback to stop parsing; the protocol answers with ``error``."""

    def __init__(self, error: GatewayError) -> None:
        super().__init__(error.message)
        self.error = error


class RefusedConnections:
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


def refusal_bytes(
    url: bytes, error: GatewayError, default_headers: list[tuple[bytes, bytes]]
) -> bytes:
    """The whole answer to a refused request, ending its connection."""
    from tokenrelay.path_errors import render

    content_type, body = render(_path_of(url), error)
    reason = http.HTTPStatus(error.status).phrase.encode()
    head = [b"HTTP/1.1 %d %s\r\n" % (error.status, reason)]
    for name, value in default_headers:
        head.append(b"%s: %s\r\n" % (name, value))
    head.append(
        b"content-type: %s\r\ncontent-length: %d\r\nx-tokenrelay-error-type: %s\r\n"
        b"connection: close\r\n\r\n" % (content_type, len(body), error.type.encode())
    )
    head.append(body)
    return b"".join(head)


def too_many_headers(limit: int) -> GatewayError:
    return GatewayError(
        "request_too_large", f"the request has more than {limit} headers; send fewer", 431
    )


def too_large_head(limits: HttpSettings) -> GatewayError:
    return GatewayError(
        "request_too_large",
        f"the request's headers are larger than {limits.max_header_bytes} bytes; send less",
        431,
    )


def too_slow(what: str, timeout: float) -> GatewayError:
    """A client too slow: its request's fault (a "timeout" type would read as ours)."""
    return GatewayError("invalid_request", f"{what} did not arrive within {timeout:g} s", 408)


def _path_of(url: bytes) -> str:
    """The path of a request target as far as it arrived (the dialect of its error)."""
    target = url.split(b"?", 1)[0]
    if target.startswith(b"/"):
        return target.decode("latin-1")
    try:
        return (httptools.parse_url(url).path or b"/").decode("latin-1")
    except httptools.HttpParserInvalidURLError:
        return "/"

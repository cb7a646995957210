"""A response head as bytes, from an ASGI ``http.response.start`` message (after uvicorn's
``httptools_impl``, BSD-3-Clause, Copyright © 2017-present Encode OSS Ltd.): the same header
checks and framing choices, returned rather than written so a head can leave with its first body
part in one write."""

from __future__ import annotations

import http
import re
from collections.abc import Iterable
from typing import NamedTuple

_BAD_NAME = re.compile(b'[\x00-\x1f\x7f()<>@,;:\\[\\]={} \t\\\\"]')
_BAD_VALUE = re.compile(b"[\x00-\x08\x0a-\x1f\x7f]")


def _status_line(status: int) -> bytes:
    try:
        phrase = http.HTTPStatus(status).phrase.encode()
    except ValueError:
        phrase = b""
    return b"HTTP/1.1 %d %s\r\n" % (status, phrase)


STATUS_LINE = {status: _status_line(status) for status in range(100, 600)}


class Head(NamedTuple):
    """A head's bytes and what they promise about the body."""

    data: bytes
    chunked: bool
    content_length: int  # the bytes a Content-Length promises (0 when chunked or absent)
    keep_alive: bool


def encode_head(
    status: int,
    headers: Iterable[tuple[bytes, bytes]],
    default_headers: list[tuple[bytes, bytes]],
    keep_alive: bool,
    has_body: bool,
) -> Head:
    """``has_body``: False for a HEAD request (whose answer is never framed)."""
    chunked: bool | None = None
    length = 0
    closes = False
    content = [STATUS_LINE[status]]
    for name, value in (*default_headers, *headers):
        if _BAD_NAME.search(name):
            raise RuntimeError("Invalid HTTP header name.")
        if _BAD_VALUE.search(value):
            raise RuntimeError("Invalid HTTP header value.")
        name = name.lower()
        if name == b"content-length" and chunked is None:
            length = int(value.decode())
            chunked = False
        elif name == b"transfer-encoding" and value.lower() == b"chunked":
            length = 0
            chunked = True
        elif name == b"connection" and b"close" in [
            token.lower().strip() for token in value.split(b",")
        ]:
            keep_alive = False
            closes = True
        content.append(b"%s: %s\r\n" % (name, value))
    if not keep_alive and not closes:
        content.append(b"connection: close\r\n")
    if chunked is None and has_body and status not in (204, 304):
        chunked = True
        content.append(b"transfer-encoding: chunked\r\n")
    content.append(b"\r\n")
    return Head(b"".join(content), bool(chunked), length, keep_alive)

"""WebSocket upgrades on the relay paths, refused with 426 Upgrade Required at once.

Codex (``supports_websockets``, and OpenAI's built-in provider) opens a WebSocket on
``/v1/responses`` before it POSTs. Any other refusal costs it time: a 405, 404 or 503 is retried
seven times over about seven seconds, a 400 makes it exit. A 426 makes it POST within a
fraction of a second, for the rest of its session. The upgrade arrives as an HTTP GET with
``Upgrade: websocket`` when uvicorn has no WebSocket library (our case), or as a ``websocket``
scope when one is installed; both get the same answer.
"""

from __future__ import annotations

from tokenrelay import path_errors
from tokenrelay.model import GatewayError
from tokenrelay.types import Receive, Scope, Send

STATUS = 426
_MESSAGE = (
    "this gateway has no WebSocket mode; send the request as an HTTP POST to {path} (streaming "
    "with server-sent events)"
)


def is_upgrade(scope: Scope) -> bool:
    """A WebSocket handshake, as whichever scope uvicorn delivered it in."""
    if scope["type"] == "websocket":
        return True
    if scope["type"] != "http" or scope["method"] != "GET":
        return False
    return any(
        name == b"upgrade" and value.strip().lower() == b"websocket"
        for name, value in scope["headers"]
    )


async def refuse(scope: Scope, receive: Receive, send: Send) -> None:
    """426 with an error in the path's dialect; on a ``websocket`` scope through the ASGI
    denial-response extension when the server offers it, else a close (a 403 from uvicorn)."""
    path = scope["path"]
    error = GatewayError("invalid_request", _MESSAGE.format(path=path), STATUS)
    content_type, body = path_errors.render(path, error)
    headers = [
        (b"content-type", content_type),
        (b"content-length", str(len(body)).encode()),
        (b"connection", b"close"),
    ]
    if scope["type"] == "http":
        await send({"type": "http.response.start", "status": STATUS, "headers": headers})
        await send({"type": "http.response.body", "body": body})
        return
    await receive()  # websocket.connect
    if "websocket.http.response" in scope.get("extensions", {}):
        start = {"type": "websocket.http.response.start", "status": STATUS, "headers": headers}
        await send(start)
        await send({"type": "websocket.http.response.body", "body": body})
    else:
        await send({"type": "websocket.close", "code": 1008})

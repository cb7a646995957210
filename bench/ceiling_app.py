"""The minimal relay of ``server_ceiling.py``, once for ASGI and once for RSGI: read the request,
open one upstream stream through ``tokenrelay.http_client``'s pool, write each upstream chunk to
the client as it arrives. Nothing of the gateway, so the server is what differs.

    python bench/ceiling_app.py edge|httptools PORT    # under uvicorn (CEILING_UPSTREAM set)
    granian --interface rsgi ceiling_app:rsgi_app      # or asgi ... ceiling_app:asgi_app
"""

from __future__ import annotations

import os
import sys
from typing import Any

from tokenrelay.http_client import UpstreamPool

PATH = "/v1/chat/completions"
UPSTREAM_HEADERS = {
    "content-type": "application/json",
    "authorization": "Bearer bench",
    "accept-encoding": "identity",
}
STREAM_HEADERS = [("content-type", "text/event-stream"), ("cache-control", "no-cache")]

_pool: UpstreamPool | None = None


def _upstream() -> tuple[UpstreamPool, str]:
    """The pool (made on the serving loop's first request) and the simulator's URL."""
    global _pool
    if _pool is None:
        _pool = UpstreamPool()
    return _pool, os.environ["CEILING_UPSTREAM"] + PATH


async def asgi_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """The relay for uvicorn (either protocol) and Granian's ASGI interface."""
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            kind = message["type"].rsplit(".", 1)[1]
            await send({"type": f"lifespan.{kind}.complete"})
            if kind == "shutdown":
                return
    if scope["path"] == "/healthz":
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})
        return
    parts = []
    while True:
        message = await receive()
        parts.append(message.get("body", b""))
        if not message.get("more_body"):
            break
    pool, url = _upstream()
    response = await pool.post(url, b"".join(parts), UPSTREAM_HEADERS, connect_timeout=5.0)
    headers = [(name.encode(), value.encode()) for name, value in STREAM_HEADERS]
    try:
        await send({"type": "http.response.start", "status": response.status, "headers": headers})
        while (chunk := await response.next_chunk()) is not None:
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
    except BaseException:
        response.close()  # the client left: so does the upstream
        raise
    await send({"type": "http.response.body", "body": b""})
    pool.recycle(response)


async def rsgi_app(scope: Any, protocol: Any) -> None:
    """The same relay on Granian's RSGI interface."""
    if scope.path == "/healthz":
        protocol.response_bytes(200, [], b"ok")
        return
    body = await protocol()
    pool, url = _upstream()
    response = await pool.post(url, body, UPSTREAM_HEADERS, connect_timeout=5.0)
    try:
        transport = protocol.response_stream(response.status, STREAM_HEADERS)
        while (chunk := await response.next_chunk()) is not None:
            await transport.send_bytes(chunk)
    except BaseException:
        response.close()
        raise
    pool.recycle(response)


def serve_uvicorn(kind: str, port: int) -> None:
    """One uvicorn server, options as ``tokenrelay serve`` sets them (minus the gateway)."""
    import uvicorn

    http = "tokenrelay.edge.protocol:EdgeProtocol" if kind == "edge" else "httptools"
    uvicorn.run(
        asgi_app,
        host="127.0.0.1",
        port=port,
        loop="uvloop",
        http=http,
        ws="none",
        lifespan="on",
        access_log=False,
        server_header=False,
        log_level="warning",
    )


if __name__ == "__main__":
    serve_uvicorn(sys.argv[1], int(sys.argv[2]))

"""Everything but the streams: the playground and dashboard pages, ``/client.js``, health,
readiness, metrics, the model list and usage reports, routed by Starlette.

``app.Dispatch`` builds this on the first request that needs it (or a second after start-up),
so importing Starlette stays off the cold-start path of the streaming endpoints.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import re
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request as HTTPRequest
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Route

from tokenrelay import __version__, admin_http, model_list, responses_api
from tokenrelay.model import GatewayError
from tokenrelay.observe.health import Readiness
from tokenrelay.path_errors import render

if TYPE_CHECKING:
    from tokenrelay.gateway import Gateway
    from tokenrelay.relay import RelayEndpoint
    from tokenrelay.types import ASGIApp, Message, Receive, Scope, Send

WEB = Path(__file__).parent / "web"
_STATIC_TYPES = {
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
}
# On every answer here: no MIME sniffing, no framing (clickjacking), no referrer leaving.
_SAFE_HEADERS = [
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
]
# The admin page has no inline script or style at all, so its policy needs no hashes.
ADMIN_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; "
    "frame-ancestors 'none'"
)
_INLINE = re.compile(rb"<(script|style)(?![^>]*\bsrc=)[^>]*>(.*?)</\1>", re.DOTALL)


@functools.cache
def page_policy(name: str) -> str:
    """The Content-Security-Policy of a page of ``web/``: only this origin's scripts, styles
    and connections, plus the page's own inline ``<script>`` and ``<style>`` blocks by their
    hashes (no 'unsafe-inline'), and no framing."""
    hashes: dict[bytes, list[str]] = {b"script": [], b"style": []}
    for match in _INLINE.finditer((WEB / name).read_bytes()):
        digest = base64.b64encode(hashlib.sha256(match.group(2)).digest()).decode()
        hashes[match.group(1)].append(f"'sha256-{digest}'")
    scripts = " ".join(["'self'", *hashes[b"script"]])
    styles = " ".join(["'self'", *hashes[b"style"]])
    return (
        f"default-src 'self'; script-src {scripts}; style-src {styles}; img-src 'self' data:; "
        "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'none'; "
        "frame-ancestors 'none'"
    )


def _page_headers(name: str) -> dict[str, str]:
    return {"cache-control": "no-cache", "content-security-policy": page_policy(name)}


def with_safe_headers(app: ASGIApp) -> ASGIApp:
    """``app`` with ``_SAFE_HEADERS`` on every answer (its own, and Starlette's 404s)."""

    async def wrapped(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await app(scope, receive, send)
            return

        async def send_safe(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", ()), *_SAFE_HEADERS]
            await send(message)

        await app(scope, receive, send_safe)

    return wrapped


def error_response(
    path: str, error: GatewayError, headers: Mapping[str, str] | None = None
) -> Response:
    """``error`` in the dialect of ``path`` (see ``tokenrelay.path_errors``)."""
    content_type, body = render(path, error)
    extra = dict(headers or {})
    extra["x-tokenrelay-error-type"] = error.type
    return Response(body, status_code=error.status, media_type=content_type.decode(), headers=extra)


def build(gateway: Gateway, relays: dict[str, RelayEndpoint]) -> Starlette:
    """The Starlette app serving the non-streaming endpoints of ``gateway``."""
    readiness = Readiness(gateway)

    async def healthz(request: HTTPRequest) -> Response:
        """Alive: answers without I/O, so a slow dependency never gets the process restarted."""
        return JSONResponse({"status": "ok", "version": __version__, "demo": gateway.demo})

    async def readyz(request: HTTPRequest) -> Response:
        """Ready for new requests (see ``observe.health``); a 503 lists what is not."""
        status, body, headers = await readiness.check()
        return JSONResponse(body, status_code=status, headers=headers)

    async def metrics(request: HTTPRequest) -> Response:
        """The Prometheus text format (see ``observe.metrics``, loaded at start-up)."""
        from tokenrelay.observe.prometheus import CONTENT_TYPE

        assert gateway.metrics is not None  # the route exists only when metrics are enabled
        body = await gateway.metrics.exposition()
        return Response(body, headers={"content-type": CONTENT_TYPE})

    async def models(request: HTTPRequest) -> Response:
        return await model_list.list_models(gateway, request)

    async def model(request: HTTPRequest) -> Response:
        return await model_list.retrieve_model(gateway, request)

    async def gemini_models(request: HTTPRequest) -> Response:
        from tokenrelay import gemini_front

        return await gemini_front.list_models(gateway, request)

    async def gemini_model(request: HTTPRequest) -> Response:
        from tokenrelay import gemini_front

        return await gemini_front.retrieve_model(gateway, request)

    async def usage(request: HTTPRequest) -> Response:
        from tokenrelay.usage_http import usage_endpoint

        return await usage_endpoint(gateway)(request)

    async def usage_page(request: HTTPRequest) -> Response:
        from tokenrelay.usage_http import dashboard_page

        response = await dashboard_page(request)
        response.headers["content-security-policy"] = page_policy("usage.html")
        return response

    async def usage_data(request: HTTPRequest) -> Response:
        from tokenrelay.usage_http import dashboard_endpoint

        return await dashboard_endpoint(gateway)(request)

    async def page(request: HTTPRequest) -> Response:
        return FileResponse(WEB / "index.html", headers=_page_headers("index.html"))

    async def admin_page(request: HTTPRequest) -> Response:
        """The admin page (``web/admin.html``): a client of ``/admin/v1`` in the browser."""
        headers = {"cache-control": "no-cache", "content-security-policy": ADMIN_POLICY}
        return FileResponse(WEB / "admin.html", headers=headers)

    async def static(request: HTTPRequest) -> Response:
        name = request.path_params.get("name", "client.js")
        path = WEB / name
        media_type = _STATIC_TYPES.get(path.suffix)
        if media_type is None or "/" in name or name.startswith(".") or not path.is_file():
            raise HTTPException(404)
        return FileResponse(path, media_type=media_type, headers={"cache-control": "no-cache"})

    async def no_resumable_stream(request: HTTPRequest) -> Response:
        """useChat's ``resumeStream()`` asks here; streams are not kept for replay, so there is
        never one to resume (204 is the transport's "nothing to resume")."""
        return Response(status_code=204)

    async def http_error(request: HTTPRequest, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        path = request.url.path
        if exc.status_code == 404:
            error = GatewayError(
                "not_found", f"no endpoint at {path}; see GET / for the playground", 404
            )
        elif exc.status_code == 405:
            allowed = (exc.headers or {}).get("allow", "")
            error = GatewayError(
                "invalid_request",
                f"{request.method} is not allowed on {path}; use {allowed or 'another method'}",
                405,
            )
        else:
            error = GatewayError(
                "invalid_request", f"{request.method} {path}: {exc.detail}", exc.status_code
            )
        return error_response(path, error, exc.headers)

    async def server_error(request: HTTPRequest, exc: Exception) -> Response:
        """The last resort (the traceback is logged by the server): still the path's dialect."""
        message = "the gateway failed on this request; it is logged, retry or report it"
        return error_response(request.url.path, GatewayError("api_error", message, 500))

    routes = [
        # The relays' paths too, so a GET on one is a 405 naming the method.
        *(Route(path, endpoint, methods=["POST"]) for path, endpoint in relays.items()),
        Route("/v1/models", models, methods=["GET"]),
        *responses_api.routes(gateway),  # GET and DELETE /v1/responses/{id}, input_items
        *admin_http.routes(gateway),  # /admin/v1/ (docs/admin-api.md)
        Route("/v1/models/{model_id:path}", model, methods=["GET"]),
        Route("/v1beta/models", gemini_models, methods=["GET"]),
        Route("/v1beta/models/{model_id:path}", gemini_model, methods=["GET"]),
        Route("/v1/usage", usage, methods=["GET"]),
        Route("/v1/usage/dashboard", usage_data, methods=["GET"]),
        Route("/usage", usage_page, methods=["GET"]),
        Route("/admin", admin_page, methods=["GET"]),
        Route("/healthz", healthz, methods=["GET"]),
        Route("/readyz", readyz, methods=["GET"]),
        *(
            [Route("/metrics", metrics, methods=["GET"])]
            if gateway.settings.metrics.enabled
            else []
        ),
        Route("/api/chat/{chat_id}/stream", no_resumable_stream, methods=["GET"]),
        Route("/client.js", static, methods=["GET"]),
        Route("/static/{name}", static, methods=["GET"]),
        Route("/", page, methods=["GET"]),
    ]
    handlers = {HTTPException: http_error, Exception: server_error}
    app = Starlette(routes=routes, exception_handlers=handlers)
    app.state.gateway = gateway
    return app

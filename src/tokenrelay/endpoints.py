"""Everything but the streams: the playground and dashboard pages, ``/client.js``, health,
readiness, metrics, the model list and usage reports, routed by Starlette.

``app.Dispatch`` builds this on the first request that needs it (or a second after start-up),
so importing Starlette stays off the cold-start path of the streaming endpoints.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request as HTTPRequest
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Route

from tokenrelay import __version__, responses_api
from tokenrelay.observe.health import Readiness

if TYPE_CHECKING:
    from tokenrelay.app import Gateway
    from tokenrelay.relay import RelayEndpoint

WEB = Path(__file__).parent / "web"
_STATIC_TYPES = {
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
}


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
        from tokenrelay.observe.metrics import CONTENT_TYPE

        assert gateway.metrics is not None  # the route exists only when metrics are enabled
        body = await gateway.metrics.exposition()
        return Response(body, headers={"content-type": CONTENT_TYPE})

    async def models(request: HTTPRequest) -> Response:
        data = [
            {"id": name, "object": "model", "owned_by": "tokenrelay"}
            for name in gateway.router.routes
        ]
        return JSONResponse({"object": "list", "data": data})

    async def usage(request: HTTPRequest) -> Response:
        from tokenrelay.metering.reports import usage_endpoint

        return await usage_endpoint(gateway)(request)

    async def usage_page(request: HTTPRequest) -> Response:
        from tokenrelay.metering import dashboard

        return await dashboard.page(gateway, request)

    async def usage_data(request: HTTPRequest) -> Response:
        from tokenrelay.metering import dashboard

        return await dashboard.data(gateway, request)

    async def page(request: HTTPRequest) -> Response:
        return FileResponse(WEB / "index.html", headers={"cache-control": "no-cache"})

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
        message = f"{request.method} {request.url.path}: {exc.detail}"
        if exc.status_code == 404:
            message = f"no endpoint at {request.url.path}; see GET / for the playground"
        body = {
            "error": {
                "type": "not_found" if exc.status_code == 404 else "invalid_request",
                "message": message,
            }
        }
        return JSONResponse(body, status_code=exc.status_code, headers=exc.headers)

    routes = [
        # The relays' paths too, so a GET on one is a 405 naming the method.
        *(Route(path, endpoint, methods=["POST"]) for path, endpoint in relays.items()),
        Route("/v1/models", models, methods=["GET"]),
        *responses_api.routes(gateway),  # GET and DELETE /v1/responses/{id}, input_items
        Route("/v1/usage", usage, methods=["GET"]),
        Route("/v1/usage/dashboard", usage_data, methods=["GET"]),
        Route("/usage", usage_page, methods=["GET"]),
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
    app = Starlette(routes=routes, exception_handlers={HTTPException: http_error})
    app.state.gateway = gateway
    return app

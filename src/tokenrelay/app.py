"""The ASGI application: wires settings, providers, router and endpoints, and runs the demo-mode
simulator when no provider is configured.

Starlette does the routing and serves the page; each streaming endpoint is a plain ASGI callable,
so no middleware or response class sits between an upstream event and the client.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import msgspec
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request as HTTPRequest
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Route

from tokenrelay import __version__
from tokenrelay.providers import UpstreamPool, build_providers
from tokenrelay.records import Listeners, log_record
from tokenrelay.relay import Receive, RelayEndpoint, Scope, Send
from tokenrelay.router import Router
from tokenrelay.settings import Settings, load

log = logging.getLogger("tokenrelay")
WEB = Path(__file__).parent / "web"
DEMO_FORWARD = ["x-sim-"]  # in demo mode a client may steer the simulator per request


class Gateway:
    """Everything a request needs, built at start-up and shared by all endpoints."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.listeners = Listeners()
        self.pool = UpstreamPool()
        self.demo = settings.demo_mode
        self.simulator: Any = None
        self._router: Router | None = None

    @property
    def router(self) -> Router:
        if self._router is None:
            raise RuntimeError("the gateway has not started")
        return self._router

    async def start(self) -> None:
        settings = self.settings
        providers = dict(settings.providers)
        if self.demo:
            from tokenrelay import simulator

            knobs = msgspec.convert(settings.simulator, simulator.SimulatorSettings, strict=False)
            self.simulator = await simulator.start(knobs)
            for name in ("anthropic", "openai"):
                base = self.simulator.url + ("/v1" if name == "openai" else "")
                providers[name] = msgspec.structs.replace(
                    providers[name], base_url=base, api_key="demo", forward_headers=DEMO_FORWARD
                )
            log.warning(
                "DEMO MODE: no provider is configured (set ANTHROPIC_API_KEY or OPENAI_API_KEY), "
                "so answers come from the built-in simulator at %s",
                self.simulator.url,
            )
        else:
            usable = set(settings.configured_providers())
            for name in list(providers):
                if name not in usable:
                    log.info(
                        "provider %s is not configured (no API key); its targets are skipped", name
                    )
                    del providers[name]
        self._router = Router(
            settings, build_providers(providers, self.pool, settings.idle_timeout)
        )
        for name, route in self._router.routes.items():
            targets = " -> ".join(f"{t.provider}:{t.model}" for t, _ in route.targets) or "none"
            log.info("route %s: %s", name, targets)

    async def stop(self) -> None:
        await self.pool.close()
        if self.simulator is not None:
            await self.simulator.stop()


def create_app(settings: Settings | None = None) -> Dispatch:
    """The app; ``uvicorn --factory tokenrelay.app:create_app`` reads settings from the
    environment (``TOKENRELAY_CONFIG`` and ``TOKENRELAY_*``)."""
    settings = settings or load()
    gateway = Gateway(settings)
    gateway.listeners.add(log_record)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await gateway.start()
        try:
            yield
        finally:
            await gateway.stop()

    async def healthz(request: HTTPRequest) -> Response:
        return JSONResponse({"status": "ok", "version": __version__, "demo": gateway.demo})

    async def models(request: HTTPRequest) -> Response:
        data = [
            {"id": name, "object": "model", "owned_by": "tokenrelay"}
            for name in gateway.router.routes
        ]
        return JSONResponse({"object": "list", "data": data})

    async def page(request: HTTPRequest) -> Response:
        return FileResponse(WEB / "index.html", headers={"cache-control": "no-cache"})

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

    relays = {
        "/v1/messages": RelayEndpoint(gateway, "anthropic"),
        "/v1/chat/completions": RelayEndpoint(gateway, "openai"),
        "/api/generate": RelayEndpoint(gateway, "generate"),
    }
    routes = [
        *(Route(path, endpoint, methods=["POST"]) for path, endpoint in relays.items()),
        Route("/v1/models", models, methods=["GET"]),
        Route("/healthz", healthz, methods=["GET"]),
        Route("/", page, methods=["GET"]),
    ]
    app = Starlette(
        routes=routes, lifespan=lifespan, exception_handlers={HTTPException: http_error}
    )
    app.state.gateway = gateway
    return Dispatch(app, relays)


class Dispatch:
    """Hands a streaming POST straight to its relay endpoint, so no middleware wrapper sits on
    each of its sends (Starlette's cost a tenth of the gateway's CPU per token); everything
    else, the lifespan included, goes to the Starlette app."""

    def __init__(self, app: Starlette, relays: dict[str, RelayEndpoint]) -> None:
        self.app = app
        self.state = app.state
        self._relays = relays

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST":
            relay = self._relays.get(scope["path"])
            if relay is not None:
                await relay(scope, receive, send)
                return
        await self.app(scope, receive, send)

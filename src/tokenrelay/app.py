"""The ASGI application: wires settings, providers, router and endpoints, and runs the demo-mode
simulator when no provider is configured.

Starlette does the routing and serves the page; each streaming endpoint is a plain ASGI callable,
so no middleware or response class sits between an upstream event and the client.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
from collections.abc import AsyncIterator, Callable, Coroutine
from pathlib import Path
from typing import TYPE_CHECKING, Any

import msgspec
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request as HTTPRequest
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Route

from tokenrelay import __version__
from tokenrelay.cors import with_cors
from tokenrelay.gate.gatekeeper import Gate
from tokenrelay.observe.health import Readiness
from tokenrelay.providers import UpstreamPool, build_providers
from tokenrelay.records import Listeners, log_record
from tokenrelay.relay import Receive, RelayEndpoint, Scope, Send
from tokenrelay.router import Router
from tokenrelay.settings import Settings, load

if TYPE_CHECKING:
    from tokenrelay.metering import LedgerWriter
    from tokenrelay.metering.meter import Meter
    from tokenrelay.observe.audit import AuditLog
    from tokenrelay.observe.metrics import GatewayMetrics
    from tokenrelay.observe.tracing import Tracer
    from tokenrelay.relay import _Call

log = logging.getLogger("tokenrelay")
WEB = Path(__file__).parent / "web"
DEMO_FORWARD = ["x-sim-"]  # in demo mode a client may steer the simulator per request
_STATIC_TYPES = {
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
}


class Gateway:
    """Everything a request needs, built at start-up and shared by all endpoints."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.listeners = Listeners()
        self.pool = UpstreamPool()
        self.demo = settings.demo_mode
        self.simulator: Any = None
        self._router: Router | None = None
        self._gate: Gate | None = None
        self.ledger: LedgerWriter | None = None
        self.meter: Meter | None = None
        self.audit: AuditLog | None = None
        self.metrics: GatewayMetrics | None = None  # GET /metrics, unless metrics.enabled is off
        self._pricing: asyncio.TimerHandle | None = None
        self._background: set[asyncio.Future[None]] = set()
        # Shutdown: ``draining`` refuses new streams; ``calls`` are the requests being relayed
        # (one add and one discard per request, nothing per token), what ``drain`` waits for.
        self.draining = False
        self.calls: set[_Call] = set()
        self._idle: asyncio.Event | None = None  # set when the last call ends, while draining
        self.tracer: Tracer | None = None  # OpenTelemetry, only when tracing.enabled

    @property
    def router(self) -> Router:
        if self._router is None:
            raise RuntimeError("the gateway has not started")
        return self._router

    @property
    def gate(self) -> Gate:
        if self._gate is None:
            raise RuntimeError("the gateway has not started")
        return self._gate

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
            _add_demo_routes(settings)
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
        self._gate = Gate.create(settings)
        self._start_metering()
        if settings.metrics.enabled:  # after metering's listener, which prices the record
            from tokenrelay.observe.metrics import GatewayMetrics

            self.metrics = GatewayMetrics(self)
            self.listeners.add(self.metrics)
        if settings.tracing.enabled:  # else OpenTelemetry is never imported
            from tokenrelay.observe.tracing import Tracer

            self.tracer = Tracer(settings.tracing)
        for name, route in self._router.routes.items():
            targets = " -> ".join(f"{t.provider}:{t.model}" for t, _ in route.targets) or "none"
            log.info("route %s: %s", name, targets)

    def _start_metering(self) -> None:
        """The ledger, priced rows, budgets' charges and the audit line, fed by one listener.
        Each finished request's row is spooled at once (one write()) and written to the
        database in batches by a background task; the price table loads in a thread soon
        after start-up, off the cold-start path."""
        from tokenrelay.metering import LedgerWriter, default_spool_dir
        from tokenrelay.metering.meter import Meter
        from tokenrelay.metering.pricing import Pricer

        settings = self.settings
        gate = self.gate
        pricer = Pricer(settings.pricing)
        audit = None
        if settings.audit.enabled:
            from tokenrelay.observe.audit import AuditLog

            audit = self.audit = AuditLog(settings.audit)
        ledger = self.ledger = LedgerWriter(default_spool_dir(settings.database_url))
        kinds = {name: provider.kind for name, provider in settings.providers.items()}
        meter = self.meter = Meter(ledger, pricer, kinds, gate.budgets, audit)
        ledger.before_write = meter.price_pending
        ledger.start(gate.database)
        self.listeners.add(meter)
        loop = asyncio.get_running_loop()
        self._pricing = loop.call_later(1.0, lambda: self._later(pricer.load()))

    def _later(self, job: Coroutine[Any, Any, None]) -> None:
        task = asyncio.ensure_future(job)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    def untrack(self, call: _Call) -> None:
        self.calls.discard(call)
        if self._idle is not None and not self.calls:
            self._idle.set()

    async def drain(
        self,
        grace: float | None,
        *,
        finish: float = 2.0,
        cut_short: Callable[[], bool] | None = None,
    ) -> int:
        """Refuse new streams, and give the ones in flight up to ``grace`` seconds (``None``: no
        limit) to end; then interrupt the rest, which end with an explicit error in their client's
        dialect (or a 503 when their head was not sent yet) and close their upstream, and wait up
        to ``finish`` seconds for them to write it. ``cut_short`` ends the grace early (a second
        Ctrl-C). Returns how many streams were interrupted."""
        self.draining = True
        if self.calls:
            shown = "no limit" if grace is None else f"up to {grace:g} s"
            log.info("draining: %d stream(s) in flight get %s to finish", len(self.calls), shown)
            await self._wait_idle(grace, cut_short)
        remaining = [call for call in self.calls if call.interrupt()]
        if remaining:
            log.warning(
                "shutdown grace is over: %d stream(s) end with an in-band error", len(remaining)
            )
            await self._wait_idle(finish, None)
        return len(remaining)

    async def _wait_idle(self, seconds: float | None, cut_short: Callable[[], bool] | None) -> None:
        loop = asyncio.get_running_loop()
        idle = self._idle = asyncio.Event()
        end = math.inf if seconds is None else loop.time() + seconds
        while self.calls and not (cut_short is not None and cut_short()):
            left = end - loop.time()
            if left <= 0:
                return
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(idle.wait(), min(left, 0.1))

    async def stop(self) -> None:
        if self._pricing is not None:
            self._pricing.cancel()
        if self.ledger is not None:  # before the gate closes its database; rows left stay spooled
            await self.ledger.close(timeout=5.0)
        if self.audit is not None:
            await asyncio.to_thread(self.audit.close)
        if self._gate is not None:
            await self._gate.close()
        await self.pool.close()
        if self.tracer is not None:  # exports the spans still batched
            await asyncio.to_thread(self.tracer.shutdown)
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

    relays = {
        "/v1/messages": RelayEndpoint(gateway, "anthropic"),
        "/v1/chat/completions": RelayEndpoint(gateway, "openai"),
        "/api/generate": RelayEndpoint(gateway, "generate"),
        "/api/chat": RelayEndpoint(gateway, "uichat"),
    }
    routes = [
        *(Route(path, endpoint, methods=["POST"]) for path, endpoint in relays.items()),
        Route("/v1/models", models, methods=["GET"]),
        Route("/v1/usage", usage, methods=["GET"]),
        Route("/v1/usage/dashboard", usage_data, methods=["GET"]),
        Route("/usage", usage_page, methods=["GET"]),
        Route("/healthz", healthz, methods=["GET"]),
        Route("/readyz", readyz, methods=["GET"]),
        *([Route("/metrics", metrics, methods=["GET"])] if settings.metrics.enabled else []),
        Route("/api/chat/{chat_id}/stream", no_resumable_stream, methods=["GET"]),
        Route("/client.js", static, methods=["GET"]),
        Route("/static/{name}", static, methods=["GET"]),
        Route("/", page, methods=["GET"]),
    ]
    app = Starlette(
        routes=routes, lifespan=lifespan, exception_handlers={HTTPException: http_error}
    )
    app.state.gateway = gateway
    return Dispatch(app, relays, settings)


def _add_demo_routes(settings: Settings) -> None:
    """Two routes that show failover and a mid-stream failure on the simulator, for the
    playground's route list; a configured route of the same name wins."""
    from tokenrelay.settings import DEFAULT_OPENAI_MODEL, RouteSettings, TargetSettings

    base = settings.routes.get("default")
    demos = {
        "demo-failover": [
            # A model of its own, so the breaker this trips never touches the default route.
            TargetSettings(
                provider="anthropic", model="claude-haiku-4-5", headers={"x-sim-fault": "529"}
            ),
            TargetSettings(provider="openai", model=DEFAULT_OPENAI_MODEL),
        ],
        "demo-error": [
            TargetSettings(
                provider="openai",
                model=DEFAULT_OPENAI_MODEL,
                headers={"x-sim-fault": "error_after", "x-sim-fault-after": "12"},
            ),
        ],
    }
    for name, targets in demos.items():
        if name not in settings.routes:
            route = RouteSettings(targets=targets, retries=0)
            if base is not None:
                route.screen = base.screen
            settings.routes[name] = route


class Dispatch:
    """Hands a streaming POST straight to its relay endpoint, so no middleware wrapper sits on
    each of its sends (Starlette's cost a tenth of the gateway's CPU per token); everything
    else, the lifespan included, goes to the Starlette app."""

    def __init__(
        self, app: Starlette, relays: dict[str, RelayEndpoint], settings: Settings
    ) -> None:
        self.app = app
        self.state = app.state
        self._relays = relays
        # Cross-origin pages, when the deployment lists their origins (see tokenrelay.cors).
        self._handle = with_cors(self._route, settings.cors)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self._handle(scope, receive, send)

    async def _route(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST":
            relay = self._relays.get(scope["path"])
            if relay is not None:
                await relay(scope, receive, send)
                return
        await self.app(scope, receive, send)

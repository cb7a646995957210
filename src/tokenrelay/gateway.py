"""The composition root: ``Gateway`` builds the router, the gate, metering and the observers
from the settings at start-up, hands each the pieces it needs, and closes them at shutdown.

Only the HTTP layer knows this object (``app``, the endpoints); the systems it builds never
import it (see docs/design.md, "Which way the imports run").
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
from collections.abc import Awaitable, Callable, Coroutine
from typing import TYPE_CHECKING, Any, Protocol

import msgspec

from tokenrelay import transports
from tokenrelay.balance import Balancer
from tokenrelay.gate.gatekeeper import Gate
from tokenrelay.guard.route import Guards
from tokenrelay.providers import UpstreamPool, build_providers
from tokenrelay.records import Listeners
from tokenrelay.response_store import ResponseStore
from tokenrelay.resume import ResumeStore, build_store
from tokenrelay.router import Router
from tokenrelay.settings import Settings

if TYPE_CHECKING:
    from tokenrelay.cache.service import ResponseCache
    from tokenrelay.metering import LedgerWriter
    from tokenrelay.metering.meter import Meter
    from tokenrelay.observe.audit import AuditLog
    from tokenrelay.observe.metrics import GatewayMetrics, Reporter
    from tokenrelay.observe.tracing import Tracer
    from tokenrelay.shared_state import SharedState

log = logging.getLogger("tokenrelay")
DEMO_FORWARD = ["x-sim-"]  # in demo mode a client may steer the simulator per request


class Call(Protocol):
    """A request being relayed, as shutdown sees it (``relay``'s calls are)."""

    def interrupt(self) -> bool: ...


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
        self.calls: set[Call] = set()
        self._idle: asyncio.Event | None = None  # set when the last call ends, while draining
        self.tracer: Tracer | None = None  # OpenTelemetry, only when tracing.enabled
        # Breaker state and TTFT statistics in Redis, only when redis_url is set.
        self.shared: SharedState | None = None
        # /v1/responses answers kept for previous_response_id and GET /v1/responses/{id}
        self.responses = ResponseStore(settings.responses)
        self.resume: ResumeStore | None = None  # resumable streams' events (docs/resume.md)
        self.guards = Guards()  # each route's PII masking and output rules (guard.route)
        self.cache: ResponseCache | None = None  # only when a route turns its cache on

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
            for name in ("anthropic", "openai", "gemini"):
                base = self.simulator.url + {"openai": "/v1", "gemini": "/v1beta"}.get(name, "")
                providers[name] = msgspec.structs.replace(
                    providers[name], base_url=base, api_key="demo", forward_headers=DEMO_FORWARD
                )
            # Bedrock's Converse API (a configured bedrock provider too, behind any route)
            from tokenrelay.settings import ProviderSettings

            for name, provider in {
                "bedrock": ProviderSettings(kind="bedrock"),
                **providers,
            }.items():
                if provider.kind == "bedrock":
                    providers[name] = msgspec.structs.replace(
                        provider,
                        base_url=self.simulator.url,
                        api_key="demo",
                        region=provider.region or "us-east-1",
                        forward_headers=DEMO_FORWARD,
                    )
            for name, provider in providers.items():  # the simulator's Azure OpenAI
                if provider.kind == "azure":
                    providers[name] = msgspec.structs.replace(
                        provider,
                        base_url=self.simulator.url,
                        api_key="demo",
                        forward_headers=DEMO_FORWARD,
                    )
            # the simulator's Responses API too, behind the demo-responses route
            providers["openai-responses"] = msgspec.structs.replace(
                providers["openai"], api="responses"
            )
            _add_demo_routes(settings)
            log.warning(
                "DEMO MODE: no provider is configured (set ANTHROPIC_API_KEY, OPENAI_API_KEY or "
                "GEMINI_API_KEY), so answers come from the built-in simulator at %s",
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
        if settings.redis_url:  # else redis is never imported for this
            from tokenrelay.shared_state import SharedState

            self.shared = SharedState.from_settings(settings)
            self.shared.start()
        self._router = Router(
            settings,
            build_providers(providers, self.pool, settings.idle_timeout),
            self.shared.breaker if self.shared is not None else None,
            self.shared.latency if self.shared is not None else None,
            Balancer.shared(self.shared.link, self.shared.latency) if self.shared else None,
        )
        self._gate = Gate.create(settings)
        self.resume = build_store(settings)
        if _caches(settings):  # else nothing of the cache is imported
            from tokenrelay.cache.build import build_cache

            self.cache = build_cache(settings, self.pool)
        self._start_metering()
        self.responses.start(self._gate)
        self.listeners.add(self.responses)
        if settings.metrics.enabled:  # after metering's listener, which prices the record
            from tokenrelay.observe.metrics import GatewayMetrics

            self.metrics = GatewayMetrics(
                self._router,
                settings.metrics,
                active=self.calls.__len__,
                breaker=self._router.breaker,
                shared_breaker=self.shared is not None,
                reporters=self._reporters(),
            )
            self.listeners.add(self.metrics)
        if settings.tracing.enabled:  # else OpenTelemetry is never imported
            from tokenrelay.observe.tracing import Tracer

            self.tracer = Tracer(settings.tracing)
        for name, route in self._router.routes.items():
            targets = " -> ".join(f"{t.provider}:{t.model}" for t, _ in route.targets) or "none"
            log.info("route %s: %s", name, targets)

    def _reporters(self) -> list[Reporter]:
        """Each component's own numbers for ``/metrics``, in the order they are shown."""
        from tokenrelay.observe.reporters import (
            AuditReporter,
            BalanceReporter,
            BudgetReporter,
            LedgerReporter,
            LimiterReporter,
            PoolReporter,
            SharedStateReporter,
        )

        reporters: list[Reporter] = []
        if self.ledger is not None:
            reporters.append(LedgerReporter(self.ledger))
        reporters.append(LimiterReporter(self.gate.limiter))
        if self.shared is not None:
            reporters.append(SharedStateReporter(self.shared))
        if self.gate.budgets is not None:
            reporters.append(BudgetReporter(self.gate.budgets.metrics))
        reporters.append(self.responses.metrics)  # stored /v1/responses answers
        if self.cache is not None:
            reporters.append(self.cache.metrics)
        if self.audit is not None:
            reporters.append(AuditReporter(self.audit))
        if self.resume is not None:
            from tokenrelay.resume.metrics import ResumeReporter

            reporters.append(ResumeReporter(self.resume))
        reporters.append(PoolReporter(self.pool))
        reporters.append(BalanceReporter(self.router.balancer))
        return reporters

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
        spool_dir = settings.spool_dir or default_spool_dir(settings.database_url)
        ledger = self.ledger = LedgerWriter(spool_dir)
        kinds = {name: transports.get(p.kind).PRICED_AS for name, p in settings.providers.items()}
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

    def untrack(self, call: Call) -> None:
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
        """Close every component, each within ``STOP_STEP_SECONDS``: one that hangs (a database
        or Redis that stopped answering) is named in the log and passed over, so a shutdown
        always ends; what it held stays where it is safe (ledger rows stay spooled)."""
        if self._pricing is not None:
            self._pricing.cancel()
        if self.metrics is not None:
            self.metrics.stop_sampling()
        if self.ledger is not None:  # before the gate closes its database; rows left stay spooled
            await _within("the ledger writer", self.ledger.close(timeout=5.0), 6.0)
        # the responses still pending are written before the gate closes the database
        await _within("the response store", self.responses.close())
        await _within("the guards", self.guards.aclose())
        if self.cache is not None:  # the answers still being stored, briefly
            await _within("the response cache", self.cache.close())
        if self.audit is not None:
            await _within("the audit log", asyncio.to_thread(self.audit.close))
        if self._gate is not None:
            await _within("the gate", self._gate.close())
        if self.shared is not None:
            await _within("the shared state", self.shared.close())
        if self.resume is not None:
            await _within("the resume store", self.resume.close())
        await _within("the upstream pool", self.pool.close())
        if self.tracer is not None:  # exports the spans still batched
            await _within("the tracer", asyncio.to_thread(self.tracer.shutdown))
        if self.simulator is not None:
            await _within("the simulator", self.simulator.stop())


# How long each component may take to close at shutdown before it is passed over.
STOP_STEP_SECONDS = 5.0


async def _within(name: str, closing: Awaitable[None], seconds: float | None = None) -> None:
    """Await one component's close, at most ``seconds`` (``STOP_STEP_SECONDS``); a slow one is
    logged, not waited for."""
    seconds = STOP_STEP_SECONDS if seconds is None else seconds
    try:
        await asyncio.wait_for(closing, seconds)
    except TimeoutError:
        log.warning("shutdown: %s did not close within %g s; going on without it", name, seconds)


def _caches(settings: Settings) -> bool:
    """Whether any route (or the provider-models policy) turns the response cache on."""
    routes = [*settings.routes.values(), settings.provider_models]
    return any(route.cache.mode != "off" for route in routes)


def _add_demo_routes(settings: Settings) -> None:
    """Two routes that show failover and a mid-stream failure on the simulator, for the
    playground's route list; a configured route of the same name wins."""
    from tokenrelay.resume.settings import ResumeSettings
    from tokenrelay.settings import (
        DEFAULT_ANTHROPIC_MODEL,
        DEFAULT_OPENAI_MODEL,
        RouteSettings,
        TargetSettings,
    )

    base = settings.routes.get("default")
    demos = {
        "demo-failover": [
            # A model of its own, so the breaker this trips never touches the default route.
            TargetSettings(
                provider="anthropic", model="claude-haiku-4-5", headers={"x-sim-fault": "529"}
            ),
            TargetSettings(provider="openai", model=DEFAULT_OPENAI_MODEL),
        ],
        "demo-bedrock": [  # served through Bedrock's Converse API, in event-stream frames
            TargetSettings(
                provider="bedrock", model="us.anthropic.claude-sonnet-4-5-20250929-v1:0"
            ),
        ],
        "demo-responses": [  # served through the OpenAI Responses API
            TargetSettings(provider="openai-responses", model=DEFAULT_OPENAI_MODEL),
        ],
        "demo-resume": [  # resumable: reload the page mid-answer and it continues
            TargetSettings(provider="anthropic", model=DEFAULT_ANTHROPIC_MODEL),
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
            if name == "demo-resume":  # a dropped connection resumes (docs/resume.md)
                route.resume = ResumeSettings(grace=15.0)
            if base is not None:
                route.screen = base.screen
            settings.routes[name] = route

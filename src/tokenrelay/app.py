"""The ASGI application: wires settings, providers, router and endpoints, and runs the demo-mode
simulator when no provider is configured.

Starlette does the routing and serves the page; each streaming endpoint is a plain ASGI callable,
so no middleware or response class sits between an upstream event and the client.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable
from types import SimpleNamespace

from tokenrelay import resume_http, upgrades
from tokenrelay.cors import with_cors
from tokenrelay.count_tokens import PATH as COUNT_TOKENS
from tokenrelay.count_tokens import CountTokensEndpoint
from tokenrelay.gateway import Gateway
from tokenrelay.records import log_record
from tokenrelay.relay import RelayEndpoint
from tokenrelay.settings import Settings, load
from tokenrelay.types import ASGIApp, Receive, Scope, Send

__all__ = ["Dispatch", "Gateway", "create_app"]

log = logging.getLogger("tokenrelay")
# The Gemini front's POSTs (google-genai with a base_url of its own asks /v1/models/...).
_GEMINI = ("/v1beta/models/", "/v1/models/")


def create_app(settings: Settings | None = None) -> Dispatch:
    """The app; ``uvicorn --factory tokenrelay.app:create_app`` reads settings from the
    environment (``TOKENRELAY_CONFIG`` and ``TOKENRELAY_*``)."""
    settings = settings or load()
    gateway = Gateway(settings)
    gateway.listeners.add(log_record)
    relays = {
        "/v1/messages": RelayEndpoint(gateway, "anthropic"),
        "/v1/chat/completions": RelayEndpoint(gateway, "openai"),
        "/api/generate": RelayEndpoint(gateway, "generate"),
        "/api/chat": RelayEndpoint(gateway, "uichat"),
        "/v1/responses": RelayEndpoint(gateway, "responses"),
        COUNT_TOKENS: CountTokensEndpoint(gateway),  # not a stream, but a POST like them
    }
    return Dispatch(gateway, relays)


class Dispatch:
    """The ASGI app. A streaming POST goes straight to its relay endpoint, so no middleware
    wrapper sits on each of its sends (Starlette's cost a tenth of the gateway's CPU per
    token). The lifespan is handled here too, so Starlette, which serves everything else (the
    pages, health, metrics, models, usage), is imported only when first needed or a second
    after start-up, off the cold-start path (spawn to first token)."""

    def __init__(
        self,
        gateway: Gateway,
        relays: dict[str, RelayEndpoint],
        gemini: RelayEndpoint | None = None,
    ) -> None:
        self.gateway = gateway
        self.state = SimpleNamespace(gateway=gateway)
        self._relays = relays
        self._gemini = gemini  # every POST under /v1beta/models/ (the model is in the path)
        self._pages: ASGIApp | None = None  # the Starlette app, once built
        self._warm: asyncio.Task[None] | None = None
        # Cross-origin pages, when the deployment lists their origins (see tokenrelay.cors).
        self._handle = with_cors(self._route, gateway.settings.cors)
        self._resumes = resume_http.ResumeEndpoint(relays)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        await self._handle(scope, receive, send)

    def _route(self, scope: Scope, receive: Receive, send: Send) -> Awaitable[None]:
        """The handler's own awaitable, not a coroutine wrapped around it: one frame less held
        by every open stream."""
        if scope["type"] == "http" and scope["method"] == "POST":
            relay = self._relays.get(scope["path"])
            if relay is None and scope["path"].startswith(_GEMINI):
                relay = self._gemini or self._build_gemini()
            if relay is not None:
                if self.gateway.resume is not None and resume_http.is_reconnect(scope):
                    return resume_http.resume_post(relay, scope, receive, send)  # docs/resume.md
                return relay(scope, receive, send)
        elif scope["type"] == "http" and resume_http.is_resume_path(scope["path"]):
            if scope["method"] in ("GET", "DELETE"):  # a reconnect, or a Stop (docs/resume.md)
                return self._resumes(scope, receive, send)
        elif scope["path"] in self._relays and upgrades.is_upgrade(scope):
            return upgrades.refuse(scope, receive, send)  # 426: Codex POSTs at once
        pages = self._pages if self._pages is not None else self._build_pages()
        return pages(scope, receive, send)

    def _build_gemini(self) -> RelayEndpoint:
        """The Gemini front, built on its first request: its dialect stays off the cold-start
        path of a gateway nobody calls that way."""
        from tokenrelay.gemini_front import GeminiRelay

        self._gemini = GeminiRelay(self.gateway)
        return self._gemini

    def _build_pages(self) -> ASGIApp:
        from tokenrelay.endpoints import build, with_safe_headers

        self._pages = with_safe_headers(build(self.gateway, self._relays))
        return self._pages

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        await receive()  # lifespan.startup
        try:
            await self.gateway.start()
        except Exception:
            log.exception("the gateway could not start")
            await send({"type": "lifespan.startup.failed", "message": "see the log above"})
            return
        await send({"type": "lifespan.startup.complete"})
        self._warm = asyncio.create_task(self._warm_pages())
        await receive()  # lifespan.shutdown
        self._warm.cancel()
        try:
            await self.gateway.stop()
        finally:
            await send({"type": "lifespan.shutdown.complete"})

    async def _warm_pages(self) -> None:
        """Import the pages' modules in a thread a second after start-up, so the first
        health check or page view does not pay for it."""
        import importlib

        await asyncio.sleep(1.0)
        await asyncio.to_thread(importlib.import_module, "tokenrelay.endpoints")
        if self._pages is None:
            self._build_pages()

"""Cross-origin access for browser pages on other origins: off unless a deployment lists the
origins it trusts. Starlette's ``CORSMiddleware`` does the work (preflight, ``Vary: Origin``,
credentials); it is only installed when origins are configured, and a request without an
``Origin`` header passes straight through it, so same-origin and server-side clients pay nothing.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import msgspec

if TYPE_CHECKING:
    from tokenrelay.types import ASGIApp

# What a page may read from an answer besides the CORS-safelisted headers.
EXPOSED_HEADERS = [
    "x-request-id",
    "request-id",
    "x-tokenrelay-route",
    "x-tokenrelay-provider",
    "x-tokenrelay-model",
    "x-tokenrelay-attempts",
    "x-tokenrelay-dropped-tools",
    "x-tokenrelay-demo",
    "x-tokenrelay-error-type",
    "x-tokenrelay-stream-id",
    "x-vercel-ai-ui-message-stream",
    "retry-after",
    "ratelimit",
    "ratelimit-policy",
    "x-ratelimit-limit-requests",
    "x-ratelimit-remaining-requests",
    "x-ratelimit-reset-requests",
    "anthropic-ratelimit-requests-limit",
    "anthropic-ratelimit-requests-remaining",
    "anthropic-ratelimit-requests-reset",
]


class CorsSettings(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """``allow_origins``: exact origins like ``https://app.example.com`` (``*`` for any, which
    cannot be combined with ``allow_credentials``). ``max_age``: seconds a browser may cache a
    preflight answer."""

    allow_origins: list[str] = msgspec.field(default_factory=list)
    allow_credentials: bool = False
    max_age: int = 600

    def check(self) -> str | None:
        """What is wrong with these settings, or ``None``."""
        for origin in self.allow_origins:
            if origin != "*" and not origin.startswith(("http://", "https://")):
                return f"cors.allow_origins: {origin!r} must look like https://app.example.com"
            if origin.endswith("/"):
                return f"cors.allow_origins: {origin!r} must not end with '/' (no path)"
        if self.allow_credentials and "*" in self.allow_origins:
            return "cors.allow_credentials cannot be used with allow_origins = ['*']; list origins"
        return None


def with_cors(app: ASGIApp, settings: CorsSettings) -> ASGIApp:
    """``app`` answering preflights and marking answers for the configured origins."""
    if not settings.allow_origins:
        return app
    from starlette.middleware.cors import CORSMiddleware

    options: dict[str, Any] = {
        "allow_origins": settings.allow_origins,
        "allow_methods": ["GET", "POST", "DELETE", "OPTIONS"],
        # Any request header: the SDKs send their own (x-stainless-*, anthropic-version, ...).
        "allow_headers": ["*"],
        "allow_credentials": settings.allow_credentials,
        "expose_headers": EXPOSED_HEADERS,
        "max_age": settings.max_age,
    }
    return CORSMiddleware(app, **options)

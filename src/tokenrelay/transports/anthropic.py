"""Anthropic's Messages API: ``x-api-key`` and a pinned ``anthropic-version``."""

from __future__ import annotations

from tokenrelay.transports.base import ProviderSettings, Transport


class Anthropic(Transport):
    NAME = "anthropic"
    DIALECT = "anthropic"
    PATHS = {"anthropic": "/v1/messages"}
    HEADER_PREFIX = "anthropic-"
    COUNTS_TOKENS = True

    def auth_headers(self, settings: ProviderSettings, key: str | None) -> dict[str, str]:
        headers = {"anthropic-version": settings.anthropic_version}
        if key:
            headers["x-api-key"] = key
        return headers

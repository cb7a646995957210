"""Google's Gemini API on AI Studio (``generativelanguage.googleapis.com``): the model is in the
URL (``/v1beta/models/{model}:streamGenerateContent?alt=sse``) and the key in
``x-goog-api-key``."""

from __future__ import annotations

from typing import TYPE_CHECKING

from tokenrelay.transports.base import Transport

if TYPE_CHECKING:
    from tokenrelay.transports.base import ProviderSettings

BASE_URL = "https://generativelanguage.googleapis.com/v1beta"


class Gemini(Transport):
    NAME = "gemini"
    DIALECT = "gemini"
    PATHS = {"gemini": "/models"}
    HEADER_PREFIX = "x-goog-"
    MODEL_IN_URL = True

    def url(self, settings: ProviderSettings, dialect: str, model: str | None = None) -> str:
        base = (settings.base_url or BASE_URL).rstrip("/") + self.PATHS[dialect]
        if model is None:
            return base
        return f"{base}/{model}:streamGenerateContent?alt=sse"

    def auth_headers(self, settings: ProviderSettings, key: str | None) -> dict[str, str]:
        return {"x-goog-api-key": key} if key else {}

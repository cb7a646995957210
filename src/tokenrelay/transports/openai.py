"""OpenAI's API, and any server that speaks it: Chat Completions, the Responses API, or both
(``api = "auto"``: a Responses client's request goes to ``/responses``, every other to
``/chat/completions``; an OpenAI-compatible server may lack ``/responses``)."""

from __future__ import annotations

from tokenrelay.transports.base import ProviderSettings, Transport


class OpenAI(Transport):
    NAME = "openai"
    DIALECT = "openai"
    PATHS = {"openai": "/chat/completions", "responses": "/responses"}
    HEADER_PREFIX = "openai-"

    APIS = frozenset({"chat", "responses", "auto"})

    def dialects(self, settings: ProviderSettings) -> tuple[str, str | None]:
        if settings.api == "responses":
            return "responses", None
        return "openai", "responses" if settings.api == "auto" else None

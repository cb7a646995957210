"""Azure OpenAI: OpenAI's wire format (Chat Completions, and the Responses API with
``api = "responses"`` or ``"auto"``) behind Azure's URLs and credentials.

``base_url`` is the resource's endpoint (``https://NAME.openai.azure.com``). With
``api_version = "v1"`` (the default) requests go to ``{endpoint}/openai/v1/chat/completions`` and
name the deployment in the body's ``model``; with a dated version (``"2024-10-21"``) to
``{endpoint}/openai/deployments/{deployment}/chat/completions?api-version=...``. ``deployments``
maps a target's model to its deployment's name; when empty, the model's name is the deployment's.
The key goes in ``api-key``; without one, a Microsoft Entra token (``azure_ad_token``) goes in
``authorization: Bearer``. See docs/providers-azure.md.
"""

from __future__ import annotations

import logging
import re
from typing import TYPE_CHECKING, Protocol
from urllib.parse import quote

import msgspec

from tokenrelay.transports.base import Transport

if TYPE_CHECKING:
    from tokenrelay.model import Error

log = logging.getLogger("tokenrelay.providers")

# "v1" and "preview" are the v1 API's; a date (with an optional "-preview") a dated version's.
_VERSION = re.compile(r"v1|preview|\d{4}-\d{2}-\d{2}(-preview)?")
_V1 = frozenset({"v1", "preview"})


class ProviderSettings(Protocol):
    """What this kind reads of a provider's settings (``settings.ProviderSettings``; a
    Protocol, so that transports never import settings)."""

    @property
    def api(self) -> str: ...

    @property
    def base_url(self) -> str | None: ...

    @property
    def api_version(self) -> str: ...

    @property
    def deployments(self) -> dict[str, str]: ...

    @property
    def azure_ad_token(self) -> str | None: ...

    def resolved_key(self) -> str | None: ...


class Azure(Transport):
    NAME = "azure"
    DIALECT = "openai"
    PATHS = {"openai": "/chat/completions", "responses": "/responses"}
    APIS = frozenset({"chat", "responses", "auto"})
    MODEL_IN_URL = True

    def dialects(self, settings: ProviderSettings) -> tuple[str, str | None]:
        if settings.api == "responses":
            return "responses", None
        return "openai", "responses" if settings.api == "auto" else None

    def url(self, settings: ProviderSettings, dialect: str, model: str | None = None) -> str:
        endpoint = (settings.base_url or "").rstrip("/")
        version = settings.api_version
        path = self.PATHS[dialect]
        if version in _V1:
            query = "?api-version=preview" if version == "preview" else ""
            return f"{endpoint}/openai/v1{path}{query}"
        if dialect == "responses":  # not per deployment: the body's model names it
            return f"{endpoint}/openai{path}?api-version={version}"
        deployment = quote(self.wire_model(settings, model or ""), safe="")
        return f"{endpoint}/openai/deployments/{deployment}{path}?api-version={version}"

    def wire_model(self, settings: ProviderSettings, model: str) -> str:
        return settings.deployments.get(model, model)

    def auth_headers(self, settings: ProviderSettings, key: str | None) -> dict[str, str]:
        if key:
            return {"api-key": key}
        if settings.azure_ad_token:
            return {"authorization": f"Bearer {settings.azure_ad_token}"}
        return {}

    def check_ready(self, settings: ProviderSettings) -> str | None:
        if not settings.base_url:
            return (
                "base_url is missing: set it to the Azure OpenAI resource's endpoint, "
                "e.g. https://NAME.openai.azure.com"
            )
        if not settings.resolved_key() and not settings.azure_ad_token:
            return (
                "has no credential: set api_key (or api_key_env) to the resource's key, or "
                "azure_ad_token (or azure_ad_token_env) to a Microsoft Entra token"
            )
        if _VERSION.fullmatch(settings.api_version) is None:
            return (
                f"api_version = {settings.api_version!r} is not an Azure OpenAI API version; "
                "write 'v1' or a date like '2024-10-21'"
            )
        return None

    def check_target(self, settings: ProviderSettings, model: str) -> str | None:
        if not settings.deployments or model in settings.deployments:
            return None
        known = ", ".join(sorted(settings.deployments))
        return (
            f"model {model!r} is not in the provider's deployments (it maps {known}); add "
            f'"{model}" = "<deployment name>" to deployments'
        )

    def classify(self, error: Error) -> Error:
        """A 404 from Azure means the deployment (or the API version) is not there: the
        operator's mistake, logged loudly; the route moves on to its next target."""
        if error.status != 404:
            return error
        log.error(
            "CONFIGURATION ERROR: Azure OpenAI answered 404 (%s); check the provider's "
            "deployments map and api_version. Requests move on to the route's next target.",
            error.message[:500],
        )
        message = "an Azure OpenAI deployment was not found; the operator has been told"
        return msgspec.structs.replace(
            error, type="upstream_unavailable", status=502, message=message
        )

"""Vertex AI: Claude (publisher ``anthropic``) and Gemini (publisher ``google``) models of one
Google Cloud project. The URL names the project, region, publisher, model and method; the
Anthropic body carries ``anthropic_version: "vertex-2023-10-16"`` and no ``model`` (as the
anthropic SDK's ``AnthropicVertex`` sends it). Authentication is an OAuth access token: a fixed
one (``api_key``/``api_key_env``), or one minted from a service account
(``credentials_file`` or ``GOOGLE_APPLICATION_CREDENTIALS``) and refreshed before it expires
(``tokenrelay.transports.google_token``)."""

from __future__ import annotations

import os
import re
from typing import TYPE_CHECKING, Any

import msgspec

from tokenrelay.transports.base import TokenSource, Transport

if TYPE_CHECKING:
    from tokenrelay.transports.base import ProviderSettings

ANTHROPIC_VERSION = "vertex-2023-10-16"
# A region (``us-east5``, ``europe-west1``), a multi-region (``us``, ``eu``) or ``global``.
_REGION = re.compile(r"global|us|eu|[a-z]+-[a-z]+\d+")
_PROJECT = re.compile(r"[a-z][a-z0-9-]{4,28}[a-z0-9]")
# The publisher of a model by its name's start, and the dialect each publisher speaks.
_PUBLISHERS = {"claude-": "anthropic", "gemini-": "google"}
_DIALECTS = {"anthropic": "anthropic", "google": "gemini"}
_METHODS = {  # publisher -> (streaming, whole)
    "anthropic": ("streamRawPredict", "rawPredict"),
    "google": ("streamGenerateContent?alt=sse", "generateContent"),
}


def host(region: str) -> str:
    """The API's base for a region, as the anthropic SDK's Vertex client picks it."""
    if region == "global":
        return "https://aiplatform.googleapis.com/v1"
    if region in ("us", "eu"):
        return f"https://aiplatform.{region}.rep.googleapis.com/v1"
    return f"https://{region}-aiplatform.googleapis.com/v1"


def publisher(settings: ProviderSettings, model: str) -> str:
    """``anthropic`` or ``google``: the ``publisher`` setting, else by the model's name."""
    if settings.publisher:
        return settings.publisher
    for prefix, name in _PUBLISHERS.items():
        if model.startswith(prefix):
            return name
    raise ValueError(
        f"vertex cannot tell the publisher of model {model!r}: name a claude-* or gemini-* "
        'model, or set the provider\'s publisher = "anthropic" or "google"'
    )


def credentials_file(settings: ProviderSettings) -> str | None:
    return settings.credentials_file or os.environ.get("GOOGLE_APPLICATION_CREDENTIALS") or None


class Vertex(Transport):
    NAME = "vertex"
    DIALECT = "anthropic"  # the provider's default; each model's publisher decides (``route``)
    PATHS = {"anthropic": ""}  # unused: the URL names the model (model_url)
    HEADER_PREFIX = None
    PRICED_AS = "google"  # genai-prices' Vertex table: Gemini and Claude models alike

    def dialects(self, settings: ProviderSettings) -> tuple[str, str | None]:
        return _DIALECTS[settings.publisher or "anthropic"], None

    def url(self, settings: ProviderSettings, dialect: str, model: str | None = None) -> str:
        # A provider-wide URL names no model; requests use ``model_url``.
        return self.model_url(settings, "claude-" if dialect == "anthropic" else "gemini-")

    def model_endpoint(self, settings: ProviderSettings, model: str) -> tuple[str, str]:
        return _DIALECTS[publisher(settings, model)], self.model_url(settings, model)

    def model_url(self, settings: ProviderSettings, model: str, stream: bool = True) -> str:
        owner = publisher(settings, model)
        region = settings.region or ""
        method = _METHODS[owner][0 if stream else 1]
        base = (settings.base_url or host(region)).rstrip("/")
        return (
            f"{base}/projects/{settings.project}/locations/{region}"
            f"/publishers/{owner}/models/{model}:{method}"
        )

    def finish_body(self, settings: ProviderSettings, dialect: str, body: bytes) -> bytes:
        if dialect != "anthropic":
            return body
        fields: dict[str, Any] = msgspec.json.decode(body)
        fields.pop("model", None)
        fields.setdefault("anthropic_version", ANTHROPIC_VERSION)
        return msgspec.json.encode(fields)

    def auth_headers(self, settings: ProviderSettings, key: str | None) -> dict[str, str]:
        return {"authorization": f"Bearer {key}"} if key else {}

    def token_source(self, settings: ProviderSettings) -> TokenSource | None:
        if settings.resolved_key():
            return None  # a fixed access token: a plain header
        from tokenrelay.transports.google_token import ServiceAccountToken

        return ServiceAccountToken(credentials_file(settings) or "")

    def check(self, settings: ProviderSettings) -> None:
        if not settings.project:
            raise ValueError('kind "vertex" needs project = "<your Google Cloud project id>"')
        if not _PROJECT.fullmatch(settings.project):
            raise ValueError(f"project = {settings.project!r} is not a Google Cloud project id")
        if not settings.region:
            raise ValueError('kind "vertex" needs region, e.g. "us-east5" or "global"')
        if not _REGION.fullmatch(settings.region):
            raise ValueError(
                f"region = {settings.region!r} is not a Vertex AI region "
                '(e.g. "us-east5", "europe-west1", "global")'
            )
        if settings.publisher not in (None, "anthropic", "google"):
            raise ValueError(f'publisher = {settings.publisher!r}: use "anthropic" or "google"')
        if settings.api_key or settings.api_key_env:
            return
        path = credentials_file(settings)
        if path is None:
            raise ValueError(
                'kind "vertex" needs credentials: credentials_file = "<service account JSON>" '
                "(or GOOGLE_APPLICATION_CREDENTIALS), or an access token in api_key/api_key_env"
            )
        from tokenrelay.transports.google_token import read_service_account

        read_service_account(path)

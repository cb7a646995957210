"""What differs between provider kinds in transport: which API a provider speaks, the URL a
request is posted to, and how it authenticates. The wire format is the dialect's business
(``tokenrelay.dialects``); everything else about a stream (pool, timeouts, error screening) is
``Provider``'s, the same for every kind.

A new kind is a subclass of ``Transport`` in a module of this package and one line in the
registry of ``transports/__init__.py``; nothing else in the code names it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

if TYPE_CHECKING:
    from tokenrelay.model import Error
    from tokenrelay.settings import ProviderSettings


class Transport:
    """One provider kind. The defaults fit an API that takes a bearer token and speaks one
    dialect; a kind overrides what it does differently."""

    NAME: ClassVar[str]  # the ``kind`` of a provider's settings
    DIALECT: ClassVar[str]  # the dialect of its default API
    PATHS: ClassVar[dict[str, str]]  # dialect -> path under ``base_url``
    # Client headers of this prefix (``anthropic-beta``) go to this kind's upstreams only.
    HEADER_PREFIX: ClassVar[str | None] = None
    # Whether ``url + "/count_tokens"`` counts a request's input tokens (the relay asks first).
    COUNTS_TOKENS: ClassVar[bool] = False
    # The values of a provider's ``api`` setting this kind understands.
    APIS: ClassVar[frozenset[str]] = frozenset({"chat"})
    # The genai-prices provider id this kind's models are priced under, when not its name.
    PRICES_AS: ClassVar[str | None] = None
    # Whether ``sign`` changes anything (``Provider`` skips the call otherwise).
    SIGNS: ClassVar[bool] = False

    def dialects(self, settings: ProviderSettings) -> tuple[str, str | None]:
        """The dialect of the provider's API, and the one a client of the same dialect is sent
        to instead, when the provider serves that one too (``api = "auto"``)."""
        return self.DIALECT, None

    def url(self, settings: ProviderSettings, dialect: str) -> str:
        """Where a request in ``dialect`` is posted."""
        return (settings.base_url or "").rstrip("/") + self.PATHS[dialect]

    def auth_headers(self, settings: ProviderSettings, key: str | None) -> dict[str, str]:
        """The headers that authenticate the gateway (and pin an API version, where one must)."""
        return {"authorization": f"Bearer {key}"} if key else {}

    def target_url(self, url: str, model: str) -> str:
        """The URL of a request for ``model``, for an API that names the model in its path
        (Bedrock's ``/model/{modelId}/converse-stream``); most take it in the body."""
        return url

    def check_target(self, settings: ProviderSettings, model: str) -> str | None:
        """Why a route's target model cannot be used with this provider (start-up), if so."""
        return None

    def sign(
        self,
        settings: ProviderSettings,
        method: str,
        url: str,
        headers: dict[str, str],
        body: bytes,
    ) -> dict[str, str]:
        """The headers to send, right before sending: a kind whose API signs each request
        over its body (AWS SigV4) adds the signature here; most send ``headers`` as they are."""
        return headers

    def classify(self, error: Error) -> Error:
        """An upstream error as failover should judge it (a kind whose API signals throttling
        with an unusual status maps it here); most kinds' statuses already say it."""
        return error

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
    # Whether the URL names the model (Gemini's ``models/{model}:...``): ``url`` is then asked
    # per target, with its model.
    MODEL_IN_URL: ClassVar[bool] = False

    def dialects(self, settings: ProviderSettings) -> tuple[str, str | None]:
        """The dialect of the provider's API, and the one a client of the same dialect is sent
        to instead, when the provider serves that one too (``api = "auto"``)."""
        return self.DIALECT, None

    def url(self, settings: ProviderSettings, dialect: str, model: str | None = None) -> str:
        """Where a request in ``dialect`` for ``model`` is posted (``model`` matters only to a
        kind with ``MODEL_IN_URL``; None: the provider's base for side calls)."""
        return (settings.base_url or "").rstrip("/") + self.PATHS[dialect]

    def auth_headers(self, settings: ProviderSettings, key: str | None) -> dict[str, str]:
        """The headers that authenticate the gateway (and pin an API version, where one must)."""
        return {"authorization": f"Bearer {key}"} if key else {}

    def classify(self, error: Error) -> Error:
        """An upstream error as failover should judge it (a kind whose API signals throttling
        with an unusual status maps it here); most kinds' statuses already say it."""
        return error

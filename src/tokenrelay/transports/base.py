"""What differs between provider kinds in transport: which API a provider speaks, the URL a
request is posted to, and how it authenticates. The wire format is the dialect's business
(``tokenrelay.dialects``); everything else about a stream (pool, timeouts, error screening) is
``Provider``'s, the same for every kind.

A new kind is a subclass of ``Transport`` in a module of this package and one line in the
registry of ``transports/__init__.py``; nothing else in the code names it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar, Protocol

if TYPE_CHECKING:
    from tokenrelay.model import Error


class ProviderSettings(Protocol):
    """What a transport reads of a provider's settings (``settings.ProviderSettings``, which
    imports this package: a Protocol here keeps the import graph a tree)."""

    @property
    def kind(self) -> str: ...

    @property
    def api(self) -> str: ...

    @property
    def base_url(self) -> str | None: ...

    @property
    def anthropic_version(self) -> str: ...

    @property
    def api_key(self) -> str | None: ...

    @property
    def api_key_env(self) -> str | None: ...

    def resolved_key(self) -> str | None: ...

    # Vertex AI (transports.vertex)
    @property
    def project(self) -> str | None: ...

    @property
    def region(self) -> str | None: ...

    @property
    def publisher(self) -> str | None: ...

    @property
    def credentials_file(self) -> str | None: ...

    # AWS Bedrock (transports.bedrock)
    @property
    def aws_profile(self) -> str | None: ...

    # Azure OpenAI (transports.azure)
    @property
    def api_version(self) -> str: ...

    @property
    def deployments(self) -> dict[str, str]: ...

    @property
    def azure_ad_token(self) -> str | None: ...


class CredentialsError(Exception):
    """A provider's credentials could not be had (a token endpoint refused or was unreachable);
    the request fails over as from an unreachable upstream."""


class TokenSource(Protocol):
    """A provider's credentials that expire and are fetched again (OAuth access tokens): asked
    once per request, never per token; ``headers`` waits only when it holds no valid token."""

    async def headers(self) -> dict[str, str]: ...


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
    # The genai-prices provider whose table prices this kind's models, after the provider's
    # own name (``metering/pricing.py``); the kind's name unless a subclass says otherwise.
    PRICED_AS: ClassVar[str]

    def __init_subclass__(cls) -> None:
        if "PRICED_AS" not in cls.__dict__:
            cls.PRICED_AS = cls.NAME

    # Whether ``sign`` changes anything (``Provider`` skips the call otherwise).
    SIGNS: ClassVar[bool] = False
    # Whether ``url`` depends on the target's model (Azure's deployment URLs, Gemini's
    # ``models/{model}:...``); else it is
    # computed once per provider.
    MODEL_IN_URL: ClassVar[bool] = False

    def dialects(self, settings: ProviderSettings) -> tuple[str, str | None]:
        """The dialect of the provider's API, and the one a client of the same dialect is sent
        to instead, when the provider serves that one too (``api = "auto"``)."""
        return self.DIALECT, None

    def url(self, settings: ProviderSettings, dialect: str, model: str | None = None) -> str:
        """Where a request in ``dialect`` for ``model`` is posted (``model`` matters only to a
        kind with ``MODEL_IN_URL``; None: the provider's base for side calls)."""
        return (settings.base_url or "").rstrip("/") + self.PATHS[dialect]

    def wire_model(self, settings: ProviderSettings, model: str) -> str:
        """The name the upstream knows the target's model by, in the body (an Azure
        deployment's name); the target's model is still what metering prices."""
        return model

    def check_ready(self, settings: ProviderSettings) -> str | None:
        """What is wrong with a provider's settings once its credentials are read (a missing
        endpoint or key), naming the setting; None when it can be used (not asked in demo
        mode, where the simulator serves it)."""
        return None

    def auth_headers(self, settings: ProviderSettings, key: str | None) -> dict[str, str]:
        """The headers that authenticate the gateway (and pin an API version, where one must)."""
        return {"authorization": f"Bearer {key}"} if key else {}

    def check(self, settings: ProviderSettings) -> None:
        """Refuse, with a ``ValueError`` naming the setting, what this kind cannot work with."""

    def model_endpoint(self, settings: ProviderSettings, model: str) -> tuple[str, str] | None:
        """``(dialect, url)`` for a kind whose URL names the model (Vertex); ``None``: the
        provider's own endpoint serves every model."""
        return None

    def finish_body(self, settings: ProviderSettings, dialect: str, body: bytes) -> bytes:
        """The encoded body as this kind wants it (Vertex moves ``model`` into the URL)."""
        return body

    def token_source(self, settings: ProviderSettings) -> TokenSource | None:
        """Where a provider's expiring credentials come from, when its kind uses such; their
        headers join ``auth_headers``' per request."""
        return None

    def target_url(self, url: str, model: str) -> str:
        """The URL of a request for ``model``, for an API that names the model in its path
        (Bedrock's ``/model/{modelId}/converse-stream``); most take it in the body."""
        return url

    def check_target(self, settings: ProviderSettings, model: str) -> str | None:
        """Why a route's target model cannot be used with this provider (not in an Azure
        deployment map, not a Bedrock model id), naming the setting; None when it can."""
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

"""One ``Settings`` object: built-in defaults, then an optional TOML file, then ``TOKENRELAY_*``
environment variables, so a deployment needs no file at all.

Nested keys use a double underscore: ``TOKENRELAY_ROUTES__FAST__TARGETS="openai:gpt-5.4-mini"``
sets ``routes.fast.targets``. Values are read as JSON when they parse as JSON, else as strings.
Provider keys and base URLs also honour the official SDKs' ``ANTHROPIC_API_KEY``,
``ANTHROPIC_BASE_URL``, ``OPENAI_API_KEY``, ``OPENAI_BASE_URL`` and ``GEMINI_API_KEY`` (or
``GOOGLE_API_KEY``).
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

import msgspec

from tokenrelay import transports
from tokenrelay.admin.settings import AdminSettings
from tokenrelay.balance_settings import GroupSettings, check_groups, expand_keys
from tokenrelay.breaker import BreakerSettings
from tokenrelay.cache.settings import CacheSettings, CacheStoreSettings
from tokenrelay.cors import CorsSettings
from tokenrelay.durations import seconds
from tokenrelay.gate.identity import AuthSettings
from tokenrelay.guard.settings import GuardSettings
from tokenrelay.http_limits import HttpSettings
from tokenrelay.metering.budgets import BudgetSettings
from tokenrelay.metering.pricing import PriceSettings
from tokenrelay.observe.audit import AuditSettings
from tokenrelay.ratelimit.model import LimitSettings, parse_limit
from tokenrelay.resume.settings import ResumeSettings, ResumeStoreSettings
from tokenrelay.screening.screen import ScreenSettings
from tokenrelay.store.database import DEFAULT_DATABASE_URL

ENV_PREFIX = "TOKENRELAY_"
DEFAULT_ANTHROPIC_MODEL = "claude-sonnet-5-5"
DEFAULT_OPENAI_MODEL = "gpt-5.5"
DEFAULT_SYSTEM_PROMPT = "You are a helpful assistant."


# What `log_level` accepts (uvicorn's names; "trace" is uvicorn's level below debug).
LOG_LEVELS = ("critical", "error", "warning", "info", "debug", "trace")


class ConfigError(Exception):
    """A setting that cannot be used; the message names the file or variable to fix."""


class ProviderSettings(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """An upstream API. ``kind`` is how to talk to it (one of ``transports.NAMES``: its
    dialect, URLs and authentication); any OpenAI-compatible server is ``kind = "openai"``
    with its own ``base_url``."""

    kind: str
    # for kind "openai": Chat Completions (``/chat/completions``), Responses (``/responses``),
    # or "auto": Responses for a Responses client, Chat Completions for every other (OpenAI's
    # own API, the built-in provider's default; an OpenAI-compatible server may lack /responses);
    # for kind "bedrock": "chat" (Converse) or "invoke" (InvokeModel with Anthropic's own body)
    api: Literal["chat", "responses", "auto", "invoke"] = "chat"
    base_url: str | None = None
    api_key: str | None = None
    api_key_env: str | None = None  # read the key from this variable instead
    # several keys: one target per key, grouped, each with its own breaker and rate-limit
    # cool-down, named `<provider>#1`, `#2`, ... (docs/balancing.md)
    api_keys: list[str] = msgspec.field(default_factory=list)
    api_keys_env: str | None = None  # read more keys from this variable, comma-separated
    headers: dict[str, str] = msgspec.field(default_factory=dict)
    forward_headers: list[str] = msgspec.field(default_factory=list)  # client header prefixes
    anthropic_version: str = "2023-06-01"
    connect_timeout: float = 10.0
    # kind "vertex" (docs/providers-vertex.md)
    project: str | None = None  # the Google Cloud project id
    # vertex: `us-east5`, `europe-west1`, `us`, `eu` or `global`; bedrock: the AWS region
    # (else AWS_REGION)
    region: str | None = None
    publisher: str | None = None  # `anthropic` or `google`; unset: by the model's name
    credentials_file: str | None = None
    aws_profile: str | None = None  # kind "bedrock": AWS profile to sign with (else the chain)
    # kind "azure" (docs/providers-azure.md): "v1", or a dated version like "2024-10-21"
    api_version: str = "v1"
    # kind "azure": a target's model -> its deployment (empty: the model names the deployment)
    deployments: dict[str, str] = msgspec.field(default_factory=dict)
    azure_ad_token: str | None = None  # kind "azure": a Microsoft Entra token, without api_key
    azure_ad_token_env: str | None = None  # read the Entra token from this variable instead

    def __post_init__(self) -> None:
        transports.check(self)

    def resolved_key(self) -> str | None:
        return self.api_key or None


class TargetSettings(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """One place a route can send a request: a provider, a model, and body fields to add."""

    provider: str
    model: str
    params: dict[str, Any] = msgspec.field(default_factory=dict)
    headers: dict[str, str] = msgspec.field(default_factory=dict)
    first_token_timeout: float | None = None  # overrides the route's for this target
    # consecutive targets with the same group are balanced by the group's strategy
    # (docs/balancing.md); none: a group of one, tried in route order
    group: str | None = None
    weight: Annotated[float, msgspec.Meta(gt=0)] = 1.0  # the target's share in a weighted group


class RouteSettings(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """A name clients ask for, mapped to targets and a server-side system prompt.

    ``allow_client_system`` is off by default: a client-supplied system prompt is refused, not
    merged, because the article's ``systemPrompt`` field lets any caller rewrite the instructions.
    """

    targets: list[TargetSettings]
    system: str | None = DEFAULT_SYSTEM_PROMPT
    allow_client_system: bool = False
    max_tokens: int = 1024  # used when the client does not say
    max_tokens_limit: int | None = None  # a client asking for more is refused
    # Failover before the first token (after it, a failure is an in-band error event).
    first_token_timeout: float = 5.0  # connect + response head + first content, per attempt
    retries: int = 1  # extra tries of the same target before moving on
    retry_backoff: float = 0.2  # seconds, doubled per retry, jittered ±50 %
    budget: float = 20.0  # total seconds spent on failed attempts before giving up
    # Hedging: start the next target when the current one has no token after a delay.
    hedge: bool = False
    hedge_delay: float | None = None  # seconds; None: the target's recent hedge_quantile
    hedge_quantile: Annotated[float, msgspec.Meta(gt=0, lt=1)] = 0.95
    # The gate (see the README's "Identity, limits and screening").
    allow_anonymous: bool | None = None  # None: auth.allow_anonymous
    rate_limit: str | None = None  # per caller on this route, e.g. "60/minute"
    max_concurrent_streams: int | None = None  # per caller; overrides the top-level cap
    screen: ScreenSettings = msgspec.field(default_factory=ScreenSettings)
    # Client header prefixes passed upstream on this route besides the provider's
    # forward_headers (e.g. ["anthropic-beta", "openai-beta"] for coding agents); an
    # anthropic-* header goes to Anthropic upstreams only, an openai-* one to OpenAI only.
    forward_client_headers: list[str] = msgspec.field(default_factory=list)
    # A Responses client's hosted tools (web_search, tool_search, ...) that a target of another
    # API cannot run: refused with a 400 naming them, or dropped (named in a response header)
    hosted_tools: Literal["refuse", "drop"] = "refuse"
    # Resumable streams (docs/resume.md): off unless resume.grace > 0
    resume: ResumeSettings = msgspec.field(default_factory=ResumeSettings)
    # Personal data masked (or refused) before the upstream, the answer checked as it streams
    # (docs/guard.md).
    guard: GuardSettings = msgspec.field(default_factory=GuardSettings)
    # The response cache (docs/cache.md): off unless the route turns it on.
    cache: CacheSettings = msgspec.field(default_factory=CacheSettings)
    # Load balancing: each group's strategy, by the group name its targets give
    groups: dict[str, GroupSettings] = msgspec.field(default_factory=dict)


# The betas an agent names on a provider model go along (docs/provider-models.md).
CLIENT_BETAS = ("anthropic-beta", "openai-beta")

# Provider models asked for by name: the families the price table knows (so every answer is
# priced), matched as shell-style patterns. A pattern with a "/" names "provider/model".
DEFAULT_PROVIDER_MODELS = (
    *("claude-opus-*", "claude-sonnet-*", "claude-haiku-*", "claude-3-*"),
    *("gpt-4*", "gpt-5*", "chatgpt-4o*", "o1*", "o3*", "o4-mini*"),
    *("gemini-1.5-*", "gemini-2*", "gemini-3*"),
)


# The largest output of current models (Claude Code asks for exactly this on the 5.5 models):
# still a bound, so a client cannot ask an upstream for more than any model gives.
AGENT_MAX_TOKENS = 128_000


class ProviderModelSettings(RouteSettings, kw_only=True, forbid_unknown_fields=True):
    """The policy of a request that names a provider model (``claude-...``, ``gpt-...``,
    ``provider/model``) instead of a route: a route's settings with no targets of its own
    (the named model is its one target) and an ``allow`` list of name patterns.

    The defaults suit coding agents, which send their own system prompt and long prompts on
    model names: the client's system prompt is accepted and there is no prompt-length cap, but
    ``max_tokens_limit`` holds and the screen runs as on any route."""

    targets: list[TargetSettings] = msgspec.field(default_factory=list)
    allow: list[str] = msgspec.field(default_factory=lambda: list(DEFAULT_PROVIDER_MODELS))
    system: str | None = None
    allow_client_system: bool = True
    max_tokens: int = 8192
    max_tokens_limit: int | None = AGENT_MAX_TOKENS
    forward_client_headers: list[str] = msgspec.field(default_factory=lambda: list(CLIENT_BETAS))
    hosted_tools: Literal["refuse", "drop"] = "drop"  # an agent's web_search on a Claude model

    def for_target(self, target: TargetSettings) -> RouteSettings:
        """The route settings of one named model: this policy with that model as its target."""
        fields = {name: getattr(self, name) for name in RouteSettings.__struct_fields__}
        return RouteSettings(**{**fields, "targets": [target]})


class TracingSettings(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """OpenTelemetry tracing (``observe.tracing``, the ``otel`` extra). Off by default, and then
    nothing of OpenTelemetry is imported: cold start and the hot path stay as they were."""

    enabled: bool = False
    # The collector's OTLP/HTTP base URL (``http://collector:4318``); None: the exporter's own
    # OTEL_EXPORTER_OTLP_TRACES_ENDPOINT / OTEL_EXPORTER_OTLP_ENDPOINT, else localhost:4318.
    endpoint: str | None = None
    service_name: str = "tokenrelay"
    sample_ratio: Annotated[float, msgspec.Meta(ge=0, le=1)] = 1.0  # of traces we start
    exporter: Literal["otlp", "memory"] = "otlp"  # "memory": for tests, spans kept in-process


class MetricsSettings(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """``GET /metrics`` (``observe.metrics``): one listener per finished request and a
    Prometheus text page. Unauthenticated, like most scrape targets: it names routes, models
    and spend, so keep it off the public side of a proxy, or turn it off."""

    enabled: bool = True
    # Distinct route and model names past the configured ones before a new one is labelled
    # "other" (clients choose provider-model names): bounds the page and Prometheus' series.
    max_model_labels: Annotated[int, msgspec.Meta(ge=0)] = 100
    # Where workers share their numbers (``serve --workers N`` sets it, on /dev/shm when it
    # can); None: this process serves its own.
    shared_dir: str | None = None
    # Seconds between event-loop lag samples (tokenrelay_event_loop_lag_seconds); 0: off.
    loop_lag_interval: Annotated[float, msgspec.Meta(ge=0)] = 0.1


class ResponsesSettings(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """Stored responses (``/v1/responses`` with ``store``, ``previous_response_id``, and
    ``GET``/``DELETE /v1/responses/{id}``; see ``tokenrelay.response_store``). Each is readable
    only by the caller that made it: the same API key, or the same JWT user."""

    store: bool = True  # False: keep nothing, and refuse previous_response_id
    retention: float | str = "30d"  # seconds, or "90m", "12h", "30d"
    # Keep anonymous callers' responses too, each readable from the address that made it (so by
    # anyone behind the same address or proxy); off, they are never stored.
    anonymous: bool = False
    cleanup_interval: Annotated[float, msgspec.Meta(gt=0)] = 3600.0  # seconds between sweeps

    def __post_init__(self) -> None:
        self.retention = self.retention_seconds

    @property
    def retention_seconds(self) -> float:
        return seconds(self.retention, "responses.retention")


class Settings(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    host: str = "127.0.0.1"
    port: int = 8787
    workers: int = 1
    log_level: str = "info"
    max_body_bytes: int = 1_048_576
    idle_timeout: float = 60.0  # no upstream event for this long ends a stream
    shutdown_grace: float = 30.0
    # Seconds between full garbage collections under `serve` (0: CPython's own schedule, which
    # stalls a process holding thousands of streams every few seconds; see gc_schedule).
    gc_full_interval: Annotated[float, msgspec.Meta(ge=0)] = 60.0
    demo: bool | None = None  # None: demo mode exactly when no provider is configured
    allow_provider_models: bool = True  # let `model` name a provider model, not only a route
    # ... under this policy (an allow-list, caps, screening); see ProviderModelSettings.
    provider_models: ProviderModelSettings = msgspec.field(default_factory=ProviderModelSettings)
    breaker: BreakerSettings = msgspec.field(default_factory=BreakerSettings)
    # Where keys and the ledger live, and what instances share (TOKENRELAY_DATABASE_URL,
    # TOKENRELAY_REDIS_URL).
    database_url: str = DEFAULT_DATABASE_URL
    # Where ledger rows wait for the database; default: next to a SQLite file, else
    # ./tokenrelay-spool. Give each host (or container volume) its own, on a local disk.
    spool_dir: str | None = None
    redis_url: str | None = None
    # Who may ask, and how often (TOKENRELAY_ANONYMOUS_LIMIT is the article's 10/minute per IP).
    auth: AuthSettings = msgspec.field(default_factory=AuthSettings)
    anonymous_limit: str = "10/minute"
    user_limit: str | None = None  # requests per user over all routes, e.g. "600/hour"
    org_limit: str | None = None
    user_token_limit: str | None = None  # tokens per user, e.g. "200000/minute"
    org_token_limit: str | None = None
    max_concurrent_streams: int | None = None  # per caller
    limits: LimitSettings = msgspec.field(default_factory=LimitSettings)  # backend knobs
    # Metering: price overrides, spend limits, the audit log.
    pricing: PriceSettings = msgspec.field(default_factory=PriceSettings)
    budgets: list[BudgetSettings] = msgspec.field(default_factory=list)
    audit: AuditSettings = msgspec.field(default_factory=AuditSettings)
    providers: dict[str, ProviderSettings] = msgspec.field(default_factory=dict)
    routes: dict[str, RouteSettings] = msgspec.field(default_factory=dict)
    simulator: dict[str, Any] = msgspec.field(default_factory=dict)  # demo-mode knobs
    cors: CorsSettings = msgspec.field(default_factory=CorsSettings)  # browser pages elsewhere
    tracing: TracingSettings = msgspec.field(default_factory=TracingSettings)  # OpenTelemetry
    metrics: MetricsSettings = msgspec.field(default_factory=MetricsSettings)  # /metrics
    # Bounds at the HTTP edge: header size and count, read timeouts, open connections.
    http: HttpSettings = msgspec.field(default_factory=HttpSettings)
    responses: ResponsesSettings = msgspec.field(default_factory=ResponsesSettings)  # store
    # Bounds on what resumable streams keep, over all routes (docs/resume.md)
    resume: ResumeStoreSettings = msgspec.field(default_factory=ResumeStoreSettings)
    admin: AdminSettings = msgspec.field(default_factory=AdminSettings)  # /admin/v1/
    # Where the response cache keeps answers (routes turn it on: routes.<name>.cache).
    cache: CacheStoreSettings = msgspec.field(default_factory=CacheStoreSettings)

    def configured_providers(self) -> list[str]:
        """Providers that can be called: a key, or an explicit base URL (local servers)."""
        return [
            name
            for name, provider in self.providers.items()
            if provider.resolved_key()
            or provider.azure_ad_token
            or (provider.base_url and name not in _BUILTIN)
            or transports.get(provider.kind).SIGNS  # credentials of its own (AWS)
        ]

    @property
    def demo_mode(self) -> bool:
        return self.demo if self.demo is not None else not self.configured_providers()


_BUILTIN = ("anthropic", "openai", "azure", "gemini")


def _defaults(environ: Mapping[str, str]) -> dict[str, Any]:
    return {
        "providers": {
            "anthropic": {
                "kind": "anthropic",
                "base_url": environ.get("ANTHROPIC_BASE_URL") or "https://api.anthropic.com",
                "api_key_env": "ANTHROPIC_API_KEY",
            },
            "openai": {
                "kind": "openai",
                "base_url": environ.get("OPENAI_BASE_URL") or "https://api.openai.com/v1",
                "api_key_env": "OPENAI_API_KEY",
                "api": "auto",
            },
            "azure": {  # the Azure OpenAI SDKs' variables; see docs/providers-azure.md
                "kind": "azure",
                "base_url": environ.get("AZURE_OPENAI_ENDPOINT") or None,
                "api_key_env": "AZURE_OPENAI_API_KEY",
                "azure_ad_token_env": "AZURE_OPENAI_AD_TOKEN",
            },
            "gemini": {  # Google AI Studio; docs/providers-gemini.md
                "kind": "gemini",
                "api_key_env": (
                    "GOOGLE_API_KEY"
                    if environ.get("GOOGLE_API_KEY") and not environ.get("GEMINI_API_KEY")
                    else "GEMINI_API_KEY"
                ),
            },
        },
        "routes": {
            "default": {
                "targets": [
                    {"provider": "anthropic", "model": DEFAULT_ANTHROPIC_MODEL},
                    {"provider": "openai", "model": DEFAULT_OPENAI_MODEL},
                ],
                "system": DEFAULT_SYSTEM_PROMPT,
                "max_tokens_limit": 4096,
                # The article's cap: a user message of at most 2000 characters.
                "screen": {"max_prompt_chars": 2000},
            },
            "agent": {  # coding agents and SDKs: see docs/agents.md
                "targets": [
                    {"provider": "anthropic", "model": DEFAULT_ANTHROPIC_MODEL},
                    {"provider": "openai", "model": DEFAULT_OPENAI_MODEL},
                ],
                # The agent's own system prompt is the instructions; no cap on its length.
                "system": None,
                "allow_client_system": True,
                "max_tokens": 8192,
                "max_tokens_limit": AGENT_MAX_TOKENS,
                # An agent's harness notes and tool results read like injections to the rules:
                # serve them and record the verdict (metrics, audit line) instead of refusing.
                "screen": {"mode": "flag"},
                # The client's betas (Claude Code's context management, tool search, ...).
                "forward_client_headers": list(CLIENT_BETAS),
                # Codex's web_search / tool_search / namespace tools that a Claude or Chat target
                # cannot run are left out (named in x-tokenrelay-dropped-tools), not refused.
                "hosted_tools": "drop",
            },
        },
    }


def _env_value(raw: str) -> Any:
    try:
        return msgspec.json.decode(raw)
    except msgspec.DecodeError:
        return raw


def _env_overrides(environ: Mapping[str, str]) -> dict[str, Any]:
    tree: dict[str, Any] = {}
    for name, raw in environ.items():
        if not name.startswith(ENV_PREFIX) or name == ENV_PREFIX + "CONFIG":
            continue
        path = name[len(ENV_PREFIX) :].lower().split("__")
        node = tree
        for key in path[:-1]:
            node = node.setdefault(key, {})
            if not isinstance(node, dict):
                raise ConfigError(f"{name}: {key} is set both as a value and as a section")
        node[path[-1]] = _env_value(raw)
    return tree


def _merge(base: dict[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(base.get(key), dict):
            _merge(base[key], value)
        else:
            base[key] = value
    return base


def _target(value: Any) -> Any:
    """Accept ``"provider:model"`` as a short form of ``{"provider": ..., "model": ...}``."""
    if isinstance(value, str):
        provider, sep, model = value.strip().partition(":")
        if not sep or not provider or not model:
            raise ConfigError(f"target {value!r} must look like 'provider:model'")
        return {"provider": provider, "model": model}
    return value


def _comma_list(table: dict[str, Any], key: str) -> None:
    """Accept ``"a,b"`` (an environment variable) for a list of strings."""
    if isinstance(table.get(key), str):
        table[key] = [part.strip() for part in table[key].split(",") if part.strip()]


def _normalize(data: dict[str, Any]) -> dict[str, Any]:
    for table in ("providers", "routes", "provider_models"):
        if not isinstance(data.get(table) or {}, dict):  # TOKENRELAY_ROUTES='[' is a string
            raise ConfigError(f"{table} must be a table (a JSON object in the environment)")
    policy = data.get("provider_models")
    if isinstance(policy, dict) and isinstance(policy.get("allow"), str):  # "claude-*,gpt-*"
        policy["allow"] = [part.strip() for part in policy["allow"].split(",") if part.strip()]
    if isinstance(policy, dict):
        _comma_list(policy, "forward_client_headers")
    for provider in (data.get("providers") or {}).values():
        if isinstance(provider, dict):
            _comma_list(provider, "api_keys")
    for name, route in (data.get("routes") or {}).items():
        if not isinstance(route, dict):
            raise ConfigError(f"routes.{name} must be a table")
        _comma_list(route, "forward_client_headers")
        targets = route.get("targets")
        if isinstance(targets, str):
            targets = [part for part in targets.split(",") if part.strip()]
        if isinstance(targets, list):
            route["targets"] = [_target(target) for target in targets]
    return data


def load(
    path: str | os.PathLike[str] | None = None, environ: Mapping[str, str] | None = None
) -> Settings:
    """Build the settings; a bad value raises ``ConfigError`` naming where it came from."""
    environ = os.environ if environ is None else environ
    data = _defaults(environ)
    path = path or environ.get(ENV_PREFIX + "CONFIG")
    source = "defaults"
    if path:
        import tomllib  # only with a config file: off the start-up path otherwise

        source = str(path)
        try:
            file_data = tomllib.loads(Path(path).read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ConfigError(f"config file {path} does not exist") from None
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise ConfigError(f"config file {path} is not valid TOML: {exc}") from None
        _merge(data, file_data)
    overrides = _env_overrides(environ)
    if overrides:
        source += " + TOKENRELAY_* environment"
    _merge(data, overrides)
    try:
        settings = msgspec.convert(_normalize(data), Settings, strict=False)
    except msgspec.ValidationError as exc:
        raise ConfigError(f"invalid setting ({source}): {exc}") from None
    problem = expand_keys(settings, environ)  # before the single keys: a key list wins
    if problem:
        raise ConfigError(problem)
    for provider in settings.providers.values():
        if not provider.api_key and provider.api_key_env:
            provider.api_key = environ.get(provider.api_key_env) or None
        if not provider.azure_ad_token and provider.azure_ad_token_env:
            provider.azure_ad_token = environ.get(provider.azure_ad_token_env) or None
    _check(settings)
    return settings


def _limit_strings(settings: Settings) -> list[tuple[str, str]]:
    names = ["anonymous_limit", "user_limit", "org_limit", "user_token_limit", "org_token_limit"]
    found = [(name, getattr(settings, name)) for name in names if getattr(settings, name)]
    found += [
        (f"routes.{name}.rate_limit", route.rate_limit)
        for name, route in settings.routes.items()
        if route.rate_limit
    ]
    if settings.provider_models.rate_limit:
        found.append(("provider_models.rate_limit", settings.provider_models.rate_limit))
    return found


def _check(settings: Settings) -> None:
    if settings.log_level.lower() not in LOG_LEVELS:
        levels = ", ".join(LOG_LEVELS)
        raise ConfigError(f"log_level {settings.log_level!r} is not one of {levels}")
    usable = settings.configured_providers()
    for name, provider in settings.providers.items():
        if settings.demo_mode or (name in _BUILTIN and name not in usable):
            continue  # the simulator serves it, or it is not set up: its targets are skipped
        problem = transports.get(provider.kind).check_ready(provider)
        if problem:
            raise ConfigError(f"providers.{name}: {problem}")
    for name, route in settings.routes.items():
        if not route.targets:
            raise ConfigError(f"route {name!r} has no targets")
        problem = check_groups(name, route)
        if problem:
            raise ConfigError(problem)
        for target in route.targets:
            if target.provider not in settings.providers:
                known = ", ".join(sorted(settings.providers))
                raise ConfigError(
                    f"route {name!r} names provider {target.provider!r}; known providers: {known}"
                )
            provider = settings.providers[target.provider]
            try:  # a kind whose URL names the model refuses one it cannot address
                transports.get(provider.kind).model_endpoint(provider, target.model)
            except ValueError as exc:
                raise ConfigError(f"route {name!r}, provider {target.provider!r}: {exc}") from None
            problem = transports.get(provider.kind).check_target(provider, target.model)
            if problem:
                raise ConfigError(
                    f"route {name!r}, target {target.provider}:{target.model}: {problem}"
                )
    if settings.provider_models.targets:
        raise ConfigError(
            "provider_models has no targets: the model a client names is its one target"
        )
    if settings.provider_models.groups:
        raise ConfigError("provider_models has no groups: the model a client names is one target")
    for name, limit in _limit_strings(settings):
        try:
            parse_limit(limit)
        except ValueError:
            raise ConfigError(
                f"{name} = {limit!r} is not a limit; write it like '10/minute' or "
                "'100/hour;1000/day'"
            ) from None
    # The top-level names are the documented ones; the limiter reads its own settings.
    settings.limits = msgspec.structs.replace(
        settings.limits, anonymous_limit=settings.anonymous_limit, redis_url=settings.redis_url
    )
    problem = settings.cors.check()
    if problem:
        raise ConfigError(problem)
    if settings.tracing.enabled and not _installed("opentelemetry", "opentelemetry.sdk"):
        raise ConfigError("tracing.enabled needs OpenTelemetry: pip install 'tokenrelay[otel]'")
    if not 0 <= settings.port <= 65535:
        raise ConfigError(f"port {settings.port} is out of range")
    if settings.max_body_bytes < 1024:
        raise ConfigError("max_body_bytes must be at least 1024")


def _installed(*modules: str) -> bool:
    """Whether the modules can be imported, without importing them (the parent of a dotted
    name is imported, so parents come first)."""
    return all(importlib.util.find_spec(name) is not None for name in modules)

"""Load balancing's settings and what loading them does: a provider's key list becomes one
provider per key, and a route's groups are checked (docs/balancing.md).

A provider with ``api_keys = ["k1", "k2"]`` becomes ``name#1`` and ``name#2`` (the original
``name`` keeps the first key, for provider models asked for by name), and each route target on
``name`` becomes one target per key, grouped, so each key has its own breaker, its own
rate-limit cool-down and its own line in ``x-tokenrelay-attempts`` and the metrics; the keys
themselves are never shown.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Annotated, Any, Literal, Protocol

import msgspec

Strategy = Literal["weighted", "least_busy", "latency", "prefix_affinity"]
KEY_SEPARATOR = "#"  # provider "openai" with several keys: "openai#1", "openai#2", ...


class GroupSettings(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """How a route picks among the consecutive targets of one group (``group = "<name>"``)."""

    # weighted: at random by each target's weight; least_busy: fewest streams in flight;
    # latency: lowest recent median time to first token; prefix_affinity: a consistent hash of
    # the system prompt and first messages, over the healthy targets
    strategy: Strategy = "weighted"
    # latency: the share of requests sent to another target than the fastest, so a deployment
    # that recovered is measured again
    explore: Annotated[float, msgspec.Meta(ge=0, lt=1)] = 0.05
    # latency: the last observations of a target whose median is its recent time to first
    # token (a target never measured is tried first)
    latency_window: Annotated[int, msgspec.Meta(ge=1, le=256)] = 10
    # prefix_affinity: leading messages hashed with the system prompt
    affinity_messages: Annotated[int, msgspec.Meta(ge=0)] = 1
    # seconds a target answering 429 without retry-after is passed over
    cooldown: Annotated[float, msgspec.Meta(gt=0)] = 5.0


class _Target(Protocol):
    provider: str
    model: str
    group: str | None
    weight: float


class _Route(Protocol):
    @property
    def targets(self) -> Sequence[_Target]: ...
    @property
    def groups(self) -> Mapping[str, GroupSettings]: ...


class _Settings(Protocol):
    """The parts of ``settings.Settings`` read here (a Protocol: settings imports this module)."""

    @property
    def providers(self) -> dict[str, Any]: ...
    @property
    def routes(self) -> Mapping[str, Any]: ...


def key_list(provider: object, environ: Mapping[str, str]) -> list[str]:
    """A provider's ``api_keys`` (a list, or a comma list from the environment) and the keys
    of the variable ``api_keys_env`` names, in that order, each once."""
    given = getattr(provider, "api_keys", [])
    keys = [part.strip() for part in given.split(",")] if isinstance(given, str) else list(given)
    variable = getattr(provider, "api_keys_env", None)
    if variable:
        keys += [part.strip() for part in environ.get(variable, "").split(",")]
    return list(dict.fromkeys(key for key in keys if key))


def expand_keys(settings: _Settings, environ: Mapping[str, str]) -> str | None:
    """One provider per key of a provider's key list, and one grouped target per key wherever
    a route names that provider; a problem is returned as a message, else None."""
    expanded: dict[str, list[str]] = {}
    for name, provider in list(settings.providers.items()):
        keys = key_list(provider, environ)
        provider.api_keys = keys
        if not keys:
            continue
        if provider.api_key and provider.api_key not in keys:
            return f"providers.{name}: set api_key or api_keys, not both"
        if KEY_SEPARATOR in name:
            return f"providers.{name}: a provider name with a key list may not contain '#'"
        provider.api_key = keys[0]
        if len(keys) < 2:
            continue
        names = []
        for number, key in enumerate(keys, 1):
            each = f"{name}{KEY_SEPARATOR}{number}"
            settings.providers[each] = msgspec.structs.replace(
                provider, api_key=key, api_key_env=None, api_keys=[], api_keys_env=None
            )
            names.append(each)
        expanded[name] = names
    if expanded:
        for route in settings.routes.values():
            route.targets = [
                each for target in route.targets for each in _per_key(target, expanded)
            ]
    return None


def _per_key(target: Any, expanded: Mapping[str, list[str]]) -> list[Any]:
    """The target once per key of its provider, in a group: its own, or one named after it.
    Its weight is shared among its keys, so its part of its group is kept."""
    names = expanded.get(target.provider)
    if names is None:
        return [target]
    group = target.group or f"{target.provider}:{target.model}"
    weight = target.weight / len(names)
    return [
        msgspec.structs.replace(target, provider=name, group=group, weight=weight) for name in names
    ]


def check_groups(name: str, route: _Route) -> str | None:
    """Whether a route's groups are well formed: each group's targets consecutive, and every
    ``groups`` entry a group some target names. A problem is returned as a message."""
    seen: list[str] = []
    previous: str | None = None
    for target in route.targets:
        group = target.group
        if group is not None and group != previous:
            if group in seen:
                return (
                    f"route {name!r}: the targets of group {group!r} are not consecutive; list "
                    "a group's targets one after another (groups fail over in route order)"
                )
            seen.append(group)
        previous = group
    for group in route.groups:
        if group not in seen:
            known = ", ".join(repr(g) for g in seen) or "none"
            return (
                f"route {name!r}: groups.{group} configures a group no target names "
                f"(set group = {group!r} on its targets; groups of this route: {known})"
            )
    return None

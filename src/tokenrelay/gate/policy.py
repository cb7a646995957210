"""What a key carries beyond its identity: allowed models, its own limits, and those of its user
and organization (stored by the admin API, ``tokenrelay.admin``), as the gate enforces them.

A ``KeyPolicy`` is built once per key lookup and cached with the key (``gate.keys``), so a
change made through any instance is enforced everywhere within the key cache TTL, and a request
pays only for reading a few attributes of a shared object.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import msgspec

from tokenrelay.model import GatewayError
from tokenrelay.ratelimit import Rule, Subject
from tokenrelay.ratelimit.model import parse_limit


class Limits(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Rate limits of a key, user or organization, in the limiter's syntax; ``None``: none."""

    requests: str | None = None  # e.g. "60/minute"
    tokens: str | None = None  # e.g. "100000/minute"
    concurrent_streams: int | None = None

    def __post_init__(self) -> None:
        for field, value in (("requests", self.requests), ("tokens", self.tokens)):
            if value is not None:
                _check_rate(field, value)
        if self.concurrent_streams is not None and not 1 <= self.concurrent_streams <= 100_000:
            raise ValueError("limits.concurrent_streams must be between 1 and 100000, or null")

    @property
    def empty(self) -> bool:
        return self.requests is None and self.tokens is None and self.concurrent_streams is None


def _check_rate(field: str, value: str) -> None:
    try:
        items = parse_limit(value)
    except ValueError:
        items = ()
    if len(value) > 64 or not items:
        raise ValueError(
            f"limits.{field} must be a rate such as '60/minute' or '1000/hour', not {value!r}"
        )


def limits_from_json(text: str | None) -> Limits | None:
    """A ``limits`` column; ``None`` for no row, JSON null or no limit at all."""
    if not text:
        return None
    limits = msgspec.json.decode(text, type=Limits | None)
    return None if limits is None or limits.empty else limits


def limits_as_dict(limits: Limits | None) -> dict[str, Any]:
    limits = limits or Limits()
    return {
        "requests": limits.requests,
        "tokens": limits.tokens,
        "concurrent_streams": limits.concurrent_streams,
    }


class KeyPolicy(msgspec.Struct, frozen=True, kw_only=True):
    """A key's models and limits, with its user's and organization's, and whether either is
    disabled (checked when the key is identified)."""

    models: frozenset[str] | None = None  # None: every model
    expires_at: float | None = None  # Unix seconds
    key: Limits | None = None
    user: Limits | None = None
    org: Limits | None = None
    user_disabled: bool = False
    org_disabled: bool = False

    def scoped(
        self, key_id: str, user: str | None, org: str | None
    ) -> Iterator[tuple[Subject, Limits]]:
        """Each limited subject with its limits: the key, its user, its organization."""
        if self.key is not None:
            yield Subject("key", key_id), self.key
        if self.user is not None and user is not None:
            yield Subject("user", user), self.user
        if self.org is not None and org is not None:
            yield Subject("org", org), self.org


NO_POLICY = KeyPolicy()  # a key with nothing beyond its identity: the gate skips the checks


def request_rules(policy: KeyPolicy, key_id: str, user: str | None, org: str | None) -> list[Rule]:
    """The key's, user's and org's own request limits, over every route."""
    return [
        Rule(subject, limits.requests, "policy")
        for subject, limits in policy.scoped(key_id, user, org)
        if limits.requests is not None
    ]


def token_rules(policy: KeyPolicy, key_id: str, user: str | None, org: str | None) -> list[Rule]:
    return [
        Rule(subject, limits.tokens, "policy")
        for subject, limits in policy.scoped(key_id, user, org)
        if limits.tokens is not None
    ]


def stream_caps(
    policy: KeyPolicy, key_id: str, user: str | None, org: str | None
) -> list[tuple[Subject, int]]:
    """Concurrent-stream caps of the key, its user and its org."""
    return [
        (subject, limits.concurrent_streams)
        for subject, limits in policy.scoped(key_id, user, org)
        if limits.concurrent_streams is not None
    ]


def check_model(policy: KeyPolicy, key_id: str, route: str, model: str) -> None:
    """A 403 when the key may not ask for ``model`` (the route name or provider model asked)."""
    allowed = policy.models
    if allowed is None or model in allowed or route in allowed:
        return
    raise GatewayError(
        "permission",
        f"API key {key_id} may not use model {model!r} (allowed: "
        f"{', '.join(sorted(allowed)) or 'none'}); ask for one of those",
        403,
        param="model",
    )

"""The admin API's documents: request bodies (decoded strictly: unknown fields, wrong types and
out-of-bound values are refused naming the field) and responses. Names, metadata and lists are
bounded in length and count, since each becomes a database row. The OpenAPI document is
generated from these (``tokenrelay.admin_openapi``)."""

from __future__ import annotations

from decimal import Decimal, InvalidOperation
from typing import Annotated, Any, Literal

import msgspec
from msgspec import UNSET, Meta, UnsetType

from tokenrelay.admin.roles import Role
from tokenrelay.gate.policy import Limits

Name = Annotated[str, Meta(min_length=1, max_length=200)]
Email = Annotated[str, Meta(min_length=3, max_length=320, pattern="^[^@\\s]+@[^@\\s]+$")]
Ident = Annotated[str, Meta(min_length=1, max_length=64)]
MetaValue = Annotated[str, Meta(max_length=1000)] | int | float | bool | None
Metadata = Annotated[
    dict[Annotated[str, Meta(min_length=1, max_length=64)], MetaValue], Meta(max_length=32)
]
Names = Annotated[list[Annotated[str, Meta(min_length=1, max_length=200)]], Meta(max_length=100)]
Money = Annotated[str, Meta(pattern="^[0-9]{1,9}(\\.[0-9]{1,9})?$")]  # "10.00", up to $1e9
AlertAt = Annotated[
    list[Annotated[float, Meta(gt=0, le=1)]], Meta(max_length=10)
]  # shares of the amount
Scope = Literal["key", "user", "org"]
Period = Literal["day", "month"]
Time = str  # ISO-8601 UTC, "2026-01-31T12:00:00Z"

# --- requests ------------------------------------------------------------------------------------


class Body(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """A request body: unknown fields are an error, not silently ignored."""


class OrgCreate(Body):
    name: Name
    metadata: Metadata = msgspec.field(default_factory=dict)
    limits: Limits | None = None


class OrgPatch(Body):
    name: Name | UnsetType = UNSET
    disabled: bool | UnsetType = UNSET
    metadata: Metadata | UnsetType = UNSET
    limits: Limits | UnsetType | None = UNSET


class UserCreate(Body):
    org_id: Ident
    name: Name
    email: Email | None = None
    metadata: Metadata = msgspec.field(default_factory=dict)
    limits: Limits | None = None


class UserPatch(Body):
    name: Name | UnsetType = UNSET
    email: Email | UnsetType | None = UNSET
    disabled: bool | UnsetType = UNSET
    metadata: Metadata | UnsetType = UNSET
    limits: Limits | UnsetType | None = UNSET


class KeyCreate(Body):
    name: Name
    org_id: Ident | None = None
    user_id: Ident | None = None
    role: Role | None = None
    routes: Names | None = None  # None: every route
    models: Names | None = None  # None: every model
    expires_at: Time | None = None
    limits: Limits | None = None
    metadata: Metadata = msgspec.field(default_factory=dict)


class KeyPatch(Body):
    name: Name | UnsetType = UNSET
    routes: Names | UnsetType | None = UNSET
    models: Names | UnsetType | None = UNSET
    expires_at: Time | UnsetType | None = UNSET
    limits: Limits | UnsetType | None = UNSET
    metadata: Metadata | UnsetType = UNSET
    role: Role | UnsetType | None = UNSET


class KeyRotate(Body):
    overlap_seconds: Annotated[int, Meta(ge=0, le=30 * 86400)] = 3600


class BudgetCreate(Body):
    scope: Scope
    subject_id: Ident
    amount_usd: Money
    period: Period = "month"
    hard: bool = True
    alert_at: AlertAt = msgspec.field(default_factory=lambda: [0.8])


class BudgetPatch(Body):
    amount_usd: Money | UnsetType = UNSET
    period: Period | UnsetType = UNSET
    hard: bool | UnsetType = UNSET
    alert_at: AlertAt | UnsetType = UNSET


def money(text: str) -> Decimal:
    try:
        return Decimal(text)
    except InvalidOperation:  # pragma: no cover - the pattern already refused it
        raise ValueError(f"not an amount: {text!r}") from None


# --- responses -----------------------------------------------------------------------------------


class Me(msgspec.Struct, kw_only=True):
    role: Role
    org_id: str | None
    key_id: str


class LimitsOut(msgspec.Struct, kw_only=True):
    requests: str | None = None
    tokens: str | None = None
    concurrent_streams: int | None = None


class Org(msgspec.Struct, kw_only=True):
    id: str
    name: str
    disabled: bool
    metadata: dict[str, Any]
    limits: LimitsOut
    created_at: Time
    updated_at: Time


class User(msgspec.Struct, kw_only=True):
    id: str
    org_id: str
    name: str
    email: str | None
    disabled: bool
    metadata: dict[str, Any]
    limits: LimitsOut
    created_at: Time
    updated_at: Time


class Key(msgspec.Struct, kw_only=True):
    """A key as listed: its display prefix, never its secret or hash."""

    id: str
    prefix: str
    name: str | None
    org_id: str | None
    user_id: str | None
    role: Role | None
    routes: list[str] | None
    models: list[str] | None
    expires_at: Time | None
    limits: LimitsOut
    metadata: dict[str, Any]
    created_at: Time
    revoked_at: Time | None
    rotated_from: str | None = None
    # The latest request with the key, written in batches every few seconds
    # (auth.key_last_used_interval), so up to that late; null: never used since recorded.
    last_used_at: Time | None = None
    rpm: int | None = None  # the CLI's older requests-per-minute limit of the key (--rpm)


class KeySecret(msgspec.Struct, kw_only=True):
    """A new key and its secret: the only time the secret is shown."""

    key: Key
    secret: str


class KeyRotated(msgspec.Struct, kw_only=True):
    key: Key
    secret: str
    old_key_expires_at: Time


class Budget(msgspec.Struct, kw_only=True):
    id: str
    scope: Scope
    subject_id: str
    amount_usd: str
    period: Period
    hard: bool
    alert_at: list[float]
    spent_usd: str
    remaining_usd: str
    resets_at: Time
    created_at: Time
    updated_at: Time


class Actor(msgspec.Struct, kw_only=True):
    key_id: str
    role: str


class AuditEntry(msgspec.Struct, kw_only=True):
    id: str
    at: Time
    actor: Actor
    action: str
    target_type: str
    target_id: str | None
    org_id: str | None
    before: dict[str, Any] | None
    after: dict[str, Any] | None


class RequestRow(msgspec.Struct, kw_only=True):
    """A ledger row of a key, without anything the caller wrote."""

    request_id: str
    created_at: Time
    route: str
    model: str | None
    outcome: str
    status: int
    input_tokens: int
    output_tokens: int
    cost_usd: str
    ttft_ms: float | None


class LimitState(msgspec.Struct, kw_only=True):
    """One window of a limit now (a limit such as "10/minute;100/day" has one per window),
    read without counting a request."""

    subject: str  # "key:<id>", "user:<id>", "org:<id>"
    kind: Literal["requests", "tokens", "concurrent_streams"]
    limit: str  # as configured
    window_seconds: int | None  # None for concurrent streams, which have no window
    quota: int  # units allowed in the window (streams at a time)
    used: int | None  # None: the limiter (Redis) could not be read
    remaining: int | None
    reset_seconds: float | None  # until the oldest unit leaves the window; 0 when none is used


class KeyLimits(msgspec.Struct, kw_only=True):
    key_id: str
    limits: list[LimitState]


class Spend(msgspec.Struct, kw_only=True):
    scope: Scope
    subject_id: str
    budgets: list[Budget]


class OrgPage(msgspec.Struct, kw_only=True):
    data: list[Org]
    next: str | None


class UserPage(msgspec.Struct, kw_only=True):
    data: list[User]
    next: str | None


class KeyPage(msgspec.Struct, kw_only=True):
    data: list[Key]
    next: str | None


class BudgetPage(msgspec.Struct, kw_only=True):
    data: list[Budget]
    next: str | None


class AuditPage(msgspec.Struct, kw_only=True):
    data: list[AuditEntry]
    next: str | None


class RequestPage(msgspec.Struct, kw_only=True):
    data: list[RequestRow]

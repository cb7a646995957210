"""Who may do what in the admin API: one small explicit table, read by every operation.

A global ``admin`` may do everything; an ``org_admin`` manages its own organization's users, keys
and budgets (never raising what a global admin set for it: see ``tenants`` and ``budgets``); a
``reader`` reads, globally or, when its key has an org, that org only. Anything outside the
caller's org is a 404, never a 403, so that other orgs' names and ids do not leak; a 403 means the
role lacks the capability on its own scope.
"""

from __future__ import annotations

from typing import Literal, get_args

import msgspec

from tokenrelay.model import GatewayError

Role = Literal["admin", "org_admin", "reader"]
ROLES: tuple[str, ...] = get_args(Role)
CLI_ACTOR = "cli"  # the actor of changes made with ``tokenrelay keys``

Capability = Literal[
    "org.create",
    "org.read",
    "org.update",
    "org.disable",
    "org.raise_limits",
    "user.create",
    "user.read",
    "user.update",
    "key.create",
    "key.read",
    "key.update",
    "key.revoke",
    "key.rotate",
    "budget.create",
    "budget.read",
    "budget.update",
    "budget.delete",
    "budget.raise",
    "audit.read",
]

_READ: frozenset[Role] = frozenset({"admin", "org_admin", "reader"})
_MANAGE: frozenset[Role] = frozenset({"admin", "org_admin"})
_GLOBAL: frozenset[Role] = frozenset({"admin"})

# capability -> the roles that have it (on their own scope)
CAPABILITIES: dict[Capability, frozenset[Role]] = {
    "org.create": _GLOBAL,
    "org.read": _READ,
    "org.update": _MANAGE,  # name, metadata, lowering limits
    "org.disable": _GLOBAL,  # disabling or enabling an org
    "org.raise_limits": _GLOBAL,  # setting an org's limits above what they were
    "user.create": _MANAGE,
    "user.read": _READ,
    "user.update": _MANAGE,
    "key.create": _MANAGE,
    "key.read": _READ,
    "key.update": _MANAGE,
    "key.revoke": _MANAGE,
    "key.rotate": _MANAGE,
    "budget.create": _MANAGE,
    "budget.read": _READ,
    "budget.update": _MANAGE,
    "budget.delete": _MANAGE,
    "budget.raise": _GLOBAL,  # an org budget above (or softer than) what a global admin set
    "audit.read": _READ,
}


class Caller(msgspec.Struct, frozen=True, kw_only=True):
    """Who makes an admin call: a key (or ``cli``, or the bootstrap key) with a role, and the
    org it is confined to (``None``: global)."""

    key_id: str
    role: Role
    org_id: str | None = None

    @property
    def is_global(self) -> bool:
        return self.org_id is None


CLI = Caller(key_id=CLI_ACTOR, role="admin")


def allowed(caller: Caller, capability: Capability) -> bool:
    return caller.role in CAPABILITIES[capability]


def require(caller: Caller, capability: Capability, what: str) -> None:
    """A 403 naming what the role may not do."""
    if not allowed(caller, capability):
        raise GatewayError(
            "permission",
            f"a key with role {caller.role!r} may not {what}; use a key with role "
            + " or ".join(repr(role) for role in sorted(CAPABILITIES[capability])),
            403,
        )


def sees(caller: Caller, org_id: str | None) -> bool:
    """Whether ``org_id`` (of a row) is inside the caller's scope."""
    return caller.org_id is None or org_id == caller.org_id


def not_found(kind: str, ident: str) -> GatewayError:
    return GatewayError("not_found", f"no {kind} has the id {ident!r}", 404)


def check_visible(caller: Caller, org_id: str | None, kind: str, ident: str) -> None:
    """A 404 for a row outside the caller's org, exactly as for one that does not exist."""
    if not sees(caller, org_id):
        raise not_found(kind, ident)

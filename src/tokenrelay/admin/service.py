"""The admin service: one object over the database bundling orgs and users, keys, budgets, the
audit trail and the views, used by the HTTP API and the CLI alike, and how a credential becomes
a ``Caller``."""

from __future__ import annotations

import hashlib
import hmac

from tokenrelay.admin.budgets import BudgetAdmin
from tokenrelay.admin.keys import KeyAdmin
from tokenrelay.admin.roles import Caller, Role
from tokenrelay.admin.tenants import Tenants
from tokenrelay.gate.identity import refuse_unusable
from tokenrelay.gate.keys import PREFIX_LENGTH, KeyStore, looks_like_key
from tokenrelay.model import GatewayError
from tokenrelay.store import Database

BOOTSTRAP_ACTOR = "bootstrap"
_ROLES: dict[str, Role] = {
    "admin": "admin",
    "org_admin": "org_admin",
    "reader": "reader",
}  # the actor of changes made with the bootstrap admin key


class AdminService:
    def __init__(self, db: Database, keys: KeyStore, bootstrap_digest: str | None = None) -> None:
        self.db = db
        self.keys = keys
        self.tenants = Tenants(db, changed=keys.forget)
        self.key_admin = KeyAdmin(db, keys)
        self.budgets = BudgetAdmin(db)
        # sha256 of the bootstrap admin key (``admin.bootstrap_key_env``), hashed at start-up
        self.bootstrap_digest = bootstrap_digest

    async def caller(self, token: str | None) -> Caller:
        """The caller a bearer token names: 401 without a valid key, 403 for a key with no
        admin role (or whose org or user is disabled)."""
        if token is None:
            raise GatewayError(
                "authentication",
                "the admin API needs an admin key as 'Authorization: Bearer <key>' (create one "
                "with 'tokenrelay keys create --role admin')",
                401,
            )
        if self.bootstrap_digest is not None and hmac.compare_digest(
            hashlib.sha256(token.encode()).hexdigest(), self.bootstrap_digest
        ):
            return Caller(key_id=BOOTSTRAP_ACTOR, role="admin")
        key = await self.keys.lookup(token) if looks_like_key(token) else None
        if key is None:
            raise GatewayError("authentication", "the API key is unknown or revoked", 401)
        refuse_unusable(key, token[:PREFIX_LENGTH])
        self.keys.last_used.mark(key.id)
        role = _ROLES.get(key.role or "")
        if role is None:
            raise GatewayError(
                "permission",
                f"API key {key.prefix}… has no admin role; an admin creates keys with a role "
                "('admin', 'org_admin' or 'reader')",
                403,
            )
        org = None if role == "admin" else key.org
        return Caller(key_id=key.id, role=role, org_id=org)

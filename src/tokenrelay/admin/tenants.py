"""Organizations and their users: create, list, read, update, disable. Each change is written
with its audit entry in one transaction; keys read the disabled state and limits through their
lookup (``gate.keys``), so a change reaches every instance within the key cache TTL.

An org admin may rename its org, change its metadata and lower its limits, never raise them past
``limits_ceiling`` (what a global admin last set) nor enable or disable it.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from msgspec import UNSET

from tokenrelay.admin import trail
from tokenrelay.admin.roles import Caller, check_visible, not_found, require
from tokenrelay.admin.rows import dumps, iso_now, limits_json, limits_out, new_id, now, page
from tokenrelay.admin.schema import (
    Org,
    OrgCreate,
    OrgPage,
    OrgPatch,
    User,
    UserCreate,
    UserPage,
    UserPatch,
)
from tokenrelay.gate.policy import Limits, limits_from_json
from tokenrelay.model import GatewayError
from tokenrelay.store import Database, Row


def org_out(row: Row) -> Org:
    return Org(
        id=row["id"],
        name=row["name"],
        disabled=bool(row["disabled"]),
        metadata=json.loads(row["metadata"] or "{}"),
        limits=limits_out(row["limits"]),
        created_at=iso_now(row["created_at"]),
        updated_at=iso_now(row["updated_at"]),
    )


def user_out(row: Row) -> User:
    return User(
        id=row["id"],
        org_id=row["org_id"],
        name=row["name"],
        email=row["email"],
        disabled=bool(row["disabled"]),
        metadata=json.loads(row["metadata"] or "{}"),
        limits=limits_out(row["limits"]),
        created_at=iso_now(row["created_at"]),
        updated_at=iso_now(row["updated_at"]),
    )


def above(limits: Limits | None, ceiling: Limits | None) -> list[str]:
    """The fields of ``limits`` looser than ``ceiling`` (a missing limit is the loosest)."""
    if ceiling is None:
        return []
    limits = limits or Limits()
    loose = []
    for field in ("requests", "tokens"):
        cap, value = getattr(ceiling, field), getattr(limits, field)
        if cap is not None and (value is None or _rate(value) > _rate(cap)):
            loose.append(field)
    cap_streams = ceiling.concurrent_streams
    if cap_streams is not None and (
        limits.concurrent_streams is None or limits.concurrent_streams > cap_streams
    ):
        loose.append("concurrent_streams")
    return loose


def _rate(limit: str) -> float:
    """A rate in units per second, to compare '60/minute' with '2/second'."""
    from tokenrelay.ratelimit.model import parse_limit

    return min(item.amount / item.get_expiry() for item in parse_limit(limit))


class Tenants:
    def __init__(self, db: Database, changed: Callable[[], None] | None = None) -> None:
        self.db = db
        # Called after an org or user changed: drops this instance's cached keys and JWT
        # tenants, so it enforces the change at once (the others within the key cache TTL).
        self.changed = changed

    # --- orgs ------------------------------------------------------------------------------------

    async def org_row(self, caller: Caller, org_id: str) -> Row:
        check_visible(caller, org_id, "org", org_id)
        row = await self.db.fetch_one("SELECT * FROM orgs WHERE id = ?", (org_id,))
        if row is None:
            raise not_found("org", org_id)
        return row

    async def create_org(self, caller: Caller, body: OrgCreate) -> Org:
        require(caller, "org.create", "create organizations")
        at = now()
        limits = limits_json(body.limits)
        org_id = new_id("org")
        async with self.db.transaction() as tx:
            await tx.execute(
                "INSERT INTO orgs (id, name, disabled, metadata, limits, limits_ceiling, "
                "created_at, updated_at) VALUES (?, ?, 0, ?, ?, ?, ?, ?)",
                (org_id, body.name, dumps(body.metadata), limits, limits, at, at),
            )
            row = await tx.fetch_one("SELECT * FROM orgs WHERE id = ?", (org_id,))
            assert row is not None
            org = org_out(row)
            await trail.record(tx, caller, "org.create", "org", org_id, org_id, None, org)
        return org

    async def list_orgs(self, caller: Caller, cursor: str | None, limit: int) -> OrgPage:
        require(caller, "org.read", "read organizations")
        where, params = ([], []) if caller.org_id is None else (["id = ?"], [caller.org_id])
        rows, more = await page(self.db, "orgs", where, params, cursor, limit)
        return OrgPage(data=[org_out(row) for row in rows], next=more)

    async def get_org(self, caller: Caller, org_id: str) -> Org:
        require(caller, "org.read", "read organizations")
        return org_out(await self.org_row(caller, org_id))

    async def update_org(self, caller: Caller, org_id: str, body: OrgPatch) -> Org:
        row = await self.org_row(caller, org_id)  # a 404 outside the caller's org comes first
        require(caller, "org.update", "change organizations")
        before = org_out(row)
        sets: dict[str, Any] = {}
        if body.name is not UNSET:
            sets["name"] = body.name
        if body.metadata is not UNSET:
            sets["metadata"] = dumps(body.metadata)
        if body.disabled is not UNSET and body.disabled != bool(row["disabled"]):
            require(caller, "org.disable", "enable or disable an organization")
            sets["disabled"] = int(body.disabled)
        if body.limits is not UNSET:
            ceiling = limits_from_json(row["limits_ceiling"])
            loose = above(body.limits, ceiling)
            if loose:
                require(
                    caller,
                    "org.raise_limits",
                    f"raise the organization's limits ({', '.join(loose)}) above what a global "
                    "admin set",
                )
            sets["limits"] = limits_json(body.limits)
            if caller.role == "admin":
                sets["limits_ceiling"] = sets["limits"]
        org: Org = await self._update("orgs", "org", caller, org_id, org_id, before, sets)
        return org

    async def _update(
        self,
        table: str,
        kind: str,
        caller: Caller,
        ident: str,
        org_id: str,
        before: Org | User,
        sets: dict[str, Any],
    ) -> Any:
        out = org_out if table == "orgs" else user_out
        if not sets:
            return before
        sets["updated_at"] = now()
        assignments = ", ".join(f"{column} = ?" for column in sets)
        async with self.db.transaction() as tx:
            await tx.execute(
                f"UPDATE {table} SET {assignments} WHERE id = ?", (*sets.values(), ident)
            )
            row = await tx.fetch_one(f"SELECT * FROM {table} WHERE id = ?", (ident,))
            assert row is not None
            after = out(row)
            await trail.record(tx, caller, f"{kind}.update", kind, ident, org_id, before, after)
        if self.changed is not None:
            self.changed()
        return after

    # --- users -----------------------------------------------------------------------------------

    async def user_row(self, caller: Caller, user_id: str) -> Row:
        row = await self.db.fetch_one("SELECT * FROM users WHERE id = ?", (user_id,))
        if row is None:
            raise not_found("user", user_id)
        check_visible(caller, row["org_id"], "user", user_id)
        return row

    async def create_user(self, caller: Caller, body: UserCreate) -> User:
        require(caller, "user.create", "create users")
        try:
            await self.org_row(caller, body.org_id)
        except GatewayError as error:  # a 400 naming the field: the path itself was fine
            raise GatewayError("invalid_request", error.message, 400, param="org_id") from None
        at = now()
        user_id = new_id("usr")
        async with self.db.transaction() as tx:
            await tx.execute(
                "INSERT INTO users (id, org_id, name, email, disabled, metadata, limits, "
                "created_at, updated_at) VALUES (?, ?, ?, ?, 0, ?, ?, ?, ?)",
                (
                    user_id,
                    body.org_id,
                    body.name,
                    body.email,
                    dumps(body.metadata),
                    limits_json(body.limits),
                    at,
                    at,
                ),
            )
            row = await tx.fetch_one("SELECT * FROM users WHERE id = ?", (user_id,))
            assert row is not None
            user = user_out(row)
            await trail.record(tx, caller, "user.create", "user", user_id, body.org_id, None, user)
        return user

    async def list_users(
        self, caller: Caller, org_id: str | None, cursor: str | None, limit: int
    ) -> UserPage:
        require(caller, "user.read", "read users")
        where, params = [], []
        if org_id is not None:
            check_visible(caller, org_id, "org", org_id)
            where.append("org_id = ?")
            params.append(org_id)
        elif caller.org_id is not None:
            where.append("org_id = ?")
            params.append(caller.org_id)
        rows, more = await page(self.db, "users", where, params, cursor, limit)
        return UserPage(data=[user_out(row) for row in rows], next=more)

    async def get_user(self, caller: Caller, user_id: str) -> User:
        require(caller, "user.read", "read users")
        return user_out(await self.user_row(caller, user_id))

    async def update_user(self, caller: Caller, user_id: str, body: UserPatch) -> User:
        row = await self.user_row(caller, user_id)
        require(caller, "user.update", "change users")
        sets: dict[str, Any] = {}
        if body.name is not UNSET:
            sets["name"] = body.name
        if body.email is not UNSET:
            sets["email"] = body.email
        if body.disabled is not UNSET:
            sets["disabled"] = int(body.disabled)
        if body.metadata is not UNSET:
            sets["metadata"] = dumps(body.metadata)
        if body.limits is not UNSET:
            sets["limits"] = limits_json(body.limits)
        before = user_out(row)
        user: User = await self._update(
            "users", "user", caller, user_id, row["org_id"], before, sets
        )
        return user

"""API keys through the admin API and the CLI alike: create (the secret shown once), list,
read, update, revoke, rotate with an overlap, each written with its audit entry in one
transaction. Keys live in ``gate.keys``'s table; the gate reads them through its cached lookup,
so a change is enforced on every instance within the key cache TTL (at once on this one).

``org_id`` and ``user_id`` are the tenant names the ledger records. A global admin may name ones
that have no org or user row (as ``tokenrelay keys create --user alice`` always could); when a
row exists, the key must agree with it (a user's key is in the user's org).
"""

from __future__ import annotations

import math
from typing import Any

from msgspec import UNSET

from tokenrelay.admin import trail
from tokenrelay.admin.roles import Caller, check_visible, not_found, require, sees
from tokenrelay.admin.rows import dumps, iso, iso_now, limits_json, now, page_size, parse_time
from tokenrelay.admin.schema import (
    Key,
    KeyCreate,
    KeyPage,
    KeyPatch,
    KeyRotate,
    KeyRotated,
    KeySecret,
    LimitsOut,
)
from tokenrelay.gate.keys import KeyRecord, KeyStore
from tokenrelay.gate.last_used import LastUsed
from tokenrelay.gate.policy import limits_as_dict
from tokenrelay.model import GatewayError
from tokenrelay.store import Database, Queries


def key_out(record: KeyRecord, last_used: LastUsed | None = None) -> Key:
    """A key as the API shows it; with ``last_used``, uses not written yet count."""
    policy = record.policy
    used = record.last_used_at
    if last_used is not None:
        used = last_used.seen(record.id, used)
    limits = limits_as_dict(policy.key)
    return Key(
        id=record.id,
        prefix=record.prefix,
        name=record.name,
        org_id=record.org,
        user_id=record.user,
        role=record.role,  # type: ignore[arg-type]  # validated when written
        routes=sorted(record.routes) if record.routes is not None else None,
        models=sorted(policy.models) if policy.models is not None else None,
        expires_at=iso(policy.expires_at),
        limits=LimitsOut(**limits),
        metadata=dict(record.metadata),
        created_at=iso_now(record.created_at),
        revoked_at=iso(record.revoked_at),
        rotated_from=record.rotated_from,
        last_used_at=iso(used),
        rpm=record.rpm,
    )


def _invalid(message: str, param: str) -> GatewayError:
    return GatewayError("invalid_request", message, 400, param=param)


def _conflict(message: str) -> GatewayError:
    # invalid_request typed, 409: the admin API answers it as "conflict"
    return GatewayError("invalid_request", message, 409)


class KeyAdmin:
    def __init__(self, db: Database, keys: KeyStore) -> None:
        self.db = db
        self.keys = keys

    async def record(self, caller: Caller, key_id: str, db: Queries | None = None) -> KeyRecord:
        found = await self.keys.query("k.id = ?", (key_id,), db=db)
        if not found:
            raise not_found("key", key_id)
        check_visible(caller, found[0].org, "key", key_id)
        return found[0]

    async def _tenant(self, caller: Caller, org_id: str | None, user_id: str | None) -> str | None:
        """The key's org: the caller's when confined to one; the user's when the user has a row.
        Ids outside the caller's org are refused as unknown."""
        if caller.org_id is not None:
            if org_id is not None and org_id != caller.org_id:
                raise _invalid(f"no org has the id {org_id!r}", "org_id")
            org_id = caller.org_id
        if user_id is not None:
            user = await self.db.fetch_one("SELECT org_id FROM users WHERE id = ?", (user_id,))
            if user is not None and not sees(caller, user["org_id"]):
                user = None
                if caller.org_id is not None:
                    raise _invalid(f"no user has the id {user_id!r}", "user_id")
            if user is None and caller.org_id is not None:
                raise _invalid(f"no user has the id {user_id!r}", "user_id")
            if user is not None:
                if org_id is not None and org_id != user["org_id"]:
                    raise _invalid(f"user {user_id!r} is not in org {org_id!r}", "org_id")
                org_id = user["org_id"]
        return org_id

    async def create(self, caller: Caller, body: KeyCreate, *, rpm: int | None = None) -> KeySecret:
        """A new key; ``rpm`` is the CLI's older per-key request limit."""
        require(caller, "key.create", "create keys")
        _check_role(caller, body.role)
        org_id = await self._tenant(caller, body.org_id, body.user_id)
        if body.role == "org_admin" and org_id is None:
            raise _invalid("a key with role 'org_admin' needs an org_id", "org_id")
        if body.role == "admin" and org_id is not None:
            raise _invalid("role 'admin' is global: leave org_id and user_id out", "role")
        expires_at = _future(body.expires_at)
        async with self.db.transaction() as tx:
            key_id, secret = await self.keys.create(
                body.user_id,
                org_id,
                body.routes,
                rpm,
                body.name,
                admin=_reads_usage(body.role, org_id),
                role=body.role,
                models=body.models,
                expires_at=expires_at,
                limits=body.limits,
                metadata=body.metadata,
                db=tx,
            )
            key = key_out(await self.record(caller, key_id, tx))
            await trail.record(tx, caller, "key.create", "key", key_id, org_id, None, key)
        return KeySecret(key=key, secret=secret)

    async def list(
        self,
        caller: Caller,
        *,
        org_id: str | None = None,
        user_id: str | None = None,
        include_revoked: bool = False,
        cursor: str | None = None,
        limit: int | None = None,
    ) -> KeyPage:
        require(caller, "key.read", "read keys")
        size = page_size(limit)
        where, params = ["1 = 1"], []
        if caller.org_id is not None:
            if org_id is not None and org_id != caller.org_id:
                return KeyPage(data=[], next=None)
            org_id = caller.org_id
        if org_id is not None:
            where.append("k.org_id = ?")
            params.append(org_id)
        if user_id is not None:
            where.append("k.user_id = ?")
            params.append(user_id)
        if not include_revoked:
            where.append("k.revoked_at IS NULL")
        if cursor:
            row = await self.db.fetch_one("SELECT created_at FROM api_keys WHERE id = ?", (cursor,))
            if row is None:
                raise _invalid("the cursor is not one this API gave", "cursor")
            where.append("(k.created_at > ? OR (k.created_at = ? AND k.id > ?))")
            params += [row["created_at"], row["created_at"], cursor]
        found = await self.keys.query(" AND ".join(where), params, limit=size + 1)
        more = len(found) > size
        found = found[:size]
        return KeyPage(
            data=[key_out(r, self.keys.last_used) for r in found],
            next=found[-1].id if more else None,
        )

    async def get(self, caller: Caller, key_id: str) -> Key:
        require(caller, "key.read", "read keys")
        return key_out(await self.record(caller, key_id), self.keys.last_used)

    async def update(self, caller: Caller, key_id: str, body: KeyPatch) -> Key:
        record = await self.record(caller, key_id)  # a 404 outside the caller's org first
        require(caller, "key.update", "change keys")
        sets: dict[str, Any] = {}
        if body.name is not UNSET:
            sets["name"] = body.name
        if body.routes is not UNSET:
            sets["routes"] = _names(body.routes)
        if body.models is not UNSET:
            sets["models"] = _names(body.models)
        if body.expires_at is not UNSET:
            sets["expires_at"] = _future(body.expires_at)
        if body.limits is not UNSET:
            sets["limits"] = limits_json(body.limits)
        if body.metadata is not UNSET:
            sets["metadata"] = dumps(body.metadata)
        if body.role is not UNSET:
            _check_role(caller, body.role)
            if body.role == "org_admin" and record.org is None:
                raise _invalid("a key with role 'org_admin' needs an org", "role")
            if body.role == "admin" and record.org is not None:
                raise _invalid("role 'admin' is global: this key belongs to an org", "role")
            sets["role"] = body.role
            sets["admin"] = int(_reads_usage(body.role, record.org))
        return await self._change(caller, record, "key.update", sets)

    async def _change(
        self, caller: Caller, record: KeyRecord, action: str, sets: dict[str, Any]
    ) -> Key:
        before = key_out(record)
        if not sets:
            return before
        assignments = ", ".join(f"{column} = ?" for column in sets)
        async with self.db.transaction() as tx:
            await tx.execute(
                f"UPDATE api_keys SET {assignments} WHERE id = ?", (*sets.values(), record.id)
            )
            after = key_out(await self.record(caller, record.id, tx))
            await trail.record(tx, caller, action, "key", record.id, record.org, before, after)
        self.keys.forget(record.id)  # this instance at once; the others within their TTL
        return after

    async def revoke(self, caller: Caller, key_id: str) -> Key:
        """Revoked now (revoking twice changes nothing and records nothing)."""
        record = await self.record(caller, key_id)
        require(caller, "key.revoke", "revoke keys")
        if record.revoked_at is not None:
            return key_out(record)
        return await self._change(caller, record, "key.revoke", {"revoked_at": now()})

    async def rotate(self, caller: Caller, key_id: str, body: KeyRotate) -> KeyRotated:
        """A new key with the same grants; the old one keeps working ``overlap_seconds``."""
        old = await self.record(caller, key_id)
        require(caller, "key.rotate", "rotate keys")
        at = now()
        if old.revoked_at is not None or old.expired(at):
            raise _conflict(f"key {key_id} is revoked or expired; create a new key instead")
        ends = at + body.overlap_seconds
        if old.expires_at is not None:
            ends = min(ends, old.expires_at)
        # Whole seconds: the old key ends at the very time ``old_key_expires_at`` shows.
        ends = float(math.floor(ends))
        policy = old.policy
        async with self.db.transaction() as tx:
            new_id, secret = await self.keys.create(
                old.user,
                old.org,
                old.routes,
                old.rpm,
                old.name,
                admin=old.admin,
                role=old.role,
                models=policy.models,
                expires_at=policy.expires_at,
                limits=policy.key,
                metadata=dict(old.metadata),
                rotated_from=old.id,
                db=tx,
            )
            before = key_out(old)
            await tx.execute("UPDATE api_keys SET expires_at = ? WHERE id = ?", (ends, old.id))
            after = key_out(await self.record(caller, old.id, tx))
            new = key_out(await self.record(caller, new_id, tx))
            await trail.record(tx, caller, "key.rotate", "key", old.id, old.org, before, after)
            await trail.record(tx, caller, "key.create", "key", new_id, old.org, None, new)
        self.keys.forget(old.id)
        return KeyRotated(key=new, secret=secret, old_key_expires_at=iso_now(ends))


def _check_role(caller: Caller, role: str | None) -> None:
    """Nobody hands out more than they hold: an org admin makes no global admin."""
    if role == "admin" and caller.role != "admin":
        raise GatewayError(
            "permission", "only a global admin may create or promote a key to role 'admin'", 403
        )
    if role == "admin" and caller.org_id is not None:  # pragma: no cover - admins are global
        raise GatewayError("permission", "an org-scoped key cannot grant role 'admin'", 403)


def _reads_usage(role: str | None, org_id: str | None) -> bool:
    """Global admins and readers may read every caller's usage (``GET /v1/usage``)."""
    return role in ("admin", "reader") and org_id is None


def _future(text: str | None) -> float | None:
    if text is None:
        return None
    moment = parse_time(text, "expires_at")
    if moment <= now():
        raise _invalid("expires_at must be in the future", "expires_at")
    return moment


def _names(values: list[str] | None) -> str | None:
    import json

    return json.dumps(sorted(set(values))) if values is not None else None

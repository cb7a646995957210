"""The admin audit trail: who changed what, with the row before and after, and when.

Written in the same transaction as the change it records, so neither exists without the
other. Actors are a key id and a role (or ``cli``), never a secret; the documents recorded are
the API's own responses, which carry a key's display prefix only.
"""

from __future__ import annotations

import json
from typing import Any

import msgspec

from tokenrelay.admin.roles import Caller
from tokenrelay.admin.rows import dumps, iso_now, new_id, now, page_size
from tokenrelay.admin.schema import Actor, AuditEntry, AuditPage
from tokenrelay.store import Database, Queries, Row


async def record(
    tx: Queries,
    caller: Caller,
    action: str,
    target_type: str,
    target_id: str | None,
    org_id: str | None,
    before: msgspec.Struct | None,
    after: msgspec.Struct | None,
) -> None:
    """One entry: ``action`` such as ``key.create``, the target, and its documents."""
    await tx.execute(
        "INSERT INTO admin_audit (id, at, actor_key_id, actor_role, action, target_type, "
        "target_id, org_id, before, after) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (
            new_id("aud"),
            now(),
            caller.key_id,
            caller.role,
            action,
            target_type,
            target_id,
            org_id,
            _document(before),
            _document(after),
        ),
    )


def _document(value: msgspec.Struct | None) -> str | None:
    return dumps(msgspec.to_builtins(value)) if value is not None else None


def _entry(row: Row) -> AuditEntry:
    return AuditEntry(
        id=row["id"],
        at=iso_now(row["at"]),
        actor=Actor(key_id=row["actor_key_id"] or "", role=row["actor_role"] or ""),
        action=row["action"],
        target_type=row["target_type"],
        target_id=row["target_id"],
        org_id=row["org_id"],
        before=_loaded(row["before"]),
        after=_loaded(row["after"]),
    )


def _loaded(text: str | None) -> dict[str, Any] | None:
    return json.loads(text) if text else None


async def entries(
    db: Database, caller: Caller, *, limit: int | None, before: str | None, org_id: str | None
) -> AuditPage:
    """Newest first; ``before`` is the cursor (an entry id). Org-scoped callers see their org."""
    size = page_size(limit)
    where, params = [], []
    if caller.org_id is not None:
        where.append("org_id = ?")
        params.append(caller.org_id)
    elif org_id is not None:
        where.append("org_id = ?")
        params.append(org_id)
    if before:
        row = await db.fetch_one("SELECT at FROM admin_audit WHERE id = ?", (before,))
        if row is not None:
            where.append("(at < ? OR (at = ? AND id < ?))")
            params += [row["at"], row["at"], before]
    sql = "SELECT * FROM admin_audit"
    if where:
        sql += " WHERE " + " AND ".join(where)
    rows = await db.fetch_all(sql + " ORDER BY at DESC, id DESC LIMIT ?", (*params, size + 1))
    more = len(rows) > size
    rows = rows[:size]
    return AuditPage(data=[_entry(r) for r in rows], next=rows[-1]["id"] if more else None)

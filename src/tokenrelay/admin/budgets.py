"""Budgets stored in the database: per key, user or org, per UTC day or month, hard (402) or
soft (served, alerted), changed at run time through the admin API. The gate reads them with the
settings' budgets (``metering.budgets.Budgets``), again every key cache TTL.

An org admin manages the budgets of its org, its users and its keys, but a budget a global admin
set (``ceiling_usd``) it may only lower or tighten: never raise, soften or delete.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Sequence
from decimal import Decimal
from typing import Any

from msgspec import UNSET

from tokenrelay.admin import trail
from tokenrelay.admin.roles import Caller, allowed, check_visible, not_found, require, sees
from tokenrelay.admin.rows import dumps, iso_now, new_id, now, page
from tokenrelay.admin.schema import Budget, BudgetCreate, BudgetPage, BudgetPatch, Spend, money
from tokenrelay.metering.budgets import COLUMNS, BudgetSettings, period_bounds
from tokenrelay.metering.units import NANOUSD, usd
from tokenrelay.model import GatewayError
from tokenrelay.store import Database, Queries, Row


class StoredBudget(BudgetSettings, frozen=True, kw_only=True):
    """A budget from the database, with its row id and every alert share."""

    ref: str = ""
    levels: tuple[float, ...] = ()

    @property
    def alert_levels(self) -> tuple[float, ...]:
        return self.levels


def _settings(row: Row) -> StoredBudget:
    return StoredBudget(
        scope=row["scope"],
        id=row["subject_id"],
        limit_usd=Decimal(row["amount_usd"]),
        period=row["period"],
        alert_at=0.0,
        hard=bool(row["hard"]),
        ref=row["id"],
        levels=tuple(level for level in json.loads(row["alert_at"]) if level < 1),
    )


def stored_budgets_loader(
    database: Callable[[], Awaitable[Database]],
) -> Callable[[], Awaitable[Sequence[BudgetSettings]]]:
    """What ``Budgets`` calls to read the stored budgets (one query)."""

    async def load() -> Sequence[BudgetSettings]:
        db = await database()
        rows = await db.fetch_all("SELECT * FROM admin_budgets ORDER BY created_at, id")
        return [_settings(row) for row in rows]

    return load


async def spent_nanousd(db: Queries, scope: str, subject: str, period: str, at: float) -> int:
    """What ``subject`` spent this period, from the ledger (what every instance wrote)."""
    start, _ = period_bounds(period, at)  # type: ignore[arg-type]
    row = await db.fetch_one(
        f"SELECT SUM(cost_nanousd) AS spent FROM ledger WHERE {COLUMNS[scope]} = ? "  # type: ignore[index]
        "AND created_at >= ?",
        (subject, start),
    )
    return int(row["spent"] or 0) if row is not None else 0


async def budget_out(db: Queries, row: Row) -> Budget:
    at = now()
    spent = await spent_nanousd(db, row["scope"], row["subject_id"], row["period"], at)
    amount = int(Decimal(row["amount_usd"]) * NANOUSD)
    _, end = period_bounds(row["period"], at)
    return Budget(
        id=row["id"],
        scope=row["scope"],
        subject_id=row["subject_id"],
        amount_usd=row["amount_usd"],
        period=row["period"],
        hard=bool(row["hard"]),
        alert_at=json.loads(row["alert_at"]),
        spent_usd=usd(spent, 6),
        remaining_usd=usd(max(0, amount - spent), 6),
        resets_at=iso_now(end),
        created_at=iso_now(row["created_at"]),
        updated_at=iso_now(row["updated_at"]),
    )


def _invalid(message: str, param: str) -> GatewayError:
    return GatewayError("invalid_request", message, 400, param=param)


class BudgetAdmin:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def _subject_org(self, caller: Caller, scope: str, subject: str) -> str | None:
        """The org a budget's subject belongs to (``None``: not known, global admins only)."""
        if scope == "org":
            org_id: str | None = subject
        else:
            table = "users" if scope == "user" else "api_keys"
            row = await self.db.fetch_one(f"SELECT org_id FROM {table} WHERE id = ?", (subject,))
            org_id = row["org_id"] if row is not None else None
            if row is None and caller.org_id is not None:
                raise _invalid(f"no {scope} has the id {subject!r}", "subject_id")
        if not sees(caller, org_id):
            raise _invalid(f"no {scope} has the id {subject!r}", "subject_id")
        return org_id

    async def row(self, caller: Caller, budget_id: str) -> Row:
        row = await self.db.fetch_one("SELECT * FROM admin_budgets WHERE id = ?", (budget_id,))
        if row is None:
            raise not_found("budget", budget_id)
        check_visible(caller, row["org_id"], "budget", budget_id)
        return row

    async def create(self, caller: Caller, body: BudgetCreate) -> Budget:
        require(caller, "budget.create", "create budgets")
        org_id = await self._subject_org(caller, body.scope, body.subject_id)
        amount = money(body.amount_usd)
        at = now()
        budget_id = new_id("bud")
        # What a global admin sets is the ceiling an org admin cannot raise.
        ceiling = body.amount_usd if caller.role == "admin" else None
        async with self.db.transaction() as tx:
            await tx.execute(
                "INSERT INTO admin_budgets (id, scope, subject_id, org_id, amount_usd, "
                "ceiling_usd, period, hard, alert_at, created_at, updated_at) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    budget_id,
                    body.scope,
                    body.subject_id,
                    org_id,
                    str(amount),
                    ceiling,
                    body.period,
                    int(body.hard),
                    dumps(sorted(set(body.alert_at))),
                    at,
                    at,
                ),
            )
            out = await self._out(tx, budget_id)
            await trail.record(tx, caller, "budget.create", "budget", budget_id, org_id, None, out)
        return out

    async def _out(self, db: Queries, budget_id: str) -> Budget:
        row = await db.fetch_one("SELECT * FROM admin_budgets WHERE id = ?", (budget_id,))
        assert row is not None
        return await budget_out(db, row)

    async def list(
        self,
        caller: Caller,
        scope: str | None,
        subject_id: str | None,
        cursor: str | None,
        limit: int,
    ) -> BudgetPage:
        require(caller, "budget.read", "read budgets")
        where, params = [], []
        if caller.org_id is not None:
            where.append("org_id = ?")
            params.append(caller.org_id)
        if scope is not None:
            where.append("scope = ?")
            params.append(scope)
        if subject_id is not None:
            where.append("subject_id = ?")
            params.append(subject_id)
        rows, more = await page(self.db, "admin_budgets", where, params, cursor, limit)
        return BudgetPage(data=[await budget_out(self.db, row) for row in rows], next=more)

    async def get(self, caller: Caller, budget_id: str) -> Budget:
        require(caller, "budget.read", "read budgets")
        return await budget_out(self.db, await self.row(caller, budget_id))

    async def update(self, caller: Caller, budget_id: str, body: BudgetPatch) -> Budget:
        row = await self.row(caller, budget_id)  # a 404 outside the caller's org first
        require(caller, "budget.update", "change budgets")
        sets: dict[str, Any] = {}
        if body.amount_usd is not UNSET:
            sets["amount_usd"] = str(money(body.amount_usd))
        if body.period is not UNSET:
            sets["period"] = body.period
        if body.hard is not UNSET:
            sets["hard"] = int(body.hard)
        if body.alert_at is not UNSET:
            sets["alert_at"] = dumps(sorted(set(body.alert_at)))
        self._check_ceiling(caller, row, sets)
        if caller.role == "admin" and "amount_usd" in sets:
            sets["ceiling_usd"] = sets["amount_usd"]
        before = await budget_out(self.db, row)
        if not sets:
            return before
        sets["updated_at"] = now()
        assignments = ", ".join(f"{column} = ?" for column in sets)
        async with self.db.transaction() as tx:
            await tx.execute(
                f"UPDATE admin_budgets SET {assignments} WHERE id = ?", (*sets.values(), budget_id)
            )
            after = await self._out(tx, budget_id)
            await trail.record(
                tx, caller, "budget.update", "budget", budget_id, row["org_id"], before, after
            )
        return after

    def _check_ceiling(self, caller: Caller, row: Row, sets: dict[str, Any]) -> None:
        """An org admin may not loosen a budget a global admin set: 403."""
        ceiling = row["ceiling_usd"]
        if ceiling is None or allowed(caller, "budget.raise"):
            return
        looser = []
        if "amount_usd" in sets and Decimal(sets["amount_usd"]) > Decimal(ceiling):
            looser.append(f"amount_usd above ${ceiling}")
        if sets.get("hard") == 0 and row["hard"]:
            looser.append("hard to soft")
        if sets.get("period") == "month" and row["period"] == "day":
            looser.append("period from day to month")
        if looser:
            require(
                caller, "budget.raise", f"loosen a budget a global admin set ({', '.join(looser)})"
            )

    async def delete(self, caller: Caller, budget_id: str) -> None:
        row = await self.row(caller, budget_id)
        require(caller, "budget.delete", "delete budgets")
        if row["ceiling_usd"] is not None:
            require(caller, "budget.raise", "delete a budget a global admin set")
        before = await budget_out(self.db, row)
        async with self.db.transaction() as tx:
            await tx.execute("DELETE FROM admin_budgets WHERE id = ?", (budget_id,))
            await trail.record(
                tx, caller, "budget.delete", "budget", budget_id, row["org_id"], before, None
            )

    async def spend(self, caller: Caller, scope: str, subject_id: str) -> Spend:
        """Spend against every stored budget of the subject."""
        require(caller, "budget.read", "read spend")
        try:
            await self._subject_org(caller, scope, subject_id)
        except GatewayError:
            raise not_found(scope, subject_id) from None
        rows = await self.db.fetch_all(
            "SELECT * FROM admin_budgets WHERE scope = ? AND subject_id = ? "
            "ORDER BY created_at, id",
            (scope, subject_id),
        )
        budgets = [await budget_out(self.db, row) for row in rows]
        return Spend(scope=scope, subject_id=subject_id, budgets=budgets)  # type: ignore[arg-type]

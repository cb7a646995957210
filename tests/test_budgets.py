"""Budgets: spend from a seeded ledger plus this instance's charges, refused with a 402 that names
the budget and its reset; alerts logged once; charges never counted twice once their rows land."""

from __future__ import annotations

import asyncio
import datetime
import logging
from collections.abc import AsyncIterator
from decimal import Decimal
from pathlib import Path

import msgspec
import pytest
import pytest_asyncio

from tokenrelay.gate.identity import Identity
from tokenrelay.metering.budgets import Budgets, BudgetSettings, period_bounds
from tokenrelay.model import GatewayError
from tokenrelay.store import Database, open_database

DOLLAR = 1_000_000_000
INSERT = (
    "INSERT INTO ledger (request_id, created_at, user_id, org_id, key_id, route, status, "
    "outcome, cost_nanousd, attempts, duration_ms) VALUES (?, ?, ?, ?, ?, 'default', 200, "
    "'completed', ?, 1, 100)"
)


def ts(text: str) -> float:
    return datetime.datetime.fromisoformat(text).replace(tzinfo=datetime.UTC).timestamp()


NOW = ts("2026-11-15T12:00:00")
ALICE = Identity("key", "10.0.0.1", user="alice", org="acme", key_id="key_a")
BOB = Identity("key", "10.0.0.2", user="bob", org="acme", key_id="key_b")
CAROL = Identity("jwt", "10.0.0.3", user="carol", org="globex")
ANONYMOUS = Identity("anonymous", "10.0.0.4")


def budget(**fields: object) -> BudgetSettings:
    return msgspec.convert(fields, BudgetSettings, strict=False)


@pytest_asyncio.fixture
async def db(tmp_path: Path) -> AsyncIterator[Database]:
    database = await open_database(f"sqlite:///{tmp_path}/ledger.db")
    await database.execute_many(
        INSERT,
        [
            ("old", ts("2026-10-31T23:59:59"), "alice", "acme", "key_a", 5 * DOLLAR),  # October
            ("a1", ts("2026-11-02T10:00:00"), "alice", "acme", "key_a", 400_000_000),
            ("b1", ts("2026-11-15T08:00:00"), "bob", "acme", "key_b", 300_000_000),
            ("c1", ts("2026-11-15T09:00:00"), "carol", "globex", None, 40_000_000),
        ],
    )
    try:
        yield database
    finally:
        await database.close()


def make(db: Database, *budgets: BudgetSettings, clock: list[float] | None = None) -> Budgets:
    now = clock if clock is not None else [NOW]
    return Budgets(budgets, db, refresh=3600, clock=lambda: now[0])


def test_settings_read_from_config() -> None:
    read = budget(scope="org", id="acme", limit_usd="100.50", period="day", alert_at=0.9)
    assert read.limit_usd == Decimal("100.50") and read.limit_nanousd == 100_500_000_000
    assert budget(scope="user", limit_usd=20).id == "*" and budget(scope="key", limit_usd=1).period
    for bad in ({"limit_usd": "-1"}, {"limit_usd": "NaN"}, {"alert_at": 1.5}, {"id": ""}):
        with pytest.raises(msgspec.ValidationError):
            budget(**{"scope": "org", "limit_usd": "1", **bad})
    with pytest.raises(msgspec.ValidationError):
        budget(scope="team", limit_usd="1")


def test_periods_are_utc_days_and_months() -> None:
    assert period_bounds("day", NOW) == (ts("2026-11-15T00:00:00"), ts("2026-11-16T00:00:00"))
    assert period_bounds("month", NOW) == (ts("2026-11-01T00:00:00"), ts("2026-12-01T00:00:00"))
    december = ts("2026-12-31T23:00:00")
    assert period_bounds("month", december) == (ts("2026-12-01"), ts("2027-01-01"))


async def test_ledger_spend_plus_charges_refuses_with_402(
    db: Database, caplog: pytest.LogCaptureFixture
) -> None:
    acme = budget(scope="org", id="acme", limit_usd="1.00", period="month")
    budgets = make(db, acme)
    try:
        await budgets.check(ALICE)  # $0.70 of $1.00 this month (October's $5 not counted)
        assert await budgets.spend(acme, "acme") == 700_000_000
        await budgets.check(CAROL)  # not acme: no budget applies
        await budgets.check(ANONYMOUS)

        budgets.charge(BOB, 350_000_000, "r-1")  # finished, not yet in the ledger
        assert await budgets.spend(acme, "acme") == 1_050_000_000
        with pytest.raises(GatewayError) as refused:
            await budgets.check(ALICE)
        error = refused.value
        assert error.status == 402
        assert error.message == (
            "budget exceeded: org 'acme' has spent $1.05 of its monthly org budget of $1.00 "
            "since 2026-11-01T00:00:00Z; it resets at 2026-12-01T00:00:00Z (in 15 d 12 h)"
        )
        assert error.retry_after == ts("2026-12-01T00:00:00") - NOW
        assert error.headers is not None
        assert (b"x-tokenrelay-budget-reset", b"2026-12-01T00:00:00Z") in error.headers
        assert (b"x-tokenrelay-budget", b"org:acme:month") in error.headers
        assert budgets.metrics.refused == 1
        await budgets.check(CAROL)  # globex is not affected
    finally:
        await budgets.close()


async def test_alert_threshold_logs_once_per_period(
    db: Database, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, "tokenrelay.budgets")
    clock = [NOW]
    acme = budget(scope="org", id="acme", limit_usd="1.00", alert_at=0.8)
    budgets = make(db, acme, clock=clock)
    try:
        await budgets.check(ALICE)  # 70 %
        assert not caplog.records
        budgets.charge(ALICE, 50_000_000, "r-1")  # 75 %
        assert not caplog.records
        budgets.charge(ALICE, 100_000_000, "r-2")  # 85 %: crosses 80 %
        await budgets.check(ALICE)
        budgets.charge(ALICE, 10_000_000, "r-3")  # 86 %
        await budgets.check(BOB)
        alerts = [r.getMessage() for r in caplog.records]
        assert alerts == [
            "budget alert: org 'acme' has spent $0.85, 85 % of its monthly org budget of $1.00 "
            "(alert at 80 %); it resets at 2026-12-01T00:00:00Z"
        ]
        assert budgets.metrics.alerts == 1 and budgets.metrics.exhausted == 0

        budgets.charge(ALICE, 200_000_000, "r-4")  # 106 %: used up, said once too
        with pytest.raises(GatewayError):
            await budgets.check(ALICE)
        with pytest.raises(GatewayError):
            await budgets.check(BOB)
        assert [r.getMessage().split(":")[0] for r in caplog.records] == [
            "budget alert",
            "budget used up",
        ]
        assert budgets.metrics.exhausted == 1 and budgets.metrics.refused == 2

        # A new month: November's charges, not in the ledger yet, count in November only.
        clock[0] = ts("2026-12-01T00:00:01")
        budgets.charge(ALICE, 20_000_000, "r-5", created_at=ts("2026-11-30T23:59:59"))
        budgets.charge(ALICE, 30_000_000, "r-6")
        await budgets.check(ALICE)
        assert await budgets.spend(acme, "acme") == 30_000_000
        await db.execute(INSERT, ("d1", clock[0], "bob", "acme", "key_b", 800_000_000))
        await budgets.refresh()
        budgets.charge(ALICE, 1, "r-7")  # 83 %: December's alert
        assert budgets.metrics.alerts == 2
    finally:
        await budgets.close()


async def test_charges_are_dropped_once_their_rows_are_in_the_ledger(db: Database) -> None:
    alice = budget(scope="user", limit_usd="10", period="day")  # "*": every user
    budgets = make(db, alice)
    try:
        assert await budgets.spend(alice, "alice") == 0  # her only November 15 spend is none
        budgets.charge(ALICE, 123, "r-1")
        budgets.charge(ALICE, 77, "r-2")
        budgets.charge(ALICE, 77, "r-2")  # the same request twice counts once
        assert await budgets.spend(alice, "alice") == 200

        await db.execute(INSERT, ("r-1", NOW - 1, "alice", "acme", "key_a", 123))
        await budgets.refresh()  # r-1 found: now counted from the ledger, not twice
        assert await budgets.spend(alice, "alice") == 200
        await db.execute(INSERT, ("r-2", NOW - 1, "alice", "acme", "key_a", 77))
        await db.execute(INSERT, ("other", NOW - 1, "alice", "acme", "key_z", 1000))
        await budgets.refresh()  # another instance's row shows up too
        assert await budgets.spend(alice, "alice") == 1200
    finally:
        await budgets.close()


async def test_daily_budget_for_every_key(db: Database) -> None:
    keys = budget(scope="key", limit_usd="0.30", period="day", alert_at=0)
    budgets = make(db, keys)
    try:
        await budgets.check(ALICE)  # key_a spent nothing today
        with pytest.raises(GatewayError) as refused:
            await budgets.check(BOB)  # key_b spent $0.30 today
        assert "daily key budget of $0.30" in refused.value.message
        assert "resets at 2026-11-16T00:00:00Z (in 12 h 0 min)" in refused.value.message
        await budgets.check(CAROL)  # a JWT caller has no key
    finally:
        await budgets.close()


async def test_background_refresh_sees_other_instances(db: Database) -> None:
    acme = budget(scope="org", id="acme", limit_usd="1.00")
    budgets = Budgets([acme], db, refresh=0.05, clock=lambda: NOW)
    try:
        await budgets.check(ALICE)
        await db.execute(INSERT, ("elsewhere", NOW - 5, "dave", "acme", None, 400_000_000))
        await budgets.check(ALICE)  # the cache, not a query per request
        for _ in range(100):
            await asyncio.sleep(0.02)
            if await budgets.spend(acme, "acme") == 1_100_000_000:
                break
        with pytest.raises(GatewayError):
            await budgets.check(ALICE)
    finally:
        await budgets.close()


async def test_an_unreadable_ledger_fails_open(caplog: pytest.LogCaptureFixture) -> None:
    async def broken() -> Database:
        raise OSError("connection refused")

    acme = budget(scope="org", id="acme", limit_usd="1.00")
    budgets = Budgets([acme], broken, clock=lambda: NOW)
    try:
        await budgets.check(ALICE)
        assert budgets.metrics.failures == 1
        assert "cannot read spend from the ledger (connection refused)" in caplog.text
        budgets.charge(ALICE, 2 * DOLLAR, "r-1")  # what this instance saw still counts
        with pytest.raises(GatewayError):
            await budgets.check(ALICE)
    finally:
        await budgets.close()

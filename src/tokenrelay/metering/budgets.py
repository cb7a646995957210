"""Spend limits per API key, user or organization, per UTC day or month.

A budget is checked when a request starts, from memory: a subject that has already spent its
limit is refused with a 402 that names the budget, the spend and when it resets. What a request
costs is known only when it ends, so requests already running when the limit is reached all
finish: concurrent requests near the limit overshoot it by at most what those in flight cost.

A subject's spend is the ledger's sum since its period began plus what this instance has
``charge``\\ d for requests whose ledger rows are not written yet. The ledger sums are cached per
subject and refreshed in the background every ``refresh`` seconds, never queried per request
(only the first request of a subject in a period waits for one query). A charge is kept, by
request id, until a refresh finds its row in the ledger; the check for rows comes before the sums,
so a row written in between is counted twice for one refresh, never missed. Another instance's
spend is seen once its ledger row is written and this instance has refreshed, which widens the
overshoot by what the other instances spent in those few seconds.

When the database cannot be read, budgets fail open: spend is what this instance charged, and the
failure is logged and counted. Crossing ``alert_at`` (80 % by default) and using a budget up are
each logged once per subject and period and counted in ``metrics``.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import logging
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from decimal import ROUND_FLOOR, Decimal
from typing import TYPE_CHECKING, Annotated, Literal

import msgspec

from tokenrelay.metering.units import NANOUSD, iso_time, usd
from tokenrelay.model import GatewayError

if TYPE_CHECKING:
    from tokenrelay.gate.identity import Identity
    from tokenrelay.store import Database

log = logging.getLogger("tokenrelay.budgets")

Scope = Literal["key", "user", "org"]
Period = Literal["day", "month"]
COLUMNS: dict[Scope, str] = {"key": "key_id", "user": "user_id", "org": "org_id"}
BATCH = 200  # subjects or request ids per query
DAY = 86400


class BudgetSettings(msgspec.Struct, kw_only=True, forbid_unknown_fields=True, frozen=True):
    """One budget: ``limit_usd`` (a decimal string, exact) per UTC ``period`` for the ``scope``
    subject ``id``, or for each subject of the scope with ``"*"``. ``alert_at``: the share of the
    limit whose crossing is logged and counted once per period (0: never)."""

    scope: Scope
    limit_usd: Decimal
    id: str = "*"
    period: Period = "month"
    alert_at: Annotated[float, msgspec.Meta(ge=0, lt=1)] = 0.8
    # false: a soft budget; over it requests still flow, and the overrun is logged and counted
    hard: bool = True

    def __post_init__(self) -> None:
        if not self.limit_usd.is_finite() or self.limit_usd < 0:
            raise ValueError(f"budget limit_usd must be a positive amount, not {self.limit_usd}")
        if not self.id:
            raise ValueError('budget id must name a subject, or be "*" for each one')

    @property
    def alert_levels(self) -> tuple[float, ...]:
        """The shares of the limit whose crossing is logged and counted."""
        return (self.alert_at,) if self.alert_at else ()

    @property
    def limit_nanousd(self) -> int:
        return int((self.limit_usd * NANOUSD).to_integral_value(ROUND_FLOOR))

    @property
    def label(self) -> str:
        return f"{'daily' if self.period == 'day' else 'monthly'} {self.scope} budget"

    def subject(self, identity: Identity) -> str | None:
        """Whom this budget counts for ``identity``; ``None`` when it does not apply."""
        if self.scope == "key":
            subject = identity.key_id
        elif self.scope == "user":
            subject = identity.user
        else:
            subject = identity.org
        if subject is None or (self.id != "*" and self.id != subject):
            return None
        return subject


def period_bounds(period: Period, now: float) -> tuple[float, float]:
    """The UTC day or month holding ``now``: its start and the next one's (the reset)."""
    moment = datetime.datetime.fromtimestamp(now, datetime.UTC)
    start = moment.replace(hour=0, minute=0, second=0, microsecond=0)
    if period == "day":
        end = start + datetime.timedelta(days=1)
    else:
        start = start.replace(day=1)
        end = (start + datetime.timedelta(days=32)).replace(day=1)
    return start.timestamp(), end.timestamp()


def _until(seconds: float) -> str:
    minutes = max(1, round(seconds / 60))
    days, rest = divmod(minutes, 1440)
    hours, minutes = divmod(rest, 60)
    if days:
        return f"{days} d {hours} h"
    return f"{hours} h {minutes} min" if hours else f"{minutes} min"


@dataclass(slots=True)
class BudgetMetrics:
    """Counters for the metrics endpoint."""

    alerts: int = 0  # alert_at crossed (once per subject, budget and period)
    exhausted: int = 0  # limits reached (once per subject, budget and period)
    refused: int = 0  # requests refused with 402
    soft_over: int = 0  # requests let through over a soft budget
    failures: int = 0  # ledger reads that failed (budgets failed open)
    charges_expired: int = 0  # charges never found in the ledger (its writer is failing)


@dataclass(slots=True)
class _Spend:
    start: float  # the period start the sum is for
    ledger: int  # nanodollars in the ledger since then
    seen: float  # monotonic time of the last check: idle subjects stop being refreshed


@dataclass(slots=True)
class _Charge:
    subjects: tuple[tuple[Scope, str], ...]
    cost: int
    day: int  # the UTC day (Unix days) of the request's ledger created_at
    at: float  # monotonic


SpendKey = tuple[Scope, Period, str]  # scope, period, subject


@dataclass(slots=True)
class _State:
    spend: dict[SpendKey, _Spend] = field(default_factory=dict)
    charges: dict[str, _Charge] = field(default_factory=dict)  # by request id
    # (scope, subject) -> UTC day -> nanodollars: a charge counts only in the periods its
    # request belongs to, also just after midnight.
    unrecorded: dict[tuple[Scope, str], dict[int, int]] = field(default_factory=dict)
    # (budget, subject, what) -> period start
    noted: dict[tuple[BudgetSettings, str, str], float] = field(default_factory=dict)


class Budgets:
    """The budgets of ``settings`` over the ledger in ``database`` (a ``Database``, or an async
    callable returning it, such as ``Gate.database``). Close with ``await budgets.close()``."""

    def __init__(
        self,
        settings: Sequence[BudgetSettings],
        database: Database | Callable[[], Awaitable[Database]],
        *,
        refresh: float = 5.0,
        idle: float = 600.0,
        charge_ttl: float = 300.0,
        timeout: float = 2.0,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
        stored: Callable[[], Awaitable[Sequence[BudgetSettings]]] | None = None,
        stored_ttl: float = 5.0,
    ) -> None:
        self.configured = tuple(settings)
        self.settings = self.configured  # and the stored ones, once read
        # Budgets stored by the admin API: re-read at most every ``stored_ttl`` seconds, on the
        # request that finds them older (one query shared by concurrent requests).
        self._stored = stored
        self.stored_ttl = stored_ttl
        self._stored_at = -1e18
        self._stored_loading: asyncio.Task[None] | None = None
        self._database = database
        self.refresh_interval = refresh
        self.idle = idle
        self.charge_ttl = charge_ttl
        self.timeout = timeout
        self._clock = clock
        self._monotonic = monotonic
        self.metrics = BudgetMetrics()
        self._state = _State()
        self._loading: dict[tuple[SpendKey, float], asyncio.Task[_Spend]] = {}
        self._refresher: asyncio.Task[None] | None = None
        self._last_failure_log = -1e9

    async def _db(self) -> Database:
        if callable(self._database):
            return await self._database()
        return self._database

    # --- the request path ---------------------------------------------------------------------

    async def check(self, identity: Identity | None) -> None:
        """Refuse (402) a request whose caller has used up a budget that applies to it."""
        if identity is None or (identity.key_id or identity.user or identity.org) is None:
            return
        if self._stored is not None and self._monotonic() - self._stored_at >= self.stored_ttl:
            await self._reload_stored()
        if not self.settings:
            return
        now = self._clock()
        for budget in self.settings:
            subject = budget.subject(identity)
            if subject is None:
                continue
            start, end = period_bounds(budget.period, now)
            spent = await self._spent(budget, subject, start)
            self._note(budget, subject, spent, start, end)
            if spent >= budget.limit_nanousd:
                if not budget.hard:
                    self.metrics.soft_over += 1
                    continue
                self.metrics.refused += 1
                raise _exceeded(budget, subject, spent, start, end, now)

    async def _reload_stored(self) -> None:
        """Read the stored budgets again; on failure keep the last ones (logged, counted)."""
        task = self._stored_loading
        if task is None or task.done():
            task = self._stored_loading = asyncio.ensure_future(self._read_stored())
        await asyncio.shield(task)

    async def _read_stored(self) -> None:
        assert self._stored is not None
        try:
            async with asyncio.timeout(self.timeout):
                stored = tuple(await self._stored())
        except Exception as exc:  # the database, its driver, a timeout: keep the last ones
            self._failed(exc)
            stored = self.settings[len(self.configured) :]
        self._stored_at = self._monotonic()
        self.settings = self.configured + stored

    def charge(
        self,
        identity: Identity | None,
        cost_nanousd: int,
        request_id: str,
        created_at: float | None = None,
    ) -> None:
        """Count a finished request's cost until its ledger row (``request_id``, whose
        ``created_at`` decides its period; default now) is read back."""
        if identity is None or cost_nanousd <= 0 or not self.settings:
            return
        state = self._state
        subjects = {
            (budget.scope, subject)
            for budget in self.settings
            if (subject := budget.subject(identity)) is not None
        }
        if not subjects or request_id in state.charges:
            return
        now = self._clock()
        day = int((now if created_at is None else created_at) // DAY)
        charge = _Charge(tuple(subjects), cost_nanousd, day, self._monotonic())
        state.charges[request_id] = charge
        for key in subjects:
            days = state.unrecorded.setdefault(key, {})
            days[day] = days.get(day, 0) + cost_nanousd
        for budget in self.settings:
            subject = budget.subject(identity)
            if subject is None:
                continue
            start, end = period_bounds(budget.period, now)
            entry = state.spend.get((budget.scope, budget.period, subject))
            if entry is not None and entry.start == start:
                spent = entry.ledger + self._unrecorded(budget.scope, subject, start)
                self._note(budget, subject, spent, start, end)

    async def spend(self, budget: BudgetSettings, subject: str) -> int:
        """What ``subject`` has spent against ``budget`` this period, in nanodollars, as the
        next check will see it (for gauges and tests)."""
        start, _ = period_bounds(budget.period, self._clock())
        return await self._spent(budget, subject, start)

    async def _spent(self, budget: BudgetSettings, subject: str, start: float) -> int:
        key: SpendKey = (budget.scope, budget.period, subject)
        entry = self._state.spend.get(key)
        if entry is None or entry.start != start:
            entry = await self._load(key, start)
        entry.seen = self._monotonic()
        return entry.ledger + self._unrecorded(budget.scope, subject, start)

    def _unrecorded(self, scope: Scope, subject: str, start: float) -> int:
        days = self._state.unrecorded.get((scope, subject))
        if not days:
            return 0
        first = start // DAY
        return sum(cost for day, cost in days.items() if day >= first)

    async def _load(self, key: SpendKey, start: float) -> _Spend:
        """The subject's ledger sum, one query however many requests ask for it at once."""
        task = self._loading.get((key, start))
        if task is None:
            task = asyncio.ensure_future(self._fetch(key, start))
            self._loading[(key, start)] = task
            task.add_done_callback(lambda _: self._loading.pop((key, start), None))
        self._start_refresher()
        return await asyncio.shield(task)

    async def _fetch(self, key: SpendKey, start: float) -> _Spend:
        scope, _, subject = key
        spent = 0
        try:
            async with asyncio.timeout(self.timeout):
                row = await (await self._db()).fetch_one(
                    f"SELECT SUM(cost_nanousd) AS spent FROM ledger "
                    f"WHERE {COLUMNS[scope]} = ? AND created_at >= ?",
                    (subject, start),
                )
            spent = int(row["spent"] or 0) if row is not None else 0
        except Exception as exc:  # the database, its driver, a timeout: fail open
            self._failed(exc)
        entry = self._state.spend[key] = _Spend(start, spent, self._monotonic())
        return entry

    def _failed(self, exc: BaseException) -> None:
        self.metrics.failures += 1
        now = self._monotonic()
        if now - self._last_failure_log >= 10:
            self._last_failure_log = now
            log.error(
                "budgets: cannot read spend from the ledger (%s); counting only this instance's "
                "charges until it can (%d failure(s) so far)",
                str(exc) or type(exc).__name__,
                self.metrics.failures,
            )

    def _note(
        self, budget: BudgetSettings, subject: str, spent: int, start: float, end: float
    ) -> None:
        """Log and count crossing each alert share and reaching the limit, once per period."""
        limit = budget.limit_nanousd
        if limit <= 0:
            return
        noted = self._state.noted
        who = f"{budget.scope} {subject!r}"
        crossed = [level for level in budget.alert_levels if spent >= limit * level]
        level = max(crossed, default=0.0)
        if crossed and noted.get((budget, subject, f"alert{level}")) != start:
            noted[(budget, subject, f"alert{level}")] = start
            self.metrics.alerts += 1
            log.warning(
                "budget alert: %s has spent $%s, %d %% of its %s of $%s (alert at %d %%); "
                "it resets at %s",
                who,
                usd(spent, 2),
                spent * 100 // limit,
                budget.label,
                usd(limit, 2),
                round(level * 100),
                iso_time(end),
                extra={"budget": budget.label, "subject": subject, "spent_nanousd": spent},
            )
        if spent >= limit and noted.get((budget, subject, "exhausted")) != start:
            noted[(budget, subject, "exhausted")] = start
            self.metrics.exhausted += 1
            log.warning(
                "budget used up: %s has spent $%s of its %s of $%s; "
                + ("refused until %s" if budget.hard else "soft: still served; resets at %s"),
                who,
                usd(spent, 2),
                budget.label,
                usd(limit, 2),
                iso_time(end),
                extra={"budget": budget.label, "subject": subject, "spent_nanousd": spent},
            )

    # --- the background refresh ---------------------------------------------------------------

    def _start_refresher(self) -> None:
        if self._refresher is None or self._refresher.done():
            self._refresher = asyncio.create_task(self._refresh_loop(), name="budget-refresh")

    async def _refresh_loop(self) -> None:
        while True:
            await asyncio.sleep(self.refresh_interval)
            try:
                async with asyncio.timeout(max(self.timeout, self.refresh_interval) * 4):
                    await self.refresh()
            except Exception as exc:
                self._failed(exc)

    async def refresh(self) -> None:
        """One round: find charged rows now in the ledger, then re-read every active subject's
        sum, then forget those charges (in that order, so nothing is ever counted zero times)."""
        state = self._state
        db = await self._db()
        recorded = await self._recorded(db)
        now, mono = self._clock(), self._monotonic()
        groups: dict[tuple[Scope, Period], list[str]] = {}
        for key, entry in list(state.spend.items()):
            if mono - entry.seen > self.idle:
                del state.spend[key]
            else:
                groups.setdefault((key[0], key[1]), []).append(key[2])
        for (scope, period), subjects in groups.items():
            start, _ = period_bounds(period, now)
            column = COLUMNS[scope]
            for batch in _chunks(subjects):
                marks = ", ".join("?" * len(batch))
                rows = await db.fetch_all(
                    f"SELECT {column} AS subject, SUM(cost_nanousd) AS spent FROM ledger "
                    f"WHERE created_at >= ? AND {column} IN ({marks}) GROUP BY {column}",
                    (start, *batch),
                )
                sums = {row["subject"]: int(row["spent"] or 0) for row in rows}
                for subject in batch:
                    current = state.spend.get((scope, period, subject))
                    if current is not None:
                        current.start, current.ledger = start, sums.get(subject, 0)
        for request_id in recorded:
            self._forget(request_id)
        self._expire(mono)
        self._prune_notes(now)

    async def _recorded(self, db: Database) -> set[str]:
        """The charged requests whose ledger rows are written."""
        found: set[str] = set()
        for batch in _chunks(list(self._state.charges)):
            marks = ", ".join("?" * len(batch))
            rows = await db.fetch_all(
                f"SELECT request_id FROM ledger WHERE request_id IN ({marks})", batch
            )
            found.update(row["request_id"] for row in rows)
        return found

    def _forget(self, request_id: str) -> None:
        state = self._state
        charge = state.charges.pop(request_id, None)
        if charge is None:
            return
        for key in charge.subjects:
            days = state.unrecorded.get(key, {})
            left = days.get(charge.day, 0) - charge.cost
            if left > 0:
                days[charge.day] = left
            else:
                days.pop(charge.day, None)
                if not days:
                    state.unrecorded.pop(key, None)

    def _expire(self, mono: float) -> None:
        """Drop charges whose rows never appeared: the ledger writer lost them."""
        old = [rid for rid, c in self._state.charges.items() if mono - c.at > self.charge_ttl]
        for request_id in old:
            self._forget(request_id)
        if old:
            self.metrics.charges_expired += len(old)
            log.warning(
                "budgets: %d charge(s) never reached the ledger in %g s; their spend is no "
                "longer counted",
                len(old),
                self.charge_ttl,
            )

    def _prune_notes(self, now: float) -> None:
        noted = self._state.noted
        for key, start in list(noted.items()):
            if start < period_bounds(key[0].period, now)[0]:
                del noted[key]

    async def close(self) -> None:
        if self._refresher is not None:
            self._refresher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._refresher
            self._refresher = None


def _chunks(items: Sequence[str]) -> Iterator[list[str]]:
    for index in range(0, len(items), BATCH):
        yield list(items[index : index + BATCH])


def _exceeded(
    budget: BudgetSettings, subject: str, spent: int, start: float, end: float, now: float
) -> GatewayError:
    exponent = budget.limit_usd.normalize().as_tuple().exponent
    places = max(2, -exponent) if isinstance(exponent, int) else 2
    reset = iso_time(end)
    return GatewayError(
        "budget_exceeded",
        f"budget exceeded: {budget.scope} {subject!r} has spent ${usd(spent, places)} of its "
        f"{budget.label} of ${usd(budget.limit_nanousd, places)} since {iso_time(start)}; "
        f"it resets at {reset} (in {_until(end - now)})",
        402,
        retry_after=max(1.0, end - now),
        headers=[
            (b"x-tokenrelay-budget", f"{budget.scope}:{budget.id}:{budget.period}".encode()),
            (b"x-tokenrelay-budget-reset", reset.encode()),
        ],
    )

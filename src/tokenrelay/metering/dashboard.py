"""The usage dashboard's numbers, for ``GET /usage`` (the page) and ``GET /v1/usage/dashboard``.

The data is a handful of grouped queries over the ledger, each summed by the database (as the
reports in ``tokenrelay.metering.reports``, whose range words, day buckets and sums it reuses):
spend, tokens and requests per UTC day per org, user, model or route (with the response cache's
hits and what they saved); top spenders; time to first token percentiles per provider (cache
hits as the provider "cache"); failovers per route; errors by outcome. The page draws it
with our own SVG charts (``web/chart.js``), so nothing is fetched from elsewhere. The queries
and their shaping only: ``tokenrelay.usage_http`` answers HTTP and decides who may look.
"""

from __future__ import annotations

import asyncio
import csv
import io
import math
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Literal, get_args

import msgspec

from tokenrelay.metering.reports import (
    _COLUMNS,
    _COUNTS,
    _DAY,
    _SUMS,
    DAY,
    ERROR_OUTCOMES,
    FILTERS,
    MODEL_KEYS,
    UsageQuery,
    UsageRow,
    _exact_usd,
    _row,
    csv_cell,
    make_query,
)
from tokenrelay.metering.units import iso_day, iso_time, usd
from tokenrelay.records import CACHE_PROVIDER

if TYPE_CHECKING:
    from tokenrelay.store import Queries

Grouping = Literal["org", "user", "model", "requested_model", "route"]
GROUPINGS: tuple[Grouping, ...] = get_args(Grouping)
MAX_DAYS = 400  # a year and a bit: the page's longest range is 90 days
SHOWN = 8  # series in the chart; past that the smallest groups are summed as one
TOP = 10
PERCENTILES = (50, 90, 99)
_HEDGED = '%"hedged_out"%'  # how attempts_detail records a loser of a hedge race
# Who served a row for the latency table: a cache hit's row names the provider of the answer it
# replayed, whose latency it is not.
_SERVED_BY = f"CASE WHEN cache = 'hit' THEN '{CACHE_PROVIDER}' ELSE provider END"


class Dashboard(msgspec.Struct, kw_only=True):
    """What the queries found, before it is shaped for JSON or CSV."""

    query: UsageQuery
    by: Grouping
    first_day: int  # days since 1970-01-01
    days: int
    cells: list[tuple[int, UsageRow]]  # (day, group's sums); every non-empty pair
    top_users: list[UsageRow]
    top_orgs: list[UsageRow]
    ttft: list[dict[str, Any]]
    failovers: list[dict[str, Any]]
    errors: list[dict[str, Any]]


# --- the query ---------------------------------------------------------------------------------


def dashboard_query(params: Mapping[str, str], *, now: float) -> tuple[UsageQuery, Grouping]:
    """The range, grouping and filters from the URL's words; ``ValueError`` says what is wrong."""
    by = params.get("by", "model")
    if by not in GROUPINGS:
        raise ValueError(f"cannot group the dashboard by {by!r}: use one of {', '.join(GROUPINGS)}")
    query = make_query(
        params.get("since", "7d"),
        params.get("until") or None,
        by,
        {name: params.get(name) for name in FILTERS},
        now=now,
    )
    first, last = _day_span(query)
    if last - first + 1 > MAX_DAYS:
        raise ValueError(f"the range spans {last - first + 1} days; the dashboard shows {MAX_DAYS}")
    return query, by


def _day_span(query: UsageQuery) -> tuple[int, int]:
    """The first and last UTC day the range touches (``until`` is exclusive)."""
    return math.floor(query.since / DAY), math.ceil(query.until / DAY) - 1


# --- the queries ---------------------------------------------------------------------------------


def _where(query: UsageQuery) -> tuple[str, list[Any]]:
    where = ["created_at >= ?", "created_at < ?"]
    params: list[Any] = [query.since, query.until]
    for name, value in sorted(query.filters.items()):
        where.append(f"{FILTERS[name]} = ?")
        params.append(value)
    return " AND ".join(where), params


def _keys(by: Grouping) -> list[str]:
    return MODEL_KEYS[by] if by in MODEL_KEYS else [_COLUMNS[by]]


async def collect(db: Queries, query: UsageQuery, by: Grouping) -> Dashboard:
    """Every number the page shows, from up to six grouped queries run together."""
    first, last = _day_span(query)
    cells, users, orgs, ttft, failovers, errors = await asyncio.gather(
        _cells(db, query, by),
        _totals(db, query, "user") if by != "user" else _none(),
        _totals(db, query, "org") if by != "org" else _none(),
        _ttft(db, query),
        _failovers(db, query),
        _errors(db, query),
    )
    if by == "user":  # the grouping's own totals are the top list: no second query
        users = _ranked(_group_totals(cells))
    elif by == "org":
        orgs = _ranked(_group_totals(cells))
    return Dashboard(
        query=query,
        by=by,
        first_day=first,
        days=last - first + 1,
        cells=cells,
        top_users=users,
        top_orgs=orgs,
        ttft=ttft,
        failovers=failovers,
        errors=errors,
    )


async def _none() -> list[UsageRow]:
    return []


async def _cells(db: Queries, query: UsageQuery, by: Grouping) -> list[tuple[int, UsageRow]]:
    day = _DAY[db.backend]
    keys = _keys(by)
    where, params = _where(query)
    selected = ", ".join(f"{key} AS g{index}" for index, key in enumerate(keys))
    rows = await db.fetch_all(
        f"SELECT {day} AS day, {selected}, {_SUMS} FROM ledger WHERE {where} "
        f"GROUP BY {day}, {', '.join(keys)}",
        params,
    )
    cells = [(int(row["day"]), _row(by, row)) for row in rows]
    cells.sort(key=lambda cell: (cell[0], *_rank(cell[1])))
    return cells


async def _totals(db: Queries, query: UsageQuery, by: Grouping) -> list[UsageRow]:
    where, params = _where(query)
    column = _COLUMNS[by]
    rows = await db.fetch_all(
        f"SELECT {column} AS g0, {_SUMS} FROM ledger WHERE {where} GROUP BY {column}", params
    )
    return _ranked([_row(by, row) for row in rows])


def _rank(row: UsageRow) -> tuple[int, int, bool, str]:
    """Costliest first, then busiest; the requests with no group after named ones alike."""
    return (-row.cost_nanousd, -row.requests, row.group is None, row.group or "")


def _ranked(rows: Sequence[UsageRow]) -> list[UsageRow]:
    return sorted(rows, key=_rank)


async def _ttft(db: Queries, query: UsageQuery) -> list[dict[str, Any]]:
    """Nearest-rank percentiles (the value at rank ⌈p·n/100⌉) per provider, picked by the
    database with a window: only three rows per provider come back, however many requests.
    Response-cache hits are the provider "cache", so a provider's figures are its own."""
    where, params = _where(query)
    ranks = " OR ".join(f"pos = ({p} * n + 99) / 100" for p in PERCENTILES)
    rows = await db.fetch_all(
        "SELECT provider, pos, n, ttft_ms FROM ("
        "SELECT provider, ttft_ms, "
        "ROW_NUMBER() OVER (PARTITION BY provider ORDER BY ttft_ms) AS pos, "
        "COUNT(*) OVER (PARTITION BY provider) AS n "
        f"FROM (SELECT {_SERVED_BY} AS provider, ttft_ms FROM ledger "
        f"WHERE {where} AND ttft_ms IS NOT NULL) AS served) AS ranked WHERE {ranks}",
        params,
    )
    providers: dict[str | None, dict[str, Any]] = {}
    for row in rows:
        n, pos = int(row["n"]), int(row["pos"])
        item = providers.setdefault(row["provider"], {"provider": row["provider"], "requests": n})
        for p in PERCENTILES:
            if pos == (p * n + 99) // 100:
                item[f"p{p}_ms"] = round(float(row["ttft_ms"]), 1)
    return sorted(providers.values(), key=lambda item: (item["provider"] is None, item["provider"]))


async def _failovers(db: Queries, query: UsageQuery) -> list[dict[str, Any]]:
    """Per route: requests that moved to another upstream after one failed (``failovers``),
    those of them that were served in the end (``recovered``), and hedge races (``hedged``:
    a second upstream raced a slow first one; not a failure, so not a failover)."""
    where, params = _where(query)
    hedged = "COALESCE(attempts_detail, '') LIKE ?"
    failover = f"attempts > 1 AND NOT {hedged}"
    rows = await db.fetch_all(
        "SELECT route, COUNT(*) AS requests, "
        f"SUM(CASE WHEN {failover} THEN 1 ELSE 0 END) AS failovers, "
        f"SUM(CASE WHEN {failover} AND outcome = 'completed' THEN 1 ELSE 0 END) AS recovered, "
        f"SUM(CASE WHEN {hedged} THEN 1 ELSE 0 END) AS hedged "
        f"FROM ledger WHERE {where} GROUP BY route",
        [_HEDGED, _HEDGED, _HEDGED, *params],
    )
    result = [
        {
            "route": row["route"],
            **{name: int(row[name] or 0) for name in ("requests", "failovers", "recovered")},
            "hedged": int(row["hedged"] or 0),
        }
        for row in rows
    ]
    result.sort(key=lambda item: (-item["failovers"], -item["requests"], item["route"]))
    return result


async def _errors(db: Queries, query: UsageQuery) -> list[dict[str, Any]]:
    """Requests that did not complete, by outcome, error type and provider; ``error`` says
    whether the outcome counts as an error (a client going away does not)."""
    where, params = _where(query)
    rows = await db.fetch_all(
        "SELECT outcome, error_type, provider, COUNT(*) AS requests FROM ledger "
        f"WHERE {where} AND outcome <> 'completed' GROUP BY outcome, error_type, provider",
        params,
    )
    result = [
        {
            "outcome": row["outcome"],
            "error": row["outcome"] in ERROR_OUTCOMES,
            "error_type": row["error_type"],
            "provider": row["provider"],
            "requests": int(row["requests"]),
        }
        for row in rows
    ]
    result.sort(
        key=lambda item: (
            -item["requests"],
            item["outcome"],
            item["error_type"] or "",
            item["provider"] or "",
        )
    )
    return result


# --- shaping -------------------------------------------------------------------------------------


def _sums(row: UsageRow) -> dict[str, Any]:
    item: dict[str, Any] = {name: getattr(row, name) for name in _COUNTS if name != "estimated"}
    item["cost_usd"] = _exact_usd(row)
    item["saved_usd"] = usd(row.saved_nanousd, 9)
    return item


def _add(total: UsageRow, row: UsageRow) -> None:
    for name in _COUNTS:
        setattr(total, name, getattr(total, name) + getattr(row, name))


def _group_totals(cells: Sequence[tuple[int, UsageRow]]) -> list[UsageRow]:
    totals: dict[str | None, UsageRow] = {}
    for _, row in cells:
        _add(totals.setdefault(row.group, UsageRow(group=row.group)), row)
    return list(totals.values())


def shape(found: Dashboard) -> dict[str, Any]:
    """The JSON body: ``days``, the chart's ``groups`` (each with its ``total`` and one
    ``daily`` entry per day; past ``SHOWN`` groups the smallest are summed as one whose
    ``others`` says how many), the ``total``, ``top`` spenders, ``ttft``, ``failovers`` and
    ``errors``; ``top`` has the chosen grouping's (``group``), the users' and the orgs'. Costs
    are exact: ``cost_nanousd`` and the decimal string ``cost_usd``; every sum has the response
    cache's ``cache_hits`` and what they saved (``saved_nanousd``, ``saved_usd``)."""
    query = found.query
    ranked = _ranked(_group_totals(found.cells))
    shown = ranked if len(ranked) <= SHOWN else ranked[: SHOWN - 1]
    index = {row.group: position for position, row in enumerate(shown)}
    folded = len(ranked) - len(shown)
    series = [[UsageRow(group=row.group) for _ in range(found.days)] for row in shown]
    if folded:
        series.append([UsageRow(group=None) for _ in range(found.days)])
    for day, row in found.cells:
        position = index.get(row.group, len(shown))  # not shown: the folded series
        _add(series[position][day - found.first_day], row)
    groups: list[dict[str, Any]] = []
    for position, daily in enumerate(series):
        total = UsageRow(group=None)
        for row in daily:
            _add(total, row)
        others = folded if position == len(shown) else 0
        groups.append(
            {
                "name": None if others else shown[position].group,
                "others": others,
                "total": _sums(total),
                "daily": [_sums(row) for row in daily],
            }
        )
    total = UsageRow(group=None)
    for row in ranked:
        _add(total, row)
    return {
        "by": found.by,
        "since": iso_time(query.since),
        "until": iso_time(query.until),
        "filters": query.filters,
        "days": [iso_day(found.first_day + offset) for offset in range(found.days)],
        "groups": groups,
        "total": _sums(total),
        "top": {
            "group": [_named(row) for row in ranked[:TOP]],
            "user": [_named(row) for row in found.top_users[:TOP]],
            "org": [_named(row) for row in found.top_orgs[:TOP]],
        },
        "ttft": found.ttft,
        "failovers": found.failovers,
        "errors": found.errors,
    }


def _named(row: UsageRow) -> dict[str, Any]:
    return {"name": row.group, **_sums(row)}


_CSV_FIELDS = (
    "requests",
    "errors",
    "input_tokens",
    "output_tokens",
    "cache_read_tokens",
    "cache_write_tokens",
)


def render_csv(found: Dashboard) -> str:
    """One line per day per group (every group, none folded), days in order and the costliest
    group first; no total line, so a spreadsheet can sum the columns. ``cache_hits`` and
    ``saved_usd`` columns follow when the response cache answered any request of the range."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    cached = any(row.cache_hits for _, row in found.cells)
    header = ["day", found.by, *_CSV_FIELDS, "cost_usd"]
    writer.writerow([*header, "cache_hits", "saved_usd"] if cached else header)
    for day, row in found.cells:
        counts = [getattr(row, name) for name in _CSV_FIELDS]
        cache = [row.cache_hits, usd(row.saved_nanousd, 9)] if cached else []
        writer.writerow([iso_day(day), csv_cell(row.group), *counts, _exact_usd(row), *cache])
    return out.getvalue()


def csv_name(found: Dashboard) -> str:
    last = found.first_day + found.days - 1
    return f"tokenrelay-usage-by-{found.by}-{iso_day(found.first_day)}-{iso_day(last)}.csv"

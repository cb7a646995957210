"""Usage reports over the ledger, for ``tokenrelay usage`` and ``GET /v1/usage``: requests, errors,
tokens, cost and the share of estimated token counts, per org, user, key, model, route or UTC day,
over a time range. The queries and their rendering only: ``tokenrelay.usage_http`` answers HTTP.

``model`` (to group or filter by) is the model that served the request, as the upstream named it
(``claude-sonnet-4-5-20250929``), or the one asked for when the upstream did not say (and for
rows written before it was recorded); ``requested_model`` is the one the route asked for
(``claude-sonnet-5-5``). Costs are priced on the served model when its price is known.

The database does the sums, so a report costs one indexed query however large the ledger. Cost
is summed as integer nanodollars (exact on SQLite and PostgreSQL alike) and shown in USD as a
``Decimal``; a day is bucketed by each backend's own floor of ``created_at / 86400``, since their
casts round differently. A request belongs to the range by when it arrived (``created_at``).
"""

from __future__ import annotations

import csv
import datetime
import io
import re
import unicodedata
from collections.abc import Callable, Mapping
from decimal import Decimal
from typing import TYPE_CHECKING, Any, Literal, get_args

import msgspec

from tokenrelay.metering.units import iso_day, iso_time, usd

if TYPE_CHECKING:
    from tokenrelay.store import Queries

Group = Literal["org", "user", "key", "model", "requested_model", "route", "day"]
Format = Literal["table", "csv", "json"]
GROUPS: tuple[Group, ...] = get_args(Group)
FORMATS: tuple[Format, ...] = get_args(Format)
SERVED_MODEL = "COALESCE(served_model, model)"  # the upstream's name, else the one asked for
FILTERS = {
    "org": "org_id",
    "user": "user_id",
    "key": "key_id",
    "route": "route",
    "model": SERVED_MODEL,
    "requested_model": "model",
}
# One model name may be served by several providers: a model group is provider:model.
MODEL_KEYS: dict[str, list[str]] = {
    "model": ["provider", SERVED_MODEL],
    "requested_model": ["provider", "model"],
}
MAX_FILTER = 256  # characters of a filter value; ids and names are far shorter
# What counts as an error: the gateway refused it, or it failed or was cut off; a client that
# went away ("aborted") is not one.
ERROR_OUTCOMES = ("error", "rejected", "interrupted")
DAY = 86400

_COLUMNS = {"org": "org_id", "user": "user_id", "key": "key_id", "route": "route"}
_DAY = {
    "sqlite": "CAST(created_at / 86400 AS INTEGER)",  # truncates; created_at is positive
    "postgresql": "CAST(FLOOR(created_at / 86400) AS BIGINT)",  # a bare cast would round
}
_SUMS = ", ".join(
    [
        "COUNT(*) AS requests",
        "SUM(CASE WHEN outcome IN ({}) THEN 1 ELSE 0 END) AS errors".format(
            ", ".join(f"'{outcome}'" for outcome in ERROR_OUTCOMES)
        ),
        *(
            f"SUM({name}) AS {name}"
            for name in (
                "input_tokens",
                "output_tokens",
                "cache_read_tokens",
                "cache_write_tokens",
                "cost_nanousd",
                "estimated",
                "saved_nanousd",
            )
        ),
        "SUM(CASE WHEN cache = 'hit' THEN 1 ELSE 0 END) AS cache_hits",
    ]
)
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": DAY, "w": 7 * DAY}
_RELATIVE = re.compile(r"(\d+(?:\.\d+)?)\s*([smhdw])")
# Times a report can name: the ledger's created_at is Unix seconds, and a datetime ends in 9999.
EARLIEST = 0.0
LATEST = datetime.datetime(9999, 12, 31, 23, 59, 59, tzinfo=datetime.UTC).timestamp()
_RANGE = "from 1970-01-01 to 9999-12-31 (UTC)"


class UsageQuery(msgspec.Struct, frozen=True, kw_only=True):
    """``since`` ≤ created_at < ``until`` (Unix seconds); ``filters``: equality on org, user,
    key, route or model."""

    since: float
    until: float
    by: Group = "day"
    filters: dict[str, str] = msgspec.field(default_factory=dict)


class UsageRow(msgspec.Struct, kw_only=True):
    """One group's sums. ``group`` is ``None`` for requests without one (anonymous callers have
    no user, a refused request no model) and for the total."""

    group: str | None
    requests: int = 0
    errors: int = 0
    input_tokens: int = 0  # the whole prompt, cache reads included
    output_tokens: int = 0
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0
    cost_nanousd: int = 0
    estimated: int = 0  # requests whose token counts are our estimate, not the upstream's
    cache_hits: int = 0  # requests the response cache answered (billed 0)
    saved_nanousd: int = 0  # what those answers cost when they were first made

    @property
    def cost_usd(self) -> Decimal:
        return Decimal(self.cost_nanousd).scaleb(-9)

    @property
    def estimated_share(self) -> float:
        return self.estimated / self.requests if self.requests else 0.0


class UsageReport(msgspec.Struct, kw_only=True):
    query: UsageQuery
    rows: list[UsageRow]
    total: UsageRow


# --- time ranges ---------------------------------------------------------------------------------


def parse_time(text: str, now: float) -> float:
    """``7d``, ``24h``, ``30m``, ``90s``, ``2w`` ago; ``now``; a UTC date ``2026-11-01``
    (its midnight) or an ISO time (UTC unless it says otherwise)."""
    value = text.strip().lower()
    if value == "now":
        return now
    relative = _RELATIVE.fullmatch(value)
    if relative:
        ago = now - float(relative.group(1)) * _UNITS[relative.group(2)]
        if not EARLIEST <= ago <= LATEST:  # also catches inf from a 400-digit count
            days = int((now - EARLIEST) // DAY)
            raise ValueError(
                f"{text[:40]!r} is out of range: a time {_RANGE}, so at most {days}d ago"
            )
        return ago
    try:
        moment = datetime.datetime.fromisoformat(text.strip())
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=datetime.UTC)
        stamp = moment.timestamp()
    except (ValueError, OverflowError):
        raise ValueError(
            f"{text[:40]!r} is not a time: use 7d, 24h, 30m (ago), a date like 2026-11-01 (UTC) "
            "or an ISO time like 2026-11-01T12:00Z"
        ) from None
    if not EARLIEST <= stamp <= LATEST:
        raise ValueError(f"{text[:40]!r} is out of range: a time {_RANGE}")
    return stamp


def check_filter(name: str, value: str) -> str:
    """A filter's value as given, or ``ValueError`` naming it: at most ``MAX_FILTER``
    characters and no control characters (PostgreSQL refuses NUL in text; no id holds one)."""
    if len(value) > MAX_FILTER:
        raise ValueError(f"{name}: at most {MAX_FILTER} characters")
    if any(unicodedata.category(char) in ("Cc", "Cs") for char in value):
        raise ValueError(f"{name}: control characters (such as NUL) are not allowed")
    return value


def make_query(
    since: str = "7d",
    until: str | None = None,
    by: str = "day",
    filters: Mapping[str, str | None] | None = None,
    *,
    now: float,
) -> UsageQuery:
    """A query from the words of the command line or the URL; ``ValueError`` says what is wrong."""
    if by not in GROUPS:
        raise ValueError(f"cannot group by {by[:40]!r}: use one of {', '.join(GROUPS)}")
    start = _time("since", since, now)
    end = _time("until", until, now) if until else now
    if end <= start:
        raise ValueError("the range is empty: 'until' must come after 'since'")
    given = {name: value for name, value in (filters or {}).items() if value}
    unknown = sorted(set(given) - set(FILTERS))
    if unknown:
        raise ValueError(f"cannot filter on {', '.join(unknown)}: use {', '.join(FILTERS)}")
    given = {name: check_filter(name, value) for name, value in given.items()}
    return UsageQuery(since=start, until=end, by=by, filters=given)


def _time(name: str, text: str, now: float) -> float:
    try:
        return parse_time(text, now)
    except ValueError as exc:
        raise ValueError(f"{name}: {exc}") from None


# --- the query -----------------------------------------------------------------------------------


async def usage(db: Queries, query: UsageQuery) -> UsageReport:
    """The report for ``query``: its rows (by day in order, else costliest first) and total."""
    if query.by == "day":
        keys = [_DAY[db.backend]]
    elif query.by in MODEL_KEYS:
        keys = MODEL_KEYS[query.by]
    else:
        keys = [_COLUMNS[query.by]]
    where = ["created_at >= ?", "created_at < ?"]
    params: list[Any] = [query.since, query.until]
    for name, value in sorted(query.filters.items()):
        where.append(f"{FILTERS[name]} = ?")
        params.append(value)
    selected = ", ".join(f"{key} AS g{index}" for index, key in enumerate(keys))
    rows = await db.fetch_all(
        f"SELECT {selected}, {_SUMS} FROM ledger WHERE {' AND '.join(where)} "
        f"GROUP BY {', '.join(keys)}",
        params,
    )
    result = [_row(query.by, row) for row in rows]
    if query.by == "day":
        result.sort(key=lambda row: row.group or "")
    else:
        result.sort(
            key=lambda row: (-row.cost_nanousd, -row.requests, row.group is None, row.group)
        )
    total = UsageRow(group=None)
    for row in result:
        for name in _COUNTS:
            setattr(total, name, getattr(total, name) + getattr(row, name))
    return UsageReport(query=query, rows=result, total=total)


_COUNTS = tuple(name for name in UsageRow.__struct_fields__ if name != "group")


def _row(by: Group, row: Mapping[str, Any]) -> UsageRow:
    group: str | None
    if by == "day":
        group = iso_day(int(row["g0"]))
    elif by in MODEL_KEYS:
        provider, model = row["g0"], row["g1"]
        group = f"{provider}:{model}" if provider and model else (model or provider)
    else:
        group = row["g0"]
    # PostgreSQL sums BIGINTs as NUMERIC (a Decimal here): exact, and int() keeps it so.
    return UsageRow(group=group, **{name: int(row[name] or 0) for name in _COUNTS})


# --- rendering -----------------------------------------------------------------------------------


def _exact_usd(row: UsageRow) -> str:
    return usd(row.cost_nanousd, 9)  # exact, and fixed at nine places: the columns align


def _json_row(by: str | None, row: UsageRow) -> dict[str, Any]:
    item: dict[str, Any] = {by: row.group} if by is not None else {}
    item.update({name: getattr(row, name) for name in _COUNTS if name != "estimated"})
    item["cost_usd"] = _exact_usd(row)
    item["saved_usd"] = usd(row.saved_nanousd, 9)
    item["estimated_share"] = round(row.estimated_share, 4)
    return item


def render_json(report: UsageReport) -> str:
    """Costs as exact decimal strings (``cost_usd``) beside the integer ``cost_nanousd``."""
    query = report.query
    body = {
        "by": query.by,
        "since": iso_time(query.since),
        "until": iso_time(query.until),
        "filters": query.filters,
        "rows": [_json_row(query.by, row) for row in report.rows],
        "total": _json_row(None, report.total),
    }
    return msgspec.json.format(msgspec.json.encode(body), indent=2).decode() + "\n"


_CSV_FIELDS = (
    "requests",
    "errors",
    "input_tokens",
    "output_tokens",
    "cache_read_tokens",
    "cache_write_tokens",
)
_CSV_CACHE = ("cache_hits",)


# What makes a spreadsheet read a cell as a formula, once it skips leading blanks (the
# full-width forms too: some spreadsheets fold them to ASCII).
_FORMULA = frozenset("=+-@\uff1d\uff0b\uff0d\uff20")


def csv_cell(name: str | None) -> str:
    """A group name (a user or org id from a JWT or a key's metadata) made safe for a
    spreadsheet: one that starts with a control character, or whose first character after any
    whitespace and control characters is ``=``, ``+``, ``-`` or ``@``, could be read as a formula
    (CSV injection), so it gets a leading apostrophe, as OWASP advises."""
    if not name:
        return ""
    if unicodedata.category(name[0]) == "Cc":
        return "'" + name
    for char in name:
        if not (char.isspace() or unicodedata.category(char) in ("Cc", "Cf")):
            return "'" + name if char in _FORMULA else name
    return name


def _cached(report: UsageReport) -> bool:
    """Whether the response cache answered any request of the report: its columns show then
    (so a gateway without a cache keeps its report's shape)."""
    return report.total.cache_hits > 0


def render_csv(report: UsageReport) -> str:
    """One line per group (no total line, so a spreadsheet can sum the columns)."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    cached = _cached(report)
    cache_header = [*_CSV_CACHE, "saved_usd"] if cached else []
    writer.writerow([report.query.by, *_CSV_FIELDS, "cost_usd", "estimated_share", *cache_header])
    for row in report.rows:
        counts = [getattr(row, name) for name in _CSV_FIELDS]
        share = round(row.estimated_share, 4)
        cache = [row.cache_hits, usd(row.saved_nanousd, 9)] if cached else []
        writer.writerow([csv_cell(row.group), *counts, _exact_usd(row), share, *cache])
    return out.getvalue()


def render_table(report: UsageReport) -> str:
    """Aligned columns with a TOTAL line; costs rounded to a millionth of a dollar."""
    header = [report.query.by.upper(), "REQUESTS", "ERRORS", "INPUT", "OUTPUT", "CACHE_READ"]
    header += ["CACHE_WRITE", "COST_USD", "ESTIMATED"]
    cached = _cached(report)
    if cached:
        header += ["CACHE_HITS", "SAVED_USD"]
    lines = [header]
    for row in [*report.rows, report.total]:
        label = "TOTAL" if row is report.total else (row.group or "-")
        counts = [f"{getattr(row, name):,}" for name in _CSV_FIELDS]
        cost = usd(row.cost_nanousd, 6)
        line = [label, *counts, cost, f"{row.estimated_share:.1%}"]
        if cached:
            line += [f"{row.cache_hits:,}", usd(row.saved_nanousd, 6)]
        lines.append(line)
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    return "".join(
        "  ".join(
            cell.ljust(width) if i == 0 else cell.rjust(width)
            for i, (cell, width) in enumerate(zip(line, widths, strict=True))
        ).rstrip()
        + "\n"
        for line in lines
    )


# Each renders the whole output, ending with a newline.
RENDER: dict[str, Callable[[UsageReport], str]] = {
    "table": render_table,
    "csv": render_csv,
    "json": render_json,
}

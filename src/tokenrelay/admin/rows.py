"""How admin rows are stored: generated ids, Unix-second times shown as ISO-8601 UTC, JSON
columns, and cursor pages (ordered by creation, the cursor being the last row's id)."""

from __future__ import annotations

import datetime
import json
import secrets
import string
import time
from typing import Any

import msgspec

from tokenrelay.admin.schema import LimitsOut
from tokenrelay.gate.policy import Limits
from tokenrelay.model import GatewayError
from tokenrelay.store import Queries, Row

_ALPHABET = string.ascii_letters + string.digits
MAX_PAGE = 200


def new_id(kind: str) -> str:
    """``org_…``, ``usr_…``: 16 random base62 characters (95 bits)."""
    return f"{kind}_" + "".join(secrets.choice(_ALPHABET) for _ in range(16))


def iso(timestamp: float | None) -> str | None:
    if timestamp is None:
        return None
    moment = datetime.datetime.fromtimestamp(float(timestamp), datetime.UTC)
    return moment.isoformat(timespec="seconds").replace("+00:00", "Z")


def iso_now(timestamp: float) -> str:
    return iso(timestamp) or ""


def parse_time(text: str, field: str) -> float:
    """An ISO-8601 time (UTC when no offset is given) as Unix seconds; a 400 naming ``field``."""
    try:
        moment = datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise GatewayError(
            "invalid_request",
            f"{field} must be an ISO-8601 time such as 2030-01-31T12:00:00Z, not {text!r}",
            400,
            param=field,
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=datetime.UTC)
    return moment.timestamp()


def dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def limits_json(limits: Limits | None) -> str | None:
    return msgspec.json.encode(limits).decode() if limits is not None else None


def limits_out(text: str | None) -> LimitsOut:
    if not text:
        return LimitsOut()
    return msgspec.json.decode(text, type=LimitsOut | None) or LimitsOut()


def page_size(limit: int | None, default: int = 50) -> int:
    if limit is None:
        return default
    if not 1 <= limit <= MAX_PAGE:
        raise GatewayError(
            "invalid_request", f"limit must be between 1 and {MAX_PAGE}", 400, param="limit"
        )
    return limit


async def page(
    db: Queries,
    table: str,
    where: list[str],
    params: list[Any],
    cursor: str | None,
    limit: int,
    *,
    columns: str = "*",
    time_column: str = "created_at",
) -> tuple[list[Row], str | None]:
    """Rows of ``table`` matching ``where`` in creation order after the row ``cursor`` names,
    and the next cursor (``None`` at the end). An unknown cursor is a 400."""
    where, params = list(where), list(params)
    if cursor:
        row = await db.fetch_one(f"SELECT {time_column} AS t FROM {table} WHERE id = ?", (cursor,))
        if row is None:
            raise GatewayError(
                "invalid_request", "the cursor is not one this API gave", 400, param="cursor"
            )
        where.append(f"({time_column} > ? OR ({time_column} = ? AND id > ?))")
        params += [row["t"], row["t"], cursor]
    sql = f"SELECT {columns} FROM {table}"
    if where:
        sql += " WHERE " + " AND ".join(where)
    sql += f" ORDER BY {time_column}, id LIMIT ?"
    rows = await db.fetch_all(sql, (*params, limit + 1))
    more = len(rows) > limit
    rows = rows[:limit]
    return rows, (rows[-1]["id"] if more and rows else None)


def now() -> float:
    return time.time()

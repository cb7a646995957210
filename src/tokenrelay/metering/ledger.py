"""One ledger row per request, and the insert that makes writing it twice harmless.

``LedgerRow`` mirrors the ``ledger`` table of migration 2 column for column, so a row goes to the
database as a tuple in field order and to the spool as one JSON line. The insert ends with
``ON CONFLICT (request_id) DO NOTHING`` (SQLite ≥ 3.24 and PostgreSQL alike): a batch written
again after a lost commit acknowledgement, or a spool replayed after a crash, counts each
request once.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

import msgspec

if TYPE_CHECKING:
    from tokenrelay.records import StreamRecord
    from tokenrelay.store import Queries


class LedgerRow(msgspec.Struct, kw_only=True, gc=False):
    """What one request did, as stored. Field order is the table's column order.

    Times are Unix seconds; ``created_at`` is when the request arrived (its end minus its
    duration), so a time range selects requests by when they were made. Booleans are stored as
    0/1 (the table's ``INTEGER``, the same on both backends).

    ``model`` is the model the route asked the provider for, ``served_model`` the one the
    upstream said answered (an alias resolved to a dated snapshot, say), and ``priced_model``
    the one the cost was computed on: the served model when the price table knows it, else the
    requested one; ``None`` when neither has a known price."""

    request_id: str
    created_at: float
    user_id: str | None = None
    org_id: str | None = None
    key_id: str | None = None
    client_ip: str | None = None
    route: str
    provider: str | None = None
    model: str | None = None
    attempts: int = 0
    attempts_detail: str | None = None  # JSON: [{provider, model, outcome, status, ms}, ...]
    status: int
    outcome: str
    error_type: str | None = None
    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0
    reasoning_tokens: int = 0
    estimated: bool = False  # the token counts are our estimate, not the upstream's report
    cost_nanousd: int = 0
    priced: bool = False  # the model had a known price when the cost was computed
    ttft_ms: float | None = None
    duration_ms: float
    # Migration 4 (appended, as ALTER TABLE adds columns at the end).
    served_model: str | None = None
    priced_model: str | None = None
    # Migration 6: "hit" / "miss" / "bypass" on a route with a response cache; a hit costs 0
    # and ``saved_nanousd`` is what the original answer cost; a semantic hit's similarity.
    cache: str | None = None
    saved_nanousd: int = 0
    cache_similarity: float | None = None
    # Migration 9: what the route's guard did, as JSON (types and counts, never values).
    guard: str | None = None


COLUMNS: tuple[str, ...] = LedgerRow.__struct_fields__
INSERT_SQL = (
    f"INSERT INTO ledger ({', '.join(COLUMNS)}) VALUES ({', '.join('?' * len(COLUMNS))}) "
    "ON CONFLICT (request_id) DO NOTHING"
)
_BOOLEANS = tuple(i for i, name in enumerate(COLUMNS) if name in ("estimated", "priced"))
_TEXT = tuple(f.name for f in msgspec.structs.fields(LedgerRow) if f.type in (str, str | None))
REPLACEMENT = "\ufffd"


def sanitized(row: LedgerRow) -> LedgerRow:
    """``row`` with text no database can store made storable: NUL (PostgreSQL refuses it in
    text) and lone surrogates (not UTF-8, so neither the spool nor a driver can encode them)
    become U+FFFD. Defence in depth: names are checked at the edge, but one bad row must never
    reach the spool or the database as it is. The row itself when it is clean (the usual case:
    a few ``in`` tests per request)."""
    changes: dict[str, str] = {}
    for name in _TEXT:
        value = getattr(row, name)
        if value is None or ("\x00" not in value and (value.isascii() or _encodable(value))):
            continue
        changes[name] = "".join(
            REPLACEMENT if char == "\x00" or "\ud800" <= char <= "\udfff" else char
            for char in value
        )
    return msgspec.structs.replace(row, **changes) if changes else row


def _encodable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def params(row: LedgerRow) -> tuple[Any, ...]:
    """The row as insert parameters; booleans as 0/1, as PostgreSQL refuses a boolean for an
    ``INTEGER`` column."""
    values = list(msgspec.structs.astuple(row))
    for index in _BOOLEANS:
        values[index] = int(values[index])
    return tuple(values)


async def insert_rows(db: Queries, rows: Iterable[LedgerRow]) -> None:
    """Insert ``rows`` atomically; a request already in the ledger is left as it is."""
    batch = [params(sanitized(row)) for row in rows]
    if batch:
        await db.execute_many(INSERT_SQL, batch)


def row_from(record: StreamRecord, *, now: float | None = None) -> LedgerRow:
    """The ledger row of a finished request (cost is filled in by pricing, not here)."""
    identity = record.identity
    usage = record.usage
    ended = time.time() if now is None else now
    return LedgerRow(
        request_id=record.request_id,
        created_at=ended - record.duration_ms / 1000,
        user_id=identity.user if identity else None,
        org_id=identity.org if identity else None,
        key_id=identity.key_id if identity else None,
        client_ip=identity.ip if identity else None,
        route=record.route,
        provider=record.provider,
        model=record.model,
        attempts=len(record.attempts),
        attempts_detail=attempts_json(record.attempts),
        status=record.status,
        outcome=record.outcome,
        error_type=record.error_type,
        input_tokens=usage.input_tokens or 0,
        output_tokens=usage.output_tokens or 0,
        cache_read_tokens=usage.cache_read_tokens or 0,
        cache_write_tokens=usage.cache_write_tokens or 0,
        reasoning_tokens=usage.reasoning_tokens or 0,
        ttft_ms=record.ttft_ms,
        duration_ms=record.duration_ms,
        served_model=usage.model,
        cache=record.cache,
        cache_similarity=record.cache_similarity,
        guard=guard_json(record),
    )


def guard_json(record: StreamRecord) -> str | None:
    """The guard's counts: entity types masked (or found, when refused), output rule matches
    and the rule that ended the answer; None when the guard did nothing."""
    if not (record.guard or record.guard_output or record.guard_blocked):
        return None
    detail: dict[str, Any] = {}
    if record.guard:
        detail["masked"] = record.guard
    if record.guard_output:
        detail["output"] = record.guard_output
    if record.guard_blocked:
        detail["blocked"] = record.guard_blocked
    return msgspec.json.encode(detail).decode()


def attempts_json(attempts: Sequence[Any]) -> str:
    """Every upstream attempt, in order, with the tokens a failed one consumed when known."""
    detail = []
    for attempt in attempts:
        item: dict[str, Any] = {
            "provider": attempt.provider,
            "model": attempt.model,
            "outcome": attempt.outcome,
            "status": attempt.status,
            "ms": round(attempt.ms, 1),
        }
        usage = getattr(attempt, "usage", None)
        if usage is not None:
            counts = msgspec.structs.asdict(usage)
            served = counts.pop("model")
            if any(counts.values()):
                item["usage"] = {k: v for k, v in counts.items() if v}
            if served:
                item["served_model"] = served
        detail.append(item)
    return msgspec.json.encode(detail).decode()

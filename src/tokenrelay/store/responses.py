"""The ``responses`` table: stored ``/v1/responses`` answers, each readable only by its owner.

Every read names the owner and the oldest creation time still kept, so a response of another
caller and one past retention are alike: not there. Rows past retention are deleted in small
batches, so a sweep never holds SQLite's one connection for long.
"""

from __future__ import annotations

from collections.abc import Iterable

import msgspec

from tokenrelay.store.database import Queries

_COLUMNS = "id, owner, created_at, status, response, input_items"
SWEEP_BATCH = 500


class StoredResponse(msgspec.Struct, frozen=True):
    """One row. ``response`` and ``input_items`` stay JSON text until someone reads them."""

    id: str
    owner: str
    created_at: float
    status: str
    response: bytes  # the response object, as the client saw it at its end
    input_items: bytes  # every item the response was made from, stored turns included

    def row(self) -> tuple[str, str, float, str, str, str]:
        return (
            self.id,
            self.owner,
            self.created_at,
            self.status,
            self.response.decode(),
            self.input_items.decode(),
        )


async def insert(db: Queries, rows: Iterable[StoredResponse]) -> None:
    await db.execute_many(
        f"INSERT INTO responses ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?)",
        [row.row() for row in rows],
    )


async def fetch(db: Queries, id: str, owner: str, since: float) -> StoredResponse | None:
    """The response ``id`` of ``owner``, if created at ``since`` or later."""
    row = await db.fetch_one(
        f"SELECT {_COLUMNS} FROM responses WHERE id = ? AND owner = ? AND created_at >= ?",
        (id, owner, since),
    )
    if row is None:
        return None
    return StoredResponse(
        str(row["id"]),
        str(row["owner"]),
        float(row["created_at"]),
        str(row["status"]),
        str(row["response"]).encode(),
        str(row["input_items"]).encode(),
    )


async def delete(db: Queries, id: str, owner: str, since: float) -> bool:
    """Delete the response ``id`` of ``owner``; False when there was none (still kept)."""
    deleted = await db.execute(
        "DELETE FROM responses WHERE id = ? AND owner = ? AND created_at >= ?", (id, owner, since)
    )
    return deleted > 0


async def delete_expired(db: Queries, before: float, batch: int = SWEEP_BATCH) -> int:
    """Delete up to ``batch`` responses created before ``before``; how many went."""
    return await db.execute(
        "DELETE FROM responses WHERE id IN (SELECT id FROM responses WHERE created_at < ? LIMIT ?)",
        (before, batch),
    )

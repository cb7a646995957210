"""When each key was last used (``api_keys.last_used_at``), recorded off the hot path.

A request only sets ``pending[key_id] = time.time()`` (a dict store, no I/O); a background task
writes what gathered every ``interval`` seconds in one UPDATE per batch of up to ``BATCH`` keys,
never a write per request. A time is only ever moved forward, so instances flushing in any order
agree on the latest. What is pending when a process dies (at most one interval of uses) is lost:
``last_used_at`` is a hint for finding idle keys, not an account (the ledger is that). A flush
that fails (the database is away) is kept and merged into the next one, logged once per outage.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tokenrelay.store.database import Database

log = logging.getLogger("tokenrelay.keys")

BATCH = 500  # keys per UPDATE: 1000 parameters, well inside every backend's limit
MAX_PENDING = 100_000  # keys held while the database is away; the oldest uses go first


def _update(count: int) -> str:
    values = ", ".join(["(?, ?)"] * count)
    # VALUES columns are column1, column2 on SQLite (3.33+) and PostgreSQL alike.
    return (
        f"UPDATE api_keys SET last_used_at = v.column2 FROM (VALUES {values}) AS v "
        "WHERE api_keys.id = v.column1 "
        "AND (api_keys.last_used_at IS NULL OR api_keys.last_used_at < v.column2)"
    )


class LastUsed:
    def __init__(self, db: Database, interval: float = 5.0) -> None:
        self.db = db
        self.interval = interval  # seconds between flushes; 0: nothing is recorded
        self.pending: dict[str, float] = {}  # key id -> latest use (Unix seconds), unwritten
        self.flushes = 0  # UPDATE statements run (a test and a metric's worth)
        self._task: asyncio.Task[None] | None = None
        self._failing = False

    def mark(self, key_id: str) -> None:
        """The key was used now: what a request pays (the flusher starts on the first use)."""
        if self.interval <= 0:
            return
        self.pending[key_id] = time.time()
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="keys-last-used")

    def seen(self, key_id: str, stored: float | None) -> float | None:
        """The later of a key's stored last use and one not written yet."""
        mine = self.pending.get(key_id)
        if mine is None or (stored is not None and stored >= mine):
            return stored
        return mine

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            try:
                await self.flush()
            except Exception:  # pragma: no cover - a bug; the next interval tries again
                log.exception("recording keys' last use failed")

    async def flush(self) -> None:
        """Write every pending use now (one UPDATE per ``BATCH`` keys)."""
        if not self.pending:
            return
        batch, self.pending = self.pending, {}
        items = list(batch.items())
        try:
            while items:
                chunk = items[:BATCH]
                await self.db.execute(_update(len(chunk)), [v for item in chunk for v in item])
                self.flushes += 1
                del items[:BATCH]  # written; what is left is kept on a failure
        except Exception as exc:
            from tokenrelay.store.database import DatabaseError

            if not isinstance(exc, DatabaseError):
                raise
            self._keep(dict(items))
            if not self._failing:
                self._failing = True
                log.error(
                    "cannot record when keys were last used: %s; %d kept for the next try",
                    exc,
                    len(self.pending),
                )
            return
        if self._failing:
            self._failing = False
            log.warning("keys' last use is recorded again")

    def _keep(self, unwritten: dict[str, float]) -> None:
        """Merge a failed batch back under newer uses, bounded."""
        for key_id, at in unwritten.items():
            if self.pending.get(key_id, 0.0) < at:
                self.pending[key_id] = at
        excess = len(self.pending) - MAX_PENDING
        if excess > 0:
            for key_id in sorted(self.pending, key=self.pending.__getitem__)[:excess]:
                del self.pending[key_id]

    async def close(self) -> None:
        """Stop the flusher and write what is pending (a graceful shutdown loses nothing)."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        await self.flush()

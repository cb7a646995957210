"""Whether the organization or user a JWT names is disabled (the admin API's ``orgs`` and
``users`` rows), cached like keys are, so disabling one reaches every instance within the key
cache TTL for JWT callers as for keys.

A key carries its org's and user's state in its own cached lookup (``gate.keys``); a JWT names
them in claims, so they are looked up here: one query per (user, org) pair per ``ttl``, concurrent
misses sharing it. A user row's own org counts too, so a token without an org claim cannot slip
past a disabled org.

When the database fails, the answer last confirmed is used, however old; a pair never seen is let
through (the JWT itself was verified; its tenants' state is an extra restriction that cannot be
read now), the outage is logged once, and the pair is asked again after ``ttl``.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from tokenrelay.store.database import Database

log = logging.getLogger("tokenrelay.keys")

Disabled = Literal["org", "user"] | None  # which one is disabled (the org first), or neither
Pair = tuple[str | None, str | None]  # (user, org)

# The org named, the user named, and the user's own org: (kind, disabled) rows.
_QUERY = (
    "SELECT 'org' AS kind, disabled FROM orgs WHERE id = ? "
    "UNION ALL SELECT 'user' AS kind, disabled FROM users WHERE id = ? "
    "UNION ALL SELECT 'org' AS kind, o.disabled FROM users u JOIN orgs o ON o.id = u.org_id "
    "WHERE u.id = ?"
)


class TenantStates:
    def __init__(
        self,
        db: Database,
        *,
        ttl: float = 5.0,
        lookup_timeout: float = 5.0,
        max_entries: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.db = db
        self.ttl = ttl
        self.lookup_timeout = lookup_timeout  # how long a request waits for the query
        self.max_entries = max_entries
        self._clock = clock
        self._cache: dict[Pair, tuple[float, Disabled]] = {}  # pair -> (expires at, answer)
        self._pending: dict[Pair, asyncio.Task[Disabled]] = {}
        self._failing = False  # the outage is logged once, at its start

    async def disabled(self, user: str | None, org: str | None) -> Disabled:
        """``"org"`` or ``"user"`` when the org (named, or the user's) or the user is disabled;
        ``None`` otherwise, and when the database cannot say for a pair never seen."""
        if user is None and org is None:
            return None
        pair = (user, org)
        hit = self._cache.get(pair)
        if hit is not None and hit[0] > self._clock():
            return hit[1]
        task = self._pending.get(pair)
        if task is None:
            task = asyncio.ensure_future(self._query(pair))
            self._pending[pair] = task
            task.add_done_callback(functools.partial(self._done, pair))
        await asyncio.wait((task,), timeout=self.lookup_timeout)
        if task.done() and not task.cancelled():
            exc = task.exception()
            if exc is None:
                return task.result()
            if not _is_database_error(exc):
                raise exc
        return hit[1] if hit is not None else None  # the last answer, or let through

    async def _query(self, pair: Pair) -> Disabled:
        user, org = pair
        rows = await self.db.fetch_all(_QUERY, (org, user, user))
        if any(row["kind"] == "org" and row["disabled"] for row in rows):
            return "org"
        if any(row["kind"] == "user" and row["disabled"] for row in rows):
            return "user"
        return None

    def _done(self, pair: Pair, task: asyncio.Task[Disabled]) -> None:
        if self._pending.get(pair) is task:
            del self._pending[pair]
        if task.cancelled():
            return
        now = self._clock()
        exc = task.exception()  # retrieved here: no "exception was never retrieved"
        if exc is None:
            answer = task.result()
            if self._failing:
                self._failing = False
                log.warning("the database answers org and user lookups for JWTs again")
        elif not _is_database_error(exc):
            return  # a bug, raised to the caller waiting; nothing to cache
        else:
            if not self._failing:
                self._failing = True
                log.error(
                    "cannot read whether the org or user of a JWT is disabled: %s; the state "
                    "last read is used, and callers never seen are let through, until the "
                    "database answers",
                    exc,
                )
            old = self._cache.get(pair)
            answer = old[1] if old is not None else None
        self._cache.pop(pair, None)  # re-inserted at the end: eviction goes oldest first
        while len(self._cache) >= self.max_entries:
            del self._cache[next(iter(self._cache))]
        self._cache[pair] = (now + self.ttl, answer)

    def forget(self) -> None:
        """Drop every cached answer (an org or user was changed on this instance)."""
        self._cache.clear()


def _is_database_error(exc: BaseException) -> bool:
    from tokenrelay.store.database import DatabaseError  # loaded with the database

    return isinstance(exc, DatabaseError)

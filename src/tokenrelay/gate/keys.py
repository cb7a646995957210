"""Virtual API keys: ``trk_`` + 40 random base62 characters, stored only as their SHA-256.

A fast hash is the right one here: a key carries 238 random bits, so no dictionary or brute
force applies and a slow password hash (bcrypt, argon2) would only add milliseconds to every
request. The database holds ``sha256(secret)`` and a display prefix; the secret itself is shown
once, at creation.

Lookups are cached in process for ``ttl`` seconds (5 by default), so a revocation reaches every
instance within that time without a database round trip per request; misses are cached for
``negative_ttl`` (1 s), so a flood of one bad key costs one query a second. Concurrent misses for
the same key share one query. If the database fails, a key seen valid within ``stale_if_error``
seconds is still accepted: a revocation cannot be written during the outage either.
"""

from __future__ import annotations

import asyncio
import builtins
import functools
import hashlib
import json
import logging
import secrets
import string
import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

import msgspec

if TYPE_CHECKING:  # imported by whoever opens the database; not at start-up
    from tokenrelay.store.database import Database, Row

log = logging.getLogger("tokenrelay.keys")

KEY_PREFIX = "trk_"
SECRET_LENGTH = 40  # base62 characters after the prefix: 40 * log2(62) ≈ 238 bits
PREFIX_LENGTH = len(KEY_PREFIX) + 8  # shown in listings and logs: "trk_Ab3dE9xq"
_ALPHABET = string.ascii_letters + string.digits
_COLUMNS = "id, prefix, user_id, org_id, routes, rpm, name, created_at, revoked_at, admin"


class KeyRecord(msgspec.Struct, frozen=True, kw_only=True):
    """A key as stored, minus its hash. ``routes`` ``None`` means every route."""

    id: str
    prefix: str
    user: str | None
    org: str | None
    routes: frozenset[str] | None
    rpm: int | None
    name: str | None
    created_at: float  # Unix seconds
    revoked_at: float | None
    admin: bool = False  # may read every caller's usage (GET /v1/usage); serves no other purpose

    @property
    def active(self) -> bool:
        return self.revoked_at is None


class KeyNotFound(LookupError):
    """No key has this id, prefix or secret."""


class AmbiguousKey(LookupError):
    """A prefix matches several keys; the message lists their ids."""


def hash_key(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def looks_like_key(token: str) -> bool:
    """Our format, checked before any lookup: other gateways' keys and junk cost no query."""
    body = token[len(KEY_PREFIX) :]
    return (
        token.startswith(KEY_PREFIX)
        and 32 <= len(body) <= 128
        and body.isascii()
        and body.isalnum()
    )


def new_secret() -> str:
    return KEY_PREFIX + "".join(secrets.choice(_ALPHABET) for _ in range(SECRET_LENGTH))


def _new_id() -> str:
    return "key_" + "".join(secrets.choice(_ALPHABET) for _ in range(12))


def _record(row: Row) -> KeyRecord:
    routes = row["routes"]
    return KeyRecord(
        id=row["id"],
        prefix=row["prefix"],
        user=row["user_id"],
        org=row["org_id"],
        routes=frozenset(json.loads(routes)) if routes is not None else None,
        rpm=row["rpm"],
        name=row["name"],
        created_at=float(row["created_at"]),
        revoked_at=float(row["revoked_at"]) if row["revoked_at"] is not None else None,
        admin=bool(row["admin"]),
    )


Entry = tuple[float, KeyRecord | None]  # (expires at, record or known-missing)


class KeyStore:
    """Keys in ``db`` (migrated: see ``tokenrelay.store.migrations``), with the lookup cache."""

    def __init__(
        self,
        db: Database,
        *,
        ttl: float = 5.0,
        negative_ttl: float = 1.0,
        stale_if_error: float = 60.0,
        max_entries: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.db = db
        self.ttl = ttl
        self.negative_ttl = negative_ttl
        self.stale_if_error = stale_if_error
        self.max_entries = max_entries
        self._clock = clock
        # Hits and misses apart, so a flood of bad keys cannot evict the good ones.
        self._hits: dict[str, Entry] = {}
        self._misses: dict[str, Entry] = {}
        self._pending: dict[str, asyncio.Task[KeyRecord | None]] = {}

    async def create(
        self,
        user: str | None,
        org: str | None = None,
        routes: Iterable[str] | None = None,
        rpm: int | None = None,
        name: str | None = None,
        *,
        admin: bool = False,
    ) -> tuple[str, str]:
        """A new key: ``(key_id, secret)``. The secret is not stored; show it to the user now.
        An ``admin`` key may also read the usage reports of every caller."""
        from tokenrelay.store.database import IntegrityError

        if rpm is not None and rpm < 1:
            raise ValueError("rpm must be at least 1")
        routes_json = json.dumps(sorted(set(routes))) if routes is not None else None
        for _ in range(3):  # an id or hash collision is astronomically unlikely; retry anyway
            key_id, secret = _new_id(), new_secret()
            try:
                await self.db.execute(
                    f"INSERT INTO api_keys ({_COLUMNS}, key_hash) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, NULL, ?, ?)",
                    (
                        key_id,
                        secret[:PREFIX_LENGTH],
                        user,
                        org,
                        routes_json,
                        rpm,
                        name,
                        time.time(),
                        int(admin),
                        hash_key(secret),
                    ),
                )
            except IntegrityError:
                continue
            self._misses.pop(hash_key(secret), None)
            return key_id, secret
        raise RuntimeError("could not create a unique key")  # pragma: no cover

    async def lookup(self, secret: str) -> KeyRecord | None:
        """The active key with this secret, or ``None``: unknown, revoked or not our format.
        Raises ``DatabaseError`` when the database fails and nothing usable is cached."""
        if not looks_like_key(secret):
            return None
        digest = hash_key(secret)
        now = self._clock()
        hit = self._hits.get(digest)
        if hit is not None and hit[0] > now:
            return hit[1]
        miss = self._misses.get(digest)
        if miss is not None and miss[0] > now:
            return None
        task = self._pending.get(digest)
        if task is None:
            task = asyncio.ensure_future(self._fetch(digest))
            self._pending[digest] = task
            task.add_done_callback(functools.partial(self._fetched, digest))
        try:
            # Shielded: a caller that goes away does not cancel the query the others wait on.
            return await asyncio.shield(task)
        except Exception:
            if hit is not None and hit[0] + self.stale_if_error > now:
                log.warning("key lookup failed; accepting key %s as cached", hit[1] and hit[1].id)
                return hit[1]
            raise

    async def _fetch(self, digest: str) -> KeyRecord | None:
        row = await self.db.fetch_one(
            f"SELECT {_COLUMNS} FROM api_keys WHERE key_hash = ? AND revoked_at IS NULL",
            (digest,),
        )
        return _record(row) if row is not None else None

    def _fetched(self, digest: str, task: asyncio.Task[KeyRecord | None]) -> None:
        self._pending.pop(digest, None)
        if task.cancelled() or task.exception() is not None:  # retrieved: no "never retrieved"
            return
        record = task.result()
        now = self._clock()
        if record is not None:
            self._misses.pop(digest, None)
            _put(self._hits, digest, (now + self.ttl, record), self.max_entries)
        else:
            self._hits.pop(digest, None)
            _put(self._misses, digest, (now + self.negative_ttl, None), self.max_entries)

    async def list(self, *, include_revoked: bool = True) -> builtins.list[KeyRecord]:
        """Every key, oldest first."""
        where = "" if include_revoked else " WHERE revoked_at IS NULL"
        rows = await self.db.fetch_all(
            f"SELECT {_COLUMNS} FROM api_keys{where} ORDER BY created_at, id"
        )
        return [_record(row) for row in rows]

    async def find(self, key: str) -> KeyRecord:
        """The key named by its id, its display prefix or its full secret."""
        if looks_like_key(key):
            rows = await self.db.fetch_all(
                f"SELECT {_COLUMNS} FROM api_keys WHERE key_hash = ?", (hash_key(key),)
            )
        else:
            rows = await self.db.fetch_all(
                f"SELECT {_COLUMNS} FROM api_keys WHERE id = ? OR prefix = ?", (key, key)
            )
        if not rows:
            raise KeyNotFound(f"no key has the id, prefix or secret {_shown(key)!r}")
        if len(rows) > 1:
            ids = ", ".join(row["id"] for row in rows)
            raise AmbiguousKey(f"{key!r} is the prefix of several keys; use an id: {ids}")
        return _record(rows[0])

    async def revoke(self, key: str) -> KeyRecord:
        """Revoke a key (by id, prefix or secret); the record as it is now. Other instances
        stop accepting it within ``ttl`` seconds; this one at once. Revoking twice is a no-op."""
        record = await self.find(key)
        if record.revoked_at is None:
            now = time.time()
            await self.db.execute(
                "UPDATE api_keys SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL",
                (now, record.id),
            )
            record = await self.find(record.id)
        self.forget(record.id)
        return record

    def forget(self, key_id: str | None = None) -> None:
        """Drop cached answers: for one key id, or all of them."""
        if key_id is None:
            self._hits.clear()
            self._misses.clear()
            return
        for digest, (_, record) in builtins.list(self._hits.items()):
            if record is not None and record.id == key_id:
                del self._hits[digest]


def _put(cache: dict[str, Entry], digest: str, entry: Entry, limit: int) -> None:
    cache.pop(digest, None)  # re-insert at the end: eviction goes oldest first
    while len(cache) >= limit:
        del cache[next(iter(cache))]
    cache[digest] = entry


def _shown(key: str) -> str:
    """A key as it may appear in a message: a secret only by its prefix."""
    return key[:PREFIX_LENGTH] + "…" if key.startswith(KEY_PREFIX) and len(key) > 16 else key

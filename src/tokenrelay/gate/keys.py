"""Virtual API keys: ``trk_`` + 40 random base62 characters, stored only as their SHA-256.

A fast hash is the right one here: a key carries 238 random bits, so no dictionary or brute
force applies and a slow password hash (bcrypt, argon2) would only add milliseconds to every
request. The database holds ``sha256(secret)`` and a display prefix; the secret itself is shown
once, at creation.

Lookups are cached in process for ``ttl`` seconds (5 by default), so a revocation reaches every
instance within that time without a database round trip per request; misses are cached for
``negative_ttl`` (1 s), so a flood of one bad key costs one query a second. Concurrent misses for
the same key share one query.

Why a TTL and not a Redis pub/sub invalidation: the TTL bound holds whatever else is down, needs
no second system and covers every way a key is revoked (the CLI, another tool, SQL by hand),
while a publish would be lost while Redis is away and the TTL would still be the only bound one
could promise. 5 s is "within a few seconds"; where that is too slow, a lower ``ttl`` costs one
indexed query per key per instance per ``ttl``.

When the database fails (an outage: see ``down_since``), a key confirmed valid within
``stale_if_error`` seconds is still accepted, since callers should not lose service because our
database did; a key not seen in that window cannot be judged, and ``lookup`` raises
``DatabaseError`` (a 503 for the caller, not a 401: the key may well be good). A revocation made
while this instance cannot reach the database is not seen until it can. During an outage the
database is tried at most once every ``retry_interval`` seconds, one query at a time, and keys
served from cache do not wait for it, so a dead or unreachable server neither slows requests
nor gets a flood of connection attempts; the outage is logged when it starts and when it ends.
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
from typing import TYPE_CHECKING, Any, TypeVar

import msgspec

from tokenrelay.gate.last_used import LastUsed
from tokenrelay.gate.policy import KeyPolicy, Limits, limits_from_json
from tokenrelay.gate.tenants import TenantStates

if TYPE_CHECKING:  # imported by whoever opens the database; not at start-up
    from tokenrelay.store.database import Database, Queries, Row

log = logging.getLogger("tokenrelay.keys")

KEY_PREFIX = "trk_"
SECRET_LENGTH = 40  # base62 characters after the prefix: 40 * log2(62) ≈ 238 bits
PREFIX_LENGTH = len(KEY_PREFIX) + 8  # shown in listings and logs: "trk_Ab3dE9xq"
_ALPHABET = string.ascii_letters + string.digits
_COLUMNS = "id, prefix, user_id, org_id, routes, rpm, name, created_at, revoked_at, admin"
_KEY_COLUMNS = (
    "k.id, k.prefix, k.user_id, k.org_id, k.routes, k.rpm, k.name, k.created_at, k.revoked_at, "
    "k.admin, k.role, k.models, k.expires_at, k.limits, k.metadata, k.rotated_from, "
    "k.last_used_at"
)
# A key with what the admin API stored about its user and organization (tokenrelay.admin), so
# that one lookup, cached for ``ttl``, carries everything the gate enforces.
_SELECT = (
    f"SELECT {_KEY_COLUMNS}, o.disabled AS org_disabled, o.limits AS org_limits, "
    "u.disabled AS user_disabled, u.limits AS user_limits "
    "FROM api_keys k LEFT JOIN orgs o ON o.id = k.org_id LEFT JOIN users u ON u.id = k.user_id"
)


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
    admin: bool = False  # may read every caller's usage (GET /v1/usage)
    role: str | None = None  # admin, org_admin, reader (tokenrelay.admin.roles); None: ordinary
    metadata: dict[str, Any] = msgspec.field(default_factory=dict)
    rotated_from: str | None = None  # the key this one replaced (POST /admin/v1/keys/{id}/rotate)
    last_used_at: float | None = None  # as last written (``gate.last_used``: batched, seconds late)
    policy: KeyPolicy = msgspec.field(default_factory=KeyPolicy)  # models, expiry, limits

    @property
    def active(self) -> bool:
        return self.revoked_at is None

    @property
    def expires_at(self) -> float | None:
        return self.policy.expires_at

    def expired(self, now: float) -> bool:
        return self.policy.expires_at is not None and self.policy.expires_at <= now


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
    models = row.get("models")
    policy = KeyPolicy(
        models=frozenset(json.loads(models)) if models is not None else None,
        expires_at=float(row["expires_at"]) if row.get("expires_at") is not None else None,
        key=limits_from_json(row.get("limits")),
        user=limits_from_json(row.get("user_limits")),
        org=limits_from_json(row.get("org_limits")),
        user_disabled=bool(row.get("user_disabled")),
        org_disabled=bool(row.get("org_disabled")),
    )
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
        role=row.get("role"),
        metadata=json.loads(row["metadata"]) if row.get("metadata") else {},
        rotated_from=row.get("rotated_from"),
        last_used_at=float(row["last_used_at"]) if row.get("last_used_at") is not None else None,
        policy=policy,
    )


# A key found active: (expires at, confirmed at, record), both on the store's clock.
Hit = tuple[float, float, KeyRecord]
V = TypeVar("V")


class KeyStore:
    """Keys in ``db`` (migrated: see ``tokenrelay.store.migrations``), with the lookup cache."""

    def __init__(
        self,
        db: Database,
        *,
        ttl: float = 5.0,
        negative_ttl: float = 1.0,
        stale_if_error: float = 300.0,
        retry_interval: float = 1.0,
        lookup_timeout: float = 5.0,
        max_entries: int = 10_000,
        last_used_interval: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.db = db
        self.ttl = ttl
        self.negative_ttl = negative_ttl
        self.stale_if_error = stale_if_error  # 0: nothing is served from cache once expired
        self.retry_interval = retry_interval  # seconds between queries while the database fails
        # Seconds a request waits for a lookup: a server that vanished without a reset would
        # otherwise hold requests for libpq's connect timeout, or TCP's far longer one.
        self.lookup_timeout = lookup_timeout
        self.max_entries = max_entries
        self._clock = clock
        # Hits and misses apart, so a flood of bad keys cannot evict the good ones.
        self._hits: dict[str, Hit] = {}
        self._misses: dict[str, float] = {}  # digest -> expires at
        self._pending: dict[str, asyncio.Task[KeyRecord | None]] = {}
        # The current outage: when its first failure was (``None``: the database answers),
        # its latest failure and error, and what was done meanwhile (for the line at its end).
        self.down_since: float | None = None
        self._failed_at = 0.0
        self._error = ""
        self._served_stale = 0
        self._refused = 0
        # The orgs and users JWTs name, cached alike (keys carry their own in ``_hits``).
        self.tenants = TenantStates(db, ttl=ttl, lookup_timeout=lookup_timeout, clock=clock)
        self.last_used = LastUsed(db, last_used_interval)  # when each key was last used

    async def create(
        self,
        user: str | None,
        org: str | None = None,
        routes: Iterable[str] | None = None,
        rpm: int | None = None,
        name: str | None = None,
        *,
        admin: bool = False,
        role: str | None = None,
        models: Iterable[str] | None = None,
        expires_at: float | None = None,
        limits: Limits | None = None,
        metadata: dict[str, Any] | None = None,
        rotated_from: str | None = None,
        db: Queries | None = None,
    ) -> tuple[str, str]:
        """A new key: ``(key_id, secret)``. The secret is not stored; show it to the user now.
        An ``admin`` key may also read the usage reports of every caller; ``role`` is its
        place in the admin API (``tokenrelay.admin.roles``). ``db``: a transaction to write in."""
        from tokenrelay.store.database import IntegrityError

        if rpm is not None and rpm < 1:
            raise ValueError("rpm must be at least 1")
        routes_json = json.dumps(sorted(set(routes))) if routes is not None else None
        extra = (
            role,
            json.dumps(sorted(set(models))) if models is not None else None,
            expires_at,
            msgspec.json.encode(limits).decode() if limits is not None else None,
            json.dumps(metadata or {}),
            rotated_from,
        )
        for _ in range(3):  # an id or hash collision is astronomically unlikely; retry anyway
            key_id, secret = _new_id(), new_secret()
            try:
                await (db or self.db).execute(
                    f"INSERT INTO api_keys ({_COLUMNS}, key_hash, role, models, expires_at, "
                    "limits, metadata, rotated_from) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, NULL, ?, ?, ?, ?, ?, ?, ?, ?)",
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
                        *extra,
                    ),
                )
            except IntegrityError:
                continue
            self._misses.pop(hash_key(secret), None)
            return key_id, secret
        raise RuntimeError("could not create a unique key")  # pragma: no cover

    async def lookup(self, secret: str) -> KeyRecord | None:
        """The active key with this secret, or ``None``: unknown, revoked or not our format.
        Raises ``DatabaseError`` when the database fails and the key was not confirmed valid
        within ``stale_if_error`` seconds."""
        if not looks_like_key(secret):
            return None
        digest = hash_key(secret)
        now = self._clock()
        hit = self._hits.get(digest)
        if hit is not None and hit[0] > now:
            return hit[2]
        miss = self._misses.get(digest)
        if miss is not None and miss > now:
            return None
        stale = hit[2] if hit is not None and now - hit[1] <= self.stale_if_error else None
        task = self._pending.get(digest)
        if task is None and (self.down_since is None or self._retry_due(now)):
            task = self._query(digest)
        if self.down_since is not None and stale is not None:
            # The query, if one was due, updates the cache when (if) it answers.
            self._served_stale += 1
            return stale
        if task is None:  # down, and tried less than retry_interval ago: no query, no wait
            self._refused += 1
            raise _database_error(f"the database is unreachable ({self._error})")
        # Not ``wait_for``: a caller that goes away or gives up does not cancel the query others
        # wait on; a query that outlives ``lookup_timeout`` is cancelled (freeing its connection).
        await asyncio.wait((task,), timeout=self.lookup_timeout)
        if not task.done():
            task.cancel()
            self._forget_query(digest, task)
            failure: BaseException = _database_error(
                f"the database did not answer a key lookup within {self.lookup_timeout:g} s"
            )
            self._failed(str(failure))
        elif task.cancelled():  # by another caller's timeout
            failure = _database_error(f"the database is unreachable ({self._error})")
        else:
            exc = task.exception()
            if exc is None:
                return task.result()
            if not _is_database_error(exc):
                raise exc
            failure = exc
        if stale is None:
            self._refused += 1
            raise failure
        self._served_stale += 1
        return stale

    def _retry_due(self, now: float) -> bool:
        """While the database fails: one query at a time, at most every ``retry_interval``."""
        return not self._pending and now - self._failed_at >= self.retry_interval

    def _query(self, digest: str) -> asyncio.Task[KeyRecord | None]:
        task = asyncio.ensure_future(self._fetch(digest))
        self._pending[digest] = task
        task.add_done_callback(functools.partial(self._fetched, digest))
        return task

    async def _fetch(self, digest: str) -> KeyRecord | None:
        row = await self.db.fetch_one(
            f"{_SELECT} WHERE k.key_hash = ? AND k.revoked_at IS NULL",
            (digest,),
        )
        return _record(row) if row is not None else None

    def _forget_query(self, digest: str, task: asyncio.Task[KeyRecord | None]) -> None:
        if self._pending.get(digest) is task:  # not a newer query for the same key
            del self._pending[digest]

    def _fetched(self, digest: str, task: asyncio.Task[KeyRecord | None]) -> None:
        self._forget_query(digest, task)
        if task.cancelled():
            return
        exc = task.exception()  # retrieved here: no "exception was never retrieved"
        if exc is not None:
            if _is_database_error(exc):
                self._failed(str(exc))
            return
        if self.down_since is not None:
            self._recovered()
        record = task.result()
        now = self._clock()
        if record is not None:
            self._misses.pop(digest, None)
            _put(self._hits, digest, (now + self.ttl, now, record), self.max_entries)
        else:
            self._hits.pop(digest, None)
            _put(self._misses, digest, now + self.negative_ttl, self.max_entries)

    def _failed(self, error: str) -> None:
        """A lookup failed: the outage starts (logged once) or goes on."""
        now = self._failed_at = self._clock()
        self._error = error
        if self.down_since is not None:
            return
        self.down_since = now
        self._served_stale = self._refused = 0
        cached = (
            f"keys confirmed valid in the last {self.stale_if_error:g} s are accepted from cache "
            "(a revocation meanwhile is not seen) and others get 503"
            if self.stale_if_error > 0
            else "every key gets 503 (nothing is accepted from cache: the stale window is 0)"
        )
        log.error(
            "cannot check API keys: %s. Until the database answers, %s; it is tried again at "
            "most every %g s",
            error,
            cached,
            self.retry_interval,
        )

    def _recovered(self) -> None:
        down = self._clock() - (self.down_since or 0.0)
        self.down_since = None
        log.warning(
            "the database answers key lookups again, after %.1f s: %d request(s) were accepted "
            "from cache meanwhile, %d refused with 503",
            down,
            self._served_stale,
            self._refused,
        )

    async def list(self, *, include_revoked: bool = True) -> builtins.list[KeyRecord]:
        """Every key, oldest first."""
        where = "" if include_revoked else " WHERE k.revoked_at IS NULL"
        rows = await self.db.fetch_all(f"{_SELECT}{where} ORDER BY k.created_at, k.id")
        return [_record(row) for row in rows]

    async def query(
        self,
        where: str,
        params: Iterable[object] = (),
        *,
        limit: int | None = None,
        db: Queries | None = None,
    ) -> builtins.list[KeyRecord]:
        """Keys matching ``where`` (SQL over ``k``, the key, ``o`` its org, ``u`` its user),
        oldest first; ``db``: a transaction to read in."""
        sql = f"{_SELECT} WHERE {where} ORDER BY k.created_at, k.id"
        values = builtins.list(params)
        if limit is not None:
            sql += " LIMIT ?"
            values.append(limit)
        rows = await (db or self.db).fetch_all(sql, values)
        return [_record(row) for row in rows]

    async def find(self, key: str) -> KeyRecord:
        """The key named by its id, its display prefix or its full secret."""
        if looks_like_key(key):
            rows = await self.db.fetch_all(f"{_SELECT} WHERE k.key_hash = ?", (hash_key(key),))
        else:
            rows = await self.db.fetch_all(f"{_SELECT} WHERE k.id = ? OR k.prefix = ?", (key, key))
        if not rows:
            raise KeyNotFound(f"no key has the id, prefix or secret {_shown(key)!r}")
        if len(rows) > 1:
            ids = ", ".join(row["id"] for row in rows)
            raise AmbiguousKey(f"{key!r} is the prefix of several keys; use an id: {ids}")
        return _record(rows[0])

    async def revoke(self, key: str) -> KeyRecord:
        """Revoke a key (by id, prefix or secret); the record as it is now. Other instances
        stop accepting it within their ``ttl`` seconds (while they cannot reach the database,
        not until they can again); this one at once. Revoking twice is a no-op."""
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
        """Drop cached answers: for one key id, or all of them (and the orgs and users of
        JWTs)."""
        if key_id is None:
            self._hits.clear()
            self._misses.clear()
            self.tenants.forget()
            return
        for digest, (_, _, record) in builtins.list(self._hits.items()):
            if record.id == key_id:
                del self._hits[digest]


def _database_error(message: str) -> Exception:
    from tokenrelay.store.database import DatabaseError

    return DatabaseError(message)


def _is_database_error(exc: BaseException) -> bool:
    """Whether ``exc`` is the database failing (imported late: see the module's imports)."""
    from tokenrelay.store.database import DatabaseError

    return isinstance(exc, DatabaseError)


def _put(cache: dict[str, V], digest: str, entry: V, limit: int) -> None:
    cache.pop(digest, None)  # re-insert at the end: eviction goes oldest first
    while len(cache) >= limit:
        del cache[next(iter(cache))]
    cache[digest] = entry


def _shown(key: str) -> str:
    """A key as it may appear in a message: a secret only by its prefix."""
    return key[:PREFIX_LENGTH] + "…" if key.startswith(KEY_PREFIX) and len(key) > 16 else key

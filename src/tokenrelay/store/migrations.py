"""The schema, as numbered migrations applied at start-up, so an upgrade needs no manual step.

Every pending migration runs in one transaction with its ``schema_migrations`` row: a failure
leaves the schema exactly as it was. Two instances starting together apply each migration once:
on PostgreSQL the first takes ``pg_advisory_xact_lock`` and the second waits for it, then finds
the work done; on SQLite ``BEGIN IMMEDIATE`` does the same with the file's write lock.

To change the schema, append a ``Migration`` with the next number; never edit one that shipped.
Write SQL both backends run (``TEXT``, ``INTEGER``/``BIGINT``, ``DOUBLE PRECISION``,
``CREATE ... IF NOT EXISTS``), or give ``postgresql`` its own statements where they must differ.
Times are Unix seconds (``DOUBLE PRECISION``) on both backends, so queries compare them alike.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence

import msgspec

from tokenrelay.store.database import Database, DatabaseError, Queries

log = logging.getLogger("tokenrelay.store")

# pg_advisory_xact_lock key: "tokenrel" as a big-endian int64, unlikely to meet anyone else's.
ADVISORY_LOCK = 0x746F6B656E72656C


class Migration(msgspec.Struct, frozen=True):
    """One schema step: ``statements`` run in order (one statement each: SQLite's driver runs
    one at a time); ``postgresql`` replaces them on PostgreSQL when given."""

    version: int
    name: str
    statements: tuple[str, ...]
    postgresql: tuple[str, ...] | None = None

    def for_backend(self, backend: str) -> tuple[str, ...]:
        if backend == "postgresql" and self.postgresql is not None:
            return self.postgresql
        return self.statements


MIGRATIONS: tuple[Migration, ...] = (
    Migration(
        1,
        "api_keys",
        (
            """
            CREATE TABLE api_keys (
                id TEXT PRIMARY KEY,
                key_hash TEXT NOT NULL UNIQUE,
                prefix TEXT NOT NULL,
                user_id TEXT,
                org_id TEXT,
                routes TEXT,
                rpm INTEGER,
                name TEXT,
                created_at DOUBLE PRECISION NOT NULL,
                revoked_at DOUBLE PRECISION
            )
            """,
            "CREATE INDEX api_keys_prefix ON api_keys (prefix)",
        ),
    ),
    Migration(
        2,
        "ledger",
        (
            # One row per request. Cost is exact at nanodollar resolution (an integer, so SQL
            # sums stay exact on both backends); attempts holds every attempt as JSON, with the
            # tokens a failed one consumed (already included in the totals).
            """
            CREATE TABLE ledger (
                request_id TEXT PRIMARY KEY,
                created_at DOUBLE PRECISION NOT NULL,
                user_id TEXT,
                org_id TEXT,
                key_id TEXT,
                client_ip TEXT,
                route TEXT NOT NULL,
                provider TEXT,
                model TEXT,
                attempts INTEGER NOT NULL,
                attempts_detail TEXT,
                status INTEGER NOT NULL,
                outcome TEXT NOT NULL,
                error_type TEXT,
                input_tokens BIGINT NOT NULL DEFAULT 0,
                output_tokens BIGINT NOT NULL DEFAULT 0,
                cache_read_tokens BIGINT NOT NULL DEFAULT 0,
                cache_write_tokens BIGINT NOT NULL DEFAULT 0,
                reasoning_tokens BIGINT NOT NULL DEFAULT 0,
                estimated INTEGER NOT NULL DEFAULT 0,
                cost_nanousd BIGINT NOT NULL DEFAULT 0,
                priced INTEGER NOT NULL DEFAULT 1,
                ttft_ms DOUBLE PRECISION,
                duration_ms DOUBLE PRECISION NOT NULL
            )
            """,
            "CREATE INDEX ledger_created ON ledger (created_at)",
            "CREATE INDEX ledger_org ON ledger (org_id, created_at)",
            "CREATE INDEX ledger_user ON ledger (user_id, created_at)",
            "CREATE INDEX ledger_key ON ledger (key_id, created_at)",
        ),
    ),
    Migration(
        3,
        "admin_keys",
        ("ALTER TABLE api_keys ADD COLUMN admin INTEGER NOT NULL DEFAULT 0",),
    ),
    Migration(
        4,
        "ledger_served_model",
        (
            # The model the upstream said served the request (it may differ from ``model``, the
            # one asked for), and the one the cost was computed on (see metering.ledger).
            "ALTER TABLE ledger ADD COLUMN served_model TEXT",
            "ALTER TABLE ledger ADD COLUMN priced_model TEXT",
        ),
    ),
    Migration(
        5,
        "responses",
        (
            # Stored /v1/responses answers (tokenrelay.store.responses): the response object
            # and the input items, both JSON, readable only by ``owner`` (the caller's
            # Identity.subject: "key:<id>", "user:<jwt sub>", or "ip:<address>").
            """
            CREATE TABLE responses (
                id TEXT PRIMARY KEY,
                owner TEXT NOT NULL,
                created_at DOUBLE PRECISION NOT NULL,
                status TEXT NOT NULL,
                response TEXT NOT NULL,
                input_items TEXT NOT NULL
            )
            """,
            "CREATE INDEX responses_created ON responses (created_at)",
        ),
    ),
    Migration(
        6,
        "ledger_cache",
        (
            # The response cache (tokenrelay.cache): "hit", "miss" or "bypass" on a route with
            # one (NULL elsewhere); a hit's cost is 0 and saved_nanousd what the original answer
            # cost; a semantic hit's cosine similarity.
            "ALTER TABLE ledger ADD COLUMN cache TEXT",
            "ALTER TABLE ledger ADD COLUMN saved_nanousd BIGINT NOT NULL DEFAULT 0",
            "ALTER TABLE ledger ADD COLUMN cache_similarity DOUBLE PRECISION",
        ),
    ),
    Migration(
        7,
        "admin",
        (
            # The admin API (tokenrelay.admin): organizations, their users, stored budgets, the
            # admin audit trail, and what a key carries beyond migration 1's columns. JSON in
            # TEXT columns; times are Unix seconds. ``ceiling`` columns hold what a global admin
            # set, which an org admin may lower but never raise past.
            """
            CREATE TABLE orgs (
                id TEXT PRIMARY KEY,
                name TEXT NOT NULL,
                disabled INTEGER NOT NULL DEFAULT 0,
                metadata TEXT NOT NULL DEFAULT '{}',
                limits TEXT,
                limits_ceiling TEXT,
                created_at DOUBLE PRECISION NOT NULL,
                updated_at DOUBLE PRECISION NOT NULL
            )
            """,
            """
            CREATE TABLE users (
                id TEXT PRIMARY KEY,
                org_id TEXT NOT NULL,
                name TEXT NOT NULL,
                email TEXT,
                disabled INTEGER NOT NULL DEFAULT 0,
                metadata TEXT NOT NULL DEFAULT '{}',
                limits TEXT,
                created_at DOUBLE PRECISION NOT NULL,
                updated_at DOUBLE PRECISION NOT NULL
            )
            """,
            "CREATE INDEX users_org ON users (org_id, created_at)",
            "ALTER TABLE api_keys ADD COLUMN role TEXT",
            "ALTER TABLE api_keys ADD COLUMN models TEXT",
            "ALTER TABLE api_keys ADD COLUMN expires_at DOUBLE PRECISION",
            "ALTER TABLE api_keys ADD COLUMN limits TEXT",
            "ALTER TABLE api_keys ADD COLUMN metadata TEXT",
            "ALTER TABLE api_keys ADD COLUMN rotated_from TEXT",
            # Keys made with --admin before roles existed were the operator's own: admins.
            "UPDATE api_keys SET role = 'admin' WHERE admin = 1 AND org_id IS NULL",
            "CREATE INDEX api_keys_org ON api_keys (org_id, created_at)",
            """
            CREATE TABLE admin_budgets (
                id TEXT PRIMARY KEY,
                scope TEXT NOT NULL,
                subject_id TEXT NOT NULL,
                org_id TEXT,
                amount_usd TEXT NOT NULL,
                ceiling_usd TEXT,
                period TEXT NOT NULL,
                hard INTEGER NOT NULL,
                alert_at TEXT NOT NULL,
                created_at DOUBLE PRECISION NOT NULL,
                updated_at DOUBLE PRECISION NOT NULL
            )
            """,
            "CREATE INDEX admin_budgets_subject ON admin_budgets (scope, subject_id)",
            """
            CREATE TABLE admin_audit (
                id TEXT PRIMARY KEY,
                at DOUBLE PRECISION NOT NULL,
                actor_key_id TEXT,
                actor_role TEXT,
                action TEXT NOT NULL,
                target_type TEXT NOT NULL,
                target_id TEXT,
                org_id TEXT,
                before TEXT,
                after TEXT
            )
            """,
            "CREATE INDEX admin_audit_at ON admin_audit (at, id)",
            "CREATE INDEX admin_audit_org ON admin_audit (org_id, at)",
        ),
    ),
    Migration(
        8,
        "key_last_used",
        # When a key was last used (Unix seconds), written in batches off the request path
        # (tokenrelay.gate.last_used); NULL: not used since this column exists.
        ("ALTER TABLE api_keys ADD COLUMN last_used_at DOUBLE PRECISION",),
    ),
    Migration(
        9,
        "ledger_guard",
        # The route's guard (tokenrelay.guard), as JSON: {"masked": {entity type: count},
        # "output": {rule: matches}, "blocked": rule}; types and counts, never the values.
        ("ALTER TABLE ledger ADD COLUMN guard TEXT",),
    ),
)

_CREATE_TABLE = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    version INTEGER PRIMARY KEY,
    name TEXT NOT NULL,
    applied_at DOUBLE PRECISION NOT NULL
)
"""


def _check_order(migrations: Sequence[Migration]) -> None:
    versions = [migration.version for migration in migrations]
    if versions != sorted(set(versions)) or (versions and versions[0] < 1):
        raise ValueError(f"migration versions must be unique, ascending and ≥ 1: {versions}")


async def migrate(db: Database, migrations: Sequence[Migration] = MIGRATIONS) -> list[int]:
    """Apply what ``db`` lacks; the versions applied now (empty when it was up to date)."""
    _check_order(migrations)
    async with db.transaction() as tx:
        if tx.backend == "postgresql":
            await tx.execute(f"SELECT pg_advisory_xact_lock({ADVISORY_LOCK})")
        await tx.execute(_CREATE_TABLE)
        rows = await tx.fetch_all("SELECT version FROM schema_migrations")
        done = {int(row["version"]) for row in rows}
        applied = [migration for migration in migrations if migration.version not in done]
        for migration in applied:
            await _apply(tx, migration)
    if applied:
        names = ", ".join(f"{m.version} {m.name}" for m in applied)
        log.info("database %s: applied migrations %s", db.backend, names)
    newer = max(done, default=0) > max((m.version for m in migrations), default=0)
    if newer:
        # A newer release migrated this database (a rolling upgrade): its migrations keep old
        # readers working, so run, but say so.
        log.warning("database schema version %d is newer than this release's", max(done))
    return [migration.version for migration in applied]


async def _apply(tx: Queries, migration: Migration) -> None:
    for statement in migration.for_backend(tx.backend):
        await tx.execute(statement)
    await tx.execute(
        "INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, ?, ?)",
        (migration.version, migration.name, time.time()),
    )


async def schema_version(db: Database) -> int:
    """The highest applied migration, 0 for a database never migrated."""
    try:
        row = await db.fetch_one("SELECT MAX(version) AS version FROM schema_migrations")
    except DatabaseError:  # no schema_migrations table yet
        return 0
    return int(row["version"]) if row and row["version"] is not None else 0

"""The database layer and its migrations on SQLite and on a real PostgreSQL.

PostgreSQL tests run in a database created for this session (``tokenrelay_t_<random>`` on
127.0.0.1:5432, user postgres) and dropped after, each test in a schema of its own. Without a
reachable server they are skipped, saying why, except under ``CI=true`` where that is a failure.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import psycopg
import pytest
import pytest_asyncio

from tests.pg_server import machine_database
from tokenrelay.gate.keys import KeyStore, hash_key
from tokenrelay.store import (
    Database,
    DatabaseError,
    IntegrityError,
    Migration,
    connect,
    display_url,
    migrate,
    open_database,
    parse_url,
)
from tokenrelay.store.database import to_psycopg
from tokenrelay.store.migrations import MIGRATIONS, schema_version

# --- fixtures ------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def pg_database() -> Iterator[str]:
    """A fresh database for the session; dropped at the end."""
    with machine_database() as url:
        yield url


@pytest.fixture
def pg_url(pg_database: str) -> str:
    """A schema of this test's own inside the session database, first on the search path."""
    schema = f"t_{secrets.token_hex(6)}"
    with psycopg.connect(pg_database, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
    return f"{pg_database}?options=-csearch_path%3D{schema}"


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/tokenrelay.db"
    url: str = request.getfixturevalue("pg_url")
    return url


@pytest_asyncio.fixture
async def db(db_url: str) -> AsyncIterator[Database]:
    database = await open_database(db_url)
    try:
        yield database
    finally:
        await database.close()


# --- URLs and SQL translation --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("sqlite:///tokenrelay.db", ("sqlite", "tokenrelay.db")),
        ("sqlite:///data/x.db", ("sqlite", "data/x.db")),
        ("sqlite:////var/lib/x.db", ("sqlite", "/var/lib/x.db")),
        ("sqlite://", ("sqlite", ":memory:")),
        ("sqlite:///:memory:", ("sqlite", ":memory:")),
        ("/tmp/keys.db", ("sqlite", "/tmp/keys.db")),
        ("keys.db", ("sqlite", "keys.db")),
        ("postgresql://u@h/db", ("postgresql", "postgresql://u@h/db")),
        ("postgres://u@h/db", ("postgresql", "postgres://u@h/db")),
    ],
)
def test_parse_url(url: str, expected: tuple[str, str]) -> None:
    assert parse_url(url) == expected


def test_parse_url_refuses_other_schemes() -> None:
    with pytest.raises(ValueError, match=r"mysql://.*sqlite:///"):
        parse_url("mysql://root@localhost/db")


def test_display_url_hides_the_password() -> None:
    assert display_url("postgresql://app:s3cret@db:5432/x") == "postgresql://app:***@db:5432/x"
    assert display_url("postgresql://app@db/x") == "postgresql://app@db/x"
    assert display_url("sqlite:///rel.db") == os.path.abspath("rel.db")


def test_placeholders_translate_for_psycopg() -> None:
    assert to_psycopg("SELECT ? WHERE a LIKE 'x%' AND b = '?'") == (
        "SELECT %s WHERE a LIKE 'x%%' AND b = '?'"
    )
    assert to_psycopg('SELECT "we?ird" FROM t WHERE x = ?') == 'SELECT "we?ird" FROM t WHERE x = %s'


# --- the Database API, both backends -------------------------------------------------------------


async def test_statements_rows_and_placeholders(db: Database) -> None:
    await db.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, name TEXT, score DOUBLE PRECISION)")
    assert await db.execute("INSERT INTO t (id, name, score) VALUES (?, ?, ?)", (1, "a?", 1.5)) == 1
    await db.execute_many(
        "INSERT INTO t (id, name, score) VALUES (?, ?, ?)", [(2, "b%", 2.0), (3, "c", None)]
    )
    rows = await db.fetch_all("SELECT id, name, score FROM t WHERE name LIKE '%' ORDER BY id")
    assert rows == [
        {"id": 1, "name": "a?", "score": 1.5},
        {"id": 2, "name": "b%", "score": 2.0},
        {"id": 3, "name": "c", "score": None},
    ]
    assert await db.fetch_one("SELECT name FROM t WHERE id = ?", (2,)) == {"name": "b%"}
    assert await db.fetch_one("SELECT name FROM t WHERE id = ?", (9,)) is None
    assert await db.fetch_one("SELECT '?' AS q, 'x%' AS p") == {"q": "?", "p": "x%"}
    assert await db.execute("UPDATE t SET score = ? WHERE score IS NOT NULL", (0.0,)) == 2
    with pytest.raises(IntegrityError):
        await db.execute("INSERT INTO t (id, name) VALUES (?, ?)", (1, "again"))
    with pytest.raises(DatabaseError):
        await db.execute("SELECT * FROM no_such_table")


async def test_transactions_commit_or_roll_back_together(db: Database) -> None:
    await db.execute("CREATE TABLE t (id INTEGER PRIMARY KEY)")
    async with db.transaction() as tx:
        await tx.execute("INSERT INTO t (id) VALUES (?)", (1,))
        await tx.execute_many("INSERT INTO t (id) VALUES (?)", [(2,), (3,)])
        assert len(await tx.fetch_all("SELECT id FROM t")) == 3
    with pytest.raises(RuntimeError):
        async with db.transaction() as tx:
            await tx.execute("INSERT INTO t (id) VALUES (?)", (4,))
            raise RuntimeError("boom")
    with pytest.raises(IntegrityError):
        async with db.transaction() as tx:
            await tx.execute("INSERT INTO t (id) VALUES (?)", (5,))
            await tx.execute("INSERT INTO t (id) VALUES (?)", (1,))
    with pytest.raises(IntegrityError):  # a batch is atomic outside a transaction too
        await db.execute_many("INSERT INTO t (id) VALUES (?)", [(6,), (1,)])
    assert [row["id"] for row in await db.fetch_all("SELECT id FROM t ORDER BY id")] == [1, 2, 3]
    with pytest.raises(DatabaseError, match="transaction is over"):
        await tx.execute("SELECT 1")


async def test_a_cancelled_transaction_leaves_the_database_usable(db: Database) -> None:
    await db.execute("CREATE TABLE t (id INTEGER PRIMARY KEY)")
    inside = asyncio.Event()

    async def interrupted() -> None:
        async with db.transaction() as tx:
            await tx.execute("INSERT INTO t (id) VALUES (?)", (1,))
            inside.set()
            await asyncio.sleep(10)

    task = asyncio.create_task(interrupted())
    await inside.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert await db.fetch_all("SELECT id FROM t") == []
    async with db.transaction() as tx:
        await tx.execute("INSERT INTO t (id) VALUES (?)", (2,))
    assert await db.fetch_all("SELECT id FROM t") == [{"id": 2}]


async def test_concurrent_statements_share_the_database(db: Database) -> None:
    await db.execute("CREATE TABLE t (id INTEGER PRIMARY KEY)")

    async def insert(i: int) -> None:
        if i % 2:
            async with db.transaction() as tx:
                await tx.execute("INSERT INTO t (id) VALUES (?)", (i,))
                await asyncio.sleep(0)
        else:
            await db.execute("INSERT INTO t (id) VALUES (?)", (i,))

    await asyncio.gather(*(insert(i) for i in range(40)))
    assert (await db.fetch_one("SELECT COUNT(*) AS n FROM t")) == {"n": 40}


# --- migrations ----------------------------------------------------------------------------------


async def test_migrations_apply_once_and_are_idempotent(db_url: str) -> None:
    db = await connect(db_url)
    try:
        assert await schema_version(db) == 0
        assert await migrate(db) == [m.version for m in MIGRATIONS]
        assert await migrate(db) == []
        assert await schema_version(db) == MIGRATIONS[-1].version
        columns = await db.fetch_one(
            "SELECT id, key_hash, prefix, user_id, org_id, routes, rpm, name, created_at, "
            "revoked_at FROM api_keys"
        )
        assert columns is None  # the table exists with every column, and is empty
    finally:
        await db.close()


SLOW_STEP = Migration(
    2,
    "slow",
    ("CREATE TABLE slow_step (id INTEGER)",),
    postgresql=("SELECT pg_sleep(0.3)", "CREATE TABLE slow_step (id INTEGER)"),
)


async def test_two_instances_migrating_at_once_apply_each_step_once(db_url: str) -> None:
    first, second = await connect(db_url), await connect(db_url)
    try:
        steps = [*MIGRATIONS[:1], SLOW_STEP]
        started = time.monotonic()
        results = await asyncio.gather(migrate(first, steps), migrate(second, steps))
        assert sorted(results) == [[], [1, 2]]
        rows = await first.fetch_all("SELECT version FROM schema_migrations ORDER BY version")
        assert [row["version"] for row in rows] == [1, 2]
        if first.backend == "postgresql":  # the second waited on the advisory lock
            assert time.monotonic() - started >= 0.3
    finally:
        await first.close()
        await second.close()


async def test_a_failing_migration_changes_nothing(db_url: str) -> None:
    db = await connect(db_url)
    try:
        last = MIGRATIONS[-1].version
        broken = Migration(last + 1, "broken", ("CREATE TABLE fine (id INTEGER)", "NOT SQL AT ALL"))
        with pytest.raises(DatabaseError):
            await migrate(db, [*MIGRATIONS, broken])
        assert await schema_version(db) == 0  # the shipped migrations rolled back with it
        assert await migrate(db) == [m.version for m in MIGRATIONS]
        with pytest.raises(DatabaseError):
            await db.fetch_all("SELECT * FROM fine")
    finally:
        await db.close()


def test_migration_versions_must_ascend() -> None:
    bad = [Migration(2, "b", ("SELECT 1",)), Migration(1, "a", ("SELECT 1",))]
    with pytest.raises(ValueError, match="ascending"):
        asyncio.run(migrate(None, bad))  # type: ignore[arg-type]


async def test_sqlite_database_is_a_wal_file_in_a_created_directory(tmp_path: Path) -> None:
    path = tmp_path / "nested" / "dir" / "keys.db"
    async with await open_database(str(path)) as db:
        assert (await db.fetch_one("PRAGMA journal_mode")) == {"journal_mode": "wal"}
        assert (await db.fetch_one("PRAGMA busy_timeout")) == {"timeout": 5000}
    assert path.exists()
    with pytest.raises(DatabaseError, match="closed"):
        await db.fetch_one("SELECT 1")


async def test_postgresql_replaces_a_connection_the_server_dropped(pg_url: str) -> None:
    async with await open_database(pg_url) as db:
        row = await db.fetch_one("SELECT pg_backend_pid() AS pid")
        assert row is not None
        with psycopg.connect(pg_url, autocommit=True) as admin:
            admin.execute("SELECT pg_terminate_backend(%s)", (row["pid"],))
        again = await db.fetch_one("SELECT pg_backend_pid() AS pid")  # retried on a fresh one
        assert again is not None and again["pid"] != row["pid"]


async def test_postgresql_connect_failure_names_the_server_not_the_password() -> None:
    with pytest.raises(DatabaseError) as failure:
        await connect("postgresql://app:hunter2@127.0.0.1:1/none?connect_timeout=2")
    assert "hunter2" not in str(failure.value) and "127.0.0.1" in str(failure.value)


# --- keys on both backends -----------------------------------------------------------------------


async def test_keys_create_lookup_revoke(db: Database) -> None:
    store = KeyStore(db)
    key_id, secret = await store.create("alice", "acme", ["default"], 60, "ci")
    assert secret.startswith("trk_") and len(secret) == 44
    row = await db.fetch_one("SELECT key_hash, prefix FROM api_keys WHERE id = ?", (key_id,))
    assert row == {"key_hash": hash_key(secret), "prefix": secret[:12]}
    dump = await db.fetch_all("SELECT * FROM api_keys")
    assert secret not in repr(dump)

    record = await store.lookup(secret)
    assert record is not None
    assert (record.id, record.user, record.org, record.rpm) == (key_id, "alice", "acme", 60)
    assert record.routes == frozenset({"default"}) and record.name == "ci"
    assert await store.lookup(secret[:-1] + ("x" if secret[-1] != "x" else "y")) is None

    other_id, _ = await store.create("bob")
    assert [key.id for key in await store.list()] == [key_id, other_id]

    revoked = await store.revoke(secret[:12])  # by prefix
    assert revoked.id == key_id and revoked.revoked_at is not None
    assert await store.lookup(secret) is None  # at once on this instance
    assert [key.id for key in await store.list(include_revoked=False)] == [other_id]
    again = await store.revoke(key_id)  # twice: a no-op
    assert again.revoked_at == revoked.revoked_at

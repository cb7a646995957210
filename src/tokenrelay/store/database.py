"""One async database API over two backends, so the API keys and the ledger are written once.

Our SQL uses ``?`` placeholders and gets rows back as dicts on both backends:

- SQLite (the default: a file, no server) runs on one ``sqlite3`` connection in one worker thread,
  so the event loop never waits on the disk; WAL mode lets other processes read while one writes,
  and ``busy_timeout`` makes a second writer wait instead of failing.
- PostgreSQL (several instances) uses psycopg 3's ``AsyncConnection`` in a small pool of our own
  (``pool_size`` connections, opened on demand, autocommit outside ``transaction()``).

Each driver is imported when a database of its kind is opened, never at start-up otherwise
(``import psycopg`` alone costs about 250 ms).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from tokenrelay.store.urls import Backend, display_url, parse_url

if TYPE_CHECKING:
    import sqlite3

    from psycopg import AsyncConnection

# A file in the working directory, like Prometheus's ``data/``: ``tokenrelay serve`` and
# ``tokenrelay keys`` run from the same place find the same keys; production sets
# TOKENRELAY_DATABASE_URL (an absolute ``sqlite:////path`` or ``postgresql://...``).
DEFAULT_DATABASE_URL = "sqlite:///tokenrelay.db"

Row = dict[str, Any]
Params = Sequence[Any]
T = TypeVar("T")


class DatabaseError(Exception):
    """The database is unreachable or refused a statement; the driver's error is the cause."""


class DataError(DatabaseError):
    """The database refused a statement for the values it was given (a data exception: NUL in
    text, a number out of range, text that is not UTF-8; or a constraint), not because it is
    unreachable: the same statement with other values can succeed, so retrying it cannot."""


class IntegrityError(DataError):
    """A constraint (unique, not null, foreign key) refused a write."""


class Queries(Protocol):
    """What a ``Database`` and a transaction both offer: our SQL, ``?`` placeholders, dict rows."""

    @property
    def backend(self) -> Backend: ...

    async def execute(self, sql: str, params: Params = ()) -> int:
        """Run one statement; the number of rows it changed."""
        ...

    async def execute_many(self, sql: str, rows: Iterable[Params]) -> None:
        """Run one statement per parameter row, atomically (the ledger's batched inserts)."""
        ...

    async def fetch_all(self, sql: str, params: Params = ()) -> list[Row]: ...

    async def fetch_one(self, sql: str, params: Params = ()) -> Row | None: ...


class Database(ABC):
    """A connection (pool) to one database. Use ``transaction()`` for several statements that
    must apply together; inside it, run them on the object it yields, not on the database
    (transactions do not nest)."""

    backend: Backend
    url: str  # as given, for messages (see ``display_url``)

    @abstractmethod
    async def execute(self, sql: str, params: Params = ()) -> int: ...

    @abstractmethod
    async def execute_many(self, sql: str, rows: Iterable[Params]) -> None: ...

    @abstractmethod
    async def fetch_all(self, sql: str, params: Params = ()) -> list[Row]: ...

    @abstractmethod
    async def fetch_one(self, sql: str, params: Params = ()) -> Row | None: ...

    @abstractmethod
    def transaction(self) -> contextlib.AbstractAsyncContextManager[Queries]: ...

    @abstractmethod
    async def close(self) -> None: ...

    async def __aenter__(self) -> Database:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


# --- URLs ----------------------------------------------------------------------------------------


async def connect(url: str, *, pool_size: int = 4, busy_timeout: float = 5.0) -> Database:
    """Open the database ``url`` names (see ``parse_url``); the first connection is made here,
    so a wrong URL fails now with the reason rather than on the first request."""
    backend, target = parse_url(url)
    db: SQLiteDatabase | PostgresDatabase
    if backend == "sqlite":
        db = SQLiteDatabase(target, url=url, busy_timeout=busy_timeout)
    else:
        db = PostgresDatabase(target, pool_size=pool_size)
    await db.open()
    return db


# --- SQLite --------------------------------------------------------------------------------------


def _dict_row(cursor: sqlite3.Cursor, row: tuple[Any, ...]) -> Row:
    return {column[0]: value for column, value in zip(cursor.description, row, strict=True)}


class SQLiteDatabase(Database):
    """One connection used from one worker thread. An ``asyncio.Lock`` gives a transaction the
    connection to itself across awaits; other statements queue behind it, which costs nothing
    SQLite would not cost anyway (it has one writer at a time)."""

    backend: Backend = "sqlite"

    def __init__(self, path: str, *, url: str | None = None, busy_timeout: float = 5.0) -> None:
        self.path = path
        self.url = url or path
        self._busy_timeout = busy_timeout
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="tokenrelay-sqlite")
        self._lock = asyncio.Lock()
        self._conn: sqlite3.Connection | None = None
        self._closed = False
        self._errors: tuple[type[Exception], type[Exception]] | None = None

    async def open(self) -> None:
        await self._call(self._open)

    def _open(self) -> None:
        import sqlite3

        self._errors = (sqlite3.IntegrityError, sqlite3.Error)
        if self.path != ":memory:":
            parent = os.path.dirname(os.path.abspath(self.path))
            os.makedirs(parent, exist_ok=True)
        # isolation_level=None: autocommit, and our own BEGIN IMMEDIATE in transaction(), which
        # takes the write lock up front so two writers queue instead of deadlocking on upgrade.
        conn = sqlite3.connect(
            self.path, timeout=self._busy_timeout, isolation_level=None, check_same_thread=False
        )
        try:
            if self.path != ":memory:":
                conn.execute("PRAGMA journal_mode = WAL")
            conn.execute("PRAGMA synchronous = NORMAL")  # safe with WAL; no fsync per commit
            conn.execute("PRAGMA foreign_keys = ON")
        except BaseException:
            conn.close()
            raise
        conn.row_factory = _dict_row
        self._conn = conn

    @property
    def _connection(self) -> sqlite3.Connection:
        if self._conn is None:
            raise DatabaseError(f"the database {self.url} is closed")
        return self._conn

    async def _call(self, fn: Callable[..., T], *args: Any, shield: bool = False) -> T:
        """Run ``fn`` on the worker thread. A caller cancelled while its statement is still
        queued drops the statement, unless ``shield``: then it runs anyway, in order."""
        if self._closed:
            raise DatabaseError(f"the database {display_url(self.url)} is closed")
        future = asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)
        try:
            return await (asyncio.shield(future) if shield else future)
        except Exception as exc:
            raise self._translate(exc) from exc

    def _translate(self, exc: Exception) -> Exception:
        if self._errors is None or isinstance(exc, DatabaseError):
            return exc
        integrity, error = self._errors
        if isinstance(exc, integrity):
            return IntegrityError(f"{exc} (SQLite {self.path})")
        if isinstance(exc, (UnicodeError, OverflowError)):  # a value sqlite3 cannot bind
            return DataError(f"{exc} (SQLite {self.path})")
        if isinstance(exc, error):
            return DatabaseError(f"{exc} (SQLite {self.path})")
        return exc

    # The blocking halves, run on the worker thread.

    def _execute(self, sql: str, params: Params) -> int:
        return self._connection.execute(sql, params).rowcount

    def _execute_many(self, sql: str, rows: Iterable[Params], atomic: bool) -> None:
        conn = self._connection
        if not atomic:
            conn.executemany(sql, rows)
            return
        conn.execute("BEGIN IMMEDIATE")
        try:
            conn.executemany(sql, rows)
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")

    def _fetch_all(self, sql: str, params: Params) -> list[Row]:
        rows: list[Row] = self._connection.execute(sql, params).fetchall()
        return rows

    def _fetch_one(self, sql: str, params: Params) -> Row | None:
        row: Row | None = self._connection.execute(sql, params).fetchone()
        return row

    # The async API.

    async def execute(self, sql: str, params: Params = ()) -> int:
        async with self._lock:
            return await self._call(self._execute, sql, params)

    async def execute_many(self, sql: str, rows: Iterable[Params]) -> None:
        async with self._lock:
            await self._call(self._execute_many, sql, list(rows), True)

    async def fetch_all(self, sql: str, params: Params = ()) -> list[Row]:
        async with self._lock:
            return await self._call(self._fetch_all, sql, params)

    async def fetch_one(self, sql: str, params: Params = ()) -> Row | None:
        async with self._lock:
            return await self._call(self._fetch_one, sql, params)

    def _rollback(self) -> None:
        """End the open transaction, if any: after a failed or interrupted BEGIN or COMMIT it
        is not known whether one is open."""
        if self._conn is not None and self._conn.in_transaction:
            self._conn.execute("ROLLBACK")

    @contextlib.asynccontextmanager
    async def transaction(self) -> AsyncIterator[Queries]:
        # BEGIN, COMMIT and ROLLBACK are shielded: once sent to the worker thread they complete
        # even if this task is cancelled, and a ``_rollback`` queued behind them leaves the
        # connection outside any transaction before the lock lets anyone else in.
        async with self._lock:
            try:
                await self._call(self._execute, "BEGIN IMMEDIATE", (), shield=True)
            except BaseException:
                self._executor.submit(self._rollback)
                raise
            tx = _SQLiteTransaction(self)
            try:
                yield tx
            except BaseException:
                tx.closed = True
                await self._call(self._rollback, shield=True)
                raise
            tx.closed = True
            try:
                await self._call(self._execute, "COMMIT", (), shield=True)
            except BaseException:
                self._executor.submit(self._rollback)
                raise

    async def close(self) -> None:
        async with self._lock:
            if self._conn is not None:
                conn, self._conn = self._conn, None
                await self._call(conn.close, shield=True)
            self._closed = True
        self._executor.shutdown(wait=False)


class _SQLiteTransaction:
    """The statements of one open SQLite transaction (the database's lock is held)."""

    backend: Backend = "sqlite"

    def __init__(self, db: SQLiteDatabase) -> None:
        self._db = db
        self.closed = False

    def _check(self) -> None:
        if self.closed:
            raise DatabaseError("the transaction is over; run statements inside its block")

    async def execute(self, sql: str, params: Params = ()) -> int:
        self._check()
        return await self._db._call(self._db._execute, sql, params)

    async def execute_many(self, sql: str, rows: Iterable[Params]) -> None:
        self._check()
        await self._db._call(self._db._execute_many, sql, list(rows), False)

    async def fetch_all(self, sql: str, params: Params = ()) -> list[Row]:
        self._check()
        return await self._db._call(self._db._fetch_all, sql, params)

    async def fetch_one(self, sql: str, params: Params = ()) -> Row | None:
        self._check()
        return await self._db._call(self._db._fetch_one, sql, params)


# --- PostgreSQL ----------------------------------------------------------------------------------


@functools.lru_cache(maxsize=512)
def to_psycopg(sql: str) -> str:
    """Our ``?`` placeholders as psycopg's ``%s``, and a literal ``%`` as ``%%``. A ``?`` inside
    a quoted string or identifier stays as it is (our SQL uses no jsonb ``?`` operators)."""
    out: list[str] = []
    quote = ""
    for char in sql:
        if char == "%":
            out.append("%%")
            continue
        if quote:
            if char == quote:
                quote = ""
        elif char in ("'", '"'):
            quote = char
        elif char == "?":
            out.append("%s")
            continue
        out.append(char)
    return "".join(out)


@contextlib.contextmanager
def _pg_errors(url: str) -> Iterator[None]:
    import psycopg

    try:
        yield
    except psycopg.errors.IntegrityError as exc:
        raise IntegrityError(f"{exc} (PostgreSQL {display_url(url)})") from exc
    except (psycopg.DataError, UnicodeError, OverflowError) as exc:
        raise DataError(f"{exc} (PostgreSQL {display_url(url)})") from exc
    except psycopg.Error as exc:
        raise DatabaseError(f"{exc} (PostgreSQL {display_url(url)})") from exc


class PostgresDatabase(Database):
    """Up to ``pool_size`` psycopg ``AsyncConnection``\\ s, opened when first needed and kept
    while healthy. A connection that comes back broken, or mid-transaction because its task was
    cancelled, is closed instead of reused. A read that fails on a connection that had been
    idle (the server restarted) is retried once on a fresh one; writes are not retried."""

    backend: Backend = "postgresql"

    def __init__(self, url: str, *, pool_size: int = 4) -> None:
        if pool_size < 1:
            raise ValueError("pool_size must be at least 1")
        self.url = url
        self._idle: list[AsyncConnection[Row]] = []
        self._slots = asyncio.Semaphore(pool_size)
        self._closed = False

    async def open(self) -> None:
        async with self._connection():
            pass

    async def _new_connection(self) -> AsyncConnection[Row]:
        import psycopg
        from psycopg.rows import dict_row

        if self._closed:
            raise DatabaseError(f"the database {display_url(self.url)} is closed")
        # libpq waits forever for an unreachable host unless told; the URL may say otherwise.
        timeout: dict[str, Any] = {} if "connect_timeout" in self.url else {"connect_timeout": 10}
        with _pg_errors(self.url):
            return await psycopg.AsyncConnection.connect(
                self.url, autocommit=True, row_factory=dict_row, **timeout
            )

    async def _release(self, conn: AsyncConnection[Row]) -> None:
        from psycopg.pq import TransactionStatus

        if self._closed or conn.closed or conn.info.transaction_status != TransactionStatus.IDLE:
            with contextlib.suppress(Exception):
                await conn.close()
        else:
            self._idle.append(conn)

    @contextlib.asynccontextmanager
    async def _connection(self, *, fresh: bool = False) -> AsyncIterator[AsyncConnection[Row]]:
        async with self._slots:
            if fresh:
                await self._drop_idle()
            conn = self._idle.pop() if self._idle else await self._new_connection()
            try:
                yield conn
            finally:
                await self._release(conn)

    async def _drop_idle(self) -> None:
        idle, self._idle = self._idle, []
        for conn in idle:
            with contextlib.suppress(Exception):
                await conn.close()

    async def _read(self, sql: str, params: Params, one: bool) -> Any:
        query = to_psycopg(sql)
        for attempt in (1, 2):
            reused = bool(self._idle) and attempt == 1
            async with self._connection(fresh=attempt == 2) as conn:
                try:
                    with _pg_errors(self.url):
                        cursor = await conn.execute(query, tuple(params))
                        return await (cursor.fetchone() if one else cursor.fetchall())
                except DatabaseError:
                    if attempt == 2 or not reused or not (conn.closed or conn.broken):
                        raise
        raise AssertionError("unreachable")

    async def execute(self, sql: str, params: Params = ()) -> int:
        async with self._connection() as conn:
            return await _pg_execute(conn, self.url, sql, params)

    async def execute_many(self, sql: str, rows: Iterable[Params]) -> None:
        async with self._connection() as conn:
            with _pg_errors(self.url):
                async with conn.transaction(), conn.cursor() as cursor:
                    await cursor.executemany(to_psycopg(sql), [tuple(row) for row in rows])

    async def fetch_all(self, sql: str, params: Params = ()) -> list[Row]:
        rows: list[Row] = await self._read(sql, params, one=False)
        return rows

    async def fetch_one(self, sql: str, params: Params = ()) -> Row | None:
        row: Row | None = await self._read(sql, params, one=True)
        return row

    @contextlib.asynccontextmanager
    async def transaction(self) -> AsyncIterator[Queries]:
        async with self._connection() as conn:
            tx = _PostgresTransaction(conn, self.url)
            try:
                with _pg_errors(self.url):
                    async with conn.transaction():
                        yield tx
            finally:
                tx.closed = True

    async def close(self) -> None:
        self._closed = True
        await self._drop_idle()


async def _pg_execute(conn: AsyncConnection[Row], url: str, sql: str, params: Params) -> int:
    with _pg_errors(url):
        cursor = await conn.execute(to_psycopg(sql), tuple(params))
        return cursor.rowcount


class _PostgresTransaction:
    """The statements of one open PostgreSQL transaction, on the connection it holds."""

    backend: Backend = "postgresql"

    def __init__(self, conn: AsyncConnection[Row], url: str) -> None:
        self._conn = conn
        self._url = url
        self.closed = False

    def _check(self) -> None:
        if self.closed:
            raise DatabaseError("the transaction is over; run statements inside its block")

    async def execute(self, sql: str, params: Params = ()) -> int:
        self._check()
        return await _pg_execute(self._conn, self._url, sql, params)

    async def execute_many(self, sql: str, rows: Iterable[Params]) -> None:
        self._check()
        with _pg_errors(self._url):
            async with self._conn.cursor() as cursor:
                await cursor.executemany(to_psycopg(sql), [tuple(row) for row in rows])

    async def fetch_all(self, sql: str, params: Params = ()) -> list[Row]:
        self._check()
        with _pg_errors(self._url):
            cursor = await self._conn.execute(to_psycopg(sql), tuple(params))
            return await cursor.fetchall()

    async def fetch_one(self, sql: str, params: Params = ()) -> Row | None:
        self._check()
        with _pg_errors(self._url):
            cursor = await self._conn.execute(to_psycopg(sql), tuple(params))
            return await cursor.fetchone()

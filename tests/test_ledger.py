"""The ledger: one row per request, written in the background, never lost, never counted twice.

Most tests run on SQLite and on a throwaway PostgreSQL server of their own (``pg_server.py``),
which one test stops and restarts while rows keep coming. The gateway killed mid-load is
``test_ledger_kill.py``.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import msgspec
import pytest
import pytest_asyncio

from tests.pg_server import PostgresServer, postgres_server_fixture
from tokenrelay.gate.identity import Identity
from tokenrelay.metering import COLUMNS, LedgerRow, LedgerWriter, insert_rows, row_from
from tokenrelay.metering.writer import default_spool_dir
from tokenrelay.model import Usage
from tokenrelay.records import Attempt, StreamRecord
from tokenrelay.store import Database, DatabaseError, open_database

pg_server = postgres_server_fixture("module")


# --- helpers -------------------------------------------------------------------------------------


def row(n: int, **fields: Any) -> LedgerRow:
    values: dict[str, Any] = {
        "request_id": f"req-{n:06d}",
        "created_at": 1_700_000_000.0 + n,
        "route": "default",
        "status": 200,
        "outcome": "completed",
        "duration_ms": 12.5,
        "input_tokens": n,
        "output_tokens": 2 * n,
    }
    values.update(fields)
    return LedgerRow(**values)


async def ids_in(db: Database) -> list[str]:
    rows = await db.fetch_all("SELECT request_id FROM ledger ORDER BY request_id")
    return [r["request_id"] for r in rows]


async def eventually(check: Callable[[], bool], within: float = 10.0) -> None:
    deadline = time.monotonic() + within
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.01)


def spool_lines(spool: Path) -> int:
    return sum(p.read_bytes().count(b"\n") for p in spool.glob("ledger-*.jsonl"))


def provider(db: Database) -> Callable[[], Awaitable[Database]]:
    async def database() -> Database:
        return db

    return database


class Switch:
    """A database provider that fails while ``up`` is False, as the gate's does when the
    database cannot be reached."""

    def __init__(self, db: Database, *, up: bool = True) -> None:
        self.db = db
        self.up = up

    async def __call__(self) -> Database:
        if not self.up:
            raise DatabaseError("connection refused (simulated)")
        return self.db


class Spy:
    """The database, counting the batches the ledger writes."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self.batches: list[int] = []
        self.backend = db.backend

    async def execute_many(self, sql: str, rows: Any) -> None:
        rows = list(rows)
        self.batches.append(len(rows))
        await self.db.execute_many(sql, rows)


def writer(spool: Path, **options: Any) -> LedgerWriter:
    options = {"first_write_delay": 0, "interval": 0.02, "retry_max": 0.1, **options}
    return LedgerWriter(spool, **options)


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/ledger.db"
    server: PostgresServer = request.getfixturevalue("pg_server")
    return server.create_database()


@pytest_asyncio.fixture
async def db(db_url: str) -> AsyncIterator[Database]:
    database = await open_database(db_url)
    try:
        yield database
    finally:
        await database.close()


@pytest_asyncio.fixture
async def sqlite_db(tmp_path: Path) -> AsyncIterator[Database]:
    database = await open_database(f"sqlite:///{tmp_path}/ledger.db")
    try:
        yield database
    finally:
        await database.close()


# --- the row and the insert ----------------------------------------------------------------------


async def test_the_row_mirrors_the_ledger_table(db: Database) -> None:
    if db.backend == "sqlite":
        columns = [c["name"] for c in await db.fetch_all("PRAGMA table_info(ledger)")]
    else:
        columns = [
            c["column_name"]
            for c in await db.fetch_all(
                "SELECT column_name FROM information_schema.columns "
                "WHERE table_name = 'ledger' ORDER BY ordinal_position"
            )
        ]
    assert list(COLUMNS) == columns


def test_a_record_becomes_a_row() -> None:
    record = StreamRecord(
        "abc123",
        "openai",
        "default",
        "completed",
        200,
        provider="openai",
        model="gpt-5.5",
        usage=Usage(input_tokens=120, output_tokens=40, cache_read_tokens=100),
        ttft_ms=35.0,
        duration_ms=500.0,
        attempts=[
            Attempt("anthropic", "claude-sonnet-5-5", "overloaded", 529, 12.34),
            Attempt("openai", "gpt-5.5", "ok", 200, 30.0),
        ],
        identity=Identity("key", "10.0.0.1", user="u1", org="o1", key_id="k1"),
    )
    got = row_from(record, now=1000.0)
    assert got == LedgerRow(
        request_id="abc123",
        created_at=999.5,  # when it arrived: the end minus its duration
        user_id="u1",
        org_id="o1",
        key_id="k1",
        client_ip="10.0.0.1",
        route="default",
        provider="openai",
        model="gpt-5.5",
        attempts=2,
        attempts_detail=got.attempts_detail,
        status=200,
        outcome="completed",
        input_tokens=120,
        output_tokens=40,
        cache_read_tokens=100,
        ttft_ms=35.0,
        duration_ms=500.0,
    )
    assert msgspec.json.decode(got.attempts_detail or "") == [
        {
            "provider": "anthropic",
            "model": "claude-sonnet-5-5",
            "outcome": "overloaded",
            "status": 529,
            "ms": 12.3,
        },
        {"provider": "openai", "model": "gpt-5.5", "outcome": "ok", "status": 200, "ms": 30.0},
    ]
    rejected = row_from(StreamRecord("r", "generate", "", "rejected", 400, error_type="x"))
    assert (rejected.user_id, rejected.client_ip, rejected.attempts) == (None, None, 0)
    assert rejected.input_tokens == 0 and rejected.attempts_detail == "[]"


async def test_the_insert_is_idempotent(db: Database) -> None:
    first = row(1, estimated=True, priced=True, cost_nanousd=1_234_567_890_123)
    await insert_rows(db, [first, row(2)])
    await insert_rows(db, [row(2, input_tokens=999), row(3), row(3)])  # a retried batch
    assert await ids_in(db) == ["req-000001", "req-000002", "req-000003"]
    stored = await db.fetch_one("SELECT * FROM ledger WHERE request_id = ?", ("req-000001",))
    assert stored is not None
    assert msgspec.convert(stored, LedgerRow, strict=False) == first
    again = await db.fetch_one("SELECT input_tokens FROM ledger WHERE request_id = 'req-000002'")
    assert again == {"input_tokens": 2}  # the first write wins; a retry never adds


# --- the writer ----------------------------------------------------------------------------------


async def test_rows_are_written_in_batches(db: Database, tmp_path: Path) -> None:
    spy = Spy(db)
    ledger = writer(tmp_path / "spool", batch_size=100, interval=0.05)
    ledger.start(provider(spy))  # type: ignore[arg-type]
    for n in range(1000):
        ledger.submit(row(n))
    await eventually(lambda: ledger.written == 1000)
    assert len(await ids_in(db)) == 1000
    assert max(spy.batches) <= 100 and len(spy.batches) <= 15, spy.batches
    assert ledger.backlog == 0 and ledger.write_errors == 0
    assert spool_lines(tmp_path / "spool") == 0  # each spool file goes once it is written
    await ledger.close()
    assert list((tmp_path / "spool").iterdir()) == []  # nor does a lock file linger


async def test_submit_is_cheap_and_never_waits(sqlite_db: Database, tmp_path: Path) -> None:
    """What metering adds to a request: the row built from its record and one write()."""
    ledger = writer(tmp_path / "spool", first_write_delay=60)  # nothing written meanwhile
    ledger.start(provider(sqlite_db))
    record = StreamRecord(
        "x",
        "openai",
        "default",
        "completed",
        200,
        provider="openai",
        model="gpt-5.5",
        usage=Usage(input_tokens=120, output_tokens=40),
        attempts=[Attempt("openai", "gpt-5.5", "ok", 200, 30.0)],
        identity=Identity("anonymous", "127.0.0.1"),
        duration_ms=100.0,
    )
    samples = []
    for n in range(2000):
        record.request_id = f"cheap-{n}"
        started = time.perf_counter()
        ledger.submit(row_from(record))
        samples.append(time.perf_counter() - started)
    samples.sort()
    median, p99 = samples[len(samples) // 2] * 1e6, samples[int(len(samples) * 0.99)] * 1e6
    print(f"\nrow_from + submit: median {median:.1f} µs, p99 {p99:.1f} µs")
    assert median < 100
    assert ledger.spooled == 2000 and spool_lines(tmp_path / "spool") == 2000
    await ledger.close()
    assert len(await ids_in(sqlite_db)) == 2000  # close wrote them without waiting the delay


async def test_close_writes_everything_pending(db: Database, tmp_path: Path) -> None:
    ledger = writer(tmp_path / "spool", interval=10)  # no periodic write before close
    ledger.start(provider(db))
    for n in range(1234):
        ledger.submit(row(n))
    await ledger.close(timeout=30)
    assert len(await ids_in(db)) == 1234
    assert ledger.written == 1234 and ledger.backlog == 0


async def test_an_outage_keeps_the_rows_and_writes_them_when_it_ends(
    sqlite_db: Database, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    spool = tmp_path / "spool"
    switch = Switch(sqlite_db, up=False)
    ledger = writer(spool, batch_size=100)
    ledger.start(switch)
    with caplog.at_level(logging.WARNING, logger="tokenrelay.ledger"):
        for n in range(5000):
            ledger.submit(row(n))
        await eventually(lambda: ledger.write_errors >= 3)
        assert ledger.backlog == ledger.spooled == 5000
        assert spool_lines(spool) == 5000  # on disk, not in memory
        assert not ledger._memory
        down = [r for r in caplog.records if "cannot write to the database" in r.message]
        assert len(down) == 1  # loud once, not once per retry
        switch.up = True
        await eventually(lambda: any("writable again" in r.message for r in caplog.records))
        assert ledger.backlog == 0
    assert len(await ids_in(sqlite_db)) == 5000
    await ledger.close()


async def test_rows_stay_in_memory_up_to_a_bound_when_the_spool_cannot_be_written(
    sqlite_db: Database, tmp_path: Path
) -> None:
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("")
    ledger = writer(blocker / "spool", memory_rows=100)
    switch = Switch(sqlite_db, up=False)
    ledger.start(switch)
    for n in range(150):
        ledger.submit(row(n))
    assert (ledger.backlog, ledger.dropped) == (100, 50)
    switch.up = True
    await eventually(lambda: ledger.backlog == 0)
    assert len(await ids_in(sqlite_db)) == 100
    await ledger.close()


async def test_close_during_an_outage_leaves_the_rows_for_the_next_start(
    db: Database, tmp_path: Path
) -> None:
    spool = tmp_path / "spool"
    ledger = writer(spool)
    ledger.start(Switch(db, up=False))
    for n in range(300):
        ledger.submit(row(n))
    await ledger.close(timeout=0.3)
    assert spool_lines(spool) == 300
    await insert_rows(db, [row(n) for n in range(0, 300, 7)])  # some made it after all
    later = writer(spool)
    later.start(provider(db))
    await eventually(lambda: later.written >= 300)
    assert len(await ids_in(db)) == 300
    await later.close()
    assert spool_lines(spool) == 0


async def test_a_hook_sees_each_batch_before_it_is_written(
    sqlite_db: Database, tmp_path: Path
) -> None:
    """Pricing fills in rows spooled before its table loaded; a failing hook keeps the batch."""
    seen: list[int] = []
    ready = False

    async def price(rows: list[LedgerRow]) -> None:
        if not ready:
            raise RuntimeError("price table not loaded yet")
        seen.append(len(rows))
        for r in rows:
            r.cost_nanousd, r.priced = 7 * r.input_tokens, True

    ledger = writer(tmp_path / "spool", batch_size=40, before_write=price)
    ledger.start(provider(sqlite_db))
    for n in range(100):
        ledger.submit(row(n))
    await eventually(lambda: ledger.write_errors >= 2)
    assert ledger.backlog == 100 and await ids_in(sqlite_db) == []
    ready = True
    await eventually(lambda: ledger.backlog == 0)
    assert sum(seen) == 100 and max(seen) <= 40
    total = await sqlite_db.fetch_one("SELECT SUM(cost_nanousd) AS c, MIN(priced) AS p FROM ledger")
    assert total == {"c": 7 * sum(range(100)), "p": 1}
    await ledger.close()


# --- PostgreSQL stopped and restarted while rows keep coming -------------------------------------


@pytest.mark.parametrize("mode", ["fast", "immediate"])
async def test_postgresql_stopped_and_restarted_mid_load(
    pg_server: PostgresServer, tmp_path: Path, mode: str
) -> None:
    """Every row exactly once, whether the server shut down cleanly or crashed (immediate: a
    batch may be committed with its acknowledgement lost, then written again)."""
    db = await open_database(pg_server.create_database())
    ledger = writer(tmp_path / "spool", batch_size=50)
    ledger.start(provider(db))
    submitted = 0
    stop = asyncio.Event()

    async def load() -> None:
        nonlocal submitted
        while not stop.is_set():
            for _ in range(5):
                ledger.submit(row(submitted))
                submitted += 1
            await asyncio.sleep(0.002)

    loader = asyncio.create_task(load())
    try:
        await eventually(lambda: ledger.written >= 500)
        await asyncio.to_thread(pg_server.stop, mode)  # type: ignore[arg-type]
        errors, at_stop = ledger.write_errors, submitted
        await asyncio.sleep(1.0)
        assert ledger.write_errors > errors and ledger.backlog > 0
        assert submitted > at_stop + 500  # requests went on meanwhile
    finally:
        await asyncio.to_thread(pg_server.start)
    await asyncio.sleep(0.5)
    stop.set()
    await loader
    await ledger.close(timeout=30)
    assert ledger.backlog == 0
    rows = await db.fetch_all("SELECT request_id FROM ledger")
    assert len(rows) == submitted
    assert {r["request_id"] for r in rows} == {row(n).request_id for n in range(submitted)}
    await db.close()


# --- the spool after a crash ---------------------------------------------------------------------

_KILLED_WRITER = """
import os, signal, sys
from tokenrelay.metering import LedgerRow, LedgerWriter

writer = LedgerWriter(sys.argv[1])
for n in range(int(sys.argv[2])):
    writer.submit(LedgerRow(request_id=f"req-{n:06d}", created_at=1.0, route="default",
                            status=200, outcome="completed", duration_ms=1.0))
os.kill(os.getpid(), signal.SIGKILL)
"""


def killed_writer(spool: Path, rows: int) -> None:
    """A process that submits ``rows`` rows and is killed before writing any to a database."""
    done = subprocess.run([sys.executable, "-c", _KILLED_WRITER, str(spool), str(rows)])
    assert done.returncode == -signal.SIGKILL


async def test_the_spool_of_a_killed_process_is_replayed_at_start(
    db: Database, tmp_path: Path
) -> None:
    spool = tmp_path / "spool"
    await asyncio.to_thread(killed_writer, spool, 700)
    assert spool_lines(spool) == 700
    await insert_rows(db, [row(n) for n in range(0, 700, 3)])  # written before the kill
    ledger = writer(spool, batch_size=64)
    ledger.start(provider(db))
    for n in range(700, 1000):  # new requests while the replay runs, into a file of its own
        ledger.submit(row(n))
        if n % 50 == 0:
            await asyncio.sleep(0)
    await eventually(lambda: ledger.backlog == 0 and ledger.written >= 1000 - 234)
    assert await ids_in(db) == [row(n).request_id for n in range(1000)]
    await ledger.close()
    assert list(spool.iterdir()) == []


async def test_a_live_writers_spool_is_never_taken(sqlite_db: Database, tmp_path: Path) -> None:
    spool = tmp_path / "spool"
    busy = writer(spool)
    busy.start(Switch(sqlite_db, up=False))  # its database is down: its rows wait in the spool
    for n in range(100):
        busy.submit(row(n))
    other = writer(spool)
    other.start(provider(sqlite_db))
    other.submit(row(1000))
    await eventually(lambda: other.written == 1)
    await asyncio.sleep(0.1)
    assert await ids_in(sqlite_db) == ["req-001000"]
    assert spool_lines(spool) == 100  # still the first writer's, still being appended to
    busy.submit(row(100))
    await busy.close(timeout=0.1)
    await other.close()
    third = writer(spool)  # the first writer is gone now: its files are taken over
    third.start(provider(sqlite_db))
    await eventually(lambda: third.written == 101)
    assert len(await ids_in(sqlite_db)) == 102
    await third.close()


async def test_a_torn_line_is_skipped(sqlite_db: Database, tmp_path: Path) -> None:
    spool = tmp_path / "spool"
    spool.mkdir()
    lines = [msgspec.json.encode(row(n)) + b"\n" for n in range(3)]
    (spool / "ledger-1-dead-000001.jsonl").write_bytes(b"".join(lines) + lines[0][:20])
    ledger = writer(spool)
    ledger.start(provider(sqlite_db))
    await eventually(lambda: ledger.written == 3 and ledger.backlog == 0)
    assert await ids_in(sqlite_db) == ["req-000000", "req-000001", "req-000002"]
    await ledger.close()
    assert list(spool.iterdir()) == []


def test_the_default_spool_directory() -> None:
    assert (
        default_spool_dir("sqlite:////var/lib/tr/tokenrelay.db")
        == "/var/lib/tr/tokenrelay.db.spool"
    )
    assert default_spool_dir("postgresql://u@h/db") == os.path.abspath("tokenrelay-spool")
    assert default_spool_dir("sqlite://") == os.path.abspath("tokenrelay-spool")

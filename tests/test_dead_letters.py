"""No single row can stop the ledger (issue 13): a row the database refuses for its values is set
aside in a dead-letter file with the reason, the rest are written, a restart does not replay it,
and readiness says so. Text no database stores (NUL, lone surrogates) is made storable first.

On SQLite and on the machine's PostgreSQL (a private database, ``machine_database``), where a
NUL in a model name used to make every batch fail for good.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import msgspec
import pytest
import pytest_asyncio

from tests.pg_server import machine_database
from tests.servers import gateway_environ, gateway_server
from tests.test_ledger import eventually, ids_in, provider, row, spool_lines, writer
from tests.test_metering import ledger_row
from tokenrelay.metering import LedgerWriter
from tokenrelay.metering.writer import DEAD_LETTERS
from tokenrelay.store import Database, DatabaseError, open_database

POISON = 2**70  # no BIGINT holds it: PostgreSQL says out of range, sqlite3 cannot bind it


@pytest.fixture(scope="module")
def pg_url() -> Iterator[str]:
    with machine_database() as url:
        yield url


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/ledger.db"
    url: str = request.getfixturevalue("pg_url")
    return url


@pytest_asyncio.fixture
async def db(db_url: str) -> AsyncIterator[Database]:
    database = await open_database(db_url)
    await database.execute("DELETE FROM ledger")  # the PostgreSQL database is the module's
    try:
        yield database
    finally:
        await database.close()


def dead_letters(spool: Path) -> list[dict[str, Any]]:
    path = spool / DEAD_LETTERS
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines()]


async def test_a_refused_row_is_set_aside_and_the_rest_are_written(
    db: Database, tmp_path: Path
) -> None:
    spool = tmp_path / "spool"
    ledger = writer(spool)
    for n in range(1, 11):
        ledger.submit(row(n, input_tokens=POISON) if n == 4 else row(n))
    ledger.start(provider(db))
    await eventually(lambda: ledger.written == 9 and ledger.backlog == 0)
    await ledger.close()
    assert await ids_in(db) == [f"req-{n:06d}" for n in range(1, 11) if n != 4]
    assert ledger.dead_letters == 1 and ledger.write_errors == 0
    [letter] = dead_letters(spool)
    assert letter["row"]["request_id"] == "req-000004" and letter["row"]["input_tokens"] == POISON
    reason = letter["reason"]  # the database's own words: out of range, or too large to bind
    assert reason.startswith("DataError") and ("out of range" in reason or "too large" in reason)
    assert spool_lines(spool) == 0

    # A restart finds nothing to replay; later rows go on being written.
    again = writer(spool)
    again.submit(row(11))
    again.start(provider(db))
    await eventually(lambda: again.written == 1 and again.backlog == 0)
    await again.close()
    assert again.dead_letters == 0 and len(dead_letters(spool)) == 1
    assert "req-000011" in await ids_in(db)


async def test_a_poisoned_spool_left_by_a_crash_is_replayed_without_sticking(
    db: Database, tmp_path: Path
) -> None:
    """The issue's case: a spool holding a model name with a NUL (as an older release wrote
    it) and a row the database refuses, replayed at start: neither stops the others."""
    spool = tmp_path / "spool"
    spool.mkdir()
    lines = [
        msgspec.json.encode(row(1)),
        msgspec.json.encode(row(2, model="claude-a\u0000b", route="r\u0000")),
        msgspec.json.encode(row(3, output_tokens=POISON)),
        msgspec.json.encode(row(4)),
    ]
    (spool / "ledger-1-dead0000-000001.jsonl").write_bytes(b"\n".join(lines) + b"\n")
    ledger = writer(spool)
    ledger.start(provider(db))
    await eventually(lambda: ledger.backlog == 0 and ledger.written == 3)
    await ledger.close()
    assert await ids_in(db) == ["req-000001", "req-000002", "req-000004"]
    stored = await db.fetch_one("SELECT model, route FROM ledger WHERE request_id = 'req-000002'")
    assert stored == {"model": "claude-a\ufffdb", "route": "r\ufffd"}  # kept, made storable
    assert [letter["row"]["request_id"] for letter in dead_letters(spool)] == ["req-000003"]
    assert list(spool.glob("ledger-*.jsonl")) == []

    restarted = writer(spool)
    restarted.start(provider(db))
    await asyncio.sleep(0.2)  # a few of its rounds (interval 0.02 s): nothing to do
    await restarted.close()
    assert restarted.written == 0 and restarted.dead_letters == 0
    assert len(dead_letters(spool)) == 1


async def test_unstorable_text_never_breaks_the_spool(sqlite_db_url: str, tmp_path: Path) -> None:
    """A lone surrogate cannot be encoded as JSON: submitted as it is it would be lost."""
    db = await open_database(sqlite_db_url)
    try:
        ledger = writer(tmp_path / "spool")
        ledger.submit(row(1, user_id="\ud800alice", model="m\u0000"))
        ledger.start(provider(db))
        await eventually(lambda: ledger.written == 1)
        await ledger.close()
        stored = await db.fetch_one("SELECT user_id, model FROM ledger")
        assert stored == {"user_id": "\ufffdalice", "model": "m\ufffd"}
    finally:
        await db.close()


@pytest.fixture
def sqlite_db_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path}/ledger.db"


@pytest.mark.asyncio(loop_scope="session")
async def test_a_nul_model_request_leaves_the_postgresql_ledger_running(
    simulator: Any, tmp_path: Path
) -> None:
    """End to end on PostgreSQL: the request with a NUL in its model (refused at the edge, or
    relayed) never stops the rows after it; readiness reports a set-aside row as degraded."""
    with machine_database() as pg_url:  # its own: the rows below are all this test's
        await _nul_model_request(simulator, pg_url, tmp_path)


async def _nul_model_request(simulator: Any, pg_url: str, tmp_path: Path) -> None:
    env = {**gateway_environ(simulator.url), "TOKENRELAY_DATABASE_URL": pg_url}
    env["TOKENRELAY_SPOOL_DIR"] = str(tmp_path / "spool")
    async with gateway_server(env) as gw, aiohttp.ClientSession() as http:
        body = {
            "model": "claude-a\u0000b",
            "max_tokens": 20,
            "stream": True,
            "messages": [{"role": "user", "content": "hi"}],
        }
        try:
            async with http.post(gw.url + "/v1/messages", json=body) as response:
                await response.read()
        except aiohttp.ClientError:
            pass  # a gateway that breaks its response head on the name: the ledger is the point
        body["model"] = "an"
        async with http.post(gw.url + "/v1/messages", json=body) as response:
            await response.read()
            request_id = response.headers["x-request-id"]
        assert (await ledger_row(gw, request_id))["route"] == "an"
        ledger: LedgerWriter | None = gw.gateway.ledger
        assert ledger is not None
        await eventually(lambda: ledger.backlog == 0)
        db = await gw.gateway.gate.database()
        nul = await db.fetch_all("SELECT request_id FROM ledger WHERE model LIKE ?", ("%\ufffd%",))
        assert ledger.dead_letters == 0 and len(nul) <= 1

        async with http.get(gw.url + "/readyz") as response:
            assert response.status == 200 and "degraded" not in await response.json()
        ledger.submit(row(1, request_id="poisoned", input_tokens=POISON))
        await eventually(lambda: ledger.dead_letters == 1 and ledger.backlog == 0)
        async with http.get(gw.url + "/readyz") as response:
            ready = await response.json()
        assert response.status == 200 and ready["status"] == "ready"
        assert "1 ledger row(s) were refused" in ready["degraded"]["ledger"]["reason"]
        assert DEAD_LETTERS in ready["degraded"]["ledger"]["reason"]


class DropsOnceAfterADeadLetter:
    """The database, losing its connection once, just after the writer set a row aside: the
    whole batch is then tried again, poisoned row included."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self.backend = db.backend
        self.ledger: LedgerWriter | None = None
        self.dropped = False

    async def execute_many(self, sql: str, rows: Any) -> None:
        if self.ledger is not None and self.ledger.dead_letters and not self.dropped:
            self.dropped = True
            raise DatabaseError("connection lost (simulated)")
        await self.db.execute_many(sql, rows)


async def test_a_batch_retried_after_a_lost_connection_sets_a_row_aside_once(
    sqlite_db_url: str, tmp_path: Path
) -> None:
    db = await open_database(sqlite_db_url)
    try:
        flaky = DropsOnceAfterADeadLetter(db)
        spool = tmp_path / "spool"
        ledger = flaky.ledger = writer(spool)
        for n in range(1, 11):
            ledger.submit(row(n, input_tokens=POISON) if n == 4 else row(n))
        ledger.start(provider(flaky))  # type: ignore[arg-type]
        await eventually(lambda: ledger.backlog == 0)
        await ledger.close()
        assert flaky.dropped and ledger.write_errors == 1
        assert await ids_in(db) == [f"req-{n:06d}" for n in range(1, 11) if n != 4]
        assert ledger.dead_letters == 1 and len(dead_letters(spool)) == 1
    finally:
        await db.close()

"""The gateway killed mid-load (SIGKILL: no shutdown, no flush) and started again on the same
database: every request whose client saw the end before the kill is in the ledger exactly once.
Then a graceful stop (SIGTERM) leaves nothing pending: every row is written before it exits.
"""

from __future__ import annotations

import asyncio
import signal
import sqlite3
import time
from pathlib import Path

import aiohttp
import msgspec

from tests.servers import ServeProcess, clean_environ, gateway_environ
from tokenrelay.simulator import RunningSimulator

CLIENTS = 8
paths: dict[str, str] = {}  # request id → endpoint, for messages
KILL_AFTER = 2.0  # seconds of load: past the ledger's first writes, so some rows are written
REQUESTS = [  # (path, body, expected status): each dialect, streamed or not, and a refusal
    ("/api/generate", {"prompt": "hello", "route": "an"}, 200),
    (
        "/v1/chat/completions",
        {"model": "oa", "stream": True, "messages": [{"role": "user", "content": "hi"}]},
        200,
    ),
    (
        "/v1/messages",
        {"model": "an", "max_tokens": 50, "messages": [{"role": "user", "content": "hi"}]},
        200,
    ),
    ("/v1/chat/completions", {"model": "no-such-route", "messages": []}, 400),
]


def ledger(db: Path) -> dict[str, int]:
    """request id → how many rows it has."""
    if not db.exists():
        return {}
    with sqlite3.connect(db) as conn:
        try:
            rows = conn.execute("SELECT request_id, COUNT(*) FROM ledger GROUP BY request_id")
        except sqlite3.OperationalError:  # not migrated yet
            return {}
        return dict(rows.fetchall())


def spooled_ids(spool: Path) -> set[str]:
    return {
        msgspec.json.decode(line)["request_id"]
        for path in spool.glob("ledger-*.jsonl")
        for line in path.read_bytes().splitlines()
    }


def spooled(spool: Path) -> int:
    return sum(path.read_bytes().count(b"\n") for path in spool.glob("ledger-*.jsonl"))


async def load(
    url: str, completed: list[str], seen: set[str], until: asyncio.Event, on_complete: object
) -> None:
    """Requests from ``CLIENTS`` concurrent clients until ``until``; a request counts as
    completed once its whole response has been read."""

    async def client(number: int) -> None:
        async with aiohttp.ClientSession() as session:
            n = number
            while not until.is_set():
                path, body, status = REQUESTS[n % len(REQUESTS)]
                n += 1
                try:
                    async with session.post(url + path, json=body) as response:
                        request_id = response.headers["x-request-id"]
                        seen.add(request_id)
                        paths[request_id] = path
                        await response.read()
                        assert response.status == status, (path, response.status)
                except aiohttp.ClientError:
                    return  # the gateway was killed under us
                completed.append(request_id)
                if callable(on_complete):
                    on_complete()

    await asyncio.gather(*(client(i) for i in range(CLIENTS)))


async def test_requests_finished_before_a_kill_are_in_the_ledger_once(
    simulator: RunningSimulator, tmp_path: Path
) -> None:
    db = tmp_path / "ledger.db"
    spool = tmp_path / "ledger.db.spool"
    env = clean_environ(**gateway_environ(simulator.url))
    env.update(TOKENRELAY_DATABASE_URL=f"sqlite:///{db}", TOKENRELAY_LOG_LEVEL="warning")
    first = await asyncio.to_thread(ServeProcess, env)
    completed: list[str] = []
    seen: set[str] = set()
    stop = asyncio.Event()
    before_kill: list[str] = []

    started = time.monotonic()

    def kill_at_threshold() -> None:
        # Right as a client sees the end of a response: the harshest moment for the ledger.
        if time.monotonic() - started >= KILL_AFTER and not stop.is_set():
            first.proc.send_signal(signal.SIGKILL)
            before_kill.extend(completed)
            stop.set()

    try:
        await asyncio.wait_for(load(first.url, completed, seen, stop, kill_at_threshold), 60)
    finally:
        code, output = await asyncio.to_thread(first.stop)
    assert code == -signal.SIGKILL, output
    assert len(before_kill) >= 100
    at_kill = ledger(db)
    only_spooled = [rid for rid in before_kill if rid not in at_kill]
    print(
        f"\nkilled after {len(before_kill)} finished requests: {len(at_kill)} rows in the "
        f"database, {spooled(spool)} in the spool; {len(only_spooled)} finished requests were "
        "only in the spool"
    )
    assert only_spooled, "every row was already in the database: the spool was not exercised"
    lost = [rid for rid in only_spooled if rid not in spooled_ids(spool)]
    assert not lost, (
        f"finished before the kill, yet neither written nor spooled: {[paths[r] for r in lost]}"
    )
    assert len(only_spooled) < len(before_kill), "nothing was written before the kill"

    second = await asyncio.to_thread(ServeProcess, env)
    try:
        deadline = time.monotonic() + 20
        while not set(before_kill) <= ledger(db).keys():
            assert time.monotonic() < deadline, "the spool was not replayed"
            await asyncio.sleep(0.1)
        rows = ledger(db)
        assert all(rows[rid] == 1 for rid in before_kill)
        # Nothing the clients never asked for: a row the clients have no id for is one of the
        # requests in flight at the kill (a refusal or a whole answer is recorded just before
        # its response goes out, so that a client that saw it finds it), at most one a client.
        assert len(rows.keys() - seen) <= CLIENTS
        # The replayed spool file is dropped just after its rows are committed: give it a moment.
        while spooled(spool):
            assert time.monotonic() < deadline, f"{spooled(spool)} rows still spooled"
            await asyncio.sleep(0.1)

        # A graceful stop writes everything before it exits.
        again: list[str] = []
        enough = asyncio.Event()

        def after_forty() -> None:
            if len(again) >= 40:
                enough.set()

        await asyncio.wait_for(load(second.url, again, seen, enough, after_forty), 60)
    finally:
        code, output = await asyncio.to_thread(second.stop, signal.SIGTERM)
    assert code == 0, output
    rows = ledger(db)
    assert set(again) <= rows.keys() and all(count == 1 for count in rows.values())
    assert spooled(spool) == 0
    with sqlite3.connect(db) as conn:
        conn.row_factory = sqlite3.Row
        sample = conn.execute(
            "SELECT * FROM ledger WHERE route = 'an' AND outcome = 'completed' LIMIT 1"
        ).fetchone()
    assert sample["provider"] == "anthropic" and sample["status"] == 200
    assert sample["output_tokens"] > 0 and sample["attempts"] == 1

"""API keys in one PostgreSQL shared by several gateway instances, and that database going away.

- A key revoked with ``tokenrelay keys revoke`` (the operator's path: another process) is refused
  by every instance within ``auth.key_cache_ttl``; measured here with the default 5 s.
- PostgreSQL stopped (``PostgresServer.stop``, a throwaway server, never the machine's): a key
  used recently is still served past its TTL, one that was not gets a 503 saying why (never a
  401: it may well be good), anonymous callers are unaffected, ledger rows wait in the spool and
  readiness stays green (by design: see the README's Health and readiness); once it is back the
  rows reach the database exactly once and keys are checked against it again.
- A network partition (a relay between gateway and server that the test cuts): a key revoked
  while the instance cannot see the database is not known to be revoked until it can.
- The key store's outage mechanics with a scripted database: logged once, retried at most once
  per ``retry_interval``, a hung database holds no request longer than ``lookup_timeout``.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import json
import logging
import sys
import time
from collections.abc import Awaitable, Callable, Iterable
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.pg_server import PostgresServer, postgres_server_fixture
from tests.servers import RunningGateway, clean_environ, gateway_environ, gateway_server
from tokenrelay.gate.identity import Authenticator, AuthSettings
from tokenrelay.gate.keys import KeyStore
from tokenrelay.store import Database, DatabaseError, open_database
from tokenrelay.store.database import Params, Row

pytestmark = pytest.mark.asyncio(loop_scope="session")
pg_server = postgres_server_fixture("module")

UNKNOWN_KEY = "trk_" + "Z" * 40


# --- helpers -------------------------------------------------------------------------------------


async def cli(*args: str) -> dict[str, Any]:
    """``tokenrelay keys ... --format json`` as a separate process, as an operator runs it."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tokenrelay",
        "keys",
        *args,
        "--format",
        "json",
        env=clean_environ(),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await proc.communicate()
    assert proc.returncode == 0, err.decode()
    answer: dict[str, Any] = json.loads(out)
    return answer


async def ask(gw: RunningGateway, key: str | None = None) -> tuple[int, dict[str, Any], str]:
    """One small completion: ``(status, body, retry-after header)``."""
    headers = {"authorization": f"Bearer {key}"} if key else {}
    body = {"model": "oa", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 5}
    async with (
        aiohttp.ClientSession() as http,
        http.post(gw.url + "/v1/chat/completions", json=body, headers=headers) as response,
    ):
        data = await response.json(content_type=None)
        return response.status, data, response.headers.get("retry-after", "")


async def get(gw: RunningGateway, path: str) -> tuple[int, dict[str, Any]]:
    async with aiohttp.ClientSession() as http, http.get(gw.url + path) as response:
        return response.status, await response.json(content_type=None)


async def eventually(check: Callable[[], bool | Awaitable[bool]], within: float = 15.0) -> None:
    deadline = time.monotonic() + within
    while True:
        result = check()
        if inspect.isawaitable(result):
            result = await result
        if result:
            return
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.05)


def environ(sim_url: str, database_url: str, **extra: str) -> dict[str, str]:
    return {
        **gateway_environ(sim_url),
        "TOKENRELAY_DATABASE_URL": database_url,
        "TOKENRELAY_AUDIT__ENABLED": "false",
        **extra,
    }


def spool_lines(spool: Path) -> int:
    return sum(p.read_bytes().count(b"\n") for p in spool.glob("ledger-*.jsonl"))


async def ledger_ids(url: str) -> list[str]:
    async with await open_database(url) as db:
        rows = await db.fetch_all("SELECT request_id FROM ledger")
    return [row["request_id"] for row in rows]


class Relay:
    """A TCP relay between a gateway and PostgreSQL that the test can cut and heal: a network
    partition, where the server is up (the operator's CLI reaches it directly) but this gateway
    cannot reach it (new connections refused, open ones reset)."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = 0
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    def url(self, database_url: str) -> str:
        return database_url.replace(f":{self.target_port}/", f":{self.port}/")

    async def heal(self) -> None:
        self._server = await asyncio.start_server(self._relay, "127.0.0.1", self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def cut(self) -> None:
        assert self._server is not None
        self._server.close()
        for writer in list(self._writers):
            writer.transport.abort()
        self._writers.clear()
        await self._server.wait_closed()
        self._server = None

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            writer.transport.abort()
            return
        self._writers |= {writer, up_writer}
        await asyncio.gather(
            _pipe(reader, up_writer), _pipe(up_reader, writer), return_exceptions=True
        )
        self._writers -= {writer, up_writer}

    async def close(self) -> None:
        if self._server is not None:
            await self.cut()


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    finally:
        writer.transport.abort()


# --- one database, two instances: how fast a revocation reaches both ----------------------------


async def test_a_revocation_reaches_every_instance_within_the_key_cache_ttl(
    simulator: Any, pg_server: PostgresServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # the ledger spools under the working directory
    url = pg_server.create_database()
    env = environ(simulator.url, url)  # the default key cache TTL, 5 s
    async with gateway_server(env) as one, gateway_server(env) as two:
        key = await cli("create", "--user", "alice", "--org", "acme", "--database-url", url)
        for gw in (one, two):
            status, _, _ = await ask(gw, key["secret"])
            assert status == 200
        ttl = one.gateway.settings.auth.key_cache_ttl
        assert ttl == 5.0 and one.gateway.gate.authenticator.keys is not None

        # Both instances keep using the key, every 50 ms, through the revocation: each one's
        # entry is refreshed whenever it expires, so the delay lands anywhere up to the TTL.
        refused_at: dict[int, float] = {}

        async def poll(gw: RunningGateway) -> None:
            while True:
                status, body, _ = await ask(gw, key["secret"])
                if status != 200:
                    refused_at[gw.port] = time.time()
                    assert status == 401, body
                    assert "unknown or revoked" in body["error"]["message"]
                    return
                await asyncio.sleep(0.05)

        pollers = [asyncio.create_task(poll(gw)) for gw in (one, two)]
        await asyncio.sleep(0.3)
        asked = time.time()
        assert (await cli("revoke", key["id"], "--database-url", url))["revoked_at"]
        await asyncio.wait_for(asyncio.gather(*pollers), ttl + 5)
        # From the moment the revoking process wrote the row (revoked_at, taken just before
        # the UPDATE; the CLI prints it to the second only) to each instance's first refusal.
        async with await open_database(url) as db:
            row = await db.fetch_one("SELECT revoked_at FROM api_keys WHERE id = ?", (key["id"],))
        assert row is not None
        revoked_at = float(row["revoked_at"])
        assert asked <= revoked_at <= min(refused_at.values())
        delays = [refused_at[gw.port] - revoked_at for gw in (one, two)]
        print(f"\nrevocation refused after {delays[0]:.2f} s and {delays[1]:.2f} s (TTL {ttl:g} s)")
        assert all(0 < delay <= ttl + 0.5 for delay in delays), delays
        for gw in (one, two):  # and it stays refused
            assert (await ask(gw, key["secret"]))[0] == 401


# --- PostgreSQL stopped and started again --------------------------------------------------------


async def test_postgresql_stopped_keys_from_cache_ledger_spooled_then_caught_up(
    simulator: Any,
    pg_server: PostgresServer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.chdir(tmp_path)
    spool = tmp_path / "tokenrelay-spool"
    url = pg_server.create_database()
    env = environ(
        simulator.url,
        url,
        TOKENRELAY_AUTH__KEY_CACHE_TTL="0.5",
        TOKENRELAY_AUTH__KEY_NEGATIVE_TTL="0.2",
    )
    caplog.set_level(logging.INFO, logger="tokenrelay.keys")
    async with gateway_server(env) as gw:
        async with await open_database(url) as db:  # migrated on opening
            store = KeyStore(db)
            used_id, used = await store.create("alice", "acme")
            _, unused = await store.create("bob", "acme")  # never shown to the gateway
        assert (await ask(gw, used))[0] == 200
        assert (await ask(gw))[0] == 200
        keys = gw.gateway.gate.authenticator.keys
        assert keys is not None and keys.stale_if_error == 300.0  # auth.key_stale_ttl's default
        ledger = gw.gateway.ledger
        assert ledger is not None and ledger.spool_dir == spool
        await eventually(lambda: ledger.backlog == 0)

        await asyncio.to_thread(pg_server.stop, "fast")
        try:
            await asyncio.sleep(0.6)  # past the key cache TTL
            for _ in range(5):  # confirmed valid 0.6 s ago: served from cache
                status, body, _ = await ask(gw, used)
                assert status == 200, body
                await asyncio.sleep(0.2)
            for key in (unused, UNKNOWN_KEY):  # not confirmed: cannot be judged
                status, body, retry_after = await ask(gw, key)
                assert status == 503, body
                assert body["error"]["message"] == (
                    "cannot check the API key right now (the key database is unreachable); "
                    "try again shortly"
                )
                assert retry_after == "1"
            assert (await ask(gw))[0] == 200  # anonymous callers do not need the database
            assert keys.down_since is not None
            assert (await get(gw, "/healthz"))[0] == 200
            # The ledger check passes while rows wait in the spool (on disk, not in memory), so
            # readiness stays green: every instance shares the database, and dropping them all
            # from the load balancer would refuse the callers the cache can still serve.
            # It reports the outage under "degraded" once a write has failed.
            await eventually(lambda: ledger.database_down_since is not None, within=10)
            status, ready = await get(gw, "/readyz")
            assert status == 200, ready
            assert ready["status"] == "ready"
            assert "the database has failed writes" in ready["degraded"]["database"]["reason"]
            assert ledger.backlog == ledger.spooled > 0 and spool_lines(spool) >= ledger.spooled
        finally:
            await asyncio.to_thread(pg_server.start)

        # Revoked as soon as the server is back: the entry served from cache during the outage
        # does not outlive it. The first request after the restart may still be answered from
        # cache (it does not wait for the database), then the revocation holds.
        async with await open_database(url) as db:
            await KeyStore(db).revoke(used_id)
        revoked_at = time.monotonic()

        async def refused() -> bool:
            return (await ask(gw, used))[0] == 401

        await eventually(refused, within=keys.retry_interval + 2)
        print(f"\nrevoked after the restart: refused {time.monotonic() - revoked_at:.2f} s later")
        assert (await ask(gw, unused))[0] == 200  # checked against the database again
        assert keys.down_since is None

        # Every request the gateway served or refused is in the ledger exactly once.
        await eventually(lambda: ledger.backlog == 0, within=20)
        records = [record.request_id for record in gw.records]
        ids = await ledger_ids(url)
        assert sorted(ids) == sorted(records) and len(set(ids)) == len(ids)
        assert (await get(gw, "/readyz"))[1] == {"status": "ready"}  # no longer degraded

    messages = [r.getMessage() for r in caplog.records if r.name == "tokenrelay.keys"]
    down = [m for m in messages if m.startswith("cannot check API keys")]
    back = [m for m in messages if m.startswith("the database answers key lookups again")]
    assert len(down) == 1 and "last 300 s" in down[0], messages  # once per outage
    assert len(back) == 1 and "refused with 503" in back[0], messages


# --- a partition: the server is up, this instance cannot reach it --------------------------------


async def test_a_key_revoked_while_an_instance_cannot_reach_the_database(
    simulator: Any, pg_server: PostgresServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    direct = pg_server.create_database()
    relay = Relay(pg_server.port)
    await relay.heal()
    env = environ(simulator.url, relay.url(direct), TOKENRELAY_AUTH__KEY_CACHE_TTL="0.3")
    try:
        async with gateway_server(env) as gw:
            await gw.gateway.gate.database()  # migrates, through the relay
            key = await cli("create", "--user", "carol", "--database-url", direct)
            assert (await ask(gw, key["secret"]))[0] == 200

            await relay.cut()
            await asyncio.sleep(0.4)
            assert (await ask(gw, key["secret"]))[0] == 200  # from cache
            await cli("revoke", key["id"], "--database-url", direct)  # the server is up
            await asyncio.sleep(0.4)
            # Documented: this instance cannot know. It serves the key from cache until it
            # reaches the database again (at most auth.key_stale_ttl after its last check).
            for _ in range(3):
                assert (await ask(gw, key["secret"]))[0] == 200
                await asyncio.sleep(0.2)

            await relay.heal()
            healed = time.monotonic()

            async def refused() -> bool:
                return (await ask(gw, key["secret"]))[0] == 401

            await eventually(refused, within=3)
            print(f"\nafter the partition healed: refused {time.monotonic() - healed:.2f} s later")
    finally:
        await relay.close()


# --- the key store's outage mechanics, with a scripted database ----------------------------------


class Scripted(Database):
    """A database whose key lookups answer from ``keys``, fail while ``up`` is false, or hang
    while ``hang`` is set; it counts the lookups it was asked."""

    backend = "postgresql"
    url = "postgresql://scripted/keys"

    def __init__(self, keys: Iterable[str] = ()) -> None:
        self.keys = {_digest(secret) for secret in keys}
        self.up = True
        self.hang = False
        self.queries = 0
        self.cancelled = 0

    async def fetch_one(self, sql: str, params: Params = ()) -> Row | None:
        self.queries += 1
        if self.hang:
            try:
                await asyncio.Event().wait()
            except asyncio.CancelledError:
                self.cancelled += 1
                raise
        if not self.up:
            raise DatabaseError("connection refused (scripted)")
        if params[0] not in self.keys:
            return None
        return {
            "id": "key_" + params[0][:12],
            "prefix": "trk_xxxxxxxx",
            "user_id": "u",
            "org_id": None,
            "routes": None,
            "rpm": None,
            "name": None,
            "created_at": 1.0,
            "revoked_at": None,
            "admin": 0,
        }

    async def execute(self, sql: str, params: Params = ()) -> int:
        raise NotImplementedError

    async def execute_many(self, sql: str, rows: Iterable[Params]) -> None:
        raise NotImplementedError

    async def fetch_all(self, sql: str, params: Params = ()) -> list[Row]:
        raise NotImplementedError

    def transaction(self) -> contextlib.AbstractAsyncContextManager[Any]:
        raise NotImplementedError

    async def close(self) -> None:
        pass


def _digest(secret: str) -> str:
    from tokenrelay.gate.keys import hash_key

    return hash_key(secret)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


GOOD = "trk_" + "G" * 40
OTHER = "trk_" + "H" * 40


async def test_an_outage_is_logged_once_and_the_database_tried_at_most_once_per_interval(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="tokenrelay.keys")
    db = Scripted([GOOD, OTHER])
    clock = Clock()
    store = KeyStore(db, ttl=5.0, stale_if_error=60.0, retry_interval=1.0, clock=clock)
    assert await store.lookup(GOOD) is not None
    db.up = False
    clock.now += 6  # expired
    # A flood during the outage: known keys from cache, others refused, one query between them.
    results = await asyncio.gather(
        *(store.lookup(GOOD) for _ in range(50)),
        *(store.lookup(OTHER) for _ in range(50)),
        return_exceptions=True,
    )
    assert all(r is not None and not isinstance(r, BaseException) for r in results[:50])
    assert all(isinstance(r, DatabaseError) for r in results[50:])
    assert db.queries == 3  # the first check, then one query per key, shared by 50 callers
    for _ in range(20):
        assert await store.lookup(GOOD) is not None
        with pytest.raises(DatabaseError, match="unreachable"):
            await store.lookup(OTHER)
    assert db.queries == 3  # tried less than retry_interval ago: no query, nobody waits
    clock.now += 1.0
    with pytest.raises(DatabaseError):
        await store.lookup(OTHER)
    assert db.queries == 4  # one more try a second

    db.up = True
    clock.now += 1.0
    assert await store.lookup(OTHER) is not None
    assert store.down_since is None
    messages = [r.getMessage() for r in caplog.records if r.name == "tokenrelay.keys"]
    assert len(messages) == 2, messages
    assert messages[0].startswith("cannot check API keys: connection refused (scripted)")
    assert "after 2.0 s" in messages[1] and "70 request(s) were accepted from cache" in messages[1]
    assert "71 refused with 503" in messages[1]


async def test_a_key_is_served_from_cache_only_within_the_stale_window() -> None:
    db = Scripted([GOOD])
    clock = Clock()
    store = KeyStore(db, ttl=5.0, stale_if_error=60.0, clock=clock)
    assert await store.lookup(GOOD) is not None
    db.up = False
    clock.now += 59.9  # 59.9 s after it was confirmed
    assert await store.lookup(GOOD) is not None
    clock.now += 1.0
    with pytest.raises(DatabaseError):
        await store.lookup(GOOD)

    other = Scripted([GOOD])
    off = KeyStore(other, ttl=5.0, stale_if_error=0.0, clock=clock)  # disabled
    assert await off.lookup(GOOD) is not None
    other.up = False
    clock.now += 5.1
    with pytest.raises(DatabaseError):
        await off.lookup(GOOD)


async def test_a_hung_database_holds_no_request_past_the_lookup_timeout() -> None:
    db = Scripted([GOOD])
    store = KeyStore(db, ttl=0.05, lookup_timeout=0.2, retry_interval=0.1)
    assert await store.lookup(GOOD) is not None
    db.hang = True  # a server gone without a reset: the query never answers
    await asyncio.sleep(0.06)
    started = time.monotonic()
    assert await store.lookup(GOOD) is not None  # given up on after 0.2 s, from cache
    assert 0.15 < time.monotonic() - started < 0.5
    await asyncio.sleep(0.01)
    assert db.cancelled == 1  # the query was cancelled: its connection is not held
    started = time.monotonic()
    assert await store.lookup(GOOD) is not None  # down now: from cache at once
    with pytest.raises(DatabaseError, match="unreachable"):
        await store.lookup(OTHER)
    assert time.monotonic() - started < 0.05
    await asyncio.sleep(0.1)
    with pytest.raises(DatabaseError, match=r"did not answer a key lookup within 0\.2 s"):
        await store.lookup(OTHER)  # a retry was due: waited for, up to the timeout
    db.hang = False
    await asyncio.sleep(0.15)
    assert await store.lookup(OTHER) is None  # unknown, and the outage is over
    assert store.down_since is None


async def test_the_stale_window_is_a_setting_the_authenticator_applies() -> None:
    settings = AuthSettings(key_stale_ttl=42)
    store = KeyStore(Scripted([GOOD]))

    async def open_keys() -> KeyStore:
        return store

    auth = Authenticator(settings)
    auth.open_keys = open_keys
    identity = await auth.identify({"authorization": f"Bearer {GOOD}"}, "127.0.0.1", "r", True)
    assert identity.kind == "key" and store.stale_if_error == 42
    with pytest.raises(ValueError, match="negative"):
        AuthSettings(key_stale_ttl=-1)

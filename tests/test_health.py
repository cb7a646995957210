"""``/healthz`` and ``/readyz`` over real HTTP: readiness follows a Redis server the test starts,
stops and restarts itself, the ledger's spool directory, and draining; liveness never moves."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import pytest_asyncio
import redis

from tests.redis_server import RedisServer, redis_server_fixture
from tests.servers import RunningGateway, gateway_environ, gateway_server
from tokenrelay.observe.health import RedisProbe

pytestmark = pytest.mark.asyncio(loop_scope="session")
redis_server = redis_server_fixture()  # per test: the test stops and restarts it


@pytest_asyncio.fixture(loop_scope="session")
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


def environ(simulator: Any, tmp_path: Path, **extra: str) -> dict[str, str]:
    """The test routes, with a database (and so a ledger spool) of the test's own."""
    return {
        **gateway_environ(simulator.url),
        "TOKENRELAY_DATABASE_URL": f"sqlite:///{tmp_path}/keys.db",
        **extra,
    }


async def readyz(http: aiohttp.ClientSession, gw: RunningGateway) -> tuple[int, Any, Any]:
    async with http.get(gw.url + "/readyz") as response:
        return response.status, await response.json(), response.headers


async def alive(http: aiohttp.ClientSession, gw: RunningGateway) -> bool:
    async with http.get(gw.url + "/healthz") as response:
        return response.status == 200 and (await response.json())["status"] == "ok"


async def until(
    check: Callable[[], Awaitable[tuple[int, Any, Any]]], status: int, within: float = 5.0
) -> tuple[float, Any]:
    """Poll ``check`` every 50 ms until it answers ``status``; (seconds it took, body)."""
    started = time.monotonic()
    while True:
        got, body, _ = await check()
        if got == status:
            return time.monotonic() - started, body
        if time.monotonic() - started > within:
            raise AssertionError(f"still {got} after {within} s: {body}")
        await asyncio.sleep(0.05)


async def test_readiness_follows_redis(
    simulator: Any, tmp_path: Path, redis_server: RedisServer, http: aiohttp.ClientSession
) -> None:
    env = environ(simulator, tmp_path, TOKENRELAY_REDIS_URL=redis_server.url)
    async with gateway_server(env) as gw:
        status, body, _ = await readyz(http, gw)
        assert (status, body) == (200, {"status": "ready"})
        redis_server.stop()
        took, body = await until(lambda: readyz(http, gw), 503)
        assert took < 2.5  # the cached result lives ~1 s
        assert body["status"] == "not_ready"
        checks = body["checks"]
        assert checks["redis"]["ok"] is False and "Redis" in checks["redis"]["reason"]
        assert checks["ledger"] == {"ok": True} and checks["config"] == {"ok": True}
        assert await alive(http, gw)  # alive, just not ready
        redis_server.start()
        took, body = await until(lambda: readyz(http, gw), 200)
        assert body == {"status": "ready"}
        assert await alive(http, gw)


async def test_polling_costs_at_most_one_ping_a_second(
    simulator: Any, tmp_path: Path, redis_server: RedisServer, http: aiohttp.ClientSession
) -> None:
    env = environ(simulator, tmp_path, TOKENRELAY_REDIS_URL=redis_server.url)
    observer = redis.Redis(port=redis_server.port)

    def pings() -> int:
        stats = observer.info("commandstats").get("cmdstat_ping", {})
        return int(stats.get("calls", 0))

    try:
        async with gateway_server(env) as gw:
            before = pings()
            started = time.monotonic()
            for _ in range(10):  # 10 rounds of 5 concurrent probes over ~1.5 s
                statuses = await asyncio.gather(*(readyz(http, gw) for _ in range(5)))
                assert [status for status, _, _ in statuses] == [200] * 5
                await asyncio.sleep(0.15)
            elapsed = time.monotonic() - started
            sent = pings() - before
            assert 1 <= sent <= int(elapsed) + 1, (sent, elapsed)
    finally:
        observer.close()


async def test_draining_flips_readiness_but_not_liveness(
    simulator: Any, tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    async with gateway_server(environ(simulator, tmp_path)) as gw:
        status, body, _ = await readyz(http, gw)
        assert (status, body) == (200, {"status": "ready"})
        await gw.gateway.drain(0)  # nothing in flight: it only starts refusing
        status, body, headers = await readyz(http, gw)
        assert (status, body) == (503, {"status": "draining"})
        assert headers["retry-after"] == "1" and headers["connection"] == "close"
        assert await alive(http, gw)


async def test_an_unwritable_ledger_spool_flips_readiness(
    simulator: Any, tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    async with gateway_server(environ(simulator, tmp_path)) as gw:
        ledger = gw.gateway.ledger
        assert ledger is not None
        spool = ledger.spool_dir
        assert (await readyz(http, gw))[0] == 200
        # Permissions do not stop root, so the directory is replaced by a file: as unwritable as
        # a directory gets for everyone (a read-only mount is what access(2) reports the same).
        aside = spool.with_name(spool.name + ".aside")
        os.rename(spool, aside)
        spool.write_text("not a directory")
        try:
            status, body, _ = await readyz(http, gw)
            assert status == 503 and body["status"] == "not_ready"
            assert body["checks"]["ledger"]["ok"] is False
            assert str(spool) in body["checks"]["ledger"]["reason"]
            assert await alive(http, gw)
        finally:
            spool.unlink()
            os.rename(aside, spool)
        assert (await readyz(http, gw))[0] == 200
        if os.geteuid() != 0:  # the ordinary case, where permissions do apply
            spool.chmod(0o500)
            try:
                assert (await readyz(http, gw))[0] == 503
            finally:
                spool.chmod(0o700)


async def test_a_stopped_ledger_writer_flips_readiness(
    simulator: Any, tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    async with gateway_server(environ(simulator, tmp_path)) as gw:
        ledger = gw.gateway.ledger
        assert ledger is not None
        await ledger.close(timeout=1.0)
        status, body, _ = await readyz(http, gw)
        assert status == 503
        assert body["checks"]["ledger"] == {
            "ok": False,
            "reason": "the ledger writer is not running",
        }


# --- the probe alone -----------------------------------------------------------------------------


class FakeRedis:
    def __init__(self, delay: float = 0.0, error: Exception | None = None) -> None:
        self.delay = delay
        self.error = error
        self.calls = 0

    async def ping(self) -> bool:
        self.calls += 1
        await asyncio.sleep(self.delay)
        if self.error is not None:
            raise self.error
        return True


async def test_probes_share_one_ping_and_reuse_it_for_a_second() -> None:
    now = [100.0]
    client = FakeRedis(delay=0.02)
    probe = RedisProbe(client, timeout=0.5, clock=lambda: now[0])
    results = await asyncio.gather(*(probe.check() for _ in range(20)))
    assert results == [(True, "")] * 20 and client.calls == 1
    now[0] += 0.9
    assert await probe.check() == (True, "") and client.calls == 1
    now[0] += 0.2
    assert await probe.check() == (True, "") and client.calls == 2


async def test_a_slow_or_failing_redis_is_reported_within_the_timeout() -> None:
    slow = RedisProbe(FakeRedis(delay=5.0), timeout=0.05)
    started = time.monotonic()
    ok, why = await slow.check()
    assert not ok and "did not answer PING within 0.05 s" in why
    assert time.monotonic() - started < 1.0
    broken = RedisProbe(FakeRedis(error=ConnectionError("refused")), timeout=0.5)
    ok, why = await broken.check()
    assert not ok and "ConnectionError: refused" in why

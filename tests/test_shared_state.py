"""Breaker state and TTFT statistics shared through Redis (``tokenrelay.shared_state``), against a
throwaway redis-server (tests/redis_server.py, never the machine's own): each transition of the
Lua-backed store on a fake clock, with two stores standing for two instances; the fallback to
local state when Redis goes away and the return to shared state after; then two real gateway
instances on one Redis, in front of the simulator."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import aiohttp
import pytest

from tests.redis_server import RedisServer, redis_server_binary, redis_server_fixture
from tests.servers import RunningGateway, gateway_environ, gateway_server
from tests.test_failover import CLAUDE, GPT, attempts, faulty, generate, route
from tokenrelay.breaker import BreakerSettings, BreakerState
from tokenrelay.shared_state import RedisBreakerStore, RedisLatencyStats, RedisLink

pytestmark = pytest.mark.asyncio(loop_scope="session")

redis_server = redis_server_fixture(scope="module")

KEY = "anthropic:claude-sonnet-5-5"
T0 = 1_700_000_000.0  # a fake wall clock: the scripts only compare the times they are given


@pytest.fixture
def own_redis() -> Iterator[RedisServer]:
    """A server of this test's own, to stop and start."""
    with RedisServer(redis_server_binary()) as server:
        yield server


@pytest.fixture
def prefix() -> str:
    return f"test-{uuid.uuid4().hex[:8]}"


@contextlib.asynccontextmanager
async def links(url: str, prefix: str, count: int = 2) -> AsyncIterator[list[RedisLink]]:
    """``count`` links to one Redis under one prefix: so many gateway instances."""
    made = [RedisLink(url, timeout=0.25, retry_interval=0.2, prefix=prefix) for _ in range(count)]
    try:
        yield made
    finally:
        for link in made:
            await link.client.aclose()


def settings(failures: int = 3, window: float = 10.0, cooldown: float = 5.0) -> BreakerSettings:
    return BreakerSettings(failures=failures, window=window, cooldown=cooldown)


@contextlib.asynccontextmanager
async def instances(
    url: str, prefix: str, **kwargs: Any
) -> AsyncIterator[tuple[RedisBreakerStore, RedisBreakerStore]]:
    async with links(url, prefix) as (a, b):
        config = settings(**kwargs)
        yield RedisBreakerStore(a, config), RedisBreakerStore(b, config)


# --- the Lua-backed store, one transition at a time --------------------------------------------


async def test_opens_after_n_failures_within_the_window_counted_across_instances(
    redis_server: RedisServer, prefix: str
) -> None:
    async with instances(redis_server.url, prefix, failures=3, window=10.0) as (a, b):
        assert await a.try_acquire(KEY, T0)
        assert await a.record_failure(KEY, T0) is None
        assert await b.record_failure(KEY, T0 + 1) is None
        assert await b.try_acquire(KEY, T0 + 1)
        assert await a.record_failure(KEY, T0 + 2) == "opened"  # the third, from either
        assert not await b.try_acquire(KEY, T0 + 2)
        assert await b.state(KEY, T0 + 2) == BreakerState("open", T0 + 2 + 5.0)
        assert await a.try_acquire("openai:gpt-5.5", T0 + 2)  # circuits are per target


async def test_failures_older_than_the_window_do_not_count(
    redis_server: RedisServer, prefix: str
) -> None:
    async with instances(redis_server.url, prefix, failures=3, window=10.0) as (a, b):
        await a.record_failure(KEY, T0)
        await b.record_failure(KEY, T0)
        # the first two are exactly a window old now
        assert await a.record_failure(KEY, T0 + 10.0) is None
        assert await b.record_failure(KEY, T0 + 10.0) is None
        assert await a.record_failure(KEY, T0 + 19.0) == "opened"  # three within the last 10 s


async def test_open_becomes_half_open_after_the_cooldown_with_exactly_one_probe(
    redis_server: RedisServer, prefix: str
) -> None:
    async with instances(redis_server.url, prefix, failures=1, cooldown=5.0) as (a, b):
        assert await a.record_failure(KEY, T0) == "opened"
        assert not await b.try_acquire(KEY, T0 + 4.999)
        assert await b.state(KEY, T0 + 5.0) == BreakerState("half_open")  # reading changes nothing
        # Ten at once from both instances, past the cooldown: one probe.
        granted = await asyncio.gather(*(store.try_acquire(KEY, T0 + 5.0) for store in (a, b) * 5))
        assert sorted(granted) == [False] * 9 + [True]
        assert await a.state(KEY, T0 + 6.0) == BreakerState("half_open", T0 + 10.0)


async def test_a_probe_success_closes_the_circuit_for_every_instance(
    redis_server: RedisServer, prefix: str
) -> None:
    async with instances(redis_server.url, prefix, failures=2, cooldown=5.0) as (a, b):
        observer = a._link.client
        await a.record_failure(KEY, T0)
        await a.record_failure(KEY, T0)
        assert await b.try_acquire(KEY, T0 + 5.0)  # b holds the probe
        assert not await a.try_acquire(KEY, T0 + 5.1)
        assert await b.record_success(KEY, T0 + 5.2) == "closed"
        assert await observer.exists(b.redis_key(KEY)) == 0  # closed leaves nothing behind
        assert await a.try_acquire(KEY, T0 + 5.2 + 0.5)  # a's memo of half-open is short
        assert await a.record_failure(KEY, T0 + 6.0) is None  # the count starts afresh


async def test_a_probe_failure_reopens_for_a_full_cooldown(
    redis_server: RedisServer, prefix: str
) -> None:
    async with instances(redis_server.url, prefix, failures=1, cooldown=5.0) as (a, b):
        await a.record_failure(KEY, T0)
        assert await a.try_acquire(KEY, T0 + 7.0)
        assert await a.record_failure(KEY, T0 + 9.0) == "reopened"  # the probe took 2 s to fail
        assert not await b.try_acquire(KEY, T0 + 13.999)
        assert await b.try_acquire(KEY, T0 + 14.0)
        assert not await a.try_acquire(KEY, T0 + 14.0)


async def test_a_lost_probe_slot_expires(redis_server: RedisServer, prefix: str) -> None:
    async with instances(redis_server.url, prefix, failures=1, cooldown=5.0) as (a, b):
        await a.record_failure(KEY, T0)
        assert await a.try_acquire(KEY, T0 + 5.0)  # this probe never reports
        assert not await b.try_acquire(KEY, T0 + 9.999)
        assert await b.try_acquire(KEY, T0 + 10.0)  # a second probe
        assert not await a.try_acquire(KEY, T0 + 10.0)
        assert await b.record_success(KEY, T0 + 10.1) == "closed"
        assert await a.state(KEY, T0 + 10.1) == BreakerState("closed")


async def test_late_reports_while_open_change_nothing(
    redis_server: RedisServer, prefix: str
) -> None:
    async with instances(redis_server.url, prefix, failures=1, cooldown=5.0) as (a, b):
        await a.record_failure(KEY, T0)
        assert await b.record_success(KEY, T0 + 1) is None
        assert await b.record_failure(KEY, T0 + 2) is None
        assert await a.state(KEY, T0 + 4.0) == BreakerState("open", T0 + 5.0)  # not extended


async def test_keys_are_namespaced_and_expire(redis_server: RedisServer, prefix: str) -> None:
    async with instances(redis_server.url, prefix, failures=3, window=10.0, cooldown=5.0) as (
        a,
        _,
    ):
        observer = a._link.client
        name = f"{prefix}:breaker:{{{KEY}}}"
        await a.record_failure(KEY, T0)
        await a.record_failure(KEY, T0 + 1)
        assert await observer.hgetall(name) == {
            b"state": b"closed",
            b"failures": f"{T0!r} {T0 + 1!r}".encode(),
        }
        assert 9_000 < await observer.pttl(name) <= 10_000  # gone a window after the last one
        await a.record_failure(KEY, T0 + 2)
        assert await observer.hgetall(name) == {b"state": b"open", b"until": b"1700000007"}
        ttl = await observer.pttl(name)
        assert 5_000 < ttl <= (5 + 3600) * 1000  # the cooldown, then an hour of retention


async def test_a_circuit_opened_elsewhere_is_seen_within_the_memo_bound(
    redis_server: RedisServer, prefix: str
) -> None:
    """b remembers a closed circuit for 0.5 s, so it keeps sending for at most that long."""
    async with instances(redis_server.url, prefix, failures=1, cooldown=5.0) as (a, b):
        assert await b.try_acquire(KEY, T0)  # b now believes "closed" until T0 + 0.5
        assert await a.record_failure(KEY, T0 + 0.1) == "opened"
        assert await b.try_acquire(KEY, T0 + 0.4)  # still within the memo
        assert not await b.try_acquire(KEY, T0 + 0.5)
        assert not await b.try_acquire(KEY, T0 + 4.9)  # open, from the memo: no round trip


async def test_a_burst_when_the_memo_lapses_costs_one_round_trip(
    redis_server: RedisServer, prefix: str
) -> None:
    async with instances(redis_server.url, prefix) as (a, _):
        calls = 0
        script = a._try_acquire

        async def counting(**kwargs: Any) -> Any:
            nonlocal calls
            calls += 1
            return await script(**kwargs)

        a._try_acquire = counting  # type: ignore[assignment]
        assert all(await asyncio.gather(*(a.try_acquire(KEY, T0) for _ in range(50))))
        assert calls == 1


async def test_hundreds_of_concurrent_calls_are_not_mistaken_for_an_outage(
    redis_server: RedisServer, prefix: str
) -> None:
    """The pool waits for a free connection instead of raising past its size."""
    async with instances(redis_server.url, prefix) as (a, _):
        await asyncio.gather(*(a.record_failure(f"p:m{i}", T0) for i in range(300)))
        assert a._link.up and a._link.outages == 0 and a.local_calls == 0


# --- Redis away and back ------------------------------------------------------------------------


async def test_the_breaker_falls_back_to_local_state_and_returns_to_redis(
    own_redis: RedisServer, prefix: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="tokenrelay")
    async with links(own_redis.url, prefix, count=1) as (link,):
        store = RedisBreakerStore(link, settings(failures=2, cooldown=60.0))
        other = "openai:gpt-5.5"
        await store.record_failure(other, T0)
        await store.record_failure(other, T0)  # open in Redis before the outage
        own_redis.stop()
        assert await store.try_acquire(KEY, T0)  # no exception: the local store answers
        assert not link.up and link.outages == 1
        assert await store.record_failure(KEY, T0) is None
        assert await store.record_failure(KEY, T0) == "opened"  # locally
        assert not await store.try_acquire(KEY, T0 + 1)
        assert not await store.try_acquire(other, T0 + 1)  # known open: kept open locally
        assert await store.state(KEY, T0 + 1) == BreakerState("open", T0 + 60.0)
        assert store.local_calls >= 5
        own_redis.start()  # empty: nothing is persisted
        await asyncio.sleep(0.25)  # the retry interval
        assert await store.try_acquire(KEY, T0 + 2)  # Redis again; the local opening is gone
        assert link.up and link.outages == 1
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1  # once per outage, however many calls
    assert "LOCAL to this instance" in errors[0].getMessage()
    assert any("is back after" in r.getMessage() for r in caplog.records)
    assert not [r for r in caplog.records if r.exc_info]


async def test_an_unresponsive_redis_costs_one_timeout_then_nothing(
    own_redis: RedisServer, prefix: str
) -> None:
    async with links(own_redis.url, prefix, count=1) as (link,):
        store = RedisBreakerStore(link, settings())
        assert await store.try_acquire(KEY, T0)
        own_redis.pause()
        try:
            started = time.monotonic()
            assert await store.record_failure(KEY, T0) is None  # times out, answered locally
            first = time.monotonic() - started
            started = time.monotonic()
            for _ in range(10):
                await store.record_failure("openai:gpt-5.5", T0)
            rest = time.monotonic() - started
        finally:
            own_redis.resume()
    assert 0.2 <= first < 1.0 and rest < 0.2


async def test_latency_statistics_pool_every_instance_and_fall_back_locally(
    own_redis: RedisServer, prefix: str
) -> None:
    async with links(own_redis.url, prefix) as (link_a, link_b):
        a, b = RedisLatencyStats(link_a), RedisLatencyStats(link_b)
        for ms in range(1, 31):
            a.observe(KEY, ms / 1000)
        b.observe(KEY, 1.0)  # one slow answer seen by b
        assert b.quantile(KEY, 0.95, 20) is None  # b alone has one sample
        await a.flush()
        await b.flush()
        await b.refresh()
        assert b.quantile(KEY, 0.95, 20) == 0.03  # 31 samples: 30 from a, 1 from b
        assert b.quantile(KEY, 0.99, 20) == 1.0
        assert await link_a.client.llen(f"{prefix}:ttft:{{{KEY}}}") == 31
        assert 0 < await link_a.client.ttl(f"{prefix}:ttft:{{{KEY}}}") <= 86_400
        own_redis.stop()
        b.observe(KEY, 1.0)
        await b.flush()  # fails: b falls back to its own two samples
        assert not link_b.up
        assert b.quantile(KEY, 0.5, 2) == 1.0
        assert b.quantile(KEY, 0.5, 20) is None


# --- two gateway instances on one Redis ---------------------------------------------------------

HEALTHY = [CLAUDE, GPT]
TRIPPING = [faulty(CLAUDE, fault=529), GPT]
SLOW_PROBE = [faulty(CLAUDE, ttft_ms=800), GPT]
MEASURED = {"provider": "anthropic", "model": "claude-measured", "headers": {"x-sim-ttft-ms": "40"}}


def environ(simulator: Any, url: str, prefix: str, cooldown: float = 60.0) -> dict[str, str]:
    return {
        **gateway_environ(simulator.url),
        **route("healthy", HEALTHY, retries=0),
        **route("tripping", TRIPPING, retries=0),
        **route("slowprobe", SLOW_PROBE, retries=0, first_token_timeout=3),
        **route("measured", [MEASURED], retries=0),
        "TOKENRELAY_REDIS_URL": url,
        "TOKENRELAY_LIMITS__KEY_PREFIX": prefix,
        "TOKENRELAY_BREAKER__ENABLED": "true",
        "TOKENRELAY_BREAKER__FAILURES": "3",
        "TOKENRELAY_BREAKER__COOLDOWN": str(cooldown),
    }


@contextlib.asynccontextmanager
async def two_instances(
    environ: dict[str, str],
) -> AsyncIterator[tuple[RunningGateway, RunningGateway]]:
    async with gateway_server(environ) as a, gateway_server(environ) as b:
        yield a, b


async def first_outcome(gw: RunningGateway, route_name: str) -> str:
    response, _ = await generate(gw, route_name)
    assert response.status == 200
    return attempts(response)[0][1]


async def trip(gw: RunningGateway) -> None:
    for _ in range(3):
        assert await first_outcome(gw, "tripping") == "outcome=overloaded"


async def seen_skipping(gw: RunningGateway, since: float, within: float = 1.0) -> float:
    """Send ``healthy`` requests to ``gw`` until its first target is skipped; the seconds from
    ``since`` to that response."""
    while True:
        outcome = await first_outcome(gw, "healthy")
        took = time.monotonic() - since
        if outcome == "outcome=circuit_open":
            return took
        assert outcome == "outcome=ok"
        assert took < within, f"still sending to the open target after {took:.2f} s"
        await asyncio.sleep(0.01)


async def test_a_target_failing_on_one_instance_is_skipped_by_the_other_within_a_second(
    simulator: Any, redis_server: RedisServer, prefix: str
) -> None:
    async with two_instances(environ(simulator, redis_server.url, prefix)) as (a, b):
        assert await first_outcome(b, "healthy") == "outcome=ok"  # b believes it closed now
        await trip(a)
        opened = time.monotonic()
        took = await seen_skipping(b, opened)
        print(f"circuit opened on A was skipped by B after {took * 1000:.0f} ms")
        assert await b.gateway.router.breaker.snapshot() == {
            KEY: "open",
            "openai:gpt-5.5": "closed",
        }


async def test_the_half_open_probe_is_one_request_across_instances(
    simulator: Any, redis_server: RedisServer, prefix: str
) -> None:
    async with two_instances(environ(simulator, redis_server.url, prefix, cooldown=1.0)) as (
        a,
        b,
    ):
        await trip(a)
        await asyncio.sleep(1.05)  # the cooldown
        # Ten requests at once over both instances; the probe takes 0.8 s to its first token,
        # so each of the others finds the probe's slot taken.
        responses = await asyncio.gather(*(generate(gw, "slowprobe") for gw in (a, b) * 5))
        firsts = [attempts(response)[0] for response, _ in responses]
        assert sorted(outcome for _, outcome in firsts) == ["outcome=circuit_open"] * 9 + [
            "outcome=ok"
        ]
        # The probe succeeded: both instances send to the target again within the memo's 0.5 s.
        for gw in (a, b):
            await asyncio.sleep(0.5)
            assert await first_outcome(gw, "healthy") == "outcome=ok"
            assert (await gw.gateway.router.breaker.snapshot())[KEY] == "closed"


async def test_the_ttft_percentile_on_one_instance_pools_the_others_observations(
    simulator: Any, redis_server: RedisServer, prefix: str
) -> None:
    key = "anthropic:claude-measured"
    async with two_instances(environ(simulator, redis_server.url, prefix)) as (a, b):
        latency_b = b.gateway.router.latency
        assert latency_b.quantile(key, 0.95, 20) is None  # b asks: it will watch the key
        for _ in range(25):
            assert await first_outcome(a, "measured") == "outcome=ok"
        started = time.monotonic()
        while (value := latency_b.quantile(key, 0.95, 20)) is None:
            assert time.monotonic() - started < 3.0, "b never saw a's observations"
            await asyncio.sleep(0.05)
        assert 0.04 <= value < 1.0  # the simulator's 40 ms to the first token, and ours
        assert b.gateway.shared is not None
        assert b.gateway.shared.latency.local.quantile(key, 0.95, 1) is None  # b measured none
        print(f"b saw a's p95 after {time.monotonic() - started:.2f} s: {value * 1000:.0f} ms")


async def readiness(gw: RunningGateway) -> tuple[int, Any]:
    async with aiohttp.ClientSession() as http, http.get(gw.url + "/readyz") as response:
        return response.status, await response.json()


async def until_ready(gw: RunningGateway, status: int, within: float = 5.0) -> Any:
    started = time.monotonic()
    while True:
        got, body = await readiness(gw)
        if got == status:
            return body
        assert time.monotonic() - started < within, f"readiness still {got}: {body}"
        await asyncio.sleep(0.05)


async def test_instances_keep_serving_on_local_state_while_redis_is_down_and_share_again_after(
    simulator: Any, own_redis: RedisServer, prefix: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="tokenrelay")
    async with two_instances(environ(simulator, own_redis.url, prefix)) as (a, b):
        for gw in (a, b):
            assert await first_outcome(gw, "healthy") == "outcome=ok"
        own_redis.stop()
        for gw in (a, b):  # both keep serving, each on its own breaker
            assert await first_outcome(gw, "healthy") == "outcome=ok"
        await trip(a)
        assert await first_outcome(a, "healthy") == "outcome=circuit_open"  # a's local circuit
        assert await first_outcome(b, "healthy") == "outcome=ok"  # b cannot know
        for gw in (a, b):
            body = await until_ready(gw, 503)
            assert body["checks"]["redis"]["ok"] is False
            shared = gw.gateway.shared
            assert shared is not None and not shared.link.up and shared.link.outages == 1
        assert a.gateway.shared is not None and a.gateway.shared.store.local_calls > 0
        async with aiohttp.ClientSession() as http, http.get(a.url + "/metrics") as response:
            page = await response.text()
        assert "tokenrelay_shared_state_outages_total 1\n" in page
        local = a.gateway.shared.store.local_calls
        assert f"tokenrelay_breaker_local_steps_total {local}\n" in page

        own_redis.start()
        for gw in (a, b):
            await until_ready(gw, 200)
            started = time.monotonic()
            while not (shared := gw.gateway.shared) or not shared.link.up:
                assert time.monotonic() - started < 3.0, "the shared state did not come back"
                await asyncio.sleep(0.05)
        # Shared again: a's local opening was discarded, and a new opening on a reaches b.
        assert await first_outcome(a, "healthy") == "outcome=ok"
        await trip(a)
        await seen_skipping(b, time.monotonic())

    lines = [r for r in caplog.records if r.name == "tokenrelay.shared_state"]
    assert sum(r.levelno == logging.ERROR for r in lines) == 2  # once per instance
    assert sum("is back after" in r.getMessage() for r in lines) == 2
    assert not [r for r in caplog.records if r.exc_info], "an exception was logged"


async def test_without_redis_url_nothing_is_shared(simulator: Any) -> None:
    async with gateway_server(gateway_environ(simulator.url)) as gw:
        assert gw.gateway.shared is None
        assert type(gw.gateway.router.breaker._store).__name__ == "LocalBreakerStore"

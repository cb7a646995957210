"""The rate limiter against real storage: the in-process store and a real redis-server started
for these tests on a spare port (tests/redis_server.py), stopped and restarted mid-test for the
failure cases. Windows are a few seconds at most so the suite stays fast."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import re
import time
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from typing import Any

import msgspec
import pytest
import pytest_asyncio
import redis.asyncio

from tests.redis_server import RedisServer, redis_server_binary, redis_server_fixture
from tokenrelay.ratelimit import Decision, Lease, LimitSettings, RateLimiter, Rule, Subject
from tokenrelay.ratelimit.memory import MemoryStore
from tokenrelay.ratelimit.model import go_duration

redis_server = redis_server_fixture(scope="module")

IP = Subject("ip", "203.0.113.7")
USER = Subject("user", "u_1")
ORG = Subject("org", "o_1")

MakeLimiter = Callable[..., RateLimiter]


@pytest.fixture(params=["memory", "redis"])
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@contextlib.asynccontextmanager
async def limiters(url: str | None) -> AsyncIterator[MakeLimiter]:
    """A factory of limiters that share counters (one key prefix per test), so two of them are
    two gateway instances; all closed at the end."""
    prefix = f"test-{uuid.uuid4().hex[:8]}"
    made: list[RateLimiter] = []

    def make(**settings: Any) -> RateLimiter:
        limiter = RateLimiter.create(LimitSettings(redis_url=url, key_prefix=prefix, **settings))
        made.append(limiter)
        return limiter

    try:
        yield make
    finally:
        for limiter in made:
            await limiter.close()


@pytest_asyncio.fixture(loop_scope="session")
async def make_limiter(request: pytest.FixtureRequest, backend: str) -> AsyncIterator[MakeLimiter]:
    """Limiters on each backend in turn."""
    url = request.getfixturevalue("redis_server").url if backend == "redis" else None
    async with limiters(url) as make:
        yield make


@pytest_asyncio.fixture(loop_scope="session")
async def make_redis_limiter(redis_server: RedisServer) -> AsyncIterator[MakeLimiter]:
    async with limiters(redis_server.url) as make:
        yield make


@pytest.fixture
def own_redis() -> Any:
    """A server of this test's own, to stop and start."""
    with RedisServer(redis_server_binary()) as server:
        yield server


def header(decision: Decision, name: str) -> str | None:
    values = [v.decode() for k, v in decision.headers() if k.decode() == name]
    assert len(values) <= 1, values
    return values[0] if values else None


_SF_ITEM = re.compile(r'"(?P<name>[^"\\]*)"(?P<params>(?:;[a-z][a-z0-9-]*=(?:\d+|"[^"]*"))*)')


def parse_sf_item(value: str) -> tuple[str, dict[str, int | str]]:
    """One RFC 9651 list item with parameters, as the RateLimit fields use them."""
    match = _SF_ITEM.fullmatch(value)
    assert match, f"not a structured-field item: {value!r}"
    params: dict[str, int | str] = {}
    for param in match["params"].split(";")[1:]:
        key, raw = param.split("=", 1)
        params[key] = raw.strip('"') if raw.startswith('"') else int(raw)
    return match["name"], params


# --- request windows ------------------------------------------------------------------------


async def test_ten_allowed_then_the_eleventh_refused(make_limiter: MakeLimiter) -> None:
    limiter = make_limiter()
    rules = [Rule(IP, "10/minute")]
    for expected in range(9, -1, -1):
        decision = await limiter.check_requests(rules)
        assert decision.allowed and decision.remaining == expected
    refused = await limiter.check_requests(rules)
    assert not refused.allowed and refused.remaining == 0
    assert refused.retry_after is not None and 58 < refused.retry_after <= 60.1
    assert header(refused, "retry-after") == "60"
    assert not (await limiter.check_requests(rules)).allowed  # a refusal does not count


async def test_the_window_slides(make_limiter: MakeLimiter) -> None:
    """A sliding log: capacity comes back as each hit turns two seconds old, not all at once."""
    limiter = make_limiter()
    rules = [Rule(IP, "3/2second")]
    start = time.monotonic()
    assert (await limiter.check_requests(rules)).allowed
    assert (await limiter.check_requests(rules)).allowed
    await asyncio.sleep(1.0)
    assert (await limiter.check_requests(rules)).allowed
    refused = await limiter.check_requests(rules)
    assert not refused.allowed
    assert refused.retry_after is not None and 0.5 < refused.retry_after <= 1.05
    await asyncio.sleep(max(0.0, start + 2.15 - time.monotonic()))
    # the first two hits have left the window, the third has not
    assert (await limiter.check_requests(rules)).allowed
    assert (await limiter.check_requests(rules)).allowed
    refused = await limiter.check_requests(rules)
    assert not refused.allowed
    assert refused.retry_after is not None and refused.retry_after < 1.0


async def test_subjects_scopes_and_limits_count_apart(make_limiter: MakeLimiter) -> None:
    limiter = make_limiter()
    await limiter.check_requests([Rule(IP, "1/minute")])
    assert not (await limiter.check_requests([Rule(IP, "1/minute")])).allowed
    assert (await limiter.check_requests([Rule(Subject("ip", "198.51.100.1"), "1/minute")])).allowed
    assert (await limiter.check_requests([Rule(Subject("key", IP.id), "1/minute")])).allowed
    assert (await limiter.check_requests([Rule(IP, "1/minute", "fast")])).allowed
    assert (await limiter.check_requests([Rule(IP, "2/minute")])).allowed


async def test_the_most_restrictive_rule_wins_and_a_refusal_consumes_nothing(
    make_limiter: MakeLimiter,
) -> None:
    limiter = make_limiter()
    rules = [Rule(IP, "5/minute"), Rule(IP, "2/minute", "fast"), Rule(IP, "5/minute")]
    first = await limiter.check_requests(rules)
    assert (first.allowed, first.policy, first.limit, first.remaining) == (True, "ip.fast", 2, 1)
    assert header(first, "ratelimit-policy") == '"ip.fast";q=2;w=60'
    assert (await limiter.check_requests(rules)).remaining == 0
    refused = await limiter.check_requests(rules)
    assert (refused.allowed, refused.policy) == (False, "ip.fast")
    assert parse_sf_item(header(refused, "ratelimit") or "") == ("ip.fast", {"r": 0, "t": 60})
    # the refused request was not counted against the IP's own limit: 5 - 2 used, 1 more now
    alone = await limiter.check_requests([Rule(IP, "5/minute")])
    assert (alone.allowed, alone.policy, alone.remaining) == (True, "ip", 2)


async def test_several_windows_in_one_rule(make_limiter: MakeLimiter) -> None:
    limiter = make_limiter()
    rules = [Rule(IP, "2/second;3/minute")]
    assert [(await limiter.check_requests(rules)).allowed for _ in range(3)] == [True, True, False]
    await asyncio.sleep(1.05)
    assert (await limiter.check_requests(rules)).allowed
    refused = await limiter.check_requests(rules)
    assert (refused.allowed, refused.policy, refused.window) == (False, "ip.60s", 60)
    assert refused.retry_after is not None and refused.retry_after > 55


async def test_no_rules_no_limit(make_limiter: MakeLimiter) -> None:
    decision = await make_limiter().check_requests([])
    assert decision.allowed and decision.headers() == []


async def test_a_zero_limit_refuses_everything(make_limiter: MakeLimiter) -> None:
    limiter = make_limiter()
    assert not (await limiter.check_requests([Rule(IP, "0/minute")])).allowed
    refused = await limiter.check_tokens([USER], "0/minute")
    assert not refused.allowed and refused.retry_after is not None
    assert isinstance(await limiter.acquire_stream(USER, 0), Decision)


async def test_in_process_counters_do_not_outlive_their_window() -> None:
    """No sweeper task: dead logs are dropped as new hits arrive, oldest first."""
    async with limiters(None) as make:
        limiter = make()
        for i in range(50):
            await limiter.check_requests([Rule(Subject("ip", f"192.0.2.{i}"), "1/second")])
            await limiter.charge_tokens([Subject("user", f"u{i}")], 5, "100/second")
        store = limiter.store
        assert isinstance(store, MemoryStore)
        assert len(store._logs[1]) == 50 and len(store._counters[1]) == 50
        await asyncio.sleep(2.05)
        await limiter.check_requests([Rule(IP, "1/second")])
        await limiter.charge_tokens([USER], 5, "100/second")
        assert len(store._logs[1]) == 1 and len(store._counters[1]) == 1


async def test_two_instances_enforce_one_limit_exactly(make_redis_limiter: MakeLimiter) -> None:
    one, two = make_redis_limiter(), make_redis_limiter()
    rules = [Rule(IP, "10/minute")]
    rng = random.Random(4)
    outcomes = [(await rng.choice([one, two]).check_requests(rules)).allowed for _ in range(10)]
    assert all(outcomes)
    assert not (await one.check_requests(rules)).allowed
    assert not (await two.check_requests(rules)).allowed
    # and under contention: 40 requests at once over both instances, exactly 10 get through
    rules = [Rule(Subject("ip", "198.51.100.9"), "10/minute")]
    results = await asyncio.gather(*(x.check_requests(rules) for x in [one, two] * 20))
    assert sum(d.allowed for d in results) == 10


# --- tokens ---------------------------------------------------------------------------------


async def test_tokens_are_charged_after_and_checked_before(make_limiter: MakeLimiter) -> None:
    limiter = make_limiter()
    user, org = Rule(USER, "1000/hour"), Rule(ORG, "5000/hour")
    fresh = await limiter.check_tokens([user])
    assert (fresh.allowed, fresh.remaining, fresh.unit) == (True, 1000, "tokens")
    await limiter.charge_tokens([user, org], 800)
    assert (await limiter.check_tokens([user])).remaining == 200
    await limiter.charge_tokens([user, org], 300)  # over the limit: counted all the same
    refused = await limiter.check_tokens([user, org])
    assert (refused.allowed, refused.policy, refused.remaining) == (False, "tokens.user", 0)
    assert refused.retry_after is not None and 0 < refused.retry_after <= 7200
    assert header(refused, "x-ratelimit-remaining-tokens") == "0"
    assert header(refused, "anthropic-ratelimit-tokens-limit") == "1000"
    name, params = parse_sf_item(header(refused, "ratelimit-policy") or "")
    assert (name, params) == ("tokens.user", {"q": 1000, "qu": "tokens", "w": 3600})
    assert (await limiter.check_tokens([org])).remaining == 3900
    assert (await limiter.check_tokens([ORG], "1000/hour")).allowed  # a Subject with a limit
    assert (await limiter.check_tokens([Subject("user", "u_2")], "1000/hour")).allowed


async def test_a_large_charge_is_one_counter(make_redis_limiter: MakeLimiter) -> None:
    limiter = make_redis_limiter()
    await limiter.charge_tokens([USER], 50_000, "100000/minute")
    assert (await limiter.check_tokens([USER], "100000/minute")).remaining == 50_000
    client = redis.asyncio.Redis.from_url(limiter.settings.redis_url or "")
    try:
        keys = await client.keys(f"{limiter.settings.key_prefix}:*")
        assert 1 <= len(keys) <= 2
        for key in keys:
            assert await client.type(key) == b"string"
        assert sum([int(await client.get(key) or 0) for key in keys]) == 50_000
    finally:
        await client.aclose()


# --- concurrent streams ---------------------------------------------------------------------


async def test_concurrent_streams_are_capped(make_limiter: MakeLimiter) -> None:
    limiter = make_limiter()
    key = Subject("key", "k_1")
    first, second = await limiter.acquire_stream(key, 2), await limiter.acquire_stream(key, 2)
    assert isinstance(first, Lease) and isinstance(second, Lease)
    assert (first.decision.remaining, second.decision.remaining) == (1, 0)
    refused = await limiter.acquire_stream(key, 2)
    assert isinstance(refused, Decision) and not refused.allowed
    assert refused.unit == "concurrent-requests" and header(refused, "retry-after") == "1"
    name, params = parse_sf_item(header(refused, "ratelimit-policy") or "")
    assert (name, params) == ("streams.key", {"q": 2, "qu": "concurrent-requests"})
    assert header(refused, "x-ratelimit-limit-requests") is None
    assert isinstance(await limiter.acquire_stream(Subject("key", "k_2"), 2), Lease)
    await first.release()
    await first.release()  # idempotent: frees one slot, not two
    third = await limiter.acquire_stream(key, 2)
    assert isinstance(third, Lease)
    assert isinstance(await limiter.acquire_stream(key, 2), Decision)
    async with third:
        pass
    async with second:
        pass
    assert isinstance(await limiter.acquire_stream(key, 2), Lease)


async def test_a_crashed_instance_slots_expire(make_redis_limiter: MakeLimiter) -> None:
    crashing, survivor = make_redis_limiter(lease_ttl=1.0), make_redis_limiter(lease_ttl=1.0)
    key = Subject("key", "k_crash")
    assert isinstance(await crashing.acquire_stream(key, 1), Lease)
    await asyncio.sleep(1.6)  # past the TTL: the live instance keeps refreshing its slot
    assert isinstance(await survivor.acquire_stream(key, 1), Decision)
    await crashing.close()  # dies without releasing
    assert isinstance(await survivor.acquire_stream(key, 1), Decision)
    died = time.monotonic()
    async with asyncio.timeout(5):
        while not isinstance(lease := await survivor.acquire_stream(key, 1), Lease):
            await asyncio.sleep(0.05)
    assert time.monotonic() - died < 1.2
    await lease.release()


async def test_live_slots_survive_a_redis_restart(own_redis: RedisServer) -> None:
    """Redis comes back empty; the refresher puts the slots of running streams back."""
    async with limiters(own_redis.url) as make:
        running = make(lease_ttl=0.6, redis_retry_interval=0.05)
        other = make(lease_ttl=0.6)
        lease = await running.acquire_stream(USER, 1)
        assert isinstance(lease, Lease)
        own_redis.stop()
        own_redis.start()
        await asyncio.sleep(0.5)  # a refresh every 0.2 s
        assert isinstance(await other.acquire_stream(USER, 1), Decision)
        await lease.release()
        assert isinstance(await other.acquire_stream(USER, 1), Lease)


# --- Redis away -----------------------------------------------------------------------------


def failing(own_redis: RedisServer, **settings: Any) -> RateLimiter:
    return RateLimiter.create(
        LimitSettings(redis_url=own_redis.url, redis_retry_interval=0.1, **settings)
    )


async def test_fails_open_while_redis_is_down_and_recovers(
    own_redis: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="tokenrelay.ratelimit")
    limiter = failing(own_redis)
    rules = [Rule(IP, "2/minute")]
    try:
        assert [(await limiter.check_requests(rules)).allowed for _ in range(3)] == [
            True,
            True,
            False,
        ]
        own_redis.stop()
        for _ in range(5):
            decision = await limiter.check_requests(rules)
            assert decision.allowed and decision.degraded and decision.headers() == []
            await asyncio.sleep(0.05)
        lease = await limiter.acquire_stream(USER, 1)
        assert isinstance(lease, Lease) and lease.degraded
        await lease.release()
        await asyncio.sleep(0.1)
        await limiter.charge_tokens([USER], 10, "100/minute")
        assert limiter.failures_open >= 6 and limiter.charges_lost == 1
        loud = [r for r in caplog.records if "failing OPEN" in r.getMessage()]
        assert len(loud) == 1 and loud[0].levelno == logging.ERROR  # once per 10 s, not per call

        own_redis.start()  # same port, empty: nothing was persisted
        await asyncio.sleep(0.15)
        assert [(await limiter.check_requests(rules)).allowed for _ in range(3)] == [
            True,
            True,
            False,
        ]
        assert any("is back" in r.getMessage() for r in caplog.records)
    finally:
        await limiter.close()


async def test_fails_closed_while_redis_is_down_and_recovers(own_redis: RedisServer) -> None:
    limiter = failing(own_redis, fail="closed")
    rules = [Rule(IP, "2/minute")]
    try:
        assert (await limiter.check_requests(rules)).allowed
        own_redis.stop()
        decision = await limiter.check_requests(rules)
        assert not decision.allowed and decision.unavailable
        assert decision.headers() == [(b"retry-after", b"1")]
        refused = await limiter.acquire_stream(USER, 1)
        assert isinstance(refused, Decision) and refused.unavailable
        assert (await limiter.check_tokens([USER], "100/minute")).unavailable
        assert limiter.failures_closed == 3 and limiter.failures_open == 0

        own_redis.start()
        await asyncio.sleep(0.15)
        assert [(await limiter.check_requests(rules)).allowed for _ in range(3)] == [
            True,
            True,
            False,
        ]
    finally:
        await limiter.close()


async def test_an_unresponsive_redis_costs_at_most_the_timeout(own_redis: RedisServer) -> None:
    limiter = failing(own_redis, redis_timeout=0.2)
    rules = [Rule(IP, "2/minute")]
    try:
        assert (await limiter.check_requests(rules)).allowed
        own_redis.pause()
        started = time.monotonic()
        decision = await limiter.check_requests(rules)
        assert decision.degraded and time.monotonic() - started < 0.5
        started = time.monotonic()  # and while it is known down, nobody waits at all
        assert (await limiter.check_requests(rules)).degraded
        assert time.monotonic() - started < 0.05
        own_redis.resume()
        await asyncio.sleep(0.15)
        # The call that timed out had reached Redis's socket: on resume Redis may run it and
        # count that request, which was indeed let through (failing open). Either way the
        # limit of 2 holds: one more at most.
        after = [(await limiter.check_requests(rules)).allowed for _ in range(2)]
        assert after in ([True, False], [False, False])
    finally:
        await limiter.close()


# --- headers and settings -------------------------------------------------------------------


def test_headers_speak_ietf_openai_and_anthropic() -> None:
    allowed = Decision(True, 10, 9, 41.2, None, "ip", window=60)
    names = [name for name, _ in allowed.headers()]
    assert b"retry-after" not in names
    assert parse_sf_item(header(allowed, "ratelimit-policy") or "") == ("ip", {"q": 10, "w": 60})
    assert parse_sf_item(header(allowed, "ratelimit") or "") == ("ip", {"r": 9, "t": 42})
    assert header(allowed, "x-ratelimit-limit-requests") == "10"
    assert header(allowed, "x-ratelimit-remaining-requests") == "9"
    assert header(allowed, "x-ratelimit-reset-requests") == "41.2s"
    assert header(allowed, "anthropic-ratelimit-requests-limit") == "10"
    assert header(allowed, "anthropic-ratelimit-requests-remaining") == "9"
    reset = datetime.fromisoformat(header(allowed, "anthropic-ratelimit-requests-reset") or "")
    assert reset.tzinfo is not None
    assert 40 <= (reset - datetime.now(UTC)).total_seconds() <= 43
    refused = Decision(False, 10, 0, 0.3, 0.3, "key.my route!", window=60)
    assert header(refused, "retry-after") == "1"
    assert parse_sf_item(header(refused, "ratelimit") or "")[0] == "key.my_route_"


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(0, "0s"), (0.012, "12ms"), (1, "1s"), (1.5, "1.5s"), (360, "6m0s"), (3725.5, "1h2m5.5s")],
)
def test_reset_is_a_go_duration_like_openai_sends(seconds: float, text: str) -> None:
    assert go_duration(seconds) == text


def test_settings_reject_a_limit_they_cannot_read() -> None:
    assert LimitSettings().anonymous_limit == "10/minute"
    with pytest.raises(msgspec.ValidationError, match="couldn't parse"):
        msgspec.convert({"anonymous_limit": "ten a minute"}, LimitSettings)
    with pytest.raises(msgspec.ValidationError):
        msgspec.convert({"route_limits": {"fast": "often"}}, LimitSettings)
    with pytest.raises(ValueError):
        Rule(IP, "lots")


def test_request_rules() -> None:
    settings = LimitSettings(route_limits={"fast": "30/minute"})
    assert settings.request_rules(IP, "default") == [Rule(IP, "10/minute")]
    assert settings.request_rules(IP, "fast") == [
        Rule(IP, "10/minute"),
        Rule(IP, "30/minute", "fast"),
    ]
    key = Subject("key", "k_1")
    assert settings.request_rules(key, "default") == []
    assert settings.request_rules(key, "fast", "100/minute") == [
        Rule(key, "100/minute"),
        Rule(key, "30/minute", "fast"),
    ]

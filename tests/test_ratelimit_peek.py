"""Reading the limiter without counting (``RateLimiter.peek_*``, what ``GET
/admin/v1/keys/{id}/limits`` shows): request windows, token windows and stream slots, on the
in-process store and on a real redis-server (tests/redis_server.py), and a peek never counts."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import pytest_asyncio

from tests.redis_server import RedisServer, redis_server_fixture
from tests.test_ratelimit import MakeLimiter, limiters
from tokenrelay.ratelimit import Lease, LimitSettings, RateLimiter, Rule, Subject

pytestmark = pytest.mark.asyncio(loop_scope="session")

redis_server = redis_server_fixture(scope="module")
KEY = Subject("key", "k_peek")


@pytest.fixture(params=["memory", "redis"])
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest_asyncio.fixture(loop_scope="session")
async def make_limiter(request: pytest.FixtureRequest, backend: str) -> AsyncIterator[MakeLimiter]:
    url = request.getfixturevalue("redis_server").url if backend == "redis" else None
    async with limiters(url) as make:
        yield make


async def test_request_windows_are_read_without_counting(make_limiter: MakeLimiter) -> None:
    limiter = make_limiter()
    rule = Rule(KEY, "3/minute;5/hour", "policy")
    empty = await limiter.peek_requests(rule)
    assert empty is not None
    assert [(w.seconds, w.limit, w.used, w.remaining, w.reset_after) for w in empty] == [
        (60, 3, 0, 3, 0.0),
        (3600, 5, 0, 5, 0.0),
    ]
    assert (await limiter.check_requests([rule])).allowed
    assert (await limiter.check_requests([rule])).allowed
    for _ in range(5):  # peeking many times counts nothing
        states = await limiter.peek_requests(rule)
    assert states is not None
    assert [(w.used, w.remaining) for w in states] == [(2, 1), (2, 3)]
    assert 58 < states[0].reset_after <= 60 and 3598 < states[1].reset_after <= 3600
    assert states[0].policy == "key.policy.60s" and states[0].unit == "requests"
    assert (await limiter.check_requests([rule])).allowed  # the third still fits
    assert not (await limiter.check_requests([rule])).allowed
    full = await limiter.peek_requests(rule)
    assert full is not None and [(w.used, w.remaining) for w in full] == [(3, 0), (3, 2)]


async def test_token_windows_show_the_estimate(make_limiter: MakeLimiter) -> None:
    limiter = make_limiter()
    rule = Rule(KEY, "1000/minute", "policy")
    empty = await limiter.peek_tokens(rule)
    assert empty is not None and (empty[0].used, empty[0].remaining) == (0, 1000)
    await limiter.charge_tokens([rule], 400)
    states = await limiter.peek_tokens(rule)
    assert states is not None
    assert (states[0].used, states[0].remaining, states[0].unit) == (400, 600, "tokens")
    assert 0 < states[0].reset_after <= 60
    await limiter.charge_tokens([rule], 700)
    over = await limiter.peek_tokens(rule)
    assert over is not None and (over[0].used, over[0].remaining) == (1100, 0)
    assert over[0].reset_after > 0


async def test_stream_slots_in_use(make_limiter: MakeLimiter) -> None:
    limiter = make_limiter()
    state = await limiter.peek_streams(KEY, 2, "policy")
    assert state is not None and (state.used, state.remaining, state.limit) == (0, 2, 2)
    lease = await limiter.acquire_stream(KEY, 2, "policy")
    assert isinstance(lease, Lease)
    state = await limiter.peek_streams(KEY, 2, "policy")
    assert state is not None and (state.used, state.remaining) == (1, 1)
    assert state.policy == "streams.key.policy" and state.seconds == 0
    assert await limiter.peek_streams(KEY, 2) == state._replace(  # another scope: its own
        policy="streams.key", used=0, remaining=2
    )
    await lease.release()
    state = await limiter.peek_streams(KEY, 2, "policy")
    assert state is not None and state.used == 0


async def test_a_peek_sees_another_instance_counts(redis_server: RedisServer) -> None:
    async with limiters(redis_server.url) as make:
        one, two = make(), make()
        rule = Rule(Subject("user", "u_shared"), "10/minute", "policy")
        for _ in range(4):
            assert (await one.check_requests([rule])).allowed
        states = await two.peek_requests(rule)
        assert states is not None and states[0].used == 4


async def test_a_peek_without_redis_says_unknown() -> None:
    limiter = RateLimiter.create(
        LimitSettings(redis_url="redis://127.0.0.1:1/0", redis_timeout=0.5, key_prefix="peek")
    )
    try:
        assert await limiter.peek_requests(Rule(KEY, "1/minute")) is None
        assert await limiter.peek_tokens(Rule(KEY, "1/minute")) is None
        assert await limiter.peek_streams(KEY, 1) is None
        assert limiter.failures_open == 0  # a report is no request let through
    finally:
        await limiter.close()

"""What a hung Redis costs one request: at most one ``redis_timeout``, however many of the
gateway's parts (rate limiter, circuit breaker) would each have asked it."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import aiohttp
import pytest

from tests.redis_server import RedisServer, redis_server_binary
from tests.servers import gateway_environ, gateway_server
from tests.test_failover import CLAUDE, GPT, attempts, route

pytestmark = pytest.mark.asyncio(loop_scope="session")

TIMEOUT = 1.0


@pytest.fixture
def own_redis() -> Iterator[RedisServer]:
    with RedisServer(redis_server_binary()) as server:
        yield server


async def test_a_hung_redis_costs_a_request_one_timeout_not_one_per_client(
    simulator: Any, own_redis: RedisServer
) -> None:
    environ = {
        **gateway_environ(simulator.url),
        **route("pair", [CLAUDE, GPT]),
        "TOKENRELAY_REDIS_URL": own_redis.url,
        "TOKENRELAY_LIMITS__REDIS_TIMEOUT": str(TIMEOUT),
        "TOKENRELAY_BREAKER__ENABLED": "true",
        "TOKENRELAY_USER_LIMIT": "1000/minute",  # more limits: still one wait at most
    }
    async with gateway_server(environ) as gw, aiohttp.ClientSession() as http:
        # Nothing has asked Redis yet: the limiter and the breaker both would, one after the
        # other, and each used to wait its own timeout (2 s in all with the default 1 s).
        own_redis.pause()
        try:
            started = time.monotonic()
            response = await http.post(
                gw.url + "/api/generate", json={"prompt": "hi", "route": "pair"}
            )
            body = await response.read()
            elapsed = time.monotonic() - started
            # And now that Redis is known to be down, the next request waits for nothing.
            started = time.monotonic()
            again = await http.post(
                gw.url + "/api/generate", json={"prompt": "hi", "route": "pair"}
            )
            await again.read()
            next_one = time.monotonic() - started
        finally:
            own_redis.resume()
    assert response.status == 200 and body.endswith(b"data: [DONE]\n\n")  # failing open
    assert [a[1] for a in attempts(response)] == ["outcome=ok"]
    assert elapsed < TIMEOUT + 0.6, f"{elapsed:.2f} s: Redis's timeout was waited more than once"
    assert next_one < 0.5

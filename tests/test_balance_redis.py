"""Load balancing shared through a real Redis by two gateway instances (a unique key prefix):
each sees the other's streams in flight, least_busy on one avoids the target busy on the
other, and a key cooling down after a 429 on one is passed over by the other."""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
import pytest_asyncio

from tests.servers import RunningGateway, gateway_environ, gateway_server
from tests.test_balance import deployment, grouped, strategy
from tests.test_failover import attempts, faulty, generate, route
from tests.test_scale_out import MACHINE_REDIS, machine_redis_or_skip

pytestmark = pytest.mark.asyncio(loop_scope="session")

KEYS = ("d1:gpt-5.5", "d2:gpt-5.5")


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def pair(simulator: Any) -> AsyncIterator[tuple[RunningGateway, RunningGateway]]:
    machine_redis_or_skip()
    url = simulator.url
    environ = {
        **gateway_environ(url),
        **deployment("d1", url),
        **deployment("d2", url),
        "TOKENRELAY_PROVIDERS__KEYED__KIND": "openai",
        "TOKENRELAY_PROVIDERS__KEYED__BASE_URL": url + "/v1",
        "TOKENRELAY_PROVIDERS__KEYED__API_KEYS": "shared-one,shared-two",
        "TOKENRELAY_REDIS_URL": MACHINE_REDIS,
        "TOKENRELAY_LIMITS__KEY_PREFIX": f"tokenrelay-balance-{secrets.token_hex(4)}",
        **route(
            "busy",
            [faulty(grouped(name, "pool"), tokens=40, token_delay_ms=50) for name in ("d1", "d2")],
        ),
        **strategy("busy", "pool", "least_busy"),
        **route(
            "keys",
            [
                faulty(
                    {"provider": "keyed", "model": "gpt-5.5"},
                    fault=429,
                    fault_key="shared-one",
                    retry_after=30,
                )
            ],
        ),
    }
    async with (
        gateway_server(environ) as first,
        gateway_server(environ) as second,
    ):
        yield first, second


async def counts(gw: RunningGateway) -> list[int]:
    return await gw.gateway.router.balancer.inflight.counts(KEYS)


async def eventually(gw: RunningGateway, expected: list[int], within: float = 3.0) -> list[int]:
    deadline = time.monotonic() + within
    seen = await counts(gw)
    while seen != expected and time.monotonic() < deadline:
        await asyncio.sleep(0.02)
        seen = await counts(gw)
    return seen


async def test_streams_in_flight_are_counted_across_instances(
    pair: tuple[RunningGateway, RunningGateway],
) -> None:
    first, second = pair
    async with contextlib.AsyncExitStack() as stack:
        http = await stack.enter_async_context(aiohttp.ClientSession())
        body = {"prompt": "hi", "route": "busy"}
        opened = [await http.post(first.url + "/api/generate", json=body) for _ in range(3)]
        for response in opened:
            stack.callback(response.close)
        here = await counts(first)
        assert sorted(here) == [1, 2]
        assert await eventually(second, here) == here  # the other instance sees them
        # least_busy on the second instance sends its stream to the target less busy on the first
        quiet = KEYS[here.index(1)].split(":")[0]
        response = await http.post(second.url + "/api/generate", json=body)
        stack.callback(response.close)
        assert response.headers["x-tokenrelay-provider"] == quiet
        assert await eventually(first, [2, 2]) == [2, 2]
    # every stream ended (the client left): the count drops on both
    assert await eventually(first, [0, 0]) == [0, 0]
    assert await eventually(second, [0, 0]) == [0, 0]


async def test_a_key_cooling_down_on_one_instance_is_passed_over_by_the_other(
    pair: tuple[RunningGateway, RunningGateway],
) -> None:
    first, second = pair
    for _ in range(20):  # until the rate-limited key is tried on the first instance
        response, _ = await generate(first, "keys")
        if attempts(response)[0][0] == "keyed#1/gpt-5.5":
            break
    else:
        raise AssertionError("the rate-limited key was never picked")
    await asyncio.sleep(0.6)  # another instance's cool-downs are read at most 0.5 s late
    for _ in range(5):
        response, _ = await generate(second, "keys")
        assert [a[:2] for a in attempts(response)] == [["keyed#2/gpt-5.5", "outcome=ok"]]

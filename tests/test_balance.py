"""Load balancing over real HTTP against the simulator: three deployments (provider entries on
the simulator, told apart by name) balanced by weight, by streams in flight, by recent time to
first token and by prompt prefix; several keys of one provider with a 429 on one; groups
failing over in route order."""

from __future__ import annotations

import asyncio
import random
import time
from collections import Counter
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import msgspec
import pytest
import pytest_asyncio

from tests.servers import RunningGateway, gateway_environ, gateway_server
from tests.test_failover import attempts, faulty, generate, route
from tokenrelay.simulator import RunningSimulator, SimulatorSettings, start

pytestmark = pytest.mark.asyncio(loop_scope="session")

DEPLOYMENTS = ("d1", "d2", "d3")
QUICK = {"ttft_ms": 0, "tokens": 1, "token_delay_ms": 0}  # an answer in a few milliseconds
KEYS = ("key-one", "key-two")


def deployment(name: str, url: str) -> dict[str, str]:
    """A provider entry on the simulator: one deployment of the same model."""
    prefix = f"TOKENRELAY_PROVIDERS__{name.upper()}__"
    return {
        prefix + "KIND": "openai",
        prefix + "BASE_URL": url + "/v1",
        prefix + "API_KEY": f"{name}-key",
    }


def grouped(provider: str, group: str, **fields: Any) -> dict[str, Any]:
    return {"provider": provider, "model": "gpt-5.5", "group": group} | fields


def strategy(route_name: str, group: str, name: str, **knobs: Any) -> dict[str, str]:
    prefix = f"TOKENRELAY_ROUTES__{route_name.upper()}__GROUPS__{group.upper()}__"
    return {prefix + "STRATEGY": name, **{prefix + k.upper(): str(v) for k, v in knobs.items()}}


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def sim_l1() -> AsyncIterator[RunningSimulator]:
    """A deployment of its own, whose first token the latency test slows down."""
    running = await start(SimulatorSettings(ttft_ms=5, tokens=1, token_delay_ms=0))
    try:
        yield running
    finally:
        await running.stop()


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def gw(simulator: Any, sim_l1: RunningSimulator) -> AsyncIterator[RunningGateway]:
    url = simulator.url
    rate_limited = {"fault": 429, "fault_key": KEYS[0], "retry_after": 30}
    environ = {
        **gateway_environ(url),
        **{k: v for name in DEPLOYMENTS for k, v in deployment(name, url).items()},
        **deployment("l1", sim_l1.url),
        "TOKENRELAY_PROVIDERS__KEYED__KIND": "openai",
        "TOKENRELAY_PROVIDERS__KEYED__BASE_URL": url + "/v1",
        "TOKENRELAY_PROVIDERS__KEYED__API_KEYS": ",".join(KEYS),
        **route(
            "weighted",
            [
                faulty(grouped("d1", "gpt", weight=5), **QUICK),
                faulty(grouped("d2", "gpt", weight=3), **QUICK),
                faulty(grouped("d3", "gpt", weight=2), **QUICK),
            ],
        ),
        **route(
            "busy",
            [faulty(grouped(name, "pool"), tokens=30, token_delay_ms=50) for name in DEPLOYMENTS],
        ),
        **strategy("busy", "pool", "least_busy"),
        **route(
            "fastest",
            [
                # a model of their own: no other route's answers in their statistics
                grouped("l1", "fast", model="gpt-4.1"),
                faulty(grouped("d2", "fast", model="gpt-4.1"), ttft_ms=20, tokens=1),
                faulty(grouped("d3", "fast", model="gpt-4.1"), ttft_ms=20, tokens=1),
            ],
        ),
        **strategy("fastest", "fast", "latency"),
        **route(
            "sticky",
            [faulty(grouped(name, "cache"), **QUICK) for name in DEPLOYMENTS],
            system="",
            allow_client_system="true",
        ),
        **strategy("sticky", "cache", "prefix_affinity", affinity_messages=0),
        **route("keys", [faulty({"provider": "keyed", "model": "gpt-5.5"}, **rate_limited)]),
        **route(
            "allkeys",  # another model: its keys cool down apart from the route above
            [faulty({"provider": "keyed", "model": "gpt-5.4"}, fault=429, retry_after=30)],
            retries=0,
        ),
        **route(
            "ordered",
            [
                faulty({"provider": "d3", "model": "gpt-5.5"}, fault=503),
                faulty(grouped("d1", "first"), fault=529),
                faulty(grouped("d2", "first"), fault=529),
                faulty(grouped("d3", "second"), **QUICK),
            ],
            retries=0,
        ),
    }
    async with gateway_server(environ) as running:
        yield running


def served(response: aiohttp.ClientResponse) -> str:
    return response.headers["x-tokenrelay-provider"]


async def test_weighted_1000_requests_land_within_3_points_of_5_3_2(gw: RunningGateway) -> None:
    gw.gateway.router.balancer.rng = random.Random(2026)
    counts: Counter[str] = Counter()
    async with aiohttp.ClientSession() as http:

        async def one() -> None:
            body = {"prompt": "hi", "route": "weighted"}
            async with http.post(gw.url + "/api/generate", json=body) as response:
                await response.read()
                assert response.status == 200
                counts[served(response)] += 1

        for _ in range(50):  # 20 at a time
            await asyncio.gather(*(one() for _ in range(20)))
    assert sum(counts.values()) == 1000
    for name, share in (("d1", 0.5), ("d2", 0.3), ("d3", 0.2)):
        assert abs(counts[name] / 1000 - share) <= 0.03, counts


async def test_the_attempts_head_names_the_group_and_the_pick(gw: RunningGateway) -> None:
    response, _ = await generate(gw, "weighted")
    parts = response.headers["x-tokenrelay-attempts"].split(";")
    assert parts[1] == "outcome=ok" and parts[3:] == ["group=gpt", "pick=weighted"]
    ungrouped, _ = await generate(gw, "oa")
    assert ";group=" not in ungrouped.headers["x-tokenrelay-attempts"]  # unchanged


async def test_least_busy_keeps_100_slow_streams_within_one_of_each_other(
    gw: RunningGateway,
) -> None:
    balancer = gw.gateway.router.balancer
    keys = [f"{name}:gpt-5.5" for name in DEPLOYMENTS]
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as http:

        async def open_stream() -> aiohttp.ClientResponse:
            body = {"prompt": "hi", "route": "busy"}
            return await http.post(gw.url + "/api/generate", json=body)

        responses = await asyncio.gather(*(open_stream() for _ in range(100)))
        try:
            assert all(r.status == 200 for r in responses)
            counts = await balancer.inflight.counts(keys)  # every head is in: all in flight
            assert sum(counts) == 100 and max(counts) - min(counts) <= 1, counts
            by_header = Counter(served(r) for r in responses)
            assert max(by_header.values()) - min(by_header.values()) <= 1, by_header
        finally:
            for response in responses:
                response.close()  # the client leaves: each stream ends and is released
    deadline = time.monotonic() + 5
    while await balancer.inflight.counts(keys) != [0, 0, 0] and time.monotonic() < deadline:
        await asyncio.sleep(0.02)
    assert await balancer.inflight.counts(keys) == [0, 0, 0]


async def test_latency_moves_traffic_off_a_deployment_that_became_10x_slower(
    gw: RunningGateway, sim_l1: RunningSimulator
) -> None:
    gw.gateway.router.balancer.rng = random.Random(7)
    before = Counter([served((await generate(gw, "fastest"))[0]) for _ in range(20)])
    assert before["l1"] >= 15, before  # 5 ms against 20 ms: the fastest takes most traffic
    sim_l1.settings.ttft_ms = 50  # the deployment's first token becomes 10x slower
    try:
        after = [served((await generate(gw, "fastest"))[0]) for _ in range(40)]
    finally:
        sim_l1.settings.ttft_ms = 5
    # Bound: its median over the last 10 observations turns once 5 of them are slow, so at
    # most 5 more requests stay on it (an exploring request may add one).
    moved = next(i for i, name in enumerate(after) if name != "l1")
    assert moved <= 6, after
    assert after[10:].count("l1") <= 3, after  # then most traffic is elsewhere


async def chat(gw: RunningGateway, system: str) -> aiohttp.ClientResponse:
    async with aiohttp.ClientSession() as http:
        body = {
            "model": "sticky",
            "stream": True,
            "messages": [{"role": "system", "content": system}, {"role": "user", "content": "hi"}],
        }
        async with http.post(gw.url + "/v1/chat/completions", json=body) as response:
            await response.read()
            return response


async def test_prefix_affinity_keeps_a_system_prompt_on_one_deployment_until_it_is_unhealthy(
    gw: RunningGateway,
) -> None:
    prompts = [f"You are assistant number {i}." for i in range(8)]
    homes = {}
    for prompt in prompts:
        seen = {served(await chat(gw, prompt)) for _ in range(4)}
        assert len(seen) == 1, (prompt, seen)  # the same prefix, the same deployment
        homes[prompt] = seen.pop()
    assert len(set(homes.values())) >= 2  # different prefixes spread
    # The home of the first prompt goes unhealthy: its circuit opens (the breaker is off in
    # these tests' environment, so it is turned on for this gateway here).
    breaker = gw.gateway.router.breaker
    down = homes[prompts[0]]
    off = breaker.settings
    breaker.settings = msgspec.structs.replace(off, enabled=True)
    try:
        for _ in range(off.failures):
            await breaker.failure(f"{down}:gpt-5.5")
        moved = {served(await chat(gw, prompts[0])) for _ in range(3)}
        assert len(moved) == 1 and down not in moved
        for prompt in prompts[1:]:
            now = served(await chat(gw, prompt))
            assert now == homes[prompt] if homes[prompt] != down else now != down
    finally:
        breaker.settings = off


async def test_a_429_on_one_key_moves_the_next_request_to_the_other_at_once(
    gw: RunningGateway,
) -> None:
    gw.gateway.router.balancer.rng = random.Random(1)
    hit = None
    for _ in range(20):  # until the weighted pick is the rate-limited key
        started = time.monotonic()
        response, _ = await generate(gw, "keys")
        if attempts(response)[0][0] == "keyed#1/gpt-5.5":
            hit = response, time.monotonic() - started
            break
    assert hit is not None
    response, elapsed = hit
    assert [a[:2] for a in attempts(response)] == [
        ["keyed#1/gpt-5.5", "outcome=rate_limit"],
        ["keyed#2/gpt-5.5", "outcome=ok"],
    ]
    assert elapsed < 1.0  # no wait for its retry-after of 30 s
    for _ in range(5):  # key 1 cools down: every next request goes to key 2 first
        response, _ = await generate(gw, "keys")
        assert [a[:2] for a in attempts(response)] == [["keyed#2/gpt-5.5", "outcome=ok"]]


async def test_when_every_key_cools_down_the_client_hears_429_without_an_upstream_call(
    gw: RunningGateway, simulator: Any
) -> None:
    first, _ = await generate(gw, "allkeys")
    assert first.status == 429
    simulator.reset_stats()
    second, body = await generate(gw, "allkeys")
    assert second.status == 429 and b"rate limited" in body
    assert sorted(a[1] for a in attempts(second)) == ["outcome=cooling_down"] * 2
    assert 25 < float(second.headers["retry-after"]) <= 30
    assert simulator.stats()["requests"] == {}  # passed over, never called


async def test_groups_fail_over_in_route_order(gw: RunningGateway) -> None:
    response, body = await generate(gw, "ordered")
    assert response.status == 200 and body.endswith(b"data: [DONE]\n\n")
    parts = [part.split(";") for part in response.headers["x-tokenrelay-attempts"].split(", ")]
    assert parts[0][:2] == ["d3/gpt-5.5", "outcome=overloaded"] and len(parts[0]) == 3
    assert sorted(p[0] for p in parts[1:3]) == ["d1/gpt-5.5", "d2/gpt-5.5"]
    assert [p[3:] for p in parts[1:3]] == [
        ["group=first", "pick=weighted"],
        ["group=first", "pick=fallback"],
    ]
    assert parts[3][:2] == ["d3/gpt-5.5", "outcome=ok"]
    assert parts[3][3:] == ["group=second", "pick=weighted"]


async def test_metrics_show_the_picks_and_the_streams_in_flight(gw: RunningGateway) -> None:
    await generate(gw, "weighted")
    async with aiohttp.ClientSession() as http, http.get(gw.url + "/metrics") as response:
        page = await response.text()
    assert (
        'tokenrelay_balance_picks_total{route="weighted",group="gpt",target="d1",strategy="weighted"}'
        in page
    )
    assert (
        'tokenrelay_balance_picks_total{route="ordered",group="second",target="d3",strategy="weighted"}'
        in page
    )
    assert 'tokenrelay_balance_inflight_streams{target="d1:gpt-5.5"} 0' in page

"""Hedging over real HTTP: a slow primary is raced by the next target, the first to produce
content is served and the other's upstream connection is closed; plus the race and the latency
statistics on their own."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
import pytest_asyncio

from tests.servers import RunningGateway, gateway_environ, gateway_server
from tests.test_failover import CLAUDE, GPT, attempts, faulty, generate, route
from tokenrelay.hedging import Contender, Outcome, race
from tokenrelay.model import Error

pytestmark = pytest.mark.asyncio(loop_scope="session")


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def gw(simulator: Any) -> AsyncIterator[RunningGateway]:
    environ = {
        **gateway_environ(simulator.url),
        **route("slowprimary", [faulty(CLAUDE, ttft_ms=3000), GPT], hedge="true", hedge_delay=0.1),
        **route(
            "slowbackup",
            [faulty(CLAUDE, ttft_ms=400), faulty(GPT, ttft_ms=3000)],
            hedge="true",
            hedge_delay=0.1,
        ),
        **route("fastprimary", [CLAUDE, GPT], hedge="true", hedge_delay=0.5),
        **route(
            "learned",
            [faulty(CLAUDE, ttft_ms=3000), GPT],
            hedge="true",
            first_token_timeout=2,
        ),
        **route(
            "bothfail",
            [faulty(CLAUDE, fault="hang_before_first_byte"), faulty(GPT, fault=500)],
            hedge="true",
            hedge_delay=0.1,
            first_token_timeout=0.5,
            retries=0,
        ),
        **route("nohedge", [faulty(CLAUDE, ttft_ms=3000), GPT], first_token_timeout=0.4),
    }
    async with gateway_server(environ) as running:
        yield running


async def stats(simulator: Any, reset: bool = False) -> dict[str, Any]:
    async with aiohttp.ClientSession() as http:
        if reset:
            await http.post(simulator.url + "/stats/reset")
        async with http.get(simulator.url + "/stats") as response:
            data: dict[str, Any] = await response.json()
            return data


async def disconnects(simulator: Any, path: str, within: float = 2.0) -> list[dict[str, Any]]:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        found = [d for d in (await stats(simulator))["disconnects"] if d["path"] == path]
        if found:
            return found
        await asyncio.sleep(0.01)
    return []


async def test_a_slow_primary_is_hedged_and_its_connection_closed(
    gw: RunningGateway, simulator: Any
) -> None:
    await stats(simulator, reset=True)
    started = time.monotonic()
    response, body = await generate(gw, "slowprimary")
    elapsed = time.monotonic() - started
    assert response.status == 200 and body.endswith(b"data: [DONE]\n\n")
    assert response.headers["x-tokenrelay-provider"] == "openai"
    assert [a[:2] for a in attempts(response)] == [
        ["anthropic/claude-sonnet-5-5", "outcome=hedged_out"],
        ["openai/gpt-5.5", "outcome=ok"],
    ]
    assert elapsed < 1.5  # the hedge delay and the backup's answer, not the primary's 3 s
    closed = await disconnects(simulator, "/v1/messages")
    assert closed, "the losing primary's upstream connection was never closed"


async def test_the_primary_wins_when_the_hedge_is_slower(
    gw: RunningGateway, simulator: Any
) -> None:
    await stats(simulator, reset=True)
    response, _ = await generate(gw, "slowbackup")
    assert response.headers["x-tokenrelay-provider"] == "anthropic"
    assert [a[:2] for a in attempts(response)] == [
        ["openai/gpt-5.5", "outcome=hedged_out"],
        ["anthropic/claude-sonnet-5-5", "outcome=ok"],
    ]
    assert await disconnects(simulator, "/v1/chat/completions"), "the hedge kept generating"


async def test_no_hedge_starts_when_the_primary_answers_in_time(
    gw: RunningGateway, simulator: Any
) -> None:
    await stats(simulator, reset=True)
    response, _ = await generate(gw, "fastprimary")
    assert [a[:2] for a in attempts(response)] == [["anthropic/claude-sonnet-5-5", "outcome=ok"]]
    assert (await stats(simulator))["requests"] == {"/v1/messages": 1}  # no call to the backup


async def test_the_delay_follows_the_primarys_observed_percentile(gw: RunningGateway) -> None:
    # Twenty observed first tokens at 50 ms (as earlier requests, or other instances, saw them).
    for _ in range(20):
        gw.gateway.router.latency.observe("anthropic:claude-sonnet-5-5", 0.05)
    response, _ = await generate(gw, "learned")
    first = response.headers["x-tokenrelay-attempts"].split(", ")[0]
    hedged_after = float(first.rsplit(";ms=", 1)[1])
    assert response.headers["x-tokenrelay-provider"] == "openai"
    assert attempts(response)[0][1] == "outcome=hedged_out"
    # The backup started at the 50 ms p95, not at the 1 s fallback of half the deadline.
    assert hedged_after < 900


async def test_when_both_fail_the_client_hears_about_both(gw: RunningGateway) -> None:
    response, body = await generate(gw, "bothfail")
    assert response.status in (503, 504)
    outcomes = [a[1] for a in attempts(response)]
    assert "outcome=timeout" in outcomes and "outcome=api_error" in outcomes
    assert b"anthropic" in body and b"openai" in body


async def test_without_hedging_the_primary_is_waited_for_until_its_deadline(
    gw: RunningGateway,
) -> None:
    started = time.monotonic()
    response, _ = await generate(gw, "nohedge")
    assert response.headers["x-tokenrelay-provider"] == "openai"
    assert [a[1] for a in attempts(response)] == ["outcome=timeout", "outcome=ok"]
    assert time.monotonic() - started >= 0.4  # the whole deadline: no hedge shortcut


# --- the race and the statistics on their own ---------------------------------------------------


class _Closable:
    def __init__(self) -> None:
        self.closed = False

    async def aclose(self) -> None:
        self.closed = True


def _after(seconds: float, ok: bool, streams: list[_Closable]) -> Contender[str]:
    async def start() -> Outcome:
        await asyncio.sleep(seconds)
        if not ok:
            return None, Error("api_error", "failed", 500)
        stream = _Closable()
        streams.append(stream)
        return (stream, []), None

    return Contender(f"{seconds}:{ok}", start)


async def collect(contenders: list[Contender[str]], delay: float) -> list[tuple[str, bool]]:
    return [(r.key, r.stream is not None) async for r in race(contenders, delay)]


async def test_race_serves_the_first_stream_and_closes_a_late_one() -> None:
    streams: list[_Closable] = []
    # The first is slow, so the backup starts after 50 ms and wins; the first is cancelled
    # before it ever produced a stream.
    results = await collect([_after(0.3, True, streams), _after(0.0, True, streams)], 0.05)
    assert results == [("0.0:True", True)]
    assert len(streams) == 1 and not streams[0].closed  # the winner is left open


async def test_race_starts_the_backup_at_once_when_the_first_fails() -> None:
    started = time.perf_counter()
    results = await collect([_after(0.0, False, []), _after(0.0, True, [])], 10.0)
    assert results == [("0.0:False", False), ("0.0:True", True)]
    assert time.perf_counter() - started < 1.0  # did not wait out the 10 s delay


async def test_race_closes_a_stream_that_arrives_while_the_loser_is_cancelled() -> None:
    streams: list[_Closable] = []
    contenders = [_after(0.05, True, streams), _after(0.05, True, streams)]
    async for result in race(contenders, 0.0):
        assert result.stream is not None
        assert len(result.cancelled) == 1
    assert sum(not s.closed for s in streams) == 1  # only the winner's stream stays open


async def test_closing_the_race_early_cancels_what_runs() -> None:
    cancelled = asyncio.Event()

    async def forever() -> Outcome:
        try:
            await asyncio.sleep(60)
        finally:
            cancelled.set()
        raise AssertionError("unreachable")

    results = race([Contender("slow", forever), _after(0.0, False, [])], 0.0)
    first = await anext(results)
    assert first.error is not None
    await results.aclose()
    assert cancelled.is_set()

"""How response-cache hits show to an operator, end to end (gateway -> wire-exact simulator over
loopback): ``/metrics`` counts a hit under ``provider="cache"`` so the provider's time to first
token and tokens stay its own, with a semantic hit's similarity and the saved cost in families of
their own; the usage dashboard's data (``/v1/usage/dashboard``, JSON and CSV) shows the hits and
savings per group and in total, and its latency table keeps hits apart from the provider."""

from __future__ import annotations

import asyncio
import csv
import io
import time
from collections.abc import AsyncIterator
from decimal import Decimal
from typing import Any

import aiohttp
import pytest
import pytest_asyncio

from tests.servers import RunningGateway, gateway_server
from tests.test_cache import ask, body_for, stored
from tests.test_cache_semantic import semantic_environ
from tests.test_metrics import Family, histogram, parse, value
from tokenrelay.simulator import RunningSimulator, SimulatorSettings, start

pytestmark = pytest.mark.asyncio(loop_scope="session")

TTFT = "gen_ai_server_time_to_first_token_seconds"
OP = {"gen_ai_operation_name": "chat", "gen_ai_request_model": "claude-sonnet-5-5"}


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def sim() -> AsyncIterator[RunningSimulator]:
    running = await start(SimulatorSettings(ttft_ms=20, tokens=12, token_delay_ms=1))
    try:
        yield running
    finally:
        await running.stop()


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def gw(
    sim: RunningSimulator, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[RunningGateway]:
    scratch = tmp_path_factory.mktemp("cache-observe")
    async with gateway_server(semantic_environ(sim.url, f"sqlite:///{scratch}/l.db")) as running:
        await running.gateway.meter.pricer.load()  # type: ignore[union-attr]
        yield running


@pytest_asyncio.fixture(loop_scope="session")
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


async def metrics(http: aiohttp.ClientSession, gw: RunningGateway) -> dict[str, Family]:
    async with http.get(gw.url + "/metrics") as response:
        assert response.status == 200
        return parse(await response.text())


async def served(
    gw: RunningGateway, http: aiohttp.ClientSession, route: str, question: str
) -> tuple[str, str]:
    """Ask once on ``route`` and wait for its record (metrics are counted by then): the cache
    header and the request id."""
    response, answer = await ask(gw, http, "anthropic", body_for("anthropic", route, question))
    assert response.status == 200 and answer.text
    request_id = response.headers["x-request-id"]
    await gw.wait_record(request_id)
    return response.headers["x-tokenrelay-cache"], request_id


async def test_a_hit_is_the_caches_not_the_providers(
    gw: RunningGateway, http: aiohttp.ClientSession
) -> None:
    before = await metrics(http, gw)
    result, _ = await served(gw, http, "cached", "How tall is Mont Blanc?")
    assert result == "miss"
    await stored(gw)
    after_miss = await metrics(http, gw)
    provider = histogram(after_miss, TTFT, **OP, gen_ai_provider_name="anthropic")
    assert provider[0] == histogram(before, TTFT, **OP, gen_ai_provider_name="anthropic")[0] + 1
    assert provider[1] >= 0.02  # the simulator's first token takes 20 ms

    result, request_id = await served(gw, http, "cached", "How tall is Mont Blanc?")
    assert result == "hit"
    record = await gw.wait_record(request_id)
    assert record.saved_nanousd and record.cost_nanousd == 0
    after_hit = await metrics(http, gw)
    # the provider's latency and tokens did not move; the cache's did
    assert histogram(after_hit, TTFT, **OP, gen_ai_provider_name="anthropic") == provider
    cache_ttft = histogram(after_hit, TTFT, **OP, gen_ai_provider_name="cache")
    assert cache_ttft[0] == histogram(after_miss, TTFT, **OP, gen_ai_provider_name="cache")[0] + 1
    tokens = {"model": "claude-sonnet-5-5", "type": "output"}
    name = "tokenrelay_tokens_total"
    assert value(after_hit, name, provider="anthropic", **tokens) == value(
        after_miss, name, provider="anthropic", **tokens
    )
    assert value(after_hit, name, provider="cache", **tokens) - value(
        after_miss, name, provider="cache", **tokens
    ) == (record.usage.output_tokens or 0)
    # the saving, in dollars, as metering priced it
    saved = "tokenrelay_cache_saved_usd_total"
    gained = value(after_hit, saved, route="cached") - value(after_miss, saved, route="cached")
    assert gained == pytest.approx(record.saved_nanousd / 1e9)
    assert histogram(after_hit, "tokenrelay_cache_similarity", route="cached") == (0, 0)


async def test_a_semantic_hit_records_its_similarity(
    gw: RunningGateway, http: aiohttp.ClientSession
) -> None:
    result, _ = await served(gw, http, "near", "What is the capital of Italy?")
    assert result == "miss"
    await stored(gw)
    result, request_id = await served(gw, http, "near", "what is the capital of italy")
    assert result == "hit"
    similarity = (await gw.wait_record(request_id)).cache_similarity
    assert similarity is not None and similarity >= 0.95
    families = await metrics(http, gw)
    count, total = histogram(families, "tokenrelay_cache_similarity", route="near")
    assert count == 1 and total == pytest.approx(min(similarity, 1.0))
    buckets = {
        labels["le"]: v
        for sample, labels, v in families["tokenrelay_cache_similarity"].samples
        if sample.endswith("_bucket") and labels.get("route") == "near"
    }
    assert buckets["0.9"] == 0 and buckets["1.0"] == 1  # bounded: finest near 1


async def dashboard(http: aiohttp.ClientSession, gw: RunningGateway, hits: int) -> dict[str, Any]:
    """The dashboard's data by route, once the ledger holds ``hits`` hits (rows are written
    in the background)."""
    deadline = time.monotonic() + 10
    while True:
        async with http.get(gw.url + "/v1/usage/dashboard?since=1d&by=route") as response:
            assert response.status == 200
            body: dict[str, Any] = await response.json()
        if body["total"]["cache_hits"] >= hits or time.monotonic() > deadline:
            return body
        await asyncio.sleep(0.05)


async def test_the_dashboard_shows_hits_and_savings(
    gw: RunningGateway, http: aiohttp.ClientSession
) -> None:
    await served(gw, http, "cached", "Name three rivers.")
    await stored(gw)
    _, first = await served(gw, http, "cached", "Name three rivers.")
    _, second = await served(gw, http, "cached", "Name three rivers.")
    records = [await gw.wait_record(request_id) for request_id in (first, second)]
    hits = [record for record in gw.records if record.cache == "hit"]
    assert all(record in hits for record in records)
    body = await dashboard(http, gw, len(hits))
    total = body["total"]
    assert total["cache_hits"] == len(hits)
    assert total["saved_nanousd"] == sum(record.saved_nanousd or 0 for record in hits)
    assert Decimal(total["saved_usd"]) == Decimal(total["saved_nanousd"]).scaleb(-9)
    routes = {group["name"]: group["total"] for group in body["groups"]}
    cached = [record for record in hits if record.route == "cached"]
    assert routes["cached"]["cache_hits"] == len(cached)
    assert routes["cached"]["saved_nanousd"] == sum(r.saved_nanousd or 0 for r in cached)
    # a hit's day sums carry it too, and a day without any has zeros
    daily = [day["cache_hits"] for day in body["groups"][0]["daily"]]
    assert sum(daily) == body["groups"][0]["total"]["cache_hits"]
    # time to first token: hits are the provider "cache", the upstream's rows its own
    ttft = {item["provider"]: item for item in body["ttft"]}
    answered = [r for r in gw.records if r.ttft_ms is not None and r.outcome == "completed"]
    upstream = [r for r in answered if r.cache != "hit" and r.provider == "anthropic"]
    assert ttft["cache"]["requests"] == len(hits)
    assert ttft["anthropic"]["requests"] == len(upstream)
    assert ttft["anthropic"]["p50_ms"] >= 20  # the simulator's first token: a lower bound only

    async with http.get(gw.url + "/v1/usage/dashboard?since=1d&by=route&format=csv") as response:
        rows = list(csv.DictReader(io.StringIO(await response.text())))
    assert rows and {"cache_hits", "saved_usd"} <= set(rows[0])
    assert sum(int(row["cache_hits"]) for row in rows) == len(hits)
    saved = sum(Decimal(row["saved_usd"]) for row in rows)
    assert saved == Decimal(total["saved_usd"])

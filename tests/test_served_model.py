"""Cost is priced on the model that served, not only the one asked for (issue 13).

An upstream may answer with another model than the route asked for (an alias resolved to a dated
snapshot): the ledger keeps both names, prices the served one when the price table knows it
(else the requested one) and says which it priced; reports group by either. The simulator's
``x-sim-served-model`` knob makes the upstream name another model, over real HTTP.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import pytest_asyncio

from tests.servers import RunningGateway, gateway_environ, gateway_server
from tests.test_failover import CLAUDE, GPT, faulty, route
from tests.test_metering import ledger_row
from tests.test_reports import run
from tokenrelay.gate.keys import KeyStore
from tokenrelay.metering import LedgerRow
from tokenrelay.metering.meter import UNPRICED, Meter
from tokenrelay.metering.pricing import Pricer, PriceSettings
from tokenrelay.metering.reports import make_query, usage
from tokenrelay.model import Usage

pytestmark = pytest.mark.asyncio(loop_scope="session")

SNAPSHOT = "claude-sonnet-4-5-20250929"  # genai-prices knows it as claude-sonnet-4-5
UNKNOWN = "claude-experimental-7"  # a name no price table has
MINI = "gpt-5-mini-2025-08-07"  # genai-prices knows it as gpt-5-mini


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def gw(
    simulator: Any, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[RunningGateway]:
    scratch = tmp_path_factory.mktemp("served")
    env = {
        **gateway_environ(simulator.url),
        "TOKENRELAY_DATABASE_URL": f"sqlite:///{scratch}/ledger.db",
        **route("snap", [faulty(CLAUDE, served_model=SNAPSHOT)]),
        **route("unknown", [faulty(CLAUDE, served_model=UNKNOWN)]),
        **route("mini", [faulty(GPT, served_model=MINI)]),
        **route(
            "early",
            [
                faulty(CLAUDE, fault="error_before_content", served_model=SNAPSHOT),
                faulty(GPT, served_model=MINI),
            ],
            retries=0,
        ),
    }
    async with gateway_server(env) as running:
        await running.gateway.meter.pricer.load()  # type: ignore[union-attr]
        yield running


def nanousd(provider: str, model: str, usage: Usage, created_at: float) -> int:
    from tokenrelay.metering import pricing

    pricer = Pricer(PriceSettings())
    pricer._package = pricing._load_package()
    cost = pricer.cost(provider, model, usage, when=datetime.fromtimestamp(created_at, UTC))
    assert cost is not None and cost > 0
    return pricer.nanousd(cost)


async def ask(gw: RunningGateway, path: str, body: dict[str, Any]) -> str:
    async with aiohttp.ClientSession() as http:
        response = await http.post(gw.url + path, json=body, headers={"x-sim-tokens": "40"})
        await response.read()
        assert response.status == 200
    return response.headers["x-request-id"]


def messages(model: str, *, stream: bool = True) -> dict[str, Any]:
    return {
        "model": model,
        "max_tokens": 100,
        "stream": stream,
        "messages": [{"role": "user", "content": "price me on what ran"}],
    }


@pytest.mark.parametrize("stream", [True, False])
async def test_an_anthropic_snapshot_is_priced_as_the_model_that_served(
    gw: RunningGateway, stream: bool
) -> None:
    request_id = await ask(gw, "/v1/messages", messages("snap", stream=stream))
    record = await gw.wait_record(request_id)
    row = await ledger_row(gw, request_id)
    assert (row["model"], row["served_model"]) == ("claude-sonnet-5-5", SNAPSHOT)
    assert row["priced_model"] == SNAPSHOT and row["priced"] == 1
    served = nanousd("anthropic", "claude-sonnet-4-5", record.usage, row["created_at"])
    requested = nanousd("anthropic", "claude-sonnet-5-5", record.usage, row["created_at"])
    assert served != requested  # the test can tell one price from the other
    assert row["cost_nanousd"] == served


async def test_an_openai_chunk_model_is_priced_as_served(gw: RunningGateway) -> None:
    body = {**messages("mini"), "stream_options": {"include_usage": True}}
    request_id = await ask(gw, "/v1/chat/completions", body)
    record = await gw.wait_record(request_id)
    row = await ledger_row(gw, request_id)
    assert (row["model"], row["served_model"]) == ("gpt-5.5", "gpt-5-mini-2025-08-07")
    assert row["priced_model"] == "gpt-5-mini-2025-08-07"
    assert row["cost_nanousd"] == nanousd("openai", "gpt-5-mini", record.usage, row["created_at"])


async def test_a_failed_attempt_is_priced_on_the_model_that_served_it(gw: RunningGateway) -> None:
    async with aiohttp.ClientSession() as http:
        response = await http.post(
            gw.url + "/api/generate", json={"prompt": "hi", "route": "early"}
        )
        await response.read()
    request_id = response.headers["x-request-id"]
    record = await gw.wait_record(request_id)
    row = await ledger_row(gw, request_id)
    failed = record.attempts[0]
    assert failed.usage is not None and failed.usage.input_tokens and failed.usage.model == SNAPSHOT
    detail = json.loads(row["attempts_detail"])
    assert detail[0]["served_model"] == SNAPSHOT and "model" not in detail[0]["usage"]
    assert (row["model"], row["served_model"], row["priced_model"]) == ("gpt-5.5", MINI, MINI)
    both = nanousd("anthropic", "claude-sonnet-4-5", failed.usage, row["created_at"])
    both += nanousd("openai", "gpt-5-mini", record.usage, row["created_at"])
    assert abs(row["cost_nanousd"] - both) <= 1  # each part rounded on its own in the test


async def test_a_served_model_without_a_price_is_priced_as_requested(gw: RunningGateway) -> None:
    request_id = await ask(gw, "/v1/messages", messages("unknown"))
    record = await gw.wait_record(request_id)
    row = await ledger_row(gw, request_id)
    assert (row["served_model"], row["priced_model"]) == (UNKNOWN, "claude-sonnet-5-5")
    assert row["priced"] == 1
    assert row["cost_nanousd"] == nanousd(
        "anthropic", "claude-sonnet-5-5", record.usage, row["created_at"]
    )


async def test_the_same_model_served_is_priced_on_it(gw: RunningGateway) -> None:
    request_id = await ask(gw, "/v1/messages", messages("an"))
    row = await ledger_row(gw, request_id)
    assert row["model"] == row["served_model"] == row["priced_model"] == "claude-sonnet-5-5"


async def test_reports_and_the_dashboard_group_by_served_or_requested_model(
    gw: RunningGateway,
) -> None:
    ids = [await ask(gw, "/v1/messages", messages(name)) for name in ("snap", "unknown", "an")]
    for request_id in ids:
        await ledger_row(gw, request_id)
    db = await gw.gateway.gate.database()
    served = await usage(db, make_query("1h", by="model", now=_now()))
    groups = {row.group for row in served.rows}
    assert {
        f"anthropic:{SNAPSHOT}",
        f"anthropic:{UNKNOWN}",
        "anthropic:claude-sonnet-5-5",
    } <= groups
    requested = await usage(db, make_query("1h", by="requested_model", now=_now()))
    assert "anthropic:claude-sonnet-5-5" in {row.group for row in requested.rows}
    assert f"anthropic:{SNAPSHOT}" not in {row.group for row in requested.rows}
    assert served.total.cost_nanousd == requested.total.cost_nanousd  # grouped, not repriced

    filtered = await usage(
        db, make_query("1h", by="route", filters={"model": SNAPSHOT}, now=_now())
    )
    assert {row.group for row in filtered.rows} == {"snap"}
    asked = make_query(
        "1h", by="route", filters={"requested_model": "claude-sonnet-5-5"}, now=_now()
    )
    routes = {row.group for row in (await usage(db, asked)).rows}
    assert {"snap", "unknown", "an"} <= routes and not routes & {"mini", "oa"}

    # Over HTTP: the dashboard (open while no key exists), then /v1/usage with an admin key.
    async with aiohttp.ClientSession() as http:
        for by, name in (("model", f"anthropic:{SNAPSHOT}"), ("requested_model", None)):
            async with http.get(f"{gw.url}/v1/usage/dashboard?since=1d&by={by}") as response:
                assert response.status == 200
                body = await response.json()
            names = {group["name"] for group in body["groups"]}
            assert body["by"] == by and (name is None or name in names)
            if name is None:
                assert f"anthropic:{SNAPSHOT}" not in names
        _, admin = await KeyStore(db).create("ops", "acme", admin=True)
        headers = {"authorization": f"Bearer {admin}"}
        url = f"{gw.url}/v1/usage?since=1d&by=requested_model"
        async with http.get(url, headers=headers) as response:
            assert response.status == 200
            rows = json.loads(await response.read())["rows"]
        assert "anthropic:claude-sonnet-5-5" in {row["requested_model"] for row in rows}

    # And on the command line.
    database = gw.gateway.settings.database_url
    for by, name in (("model", SNAPSHOT), ("requested_model", "claude-sonnet-5-5")):
        result = await asyncio.to_thread(
            run,
            "usage",
            "--database-url",
            database,
            "--since",
            "1d",
            "--by",
            by,
            "--format",
            "json",
        )
        assert result.exit_code == 0, result.output
        groups = {row[by] for row in json.loads(result.stdout)["rows"]}
        assert f"anthropic:{name}" in groups
        assert by == "model" or f"anthropic:{SNAPSHOT}" not in groups


async def test_rows_priced_after_the_table_loads_use_the_served_model(tmp_path: Path) -> None:
    """A row spooled before the price table loaded is priced by the writer's hook, alike."""
    pricer = Pricer(PriceSettings())
    meter = Meter(ledger=None, pricer=pricer, provider_kinds={})  # type: ignore[arg-type]
    row = LedgerRow(
        request_id="r1",
        created_at=1_780_000_000.0,
        route="snap",
        provider="anthropic",
        model="claude-sonnet-5-5",
        served_model=SNAPSHOT,
        status=200,
        outcome="completed",
        input_tokens=1000,
        output_tokens=500,
        cost_nanousd=UNPRICED,
        duration_ms=10.0,
    )
    await meter.price_pending([row])
    usage = Usage(input_tokens=1000, output_tokens=500, cache_read_tokens=0, cache_write_tokens=0)
    assert row.priced_model == SNAPSHOT and row.priced
    assert row.cost_nanousd == nanousd("anthropic", "claude-sonnet-4-5", usage, row.created_at)


def _now() -> float:
    import time

    return time.time()

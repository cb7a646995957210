"""Metering end to end: a request through the gateway lands in the ledger with the upstream's
exact token counts and the exact price from the pricing data; an aborted stream is estimated and
marked so; a failed attempt's reported tokens are metered with the request; the audit line never
holds the prompt."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import msgspec
import pytest
import pytest_asyncio

from tests.pg_server import PostgresServer, postgres_server_fixture
from tests.servers import RunningGateway, gateway_environ, gateway_server
from tests.test_failover import CLAUDE, GPT, faulty, route
from tokenrelay.metering.pricing import Pricer, PriceSettings
from tokenrelay.model import Usage

pytestmark = pytest.mark.asyncio(loop_scope="session")


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def gw(
    simulator: Any, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[RunningGateway]:
    scratch = tmp_path_factory.mktemp("metering")
    env = {
        **gateway_environ(simulator.url),
        "TOKENRELAY_DATABASE_URL": f"sqlite:///{scratch}/ledger.db",
        "TOKENRELAY_AUDIT__DESTINATION": str(scratch / "audit.jsonl"),
        "TOKENRELAY_AUDIT__SECRET": "a-long-enough-audit-secret",
        **route("early", [faulty(CLAUDE, fault="error_before_content"), GPT], retries=0),
    }
    async with gateway_server(env) as running:
        await running.gateway.meter.pricer.load()  # type: ignore[union-attr]
        yield running


async def ledger_row(gw: RunningGateway, request_id: str) -> dict[str, Any]:
    from tokenrelay.store import DatabaseError

    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            db = await gw.gateway.gate.database()
            row = await db.fetch_one("SELECT * FROM ledger WHERE request_id = ?", (request_id,))
        except DatabaseError:  # not open yet (a database down at start-up)
            row = None
        if row is not None:
            return row
        await asyncio.sleep(0.05)
    raise AssertionError(f"request {request_id} never reached the ledger")


def expected_nanousd(provider: str, model: str, usage: Usage, created_at: float) -> int:
    from tokenrelay.metering import pricing

    pricer = Pricer(PriceSettings())
    pricer._package = pricing._load_package()  # the same offline table the gateway loaded
    cost = pricer.cost(provider, model, usage, when=datetime.fromtimestamp(created_at, UTC))
    assert cost is not None and cost > 0
    return pricer.nanousd(cost)


async def test_a_completed_stream_is_metered_with_the_upstreams_numbers(gw: RunningGateway) -> None:
    async with aiohttp.ClientSession() as http:
        response = await http.post(
            gw.url + "/v1/messages",
            json={
                "model": "an",
                "max_tokens": 100,
                "stream": True,
                "messages": [{"role": "user", "content": "hello there"}],
            },
            headers={"x-sim-cache-read-tokens": "3", "x-sim-tokens": "12"},
        )
        await response.read()
    request_id = response.headers["x-request-id"]
    record = await gw.wait_record(request_id)
    row = await ledger_row(gw, request_id)
    usage = record.usage
    assert usage.output_tokens == 12 and usage.cache_read_tokens == 3
    assert (row["input_tokens"], row["output_tokens"], row["cache_read_tokens"]) == (
        usage.input_tokens,
        12,
        3,
    )
    assert row["estimated"] == 0 and row["priced"] == 1
    assert row["cost_nanousd"] == expected_nanousd(
        "anthropic", "claude-sonnet-5-5", usage, row["created_at"]
    )


async def test_an_aborted_stream_is_estimated_and_marked(gw: RunningGateway) -> None:
    async with aiohttp.ClientSession() as http:
        response = await http.post(
            gw.url + "/v1/chat/completions",
            json={
                "model": "slow",
                "stream": True,
                "messages": [{"role": "user", "content": "tell me a long story"}],
            },
        )
        seen = 0
        async for chunk in response.content.iter_any():
            seen += chunk.count(b'"content":"')
            if seen >= 5:
                break
        response.close()
    request_id = response.headers["x-request-id"]
    row = await ledger_row(gw, request_id)
    assert row["outcome"] == "aborted" and row["estimated"] == 1
    assert row["input_tokens"] > 0 and row["output_tokens"] >= 5
    assert row["priced"] == 1 and row["cost_nanousd"] > 0


async def test_a_failed_attempts_reported_tokens_are_metered_with_the_request(
    gw: RunningGateway,
) -> None:
    async with aiohttp.ClientSession() as http:
        response = await http.post(
            gw.url + "/api/generate", json={"prompt": "hi", "route": "early"}
        )
        await response.read()
    request_id = response.headers["x-request-id"]
    record = await gw.wait_record(request_id)
    row = await ledger_row(gw, request_id)
    failed = record.attempts[0]
    assert failed.usage is not None and failed.usage.input_tokens
    served = record.usage
    assert row["input_tokens"] == failed.usage.input_tokens + (served.input_tokens or 0)
    detail = msgspec.json.decode(row["attempts_detail"])
    assert detail[0]["usage"]["input_tokens"] == failed.usage.input_tokens
    both = expected_nanousd("anthropic", "claude-sonnet-5-5", failed.usage, row["created_at"])
    both += expected_nanousd("openai", "gpt-5.5", served, row["created_at"])
    assert abs(row["cost_nanousd"] - both) <= 1  # each part rounded on its own in the test


async def test_the_audit_line_has_a_masked_prefix_and_a_keyed_hash_never_the_prompt(
    gw: RunningGateway,
) -> None:
    prompt = "mail me at jane.doe@example.com about the launch plan details please"
    async with aiohttp.ClientSession() as http:
        response = await http.post(gw.url + "/api/generate", json={"prompt": prompt, "route": "an"})
        await response.read()
    request_id = response.headers["x-request-id"]
    path = Path(gw.gateway.settings.audit.destination)

    def find() -> dict[str, Any] | None:
        lines = path.read_bytes().splitlines() if path.exists() else []
        found = [msgspec.json.decode(raw) for raw in lines]
        return next((item for item in found if item.get("request_id") == request_id), None)

    deadline = time.monotonic() + 5
    line = await asyncio.to_thread(find)
    while time.monotonic() < deadline and line is None:
        await asyncio.sleep(0.05)
        line = await asyncio.to_thread(find)
    assert line is not None, "no audit line for the request"
    text = msgspec.json.encode(line).decode()
    assert "jane.doe@example.com" not in text and prompt not in text
    assert line["prompt"]["chars"] == len(prompt) and len(line["prompt"]["hmac"]) == 64


async def test_a_spent_budget_is_a_402_in_the_clients_dialect(
    simulator: Any, tmp_path: Path
) -> None:
    from tokenrelay.gate.keys import KeyStore

    budgets = [{"scope": "org", "id": "acme", "period": "day", "limit_usd": "0.000001"}]
    env = {
        **gateway_environ(simulator.url),
        "TOKENRELAY_DATABASE_URL": f"sqlite:///{tmp_path}/ledger.db",
        "TOKENRELAY_AUDIT__ENABLED": "false",
        "TOKENRELAY_BUDGETS": msgspec.json.encode(budgets).decode(),
    }
    async with gateway_server(env) as gw:
        await gw.gateway.meter.pricer.load()  # type: ignore[union-attr]
        _, secret = await KeyStore(await gw.gateway.gate.database()).create("ann", "acme")
        body = {"model": "an", "max_tokens": 50, "messages": [{"role": "user", "content": "hi"}]}
        headers = {"x-api-key": secret, "anthropic-version": "2023-06-01"}
        async with aiohttp.ClientSession() as http:
            first = await http.post(gw.url + "/v1/messages", json=body, headers=headers)
            await first.read()
            assert first.status == 200  # nothing spent yet; this one spends more than the budget
            await asyncio.sleep(0.05)
            second = await http.post(gw.url + "/v1/messages", json=body, headers=headers)
            payload = await second.json()
            openai_style = await http.post(
                gw.url + "/v1/chat/completions",
                json={"model": "an", "messages": [{"role": "user", "content": "hi"}]},
                headers={"authorization": f"Bearer {secret}"},
            )
            oa_payload = await openai_style.json()
    assert second.status == 402 and payload["error"]["type"] == "billing_error"
    message = payload["error"]["message"]
    assert "budget" in message and "acme" in message and "resets" in message
    assert openai_style.status == 402 and oa_payload["error"]["type"] == "insufficient_quota"


pg_server = postgres_server_fixture("module")


async def test_a_database_down_at_start_up_is_used_once_it_is_up(
    simulator: Any, pg_server: PostgresServer, tmp_path: Path
) -> None:
    env = {
        **gateway_environ(simulator.url),
        "TOKENRELAY_DATABASE_URL": pg_server.url(),
        "TOKENRELAY_AUDIT__ENABLED": "false",
    }
    await asyncio.to_thread(pg_server.stop)
    try:
        async with gateway_server(env) as gw:
            async with aiohttp.ClientSession() as http:
                response = await http.post(
                    gw.url + "/api/generate", json={"prompt": "hi", "route": "an"}
                )
                await response.read()
            assert response.status == 200  # anonymous traffic does not need the database
            await asyncio.sleep(1.5)  # the first attempts to open it fail
            assert gw.gateway.ledger is not None and gw.gateway.ledger.backlog >= 1
            await asyncio.to_thread(pg_server.start)
            row = await ledger_row(gw, response.headers["x-request-id"])
            assert row["outcome"] == "completed"
    finally:
        if not pg_server.running:
            await asyncio.to_thread(pg_server.start)

"""``tokenrelay.client`` (sync and async) against a real gateway over the simulator."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
import pytest_asyncio

from tests.servers import RunningGateway, gateway_environ, gateway_server
from tokenrelay.client import AsyncClient, Client, GatewayRequestError

pytestmark = pytest.mark.asyncio(loop_scope="session")


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def gw(simulator: Any) -> AsyncIterator[RunningGateway]:
    async with gateway_server(gateway_environ(simulator.url)) as running:
        yield running


async def test_sync_client_streams_text_and_reports_the_answer(gw: RunningGateway) -> None:
    def ask() -> tuple[list[str], Any]:
        with Client(gw.url).stream("Explain SSE", route="an") as answer:
            return list(answer.text()), answer.info

    texts, info = await asyncio.to_thread(ask)
    assert len(texts) == 20 and "".join(texts).strip()
    assert info.provider == "anthropic" and info.model == "claude-sonnet-5-5"
    assert info.request_id and info.ttft_s is not None and info.duration_s >= info.ttft_s
    assert info.usage.output_tokens == 20 and info.usage.input_tokens
    assert info.finish is not None and info.finish.reason == "stop" and info.error is None
    record = await gw.wait_record(info.request_id)
    assert record.outcome == "completed"


async def test_sync_client_raises_for_an_unknown_route(gw: RunningGateway) -> None:
    def ask() -> None:
        Client(gw.url).stream("hi", route="nope")

    with pytest.raises(GatewayRequestError) as caught:
        await asyncio.to_thread(ask)
    assert caught.value.status == 404 and "nope" in caught.value.message


async def test_async_client_streams_and_honours_max_tokens(gw: RunningGateway) -> None:
    async with AsyncClient(gw.url) as client:
        answer = await client.stream("Count", route="oa", max_tokens=4)
        async with answer:
            texts = [text async for text in answer.text()]
    assert len(texts) == 4
    assert answer.info.provider == "openai"
    assert answer.info.finish is not None and answer.info.finish.reason == "length"
    assert answer.info.usage.output_tokens == 4


async def test_async_client_reports_an_in_band_error(gw: RunningGateway) -> None:
    async with AsyncClient(gw.url) as client:
        answer = await client.stream("Fail", route="midfail")
        async with answer:
            texts = [text async for text in answer.text()]
    assert len(texts) == 3  # the simulator's default fault_after
    assert answer.info.error is not None and answer.info.error.type == "overloaded"
    assert "simulated overload" in answer.info.error.message


async def test_leaving_the_async_block_early_closes_the_upstream(
    gw: RunningGateway, simulator: Any
) -> None:
    async with aiohttp.ClientSession() as http:
        await http.post(simulator.url + "/stats/reset")
        async with AsyncClient(gw.url) as client:
            answer = await client.stream("A long answer", route="slow")
            async with answer:
                async for _ in answer.text():
                    break
            closed = time.monotonic()
        for _ in range(100):
            async with http.get(simulator.url + "/stats") as response:
                stats = await response.json()
            if stats["disconnects"]:
                break
            await asyncio.sleep(0.01)
    assert stats["disconnects"], "the upstream stream was not closed"
    assert stats["disconnects"][-1]["at_monotonic"] - closed < 0.1
    assert stats["disconnects"][-1]["tokens_sent"] < 500


async def test_sync_client_close_mid_stream_closes_the_upstream(
    gw: RunningGateway, simulator: Any
) -> None:
    """The sync client leaving its ``with`` block early (what Ctrl-C in ``ask`` does)."""
    async with aiohttp.ClientSession() as http:
        await http.post(simulator.url + "/stats/reset")

        def read_one() -> tuple[str, float]:
            with Client(gw.url).stream("A long answer", route="slow") as answer:
                first = next(answer.text())
            return first, time.monotonic()

        first, closed = await asyncio.to_thread(read_one)
        assert first
        for _ in range(100):
            async with http.get(simulator.url + "/stats") as response:
                stats = await response.json()
            if stats["disconnects"]:
                break
            await asyncio.sleep(0.01)
    assert stats["disconnects"], "the upstream stream was not closed"
    assert stats["disconnects"][-1]["at_monotonic"] - closed < 0.1

"""Gemini models on Vertex AI (publisher ``google``): the URL, and the gateway end to end once
the Gemini dialect (``tokenrelay.dialects.gemini``) is in; until then the end-to-end tests skip."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

import aiohttp
import msgspec
import pytest
import pytest_asyncio

from tests.servers import RunningGateway, gateway_server
from tests.test_vertex import FRONTS, ask, expected_nanousd, until_priced, vertex_environ
from tokenrelay import transports
from tokenrelay.settings import ProviderSettings
from tokenrelay.simulator import RunningSimulator

GEMINI = "gemini-2.5-flash"
PATH = f"/v1/projects/test-project/locations/us-east5/publishers/google/models/{GEMINI}"


def settings(**changes: str) -> ProviderSettings:
    fields = {"kind": "vertex", "project": "test-project", "region": "us-east5", "api_key": "t"}
    return msgspec.convert({**fields, **changes}, ProviderSettings)


def test_a_gemini_model_is_addressed_at_googles_publisher() -> None:
    vertex = transports.get("vertex")
    dialect, url = vertex.model_endpoint(settings(), "gemini-2.5-pro") or ("", "")
    assert dialect == "gemini"
    assert url == (
        "https://us-east5-aiplatform.googleapis.com/v1/projects/test-project/locations/us-east5"
        "/publishers/google/models/gemini-2.5-pro:streamGenerateContent?alt=sse"
    )
    _, url = vertex.model_endpoint(settings(region="global"), "claude-opus-4-1@20250805") or (
        "",
        "",
    )
    assert url == (
        "https://aiplatform.googleapis.com/v1/projects/test-project/locations/global"
        "/publishers/anthropic/models/claude-opus-4-1@20250805:streamRawPredict"
    )


def test_the_publisher_setting_overrides_the_models_name() -> None:
    vertex = transports.get("vertex")
    dialect, url = vertex.model_endpoint(settings(publisher="google"), "tuned-7") or ("", "")
    assert dialect == "gemini" and "/publishers/google/models/tuned-7:" in url


def test_a_gemini_body_is_left_as_the_dialect_wrote_it() -> None:
    body = b'{"contents":[{"role":"user","parts":[{"text":"hi"}]}]}'
    assert transports.get("vertex").finish_body(settings(), "gemini", body) is body


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def gw(simulator: RunningSimulator) -> AsyncIterator[RunningGateway]:
    pytest.importorskip("tokenrelay.dialects.gemini")  # the Gemini dialect's branch
    environ = vertex_environ(simulator.url)
    environ["TOKENRELAY_ROUTES__VXG__TARGETS"] = f"vertex:{GEMINI}"
    async with gateway_server(environ) as running:
        await running.gateway.meter.pricer.load()  # type: ignore[union-attr]
        yield running


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


@pytest.mark.parametrize("front", FRONTS)
async def test_gemini_on_vertex_through_every_front(
    gw: RunningGateway, http: aiohttp.ClientSession, simulator: RunningSimulator, front: str
) -> None:
    simulator.reset_stats()
    status, request_id, heard = await ask(gw, http, front, route="vxg")
    assert status == 200 and heard.text and not heard.errors
    [sent] = simulator.stats()["last_requests"]
    assert sent["path"] == PATH + ":streamGenerateContent"
    assert sent["headers"]["authorization"] == "Bearer test-vertex-token"
    assert "model" not in sent["body"] and "contents" in sent["body"]
    record = await until_priced(gw, request_id)
    assert (record.provider, record.model, record.outcome) == ("vertex", GEMINI, "completed")
    assert record.cost_nanousd == expected_nanousd(GEMINI, record.usage, time.time())

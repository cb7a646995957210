"""``GET /v1/models`` and ``GET /v1/models/{id}`` through both official SDKs: routes and the
provider models ``[provider_models]`` admits are known, each SDK reads its own shape, and an
unknown name is a 404 in the asker's error shape."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import aiohttp
import anthropic
import openai
import pytest
import pytest_asyncio
import yarl

from tests.servers import RunningGateway, gateway_environ, gateway_server

ASYNC = pytest.mark.asyncio(loop_scope="session")


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def gw(simulator: Any) -> AsyncIterator[RunningGateway]:
    async with gateway_server(gateway_environ(simulator.url)) as running:
        yield running


def oa_client(gw: RunningGateway) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=gw.url + "/v1", api_key="unused", max_retries=0)


def an_client(gw: RunningGateway) -> anthropic.AsyncAnthropic:
    return anthropic.AsyncAnthropic(base_url=gw.url, api_key="unused", max_retries=0)


@ASYNC
async def test_the_openai_sdk_lists_and_retrieves(gw: RunningGateway) -> None:
    async with oa_client(gw) as oa:
        listed = [model async for model in oa.models.list()]
        route = await oa.models.retrieve("default")
        provider_model = await oa.models.retrieve("claude-opus-5-1")
        qualified = await oa.models.retrieve("openai/gpt-5.5-mini")
    assert {"default", "an", "oa"} <= {model.id for model in listed}
    assert all(model.object == "model" and model.created == 0 for model in listed)
    assert (route.id, route.object, route.owned_by, route.created) == (
        "default",
        "model",
        "tokenrelay",
        0,
    )
    assert (provider_model.id, provider_model.owned_by) == ("claude-opus-5-1", "anthropic")
    assert (qualified.id, qualified.owned_by) == ("openai/gpt-5.5-mini", "openai")


@ASYNC
async def test_the_anthropic_sdk_reads_its_own_shape(gw: RunningGateway) -> None:
    async with an_client(gw) as an:
        route = await an.models.retrieve("an")
        provider_model = await an.models.retrieve("claude-haiku-4-5")
        page = await an.models.list()
    assert (route.type, route.id, route.display_name) == ("model", "an", "an")
    assert route.created_at == datetime(1970, 1, 1, tzinfo=UTC)
    assert provider_model.id == "claude-haiku-4-5"
    assert {"default", "an", "oa"} <= {model.id for model in page.data}
    assert all(model.type == "model" for model in page.data)
    assert page.has_more is False


@ASYNC
async def test_unknown_names_are_404s_in_each_shape(gw: RunningGateway) -> None:
    for name in ("nope", "claude-made-up-1", "gpt-3.5-turbo-x", "ollama/llama3.2"):
        async with oa_client(gw) as oa:
            with pytest.raises(openai.NotFoundError) as raised_oa:
                await oa.models.retrieve(name)
        error = raised_oa.value.body
        assert isinstance(error, dict)
        assert error["code"] == "model_not_found" and error["param"] == "model", error
        assert repr(name) in error["message"]
        async with an_client(gw) as an:
            with pytest.raises(anthropic.NotFoundError) as raised_an:
                await an.models.retrieve(name)
        body = raised_an.value.body
        assert isinstance(body, dict)
        assert body["type"] == "error" and body["error"]["type"] == "not_found_error", body


@ASYNC
async def test_a_malformed_name_is_not_echoed(gw: RunningGateway) -> None:
    for raw in ("bad%00name", "bad%20name", "bad%E2%80%AEname", "x" * 300):
        url = yarl.URL(gw.url + "/v1/models/" + raw, encoded=True)
        async with aiohttp.ClientSession() as http, http.get(url) as response:
            assert response.status == 404, raw
            payload = await response.json()
        assert "name" not in payload["error"]["message"].replace("a model name", ""), payload
        assert "the model asked for" in payload["error"]["message"], payload


@ASYNC
async def test_provider_models_off_means_routes_only(simulator: Any) -> None:
    environ = gateway_environ(simulator.url)
    environ["TOKENRELAY_ALLOW_PROVIDER_MODELS"] = "false"
    async with gateway_server(environ) as gw, oa_client(gw) as oa:
        assert (await oa.models.retrieve("oa")).id == "oa"
        with pytest.raises(openai.NotFoundError):
            await oa.models.retrieve("claude-opus-5-1")

"""LangChain's ``ChatOpenAI`` (``langchain-openai``) with ``use_responses_api=True`` streams
one answer through the gateway's ``/v1/responses``, over real HTTP to the simulator: the
chunks add up to the answer the ``openai`` SDK gets for the same prompt, with its usage."""

from __future__ import annotations

from collections.abc import AsyncIterator

import openai
import pytest
import pytest_asyncio
from langchain_core.messages import HumanMessage, SystemMessage
from langchain_openai import ChatOpenAI
from pydantic import SecretStr

from tests.servers import RunningGateway, gateway_environ, gateway_server
from tokenrelay.simulator import RunningSimulator

pytestmark = pytest.mark.asyncio(loop_scope="session")


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def gw(simulator: RunningSimulator) -> AsyncIterator[RunningGateway]:
    async with gateway_server(gateway_environ(simulator.url)) as running:
        yield running


def chat(gw: RunningGateway, model: str) -> ChatOpenAI:
    return ChatOpenAI(
        base_url=gw.url + "/v1",
        api_key=SecretStr("unused"),
        model=model,
        use_responses_api=True,
        max_retries=0,
        stream_usage=True,
    )


@pytest.mark.parametrize("route", ["oa", "an"])
async def test_chat_openai_streams_through_the_responses_front(
    gw: RunningGateway, simulator: RunningSimulator, route: str
) -> None:
    prompt = f"Explain server-sent events ({route})"
    simulator.reset_stats()
    chunks = [chunk async for chunk in chat(gw, route).astream(prompt)]
    texts = [chunk.text for chunk in chunks if chunk.text]
    assert len(texts) == 20  # one chunk per simulated token

    records = [record for record in gw.records if record.route == route]
    assert records[-1].dialect == "responses" and records[-1].status == 200
    upstream = simulator.stats()["last_requests"]
    assert [r["path"] for r in upstream] == [
        "/v1/chat/completions" if route == "oa" else "/v1/messages"
    ]

    async with openai.AsyncOpenAI(base_url=gw.url + "/v1", api_key="-", max_retries=0) as oa:
        direct = await oa.responses.create(model=route, input=prompt)
    assert "".join(texts) == direct.output_text
    usage = sum(chunks[1:], chunks[0]).usage_metadata
    assert usage is not None and direct.usage is not None
    assert usage["output_tokens"] == direct.usage.output_tokens == 20
    assert usage["input_tokens"] == direct.usage.input_tokens


async def test_a_system_message_is_refused_on_a_route_that_has_its_own(
    gw: RunningGateway,
) -> None:
    """Route ``default`` has its own system prompt: LangChain's SystemMessage (sent as a
    developer/system item) is a 400 that says what to do, raised as openai's BadRequestError."""
    with pytest.raises(openai.BadRequestError) as raised:
        await chat(gw, "default").ainvoke([SystemMessage("Be brief."), HumanMessage("Hi")])
    assert "does not accept one from the client" in str(raised.value)

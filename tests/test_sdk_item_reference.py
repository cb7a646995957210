"""What the Vercel AI SDK's default provider (``@ai-sdk/openai``, ``store`` left at its default,
true) sends on the second step of a tool loop: the first step's message as an
``{"type": "item_reference", "id": "msg_..."}`` to the gateway's stored response, then the
function call and its output. OpenAI resolves the reference from its store; the gateway should
resolve it from its own (the same caller's stored responses) and send the upstream the item."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import openai
import pytest
import pytest_asyncio

from tests.servers import RunningGateway, gateway_environ, gateway_server
from tokenrelay.gate.keys import KeyStore
from tokenrelay.simulator import RunningSimulator

pytestmark = pytest.mark.asyncio(loop_scope="session")

TOOL: Any = {  # raw JSON, as a client sends it (the SDK types it as a TypedDict)
    "type": "function",
    "name": "lookup",
    "description": "Look something up",
    "parameters": {"type": "object", "properties": {"query": {"type": "string"}}},
    "strict": False,
}


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def gw(simulator: RunningSimulator) -> AsyncIterator[RunningGateway]:
    async with gateway_server(gateway_environ(simulator.url)) as running:
        yield running


@pytest_asyncio.fixture(loop_scope="session")
async def oa(gw: RunningGateway) -> AsyncIterator[openai.AsyncOpenAI]:
    _, key = await KeyStore(await gw.gateway.gate.database()).create("ai-sdk", "acme")
    async with openai.AsyncOpenAI(base_url=gw.url + "/v1", api_key=key, max_retries=0) as client:
        yield client


@pytest.mark.xfail(
    strict=True,
    raises=openai.BadRequestError,
    reason="defect: the gateway does not resolve input items of type item_reference from the "
    "caller's stored responses; to a Chat Completions or Anthropic route it refuses them with "
    "400 \"'input' cannot be sent to ...\" (param 'input', not naming item_reference), and to "
    "a Responses upstream it would pass ids the upstream never issued",
)
@pytest.mark.parametrize("route", ["oa", "an"])
async def test_the_ai_sdk_tool_loop_second_step_with_item_references(
    oa: openai.AsyncOpenAI, simulator: RunningSimulator, route: str
) -> None:
    question = f"Look up the weather ({route})"
    first = await oa.responses.create(
        model=route, input=question, tools=[TOOL], extra_headers={"x-sim-tool": "auto"}
    )
    message, call = first.output  # the simulator answers some text, then calls the tool
    assert message.type == "message" and call.type == "function_call"
    simulator.reset_stats()
    input_: Any = [
        {"role": "user", "content": [{"type": "input_text", "text": question}]},
        {"type": "item_reference", "id": message.id},
        {
            "type": "function_call",
            "call_id": call.call_id,
            "name": call.name,
            "arguments": call.arguments,
        },
        {"type": "function_call_output", "call_id": call.call_id, "output": "sunny"},
    ]
    second = await oa.responses.create(model=route, input=input_, tools=[TOOL])
    assert second.status == "completed"
    body = simulator.stats()["last_requests"][0]["body"]
    assert first.output_text in str(body["messages"])  # the referenced message, resolved

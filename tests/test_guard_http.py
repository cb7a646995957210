"""The guard over real HTTP, through the simulator: the upstream never receives a masked value
(asserted on what it recorded), every front gets the original values back, streaming and not,
even with placeholders split into one-character events; tool-call arguments restored before the
official SDK parses them; ``block`` refused with the types; the output guard's mask and block in
each dialect; the record, ledger, audit line and metrics with counts, never values."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import msgspec
import openai
import pytest
import pytest_asyncio

from tests.servers import RunningGateway, gateway_environ, gateway_server
from tokenrelay.metering.ledger import row_from
from tokenrelay.simulator import RunningSimulator

pytestmark = pytest.mark.asyncio(loop_scope="session")

EMAIL, CARD, TICKET = "ann.lee@example.com", "4111 1111 1111 1111", 'ACME\\"42'
PROMPT = f"Mail {EMAIL} about card {CARD}, ticket {TICKET}, then {EMAIL} again."
VALUES = (EMAIL, CARD, TICKET)
FRONTS = ["/v1/messages", "/v1/chat/completions", "/v1/responses", "/api/generate", "/api/chat"]


def routes() -> dict[str, str]:
    mask = {"pii": "mask", "custom": {"ticket": r'ACME\\"\d+'}}
    return {
        "TOKENRELAY_ROUTES__PII__TARGETS": "anthropic:claude-sonnet-5-5",
        "TOKENRELAY_ROUTES__PII__GUARD": json.dumps(mask),
        "TOKENRELAY_ROUTES__PIIOA__TARGETS": "openai:gpt-5.5",
        "TOKENRELAY_ROUTES__PIIOA__GUARD": json.dumps(mask),
        "TOKENRELAY_ROUTES__PIIBLOCK__TARGETS": "openai:gpt-5.5",
        "TOKENRELAY_ROUTES__PIIBLOCK__GUARD__PII": "block",
        "TOKENRELAY_ROUTES__OUTMASK__TARGETS": "openai:gpt-5.5",
        "TOKENRELAY_ROUTES__OUTMASK__GUARD__OUTPUT": json.dumps(
            {"rules": [r"PROJ-\d{5}"], "terms": ["bluebird"], "action": "mask"}
        ),
        "TOKENRELAY_ROUTES__OUTBLOCK__TARGETS": "anthropic:claude-sonnet-5-5",
        "TOKENRELAY_ROUTES__OUTBLOCK__GUARD__OUTPUT": json.dumps({"rules": [r"PROJ-\d{5}"]}),
        "TOKENRELAY_AUDIT__ENABLED": "false",
    }


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def gw(simulator: RunningSimulator) -> AsyncIterator[RunningGateway]:
    async with gateway_server({**gateway_environ(simulator.url), **routes()}) as running:
        yield running


def body_for(front: str, route: str, text: str, stream: bool = True) -> dict[str, Any]:
    if front in ("/v1/messages", "/v1/chat/completions"):
        body: dict[str, Any] = {"model": route, "messages": [{"role": "user", "content": text}]}
        if front == "/v1/messages":
            body["max_tokens"] = 500
        return {**body, "stream": stream}
    if front == "/v1/responses":
        return {"model": route, "stream": stream, "input": text}
    if front == "/api/generate":
        return {"prompt": text, "route": route, "stream": stream}
    parts = [{"type": "text", "text": text}]
    return {"id": "c1", "route": route, "messages": [{"id": "m1", "role": "user", "parts": parts}]}


async def post(
    gw: RunningGateway, front: str, body: dict[str, Any], **headers: str
) -> tuple[int, str, str]:
    async with (
        aiohttp.ClientSession() as http,
        http.post(gw.url + front, json=body, headers=headers) as response,
    ):
        raw = (await response.read()).decode()
        return response.status, response.headers.get("x-request-id", ""), raw


async def upstream_body(simulator: RunningSimulator) -> str:
    """What the simulator last received, as its raw JSON text."""
    return json.dumps(simulator.stats()["last_requests"][-1]["body"])


def assert_restored(raw: str) -> None:
    decoded = raw.replace('\\"', '"').replace("\\\\", "\\")  # JSON escapes, any dialect
    for value in VALUES:
        assert value in decoded, (value, raw[:2000])
    assert "<EMAIL_" not in raw and "<CARD_" not in raw and "TICKET_" not in raw


@pytest.mark.parametrize("front", FRONTS)
@pytest.mark.parametrize("stream", [True, False])
@pytest.mark.parametrize("route", ["pii", "piioa"])
async def test_the_upstream_sees_placeholders_and_the_client_the_values(
    front: str, stream: bool, route: str, gw: RunningGateway, simulator: RunningSimulator
) -> None:
    if front == "/api/chat" and not stream:
        pytest.skip("the UI message stream always streams")
    body = body_for(front, route, PROMPT, stream)
    status, request_id, raw = await post(gw, front, body, **{"x-sim-echo": "1"})
    assert status == 200, raw
    sent = await upstream_body(simulator)
    for value in (EMAIL, CARD, "ACME"):
        assert value not in sent  # never left the gateway
    assert "<EMAIL_1>" in sent and "<CARD_1>" in sent and "<TICKET_1>" in sent
    assert_restored(raw)
    record = await gw.wait_record(request_id)
    assert record.guard == {"EMAIL": 2, "CARD": 1, "TICKET": 1}
    assert record.outcome == "completed"


@pytest.mark.parametrize("size", [1, 2, 3, 5, 7])
async def test_placeholders_split_across_events_over_http(
    size: int, gw: RunningGateway, simulator: RunningSimulator
) -> None:
    client = openai.AsyncOpenAI(base_url=gw.url + "/v1", api_key="unused", max_retries=0)
    stream = await client.chat.completions.create(
        model="piioa",
        messages=[{"role": "user", "content": PROMPT}],
        stream=True,
        extra_headers={"x-sim-echo": str(size)},
    )
    pieces = [c.choices[0].delta.content or "" async for c in stream if c.choices]
    assert "".join(pieces) == PROMPT


async def test_tool_call_arguments_are_restored_before_the_sdk_parses_them(
    gw: RunningGateway, simulator: RunningSimulator
) -> None:
    client = openai.AsyncOpenAI(base_url=gw.url + "/v1", api_key="unused", max_retries=0)
    tool = {
        "type": "function",
        "function": {"name": "send_mail", "parameters": {"type": "object"}},
    }
    headers = {"x-sim-echo": "1", "x-sim-tool": "auto"}
    async with client.chat.completions.stream(
        model="piioa",
        messages=[{"role": "user", "content": PROMPT}],
        tools=[tool],  # type: ignore[list-item]
        extra_headers=headers,
    ) as stream:
        final = await stream.get_final_completion()
    call = final.choices[0].message.tool_calls[0]  # type: ignore[index]
    assert call.function.name == "send_mail"
    assert json.loads(call.function.arguments) == {"query": PROMPT}
    whole = await client.chat.completions.create(
        model="piioa",
        messages=[{"role": "user", "content": PROMPT}],
        tools=[tool],  # type: ignore[list-item]
        extra_headers=headers,
    )
    arguments = whole.choices[0].message.tool_calls[0].function.arguments  # type: ignore[index, union-attr]
    assert json.loads(arguments) == {"query": PROMPT}
    assert TICKET not in await upstream_body(simulator)


@pytest.mark.parametrize("front", FRONTS)
async def test_block_refuses_naming_the_types_never_the_values(
    front: str, gw: RunningGateway, simulator: RunningSimulator
) -> None:
    before = simulator.stats()["requests"]
    status, request_id, raw = await post(gw, front, body_for(front, "piiblock", PROMPT))
    assert status == 400
    assert "(CARD, EMAIL)" in raw and EMAIL not in raw and "4111" not in raw
    assert simulator.stats()["requests"] == before  # nothing went upstream
    record = await gw.wait_record(request_id)
    assert record.outcome == "rejected" and record.reject_reason == "guard_pii"
    assert record.guard == {"EMAIL": 2, "CARD": 1}


@pytest.mark.parametrize("front", FRONTS)
@pytest.mark.parametrize("stream", [True, False])
async def test_the_output_guard_masks_in_place(
    front: str, stream: bool, gw: RunningGateway
) -> None:
    if front == "/api/chat" and not stream:
        pytest.skip("the UI message stream always streams")
    answer = "The code is PROJ-12345 for BlueBird, done."
    body = body_for(front, "outmask", "hi", stream)
    status, request_id, raw = await post(gw, front, body, **{"x-sim-text": answer})
    assert status == 200, raw
    assert "PROJ-" not in raw and "BlueBird" not in raw and "[redacted]" in raw
    assert "done." in raw
    record = await gw.wait_record(request_id)
    assert record.outcome == "completed"
    assert record.guard_output == {"rules[0]": 1, "terms": 1}


@pytest.mark.parametrize("front", FRONTS)
async def test_the_output_guard_blocks_with_an_in_band_error(
    front: str, gw: RunningGateway
) -> None:
    answer = "Fine words first, then PROJ-12345 and the rest of it."
    body = body_for(front, "outblock", "hi")
    status, request_id, raw = await post(gw, front, body, **{"x-sim-text": answer})
    assert status == 200  # the head was out: the error is in the stream, in the dialect
    assert "Fine" in raw and "PROJ-12345" not in raw and "the rest" not in raw
    assert "output guard (rule rules[0])" in raw
    record = await gw.wait_record(request_id)
    assert record.outcome == "guard_blocked" and record.error_type == "guard_blocked"
    assert record.guard_blocked == "rules[0]"


async def test_a_whole_answer_the_output_guard_blocks_is_a_400(gw: RunningGateway) -> None:
    body = body_for("/v1/chat/completions", "outblock", "hi", stream=False)
    status, request_id, raw = await post(
        gw, "/v1/chat/completions", body, **{"x-sim-text": "see PROJ-12345 now"}
    )
    assert status == 400 and "PROJ-12345" not in raw and "output guard" in raw
    assert (await gw.wait_record(request_id)).outcome == "guard_blocked"


async def test_records_ledger_audit_and_metrics_hold_counts_never_values(
    gw: RunningGateway,
) -> None:
    from tokenrelay.observe.audit import audit_line

    body = body_for("/v1/chat/completions", "piioa", PROMPT)
    status, request_id, _ = await post(gw, "/v1/chat/completions", body, **{"x-sim-echo": "4"})
    assert status == 200
    record = await gw.wait_record(request_id)
    row = row_from(record)
    assert msgspec.json.decode(row.guard or "") == {"masked": {"EMAIL": 2, "CARD": 1, "TICKET": 1}}
    line = audit_line(record, None, None).decode()
    assert '"guard":{"EMAIL":2,"CARD":1,"TICKET":1}' in line
    refused = await post(gw, "/v1/messages", body_for("/v1/messages", "piiblock", PROMPT))
    await gw.wait_record(refused[1])
    async with aiohttp.ClientSession() as http, http.get(gw.url + "/metrics") as response:
        page = await response.text()
    for text in (line, row.guard or "", page):
        for value in (EMAIL, CARD, "ACME"):
            assert value not in text
    assert 'tokenrelay_guard_masked_total{entity="TICKET"}' in page
    assert 'tokenrelay_guard_blocked_total{route="piiblock",rule="pii"}' in page

"""Provider kind ``bedrock`` through the gateway, over real HTTP to the simulator's Bedrock flavor
(event-stream frames): every front x text, tools, thinking, usage and cost, failover before the
first token, in-band errors after it, a corrupt frame, aborts; and the SigV4 signature the gateway
sends, checked against botocore's own computation of the same request under a frozen clock."""

from __future__ import annotations

import asyncio
import datetime
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any
from urllib.parse import quote

import aiohttp
import msgspec
import pytest
import pytest_asyncio

from tests.servers import RunningGateway, gateway_environ, gateway_server
from tokenrelay.dialects.sse import SSEParser
from tokenrelay.simulator import RunningSimulator

pytestmark = pytest.mark.asyncio(loop_scope="session")

MODEL = "us.anthropic.claude-sonnet-4-5-20250929-v1:0"
PATH = f"/model/{MODEL}/converse-stream"
ACCESS_KEY = "AKIDEXAMPLE000000001"
SECRET_KEY = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"
SESSION_TOKEN = "session-token-for-the-test"
FROZEN = datetime.datetime(2026, 1, 2, 3, 4, 5)
SCHEMA = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}

FAILOVER_FAULTS = ["429", "503", "500", "error_before_content"]
FRONTS = ["/v1/messages", "/v1/chat/completions", "/v1/responses", "/api/generate", "/api/chat"]


def body_for(front: str, route: str, prompt: str, **extra: Any) -> dict[str, Any]:
    """The smallest streaming request of each front."""
    if front == "/v1/messages":
        messages = [{"role": "user", "content": prompt}]
        return {"model": route, "max_tokens": 200, "messages": messages, "stream": True, **extra}
    if front == "/v1/chat/completions":
        messages = [{"role": "user", "content": prompt}]
        return {"model": route, "messages": messages, "stream": True, **extra}
    if front == "/v1/responses":
        return {"model": route, "input": prompt, "stream": True, **extra}
    if front == "/api/generate":
        return {"prompt": prompt, "route": route, **extra}
    parts = [{"type": "text", "text": prompt}]
    message = {"id": "m1", "role": "user", "parts": parts}
    return {"id": "c1", "messages": [message], "trigger": "submit-message", "route": route}


@pytest.fixture(scope="module")
def aws_env() -> Iterator[None]:
    """Static AWS credentials in the environment, nothing read from files or the network, and
    botocore's clock frozen (so the test can compute the same signature)."""
    with pytest.MonkeyPatch.context() as patch:
        for name in ("AWS_PROFILE", "AWS_BEARER_TOKEN_BEDROCK", "AWS_REGION"):
            patch.delenv(name, raising=False)
        patch.setenv("AWS_ACCESS_KEY_ID", ACCESS_KEY)
        patch.setenv("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
        patch.setenv("AWS_SESSION_TOKEN", SESSION_TOKEN)
        patch.setenv("AWS_CONFIG_FILE", "/nonexistent/aws-config")
        patch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent/aws-credentials")
        patch.setenv("AWS_EC2_METADATA_DISABLED", "true")
        import botocore.auth

        patch.setattr(botocore.auth, "get_current_datetime", lambda *a, **k: FROZEN)
        yield


def targets(*items: tuple[str, str, dict[str, str]]) -> str:
    return msgspec.json.encode(
        [{"provider": p, "model": m, "headers": h} for p, m, h in items]
    ).decode()


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def gw(simulator: RunningSimulator, aws_env: None) -> AsyncIterator[RunningGateway]:
    environ = {
        **gateway_environ(simulator.url),
        "TOKENRELAY_PROVIDERS__BEDROCK__KIND": "bedrock",
        "TOKENRELAY_PROVIDERS__BEDROCK__BASE_URL": simulator.url,
        "TOKENRELAY_PROVIDERS__BEDROCK__REGION": "us-east-1",
        "TOKENRELAY_PROVIDERS__BEDROCK__FORWARD_HEADERS": '["x-sim-"]',
        "TOKENRELAY_ROUTES__BR__TARGETS": f"bedrock:{MODEL}",
        "TOKENRELAY_PROVIDERS__BRINVOKE__KIND": "bedrock",
        "TOKENRELAY_PROVIDERS__BRINVOKE__API": "invoke",
        "TOKENRELAY_PROVIDERS__BRINVOKE__BASE_URL": simulator.url,
        "TOKENRELAY_PROVIDERS__BRINVOKE__REGION": "us-east-1",
        "TOKENRELAY_PROVIDERS__BRINVOKE__FORWARD_HEADERS": '["x-sim-"]',
        "TOKENRELAY_ROUTES__BRINV__TARGETS": f"brinvoke:{MODEL}",
        "TOKENRELAY_ROUTES__BR__ALLOW_CLIENT_SYSTEM": "true",
        **{
            f"TOKENRELAY_ROUTES__BR_{fault.upper()}__TARGETS": targets(
                ("bedrock", MODEL, {"x-sim-fault": fault, "x-sim-retry-after": "0"}),
                ("anthropic", "claude-sonnet-5-5", {}),
            )
            for fault in [*FAILOVER_FAULTS, "400"]
        },
        **{f"TOKENRELAY_ROUTES__BR_{fault.upper()}__RETRIES": "0" for fault in FAILOVER_FAULTS},
        "TOKENRELAY_MAX_BODY_BYTES": "65536",
    }
    async with gateway_server(environ) as running:
        yield running


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


def sim_requests(simulator: RunningSimulator) -> list[dict[str, Any]]:
    requests: list[dict[str, Any]] = simulator.stats()["last_requests"]
    return requests


async def call(
    http: aiohttp.ClientSession,
    gw: RunningGateway,
    front: str,
    body: dict[str, Any],
    headers: dict[str, str] | None = None,
) -> tuple[int, dict[str, str], str]:
    async with http.post(gw.url + front, json=body, headers=headers or {}) as response:
        text = (await response.read()).decode()
        return response.status, {k.lower(): v for k, v in response.headers.items()}, text


# --- the matrix ----------------------------------------------------------------------------------


@pytest.mark.parametrize("front", FRONTS)
async def test_text_usage_and_cost(
    gw: RunningGateway, http: aiohttp.ClientSession, simulator: RunningSimulator, front: str
) -> None:
    simulator.reset_stats()
    sim = {"x-sim-text": "Bonjour from Bedrock streamed", "x-sim-cache-read-tokens": "7"}
    status, headers, text = await call(http, gw, front, body_for(front, "br", "Say hi"), sim)
    assert status == 200, text
    assert headers["x-tokenrelay-provider"] == "bedrock"
    assert "Bedrock" in text and "streamed" in text
    [sent] = sim_requests(simulator)
    assert sent["path"] == PATH
    assert sent["body"]["messages"][-1]["role"] == "user"
    assert "Say hi" in msgspec.json.encode(sent["body"]).decode()
    record = await gw.wait_record(headers["x-request-id"])
    assert record.outcome == "completed" and record.provider == "bedrock"
    assert record.usage.output_tokens == 4
    assert record.usage.cache_read_tokens == 7
    assert record.usage.input_tokens is not None and record.usage.input_tokens > 7


async def test_cost_comes_from_genai_prices_aws(gw: RunningGateway) -> None:
    from tokenrelay.metering.pricing import Pricer
    from tokenrelay.model import Usage

    assert gw.gateway.meter is not None and gw.gateway.meter.kinds["bedrock"] == "aws"
    pricer = Pricer(gw.gateway.settings.pricing)
    await pricer.load()
    usage = Usage(input_tokens=1000, output_tokens=100, cache_read_tokens=200)
    cost = pricer.cost("bedrock", MODEL, usage, provider_kind="aws")
    assert cost is not None and cost > 0
    # the same model without the geography prefix prices the same
    assert pricer.cost("bedrock", MODEL.removeprefix("us."), usage, provider_kind="aws") == cost


@pytest.mark.parametrize("front", ["/v1/messages", "/v1/chat/completions", "/v1/responses"])
async def test_a_tool_round_trip(
    gw: RunningGateway, http: aiohttp.ClientSession, simulator: RunningSimulator, front: str
) -> None:
    simulator.reset_stats()
    sim = {"x-sim-tool": "auto", "x-sim-tokens": "2"}
    if front == "/v1/messages":
        tools: Any = [{"name": "get_weather", "description": "Weather", "input_schema": SCHEMA}]
    elif front == "/v1/chat/completions":
        function = {"name": "get_weather", "description": "Weather", "parameters": SCHEMA}
        tools = [{"type": "function", "function": function}]
    else:
        tools = [
            {"type": "function", "name": "get_weather", "description": "W", "parameters": SCHEMA}
        ]
    body = body_for(front, "br", "Weather in Paris?", tools=tools)
    status, _, text = await call(http, gw, front, body, sim)
    assert status == 200, text
    assert "get_weather" in text and "tooluse_sim_" in text
    [sent] = sim_requests(simulator)
    spec = sent["body"]["toolConfig"]["tools"][0]["toolSpec"]
    assert spec["name"] == "get_weather" and spec["inputSchema"]["json"] == SCHEMA
    call_id = text.split("tooluse_sim_")[1].split('"')[0]
    call_id = "tooluse_sim_" + call_id
    # the second leg: the tool's answer goes back as a toolResult in a user turn
    simulator.reset_stats()
    arguments = '{"city": "Paris"}'
    if front == "/v1/messages":
        messages: Any = [
            {"role": "user", "content": "Weather in Paris?"},
            {
                "role": "assistant",
                "content": [
                    {"type": "tool_use", "id": call_id, "name": "get_weather", "input": {}}
                ],
            },
            {
                "role": "user",
                "content": [{"type": "tool_result", "tool_use_id": call_id, "content": "Sunny"}],
            },
        ]
        second = {"model": "br", "max_tokens": 100, "messages": messages, "stream": True}
        second["tools"] = tools
    elif front == "/v1/chat/completions":
        function = {"name": "get_weather", "arguments": arguments}
        messages = [
            {"role": "user", "content": "Weather in Paris?"},
            {
                "role": "assistant",
                "tool_calls": [{"id": call_id, "type": "function", "function": function}],
            },
            {"role": "tool", "tool_call_id": call_id, "content": "Sunny"},
        ]
        second = {"model": "br", "messages": messages, "stream": True, "tools": tools}
    else:
        items = [
            {"role": "user", "content": "Weather in Paris?"},
            {
                "type": "function_call",
                "call_id": call_id,
                "name": "get_weather",
                "arguments": arguments,
            },
            {"type": "function_call_output", "call_id": call_id, "output": "Sunny"},
        ]
        second = {"model": "br", "input": items, "stream": True, "tools": tools}
    status, _, text = await call(http, gw, front, second, {"x-sim-tokens": "3"})
    assert status == 200, text
    [sent] = sim_requests(simulator)
    turns = sent["body"]["messages"]
    assert [t["role"] for t in turns] == ["user", "assistant", "user"]
    assert turns[1]["content"][-1]["toolUse"]["toolUseId"] == call_id
    result = turns[2]["content"][0]["toolResult"]
    assert result["toolUseId"] == call_id and result["content"] == [{"text": "Sunny"}]


@pytest.mark.parametrize("front", ["/v1/messages", "/v1/chat/completions"])
async def test_thinking(
    gw: RunningGateway, http: aiohttp.ClientSession, simulator: RunningSimulator, front: str
) -> None:
    simulator.reset_stats()
    if front == "/v1/messages":
        extra: dict[str, Any] = {"thinking": {"type": "enabled", "budget_tokens": 1024}}
        extra["max_tokens"] = 2000
    else:
        extra = {"reasoning_effort": "low"}
    body = body_for(front, "br", "Think first", **extra)
    sim = {"x-sim-thinking-tokens": "4", "x-sim-tokens": "3"}
    status, headers, text = await call(http, gw, front, body, sim)
    assert status == 200, text
    [sent] = sim_requests(simulator)
    thinking = sent["body"]["additionalModelRequestFields"]["thinking"]
    assert thinking["type"] == "enabled" and thinking["budget_tokens"] >= 1024
    assert sent["body"]["inferenceConfig"]["maxTokens"] > thinking["budget_tokens"]
    if front == "/v1/messages":
        assert "thinking_delta" in text and "signature_delta" in text and "sim_sig_" in text
    else:
        assert "reasoning_content" in text
    record = await gw.wait_record(headers["x-request-id"])
    assert record.usage.output_tokens == 7


@pytest.mark.parametrize("fault", FAILOVER_FAULTS)
@pytest.mark.parametrize("front", FRONTS)
async def test_an_error_before_the_first_token_fails_over(
    gw: RunningGateway,
    http: aiohttp.ClientSession,
    simulator: RunningSimulator,
    front: str,
    fault: str,
) -> None:
    """Throttled, unavailable, failing (an HTTP error, or an exception frame before content):
    the next target answers."""
    simulator.reset_stats()
    route = "br_" + fault
    status, headers, text = await call(http, gw, front, body_for(front, route, "hello"))
    assert status == 200, text
    assert headers["x-tokenrelay-provider"] == "anthropic"
    assert headers["x-tokenrelay-attempts"].startswith("bedrock/"), headers
    paths = [r["path"] for r in sim_requests(simulator)]
    assert paths == [PATH, "/v1/messages"], paths


async def test_a_validation_exception_is_a_400_at_once(
    gw: RunningGateway, http: aiohttp.ClientSession, simulator: RunningSimulator
) -> None:
    simulator.reset_stats()
    status, _, text = await call(http, gw, "/v1/messages", body_for("/v1/messages", "br_400", "hi"))
    assert status == 400, text
    assert "ValidationException" in text
    assert [r["path"] for r in sim_requests(simulator)] == [PATH]  # not moved on


@pytest.mark.parametrize("front", FRONTS)
async def test_an_error_after_the_first_token_arrives_in_band(
    gw: RunningGateway, http: aiohttp.ClientSession, simulator: RunningSimulator, front: str
) -> None:
    sim = {"x-sim-fault": "error_after", "x-sim-fault-after": "3", "x-sim-tokens": "10"}
    status, headers, text = await call(http, gw, front, body_for(front, "br", "hello"), sim)
    assert status == 200
    assert "error" in text.lower()
    record = await gw.wait_record(headers["x-request-id"])
    assert record.outcome == "error" and record.content_events == 3


@pytest.mark.parametrize("front", FRONTS)
async def test_a_corrupt_frame_ends_the_stream_with_an_explicit_error(
    gw: RunningGateway, http: aiohttp.ClientSession, simulator: RunningSimulator, front: str
) -> None:
    sim = {"x-sim-fault": "corrupt_frame", "x-sim-fault-after": "2", "x-sim-tokens": "10"}
    status, headers, text = await call(http, gw, front, body_for(front, "br", "hello"), sim)
    assert status == 200
    assert "corrupt" in text
    record = await gw.wait_record(headers["x-request-id"])
    assert record.outcome == "error" and record.error_type == "upstream_unavailable"
    assert record.content_events == 2


@pytest.mark.parametrize("front", FRONTS)
async def test_an_abort_closes_the_upstream_within_100ms(
    gw: RunningGateway, simulator: RunningSimulator, front: str
) -> None:
    simulator.reset_stats()
    headers = {"x-sim-tokens": "500", "x-sim-token-delay-ms": "20"}
    async with aiohttp.ClientSession() as own:  # its own connection: closing it is a real drop
        response = await own.post(
            gw.url + front, json=body_for(front, "br", "a long answer"), headers=headers
        )
        assert response.status == 200
        parser, seen = SSEParser(), 0
        async for chunk in response.content.iter_any():
            seen += len(parser.feed(chunk))
            if seen >= 4:
                break
        dropped_at = time.monotonic()
        response.close()
    disconnects: list[dict[str, Any]] = []
    deadline = time.monotonic() + 3
    while not disconnects and time.monotonic() < deadline:
        await asyncio.sleep(0.005)
        disconnects = simulator.stats()["disconnects"]
    assert disconnects, "the simulator never saw the upstream connection close"
    assert disconnects[0]["path"] == PATH
    latency = disconnects[0]["at_monotonic"] - dropped_at
    assert latency < 0.1, f"upstream closed {latency * 1000:.0f} ms after the client left"
    assert disconnects[0]["tokens_sent"] < 100


# --- SigV4 ---------------------------------------------------------------------------------------


async def test_the_signature_verifies_against_botocore(
    gw: RunningGateway, http: aiohttp.ClientSession, simulator: RunningSimulator
) -> None:
    """What a real Bedrock checks: the signature over the method, the URL-encoded path, the
    signed headers and the body, recomputed here by botocore from what the simulator received."""
    from botocore.auth import SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials

    simulator.reset_stats()
    status, _, text = await call(http, gw, "/v1/messages", body_for("/v1/messages", "br", "Sign"))
    assert status == 200, text
    [sent] = simulator._simulator.stats.last_requests  # raw: path, headers, body as received
    path, received, body = sent
    authorization = received["authorization"]
    assert authorization.startswith(
        f"AWS4-HMAC-SHA256 Credential={ACCESS_KEY}/20260102/us-east-1/bedrock/aws4_request, "
    )
    assert received["x-amz-date"] == "20260102T030405Z"
    assert received["x-amz-security-token"] == SESSION_TOKEN
    signed = authorization.split("SignedHeaders=")[1].split(",")[0].split(";")
    assert "host" in signed and "x-amz-date" in signed and "content-type" in signed
    url = simulator.url + path.replace(MODEL, quote(MODEL, safe=""))
    headers = {name: received[name] for name in signed if name != "host"}
    request = AWSRequest(method="POST", url=url, data=body, headers=headers)
    SigV4Auth(Credentials(ACCESS_KEY, SECRET_KEY, SESSION_TOKEN), "bedrock", "us-east-1").add_auth(
        request
    )
    assert request.headers["Authorization"] == authorization
    # and a changed body would not verify
    tampered = AWSRequest(method="POST", url=url, data=body + b" ", headers=headers)
    SigV4Auth(Credentials(ACCESS_KEY, SECRET_KEY, SESSION_TOKEN), "bedrock", "us-east-1").add_auth(
        tampered
    )
    assert tampered.headers["Authorization"] != authorization


async def test_the_model_id_is_url_encoded_in_the_path(
    gw: RunningGateway, http: aiohttp.ClientSession, simulator: RunningSimulator
) -> None:
    from tokenrelay import transports

    url = transports.get("bedrock").target_url(
        "https://bedrock-runtime.us-east-1.amazonaws.com/model/{model}/converse-stream", MODEL
    )
    assert url.endswith("/model/us.anthropic.claude-sonnet-4-5-20250929-v1%3A0/converse-stream")


async def test_the_simulator_refuses_a_request_without_a_signature(
    http: aiohttp.ClientSession, simulator: RunningSimulator
) -> None:
    body = {"messages": [{"role": "user", "content": [{"text": "hi"}]}]}
    async with http.post(simulator.url + PATH, json=body) as response:
        assert response.status == 401
        assert response.headers["x-amzn-errortype"] == "UnrecognizedClientException"
    bad = {"authorization": "AWS4-HMAC-SHA256 Credential=x", "x-amz-date": "20260102T030405Z"}
    async with http.post(simulator.url + PATH, json=body, headers=bad) as response:
        assert response.status == 401


async def test_anthropic_cache_breakpoints_become_cache_points(
    gw: RunningGateway, http: aiohttp.ClientSession, simulator: RunningSimulator
) -> None:
    simulator.reset_stats()
    ephemeral = {"type": "ephemeral"}
    body = {
        "model": "br",
        "max_tokens": 50,
        "stream": True,
        "system": [{"type": "text", "text": "Long instructions", "cache_control": ephemeral}],
        "tools": [{"name": "f", "input_schema": {"type": "object"}, "cache_control": ephemeral}],
        "messages": [
            {
                "role": "user",
                "content": [{"type": "text", "text": "Long context", "cache_control": ephemeral}],
            }
        ],
    }
    status, _, text = await call(http, gw, "/v1/messages", body)
    assert status == 200, text
    [sent] = sim_requests(simulator)
    point = {"cachePoint": {"type": "default"}}
    assert sent["body"]["system"][-1] == point
    assert sent["body"]["toolConfig"]["tools"][-1] == point
    assert sent["body"]["messages"][0]["content"] == [{"text": "Long context"}, point]


async def test_a_stream_cut_short_ends_with_an_error(
    gw: RunningGateway, http: aiohttp.ClientSession
) -> None:
    """A connection reset mid-stream (the frame in flight is never completed)."""
    sim = {"x-sim-fault": "reset", "x-sim-fault-after": "2", "x-sim-tokens": "10"}
    status, headers, text = await call(
        http, gw, "/v1/messages", body_for("/v1/messages", "br", "x"), sim
    )
    assert status == 200
    assert "error" in text
    record = await gw.wait_record(headers["x-request-id"])
    assert record.outcome == "error" and record.content_events == 2


async def test_the_simulator_answers_converse_whole(
    http: aiohttp.ClientSession, simulator: RunningSimulator
) -> None:
    body = {"messages": [{"role": "user", "content": [{"text": "hi"}]}]}
    bearer = {"authorization": "Bearer any", "x-sim-text": "Whole answer"}
    async with http.post(
        simulator.url + f"/model/{MODEL}/converse", json=body, headers=bearer
    ) as r:
        assert r.status == 200
        data = await r.json()
    assert data["output"]["message"]["content"] == [{"text": "Whole answer"}]
    assert data["stopReason"] == "end_turn" and data["usage"]["outputTokens"] == 2
    throttled = {**bearer, "x-sim-fault": "429"}
    async with http.post(simulator.url + PATH, json=body, headers=throttled) as r:
        assert r.status == 429
        assert r.headers["x-amzn-errortype"] == "ThrottlingException"
        assert r.headers["retry-after"]


INVOKE_PATH = f"/model/{MODEL}/invoke-with-response-stream"


@pytest.mark.parametrize("front", FRONTS)
async def test_invoke_mode_sends_anthropics_own_body(
    gw: RunningGateway, http: aiohttp.ClientSession, simulator: RunningSimulator, front: str
) -> None:
    """``api = "invoke"``: InvokeModel with Anthropic's body, answered in chunk frames."""
    simulator.reset_stats()
    sim = {"x-sim-text": "Invoked through Bedrock", "x-sim-thinking-tokens": "2"}
    status, headers, text = await call(http, gw, front, body_for(front, "brinv", "Hi"), sim)
    assert status == 200, text
    assert "Invoked" in text and "Bedrock" in text
    [sent] = sim_requests(simulator)
    assert sent["path"] == INVOKE_PATH
    assert sent["body"]["anthropic_version"] == "bedrock-2023-05-31"
    assert "model" not in sent["body"] and "stream" not in sent["body"]
    assert sent["headers"]["authorization"].startswith("AWS4-HMAC-SHA256 ")
    record = await gw.wait_record(headers["x-request-id"])
    assert record.outcome == "completed" and record.usage.output_tokens == 5
    assert record.usage.input_tokens


async def test_invoke_mode_errors_and_failover(
    gw: RunningGateway, http: aiohttp.ClientSession, simulator: RunningSimulator
) -> None:
    sim = {"x-sim-fault": "error_after", "x-sim-fault-after": "2", "x-sim-tokens": "8"}
    status, headers, text = await call(
        http, gw, "/v1/messages", body_for("/v1/messages", "brinv", "Hi"), sim
    )
    assert status == 200 and "error" in text
    record = await gw.wait_record(headers["x-request-id"])
    assert record.outcome == "error" and record.content_events == 2
    status, _, text = await call(
        http, gw, "/v1/messages", body_for("/v1/messages", "brinv", "Hi"), {"x-sim-fault": "400"}
    )
    assert status == 400 and "ValidationException" in text

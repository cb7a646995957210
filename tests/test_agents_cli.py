"""Real coding agents through the gateway, offline: Claude Code 2.1 and Codex CLI 0.171.

Two halves. The replays send the requests captured from the real programs
(``tests/data/agents/``, recorded by ``tests/agent_capture.py``) to a gateway in demo mode: pure
HTTP, no Node needed. The end-to-end tests run the programs themselves (``tests/agents``,
installed by ``npm ci --prefix tests/agents``) against a gateway and read its records.

Each gateway defect found is an ``xfail(strict=True)`` naming it: when the fix lands the test
passes, strict turns that into a failure, and the mark is removed. Everything else passes today.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import pytest_asyncio

from tests import recorder
from tests.agent_cli import (
    AgentRun,
    ledger_rows,
    refused,
    require_installed,
    run_claude,
    run_codex,
    settled,
)
from tests.servers import RunningGateway, clean_environ, gateway_server
from tokenrelay.gate.keys import KeyStore

CAPTURES = Path(__file__).resolve().parent / "data" / "agents"
ANSWER = "hello from the simulator"  # the simulator's answer, steered by x-sim-text
STEER = {"x-sim-text": ANSWER}

# The defects, as found on 2026-12-06 against main 9e5d7ac (see docs/agents.md); those fixed
# since (mid-conversation system messages, max_tokens 128000 on provider models, system blocks
# merged, tool fields dropped, no route for agents, hosted tools, the WebSocket's 405) have
# lost their marks.
_HOP = frozenset({"host", "content-length", "connection", "accept-encoding", "authorization"})


def capture(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((CAPTURES / f"{name}.json").read_text())
    return data


def posts(name: str) -> list[dict[str, Any]]:
    return [r for r in capture(name)["requests"] if r["method"] == "POST"]


def headers_of(request: dict[str, Any]) -> dict[str, str]:
    return {name: value for name, value in request["headers"] if name not in _HOP}


def without_system_messages(body: dict[str, Any]) -> dict[str, Any]:
    """The request without its mid-conversation system messages, to get past that refusal and
    see the next (Claude Code itself, after the 400, moves their text into the user turn)."""
    return {**body, "messages": [m for m in body["messages"] if m["role"] != "system"]}


def without_hosted_tools(body: dict[str, Any]) -> dict[str, Any]:
    return {**body, "tools": [t for t in body["tools"] if t["type"] in ("function", "custom")]}


class Keyed:
    """A running gateway and a key for it (in demo mode, ``upstream_requests`` are what its
    built-in simulator received)."""

    def __init__(self, gw: RunningGateway, secret: str, simulator: Any = None) -> None:
        self.gw = gw
        self.secret = secret
        self.simulator = simulator  # the upstream, outside demo mode

    @property
    def upstream_requests(self) -> list[dict[str, Any]]:
        simulator = self.simulator or self.gw.gateway.simulator
        assert simulator is not None
        requests: list[dict[str, Any]] = simulator.stats()["last_requests"]
        return requests

    async def replay(
        self, request: dict[str, Any], body: dict[str, Any] | None = None
    ) -> tuple[int, str]:
        """The captured request (``body`` instead of its own, when given) with our key."""
        headers = {**headers_of(request), "authorization": f"Bearer {self.secret}"}
        query = [(k, v) for k, v in request["query"]]
        sent = request["body"] if body is None else body
        async with (
            aiohttp.ClientSession() as http,
            http.request(
                request["method"],
                self.gw.url + request["path"],
                params=query,
                headers=headers,
                data=None if sent is None else json.dumps(sent),
            ) as response,
        ):
            return response.status, await response.text()


async def new_key(gw: RunningGateway) -> str:
    _, secret = await KeyStore(await gw.gateway.gate.database()).create("agent", "tests")
    return secret


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def demo() -> AsyncIterator[Keyed]:
    scratch = tempfile.mkdtemp(prefix="tokenrelay-agents-")
    environ = clean_environ(
        TOKENRELAY_DATABASE_URL=f"sqlite:///{scratch}/gateway.db",
        TOKENRELAY_SIMULATOR__TTFT_MS="5",
        TOKENRELAY_SIMULATOR__TOKEN_DELAY_MS="1",
        TOKENRELAY_ANONYMOUS_LIMIT="100000/minute",
    )
    async with gateway_server(environ) as gw:
        assert gw.gateway.demo
        yield Keyed(gw, await new_key(gw))


def completed_stream(status: int, text: str, last_event: str) -> None:
    assert status == 200, text[:600]
    assert f"event: {last_event}" in text, text[-600:]


# --- replays: Claude Code ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "index"),
    [
        ("claude_code_say_hi_provider_model", 0),
        ("claude_code_say_hi_route_alias", 0),
        ("claude_code_tool_turn", 0),
        ("claude_code_tool_turn", 1),
    ],
)
async def test_claude_code_requests_as_sent(demo: Keyed, name: str, index: int) -> None:
    status, text = await demo.replay(posts(name)[index])
    completed_stream(status, text, "message_stop")


async def test_claude_code_mid_conversation_system_message(demo: Keyed) -> None:
    request = posts("claude_code_say_hi_provider_model")[0]
    assert [m["role"] for m in request["body"]["messages"]] == ["user", "system"]
    status, text = await demo.replay(request, {**request["body"], "max_tokens": 32000})
    completed_stream(status, text, "message_stop")
    sent = demo.upstream_requests[-1]["body"]
    assert sent["messages"] == request["body"]["messages"]  # in its place, as sent


async def test_claude_code_max_tokens(demo: Keyed) -> None:
    request = posts("claude_code_say_hi_provider_model")[0]
    assert request["body"]["max_tokens"] == 128000
    status, text = await demo.replay(request)
    completed_stream(status, text, "message_stop")
    assert demo.upstream_requests[-1]["body"]["max_tokens"] == 128000


async def claude_code_upstream(demo: Keyed, index: int) -> tuple[dict[str, Any], dict[str, Any]]:
    """A Claude Code request as sent, and what the Anthropic upstream received for it."""
    request = posts("claude_code_tool_turn")[index]
    body = request["body"]
    status, text = await demo.replay(request, body)
    completed_stream(status, text, "message_stop")
    upstream = demo.upstream_requests[-1]
    assert upstream["path"] == "/v1/messages"
    return body, upstream["body"]


@pytest.mark.parametrize("index", [0, 1])
async def test_claude_code_fields_reach_the_anthropic_upstream(demo: Keyed, index: int) -> None:
    """What the gateway carries: thinking, context_management, output_config, metadata, the 12
    tools, the system prompt, the mid-conversation system message in its place, and a tool round
    trip with its cache_control."""
    body, sent = await claude_code_upstream(demo, index)
    for field in ("thinking", "context_management", "output_config", "metadata"):
        assert sent[field] == body[field], field
    assert [t["name"] for t in sent["tools"]] == [t["name"] for t in body["tools"]]
    assert sent["messages"] == body["messages"]
    system = "\n".join(block["text"] for block in sent["system"])
    assert all(block["text"].strip() in system for block in body["system"])


async def test_claude_code_system_blocks_reach_the_anthropic_upstream(demo: Keyed) -> None:
    body, sent = await claude_code_upstream(demo, 0)
    assert sum("cache_control" in block for block in body["system"]) == 2
    assert sent["system"] == body["system"]


async def test_claude_code_tools_reach_the_anthropic_upstream_untouched(demo: Keyed) -> None:
    body, sent = await claude_code_upstream(demo, 0)
    assert any("defer_loading" in tool for tool in body["tools"])
    assert sent["tools"] == body["tools"]


async def test_claude_code_betas_reach_the_anthropic_upstream(demo: Keyed) -> None:
    request = posts("claude_code_say_hi_provider_model")[0]
    body = {**without_system_messages(request["body"]), "max_tokens": 32000}
    status, text = await demo.replay(request, body)
    completed_stream(status, text, "message_stop")
    betas = headers_of(request)["anthropic-beta"]
    assert len(betas.split(",")) == 8
    assert demo.upstream_requests[-1]["headers"].get("anthropic-beta") == betas


async def test_claude_code_on_route_agent(demo: Keyed) -> None:
    """The built-in route for agents takes Claude Code's request as sent (its own system
    prompt, max_tokens 32000) and the Anthropic upstream gets it whole."""
    request = posts("claude_code_say_hi_route_name")[0]
    assert request["body"]["model"] == "default"
    body = {**request["body"], "model": "agent"}
    status, text = await demo.replay(request, body)
    completed_stream(status, text, "message_stop")
    sent = demo.upstream_requests[-1]["body"]
    assert sent["system"] == body["system"] and sent["messages"] == body["messages"]
    assert sent["max_tokens"] == 32000


async def test_route_default_still_refuses_a_client_system_prompt(demo: Keyed) -> None:
    """``default`` stays the article's safe web route: agents go to ``agent``."""
    request = posts("claude_code_say_hi_route_name")[0]
    status, text = await demo.replay(request)
    assert status == 400, text
    assert "system prompt" in json.loads(text)["error"]["message"]


@pytest.mark.parametrize("index", [0, 1, 12])
async def test_claude_code_count_tokens(demo: Keyed, index: int) -> None:
    request = posts("claude_code_context")[index]
    assert request["path"] == "/v1/messages/count_tokens"
    assert request["query"] == [["beta", "true"]]
    status, text = await demo.replay(request)
    assert status == 200, text
    assert json.loads(text)["input_tokens"] > 0


# --- replays: Codex ------------------------------------------------------------------------------


@pytest.mark.parametrize(("name", "index"), [("codex_say_hi", 0), ("codex_tool_turn", 1)])
async def test_codex_requests_as_sent(demo: Keyed, name: str, index: int) -> None:
    status, text = await demo.replay(posts(name)[index])
    completed_stream(status, text, "response.completed")


async def test_codex_hosted_tools_are_carried_or_named(demo: Keyed) -> None:
    status, text = await demo.replay(posts("codex_say_hi")[0])
    if status != 200:
        assert status == 400
        message = json.loads(text)["error"]["message"]
        assert "web_search" in message or "tool_search" in message, message


@pytest.mark.parametrize(("name", "index"), [("codex_say_hi", 0), ("codex_tool_turn", 1)])
async def test_codex_request_reaches_the_responses_upstream_untouched(
    demo: Keyed, name: str, index: int
) -> None:
    """The built-in openai provider (api "auto") sends a Responses client's request to the
    upstream's /responses: Codex's tools (hosted, namespace, custom), client_metadata, include
    reasoning and its input items (ids, developer messages) arrive as sent."""
    request = posts(name)[index]
    status, text = await demo.replay(request)
    completed_stream(status, text, "response.completed")
    upstream = demo.upstream_requests[-1]
    assert upstream["path"] == "/v1/responses"
    sent = request["body"]
    for key in ("tools", "client_metadata", "include", "input", "prompt_cache_key", "reasoning"):
        assert upstream["body"][key] == sent[key], key
    assert "instructions" not in upstream["body"]  # the developer messages stay in the input


@pytest.mark.parametrize(("name", "index"), [("codex_say_hi", 0), ("codex_tool_turn", 1)])
async def test_codex_function_and_custom_tools_reach_a_chat_upstream(
    configured: Keyed, name: str, index: int
) -> None:
    """Without the hosted tools, Codex's request crosses to Chat Completions (a provider with
    api "chat"): its function tools as functions, apply_patch (a custom tool) as a function of
    one string, and the exec_command call with its output as a tool call and a tool message."""
    request = posts(name)[index]
    body = {**without_hosted_tools(request["body"]), "model": "codex_chat"}
    status, text = await configured.replay(request, body)
    completed_stream(status, text, "response.completed")
    upstream = configured.upstream_requests[-1]
    assert upstream["path"] == "/v1/chat/completions"
    names = [t["function"]["name"] for t in upstream["body"]["tools"]]
    assert names == [t["name"] for t in body["tools"]]
    assert "apply_patch" in names
    if name == "codex_tool_turn":
        messages = upstream["body"]["messages"]
        call = next(m for m in messages if m.get("tool_calls"))
        assert call["tool_calls"][0]["function"]["name"] == "exec_command"
        assert messages[-1]["role"] == "tool"
        assert "hello from the fixture" in messages[-1]["content"]


async def test_codex_on_route_agent_without_its_hosted_tools(demo: Keyed) -> None:
    request = posts("codex_say_hi_route_name")[0]
    assert request["body"]["model"] == "default"
    body = {**without_hosted_tools(request["body"]), "model": "agent"}
    status, text = await demo.replay(request, body)
    completed_stream(status, text, "response.completed")


async def test_codex_on_route_agent(demo: Keyed) -> None:
    request = posts("codex_say_hi_route_name")[0]
    status, text = await demo.replay(request, {**request["body"], "model": "agent"})
    completed_stream(status, text, "response.completed")


async def test_codex_websocket_upgrade_is_refused_with_426(demo: Keyed) -> None:
    upgrade = capture("codex_say_hi")["requests"][0]
    assert upgrade["websocket_upgrade"] and upgrade["method"] == "GET"
    headers = {**headers_of(upgrade), "connection": "Upgrade"}
    headers["authorization"] = f"Bearer {demo.secret}"
    async with (
        aiohttp.ClientSession() as http,
        http.get(demo.gw.url + upgrade["path"], headers=headers) as response,
    ):
        assert response.status in (101, 426), response.status


# --- the real programs ---------------------------------------------------------------------------


def exited_with_answer(run: AgentRun) -> None:
    assert run.exit_code == 0, run.describe()
    assert ANSWER in run.stdout, run.describe()


@pytest.fixture
def agents() -> None:
    require_installed()


@pytest.mark.usefixtures("agents")
async def test_claude_code_runs_on_a_provider_model(demo: Keyed) -> None:
    since = len(demo.gw.records)
    run = await run_claude(
        demo.gw.url, "say hi", model="claude-sonnet-5-5", key=demo.secret, headers=STEER
    )
    exited_with_answer(run)
    assert not refused(await settled(demo.gw, since))


@pytest.mark.usefixtures("agents")
async def test_claude_code_runs_with_its_output_capped(demo: Keyed) -> None:
    """With its output capped (CLAUDE_CODE_MAX_OUTPUT_TOKENS=32000, the workaround before the
    limit was raised) Claude Code completes, metered under the model's name."""
    since = len(demo.gw.records)
    run = await run_claude(
        demo.gw.url,
        "say hi",
        model="claude-sonnet-5-5",
        key=demo.secret,
        headers=STEER,
        env={"CLAUDE_CODE_MAX_OUTPUT_TOKENS": "32000"},
    )
    exited_with_answer(run)
    records = await settled(demo.gw, since)
    served = [r for r in records if r.outcome == "completed"]
    assert [(r.route, r.model, r.dialect) for r in served] == [
        ("claude-sonnet-5-5", "claude-sonnet-5-5", "anthropic")
    ]
    assert served[0].identity is not None and served[0].identity.user == "agent"
    rows = await ledger_rows(demo.gw, [r.request_id for r in records])
    assert {(row["route"], row["status"]) for row in rows} >= {("claude-sonnet-5-5", 200)}


@pytest.mark.usefixtures("agents")
async def test_claude_code_with_its_output_capped_is_never_refused(demo: Keyed) -> None:
    since = len(demo.gw.records)
    run = await run_claude(
        demo.gw.url,
        "say hi",
        model="claude-sonnet-5-5",
        key=demo.secret,
        headers=STEER,
        env={"CLAUDE_CODE_MAX_OUTPUT_TOKENS": "32000"},
    )
    exited_with_answer(run)
    assert not refused(await settled(demo.gw, since))


@pytest.mark.usefixtures("agents")
async def test_claude_code_context_report_completes(demo: Keyed) -> None:
    """`/context` asks count_tokens 24 times; Claude Code estimates by itself when it fails."""
    run = await run_claude(demo.gw.url, "/context", model="claude-sonnet-5-5", key=demo.secret)
    assert run.exit_code == 0, run.describe()
    assert "Context Usage" in run.stdout, run.describe()


@pytest.mark.usefixtures("agents")
async def test_claude_code_context_report_counts_through_the_gateway(demo: Keyed) -> None:
    proxy = await recorder.start(upstream=demo.gw.url)
    try:
        run = await run_claude(proxy.url, "/context", model="claude-sonnet-5-5", key=demo.secret)
    finally:
        await proxy.stop()
    assert run.exit_code == 0, run.describe()
    counts = [r for r in proxy.records if r["path"] == "/v1/messages/count_tokens"]
    assert counts
    assert {r["response"]["status"] for r in counts} == {200}


@pytest.mark.usefixtures("agents")
async def test_claude_code_runs_on_route_agent(demo: Keyed) -> None:
    # `--model opus` with ANTHROPIC_DEFAULT_OPUS_MODEL names the route (Claude Code resolves a
    # bare `--model agent` itself too, but this is the documented way, as for any route).
    since = len(demo.gw.records)
    run = await run_claude(
        demo.gw.url,
        "say hi",
        model="opus",
        key=demo.secret,
        headers=STEER,
        env={"ANTHROPIC_DEFAULT_OPUS_MODEL": "agent"},
    )
    exited_with_answer(run)
    records = await settled(demo.gw, since)
    assert not refused(records)
    assert {(r.route, r.dialect) for r in records} == {("agent", "anthropic")}


@pytest.mark.usefixtures("agents")
async def test_codex_runs_on_a_provider_model(demo: Keyed) -> None:
    since = len(demo.gw.records)
    run = await run_codex(
        demo.gw.url + "/v1", "say hi", model="gpt-5.5", key=demo.secret, headers=STEER
    )
    exited_with_answer(run)
    records = await settled(demo.gw, since)
    assert not refused(records)
    assert [(r.model, r.dialect, r.status) for r in records] == [("gpt-5.5", "responses", 200)]
    assert records[0].attempts[0].provider == "openai"  # api "auto": through its /responses
    rows = await ledger_rows(demo.gw, [records[0].request_id])
    assert [(row["route"], row["status"]) for row in rows] == [("gpt-5.5", 200)]


@pytest.mark.usefixtures("agents")
async def test_codex_runs_on_route_agent(demo: Keyed) -> None:
    since = len(demo.gw.records)
    run = await run_codex(
        demo.gw.url + "/v1", "say hi", model="agent", key=demo.secret, headers=STEER
    )
    exited_with_answer(run)
    assert not refused(await settled(demo.gw, since))


@pytest.mark.usefixtures("agents")
async def test_codex_falls_back_from_websocket_at_once(demo: Keyed) -> None:
    """With supports_websockets = true (the built-in OpenAI provider's setting), Codex tries a
    WebSocket first; a recorder in front of the gateway times the fallback to POST."""
    proxy = await recorder.start(upstream=demo.gw.url)
    try:
        await run_codex(
            proxy.url + "/v1",
            "say hi",
            model="gpt-5.5",
            key=demo.secret,
            headers=STEER,
            websockets=True,
        )
    finally:
        await proxy.stop()
    upgrades = [r for r in proxy.records if r["websocket_upgrade"]]
    first_post = next(r for r in proxy.records if r["method"] == "POST")
    assert upgrades, "Codex did not try a WebSocket"
    assert len(upgrades) == 1, [r["response"]["status"] for r in upgrades]
    assert upgrades[0]["response"]["status"] == 426
    assert first_post["at"] - upgrades[0]["at"] < 2.0  # 6.4 - 6.9 s when it was a 405


# --- the real programs on routes configured for them (what works today) -------------------------


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def configured(simulator: Any) -> AsyncIterator[Keyed]:
    """Routes made for agents, over the shared simulator: ``codex`` on a Responses upstream and
    ``agents`` on Anthropic, both taking the agent's own system prompt and large max_tokens."""
    scratch = tempfile.mkdtemp(prefix="tokenrelay-agents-")
    environ = clean_environ(
        TOKENRELAY_DATABASE_URL=f"sqlite:///{scratch}/gateway.db",
        TOKENRELAY_PROVIDERS__ANTHROPIC__BASE_URL=simulator.url,
        TOKENRELAY_PROVIDERS__ANTHROPIC__API_KEY="sim",
        TOKENRELAY_PROVIDERS__ANTHROPIC__FORWARD_HEADERS='["x-sim-"]',
        TOKENRELAY_PROVIDERS__RESPONSES__KIND="openai",
        TOKENRELAY_PROVIDERS__RESPONSES__API="responses",
        TOKENRELAY_PROVIDERS__RESPONSES__BASE_URL=simulator.url + "/v1",
        TOKENRELAY_PROVIDERS__RESPONSES__API_KEY="sim",
        TOKENRELAY_PROVIDERS__RESPONSES__FORWARD_HEADERS='["x-sim-"]',
        TOKENRELAY_ROUTES__CODEX__TARGETS="responses:gpt-5.5",
        TOKENRELAY_ROUTES__CODEX__ALLOW_CLIENT_SYSTEM="true",
        TOKENRELAY_ROUTES__CODEX__SYSTEM="",
        TOKENRELAY_PROVIDERS__CHAT__KIND="openai",
        TOKENRELAY_PROVIDERS__CHAT__BASE_URL=simulator.url + "/v1",
        TOKENRELAY_PROVIDERS__CHAT__API_KEY="sim",
        TOKENRELAY_ROUTES__CODEX_CHAT__TARGETS="chat:gpt-5.5",
        TOKENRELAY_ROUTES__CODEX_CHAT__ALLOW_CLIENT_SYSTEM="true",
        TOKENRELAY_ROUTES__CODEX_CHAT__SYSTEM="",
        TOKENRELAY_ROUTES__CODEX_CLAUDE__TARGETS="anthropic:claude-sonnet-5-5",
        TOKENRELAY_ROUTES__CODEX_CLAUDE__ALLOW_CLIENT_SYSTEM="true",
        TOKENRELAY_ROUTES__CODEX_CLAUDE__SYSTEM="",
        TOKENRELAY_ROUTES__CODEX_CLAUDE__HOSTED_TOOLS="drop",
        TOKENRELAY_ROUTES__AGENTS__TARGETS="anthropic:claude-sonnet-5-5",
        TOKENRELAY_ROUTES__AGENTS__ALLOW_CLIENT_SYSTEM="true",
        TOKENRELAY_ROUTES__AGENTS__SYSTEM="",
        TOKENRELAY_ROUTES__AGENTS__MAX_TOKENS_LIMIT="128000",
        TOKENRELAY_BREAKER__ENABLED="false",
    )
    async with gateway_server(environ) as gw:
        assert not gw.gateway.demo
        yield Keyed(gw, await new_key(gw), simulator)


@pytest.mark.usefixtures("agents")
async def test_codex_runs_on_a_route_with_a_responses_upstream(configured: Keyed) -> None:
    since = len(configured.gw.records)
    run = await run_codex(
        configured.gw.url + "/v1", "say hi", model="codex", key=configured.secret, headers=STEER
    )
    exited_with_answer(run)
    records = await settled(configured.gw, since)
    assert [(r.route, r.model, r.dialect, r.status) for r in records] == [
        ("codex", "gpt-5.5", "responses", 200)
    ]
    rows = await ledger_rows(configured.gw, [records[0].request_id])
    assert [(row["route"], row["status"]) for row in rows] == [("codex", 200)]


@pytest.mark.usefixtures("agents")
async def test_codex_runs_on_a_route_served_by_anthropic(configured: Keyed) -> None:
    """Codex on a Claude route (hosted_tools = "drop"): its web_search and namespace tools are
    left out and named in the audit record, its function and custom tools cross."""
    since = len(configured.gw.records)
    run = await run_codex(
        configured.gw.url + "/v1",
        "say hi",
        model="codex_claude",
        key=configured.secret,
        headers=STEER,
    )
    exited_with_answer(run)
    records = await settled(configured.gw, since)
    assert [(r.route, r.model, r.dialect, r.status) for r in records] == [
        ("codex_claude", "claude-sonnet-5-5", "responses", 200)
    ]
    assert "web_search" in records[0].dropped_tools
    rows = await ledger_rows(configured.gw, [records[0].request_id])
    assert [(row["route"], row["status"]) for row in rows] == [("codex_claude", 200)]


@pytest.mark.usefixtures("agents")
async def test_claude_code_runs_on_a_route_made_for_it(configured: Keyed) -> None:
    since = len(configured.gw.records)
    run = await run_claude(
        configured.gw.url, "say hi", model="agents", key=configured.secret, headers=STEER
    )
    exited_with_answer(run)
    records = await settled(configured.gw, since)
    served = [(r.route, r.model, r.status) for r in records if r.status == 200]
    assert served == [("agents", "claude-sonnet-5-5", 200)]


def test_captures_are_sanitized() -> None:
    """No temporary path, no key: the fixtures hold placeholders."""
    for path in CAPTURES.glob("*.json"):
        text = path.read_text()
        assert "/tmp/" not in text and "trk_" not in text, path.name
        data = json.loads(text)
        assert data["exit_code"] == 0 and data["requests"], path.name
        auth = [dict(r["headers"]).get("authorization") for r in data["requests"]]
        assert set(auth) == {"Bearer <KEY>"}, path.name

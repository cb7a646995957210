"""An Anthropic client's request reaches an Anthropic upstream as it was sent, and crosses to
other dialects translated or refused by name (issue 14 section 5).

The bodies are Claude Code 2.1's own (``tests/data/agents/``), replayed against a gateway in
demo mode; the assertions read what its built-in simulator received.
"""

from __future__ import annotations

import copy
import json
import tempfile
from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_asyncio

from tests.servers import clean_environ, gateway_server
from tests.test_agents_cli import Keyed, completed_stream, headers_of, new_key, posts
from tokenrelay.dialects import anthropic, generate, responses
from tokenrelay.model import Untranslatable

# Anthropic-only top-level fields of Claude Code's requests: they pass to Anthropic, and are
# refused by name on the way to anything else, so the cross-dialect replays leave them out.
ANTHROPIC_ONLY = ("thinking", "context_management", "output_config")


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def gw() -> AsyncIterator[Keyed]:
    """Demo mode with two routes of our own: ``routed`` (Anthropic, with a route system
    prompt) and ``chat`` (Chat Completions), both taking the client's system prompt and Claude
    Code's max_tokens."""
    scratch = tempfile.mkdtemp(prefix="tokenrelay-passthrough-")
    routes: dict[str, str] = {}
    for name, target, system in (
        ("ROUTED", "anthropic:claude-sonnet-5-5", "ROUTE RULES"),
        ("CHAT", "openai:gpt-5.5", ""),
    ):
        routes[f"TOKENRELAY_ROUTES__{name}__TARGETS"] = target
        routes[f"TOKENRELAY_ROUTES__{name}__SYSTEM"] = system
        routes[f"TOKENRELAY_ROUTES__{name}__ALLOW_CLIENT_SYSTEM"] = "true"
        routes[f"TOKENRELAY_ROUTES__{name}__MAX_TOKENS_LIMIT"] = "128000"
        routes[f"TOKENRELAY_ROUTES__{name}__SCREEN__MODE"] = "flag"
    environ = clean_environ(
        TOKENRELAY_DATABASE_URL=f"sqlite:///{scratch}/gateway.db",
        TOKENRELAY_SIMULATOR__TTFT_MS="5",
        TOKENRELAY_SIMULATOR__TOKEN_DELAY_MS="1",
        TOKENRELAY_ANONYMOUS_LIMIT="100000/minute",
        **routes,
    )
    async with gateway_server(environ) as gateway:
        assert gateway.gateway.demo
        yield Keyed(gateway, await new_key(gateway))


def claude_code(index: int = 0) -> tuple[dict[str, Any], dict[str, Any]]:
    """A captured Claude Code request (0: the first turn, 1: after a tool call) and its body."""
    request = posts("claude_code_tool_turn")[index]
    return request, copy.deepcopy(request["body"])


async def upstream_of(gw: Keyed, request: dict[str, Any], body: dict[str, Any]) -> dict[str, Any]:
    status, text = await gw.replay(request, body)
    completed_stream(status, text, "message_stop")
    sent: dict[str, Any] = gw.upstream_requests[-1]
    return sent


# --- to an Anthropic upstream: untouched ---------------------------------------------------------


@pytest.mark.parametrize("index", [0, 1])
async def test_a_claude_code_request_reaches_anthropic_as_sent(gw: Keyed, index: int) -> None:
    request, body = claude_code(index)
    sent = await upstream_of(gw, request, body)
    assert sent["path"] == "/v1/messages"
    received = sent["body"]
    assert received["system"] == body["system"]
    assert [("cache_control" in block) for block in received["system"]] == [False, True, True]
    assert received["messages"] == body["messages"]
    assert received["tools"] == body["tools"]
    assert {key: value for key, value in received.items() if key != "stream"} == {
        key: value for key, value in body.items() if key != "stream"
    }


async def test_the_mid_conversation_system_message_keeps_its_place(gw: Keyed) -> None:
    request, body = claude_code(1)
    assert [m["role"] for m in body["messages"]] == ["user", "system", "assistant", "user"]
    received = (await upstream_of(gw, request, body))["body"]
    assert [m["role"] for m in received["messages"]] == ["user", "system", "assistant", "user"]
    assert received["messages"][1] == body["messages"][1]  # a string, as sent
    first = (await upstream_of(gw, *claude_code(0)))["body"]["messages"][1]
    assert first["content"][0]["cache_control"] == {"type": "ephemeral"}  # blocks, as sent
    assert first["output_config"] == {"effort": "medium"}  # the turn's own field


async def test_defer_loading_and_unknown_tool_fields_pass_through(gw: Keyed) -> None:
    request, body = claude_code(0)
    body["tools"][0]["eager_input_streaming"] = True
    body["tools"][1]["some_future_field"] = {"x": 1}
    received = (await upstream_of(gw, request, body))["body"]
    deferred = [t["name"] for t in received["tools"] if t.get("defer_loading")]
    assert deferred == ["DeferredToolPlaceholder"]
    assert received["tools"] == body["tools"]


async def test_unknown_blocks_and_top_level_fields_pass_through(gw: Keyed) -> None:
    request, body = claude_code(0)
    document = {
        "type": "document",
        "source": {"type": "text", "media_type": "text/plain", "data": "The notes."},
        "citations": {"enabled": True},
    }
    body["messages"][0]["content"].append(document)
    body["some_new_option"] = {"enabled": True}
    received = (await upstream_of(gw, request, body))["body"]
    assert received["messages"][0]["content"][-1] == document
    assert received["some_new_option"] == {"enabled": True}
    for field in (*ANTHROPIC_ONLY, "metadata"):
        assert received[field] == body[field], field


async def test_betas_do_not_change_the_body(gw: Keyed) -> None:
    """The request with its eight anthropic-beta values is served, its body unchanged; the
    header itself is the route's forwarding setting's business, not the dialect's."""
    request, body = claude_code(0)
    assert len(headers_of(request)["anthropic-beta"].split(",")) == 8
    received = (await upstream_of(gw, request, body))["body"]
    assert received["system"] == body["system"] and received["messages"] == body["messages"]


async def test_a_route_system_prompt_is_a_block_of_its_own_before_the_clients(gw: Keyed) -> None:
    request, body = claude_code(0)
    received = (await upstream_of(gw, request, {**body, "model": "routed"}))["body"]
    assert received["system"] == [{"type": "text", "text": "ROUTE RULES"}, *body["system"]]
    assert received["messages"] == body["messages"]


# --- across dialects: translated, or refused by name ---------------------------------------------


def portable(body: dict[str, Any], model: str) -> dict[str, Any]:
    """Claude Code's body without what only Anthropic has (checked refused below)."""
    out = {key: value for key, value in body.items() if key not in ANTHROPIC_ONLY}
    out["messages"] = [{"role": m["role"], "content": m["content"]} for m in body["messages"]]
    return {**out, "model": model}


async def test_to_chat_completions_a_system_message_becomes_a_developer_message(
    gw: Keyed,
) -> None:
    request, body = claude_code(1)
    received = (await upstream_of(gw, request, portable(body, "chat")))["body"]
    assert gw.upstream_requests[-1]["path"] == "/v1/chat/completions"
    messages = received["messages"]
    joined = "\n\n".join(block["text"] for block in body["system"])
    assert messages[0] == {"role": "system", "content": joined}
    assert [m["role"] for m in messages] == ["system", "user", "developer", "assistant", "tool"]
    assert messages[2]["content"] == body["messages"][1]["content"]
    names = [tool["function"]["name"] for tool in received["tools"]]
    assert names == [tool["name"] for tool in body["tools"]]
    assert "defer_loading" not in json.dumps(received["tools"])  # a hint, dropped
    assert "cache_control" not in json.dumps(received)


def test_to_the_responses_api_a_system_message_becomes_a_developer_item() -> None:
    """The encoder alone: demo mode's Responses provider cannot be named by a configured route."""
    _, body = claude_code(0)
    parsed = anthropic.parse_request(json.dumps(portable(body, "x")).encode())
    received = json.loads(responses.encode_request(parsed, "gpt-5.5", stream=True))
    assert received["instructions"] == "\n\n".join(block["text"] for block in body["system"])
    roles = [item.get("role") for item in received["input"]]
    assert roles == ["user", "developer"]
    assert received["input"][1]["content"][0]["text"] == body["messages"][1]["content"][0]["text"]
    assert "defer_loading" not in json.dumps(received["tools"])


@pytest.mark.parametrize("field", ANTHROPIC_ONLY)
async def test_anthropic_only_fields_are_refused_by_name_across_dialects(
    gw: Keyed, field: str
) -> None:
    request, body = claude_code(0)
    sent = {**portable(body, "chat"), field: body[field]}
    status, text = await gw.replay(request, sent)
    assert status == 400, text
    assert field in json.loads(text)["error"]["message"]


@pytest.mark.parametrize(
    ("change", "named"),
    [
        (lambda b: b["messages"][1].update(output_config={"effort": "low"}), "messages[1]"),
        (lambda b: b["tools"][0].update(strict_mode="x"), "tools[0].strict_mode"),
        (lambda b: b["messages"][0]["content"].append({"type": "search_result"}), "search_result"),
    ],
)
async def test_what_chat_completions_cannot_carry_is_refused_by_name(
    gw: Keyed, change: Any, named: str
) -> None:
    request, body = claude_code(0)
    sent = portable(body, "chat")
    change(sent)
    status, text = await gw.replay(request, sent)
    assert status == 400, text
    error = json.loads(text)["error"]
    assert error["type"] == "invalid_request_error"
    assert named in error["message"], error["message"]


def test_to_api_generate_a_system_message_is_refused_by_name() -> None:
    _, body = claude_code(0)
    parsed = anthropic.parse_request(json.dumps(body).encode())
    parsed.messages = parsed.messages[1:]  # the system message alone: still not a prompt
    with pytest.raises(Untranslatable, match="system message"):
        generate.encode_request(parsed, "default", stream=True)


# --- the built-in route for agents ---------------------------------------------------------------


def test_the_agent_route_takes_an_agents_own_prompt_and_output_size() -> None:
    from tokenrelay.settings import load

    settings = load(environ={})
    agent, default = settings.routes["agent"], settings.routes["default"]
    assert [t.provider for t in agent.targets] == [t.provider for t in default.targets]
    assert agent.system is None and agent.allow_client_system
    assert agent.max_tokens_limit == 128000 and agent.screen.max_prompt_chars is None
    assert agent.screen.mode == "flag"
    # default stays the article's web route
    assert default.system and not default.allow_client_system
    assert default.max_tokens_limit == 4096 and default.screen.max_prompt_chars == 2000
    assert settings.provider_models.max_tokens_limit == 128000


async def test_claude_code_on_the_agent_route_reaches_anthropic_as_sent(gw: Keyed) -> None:
    request, body = claude_code(1)
    received = (await upstream_of(gw, request, {**body, "model": "agent"}))["body"]
    assert received["system"] == body["system"] and received["messages"] == body["messages"]
    assert received["max_tokens"] == body["max_tokens"]


async def test_a_route_that_refuses_client_system_prompts_refuses_system_messages(
    gw: Keyed,
) -> None:
    """No way around ``allow_client_system = false``: a system message in the middle of the
    conversation is the client's instructions as much as a top-level ``system``."""
    request, body = claude_code(0)
    sent = {**body, "model": "default", "max_tokens": 100}
    del sent["system"]
    status, text = await gw.replay(request, sent)
    assert status == 400, text
    error = json.loads(text)["error"]
    assert "does not accept one from the client" in error["message"]

"""Azure OpenAI in demo mode: the built-in ``azure`` provider is served by the simulator, so a
route that fails over across clouds (Claude on Anthropic, Claude on Bedrock, GPT on Azure) can be
shown offline."""

from __future__ import annotations

import tempfile
from typing import Any

import aiohttp
import msgspec
import pytest

from tests.servers import gateway_server
from tokenrelay import transports

pytestmark = pytest.mark.asyncio(loop_scope="session")

BEDROCK_MODEL = "us.anthropic.claude-sonnet-4-5-20250929-v1:0"
DOWN = {"x-sim-fault": "503"}


def demo_environ(targets: list[dict[str, Any]], **extra: str) -> dict[str, str]:
    scratch = tempfile.mkdtemp(prefix="tokenrelay-azure-demo-")
    return {
        "TOKENRELAY_DEMO": "true",
        "TOKENRELAY_DATABASE_URL": f"sqlite:///{scratch}/keys.db",
        "TOKENRELAY_ANONYMOUS_LIMIT": "100000/minute",
        "TOKENRELAY_BREAKER__ENABLED": "false",
        "TOKENRELAY_ROUTES__CLOUDS__TARGETS": msgspec.json.encode(targets).decode(),
        "TOKENRELAY_ROUTES__CLOUDS__RETRIES": "0",
        **extra,
    }


async def ask(url: str) -> tuple[int, dict[str, str], bytes]:
    body = {"model": "clouds", "stream": True, "messages": [{"role": "user", "content": "hi"}]}
    async with (
        aiohttp.ClientSession() as http,
        http.post(url + "/v1/chat/completions", json=body) as response,
    ):
        headers = {k.lower(): v for k, v in response.headers.items()}
        return response.status, headers, await response.read()


async def test_demo_mode_serves_azure_after_anthropic_is_down() -> None:
    targets: list[dict[str, Any]] = [
        {"provider": "anthropic", "model": "claude-sonnet-5-5", "headers": DOWN},
        {"provider": "azure", "model": "gpt-5.5"},
    ]
    async with gateway_server(demo_environ(targets)) as gw:
        status, headers, raw = await ask(gw.url)
    assert status == 200, raw
    assert headers["x-tokenrelay-demo"] == "true"
    assert headers["x-tokenrelay-provider"] == "azure"
    attempts = headers["x-tokenrelay-attempts"].split(", ")
    assert [a.split(";")[0] for a in attempts] == ["anthropic/claude-sonnet-5-5", "azure/gpt-5.5"]
    assert b"content_filter_results" not in raw  # Azure's own fields stay upstream


@pytest.mark.skipif(
    "bedrock" not in transports.NAMES, reason="the bedrock kind is not registered (i15bedrock)"
)
async def test_anthropic_then_bedrock_then_azure_in_demo_mode() -> None:
    """The issue's route: the first two simulated down, the answer comes from Azure, and the
    attempts header shows all three."""
    targets: list[dict[str, Any]] = [
        {"provider": "anthropic", "model": "claude-sonnet-5-5", "headers": DOWN},
        {"provider": "bedrock", "model": BEDROCK_MODEL, "headers": DOWN},
        {"provider": "azure", "model": "gpt-5.5"},
    ]
    extra = {
        "TOKENRELAY_PROVIDERS__BEDROCK__KIND": "bedrock",
        "TOKENRELAY_PROVIDERS__BEDROCK__REGION": "us-east-1",
        "TOKENRELAY_PROVIDERS__BEDROCK__API_KEY": "demo",  # a Bedrock API key: no AWS lookup
    }
    async with gateway_server(demo_environ(targets, **extra)) as gw:
        status, headers, raw = await ask(gw.url)
    assert status == 200, raw
    assert headers["x-tokenrelay-provider"] == "azure"
    attempts = headers["x-tokenrelay-attempts"].split(", ")
    assert [a.split(";")[0] for a in attempts] == [
        "anthropic/claude-sonnet-5-5",
        f"bedrock/{BEDROCK_MODEL}",
        "azure/gpt-5.5",
    ]
    assert all("outcome=ok" not in a for a in attempts[:2])

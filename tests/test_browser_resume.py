"""``useChat({ resume: true })`` in Chromium against a resumable route: the page reloaded
mid-answer reconnects with ``GET /api/chat/{id}/stream`` and shows the whole answer, generated
once (docs/resume.md). The page and its bundle are those of ``tests/test_browser_usechat.py``."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import urlencode, urlsplit

import msgspec
import pytest
import pytest_asyncio

from tests.servers import RunningGateway, gateway_environ, gateway_server
from tests.test_browser_usechat import MOUNT, TIMEOUT_MS, assets, browser

pytestmark = pytest.mark.asyncio(loop_scope="session")
__all__ = ["assets", "browser"]  # the fixtures, shared

SLOW = [
    {
        "provider": "anthropic",
        "model": "claude-sonnet-5-5",
        "headers": {"x-sim-tokens": "40", "x-sim-token-delay-ms": "60"},
    }
]


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def gw(simulator: Any) -> AsyncIterator[RunningGateway]:
    env = {
        **gateway_environ(simulator.url),
        "TOKENRELAY_ROUTES__RESUMEUI__TARGETS": msgspec.json.encode(SLOW).decode(),
        "TOKENRELAY_ROUTES__RESUMEUI__RESUME__GRACE": "15",
    }
    async with gateway_server(env) as running:
        yield running


async def test_a_page_reloaded_mid_answer_shows_the_whole_answer(
    gw: RunningGateway, browser: Any, assets: dict[str, tuple[str, bytes]], simulator: Any
) -> None:
    context = await browser.new_context(viewport={"width": 900, "height": 700})
    page = await context.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    crashes: list[str] = []
    page.on("pageerror", lambda error: crashes.append(str(error)))

    async def serve(request_route: Any) -> None:
        name = urlsplit(request_route.request.url).path.removeprefix(MOUNT)
        if name not in assets:
            await request_route.fulfill(status=404, body="not here")
            return
        content_type, body = assets[name]
        await request_route.fulfill(status=200, content_type=content_type, body=body)

    await page.route(lambda url: urlsplit(url).path.startswith(MOUNT), serve)
    query = urlencode({"route": "resumeui", "headers": json.dumps({}), "resume": "1"})
    before = int(simulator.stats()["requests"].get("/v1/messages", 0))
    records = len(gw.records)
    try:
        await page.goto(f"{gw.url}{MOUNT}index.html?{query}")
        await page.wait_for_selector('#status[data-status="ready"]')
        await page.fill("#prompt", "Tell me about resumable streams")
        await page.click("#send")
        await page.wait_for_function(
            "(document.querySelector('.message.assistant .text')?.textContent ?? '')"
            ".split(' ').length >= 5"
        )
        partial = await page.text_content(".message.assistant .text") or ""
        assert len(partial.split(" ")) < 40  # mid-answer
        async with page.expect_response(lambda r: r.url.endswith("/stream")) as resumed:
            await page.reload()
        response = await resumed.value
        assert response.status == 200
        await page.wait_for_selector(".message.assistant .text")
        await page.wait_for_function(
            "document.getElementById('status').dataset.status === 'ready' && "
            "(document.querySelector('.message.assistant .text')?.textContent ?? '')"
            ".split(' ').length >= 40"
        )
        text = await page.text_content(".message.assistant .text") or ""
        assert text.startswith(partial)
        assert len(text.split(" ")) == 40  # the whole answer, no event twice
        assert await page.text_content(".message.user .text") == "Tell me about resumable streams"
        roles = await page.eval_on_selector_all(
            "#messages > li", "els => els.map(e => e.dataset.role)"
        )
        assert roles == ["user", "assistant"]
        assert await page.query_selector("#error") is None
    finally:
        await context.close()
    assert crashes == [], crashes
    assert int(simulator.stats()["requests"].get("/v1/messages", 0)) - before == 1
    assert len(gw.records) - records == 1  # one request, one ledger row
    assert gw.records[-1].outcome == "completed"

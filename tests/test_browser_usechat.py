"""A real page using ``useChat`` from ``@ai-sdk/react`` with its default transport, against the
gateway's ``POST /api/chat``, in headless Chromium.

The page (``tests/node/usechat/page.jsx``) is bundled with esbuild from ``tests/node``'s
``node_modules`` and served through Playwright's ``page.route()`` at a URL on the gateway's own
origin, so ``useChat``'s default ``api: '/api/chat'`` reaches the real gateway, same origin.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import subprocess
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urlsplit

import pytest
import pytest_asyncio

from tests.browser import chromium, screenshot
from tests.servers import RunningGateway, gateway_environ, gateway_server
from tests.services import unavailable

pytestmark = pytest.mark.asyncio(loop_scope="session")

NODE_DIR = Path(__file__).resolve().parent / "node"
PAGE_DIR = NODE_DIR / "usechat"
MOUNT = "/__usechat_test__/"  # where the page seems to live, on the gateway's origin
TIMEOUT_MS = 10_000

# Installed before sending: records the assistant text's length at each DOM mutation and at
# each animation frame while the status is "streaming" (what was painted, frame by frame).
OBSERVE = """() => {
  const trace = { mutations: [], frames: [] };
  window.__trace = trace;
  const text = () => document.querySelector('.message.assistant .text')?.textContent ?? null;
  const status = () => document.getElementById('status').dataset.status;
  new MutationObserver(() => {
    const t = text();
    if (t !== null) trace.mutations.push({ status: status(), length: t.length });
  }).observe(document.getElementById('root'),
             { subtree: true, childList: true, characterData: true, attributes: true });
  const frame = () => {
    const t = text();
    if (t !== null && status() === 'streaming' && trace.frames.at(-1) !== t.length) {
      trace.frames.push(t.length);
    }
    if (t === null || status() !== 'ready') requestAnimationFrame(frame);
  };
  requestAnimationFrame(frame);
}"""


@pytest.fixture(scope="module")
def assets(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[str, bytes]]:
    """The page's HTML and its esbuild bundle, by path under MOUNT."""
    node = shutil.which("node")
    if node is None:
        unavailable("node is not installed (Node 20+; the AI SDK tests need it)")
    if not (NODE_DIR / "node_modules" / "esbuild").is_dir():
        unavailable("tests/node/node_modules is missing: run `npm ci --prefix tests/node`")
    out = tmp_path_factory.mktemp("usechat") / "app.js"
    build = subprocess.run(
        [node, str(PAGE_DIR / "build.mjs"), str(out)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert build.returncode == 0, build.stdout + build.stderr
    return {
        "index.html": ("text/html; charset=utf-8", (PAGE_DIR / "index.html").read_bytes()),
        "app.js": ("text/javascript; charset=utf-8", out.read_bytes()),
    }


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def gw(simulator: Any) -> AsyncIterator[RunningGateway]:
    async with gateway_server(gateway_environ(simulator.url)) as running:
        yield running


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def browser() -> AsyncIterator[Any]:
    async with chromium() as running:
        yield running


@contextlib.asynccontextmanager
async def chat_page(
    browser: Any,
    gw: RunningGateway,
    assets: dict[str, tuple[str, bytes]],
    route: str,
    headers: dict[str, str] | None = None,
) -> AsyncIterator[Any]:
    """The page, opened at ``<gateway>/__usechat_test__/index.html``; fails the test on any
    uncaught exception in the page."""
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
    query = urlencode({"route": route, "headers": json.dumps(headers or {})})
    await page.goto(f"{gw.url}{MOUNT}index.html?{query}")
    await page.wait_for_selector('#status[data-status="ready"]')
    try:
        yield page
    finally:
        await context.close()
    assert crashes == [], crashes


async def send(page: Any, text: str) -> None:
    await page.fill("#prompt", text)
    await page.click("#send")


async def status(page: Any) -> str:
    return str(await page.get_attribute("#status", "data-status"))


async def sim_stats(page: Any, simulator: Any) -> dict[str, Any]:
    """The simulator's GET /stats, over HTTP."""
    response = await page.request.get(f"{simulator.url}/stats")
    assert response.ok
    return dict(await response.json())


async def test_use_chat_streams_into_the_page_with_the_answers_metadata(
    gw: RunningGateway, browser: Any, assets: dict[str, tuple[str, bytes]], simulator: Any
) -> None:
    prompt = "Explain server-sent events in one paragraph"
    # 20 tokens 30 ms apart: long enough for the page to paint several partial answers
    async with chat_page(
        browser, gw, assets, route="oa", headers={"x-sim-token-delay-ms": "30"}
    ) as page:
        await page.evaluate(OBSERVE)
        async with page.expect_response(f"{gw.url}/api/chat") as answer:
            await send(page, prompt)
        response = await answer.value
        await page.wait_for_selector('#status[data-status="ready"]')
        await page.wait_for_selector('.assistant [data-field="request-id"]')

        direct = await page.request.post(
            f"{gw.url}/v1/chat/completions",
            data={"model": "oa", "messages": [{"role": "user", "content": prompt}]},
        )
        expected = await direct.json()
        text = await page.text_content(".message.assistant .text")
        assert text == expected["choices"][0]["message"]["content"]
        assert await page.text_content(".message.user .text") == prompt

        # what useChat sent, and what came back
        sent = json.loads(response.request.post_data)
        assert sent["route"] == "oa"
        assert sent["trigger"] == "submit-message"
        assert [m["role"] for m in sent["messages"]] == ["user"]
        assert sent["messages"][0]["parts"] == [{"type": "text", "text": prompt}]
        assert response.status == 200
        assert response.headers["x-vercel-ai-ui-message-stream"] == "v1"

        # incremental: several partial answers in the DOM and on screen before "ready"
        trace = await page.evaluate("window.__trace")
        streaming = {m["length"] for m in trace["mutations"] if m["status"] == "streaming"}
        partial = sorted(n for n in streaming if 0 < n < len(text))
        assert len(partial) >= 3, trace
        painted = [n for n in trace["frames"] if 0 < n < len(text)]
        assert len(painted) >= 3, trace
        assert painted == sorted(painted)

        # the finish chunk's messageMetadata, rendered on the message
        def field(name: str) -> Any:
            return page.text_content(f'.assistant [data-field="{name}"]')

        assert await field("route") == "oa"
        assert await field("provider") == "openai"
        assert await field("model") == "gpt-5.5"
        assert await field("input-tokens") == str(expected["usage"]["prompt_tokens"])
        assert await field("output-tokens") == str(expected["usage"]["completion_tokens"]) == "20"
        assert await field("request-id") == response.headers["x-request-id"]
        cost = await field("cost")
        assert cost.startswith("$")
        assert float(cost[1:]) > 0
        assert await status(page) == "ready"
        assert await page.query_selector("#error") is None
        await screenshot(page, "usechat")


async def test_stop_keeps_the_partial_answer_and_leaves_the_upstream(
    gw: RunningGateway, browser: Any, assets: dict[str, tuple[str, bytes]], simulator: Any
) -> None:
    async with chat_page(browser, gw, assets, route="slow") as page:  # 500 tokens 20 ms apart
        before = len((await sim_stats(page, simulator))["disconnects"])
        started = time.monotonic()
        await send(page, "Count slowly")
        await page.wait_for_function(
            "(document.querySelector('.message.assistant .text')?.textContent ?? '')"
            ".split(' ').length >= 5"
        )
        assert await status(page) == "streaming"
        await page.click("#stop")
        await page.wait_for_selector('#status[data-status="ready"]')
        assert time.monotonic() - started < 5  # the whole answer would take 10 s

        kept = await page.text_content(".message.assistant .text")
        assert 5 <= len(kept.split(" ")) < 100
        await asyncio.sleep(0.5)
        assert await page.text_content(".message.assistant .text") == kept  # nothing more came
        assert await page.query_selector("#error") is None

        deadline = time.monotonic() + 5
        while True:
            stats = await sim_stats(page, simulator)
            new = [d for d in stats["disconnects"][before:] if d["path"] == "/v1/messages"]
            if new or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.05)
        assert len(new) == 1, stats["disconnects"]
        assert 5 <= new[0]["tokens_sent"] < 100


async def test_errors_before_and_during_the_stream_are_shown(
    gw: RunningGateway, browser: Any, assets: dict[str, tuple[str, bytes]]
) -> None:
    async with chat_page(browser, gw, assets, route="limited") as page:
        async with page.expect_response(f"{gw.url}/api/chat") as answer:
            await send(page, "Hello?")
        assert (await answer.value).status == 429
        await page.wait_for_selector('#status[data-status="error"]')
        # the text/plain body of the 429 is useChat's error.message, word for word
        assert await page.text_content("#error") == "simulated rate limit (2 attempts)"
        assert await page.query_selector(".message.assistant") is None

        await page.fill("#route", "midfail")
        async with page.expect_response(f"{gw.url}/api/chat") as answer:
            await send(page, "Try again")
        assert (await answer.value).status == 200  # the failure comes in-band, after 3 tokens
        await page.wait_for_function(
            "document.querySelector('#error')?.textContent.includes('overload')"
        )
        assert await status(page) == "error"
        assert await page.text_content("#error") == "simulated overload after 3 tokens"
        partial = await page.text_content(".message.assistant .text")
        assert len(partial.split(" ")) == 3
        roles = await page.eval_on_selector_all(
            "#messages > li", "els => els.map(e => e.dataset.role)"
        )
        assert roles == ["user", "user", "assistant"]
        await screenshot(page, "usechat-error")

"""The pages under their own Content-Security-Policy, enforced, in headless Debian Chromium: the
playground streams an answer and the dashboard loads its data with no violation reported. (The
other browser tests bypass the policy: Playwright's ``wait_for_function`` evaluates strings,
which the policy rightly forbids.)"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_asyncio

from tests.browser import chromium
from tests.servers import RunningGateway, gateway_environ, gateway_server

pytestmark = pytest.mark.asyncio(loop_scope="session")


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def gw(simulator: Any) -> AsyncIterator[RunningGateway]:
    async with gateway_server(gateway_environ(simulator.url)) as running:
        yield running


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def browser() -> AsyncIterator[Any]:
    async with chromium() as running:
        yield running


async def until(page: Any, script: str, within: float = 10.0) -> Any:
    """Poll ``script`` (run through the DevTools protocol, which the policy does not govern)
    until it returns something truthy."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        value = await page.evaluate(script)
        if value:
            return value
        await asyncio.sleep(0.05)
    raise AssertionError(f"never true: {script}")


@pytest_asyncio.fixture(loop_scope="session")
async def watched(browser: Any) -> AsyncIterator[tuple[Any, list[str]]]:
    """A page whose policy violations (Chromium reports each on the console as "Refused to
    ...") and uncaught exceptions are collected."""
    context = await browser.new_context()
    page = await context.new_page()
    problems: list[str] = []

    def console(message: Any) -> None:
        if "Content Security Policy" in message.text or message.text.startswith("Refused"):
            problems.append(message.text)

    page.on("console", console)
    page.on("pageerror", lambda error: problems.append(str(error)))
    yield page, problems
    await context.close()


async def test_playground_streams_under_its_policy(
    watched: tuple[Any, list[str]], gw: RunningGateway
) -> None:
    page, problems = watched
    response = await page.goto(gw.url + "/")
    policy = response.headers["content-security-policy"]
    assert "'unsafe-inline'" not in policy and "frame-ancestors 'none'" in policy
    # The inline module script ran (it fills the route list) ...
    await until(page, "() => document.querySelectorAll('#route option').length > 3")
    await page.select_option("#route", "an")
    await page.fill("#prompt", "Hello there")
    await page.click("#go")
    # ... and its fetch to this origin streamed an answer.
    await until(page, "() => document.getElementById('status').textContent === 'done'")
    assert await page.text_content("#output")
    assert problems == []


async def test_dashboard_loads_under_its_policy(
    watched: tuple[Any, list[str]], gw: RunningGateway
) -> None:
    page, problems = watched
    loaded: list[str] = []
    page.on("requestfinished", lambda request: loaded.append(request.url))
    response = await page.goto(gw.url + "/usage")
    assert "'unsafe-inline'" not in response.headers["content-security-policy"]
    await until(page, "() => document.readyState === 'complete'")
    deadline = time.monotonic() + 10
    while not any("/v1/usage/dashboard" in url for url in loaded):
        assert time.monotonic() < deadline, loaded
        await asyncio.sleep(0.05)
    # The inline styles applied: the page is laid out, not unstyled.
    margin = await page.evaluate("() => getComputedStyle(document.body).margin")
    assert margin != "8px", "the page's <style> block was blocked"
    assert problems == []


async def test_a_policy_violation_is_caught(
    watched: tuple[Any, list[str]], gw: RunningGateway
) -> None:
    """The watch above can fail: an inline script not in the policy is reported."""
    page, problems = watched
    await page.goto(gw.url + "/")
    await page.evaluate(
        """() => { const s = document.createElement('script');
                   s.textContent = 'window.injected = 1'; document.body.appendChild(s); }"""
    )
    await until(page, "() => true")
    assert await page.evaluate("() => window.injected") is None
    assert any("Content Security Policy" in problem for problem in problems), problems

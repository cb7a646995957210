"""The usage dashboard in headless Chromium: the seeded ledger drawn as bars, the filters
(with the mouse and with the keyboard alone), a phone-sized screen, the CSV download, the
admin key prompt once a key exists, and the response cache's hits and savings (shown only for a
range that has one, under the page's own Content-Security-Policy). Screenshots go to
``test-artifacts/screenshots/``.
"""

from __future__ import annotations

import asyncio
import datetime
import math
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
import pytest_asyncio

from tests.browser import chromium, screenshot
from tests.servers import RunningGateway, gateway_environ, gateway_server
from tests.test_dashboard import CLAUDE, FAILED_OVER, GPT, LLAMA, entry, seed
from tokenrelay.gate.keys import KeyStore
from tokenrelay.metering.ledger import LedgerRow
from tokenrelay.store import open_database

if TYPE_CHECKING:
    from playwright.async_api import Browser, Download, Page

pytestmark = pytest.mark.asyncio(loop_scope="session")
DAY = 86400
CLAUDE_NAME, GPT_NAME = ":".join(CLAUDE), ":".join(GPT)


def day(ago: int) -> str:
    """The UTC date ``ago`` days before today, as the page writes it."""
    return (datetime.datetime.now(datetime.UTC).date() - datetime.timedelta(days=ago)).isoformat()


def recent_ledger(now: float) -> list[LedgerRow]:
    """Requests of the last few UTC days (today's just now), and one 20 days ago that only the
    30-day range shows."""
    today = math.floor(now / DAY) * DAY

    def at(days_ago: int, hour: int = 10) -> float:
        return today - days_ago * DAY + hour * 3600 if days_ago else max(today, now - 5)

    alice, bob, carol, dave = (
        ("alice", "acme"),
        ("bob", "acme"),
        ("carol", "globex"),
        ("dave", "ini"),
    )
    return [
        entry("w1", at(2), alice, "default", GPT, tokens=(1000, 200), cost=1_500_000_000,
              ttft=120),
        entry("w2", at(1), bob, "default", CLAUDE, tokens=(3000, 500), cost=250_000_000,
              ttft=300),
        entry("w3", at(1, 11), carol, "fast", GPT, tokens=(500, 100), cost=750_000_000,
              ttft=250, attempts=2, detail=FAILED_OVER),
        entry("w4", at(0), carol, "default", CLAUDE, tokens=(2000, 400), cost=2_100_000_000,
              ttft=400),
        entry("w5", at(1, 12), bob, "default", GPT, outcome="error", error_type="overloaded"),
        entry("old", at(20), dave, "bulk", LLAMA, tokens=(9000, 900), cost=5_000_000_000,
              ttft=50),
    ]  # fmt: skip


@pytest_asyncio.fixture(loop_scope="session")
async def ledger_url(tmp_path: Path) -> str:
    url = f"sqlite:///{tmp_path}/ledger.db"
    await seed(url, recent_ledger(time.time()))
    return url


@pytest_asyncio.fixture(loop_scope="session")
async def gw(simulator: Any, ledger_url: str) -> AsyncIterator[RunningGateway]:
    env = {**gateway_environ(simulator.url), "TOKENRELAY_DATABASE_URL": ledger_url}
    async with gateway_server(env) as running:
        yield running


@pytest_asyncio.fixture(loop_scope="session")
async def browser() -> AsyncIterator[Browser]:
    async with chromium() as launched:
        yield launched


async def bars(page: Page) -> list[tuple[str, str, str]]:
    """The day chart's bars as (day, series, title), once the chart is drawn."""
    await page.wait_for_selector("#chart svg rect")
    found: list[list[str]] = await page.eval_on_selector_all(
        "#chart svg rect",
        "rects => rects.map(r => [r.dataset.day, r.dataset.series, r.textContent])",
    )
    return [(day, series, title) for day, series, title in found]


async def wait_series(page: Page, expected: set[str]) -> list[tuple[str, str, str]]:
    """The bars once the chart shows exactly the ``expected`` series (it redraws on change)."""
    script = """expected => {
        const names = new Set([...document.querySelectorAll('#chart svg rect')]
            .map(r => r.dataset.series));
        return names.size === expected.length && expected.every(n => names.has(n));
    }"""
    await page.wait_for_function(script, arg=sorted(expected))
    return await bars(page)


async def downloaded(download: Download) -> tuple[str, str]:
    """The file's suggested name and its text."""
    path = await download.path()
    return download.suggested_filename, await asyncio.to_thread(Path(path).read_text)


async def chart_label(page: Page) -> str:
    return await page.get_attribute("#chart svg", "aria-label") or ""


async def test_dashboard_draws_the_seeded_ledger(browser: Browser, gw: RunningGateway) -> None:
    context = await browser.new_context(bypass_csp=True, viewport={"width": 1280, "height": 900})
    page = await context.new_page()
    failed: list[str] = []
    page.on("requestfailed", lambda request: failed.append(request.url))
    page.on("pageerror", lambda error: failed.append(str(error)))
    try:
        await page.goto(f"{gw.url}/usage")
        drawn = await wait_series(page, {"anthropic:claude-sonnet-5-5", "openai:gpt-5.5"})
        assert drawn == [
            (day(2), GPT_NAME, f"{day(2)} · {GPT_NAME}: $1.50 · 1 request"),
            (day(1), CLAUDE_NAME, f"{day(1)} · {CLAUDE_NAME}: $0.25 · 1 request"),
            (day(1), GPT_NAME, f"{day(1)} · {GPT_NAME}: $0.75 · 2 requests"),  # one failed
            (day(0), CLAUDE_NAME, f"{day(0)} · {CLAUDE_NAME}: $2.10 · 1 request"),
        ]
        label = await chart_label(page)
        assert label == (f"Cost per day by model, {day(6)} to {day(0)}: $4.60 in all, 2 groups")
        assert await page.text_content("#totals") == (
            "Cost$4.60Requests5Errors1Input tokens6,500Output tokens1,200"
        )
        days = await page.eval_on_selector_all(
            "#chart svg .axis text[text-anchor=middle]", "t => t.length"
        )
        assert days == 7  # whole UTC days, today the last
        top = await page.eval_on_selector_all("#top svg rect", "r => r.map(x => x.textContent)")
        assert top == [f"{CLAUDE_NAME}: $2.35 · 2 requests", f"{GPT_NAME}: $2.25 · 3 requests"]
        ttft = await page.inner_text("#ttft tbody")
        assert ttft.split("\n") == ["anthropic\t2\t300\t400\t400", "openai\t2\t120\t250\t250"]
        failovers = await page.inner_text("#failovers tbody")
        assert failovers.split("\n")[0] == "fast\t1\t1\t1\t0"
        assert "overloaded" in await page.inner_text("#errors tbody")
        assert await page.is_visible("#open-note")  # no key yet: the page says it is open
        assert await page.is_hidden("#cache-card")  # no cache hit in the range: no cache figures
        await screenshot(page, "usage-dashboard")

        # the grouping and the range, with the mouse
        await page.select_option("#by", "org")
        drawn = await wait_series(page, {"acme", "globex"})
        assert [(when, series, title.rsplit(": ", 1)[1]) for when, series, title in drawn] == [
            (day(2), "acme", "$1.50 · 1 request"),
            (day(1), "globex", "$0.75 · 1 request"),  # the costlier group at the bottom
            (day(1), "acme", "$0.25 · 2 requests"),
            (day(0), "globex", "$2.10 · 1 request"),
        ]
        await page.select_option("#range", "30d")
        drawn = await wait_series(page, {"acme", "globex", "ini"})
        assert [(when, title) for when, series, title in drawn if series == "ini"] == [
            (day(20), f"{day(20)} · ini: $5.00 · 1 request")
        ]
        assert f"{day(29)} to {day(0)}: $9.60 in all" in await chart_label(page)
        assert "range=30d" in page.url and "by=org" in page.url
        await page.select_option("#metric", "tokens")
        await page.wait_for_function(
            "() => document.querySelector('#chart svg').getAttribute('aria-label')"
            ".startsWith('Tokens per day by org')"
        )
        ini = [title for _, series, title in await bars(page) if series == "ini"]
        assert ini == [f"{day(20)} · ini: 9,900 tokens · 1 request"]

        for shown, first in (("90d", day(89)), ("24h", day(1))):
            await page.select_option("#range", shown)
            await page.wait_for_function(
                "first => document.querySelector('#chart svg')?.getAttribute('aria-label')"
                ".includes(`, ${first} to `)",
                arg=first,
            )
        await page.select_option("#range", "30d")
        await wait_series(page, {"acme", "globex", "ini"})

        # the CSV of what is shown
        async with page.expect_download() as download_info:
            await page.click("#csv")
        name, text = await downloaded(await download_info.value)
        assert name == f"tokenrelay-usage-by-org-{day(29)}-{day(0)}.csv"
        lines = text.splitlines()
        assert lines[0] == (
            "day,org,requests,errors,input_tokens,output_tokens,cache_read_tokens,"
            "cache_write_tokens,cost_usd"
        )
        assert sorted(line.split(",", 1)[1] for line in lines[1:]) == [
            "acme,1,0,1000,200,0,0,1.500000000",
            "acme,2,1,3000,500,0,0,0.250000000",
            "globex,1,0,2000,400,0,0,2.100000000",
            "globex,1,0,500,100,0,0,0.750000000",
            "ini,1,0,9000,900,0,0,5.000000000",
        ]
        assert not failed, failed  # no script error, nothing missing or fetched from elsewhere
    finally:
        await context.close()


async def test_keyboard_alone(browser: Browser, gw: RunningGateway) -> None:
    context = await browser.new_context(bypass_csp=True, viewport={"width": 1024, "height": 800})
    page = await context.new_page()
    try:
        await page.goto(f"{gw.url}/usage")
        await wait_series(page, {"anthropic:claude-sonnet-5-5", "openai:gpt-5.5"})
        for _ in range(10):
            await page.keyboard.press("Tab")
            if await page.evaluate("document.activeElement.id") == "by":
                break
        else:
            raise AssertionError("Tab never reached the grouping select")
        focus = await page.evaluate("getComputedStyle(document.activeElement).outlineStyle")
        assert focus == "solid"  # a visible focus ring
        await page.keyboard.press("ArrowDown")  # model -> org
        assert await page.input_value("#by") == "org"
        await wait_series(page, {"acme", "globex"})
        await page.keyboard.press("Tab")  # on to the metric, then the CSV link
        await page.keyboard.press("ArrowDown")
        assert await page.input_value("#metric") == "tokens"
        await page.keyboard.press("Tab")
        assert await page.evaluate("document.activeElement.id") == "csv"
        async with page.expect_download() as download_info:
            await page.keyboard.press("Enter")
        _, text = await downloaded(await download_info.value)
        assert text.startswith("day,org,")
    finally:
        await context.close()


async def test_phone_sized_screen(browser: Browser, gw: RunningGateway) -> None:
    context = await browser.new_context(
        bypass_csp=True,
        viewport={"width": 390, "height": 844},
        device_scale_factor=2,
        is_mobile=True,
    )
    page = await context.new_page()
    try:
        await page.goto(f"{gw.url}/usage?range=30d&by=user")
        drawn = await wait_series(page, {"alice", "bob", "carol", "dave"})
        assert len(drawn) == 5
        width = await page.evaluate("document.getElementById('chart').clientWidth")
        assert (
            300
            <= await page.evaluate("document.querySelector('#chart svg').width.baseVal.value")
            <= width
        )
        overflow = await page.evaluate("[document.scrollingElement.scrollWidth, window.innerWidth]")
        assert overflow[0] <= overflow[1], overflow
        # the chart's text is drawn at CSS size, not shrunk from a wide drawing
        size = await page.evaluate(
            "getComputedStyle(document.querySelector('#chart svg text')).fontSize"
        )
        assert size == "12px"
        await screenshot(page, "usage-dashboard-phone")
    finally:
        await context.close()


async def test_admin_key_prompt(browser: Browser, gw: RunningGateway, ledger_url: str) -> None:
    async with await open_database(ledger_url) as db:
        store = KeyStore(db)
        _, admin = await store.create("ops", "acme", admin=True)
        _, plain = await store.create("alice", "acme")
    context = await browser.new_context(bypass_csp=True, viewport={"width": 1024, "height": 800})
    page = await context.new_page()
    try:
        await page.goto(f"{gw.url}/usage")
        await page.wait_for_selector("#key-section:not([hidden])")
        assert await page.is_hidden("#report")
        assert "needs an admin API key" in await page.inner_text("#key-reason")
        assert await page.evaluate("document.activeElement.id") == "key"
        assert await page.get_attribute("#key", "type") == "password"

        await page.keyboard.type(plain)  # a key, but not an admin's
        await page.keyboard.press("Enter")
        await page.wait_for_function(
            "() => document.getElementById('key-reason').textContent.includes('not an admin key')"
        )
        assert await page.evaluate("sessionStorage.getItem('tokenrelay.usage.key')") is None
        await screenshot(page, "usage-dashboard-key")

        await page.fill("#key", admin)
        await page.click("#key-form button")
        await wait_series(page, {"anthropic:claude-sonnet-5-5", "openai:gpt-5.5"})
        assert await page.is_hidden("#key-section") and await page.is_hidden("#open-note")
        assert await page.evaluate("sessionStorage.getItem('tokenrelay.usage.key')") == admin

        # the download needs the key too: it comes by fetch, as a Blob
        async with page.expect_download() as download_info:
            await page.click("#csv")
        name, text = await downloaded(await download_info.value)
        assert name == f"tokenrelay-usage-by-model-{day(6)}-{day(0)}.csv"
        assert text.startswith("day,model,")
        assert f"{day(1)},openai:gpt-5.5,2,1,500,100,0,0,0.750000000\n" in text

        await page.click("#forget")  # and without it, the prompt again
        await page.wait_for_selector("#key-section:not([hidden])")
    finally:
        await context.close()


# An org name a caller chose: shown as text, never read as markup.
HOSTILE = '<img src=x onerror="window.owned=1">acme & co'


def cached_ledger(now: float) -> list[LedgerRow]:
    """Today's requests on routes with a response cache: a miss and a hit of each of two orgs'
    answers (the hit costs 0 and saved what the miss cost), and one without a cache."""
    at = max(math.floor(now / DAY) * DAY, now - 60)
    rows = [
        entry("c1", at, ("ann", "acme"), "default", GPT, tokens=(1000, 200),
              cost=1_500_000_000, ttft=120),
        entry("c2", at + 1, ("ann", "acme"), "default", GPT, tokens=(1000, 200), ttft=0.4),
        entry("c3", at + 2, ("eve", HOSTILE), "default", CLAUDE, tokens=(300, 50),
              cost=250_000_000, ttft=300),
        entry("c4", at + 3, ("eve", HOSTILE), "default", CLAUDE, tokens=(300, 50), ttft=0.6),
        entry("c5", at + 4, ("gus", "globex"), "plain", GPT, tokens=(500, 100),
              cost=750_000_000, ttft=250),
    ]  # fmt: skip
    for miss, hit in ((rows[0], rows[1]), (rows[2], rows[3])):
        miss.cache, hit.cache, hit.saved_nanousd = "miss", "hit", miss.cost_nanousd
    return rows


async def test_cache_hits_and_savings(browser: Browser, simulator: Any, tmp_path: Path) -> None:
    """Under the page's enforced policy (no bypass): the cache card and totals appear for a
    range with hits, every value escaped; hits are their own row of the latency table."""
    url = f"sqlite:///{tmp_path}/cached.db"
    await seed(url, cached_ledger(time.time()))
    env = {**gateway_environ(simulator.url), "TOKENRELAY_DATABASE_URL": url}
    async with gateway_server(env) as running:
        context = await browser.new_context(viewport={"width": 1280, "height": 900})
        page = await context.new_page()
        problems: list[str] = []
        page.on("console", lambda m: problems.append(m.text) if "Refused" in m.text else None)
        page.on("pageerror", lambda error: problems.append(str(error)))
        try:
            await page.goto(f"{running.url}/usage?by=org")
            await page.wait_for_selector("#cache-card:not([hidden]) tbody tr")
            assert await page.text_content("#totals") == (
                "Cost$2.50Requests5Errors0Input tokens3,100Output tokens600"
                "Cache hits2Cache savings$1.75"
            )
            head = await page.inner_text("#cache thead")
            assert head.strip().split("\t") == [
                "Org",
                "Requests",
                "Cache hits",
                "Hit rate",
                "Saved",
            ]
            body = await page.inner_text("#cache tbody")
            assert body.split("\n") == [
                "acme\t2\t1\t50%\t$1.50",
                "globex\t1\t0\t0%\t$0.00",
                f"{HOSTILE}\t2\t1\t50%\t$0.25",
                "Total\t5\t2\t40%\t$1.75",
            ]
            assert await page.locator("#report img").count() == 0  # text, not markup
            assert await page.evaluate("() => window.owned") is None
            ttft = await page.inner_text("#ttft tbody")
            assert [line.split("\t")[:2] for line in ttft.split("\n")] == [
                ["anthropic", "1"],  # the provider's own answer only
                ["cache", "2"],
                ["openai", "2"],
            ]
            await screenshot(page, "usage-dashboard-cache")

            # the CSV carries the hits and savings too
            async with page.expect_download() as download_info:
                await page.click("#csv")
            _, text = await downloaded(await download_info.value)
            lines = text.splitlines()
            assert lines[0].endswith(",cost_usd,cache_hits,saved_usd")
            assert lines[1].startswith(f"{day(0)},acme,2,0,") and lines[1].endswith(
                ",1.500000000,1,1.500000000"
            )
            assert problems == []
        finally:
            await context.close()

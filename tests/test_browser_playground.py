"""The playground (``/``) and ``/client.js`` in headless Debian Chromium, against a real gateway
and the wire-exact simulator: tokens paint as they arrive, Stop closes the upstream, failover and
failures are shown in words, the page works by keyboard and on a phone-sized screen, and the
client survives chunks split anywhere and pages on other origins (CORS)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import aiohttp.web
import msgspec
import pytest
import pytest_asyncio

from tests.browser import chromium, screenshot
from tests.servers import RunningGateway, free_port, gateway_environ, gateway_server

pytestmark = pytest.mark.asyncio(loop_scope="session")

# Pages on other origins: loopback servers on ports of their own (the gateway lists the first).
# Both are loopback, so Chromium's private-network rules do not come into it.
APP_PORT, STRANGER_PORT = free_port(), free_port()
OTHER_ORIGIN = f"http://127.0.0.1:{APP_PORT}"
PACED = [
    {
        "provider": "anthropic",
        "model": "claude-sonnet-5-5",
        "headers": {"x-sim-tokens": "40", "x-sim-token-delay-ms": "25"},
    }
]


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def gw(simulator: Any) -> AsyncIterator[RunningGateway]:
    environ = gateway_environ(simulator.url)
    environ["TOKENRELAY_ROUTES__PACED__TARGETS"] = msgspec.json.encode(PACED).decode()
    environ["TOKENRELAY_CORS__ALLOW_ORIGINS"] = f'["{OTHER_ORIGIN}"]'
    # resumable: a dropped connection keeps generating 15 s, a Stop must not (docs/resume.md)
    environ["TOKENRELAY_ROUTES__SLOWRESUME__TARGETS"] = environ["TOKENRELAY_ROUTES__SLOW__TARGETS"]
    environ["TOKENRELAY_ROUTES__SLOWRESUME__RESUME__GRACE"] = "15"
    async with gateway_server(environ) as running:
        meter = running.gateway.meter
        assert meter is not None
        await meter.pricer.load()  # so the first answer already shows its cost
        yield running


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def browser() -> AsyncIterator[Any]:
    async with chromium() as running:
        yield running


@pytest_asyncio.fixture(loop_scope="session")
async def page(browser: Any, gw: RunningGateway) -> AsyncIterator[Any]:
    context = await browser.new_context(bypass_csp=True, viewport={"width": 1100, "height": 800})
    page = await context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    await page.goto(gw.url + "/")
    await page.wait_for_function("document.querySelectorAll('#route option').length > 3")
    yield page
    await context.close()
    assert not errors, f"the page threw: {errors}"


async def sim_stats(simulator: Any) -> dict[str, Any]:
    async with aiohttp.ClientSession() as http, http.get(simulator.url + "/stats") as response:
        data: dict[str, Any] = await response.json()
        return data


async def reset_stats(simulator: Any) -> None:
    async with aiohttp.ClientSession() as http:
        await http.post(simulator.url + "/stats/reset")


async def wait_status(page: Any, *states: str) -> str:
    await page.wait_for_function(
        "(states) => states.includes(document.getElementById('status').textContent)",
        arg=list(states),
        timeout=10_000,
    )
    return str(await page.text_content("#status"))


# Records the answer's length at every animation frame: what the user actually saw painted.
WATCH_PAINTS = """() => {
  window.painted = [];
  const output = document.getElementById('output');
  const frame = () => {
    window.painted.push(output.textContent.length);
    if (document.getElementById('status').textContent !== 'done') requestAnimationFrame(frame);
  };
  requestAnimationFrame(frame);
}"""


async def test_tokens_paint_as_they_arrive_and_details_are_shown(
    page: Any, gw: RunningGateway
) -> None:
    await page.select_option("#route", "paced")
    await page.fill("#prompt", "Tell me about streaming.")
    await page.evaluate(WATCH_PAINTS)
    await page.click("#go")
    assert await wait_status(page, "done") == "done"
    painted: list[int] = await page.evaluate("window.painted")
    final = len(await page.text_content("#output"))
    partial = sorted({n for n in painted if 0 < n < final})
    # 40 tokens 25 ms apart take about a second: many frames show a partial answer.
    assert len(partial) >= 5, f"only {len(partial)} partial paints: {painted}"
    request_id = await page.text_content("#request-id")
    record = await gw.wait_record(request_id)
    assert record.outcome == "completed" and record.route == "paced"
    assert await page.text_content("#output") == record.completion.text  # type: ignore[union-attr]
    assert await page.text_content("#provider") == "anthropic"
    assert await page.text_content("#model") == "claude-sonnet-5-5"
    assert await page.text_content("#failover") == "no"
    assert await page.text_content("#tokens-in") == str(record.usage.input_tokens)
    assert await page.text_content("#tokens-out") == str(record.usage.output_tokens) == "40"
    assert record.cost_nanousd is not None and record.cost_nanousd > 0
    cost = (await page.text_content("#cost")).removeprefix("$")
    assert round(float(cost) * 1e9) == record.cost_nanousd
    ttft = int((await page.text_content("#ttft")).removesuffix(" ms"))
    assert record.ttft_ms is not None and ttft >= record.ttft_ms * 0.5
    assert await page.is_hidden("#error")
    await screenshot(page, "playground")


async def test_stop_closes_the_upstream(page: Any, gw: RunningGateway, simulator: Any) -> None:
    await reset_stats(simulator)
    await page.select_option("#route", "slow")  # 500 tokens 20 ms apart: ten seconds
    await page.click("#go")
    await page.wait_for_function("document.getElementById('output').textContent.length > 20")
    assert await page.is_enabled("#stop")
    pressed = time.monotonic()
    await page.click("#stop")
    assert await wait_status(page, "stopped") == "stopped"
    disconnects: list[dict[str, Any]] = []
    deadline = time.monotonic() + 3
    while not disconnects and time.monotonic() < deadline:
        await asyncio.sleep(0.02)
        disconnects = (await sim_stats(simulator))["disconnects"]
    assert disconnects, "the simulator never saw its connection close"
    assert disconnects[0]["tokens_sent"] < 500
    assert disconnects[0]["at_monotonic"] - pressed < 1.0
    assert len(await page.text_content("#output")) > 20  # what arrived stays on screen
    assert await page.is_enabled("#go") and await page.is_disabled("#stop")


async def test_stop_on_a_resumable_route_stops_the_upstream_too(
    page: Any, gw: RunningGateway, simulator: Any
) -> None:
    """Aborting the fetch alone would leave the upstream generating for resume.grace (15 s):
    client.js sends ``DELETE /v1/streams/{id}`` on Stop."""
    await reset_stats(simulator)
    await page.select_option("#route", "slowresume")
    async with page.expect_request(lambda r: r.method == "DELETE") as deleting:
        await page.click("#go")
        await page.wait_for_function("document.getElementById('output').textContent.length > 20")
        pressed = time.monotonic()
        await page.click("#stop")
    request = await deleting.value
    response = await request.response()
    assert response is not None and response.status == 204
    stream_id = request.url.rpartition("/")[2]
    assert await wait_status(page, "stopped") == "stopped"
    disconnects: list[dict[str, Any]] = []
    deadline = time.monotonic() + 3
    while not disconnects and time.monotonic() < deadline:
        await asyncio.sleep(0.02)
        disconnects = (await sim_stats(simulator))["disconnects"]
    assert disconnects, "the upstream went on after Stop"
    assert disconnects[0]["tokens_sent"] < 500
    assert disconnects[0]["at_monotonic"] - pressed < 3.0  # not the 15 s grace
    record = await gw.wait_record(stream_id)
    assert record.outcome == "aborted" and record.route == "slowresume"


async def test_failover_is_shown(page: Any) -> None:
    await page.select_option("#route", "flaky")
    await page.click("#go")
    assert await wait_status(page, "done") == "done"
    failover = await page.text_content("#failover")
    assert failover.startswith("yes: anthropic/claude-sonnet-5-5")
    assert failover.endswith("→ openai/gpt-5.5")
    assert await page.get_attribute("#failover", "class") == "failover"
    assert await page.text_content("#provider") == "openai"
    await screenshot(page, "playground-failover")


async def test_a_mid_stream_error_is_shown_in_words(page: Any) -> None:
    await page.select_option("#route", "midfail")
    await page.click("#go")
    assert await wait_status(page, "failed") == "failed"
    assert await page.is_visible("#error")
    message = await page.text_content("#error")
    assert message.startswith("The answer stopped part-way:") and "overload" in message
    assert len(await page.text_content("#output")) > 0  # the tokens before the failure
    await screenshot(page, "playground-error")


async def test_an_error_before_the_stream_is_shown_in_words(page: Any) -> None:
    await page.select_option("#route", "limited")
    await page.click("#go")
    assert await wait_status(page, "failed") == "failed"
    message = await page.text_content("#error")
    assert message.startswith("Too many requests")
    assert await page.text_content("#output") == ""


async def test_keyboard_alone(page: Any, simulator: Any) -> None:
    await page.focus("body")
    await page.keyboard.press("Tab")  # the dashboard link
    await page.keyboard.press("Tab")
    assert await page.evaluate("document.activeElement.id") == "prompt"
    await page.keyboard.press("Control+A")
    await page.keyboard.type("Hello from the keyboard")
    await page.keyboard.press("Tab")
    assert await page.evaluate("document.activeElement.id") == "route"
    for _ in range(10):  # arrow down to the `slow` route
        if await page.evaluate("document.activeElement.value") == "slow":
            break
        await page.keyboard.press("ArrowDown")
    assert await page.evaluate("document.getElementById('route').value") == "slow"
    await page.keyboard.press("Shift+Tab")
    await page.keyboard.press("Control+Enter")
    await page.wait_for_function("document.getElementById('output').textContent.length > 0")
    await page.keyboard.press("Escape")
    assert await wait_status(page, "stopped") == "stopped"
    await page.keyboard.press("Tab")
    await page.keyboard.press("Tab")
    assert await page.evaluate("document.activeElement.id") == "go"
    await page.keyboard.press("Enter")  # the Generate button, by keyboard
    await page.wait_for_function("document.getElementById('output').textContent.length > 0")
    await page.keyboard.press("Escape")
    assert await wait_status(page, "stopped") == "stopped"


async def test_readable_on_a_phone(browser: Any, gw: RunningGateway) -> None:
    context = await browser.new_context(
        bypass_csp=True,
        viewport={"width": 390, "height": 844},
        device_scale_factor=2,
        is_mobile=True,
    )
    page = await context.new_page()
    await page.goto(gw.url + "/")
    await page.wait_for_function("document.querySelectorAll('#route option').length > 3")
    await page.select_option("#route", "an")
    await page.click("#go")
    assert await wait_status(page, "done") == "done"
    overflow = await page.evaluate("document.scrollingElement.scrollWidth - window.innerWidth")
    assert overflow <= 0, f"the page is {overflow} px wider than the phone"
    answer = await page.locator("#output").bounding_box()
    details = await page.locator("aside").bounding_box()
    assert details["y"] >= answer["y"] + answer["height"]  # stacked, not squeezed side by side
    assert answer["width"] >= 330
    font = await page.evaluate("parseFloat(getComputedStyle(document.body).fontSize)")
    assert font >= 16
    await screenshot(page, "playground-phone")
    await context.close()


async def test_no_external_resources(browser: Any, gw: RunningGateway) -> None:
    context = await browser.new_context(bypass_csp=True)
    page = await context.new_page()
    requested: list[str] = []
    page.on("request", lambda request: requested.append(request.url))
    await page.goto(gw.url + "/")
    await page.wait_for_load_state("networkidle")
    assert requested and all(url.startswith(gw.url) for url in requested), requested
    await context.close()


# --- /client.js on its own ----------------------------------------------------------------------

# stream() against a fetch whose body arrives in the pieces given, to split events, lines, CRLFs
# and UTF-8 characters anywhere. Returns what the caller saw.
SPLIT_STREAM = """async ({ pieces, status, headers }) => {
  const { stream } = await import('/client.js');
  const encoder = new TextEncoder();
  let cancelled = false, pulled = 0;
  const fetch = async () => new Response(new ReadableStream({
    pull(controller) {
      if (pulled === pieces.length) return controller.close();
      controller.enqueue(new Uint8Array(pieces[pulled++]));
    },
    cancel() { cancelled = true; },
  }, { highWaterMark: 0 }), { status, headers });
  const texts = [], errors = [];
  const result = await stream('hi', {
    fetch, onText: (delta) => texts.push(delta), onError: (e) => errors.push(e),
  });
  return {
    text: result.text, texts, cancelled, pulled, total: pieces.length, aborted: result.aborted,
    errors: errors.map((e) => ({ type: e.type, message: e.message, inBand: e.inBand,
                                 status: e.status, retryAfter: e.retryAfter })),
    meta: result.meta, usage: result.usage,
  };
}"""


def pieces_of(data: bytes, size: int) -> list[list[int]]:
    return [list(data[i : i + size]) for i in range(0, len(data), size)]


TEXTS = ["Grüße, ", "naïve café ", "🙂 emoji", " and 漢字"]
WIRE = (
    b"".join(b'data: {"text":' + msgspec.json.encode(t) + b"}\r\n\r\n" for t in TEXTS)
    + b": a comment\n\n"
    + b'data: {"usage":{"inputTokens":3,"outputTokens":4}}\n\n'
    + b"data: [DONE]\n\n"
    + b'data: {"text":"after DONE must never show"}\n\n'
    + b"data: [DONE]\n\n" * 50  # more than the reader should ever pull
)


@pytest.mark.parametrize("size", [1, 2, 3, 5, 7, 64])
async def test_client_parses_chunks_split_anywhere(page: Any, size: int) -> None:
    pieces = pieces_of(WIRE, size)
    seen = await page.evaluate(
        SPLIT_STREAM,
        {"pieces": pieces, "status": 200, "headers": {"content-type": "text/event-stream"}},
    )
    assert seen["texts"] == TEXTS and seen["text"] == "".join(TEXTS)
    assert seen["errors"] == [] and seen["usage"] == {"inputTokens": 3, "outputTokens": 4}
    # [DONE] ends the whole read loop: the body is cancelled and the rest never read.
    assert seen["cancelled"] is True
    assert seen["pulled"] < seen["total"]


async def test_client_reports_a_cut_stream_and_errors(page: Any) -> None:
    cut = b'data: {"text":"half an ans'  # the connection drops mid-event, without [DONE]
    seen = await page.evaluate(
        SPLIT_STREAM, {"pieces": pieces_of(b'data: {"text":"a"}\n\n' + cut, 4), "status": 200}
    )
    assert seen["text"] == "a"
    assert [e["type"] for e in seen["errors"]] == ["stream_cut"]
    inband = b'data: {"text":"a"}\n\ndata: {"error":{"type":"overloaded","message":"busy"}}\n\n'
    seen = await page.evaluate(
        SPLIT_STREAM, {"pieces": pieces_of(inband + b"data: [DONE]\n\n", 3), "status": 200}
    )
    assert seen["errors"] == [
        {"type": "overloaded", "message": "busy", "inBand": True, "status": 200, "retryAfter": None}
    ]
    body = b'{"error":{"type":"rate_limit","message":"10 per minute"}}'
    seen = await page.evaluate(
        SPLIT_STREAM,
        {"pieces": [list(body)], "status": 429, "headers": {"retry-after": "7"}},
    )
    assert seen["errors"] == [
        {
            "type": "rate_limit",
            "message": "10 per minute",
            "inBand": False,
            "status": 429,
            "retryAfter": 7,
        }
    ]


CROSS_ORIGIN = """async ({ gateway }) => {
  const { stream } = await import(gateway + '/client.js');
  const result = await stream('hi', { baseUrl: gateway, route: 'flaky' });
  return { text: result.text, requestId: result.requestId, attempts: result.attempts,
           error: result.error && result.error.type, meta: result.meta };
}"""


async def app_page(port: int) -> aiohttp.web.AppRunner:
    """A page on its own origin, knowing nothing of the gateway but its URL."""

    async def index(request: aiohttp.web.Request) -> aiohttp.web.Response:
        return aiohttp.web.Response(text="<!doctype html><p>app</p>", content_type="text/html")

    app = aiohttp.web.Application()
    app.router.add_get("/", index)
    runner = aiohttp.web.AppRunner(app)
    await runner.setup()
    await aiohttp.web.TCPSite(runner, "127.0.0.1", port).start()
    return runner


async def test_client_on_another_origin_needs_cors(browser: Any, gw: RunningGateway) -> None:
    runners = [await app_page(APP_PORT), await app_page(STRANGER_PORT)]
    context = await browser.new_context(bypass_csp=True)
    page = await context.new_page()
    try:
        await cross_origin(page, gw)
    finally:
        await context.close()
        for runner in runners:
            await runner.cleanup()


async def cross_origin(page: Any, gw: RunningGateway) -> None:
    await page.goto(OTHER_ORIGIN + "/")
    seen = await page.evaluate(CROSS_ORIGIN, {"gateway": gw.url})
    assert seen["error"] is None and seen["text"]
    assert seen["requestId"] and "outcome=ok" in seen["attempts"]  # exposed headers
    assert seen["meta"]["failover"] is True
    # The same page from an origin the gateway does not list: the browser refuses the answer.
    await page.goto(f"http://127.0.0.1:{STRANGER_PORT}/")
    blocked = await page.evaluate(
        """async ({ gateway }) => {
          const module = await import(gateway + '/client.js').then(() => 'loaded', () => 'blocked');
          const request = await fetch(gateway + '/api/generate', {
            method: 'POST', headers: { 'content-type': 'application/json' },
            body: JSON.stringify({ prompt: 'hi' }),
          }).then(() => 'answered', () => 'blocked');
          return { module, request };
        }""",
        {"gateway": gw.url},
    )
    assert blocked == {"module": "blocked", "request": "blocked"}

"""The admin page (``/admin``) in headless Debian Chromium under its own Content-Security-Policy,
against the real ``/admin/v1`` API and a gateway streaming from the simulator: an admin signs in
with the keyboard, creates an org, a user and a key (hostile names shown as text), copies the
secret once, gives the key a $0.01 budget that a few ``/api/generate`` streams spend (then 402),
raises it in the page (streams again) and revokes the key (refused within the key cache TTL).
Screenshots of each state go to ``test-artifacts/screenshots/admin-*.png``.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any

import aiohttp
import msgspec
import pytest
import pytest_asyncio

from tests.browser import chromium, screenshot
from tests.servers import RunningGateway, gateway_environ, gateway_server
from tokenrelay.endpoints import WEB
from tokenrelay.gate.keys import KeyStore
from tokenrelay.store import open_database

if TYPE_CHECKING:
    from playwright.async_api import Browser, Page

pytestmark = pytest.mark.asyncio(loop_scope="session")

KEY_TTL = 0.5  # the key cache TTL of the gateway under test, seconds
# 200 USD per million output tokens: the simulator's 20 tokens cost $0.004, so $0.01 is spent
# by the third stream and the fourth is refused.
PRICES = {"anthropic:claude-sonnet-5-5": {"input": "0", "output": "200"}}
HOSTILE_ORG = "<img src=x onerror=\"window.__pwned = 'org'\">Acme & Co"
HOSTILE_USER = "<script>window.__pwned = 'user'</script>Ann"
HOSTILE_KEY = "<b>page key</b>"


async def admin_secret(database_url: str) -> str:
    """A global admin key made with the service code the CLI uses."""
    db = await open_database(database_url)
    try:
        _, secret = await KeyStore(db).create(None, name="page admin", role="admin")
    finally:
        await db.close()
    return secret


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def database_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    return f"sqlite:///{tmp_path_factory.mktemp('admin-page')}/admin.db"


def environ(simulator: Any, database_url: str, audit: str) -> dict[str, str]:
    return {
        "TOKENRELAY_AUDIT__DESTINATION": audit,
        **gateway_environ(simulator.url),
        "TOKENRELAY_DATABASE_URL": database_url,
        "TOKENRELAY_AUTH__KEY_CACHE_TTL": str(KEY_TTL),
        "TOKENRELAY_PRICING__OVERRIDES": msgspec.json.encode(PRICES).decode(),
    }


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def gw(simulator: Any, database_url: str) -> AsyncIterator[RunningGateway]:
    """The instance serving the page."""
    audit = database_url.removeprefix("sqlite:///") + ".audit-1.jsonl"
    async with gateway_server(environ(simulator, database_url, audit)) as running:
        yield running


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def other(simulator: Any, database_url: str) -> AsyncIterator[RunningGateway]:
    """A second instance on the same database, which hears of changes only through it."""
    audit = database_url.removeprefix("sqlite:///") + ".audit-2.jsonl"
    async with gateway_server(environ(simulator, database_url, audit)) as running:
        yield running


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def admin(gw: RunningGateway, database_url: str) -> str:
    return await admin_secret(database_url)


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def browser() -> AsyncIterator[Browser]:
    async with chromium() as launched:
        yield launched


@pytest_asyncio.fixture(loop_scope="session")
async def watched(browser: Browser) -> AsyncIterator[tuple[Page, list[str]]]:
    """A page, its policy enforced, with policy violations and uncaught exceptions collected."""
    context = await browser.new_context(
        permissions=["clipboard-read", "clipboard-write"], viewport={"width": 1280, "height": 900}
    )
    page = await context.new_page()
    problems: list[str] = []

    def console(message: Any) -> None:
        if "Content Security Policy" in message.text or message.text.startswith("Refused"):
            problems.append(message.text)

    page.on("console", console)
    page.on("pageerror", lambda error: problems.append(str(error)))
    yield page, problems
    await context.close()


async def eventually(check: Callable[[], Awaitable[bool]], within: float = 10.0) -> float:
    """Poll ``check`` until true; the seconds it took."""
    start = time.monotonic()
    while not await check():
        if time.monotonic() - start > within:
            raise AssertionError(f"not true within {within} s")
        await asyncio.sleep(0.05)
    return time.monotonic() - start


async def generate(gw: RunningGateway, secret: str) -> tuple[int, str]:
    """One ``/api/generate`` stream with the key: its status and whole body."""
    body = {"prompt": "Say something", "route": "an"}
    headers = {"authorization": f"Bearer {secret}"}
    async with (
        aiohttp.ClientSession() as http,
        http.post(gw.url + "/api/generate", json=body, headers=headers) as response,
    ):
        return response.status, await response.text()


async def status_says(page: Page, text: str) -> None:
    await page.locator("#status").filter(has_text=text).wait_for(timeout=10_000)


async def active_id(page: Page) -> str:
    found: str = await page.evaluate("() => document.activeElement?.id ?? ''")
    return found


async def sign_in_with_keyboard(
    page: Page, gw: RunningGateway, secret: str, role: str = "admin"
) -> None:
    await page.goto(gw.url + "/admin")
    await page.locator("#admin-key").wait_for()
    assert await active_id(page) == "admin-key"  # focus starts where the key goes
    await page.keyboard.type(secret)
    await page.keyboard.press("Enter")
    await status_says(page, f"Signed in as {role}.")


async def test_admin_journey(
    watched: tuple[Page, list[str]],
    gw: RunningGateway,
    other: RunningGateway,
    admin: str,
    database_url: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    page, problems = watched
    await sign_in_with_keyboard(page, gw, admin)
    assert await page.evaluate("() => sessionStorage.length") == 1
    assert await page.evaluate("() => document.cookie") == ""
    await screenshot(page, "admin-signed-in")

    # An org and a user with hostile names, shown as text everywhere.
    await page.fill("#org-name", HOSTILE_ORG)
    await page.press("#org-name", "Enter")
    await status_says(page, "created")
    await page.select_option("#user-org", label=HOSTILE_ORG)
    await page.fill("#user-name", HOSTILE_USER)
    await page.press("#user-name", "Enter")
    await status_says(page, "User")
    assert await page.locator("#orgs tbody td").first.text_content() == HOSTILE_ORG
    user_cells = await page.locator("#users tbody tr").first.locator("td").all_text_contents()
    assert user_cells[:2] == [HOSTILE_USER, HOSTILE_ORG]
    assert await page.evaluate("() => window.__pwned") is None
    assert await page.locator("main img, main script, main b").count() == 0

    # Key creation with the keyboard alone: Tab from the user form to the key form.
    assert await active_id(page) == "user-name"
    for expected in ("user-email", None, "key-name"):
        await page.keyboard.press("Tab")
        if expected:
            assert await active_id(page) == expected
    await page.keyboard.type(HOSTILE_KEY)
    await page.keyboard.press("Tab")  # the organization
    assert await active_id(page) == "key-org"
    await page.keyboard.press("ArrowDown")
    await page.keyboard.press("Tab")  # the user
    await page.keyboard.press("ArrowDown")
    await page.keyboard.press("Tab")  # the role: an ordinary API key
    await page.keyboard.press("Tab")  # the routes
    assert await active_id(page) == "key-routes"
    await page.keyboard.press("Enter")
    dialog = page.locator("#secret-dialog")
    await dialog.and_(page.locator("[open]")).wait_for()
    assert await active_id(page) == "secret"  # focus moved into the dialog
    secret = await page.input_value("#secret")
    assert secret.startswith("trk_")
    await screenshot(page, "admin-key-secret")
    await page.keyboard.press("Tab")
    assert await active_id(page) == "copy-secret"
    await page.keyboard.press("Enter")
    await status_says(page, "copied")
    assert await page.evaluate("() => navigator.clipboard.readText()") == secret
    await page.keyboard.press("Escape")
    await eventually(lambda: dialog_closed(page))
    await eventually(lambda: focused(page, "key-name"))  # focus came back
    assert await page.input_value("#secret") == ""  # the secret is gone from the page
    assert secret not in (await page.content())
    key_row = page.locator("#keys tbody tr", has_text=HOSTILE_KEY)
    cells = await key_row.locator("td").all_text_contents()
    assert cells[0] == HOSTILE_KEY and cells[2:5] == [HOSTILE_ORG, HOSTILE_USER, "API key"]
    assert cells[1].endswith("…") and secret not in "".join(cells)  # a prefix only

    # A hard $0.01 daily budget on the key: a few streams spend it, then 402.
    await page.select_option("#budget-scope", "key")
    await page.select_option("#budget-subject", label=cells[0] + " (" + cells[1] + ")")
    await page.fill("#budget-amount", "0.01")
    await page.select_option("#budget-period", "day")
    await page.fill("#budget-alerts", "0.5, 0.8")
    await page.press("#budget-amount", "Enter")
    await status_says(page, "Budget of $0.01 per day")
    streamed = 0
    for _ in range(10):
        status, body = await generate(gw, secret)
        if status != 200:
            break
        assert body
        streamed += 1
    assert status == 402, body
    assert 2 <= streamed <= 4, streamed
    print(f"\n{streamed} streams spent the $0.01 budget; the next was refused with 402")
    budget_row = page.locator("#budgets tbody tr", has_text=HOSTILE_KEY)
    spent = f"${Decimal('0.004') * streamed}"  # the ledger's rows, once written (off the hot path)

    async def spend_shown() -> bool:
        await page.click("#refresh")
        await status_says(page, "Refreshed")
        return await budget_row.locator("td").nth(5).text_content() == spent

    await eventually(spend_shown)
    budget_cells = await budget_row.locator("td").all_text_contents()
    assert budget_cells[1:7] == ["key", "$0.01", "day", "hard", spent, "$0.00"]
    assert budget_cells[7].strip() == f"{streamed * 40} %"  # over it: requests in flight finish
    await screenshot(page, "admin-budget-spent")

    # Raised in the page: the next request streams again.
    await budget_row.locator("button[data-action=edit-budget]").click()
    assert await active_id(page) == "edit-amount"
    await page.fill("#edit-amount", "1.00")
    await page.press("#edit-amount", "Enter")
    await status_says(page, "is now $1.00 per day")

    async def streams_again() -> bool:
        status, _ = await generate(gw, secret)
        return status == 200

    took = await eventually(streams_again)
    print(f"the raised budget let the key stream again after {took:.2f} s")
    await screenshot(page, "admin-budget-raised")

    # Edit the key's limits.
    await key_row.locator("button[data-action=limits]").click()
    await page.fill("#limit-requests", "100/minute")
    await page.fill("#limit-streams", "3")
    await page.press("#limit-requests", "Enter")
    await status_says(page, "Limits of key")
    limits = await key_row.locator("td").nth(5).text_content()
    assert limits == "100/minute requests · 3 concurrent streams"

    # Revoked in the page: refused at once by this instance, and by the other one (whose key
    # cache holds the key: it just served it) within the key cache TTL.
    assert (await generate(other, secret))[0] == 200
    await key_row.locator("button[data-action=revoke]").click()
    revoking = time.monotonic()
    await page.click("#confirm-yes")
    await status_says(page, "revoked")
    assert (await generate(gw, secret))[0] == 401

    async def refused() -> bool:
        status, _ = await generate(other, secret)
        return status == 401

    await eventually(refused, within=KEY_TTL + 5)
    took = time.monotonic() - revoking
    print(
        f"the other instance refused the revoked key {took:.2f} s after the click (TTL {KEY_TTL} s)"
    )
    await screenshot(page, "admin-key-revoked")

    # The audit trail lists what was done, as text.
    await page.locator("#audit tbody td", has_text="key.revoke").first.wait_for()
    audit = await page.locator("#audit tbody").text_content() or ""
    assert "budget.update" in audit and HOSTILE_ORG in audit
    assert admin not in audit and secret not in audit
    await screenshot(page, "admin-audit")
    assert await page.evaluate("() => window.__pwned") is None
    assert problems == []
    # Neither secret reached a log line, an audit line or the database (ledger rows, keys,
    # the admin audit trail): only hashes and prefixes are kept.
    await asyncio.sleep(KEY_TTL)  # the audit lines are written off the hot path
    written = await asyncio.to_thread(files_of, database_url)
    assert b"budget_exceeded" in written  # the audit lines are there ...
    for kept in (written, caplog.text.encode()):
        assert admin.encode() not in kept and secret.encode() not in kept  # ... no secret

    # Sign out forgets the key.
    await page.click("#sign-out")
    await status_says(page, "Signed out")
    assert await page.evaluate("() => sessionStorage.length") == 0
    assert await page.locator("#console").is_hidden()
    await screenshot(page, "admin-signed-out")


def files_of(database_url: str) -> bytes:
    """Everything the gateways wrote beside their SQLite database (its WAL, the audit lines)."""
    db = Path(database_url.removeprefix("sqlite:///"))
    return b"".join(path.read_bytes() for path in sorted(db.parent.iterdir()) if path.is_file())


async def dialog_closed(page: Page) -> bool:
    opened: bool = await page.evaluate("() => document.querySelector('dialog[open]') !== null")
    return not opened


async def focused(page: Page, element_id: str) -> bool:
    return await active_id(page) == element_id


async def test_a_refused_key_stays_on_the_sign_in_form(
    watched: tuple[Page, list[str]], gw: RunningGateway, database_url: str
) -> None:
    page, problems = watched
    db = await open_database(database_url)
    try:
        _, ordinary = await KeyStore(db).create("someone", name="not an admin")
    finally:
        await db.close()
    for secret in ("trk_not_a_key", ordinary):
        await page.goto(gw.url + "/admin")
        await page.fill("#admin-key", secret)
        await page.press("#admin-key", "Enter")
        await page.locator("#problem").filter(has_text="cannot administer").wait_for()
        assert await page.locator("#console").is_hidden()
        assert await page.evaluate("() => sessionStorage.length") == 0
        assert await active_id(page) == "admin-key"
    await screenshot(page, "admin-refused")
    assert problems == []


async def test_the_page_is_served_with_a_strict_policy(gw: RunningGateway) -> None:
    async with aiohttp.ClientSession() as http, http.get(gw.url + "/admin") as response:
        assert response.status == 200
        policy = response.headers["content-security-policy"]
        headers = response.headers
        html = await response.text()
    directives = dict(part.strip().split(" ", 1) for part in policy.split(";"))
    assert directives["default-src"] == "'self'"
    assert directives["script-src"] == "'self'" and directives["style-src"] == "'self'"
    assert directives["frame-ancestors"] == "'none'" and directives["base-uri"] == "'none'"
    assert directives["form-action"] == "'self'"
    assert "unsafe" not in policy
    assert headers["x-content-type-options"] == "nosniff"
    assert headers["referrer-policy"] == "no-referrer"
    # Nothing inline for the policy to refuse: no script or style blocks, no style attributes.
    assert "<style" not in html and " style=" not in html and "javascript:" not in html
    assert html.count("<script") == 1 and '<script type="module" src="/static/admin.js">' in html
    assets = (("admin.js", "text/javascript"), ("admin_view.js", "text/javascript"))
    for name, kind in (*assets, ("admin.css", "text/css")):
        async with aiohttp.ClientSession() as http, http.get(f"{gw.url}/static/{name}") as got:
            assert got.status == 200 and got.headers["content-type"].startswith(kind)
            assert got.headers["x-content-type-options"] == "nosniff"
    # Every value from the API goes in as text: the script never parses HTML.
    script = (WEB / "admin.js").read_text() + (WEB / "admin_view.js").read_text()
    for sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval("):
        assert sink not in script, sink


async def test_every_input_has_a_label() -> None:
    """Each input and select is named by a <label for=...> (the page's only way to name them)."""
    html = (WEB / "admin.html").read_text()
    ids = re.findall(r"<(?:input|select)\b[^>]*\bid=\"([^\"]+)\"", html)
    labelled = set(re.findall(r"<label\b[^>]*\bfor=\"([^\"]+)\"", html))
    assert ids and set(ids) <= labelled, set(ids) - labelled


async def admin_post(gw: RunningGateway, secret: str, path: str, body: dict[str, Any]) -> Any:
    """A call of the admin API itself (for the roles' set-up)."""
    headers = {"authorization": f"Bearer {secret}"}
    async with (
        aiohttp.ClientSession() as http,
        http.post(f"{gw.url}/admin/v1{path}", json=body, headers=headers) as response,
    ):
        assert response.status in (200, 201), await response.text()
        return await response.json()


async def test_what_a_role_may_not_do_is_not_offered(
    watched: tuple[Page, list[str]], gw: RunningGateway, admin: str
) -> None:
    """An org admin sees its own org only and no org form; a reader sees tables, no forms."""
    page, problems = watched
    mine = await admin_post(gw, admin, "/orgs", {"name": "Initech"})
    await admin_post(gw, admin, "/orgs", {"name": "Hidden Corp"})
    made = await admin_post(
        gw, admin, "/keys", {"name": "initech admin", "org_id": mine["id"], "role": "org_admin"}
    )
    read = await admin_post(gw, admin, "/keys", {"name": "auditor", "role": "reader"})

    await sign_in_with_keyboard(page, gw, made["secret"], role="org_admin")
    assert await page.locator("#org-form").is_hidden()
    assert await page.locator("#key-form").is_visible()
    orgs = await page.locator("#orgs tbody tr td:first-child").all_text_contents()
    assert orgs == ["Initech"]  # another org is not even named
    await screenshot(page, "admin-org-admin")
    await page.click("#sign-out")

    await sign_in_with_keyboard(page, gw, read["secret"], role="reader")
    for form in ("#org-form", "#user-form", "#key-form", "#budget-form"):
        assert await page.locator(form).is_hidden(), form
    assert "Hidden Corp" in (await page.locator("#orgs tbody").text_content() or "")
    assert await page.locator("#keys button", has_text="Revoke").count() == 0
    await screenshot(page, "admin-reader")
    assert problems == []

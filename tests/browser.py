"""Headless Debian Chromium driven by Playwright, for the end-to-end tests of the web pages.

Playwright's own browser download is never used (no network here): the tests launch the
machine's ``/usr/bin/chromium``, which ``make test`` installs from Debian when it is missing.
Screenshots go to ``test-artifacts/screenshots/`` (the README names it; CI keeps it).
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING

from tests.services import unavailable

if TYPE_CHECKING:
    from playwright.async_api import Browser, Page

CHROMIUM = os.environ.get("TOKENRELAY_CHROMIUM", "/usr/bin/chromium")
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-quic",
    "--no-first-run",
    "--disable-sync",
]
SCREENSHOTS = Path(__file__).resolve().parent.parent / "test-artifacts" / "screenshots"


def _installed() -> bool:
    return os.path.exists(CHROMIUM) or shutil.which(CHROMIUM) is not None


@contextlib.asynccontextmanager
async def chromium() -> AsyncIterator[Browser]:
    """The machine's Chromium under Playwright; skips (fails under ``CI=true``) without it."""
    if not _installed():
        unavailable(f"{CHROMIUM} is missing (Debian package chromium; `make test` installs it)")
    try:
        from playwright.async_api import async_playwright
    except ImportError:
        unavailable("the Python package playwright is not installed (pip install -e '.[test]')")
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=CHROMIUM, args=FLAGS, headless=True
        )
        try:
            yield browser
        finally:
            await browser.close()


async def screenshot(page: Page, name: str) -> Path:
    """Save a full-page PNG under ``test-artifacts/screenshots/`` and return its path."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    await page.screenshot(path=str(path), full_page=True)
    return path

"""Fixtures of the web console tests: one headless Debian Chromium per module, driven by
Playwright, and a page that records console errors and every request it makes.

The browser is the system's (``/usr/bin/chromium``, from ``deploy/ensure-chromium.sh``);
Playwright never downloads one. Tests skip, saying why, when it or Playwright is missing.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from tests.support.daemon import DaemonProcess

os.environ.setdefault("PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD", "1")
CHROMIUM = os.environ.get("LIGHTD_CHROMIUM", "/usr/bin/chromium")
ARTIFACTS = Path(__file__).resolve().parent / "artifacts"

try:
    from playwright.sync_api import Browser, BrowserContext, Page, sync_playwright
except ImportError:  # pragma: no cover - the test extras install it
    sync_playwright = None


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if sync_playwright is None:
        pytest.skip("playwright is not installed (pip install -e '.[test]')")
    if not (Path(CHROMIUM).exists() or shutil.which(CHROMIUM)):
        pytest.skip(f"{CHROMIUM} is missing: run deploy/ensure-chromium.sh")
    with sync_playwright() as driver:
        launched = driver.chromium.launch(
            executable_path=CHROMIUM,
            headless=True,
            args=["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"],
        )
        try:
            yield launched
        finally:
            launched.close()


@dataclass
class Recorded:
    """What one page did: console errors, uncaught errors and every request's URL."""

    origin: str
    errors: list[str] = field(default_factory=list)
    requests: list[str] = field(default_factory=list)

    def foreign(self) -> list[str]:
        own = urlsplit(self.origin).netloc
        return [
            url
            for url in self.requests
            if urlsplit(url).scheme not in ("blob", "data") and urlsplit(url).netloc != own
        ]


@dataclass
class Console:
    """A browser tab on the daemon's console page."""

    page: Page
    context: BrowserContext
    recorded: Recorded
    daemon: DaemonProcess

    def open(self, fragment: str = "") -> None:
        self.page.goto(f"{self.daemon.base_url}/ui/{fragment}")

    def sign_in(self, token: str | None = None) -> None:
        self.open()
        self.page.get_by_label("Token").fill(token or self.daemon.token)
        self.page.get_by_role("button", name="Sign in").click()

    def shot(self, name: str) -> Path:
        ARTIFACTS.mkdir(exist_ok=True)
        path = ARTIFACTS / f"{name}.png"
        self.page.screenshot(path=str(path), full_page=True)
        return path


def new_console(browser: Browser, daemon: DaemonProcess, **options: Any) -> Iterator[Console]:
    context = browser.new_context(
        viewport=options.pop("viewport", {"width": 1360, "height": 900}),
        accept_downloads=True,
        **options,
    )
    page = context.new_page()
    recorded = Recorded(origin=daemon.base_url)
    page.on(
        "console",
        lambda message: recorded.errors.append(message.text) if message.type == "error" else None,
    )
    page.on("pageerror", lambda error: recorded.errors.append(f"uncaught: {error}"))
    page.on("request", lambda request: recorded.requests.append(request.url))
    page.on("websocket", lambda socket: recorded.requests.append(socket.url))
    page.set_default_timeout(15_000)
    try:
        yield Console(page=page, context=context, recorded=recorded, daemon=daemon)
    finally:
        context.close()


@pytest.fixture
def console(browser: Browser, daemon: DaemonProcess) -> Iterator[Console]:
    yield from new_console(browser, daemon)

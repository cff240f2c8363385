"""Real headless Chromium (Debian's package) driven by Playwright."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("playwright.sync_api")

from playwright.sync_api import Browser, BrowserContext, ConsoleMessage, Page, sync_playwright

from tests.conftest import ServerFactory

CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def chromium_path() -> str | None:
    for candidate in (os.environ.get("SALA_CHROMIUM"), "/usr/bin/chromium", "chromium"):
        if candidate and shutil.which(candidate):
            return shutil.which(candidate)
    return None


# Module scope: sync Playwright keeps an event loop running in this thread while it is
# open, and the anyio tests elsewhere need the thread to themselves.
@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    path = chromium_path()
    if path is None:
        if os.environ.get("CI") == "true":
            pytest.fail("Chromium is missing under CI=true: .ci/run should have installed it")
        pytest.skip("no Chromium here (install Debian's chromium package to run browser tests)")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=path, headless=True, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture
def screenshot_dir(tmp_path: Path) -> Path:
    """Where screenshots go: SALA_SCREENSHOT_DIR (make screenshots) or the test's tmp dir."""
    target = Path(os.environ.get("SALA_SCREENSHOT_DIR") or tmp_path / "screenshots")
    target.mkdir(parents=True, exist_ok=True)
    return target


class Pages:
    """Pages in fresh browser contexts; any console error or CSP report fails the test,
    except those the test says it expects."""

    def __init__(self, browser: Browser) -> None:
        self.browser = browser
        self.contexts: list[BrowserContext] = []
        self.problems: list[str] = []
        self.expected: list[str] = []

    def new(self, **options: Any) -> Page:
        return self.open(self.context(**options))

    def context(self, **options: Any) -> BrowserContext:
        context = self.browser.new_context(**options)
        self.contexts.append(context)
        return context

    def open(self, context: BrowserContext) -> Page:
        page = context.new_page()
        page.on("console", self._record)
        page.on("pageerror", lambda error: self.problems.append(str(error)))
        return page

    def _record(self, message: ConsoleMessage) -> None:
        if message.type == "error" or "Content Security Policy" in message.text:
            self.problems.append(message.text)

    def unexpected(self) -> list[str]:
        return [p for p in self.problems if not any(e in p for e in self.expected)]

    def assert_clean(self) -> None:
        """No console error except the ones the test provoked, and no CSP report."""
        csp = [p for p in self.problems if "Content Security Policy" in p]
        assert not csp, csp
        assert not self.unexpected(), self.unexpected()


@pytest.fixture
def pages(browser: Browser, make_server: ServerFactory) -> Iterator[Pages]:
    # Asks for make_server so that the pages close before the servers stop.
    pages = Pages(browser)
    yield pages
    for context in pages.contexts:
        context.close()
    pages.assert_clean()

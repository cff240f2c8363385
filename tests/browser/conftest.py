"""Real headless Chromium (Debian's package) driven by Playwright."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

pytest.importorskip("playwright.sync_api")

from playwright.sync_api import Browser, sync_playwright

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

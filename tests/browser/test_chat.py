"""Two people chatting in real Chromium."""

from __future__ import annotations

from pathlib import Path

from playwright.sync_api import Browser, ConsoleMessage, Page, expect

from tests.conftest import Server


def enter(page: Page, server: Server, name: str, code: str | None = None) -> str:
    page.goto(server.url + (f"/?code={code}" if code else "/"))
    page.get_by_label("Your name").fill(name)
    if code is None:
        page.get_by_role("button", name="Create room").click()
    else:
        page.get_by_role("button", name="Join").click()
    page.wait_for_url("**/rooms/*")
    return page.url.rsplit("/", 1)[-1]


def send(page: Page, text: str) -> None:
    """Type and press Enter, then wait until the message is stored and shown (its pending
    bubble gone), as a person would."""
    box = page.get_by_label("Message")
    box.fill(text)
    box.press("Enter")
    expect(page.locator("#timeline .entry.pending")).to_have_count(0)
    expect(page.locator("#message-form .form-error")).to_have_count(0)


def test_two_people_chat_live(browser: Browser, server: Server, screenshot_dir: Path) -> None:
    ana_context = browser.new_context(
        timezone_id="America/Sao_Paulo", viewport={"width": 900, "height": 640}
    )
    bo_context = browser.new_context(
        timezone_id="Asia/Tokyo", viewport={"width": 375, "height": 640}
    )
    problems: list[str] = []
    try:
        ana = ana_context.new_page()
        bo = bo_context.new_page()
        for page in (ana, bo):
            page.on("console", lambda m: _record(problems, m))
            page.on("pageerror", lambda e: problems.append(str(e)))

        ana.goto(server.url + "/")
        ana.screenshot(path=str(screenshot_dir / "home.png"))
        code = enter(ana, server, "Ana")
        expect(ana.locator("#timeline .entry.join")).to_have_count(1)
        enter(bo, server, "Bo", code)
        expect(ana.locator("#timeline .entry.join")).to_have_count(2)
        expect(ana.locator("#members li[data-author]")).to_have_count(2)

        send(ana, "Oi Bo! Welcome to the room.")
        expect(ana.get_by_label("Message")).to_have_value("")
        expect(ana.get_by_label("Message")).to_be_focused()
        expect(bo.locator(".entry.message")).to_have_count(1)
        send(bo, "Thanks Ana <3 — this works through any proxy?")
        send(ana, "Yes: plain HTTP, Server-Sent Events, no WebSockets.")
        expect(ana.locator(".entry.message")).to_have_count(3)
        expect(bo.locator(".entry.message")).to_have_count(3)

        # Own messages are marked as such in each reader's page.
        expect(ana.locator(".entry.message.mine")).to_have_count(2)
        expect(bo.locator(".entry.message.mine")).to_have_count(1)
        expect(bo.locator(".entry.message.mine .text")).to_have_text(
            "Thanks Ana <3 — this works through any proxy?"
        )
        # Own messages sit on the right, other people's on the left.
        timeline = ana.locator("#timeline").bounding_box()
        mine = ana.locator(".entry.message.mine .bubble").first.bounding_box()
        theirs = ana.locator(".entry.message:not(.mine) .bubble").first.bounding_box()
        assert timeline and mine and theirs
        assert mine["x"] + mine["width"] > timeline["x"] + timeline["width"] - 40
        assert theirs["x"] < timeline["x"] + 40
        assert mine["x"] > theirs["x"] + theirs["width"] / 2
        # Times are shown in each reader's own time zone.
        iso = ana.locator(".entry.message time").first.get_attribute("datetime")
        assert iso is not None
        for page, zone in ((ana, "America/Sao_Paulo"), (bo, "Asia/Tokyo")):
            expected = page.evaluate(
                "([iso, zone]) => new Intl.DateTimeFormat(undefined, "
                "{hour: '2-digit', minute: '2-digit', timeZone: zone}).format(new Date(iso))",
                [iso, zone],
            )
            expect(page.locator(".entry.message time").first).to_have_text(expected)

        ana.screenshot(path=str(screenshot_dir / "chat-ana.png"))
        bo.screenshot(path=str(screenshot_dir / "chat-bo.png"))

        bo.close()
        expect(ana.locator("#timeline .entry.leave")).to_have_count(1, timeout=10_000)
        assert not problems, problems
    finally:
        ana_context.close()
        bo_context.close()


def _record(problems: list[str], message: ConsoleMessage) -> None:
    if message.type == "error" or "Content Security Policy" in message.text:
        problems.append(message.text)

"""Reply, edit, delete, react, mention and search in real Chromium, on a desktop and a
phone, by mouse, touch and keyboard, with more than a screenful of messages."""

from __future__ import annotations

from typing import Any

from playwright.sync_api import Page, expect

from tests.browser.conftest import Pages
from tests.browser.test_chat import enter, send
from tests.conftest import Server

PHONE: dict[str, Any] = {
    "viewport": {"width": 375, "height": 667},
    "is_mobile": True,
    "has_touch": True,
    "device_scale_factor": 2,
}
DESKTOP: dict[str, Any] = {"viewport": {"width": 1100, "height": 700}}


def message(page: Page, text: str) -> Any:
    return page.locator("#timeline .entry.message").filter(has_text=text)


def sheet(page: Page) -> Any:
    return page.locator("#message-options:not([hidden])")


def two_people(pages: Pages, server: Server) -> tuple[Page, Page]:
    ana = pages.new(**DESKTOP)
    bo = pages.new(**PHONE)
    code = enter(ana, server, "Ana")
    enter(bo, server, "Bo", code)
    expect(ana.locator("#members")).to_contain_text("Bo")
    for n in range(14):  # more than a phone's screenful
        send(ana, f"Ana says {n}")
    expect(message(bo, "Ana says 13")).to_be_visible()
    return ana, bo


def test_react_and_reply_by_touch_on_a_phone(pages: Pages, server: Server) -> None:
    ana, bo = two_people(pages, server)
    # A tap on a message opens its options; a tap on 👍 reacts.
    message(bo, "Ana says 12").locator(".text").tap()
    expect(sheet(bo)).to_be_visible()
    sheet(bo).get_by_role("button", name="React with 👍").tap()
    expect(sheet(bo)).to_have_count(0)
    chip = message(ana, "Ana says 12").locator(".reactions button")
    expect(chip).to_have_text("👍 1")
    expect(chip).to_have_attribute("title", "Bo")
    # Tapping the chip again takes the reaction back.
    message(bo, "Ana says 12").locator(".reactions button").tap()
    expect(message(ana, "Ana says 12").locator(".reactions")).to_have_count(0)

    # Reply: the bar says to what; the reply shows a quote linking to the original.
    message(bo, "Ana says 3").locator(".text").tap()
    sheet(bo).get_by_role("button", name="Reply").tap()
    expect(bo.locator("#replying")).to_contain_text("Ana says 3")
    send(bo, "replying to three")
    expect(bo.locator("#replying")).to_be_hidden()
    quote = message(ana, "replying to three").locator(".quote")
    expect(quote).to_contain_text("Ana says 3")
    original_id = message(ana, "Ana says 3").first.get_attribute("id")
    expect(quote).to_have_attribute("href", f"#{original_id}")

    # Escape cancels a reply: the next message is a plain one.
    message(bo, "Ana says 4").locator(".text").tap()
    sheet(bo).get_by_role("button", name="Reply").tap()
    expect(bo.locator("#replying")).to_be_visible()
    bo.get_by_label("Message", exact=True).press("Escape")
    expect(bo.locator("#replying")).to_be_hidden()
    send(bo, "not a reply")
    expect(message(ana, "not a reply").locator(".quote")).to_have_count(0)
    bo.screenshot(path=str(server.workdir / "phone-reply.png"))


def test_edit_with_up_arrow_delete_and_react_by_keyboard(pages: Pages, server: Server) -> None:
    ana, bo = two_people(pages, server)
    field = ana.get_by_label("Message", exact=True)
    # Up-arrow in the empty field edits the last own message; Enter saves.
    field.focus()
    field.press("ArrowUp")
    editing = ana.get_by_label("Edit your message")
    expect(editing).to_be_focused()
    expect(editing).to_have_value("Ana says 13")
    editing.fill("Ana says thirteen")
    editing.press("Enter")
    expect(message(bo, "Ana says thirteen")).to_be_visible()
    expect(message(bo, "Ana says thirteen").locator(".edited")).to_be_visible()
    # Escape cancels an edit: nothing changes, the field has the focus back.
    field.press("ArrowUp")
    expect(ana.get_by_label("Edit your message")).to_be_focused()
    ana.get_by_label("Edit your message").fill("never saved")
    ana.keyboard.press("Escape")
    expect(sheet(ana)).to_have_count(0)
    expect(message(bo, "never saved")).to_have_count(0)

    # Keyboard only: the message's ⋯ link, then Delete for everyone.
    options = message(ana, "Ana says 7").locator(".options")
    options.focus()
    options.press("Enter")
    delete = sheet(ana).get_by_role("button", name="Delete for everyone")
    delete.focus()
    delete.press("Enter")
    expect(message(bo, "Ana says 7")).to_have_count(0)
    expect(bo.locator("#timeline .entry.deleted")).to_have_count(1)
    expect(bo.locator("#timeline .entry.deleted .text")).to_have_text("Message deleted")

    # React by keyboard: the sheet focuses the first reaction; Enter reacts.
    send(bo, "react to this one")
    theirs = message(ana, "react to this one").locator(".options")
    theirs.focus()
    theirs.press("Enter")
    expect(sheet(ana).get_by_role("button", name="React with 👍")).to_be_focused()
    expect(sheet(ana).get_by_role("button", name="Delete for everyone")).to_have_count(0)
    ana.keyboard.press("Enter")
    expect(message(bo, "react to this one").locator(".reactions button")).to_have_text("👍 1")


def test_a_mention_stands_out_for_the_one_mentioned(pages: Pages, server: Server) -> None:
    ana, bo = two_people(pages, server)
    send(bo, "@Ana can you look?")
    mine = message(ana, "can you look?").locator(".mention")
    expect(mine).to_have_text("@Ana")
    expect(mine).to_have_class("mention mention-me")
    expect(message(bo, "can you look?").locator(".mention")).to_have_class("mention")
    # A hidden tab counts mentions apart from other unread messages.
    ana.evaluate("Object.defineProperty(document, 'hidden', {configurable: true, get: () => true})")
    title = ana.title()
    send(bo, "just chatting")
    send(bo, "and @Ana again")
    send(bo, "and more")
    expect(ana).to_have_title(f"(2 · @1) {title}")


def test_search_opens_the_conversation_at_the_message(pages: Pages, server: Server) -> None:
    ana, bo = two_people(pages, server)
    send(bo, "Amanhã não posso")
    for n in range(30):
        send(ana, f"later {n}")
    bo.get_by_role("link", name="Search").tap()
    bo.get_by_label("Words to find").fill("nao")
    bo.get_by_label("Words to find").press("Enter")
    expect(bo.locator(".search-result")).to_have_count(1)
    expect(bo.locator(".search-result mark")).to_have_text("não")
    bo.get_by_role("link", name="Show in the conversation").tap()
    found = bo.locator("#timeline .entry.highlight")
    expect(found).to_contain_text("Amanhã não posso")
    expect(found).to_be_in_viewport()

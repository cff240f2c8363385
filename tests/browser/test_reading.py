"""Reading a room in the browser: restarts, history, scrolling, unread count, no-JS,
keyboard use and small screens."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import httpx
from playwright.sync_api import Page, expect

from tests.browser.conftest import Pages
from tests.browser.test_chat import enter, send
from tests.conftest import Server, ServerFactory


@contextlib.contextmanager
def poster(server: Server, code: str, name: str = "Poster") -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url) as client:
        client.post("/", data={"name": name, "code": code, "action": "join"})
        yield client


def entry_ids(page: Page) -> list[int]:
    ids: list[str] = page.locator("#timeline .entry").evaluate_all("els => els.map(e => e.id)")
    return [int(i.removeprefix("entry-")) for i in ids]


def test_pages_catch_up_after_a_server_restart(pages: Pages, server: Server) -> None:
    # While the server is down the pages' reconnects fail, and say so in the console.
    pages.expected += ["ERR_CONNECTION_REFUSED", "htmx:sse:error", "Failed to fetch"]
    ana, bo = pages.new(), pages.new()
    code = enter(ana, server, "Ana")
    enter(bo, server, "Bo", code)
    send(ana, "before the restart")
    expect(bo.locator(".entry.message")).to_have_count(1)

    server.restart()
    with poster(server, code) as client:
        for n in range(3):
            response = client.post(f"/rooms/{code}/messages", data={"text": f"while away {n}"})
            assert response.status_code == 303
    for page in (ana, bo):
        expect(page.locator(".entry.message")).to_have_count(4, timeout=20_000)
        ids = entry_ids(page)
        assert ids == sorted(set(ids))
        expect(page.locator(".entry.message .text").last).to_have_text("while away 2")
    # Nobody left or came back: the restart made no join/leave noise.
    expect(ana.locator(".entry.leave")).to_have_count(0)
    send(bo, "and live again")
    expect(ana.locator(".entry.message")).to_have_count(5)


def _reader_in_a_room(pages: Pages, make_server: ServerFactory) -> tuple[Server, Page, str]:
    """Ana in a new room on a server without a rate limit (the tests post a lot)."""
    server = make_server(limit_messages_per_second=0)
    page = pages.new(viewport={"width": 800, "height": 600})
    return server, page, enter(page, server, "Ana")


def test_scrolling_to_the_top_loads_older_history_in_place(
    pages: Pages, make_server: ServerFactory
) -> None:
    server, page, code = _reader_in_a_room(pages, make_server)
    with poster(server, code) as client:
        for n in range(80):
            client.post(f"/rooms/{code}/messages", data={"text": f"old {n}"})
    page.reload()
    expect(page.locator(".entry")).to_have_count(50)
    first_shown = page.locator(".entry").first
    first_id = first_shown.get_attribute("id")
    page.locator("#timeline").evaluate("t => { t.scrollTop = 0; }")
    expect(page.locator(".entry")).to_have_count(81, timeout=10_000)  # 80 and Ana's join
    # What the reader was looking at stays in view, not yanked to the new top.
    box = page.locator(f"#{first_id}").bounding_box()
    timeline = page.locator("#timeline").bounding_box()
    assert box is not None and timeline is not None
    assert timeline["y"] - 5 <= box["y"] <= timeline["y"] + timeline["height"]
    expect(page.locator("#load-older")).to_have_text("This is the start of the room.")


def test_reading_older_messages_is_not_yanked_down_by_new_ones(
    pages: Pages, make_server: ServerFactory
) -> None:
    server, page, code = _reader_in_a_room(pages, make_server)
    with poster(server, code) as client:
        for n in range(40):
            client.post(f"/rooms/{code}/messages", data={"text": f"line {n}"})
        expect(page.locator(".entry.message")).to_have_count(40)
        page.locator("#timeline").evaluate("t => { t.scrollTop = t.scrollHeight / 3; }")
        page.wait_for_timeout(200)
        before = page.locator("#timeline").evaluate("t => t.scrollTop")
        client.post(f"/rooms/{code}/messages", data={"text": "something new"})
        expect(page.locator(".entry.message")).to_have_count(41)
        button = page.locator("#new-messages")
        expect(button).to_be_visible()
        expect(button).to_have_text("New message ↓")  # one
        client.post(f"/rooms/{code}/messages", data={"text": "and more"})
    expect(page.locator(".entry.message")).to_have_count(42)
    expect(button).to_have_text("New messages ↓")  # more than one
    assert page.locator("#timeline").evaluate("t => t.scrollTop") == before
    button.click()
    expect(button).to_be_hidden()
    expect(page.locator(".entry.message").last).to_be_in_viewport()


def test_hidden_tab_counts_unread_messages_in_the_title(pages: Pages, server: Server) -> None:
    page = pages.new()
    code = enter(page, server, "Ana")
    title = page.title()
    # Headless Chromium keeps every tab visible, so hide this one the way the
    # browser reports it: document.hidden and a visibilitychange event.
    page.evaluate(
        """() => {
            window.__hidden = true;
            Object.defineProperty(
                document, "hidden", {configurable: true, get: () => window.__hidden}
            );
            document.dispatchEvent(new Event("visibilitychange"));
        }"""
    )
    with poster(server, code, "Bo") as client:
        client.post(f"/rooms/{code}/messages", data={"text": "are you there?"})
        client.post(f"/rooms/{code}/messages", data={"text": "hello?"})
    expect(page).to_have_title(f"(2) {title}")
    page.evaluate(
        "() => { window.__hidden = false; document.dispatchEvent(new Event('visibilitychange')); }"
    )
    expect(page).to_have_title(title)


def test_everything_but_live_updates_works_without_javascript(
    pages: Pages, make_server: ServerFactory
) -> None:
    server = make_server(limit_messages_per_second=0)
    page = pages.new(java_script_enabled=False)
    pages.expected.append("status of 422")
    page.goto(server.url + "/")
    page.get_by_label("Your name").fill("")
    page.get_by_role("button", name="Create room").click()
    expect(page.locator(".form-error")).to_contain_text("enter your name")
    page.get_by_label("Your name").fill("Nojs")
    page.get_by_role("button", name="Create room").click()
    page.wait_for_url("**/rooms/*")
    code = page.url.rsplit("/", 1)[-1]
    page.get_by_label("Message").fill("posted without JavaScript")
    page.get_by_role("button", name="Send").click()  # Enter in a textarea is a new line
    page.wait_for_load_state()
    expect(page.locator(".entry.message .text")).to_have_text(["posted without JavaScript"])
    # Times show in UTC without JS.
    expect(page.locator(".entry.message time")).to_contain_text("UTC")
    with poster(server, code) as client:
        for n in range(55):
            client.post(f"/rooms/{code}/messages", data={"text": f"more {n}"})
    page.reload()
    page.get_by_role("link", name="Load older messages").click()
    expect(page.locator(".entry.message .text").first).to_have_text("posted without JavaScript")
    expect(page.get_by_role("link", name="Back to the latest")).to_be_visible()


def test_keyboard_only_small_screen_and_long_words(pages: Pages, server: Server) -> None:
    page = pages.new(viewport={"width": 375, "height": 700})
    page.goto(server.url + "/")
    expect(page.get_by_label("Your name")).to_be_focused()
    page.keyboard.type("Keys")
    page.keyboard.press("Tab")
    expect(page.get_by_label("Room code")).to_be_focused()
    page.keyboard.press("Tab")
    page.keyboard.press("Tab")
    expect(page.get_by_role("button", name="Create room")).to_be_focused()
    page.keyboard.press("Enter")
    page.wait_for_url("**/rooms/*")
    expect(page.get_by_label("Message")).to_be_focused()
    long_word = "Supercalifragilistic" * 15
    page.keyboard.type(long_word + " and a long message " * 10)
    page.keyboard.press("Enter")
    expect(page.locator(".entry.message")).to_have_count(1)
    expect(page.locator(".entry.pending")).to_have_count(0)  # stored and shown, once
    expect(page.locator(".entry.message")).to_have_count(1)
    expect(page.locator("#timeline")).to_have_attribute("aria-live", "polite")
    # Nothing is wider than the screen: long words wrap.
    assert page.evaluate("document.documentElement.scrollWidth") <= 375
    bubble = page.locator(".entry.message .bubble").bounding_box()
    assert bubble is not None and bubble["x"] + bubble["width"] <= 375
    # Every control has a name a screen reader can say.
    unnamed = page.evaluate(
        """() => [...document.querySelectorAll("input:not([type=hidden]), button")]
            .filter(el => !(el.labels && el.labels.length) && !el.textContent.trim()
                          && !el.getAttribute("aria-label"))
            .map(el => el.outerHTML)"""
    )
    assert unnamed == []

"""Sending in real Chromium: nothing typed is lost, whatever the network does.

A message waits in a pending bubble and in an outbox in localStorage until the server
has stored it; every attempt carries the same idempotency key, so it is stored once.
"""

from __future__ import annotations

import json
import sqlite3
import time
from contextlib import closing
from pathlib import Path

import httpx
from playwright.sync_api import Locator, Page, Route, expect

from tests.browser.conftest import Pages
from tests.browser.test_chat import enter, send
from tests.conftest import Server, ServerFactory

# Failed requests are what these tests provoke; Chromium logs each one.
NETWORK_ERRORS = [
    "ERR_INTERNET_DISCONNECTED",
    "ERR_CONNECTION_REFUSED",
    "ERR_CONNECTION_RESET",
    "ERR_FAILED",
    "Failed to fetch",
    "htmx:sse:error",
]


def stored_messages(server: Server) -> list[tuple[str, str]]:
    """(body, idempotency key) of every message, read from the SQLite file read-only."""
    uri = f"file:{Path(server.db_path).as_posix()}?mode=ro"
    with closing(sqlite3.connect(uri, uri=True)) as db:
        rows = db.execute("SELECT body, idempotency_key FROM entry WHERE kind = 'message'")
        return [(body, key) for body, key in rows.fetchall()]


def outbox(page: Page) -> list[dict[str, str]]:
    code = page.url.rsplit("/", 1)[-1]
    saved = page.evaluate("code => localStorage.getItem(`sala.outbox.${code}`)", code)
    items: list[dict[str, str]] = json.loads(saved) if saved else []
    return items


def post_as(server: Server, code: str, text: str) -> None:
    """Another person posts a plain form, outside the browser."""
    with httpx.Client(base_url=server.url) as client:
        client.post("/", data={"name": "Poster", "code": code, "action": "join"})
        assert client.post(f"/rooms/{code}/messages", data={"text": text}).status_code == 303


def pending(page: Page, text: str = "") -> Locator:
    return page.locator("#timeline .entry.pending").filter(has_text=text)


def test_sent_offline_it_waits_and_is_delivered_once_back_online(
    pages: Pages, server: Server
) -> None:
    pages.expected += NETWORK_ERRORS
    context = pages.context()
    ana, bo = pages.open(context), pages.new()
    code = enter(ana, server, "Ana")
    enter(bo, server, "Bo", code)
    expect(ana.locator(".entry.join")).to_have_count(2)

    context.set_offline(True)
    expect(ana.get_by_role("status")).to_have_text("You are offline")
    box = ana.get_by_label("Message")
    box.fill("written on the train")
    box.press("Enter")
    bubble = ana.locator("#timeline .entry.pending")
    expect(bubble).to_contain_text("written on the train")
    expect(bubble).to_contain_text("Not sent")
    expect(bubble.get_by_role("button", name="Retry")).to_be_visible()
    expect(box).to_have_value("")
    assert [i["text"] for i in outbox(ana)] == ["written on the train"]
    assert stored_messages(server) == []

    context.set_offline(False)
    expect(bubble).to_have_count(0)
    expect(ana.get_by_role("status")).to_be_hidden()
    for page in (ana, bo):
        expect(page.locator(".entry.message .text")).to_have_text(["written on the train"])
    assert [body for body, _ in stored_messages(server)] == ["written on the train"]
    assert outbox(ana) == []
    bo.wait_for_timeout(300)
    expect(bo.locator(".entry.message")).to_have_count(1)


def test_a_refresh_keeps_what_was_pending_and_sends_it_once(pages: Pages, server: Server) -> None:
    pages.expected += NETWORK_ERRORS
    page = pages.new()
    enter(page, server, "Ana")
    keys: list[str | None] = []

    def lose(route: Route) -> None:
        keys.append(route.request.header_value("idempotency-key"))
        route.abort("internetdisconnected")

    page.route("**/messages", lose)
    box = page.get_by_label("Message")
    box.fill("do not lose me")
    box.press("Enter")
    expect(pending(page, "do not lose me")).to_contain_text("Not sent")
    [saved] = outbox(page)

    page.unroute("**/messages")
    page.on("request", lambda r: keys.append(r.header_value("idempotency-key")))
    page.reload()
    expect(page.locator(".entry.message .text")).to_have_text(["do not lose me"])
    expect(pending(page)).to_have_count(0)
    assert stored_messages(server) == [("do not lose me", saved["key"])]
    assert set(keys) - {None} == {saved["key"]}
    assert outbox(page) == []
    # What is typed and not sent yet survives a refresh too.
    page.get_by_label("Message").fill("half a thought")
    page.reload()
    expect(page.get_by_label("Message")).to_have_value("half a thought")


def test_a_lost_answer_is_retried_with_the_same_key_and_stored_once(
    pages: Pages, server: Server
) -> None:
    pages.expected += NETWORK_ERRORS
    page = pages.new()
    enter(page, server, "Ana")
    keys: list[str | None] = []

    def answer_lost_once(route: Route) -> None:
        keys.append(route.request.header_value("idempotency-key"))
        if len(keys) == 1:
            route.fetch()  # the server stores it, then the answer is lost on the way back
            route.abort("connectionreset")
        else:
            route.continue_()

    page.route("**/messages", answer_lost_once)
    page.get_by_label("Message").fill("once is enough")
    page.get_by_label("Message").press("Enter")
    expect(page.locator("#timeline .entry.pending")).to_have_count(0, timeout=10_000)
    expect(page.locator(".entry.message .text")).to_have_text(["once is enough"])
    assert len(keys) >= 2 and len(set(keys)) == 1
    assert stored_messages(server) == [("once is enough", keys[0])]


def test_shift_enter_starts_a_new_line_and_enter_sends(pages: Pages, server: Server) -> None:
    ana, bo = pages.new(), pages.new()
    code = enter(ana, server, "Ana")
    enter(bo, server, "Bo", code)
    box = ana.get_by_label("Message")
    one_line = box.bounding_box()
    box.press_sequentially("first line")
    box.press("Shift+Enter")
    box.press_sequentially("second line")
    expect(box).to_have_value("first line\nsecond line")
    assert pending(ana).count() == 0
    two_lines = box.bounding_box()
    assert one_line and two_lines and two_lines["height"] > one_line["height"] + 10
    box.press("Enter")
    text = bo.locator(".entry.message .text")
    expect(text).to_have_count(1)
    assert text.inner_text() == "first line\nsecond line"
    # It grows up to a few lines, then scrolls.
    box.fill("\n".join(f"line {n}" for n in range(12)))
    many = box.bounding_box()
    assert many and many["height"] < one_line["height"] * 6
    assert box.evaluate("b => b.scrollHeight > b.clientHeight")


def test_the_counter_shows_near_the_limit_and_too_long_is_refused_uncut(
    pages: Pages, server: Server
) -> None:
    page = pages.new()
    enter(page, server, "Ana")
    box = page.get_by_label("Message")
    counter = page.locator("#message-count")
    box.fill("a" * 1500)
    expect(counter).to_be_hidden()
    box.fill("a" * 1990)
    expect(counter).to_have_text("1,990 / 2,000")
    box.fill("a" * 2001)
    expect(counter).to_contain_text("too long")
    box.press("Enter")
    expect(page.get_by_role("alert")).to_contain_text("at most 2,000 characters (it has 2,001)")
    expect(box).to_have_value("a" * 2001)
    expect(pending(page)).to_have_count(0)
    assert stored_messages(server) == []
    page.keyboard.press("Backspace")
    expect(page.get_by_role("alert")).to_be_hidden()
    send(page, "a" * 2000)
    assert [len(body) for body, _ in stored_messages(server)] == [2000]


def test_too_fast_waits_its_turn_and_a_refusal_comes_back_in_words(
    pages: Pages, make_server: ServerFactory
) -> None:
    server = make_server(limit_message_burst=1, limit_messages_per_second=1)
    pages.expected += ["status of 429", "status of 422"]
    page = pages.new()
    enter(page, server, "Ana")
    statuses: list[int] = []
    page.on("response", lambda r: statuses.append(r.status) if "/messages" in r.url else None)
    box = page.get_by_label("Message")
    for text in ("one", "two", "three"):
        box.fill(text)
        box.press("Enter")
    # The server says "too fast" (429, Retry-After): each waits, then goes, in order.
    expect(page.locator(".entry.message .text")).to_have_text(
        ["one", "two", "three"], timeout=10_000
    )
    expect(pending(page)).to_have_count(0)
    assert 429 in statuses
    assert [body for body, _ in stored_messages(server)] == ["one", "two", "three"]

    box.fill("ring the bell \x07")
    box.press("Enter")
    # Not retried blindly: the server's words in the bubble, the text back in the field.
    expect(pending(page, "ring the bell")).to_contain_text("cannot contain control characters")
    expect(box).to_have_value("ring the bell \x07")
    assert len(stored_messages(server)) == 3


def test_the_status_bar_says_reconnecting_while_the_server_is_away(
    pages: Pages, server: Server
) -> None:
    pages.expected += NETWORK_ERRORS
    page = pages.new()
    code = enter(page, server, "Ana")
    status = page.get_by_role("status")
    expect(status).to_be_hidden()
    server.stop()
    expect(status).to_have_text("Reconnecting…")
    expect(status).to_be_visible()
    # The bar sits above the form and leaves the field free to type in.
    bar, field = status.bounding_box(), page.get_by_label("Message").bounding_box()
    assert bar and field and bar["y"] + bar["height"] <= field["y"]
    server.start()
    post_as(server, code, "while you were away")
    expect(page.locator(".entry.message .text")).to_have_text(
        ["while you were away"], timeout=20_000
    )
    expect(status).to_be_hidden()


def test_back_online_the_stream_reconnects_at_once(
    pages: Pages, make_server: ServerFactory
) -> None:
    # A longer presence grace makes the server ask for slower reconnects (retry: 1-3 s),
    # so after a few failed attempts offline, htmx's own backoff is many seconds long.
    server = make_server(presence_grace_seconds=6)
    pages.expected += NETWORK_ERRORS
    context = pages.context()
    page = pages.open(context)
    code = enter(page, server, "Ana")
    expect(page.locator(".entry.join")).to_have_count(1)
    context.set_offline(True)
    server.restart()  # the stream ends, and every reconnect fails while offline
    post_as(server, code, "posted while you were offline")
    page.wait_for_timeout(7000)
    expect(page.locator(".entry.message")).to_have_count(0)
    page.evaluate("() => { window.streamWhileOffline = document.getElementById('stream'); }")
    context.set_offline(False)
    started = time.monotonic()
    # Not left to htmx's backoff: the page starts a fresh stream (from its cursor) at once.
    page.wait_for_function("() => !window.streamWhileOffline.isConnected", timeout=1000)
    expect(page.locator(".entry.message .text")).to_have_text(
        ["posted while you were offline"], timeout=5000
    )
    assert time.monotonic() - started < 3
    expect(page.get_by_role("status")).to_be_hidden()


def test_stored_while_the_stream_is_down_it_says_sent_until_the_entry_arrives(
    pages: Pages, server: Server
) -> None:
    pages.expected += NETWORK_ERRORS
    context = pages.context()
    page = pages.open(context)
    enter(page, server, "Ana")
    page.route("**/events*", lambda route: route.abort("connectionrefused"))
    server.restart()  # the stream ends and cannot come back; posting still works
    expect(page.get_by_role("status")).to_have_text("Reconnecting…")
    page.get_by_label("Message").fill("stored, not seen yet")
    page.get_by_label("Message").press("Enter")
    bubble = pending(page, "stored, not seen yet")
    expect(bubble).to_contain_text("Sent", timeout=8000)
    expect(bubble.get_by_role("button", name="Retry")).to_be_hidden()
    assert [body for body, _ in stored_messages(server)] == ["stored, not seen yet"]
    assert outbox(page) == []
    page.unroute("**/events*")
    context.set_offline(True)  # a network change: the page reconnects at once
    context.set_offline(False)
    expect(pending(page)).to_have_count(0)
    expect(page.locator(".entry.message .text")).to_have_text(["stored, not seen yet"])


def test_retry_is_reachable_and_works_from_the_keyboard(pages: Pages, server: Server) -> None:
    pages.expected += NETWORK_ERRORS
    page = pages.new()
    enter(page, server, "Ana")
    blocked = True

    def maybe_lose(route: Route) -> None:
        if blocked:
            route.abort("internetdisconnected")
        else:
            route.continue_()

    page.route("**/messages", maybe_lose)
    # Typed once the field has the caret, as a person would (autofocus lands at the
    # page's next rendering, which on a busy machine can come after the first key).
    expect(page.get_by_label("Message")).to_be_focused()
    page.keyboard.type("press retry for me")
    page.keyboard.press("Enter")
    retry = pending(page).get_by_role("button", name="Retry")
    expect(retry).to_be_visible()
    for _ in range(10):
        page.keyboard.press("Shift+Tab")
        if retry.evaluate("b => b === document.activeElement"):
            break
    expect(retry).to_be_focused()
    blocked = False
    page.keyboard.press("Enter")
    expect(pending(page)).to_have_count(0)
    expect(page.locator(".entry.message .text")).to_have_text(["press retry for me"])
    expect(page.get_by_label("Message")).to_be_focused()
    assert [body for body, _ in stored_messages(server)] == ["press retry for me"]

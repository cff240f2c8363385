"""Hostile people in real Chromium: lookalike names, bidi tricks, two authors with one
name, and forms posted from a sibling origin."""

from __future__ import annotations

import re
import sqlite3
import threading
from collections.abc import Callable, Iterator
from contextlib import closing
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

import pytest
from playwright.sync_api import (
    Locator,
    Page,
    Response,
    expect,
)

from tests.browser.conftest import Pages
from tests.browser.test_chat import enter, send
from tests.conftest import Server

TAKEN = re.compile("already called")
CROSS_SITE = re.compile("sent from another site")


@dataclass
class OtherSite:
    """A plain HTTP server on another port of 127.0.0.1: same site, another origin."""

    url: str
    pages: dict[str, str] = field(default_factory=dict)


@pytest.fixture
def other_site() -> Iterator[OtherSite]:
    site = OtherSite(url="")

    class Handler(BaseHTTPRequestHandler):
        served: ClassVar[dict[str, str]] = site.pages

        def do_GET(self) -> None:
            body = self.served.get(self.path)
            if body is None:
                self.send_response(404)
                self.end_headers()
                return
            data = body.encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    site.url = f"http://127.0.0.1:{httpd.server_address[1]}"
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield site
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(5)


def posted_to(url: str) -> Callable[[Response], bool]:
    """Matches the answer to a POST of `url`."""
    return lambda response: response.request.method == "POST" and response.url == url


def members(page: Page) -> Locator:
    return page.locator("#members li[data-author]")


def stored(server: Server, sql: str, *params: object) -> list[tuple[Any, ...]]:
    """Read the server's SQLite file read-only."""
    uri = f"file:{Path(server.db_path).as_posix()}?mode=ro"
    with closing(sqlite3.connect(uri, uri=True)) as db:
        return db.execute(sql, params).fetchall()


# Where a piece of text is drawn: the box of the first occurrence of `needle` in the
# element's text nodes (a Range, so it is the glyphs' own box, whatever the bidi order).
TEXT_BOX = """(root, needle) => {
  const walker = document.createTreeWalker(root, NodeFilter.SHOW_TEXT);
  for (let node = walker.nextNode(); node; node = walker.nextNode()) {
    const at = node.data.indexOf(needle);
    if (at < 0) continue;
    const range = document.createRange();
    range.setStart(node, at);
    range.setEnd(node, at + needle.length);
    const box = range.getBoundingClientRect();
    return {left: box.left, right: box.right, top: box.top, bottom: box.bottom};
  }
  return null;
}"""


def text_box(locator: Locator, needle: str) -> dict[str, float]:
    box: dict[str, float] | None = locator.evaluate(TEXT_BOX, needle)
    assert box is not None, f"{needle!r} is not drawn in {locator}"
    return box


def left_of(a: dict[str, float], b: dict[str, float]) -> bool:
    """Box `a` is drawn left of box `b` (sub-pixel overlap allowed)."""
    return a["right"] <= b["left"] + 0.5


def reads_left_to_right(locator: Locator, text: str) -> bool:
    """The first character of `text` is drawn left of its last one."""
    return text_box(locator, text[0])["left"] < text_box(locator, text[-1])["left"]


# -- 1. lookalike names ----------------------------------------------------------


def test_lookalike_names_are_refused_while_the_first_is_present(
    pages: Pages, server: Server
) -> None:
    """Cyrillic, fullwidth and zero-width variants of a present member's name are
    refused on the home form in words, values kept; a different name joins."""
    pages.expected.append("status of 422")
    ana = pages.new()
    code = enter(ana, server, "Ana")
    expect(members(ana)).to_have_text(["Ana"])

    other = pages.new()
    other.goto(f"{server.url}/?code={code}")
    cyrillic, fullwidth, zero_width = "\u0410na", "\uff21\uff4e\uff41", "ana\u200b"
    # Each with the values the form may show back (NFKC and invisible characters
    # dropped are fine: the field holds what the name became).
    attempts = [(cyrillic, {cyrillic}), (fullwidth, {fullwidth, "Ana"}), (zero_width, {"ana"})]
    for typed, shown in attempts:
        other.get_by_label("Your name").fill(typed)
        with other.expect_response(posted_to(server.url + "/")) as answer:
            other.get_by_role("button", name="Join").click()
        assert answer.value.status == 422, (typed, answer.value.status)
        alert = other.get_by_role("alert")
        expect(alert).to_contain_text(TAKEN)
        expect(alert).to_contain_text("Pick another name")
        assert "/rooms/" not in other.url
        assert other.get_by_label("Your name").input_value() in shown, typed
        expect(other.get_by_label("Room code")).to_have_value(code)
        expect(members(ana)).to_have_text(["Ana"])

    other.get_by_label("Your name").fill("Bo")
    other.get_by_role("button", name="Join").click()
    other.wait_for_url(f"**/rooms/{code}")
    expect(other.get_by_role("alert")).to_have_count(0)
    expect(members(ana)).to_have_text(["Ana", "Bo"])
    expect(members(other)).to_have_text(["Ana", "Bo"])
    assert stored(server, "SELECT author_name FROM entry WHERE kind = 'join' ORDER BY id") == [
        ("Ana",),
        ("Bo",),
    ]
    pages.assert_clean()


# -- 2. bidi ---------------------------------------------------------------------


def test_bidi_names_and_texts_are_isolated(pages: Pages, server: Server) -> None:
    """A right-to-left override in a name is dropped ("evil" reads left to right and
    "joined" after it too); an RTL name is drawn in its own direction inside <bdi>,
    message text takes its own direction (dir=auto), and an override inside a message
    reverses nothing outside it."""
    ana = pages.new(viewport={"width": 1000, "height": 800})
    code = enter(ana, server, "Ana")

    evil = pages.new()
    enter(evil, server, "\u202eevil", code)
    notice = ana.locator("#timeline .entry.join").filter(has_text="evil")
    expect(notice).to_have_count(1)
    expect(notice.locator(".author bdi")).to_have_text("evil")
    expect(members(ana).filter(has_text="evil").locator("bdi")).to_have_text("evil")
    assert "\u202e" not in ana.content()
    assert stored(server, "SELECT author_name FROM entry WHERE kind = 'join' ORDER BY id")[-1] == (
        "evil",
    )
    # The line reads "evil joined 12:34", left to right, in that order.
    line = notice.locator(".notice")
    name, joined, time = text_box(line, "evil"), text_box(line, "joined"), text_box(line, ":")
    assert reads_left_to_right(line, "evil")
    assert reads_left_to_right(line, "joined")
    assert left_of(name, joined) and left_of(joined, time)

    # An RTL name ending in "!": isolated, it reads right to left, so the "!" (its end)
    # is drawn left of the Hebrew. Without <bdi> the "!" would take the line's LTR
    # direction and land on the right.
    rtl_name = "שלום!"
    shalom = pages.new()
    enter(shalom, server, rtl_name, code)
    rtl_notice = ana.locator("#timeline .entry.join").filter(has_text="שלום")
    expect(rtl_notice.locator(".author bdi")).to_have_text(rtl_name)
    rtl_line = rtl_notice.locator(".notice")
    assert left_of(text_box(rtl_line, "!"), text_box(rtl_line, "שלום"))
    assert left_of(text_box(rtl_line, "שלום"), text_box(rtl_line, "joined"))
    assert reads_left_to_right(rtl_line, "joined")

    send(evil, "\u202eevil text")
    send(shalom, "hello 123")
    send(shalom, "שלום 123 hello")
    bubbles = ana.locator(".entry.message .bubble")
    expect(bubbles).to_have_count(3)
    overridden, latin, hebrew = bubbles.nth(0), bubbles.nth(1), bubbles.nth(2)
    for bubble in (overridden, latin, hebrew):
        expect(bubble.locator(".author > bdi")).to_have_count(1)
        expect(bubble.locator(".text")).to_have_attribute("dir", "auto")
    expect(latin.locator(".author bdi")).to_have_text(rtl_name)

    # The RTL author name above a bubble is drawn in its own direction too.
    author = latin.locator(".author")
    assert left_of(text_box(author, "!"), text_box(author, "שלום"))
    # An LTR text by an RTL-named author reads left to right, digits after the word.
    latin_text = latin.locator(".text")
    assert left_of(text_box(latin_text, "hello"), text_box(latin_text, "123"))
    # An RTL text is its own RTL paragraph: the Hebrew at the right-hand end and
    # "hello" at the left (in an LTR paragraph it would be "123 שלום hello").
    hebrew_text = hebrew.locator(".text")
    assert left_of(text_box(hebrew_text, "hello"), text_box(hebrew_text, "123"))
    assert left_of(text_box(hebrew_text, "123"), text_box(hebrew_text, "שלום"))

    # The override inside a message stays inside it: its time still reads left to
    # right at the right-hand end of the bubble, and the next message is untouched.
    for bubble in (overridden, latin, hebrew):
        stamp = bubble.locator("time")
        clock = stamp.inner_text()
        assert reads_left_to_right(stamp, clock), clock
        box, frame = text_box(stamp, clock), bubble.bounding_box()
        assert frame is not None
        assert box["right"] > frame["x"] + frame["width"] - 16, (box, frame)
    assert reads_left_to_right(latin_text, "hello")
    latin_frame, overridden_frame = latin.bounding_box(), overridden.bounding_box()
    assert latin_frame is not None and overridden_frame is not None
    assert abs(latin_frame["x"] - overridden_frame["x"]) < 1
    pages.assert_clean()


# -- 3. same name, different people ----------------------------------------------


def test_two_authors_with_one_name_can_be_told_apart(pages: Pages, server: Server) -> None:
    """After one Ana leaves and another joins as Ana, a reader sees two authors: the
    author tags differ, and so do the name's tooltip (and colour, unless the two tags
    happen to share one of the colours)."""
    first = pages.new()
    code = enter(first, server, "Ana")
    reader = pages.new()
    enter(reader, server, "Cy", code)
    send(first, "I am the first Ana")
    expect(reader.locator(".entry.message")).to_have_count(1)

    first.context.close()
    expect(reader.locator("#timeline .entry.leave")).to_have_count(1, timeout=10_000)
    expect(members(reader)).to_have_text(["Cy"])

    second = pages.new()
    enter(second, server, "Ana", code)
    send(second, "I am another Ana")
    messages = reader.locator(".entry.message")
    expect(messages).to_have_count(2)
    expect(messages.locator(".author")).to_have_text(["Ana", "Ana"])
    expect(messages.locator(".text")).to_have_text(["I am the first Ana", "I am another Ana"])

    tags = messages.evaluate_all("els => els.map(e => e.dataset.author)")
    assert len(tags) == 2 and all(tags) and tags[0] != tags[1], tags
    authors = messages.locator(".author")
    titles = [authors.nth(i).get_attribute("title") for i in range(2)]
    assert all(t and t.startswith("Ana") for t in titles) and titles[0] != titles[1], titles
    expect(members(reader).filter(has_text="Ana")).to_have_attribute("data-author", tags[1])

    colour_classes = [
        {
            c
            for c in (authors.nth(i).get_attribute("class") or "").split()
            if c.startswith("author-c")
        }
        for i in range(2)
    ]
    assert all(len(c) == 1 for c in colour_classes), colour_classes
    if colour_classes[0] != colour_classes[1]:
        colours = authors.evaluate_all("els => els.map(e => getComputedStyle(e).color)")
        assert colours[0] != colours[1], (
            f"different colour classes {colour_classes} draw the same colour {colours}"
        )
    pages.assert_clean()


# -- 4. forms from a sibling origin ----------------------------------------------


def test_forms_from_a_sibling_origin_are_refused(
    pages: Pages, server: Server, other_site: OtherSite
) -> None:
    """A page on another port of the same host (same site, so the Lax cookie goes
    along) cannot post a message as the victim, nor join or create a room in her
    session: 403 in words, nothing stored, her session unchanged."""
    pages.expected.append("status of 403")
    victim_context = pages.context()
    victim = pages.open(victim_context)
    code = enter(victim, server, "Vi")
    send(victim, "hello from Vi")

    other_site.pages["/"] = f"""<!doctype html>
<html><head><meta charset="utf-8"><link rel="icon" href="data:,"><title>Prizes</title></head>
<body>
<form method="post" action="{server.url}/rooms/{code}/messages">
  <input type="hidden" name="text" value="forged">
  <button>Win a prize</button>
</form>
<form method="post" action="{server.url}/">
  <input type="hidden" name="name" value="Mallory">
  <input type="hidden" name="code" value="{code}">
  <button name="action" value="join">Join the fun</button>
  <button name="action" value="create">Start your own</button>
</form>
</body></html>"""
    rooms_before = stored(server, "SELECT count(*) FROM room")

    attacker = pages.open(victim_context)
    for button, path in (
        ("Win a prize", f"/rooms/{code}/messages"),
        ("Join the fun", "/"),
        ("Start your own", "/"),
    ):
        attacker.goto(other_site.url + "/")
        with attacker.expect_response(posted_to(server.url + path)) as answer:
            attacker.get_by_role("button", name=button).click()
        response = answer.value
        sent = response.request.all_headers()
        # Same site: the victim's cookie went along; only the origin check stops it.
        assert sent.get("sec-fetch-site") == "same-site", sent
        assert sent.get("cookie"), sent
        assert response.status == 403, (button, response.status)
        expect(attacker.get_by_role("alert")).to_contain_text(CROSS_SITE)
        expect(attacker.locator("body")).not_to_contain_text("Mallory")

    assert stored(server, "SELECT count(*) FROM entry WHERE body LIKE '%forged%'") == [(0,)]
    assert stored(server, "SELECT count(*) FROM room") == rooms_before
    assert stored(server, "SELECT DISTINCT author_name FROM entry") == [("Vi",)]

    # The victim's tab and session are hers still: she posts under her own name.
    send(victim, "still me")
    expect(victim.locator(".entry.message .text")).to_have_text(["hello from Vi", "still me"])
    victim.reload()
    assert victim.url == f"{server.url}/rooms/{code}"
    expect(victim.locator(".entry.message .text")).to_have_text(["hello from Vi", "still me"])
    expect(members(victim)).to_have_text(["Vi"])
    rows = stored(server, "SELECT author_name FROM entry WHERE body = 'still me'")
    assert rows == [("Vi",)]
    home = pages.open(victim_context)
    home.goto(server.url + "/")
    expect(home.get_by_label("Your name")).to_have_value("Vi")
    pages.assert_clean()

"""The shape of a conversation in real Chromium: day separators in the reader's time
zone (also across midnight), messages grouped by author, runs of joins and leaves
folded into one line, links, leaving a room and coming back from the home page."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime, timedelta

import httpx
from playwright.sync_api import Page, expect

from tests.browser.conftest import Pages
from tests.browser.test_chat import enter, send
from tests.conftest import Server, ServerFactory


def _insert_message(server: Server, code: str, author: str, text: str, when: datetime) -> None:
    """An entry from an earlier day, written straight into the room's database."""
    with sqlite3.connect(server.db_path) as db:
        room_id, seq = db.execute(
            "UPDATE room SET last_seq = last_seq + 1 WHERE code = ? RETURNING id, last_seq",
            (code,),
        ).fetchone()
        db.execute(
            "INSERT INTO entry (room_id, seq, kind, author_name, author_id, body, created_at) "
            "VALUES (?, ?, 'message', ?, ?, ?, ?)",
            (room_id, seq, author, f"id-{author}", text, when.strftime("%Y-%m-%d %H:%M:%S.%f")),
        )


def _separators(page: Page) -> list[str]:
    labels: list[str] = page.locator("#timeline .day-separator").all_inner_texts()
    return labels


def test_day_separators_in_the_readers_time_zone(pages: Pages, server: Server) -> None:
    with httpx.Client(base_url=server.url) as host:
        made = host.post("/", data={"name": "Host", "action": "create"})
        code = made.headers["location"].rsplit("/", 1)[1]
    now = datetime.now(UTC)
    _insert_message(server, code, "Bo", "three days ago", now - timedelta(days=3))
    _insert_message(server, code, "Bo", "yesterday", now - timedelta(days=1))
    ana = pages.new(timezone_id="Asia/Tokyo", locale="en-US")
    enter(ana, server, "Ana", code)
    send(ana, "today")
    expect(ana.locator("#timeline .day-separator")).to_have_count(3)
    labels = _separators(ana)
    assert labels[1:] == ["Yesterday", "Today"]
    tokyo = now - timedelta(days=3) + timedelta(hours=9)
    assert labels[0] == f"{tokyo:%A}, {tokyo:%B} {tokyo.day}"  # e.g. "Saturday, November 28"
    # Each separator sits right before the first entry of its day.
    order = ana.locator("#timeline > li").evaluate_all(
        "els => els.map(e => e.classList.contains('day-separator') ? 'day' : e.textContent)"
    )
    days = [i for i, item in enumerate(order) if item == "day"]
    assert "three days ago" in order[days[0] + 1] and "yesterday" in order[days[1] + 1]


def test_today_becomes_yesterday_at_the_readers_midnight(pages: Pages, server: Server) -> None:
    context = pages.context(timezone_id="UTC", locale="en-US")
    ana = pages.open(context)
    now = datetime.now(UTC)
    ana.clock.install(time=now)
    code = enter(ana, server, "Ana")
    send(ana, "before midnight")
    expect(ana.locator("#timeline .day-separator")).to_have_text(["Today"])
    midnight = datetime(now.year, now.month, now.day, tzinfo=UTC) + timedelta(days=1)
    ana.clock.fast_forward(int((midnight - now).total_seconds() * 1000) + 5_000)
    expect(ana.locator("#timeline .day-separator")).to_have_text(["Yesterday"])
    assert code


def test_messages_from_one_person_are_grouped(pages: Pages, server: Server) -> None:
    ana, bo = pages.new(), pages.new()
    code = enter(ana, server, "Ana")
    enter(bo, server, "Bo", code)
    for text in ("one", "two", "three"):
        send(bo, text)
    send(ana, "between")
    send(bo, "four")
    messages = ana.locator("#timeline .entry.message")
    expect(messages).to_have_count(5)
    grouped = messages.evaluate_all("els => els.map(e => e.classList.contains('grouped'))")
    assert grouped == [False, True, True, False, False]
    # The name shows once for a group, and again after someone else spoke.
    authors = ana.locator("#timeline .entry.message .author:visible")
    expect(authors).to_have_count(2)


def test_a_run_of_joins_and_leaves_folds_into_one_line(
    pages: Pages, make_server: ServerFactory
) -> None:
    server = make_server(presence_grace_seconds=0.3)
    ana = pages.new()
    code = enter(ana, server, "Ana")
    send(ana, "hello")
    for name in ("Guest 1", "Guest 2", "Guest 3", "Guest 4"):
        with httpx.Client(base_url=server.url, timeout=10) as guest:
            guest.post("/", data={"name": name, "code": code, "action": "join"})
            with guest.stream("GET", f"/rooms/{code}/events") as stream:
                next(stream.iter_raw())  # the stream opened: the guest came in
        expect(ana.locator(f"#timeline .entry.leave:has-text('{name}')")).to_have_count(1)
    fold = ana.locator("#timeline .fold")
    expect(fold).to_have_count(1)
    expect(fold).to_contain_text("Guest 1, Guest 2 and 2 others came and went")
    notices = ana.locator("#timeline .entry.join, #timeline .entry.leave")
    expect(notices.filter(visible=True)).to_have_count(1)  # Ana's own join stands alone
    fold.get_by_role("button", name="Show").click()
    expect(notices.filter(visible=True)).to_have_count(9)
    send(ana, "bye")
    expect(ana.locator("#timeline .entry.message")).to_have_count(2)


def test_links_open_in_a_new_tab_and_nothing_else_is_markup(pages: Pages, server: Server) -> None:
    ana, bo = pages.new(), pages.new()
    code = enter(ana, server, "Ana")
    enter(bo, server, "Bo", code)
    send(ana, "read https://example.org/page?x=1 and <b>not bold</b> javascript:alert(1)")
    link = bo.locator("#timeline .entry.message .text a")
    expect(link).to_have_count(1)
    expect(link).to_have_attribute("href", "https://example.org/page?x=1")
    expect(link).to_have_attribute("target", "_blank")
    expect(link).to_have_attribute("rel", "noopener noreferrer nofollow")
    expect(bo.locator("#timeline .entry.message .text b")).to_have_count(0)
    expect(bo.locator("#timeline .entry.message .text")).to_contain_text("<b>not bold</b>")


def test_leave_shows_at_once_and_the_home_page_brings_you_back(
    pages: Pages, make_server: ServerFactory
) -> None:
    server = make_server(presence_grace_seconds=60)  # leaving must not wait for it
    ana, bo = pages.new(), pages.new()
    code = enter(ana, server, "Ana")
    enter(bo, server, "Bo", code)
    expect(ana.locator("#members li[data-author]")).to_have_count(2)
    bo.get_by_role("button", name="Leave").click()
    bo.wait_for_url(server.url + "/")
    expect(ana.locator("#timeline .entry.leave")).to_contain_text("Bo left", timeout=1_000)
    expect(ana.locator("#members li[data-author]")).to_have_count(1, timeout=1_000)
    # Bo's home page lists the room; one click takes him back in under his name.
    rooms = bo.locator(".your-rooms li")
    expect(rooms).to_have_count(1)
    expect(rooms).to_contain_text(f"{code[:4]}-{code[4:]}")
    rooms.get_by_role("button").click()
    bo.wait_for_url(f"**/rooms/{code}")
    expect(ana.locator("#members li[data-author]")).to_have_count(2)


def test_enter_on_the_home_page_creates_or_joins(pages: Pages, server: Server) -> None:
    """Enter with a name and no code creates a room; with a code it joins that room."""
    ana, bo = pages.new(), pages.new()
    ana.goto(server.url + "/")
    ana.get_by_label("Your name").fill("Ana")
    ana.get_by_label("Your name").press("Enter")
    ana.wait_for_url("**/rooms/*")
    code = ana.url.rsplit("/", 1)[-1]
    assert len(code) == 8
    bo.goto(server.url + "/")
    bo.get_by_label("Your name").fill("Bo")
    bo.get_by_label("Room code").fill(f"{code[:4]}-{code[4:]}".lower())
    bo.get_by_label("Room code").press("Enter")
    bo.wait_for_url(f"**/rooms/{code}")
    expect(ana.locator("#members li[data-author]")).to_have_count(2)


def test_a_tab_left_behind_says_so_instead_of_reconnecting(pages: Pages, server: Server) -> None:
    """Leaving in one tab ends the stream of the other tabs (403 on reconnect): they say
    so instead of showing "Reconnecting…" for ever, and they do not join again."""
    pages.expected += ["403", "SSE reconnect failed"]
    context = pages.context()
    first = pages.open(context)
    code = enter(first, server, "Ana")
    second = pages.open(context)
    second.goto(f"{server.url}/rooms/{code}")
    expect(second.locator("#timeline .entry.join")).to_have_count(1)
    first.get_by_role("button", name="Leave").click()
    first.wait_for_url(server.url + "/")
    expect(second.locator("#connection")).to_contain_text("not in this room any more")
    with sqlite3.connect(server.db_path) as db:
        kinds = [k for (k,) in db.execute("SELECT kind FROM entry ORDER BY id")]
    assert kinds == ["join", "leave"]

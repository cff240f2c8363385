"""Sala on a phone, in real Chromium with a phone's profile: long conversations scroll
between a fixed header and the message field (also with the keyboard open), the member
list and the invite link stay reachable, tap targets are big enough, small text is
readable, and without JavaScript the page opens at the newest message."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
from playwright.sync_api import FloatRect, Locator, Page, expect

from tests.browser.conftest import Pages
from tests.browser.test_chat import enter
from tests.conftest import Server, ServerFactory

PHONE: dict[str, Any] = {"is_mobile": True, "has_touch": True, "device_scale_factor": 2}
PHONES = [(390, 844), (375, 667), (430, 932)]
KEYBOARD_OPEN = (390, 470)  # a 390 x 844 phone with its on-screen keyboard up


def phone(pages: Pages, width: int = 390, height: int = 844, **options: Any) -> Page:
    return pages.new(viewport={"width": width, "height": height}, **PHONE, **options)


@contextlib.contextmanager
def member(server: Server, code: str, name: str) -> Iterator[httpx.Client]:
    """Someone else in the room, posting over plain HTTP (joining first, as required)."""
    with httpx.Client(base_url=server.url) as client:
        joined = client.post("/", data={"name": name, "code": code, "action": "join"})
        assert joined.status_code == 303, joined.text
        yield client


def post(client: httpx.Client, code: str, text: str) -> None:
    response = client.post(f"/rooms/{code}/messages", data={"text": text})
    assert response.status_code == 303, response.text


def chatter(n: int) -> str:
    """Messages of every shape: short, several lines, long words that must wrap."""
    if n % 7 == 3:
        return f"{n}: " + "Donaudampfschifffahrtsgesellschaft" * 3
    if n % 5 == 1:
        return f"{n}: first line\nsecond line\nthird line"
    if n % 4 == 2:
        return f"{n}: " + "a longer message that wraps over a few lines on a phone " * 3
    return f"{n}: ok"


def fill(server: Server, code: str, count: int) -> None:
    with member(server, code, "Bo") as bo:
        for n in range(count):
            post(bo, code, chatter(n))


def box(locator: Locator) -> FloatRect:
    found = locator.bounding_box()
    assert found is not None, locator
    return found


# What scrolls the conversation: the list itself, or without JavaScript its wrapper.
SCROLLER = """(() => {
    const timeline = document.getElementById("timeline");
    return getComputedStyle(timeline).overflowY === "visible" ? timeline.parentElement : timeline;
})()"""


def fully_visible(page: Page, selector: str) -> int:
    """How many matching elements lie wholly inside the visible part of the timeline."""
    count: int = page.evaluate(
        f"""(selector) => {{
            const view = {SCROLLER}.getBoundingClientRect();
            return [...document.querySelectorAll(selector)].filter((el) => {{
                const r = el.getBoundingClientRect();
                return r.height > 0 && r.top >= view.top - 1 && r.bottom <= view.bottom + 1
                    && r.bottom <= innerHeight;
            }}).length;
        }}""",
        selector,
    )
    return count


def assert_phone_layout(page: Page, *, min_messages: int = 2) -> None:
    """Header on top and uncovered, field wholly on screen at the bottom, the newest
    messages visible between them."""
    viewport = page.viewport_size
    assert viewport is not None
    width, height = viewport["width"], viewport["height"]
    assert page.evaluate("document.documentElement.scrollWidth") <= width
    header = box(page.locator(".room-header"))
    assert header["y"] == 0 and header["height"] < height / 4, header
    # Nothing lies over the header: whatever is drawn at its points belongs to it.
    covered = page.evaluate(
        """() => {
            const header = document.querySelector(".room-header");
            const r = header.getBoundingClientRect();
            const points = [];
            for (const fx of [0.02, 0.25, 0.5, 0.75, 0.98])
                for (const fy of [0.1, 0.5, 0.9])
                    points.push([r.left + r.width * fx, r.top + r.height * fy]);
            return points.filter(([x, y]) => !header.contains(document.elementFromPoint(x, y)));
        }"""
    )
    assert covered == [], covered
    field = box(page.get_by_label("Message"))
    form = box(page.locator("#message-form"))
    assert field["y"] >= 0 and field["y"] + field["height"] <= height, field
    assert form["y"] + form["height"] == height, form
    newest = page.locator("#timeline .entry.message").last
    expect(newest).to_be_in_viewport(ratio=1)
    assert box(newest)["y"] + box(newest)["height"] <= field["y"]
    assert box(newest)["y"] >= header["y"] + header["height"]
    assert fully_visible(page, "#timeline .entry.message") >= min_messages


def scroll_timeline_to_top(page: Page) -> None:
    """Scroll the conversation the way a thumb does: a swipe (here the wheel) over it."""
    view: dict[str, float] = page.evaluate(f"{SCROLLER}.getBoundingClientRect().toJSON()")
    page.mouse.move(view["x"] + view["width"] / 2, view["y"] + 40)
    for _ in range(12):
        page.mouse.wheel(0, -3000)
    page.wait_for_timeout(100)


def test_long_conversations_scroll_between_header_and_field_on_phones(
    pages: Pages, make_server: ServerFactory
) -> None:
    server = make_server(limits="off")
    page = phone(pages)
    code = enter(page, server, "Ana")
    fill(server, code, 40)
    for width, height in [*PHONES, KEYBOARD_OPEN]:
        page.set_viewport_size({"width": width, "height": height})
        page.reload()
        expect(page.locator("#timeline .entry.message")).to_have_count(40)
        page.get_by_label("Message").focus()
        assert_phone_layout(page)
        # The start of the conversation is reachable: scroll up to it.
        scroll_timeline_to_top(page)
        expect(page.locator("#load-older")).to_be_in_viewport()
        expect(page.locator("#timeline .entry.message").first).to_be_in_viewport()
        assert box(page.locator(".room-header"))["y"] == 0  # the header stays put
    # The keyboard opening under a reader at the newest message keeps it in view.
    page.set_viewport_size({"width": 390, "height": 844})
    page.reload()
    page.get_by_label("Message").focus()
    page.set_viewport_size({"width": KEYBOARD_OPEN[0], "height": KEYBOARD_OPEN[1]})
    page.wait_for_timeout(100)
    assert_phone_layout(page)


def test_member_list_invite_and_tap_targets_on_a_phone(
    pages: Pages, make_server: ServerFactory
) -> None:
    server = make_server(limits="off")
    ana = phone(pages, permissions=["clipboard-read", "clipboard-write"])
    code = enter(ana, server, "Ana")
    fill(server, code, 30)
    ana.reload()

    # The member list folds into a bar; it opens by keyboard (or a tap) and shows names.
    toggle = ana.locator("#members summary")
    expect(toggle).to_contain_text("In the room (1)")
    expect(ana.locator("#members li[data-author]")).to_be_hidden()
    toggle.focus()
    ana.keyboard.press("Enter")
    expect(ana.locator("#members li[data-author]")).to_have_text(["Ana"])
    expect(ana.locator("#members li[data-author]").first).to_be_visible()
    # Someone arrives: the list is replaced live and stays open.
    bo = phone(pages, 375, 667)
    enter(bo, server, "Bo", code)
    expect(ana.locator("#members li[data-author]")).to_have_text(["Ana", "Bo"])
    expect(ana.locator("#members li[data-author]").last).to_be_visible()
    expect(ana.locator("#members")).to_have_attribute("open", "")
    expect(bo.locator("#members li[data-author]").first).to_be_hidden()
    assert_phone_layout(ana)

    # The invite link hides behind Share; without navigator.share it copies the link.
    link = ana.locator("#invite-link").get_attribute("value")
    assert link is not None and link.endswith(f"/?code={code}")
    expect(ana.locator("#invite-link")).to_be_hidden()
    expect(ana.locator("button.copy")).to_be_hidden()
    share = ana.locator("button.share")
    expect(share).to_be_visible()
    assert ana.evaluate("'share' in navigator") is False
    ana.bring_to_front()  # the clipboard is only for the focused page (Bo's took it)
    share.click()
    expect(share).to_have_text("Copied")
    assert ana.evaluate("navigator.clipboard.readText()") == link
    expect(share).to_have_text("Share", timeout=3000)

    # Where the browser can share, Share opens the system's share sheet instead.
    ana.add_init_script(
        """Object.defineProperty(Navigator.prototype, "share", {
            configurable: true,
            value: async (data) => { window.sharedData = data; },
        });"""
    )
    ana.reload()
    ana.get_by_role("button", name="Share").click()
    ana.wait_for_function("window.sharedData !== undefined")
    shared = ana.evaluate("window.sharedData")
    assert shared["url"] == link and code[:4] in shared["title"]
    expect(ana.get_by_role("button", name="Share")).to_have_text("Share")

    # Tap targets of at least 44 x 44 px.
    for target in (
        ana.get_by_role("button", name="Send"),
        ana.get_by_role("button", name="Share"),
        ana.get_by_role("button", name="Leave"),
        ana.locator("#members summary"),
    ):
        size = box(target)
        assert size["width"] >= 44 and size["height"] >= 44, (target, size)

    # Leave, in the header, is an exit: it goes home.
    ana.get_by_role("button", name="Leave").click()
    ana.wait_for_url(server.url + "/")


def test_without_javascript_a_phone_opens_at_the_newest_message(
    pages: Pages, make_server: ServerFactory
) -> None:
    server = make_server(limits="off")
    page = phone(pages, java_script_enabled=False)
    code = enter(page, server, "Nojs")
    fill(server, code, 60)
    page.reload()
    assert_phone_layout(page)
    # Nothing offers a Copy or Share button that could not work; the link itself shows.
    for button in (page.locator("button.copy"), page.locator("button.share")):
        expect(button).to_be_hidden()
    expect(page.locator("#invite-link")).to_be_visible()
    # A plain post answers 303 to the room's own URL, which opens at the new message.
    page.get_by_label("Message").fill("sent from a phone without JavaScript")
    page.get_by_role("button", name="Send").click()
    page.wait_for_load_state()
    assert page.url == f"{server.url}/rooms/{code}"
    expect(page.locator("#timeline .entry.message .text").last).to_have_text(
        "sent from a phone without JavaScript"
    )
    assert_phone_layout(page)
    # Older history stays reachable: scroll up to the "Load older" link; it is big enough.
    scroll_timeline_to_top(page)
    older = page.get_by_role("link", name="Load older messages")
    expect(older).to_be_in_viewport()
    assert box(older)["height"] >= 44
    # The member list opens without JavaScript too.
    page.locator("#members summary").click()
    expect(page.locator("#members li.empty, #members li[data-author]").first).to_be_visible()


CONTRAST = """(selector) => {
    const rgba = (value) => {
        const parts = value.match(/[\\d.]+/g).map(Number);
        return [parts[0], parts[1], parts[2], parts.length > 3 ? parts[3] : 1];
    };
    const over = (top, bottom) => {
        const a = top[3] + bottom[3] * (1 - top[3]);
        const mix = (i) => (top[i] * top[3] + bottom[i] * bottom[3] * (1 - top[3])) / a;
        return [mix(0), mix(1), mix(2), a];
    };
    const luminance = ([r, g, b]) => {
        const lin = (c) => {
            c /= 255;
            return c <= 0.03928 ? c / 12.92 : ((c + 0.055) / 1.055) ** 2.4;
        };
        return 0.2126 * lin(r) + 0.7152 * lin(g) + 0.0722 * lin(b);
    };
    const el = document.querySelector(selector);
    if (!el) return null;
    // The backgrounds it sits on, nearest first, down to the first opaque one.
    const layers = [];
    for (let node = el; node; node = node.parentElement) {
        const bg = rgba(getComputedStyle(node).backgroundColor);
        if (bg[3] > 0) layers.push(bg);
        if (bg[3] === 1) break;
    }
    let background = [255, 255, 255, 1];
    for (const layer of layers.reverse()) background = over(layer, background);
    const ink = over(rgba(getComputedStyle(el).color), background);
    const [hi, lo] = [luminance(ink), luminance(background)].sort((a, b) => b - a);
    return {ratio: (hi + 0.05) / (lo + 0.05), size: getComputedStyle(el).fontSize};
}"""

SMALL_TEXT = [
    "#timeline .entry.message:not(.mine) time",
    "#timeline .entry.message.mine time",
    "#timeline .entry.join .notice",
    "#timeline .entry.join .notice time",
    "#timeline .load-older",
    "#members .count",
]


def conversation(server: Server, ana: Page, bo: Page, code: str) -> None:
    """Ana and Bo, both in the room, talk: 22 messages (posted with their pages' cookies,
    quicker than typing), then Ana's page reloads with all of them."""
    lines = [
        (bo, "Morning! Are we still on for the picnic on Saturday?"),
        (ana, "Yes! Parque da Cidade, by the lake, around 11?"),
        (bo, "Perfect. I can bring the blanket and some fruit."),
        (ana, "I'll bake pão de queijo."),
        (bo, "You are the best."),
        (ana, "Who else is coming?"),
        (bo, "Carla said maybe, Davi for sure.\nEli has to work until noon."),
        (ana, "Then let's say 11:30 so Eli can catch up."),
        (bo, "Works for me."),
        (ana, "Should we bring a speaker?"),
        (bo, "Small one, yes. Not too loud though, last time…"),
        (ana, "Ha, I remember."),
        (bo, "And a frisbee!"),
        (ana, "I have two. One of them even flies straight."),
        (bo, "Forecast says sunny, 27°."),
        (ana, "Sunscreen then. And hats."),
        (bo, "I'll make a list and share it here."),
        (bo, "List:\n• blanket\n• fruit\n• speaker\n• frisbee\n• sunscreen"),
        (ana, "Add water, lots of it."),
        (bo, "Added."),
        (ana, "See you Saturday!"),
        (bo, "See you!"),
    ]
    for page, text in lines:
        response = page.request.post(
            f"{server.url}/rooms/{code}/messages", form={"text": text}, max_redirects=0
        )
        assert response.status == 303, response.text()
    ana.reload()
    expect(ana.locator("#timeline .entry.message")).to_have_count(len(lines))


def test_small_text_reads_at_4_5_to_1_or_better(pages: Pages, make_server: ServerFactory) -> None:
    server = make_server(limits="off")
    page = phone(pages)
    code = enter(page, server, "Ana")
    bo = phone(pages, 375, 667)
    enter(bo, server, "Bo", code)
    conversation(server, page, bo, code)
    for selector in SMALL_TEXT:
        found = page.evaluate(CONTRAST, selector)
        assert found is not None, selector
        assert found["ratio"] >= 4.5, (selector, found)


def test_phone_screenshots(pages: Pages, make_server: ServerFactory, screenshot_dir: Path) -> None:
    server = make_server(limits="off")
    page = phone(pages, timezone_id="America/Sao_Paulo")
    code = enter(page, server, "Ana")
    bo = phone(pages, 375, 667)
    enter(bo, server, "Bo", code)
    conversation(server, page, bo, code)
    expect(page.locator("#members summary")).to_contain_text("In the room (2)")
    page.get_by_label("Message").fill("Can't wait")
    page.get_by_label("Message").blur()
    assert_phone_layout(page)
    page.screenshot(path=str(screenshot_dir / "phone.png"), caret="initial")
    page.set_viewport_size({"width": KEYBOARD_OPEN[0], "height": KEYBOARD_OPEN[1]})
    page.get_by_label("Message").focus()
    page.wait_for_timeout(100)
    assert_phone_layout(page)
    page.screenshot(path=str(screenshot_dir / "phone-keyboard.png"), caret="initial")


def _height(locator: Locator) -> float:
    return box(locator)["height"]


def test_a_long_message_folds_until_its_reader_opens_it(
    pages: Pages, make_server: ServerFactory
) -> None:
    """A wall of text or a few hundred empty lines would fill every reader's screen many
    times over: past about 24rem a message shows its first lines and "Read more", in the
    reader's language; what a reader opened stays open as the conversation moves on.
    The whole text is on the page all along, and without JavaScript it simply shows."""
    server = make_server(limits="off")
    ana = phone(pages, 375, 667)
    code = enter(ana, server, "Ana")
    bia = phone(pages, 375, 667, locale="pt-BR")
    bia.goto(f"{server.url}/?code={code}")
    bia.get_by_label("Seu nome").fill("Bia")
    bia.get_by_role("button", name="Entrar").click()
    bia.wait_for_url("**/rooms/*")
    lines = "\n".join(str(n) for n in range(400))  # 1,489 characters, 400 lines
    wall = "W" * 2000  # one unbroken word, wrapped anywhere
    with member(server, code, "Bo") as bo:
        post(bo, code, lines)
        post(bo, code, wall)
        post(bo, code, "short and sweet")

        folded = ana.locator("#timeline .entry.message .text.clamped")
        expect(folded).to_have_count(2)
        expect(ana.get_by_role("button", name="Read more")).to_have_count(2)
        short = ana.locator("#timeline .entry.message", has_text="short and sweet")
        expect(short.locator(".more-toggle")).to_have_count(0)
        expect(bia.get_by_role("button", name="Ler mais")).to_have_count(2)

        first = ana.locator("#timeline .entry.message").filter(has_text="399")
        text = first.locator(".text")
        expect(text).to_contain_text("399")  # all of it is there, only folded
        assert _height(text) <= 16 * 16 + 1, _height(text)
        assert_phone_layout(ana)

        toggle = first.get_by_role("button", name="Read more")
        toggle.click()
        expect(first.get_by_role("button", name="Read less")).to_have_attribute(
            "aria-expanded", "true"
        )
        assert _height(text) > 400 * 10, _height(text)  # every line

        # The conversation moves on (the page reshapes): what Ana opened stays open.
        post(bo, code, "and another thing")
        expect(ana.locator("#timeline .entry.message").last).to_contain_text("and another")
        expect(first.get_by_role("button", name="Read less")).to_be_visible()
        assert _height(text) > 400 * 10

        first.get_by_role("button", name="Read less").click()
        expect(first.get_by_role("button", name="Read more")).to_have_attribute(
            "aria-expanded", "false"
        )
        assert _height(text) <= 16 * 16 + 1

        # An edit that makes it short unfolds it for good.
        bo_entry = first.get_attribute("id")
        assert bo_entry is not None
        edited = bo.post(
            f"/rooms/{code}/messages/{bo_entry.removeprefix('entry-')}/edit",
            data={"text": "never mind"},
        )
        assert edited.status_code == 303, edited.text
        expect(ana.locator(f"#{bo_entry}")).to_contain_text("never mind")
        expect(ana.locator(f"#{bo_entry} .more-toggle")).to_have_count(0)
        expect(ana.locator(f"#{bo_entry} .text.clamped")).to_have_count(0)

    # Without JavaScript nothing folds.
    nojs = phone(pages, 375, 667, java_script_enabled=False)
    enter(nojs, server, "Nojs", code)
    nojs.reload()
    wall_text = nojs.locator("#timeline .entry.message .text", has_text="WWWW")
    assert _height(wall_text) > 24 * 16
    expect(nojs.locator(".more-toggle")).to_have_count(0)

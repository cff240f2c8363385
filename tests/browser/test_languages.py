"""Portuguese and English in real Chromium: one room, a reader in each language."""

from __future__ import annotations

import re
from pathlib import Path

from playwright.sync_api import Page, expect

from tests.browser.conftest import Pages
from tests.conftest import ServerFactory

PHONE = {"width": 375, "height": 667}
# Words that only the Portuguese interface has (the messages typed are neutral).
PORTUGUESE = [
    "Enviar",
    "Sair",
    "Mensagem",
    "Na sala",
    "Hoje",
    "entrou",
    "Pesquisar",
    "Compartilhar",
    "Copiar",
    "Idioma",
    "Conversa",
]
CONVERSATION = [
    ("Oi, Bo! Tudo bem?", "Hi Ana! All good, and you?"),
    ("Tudo ótimo. Vamos fazer o piquenique no sábado?", "Saturday works for me."),
    ("Eu levo as frutas e o suco.", "I'll bring bread and cheese."),
    ("Perfeito! Às 10h no parque?", "10 am at the park, deal."),
    ("Vou chamar a Carla também.", "Great, the more the merrier."),
    ("Ela disse que traz o violão.", "Then we need songs in Portuguese!"),
    ("Pode deixar, eu ensino umas.", "Deal. See you on Saturday!"),
    ("Até sábado! Beijos.", "Bye!"),
]
WEEKDAYS_PT = re.compile(r"(segunda|terça|quarta|quinta|sexta)-feira|sábado|domingo")
WEEKDAYS_EN = re.compile(r"Monday|Tuesday|Wednesday|Thursday|Friday|Saturday|Sunday")


def _send(page: Page, label: str, text: str) -> None:
    box = page.get_by_label(label, exact=True)
    box.fill(text)
    box.press("Enter")
    expect(page.locator("#timeline .entry.pending")).to_have_count(0)


def _everything_said(page: Page) -> str:
    """The page's text and the words in its attributes (what a screen reader says)."""
    return str(
        page.evaluate(
            """() => [document.body.innerText,
                ...[...document.querySelectorAll('[placeholder],[aria-label],[title],[data-one]')]
                  .flatMap(e => [e.getAttribute('placeholder'), e.getAttribute('aria-label'),
                                 e.getAttribute('title'), e.getAttribute('data-one')])
                  .filter(Boolean)].join(' ')"""
        )
    )


def test_a_portuguese_and_an_english_reader_share_a_room(
    pages: Pages, make_server: ServerFactory, screenshot_dir: Path
) -> None:
    server = make_server()
    ana = pages.new(locale="pt-BR", timezone_id="America/Sao_Paulo", viewport=PHONE)
    bo = pages.new(
        locale="en-US", timezone_id="Europe/London", viewport={"width": 360, "height": 740}
    )

    ana.goto(server.url + "/")
    expect(ana.locator("html")).to_have_attribute("lang", "pt-BR")
    ana.get_by_label("Seu nome").fill("Ana")
    ana.get_by_role("button", name="Criar sala").click()
    ana.wait_for_url("**/rooms/*")
    code = ana.url.rsplit("/", 1)[-1]

    bo.goto(server.url + f"/?code={code}")
    expect(bo.locator("html")).to_have_attribute("lang", "en")
    bo.get_by_label("Your name").fill("Bo")
    bo.get_by_role("button", name="Join").click()
    bo.wait_for_url("**/rooms/*")

    # More than a screenful, both writing, each in their own language.
    for said_by_ana, said_by_bo in CONVERSATION:
        _send(ana, "Mensagem", said_by_ana)
        _send(bo, "Message", said_by_bo)
    expect(ana.locator("#timeline .entry.message")).to_have_count(16)
    expect(bo.locator("#timeline .entry.message")).to_have_count(16)

    # The room's code shows whole in the header in either language, at 375 and 360 px.
    for page in (ana, bo):
        widths = page.evaluate(
            "() => { const h = document.querySelector('.room-header h1');"
            " return [h.scrollWidth, h.clientWidth]; }"
        )
        assert widths[0] <= widths[1], widths

    # Ana: Portuguese everywhere, dates included.
    expect(ana.get_by_role("button", name="Enviar")).to_be_visible()
    expect(ana.get_by_role("button", name="Sair")).to_be_visible()
    expect(ana.get_by_label("Mensagem", exact=True)).to_have_attribute("placeholder", "Mensagem")
    expect(ana.locator("#members h2")).to_contain_text("Na sala")
    expect(ana.locator(".entry.join .notice").last).to_contain_text("Bo entrou")
    expect(ana.locator(".day-separator").first).to_have_text("Hoje")
    title = ana.locator("#timeline time").last.get_attribute("title") or ""
    assert WEEKDAYS_PT.search(title), title
    assert ana.locator("#timeline .entry.message").last.is_visible()
    said = _everything_said(ana)
    for english in ("Send", "Leave", "In the room", "joined", "Today", "Search", "Share"):
        assert not re.search(rf"\b{english}\b", said), english
    ana.screenshot(path=str(screenshot_dir / "room-pt-BR.png"))

    # Bo, at the same moment: English, no Portuguese word anywhere.
    expect(bo.get_by_role("button", name="Send")).to_be_visible()
    expect(bo.locator("#members h2")).to_contain_text("In the room")
    expect(bo.locator(".day-separator").first).to_have_text("Today")
    title = bo.locator("#timeline time").last.get_attribute("title") or ""
    assert WEEKDAYS_EN.search(title), title
    said = _everything_said(bo)
    for portuguese in PORTUGUESE:
        assert not re.search(rf"\b{portuguese}\b", said), portuguese

    # Ana leaves: Bo reads it in English; the leave notice came once, with one id.
    ana.get_by_role("button", name="Sair").click()
    ana.wait_for_url(re.compile(r".*/$|.*/\?.*"))
    expect(ana.locator("html")).to_have_attribute("lang", "pt-BR")
    expect(bo.locator(".entry.leave .notice").last).to_contain_text("Ana left")


def test_the_page_language_not_the_browser_sets_words_and_dates(
    pages: Pages, make_server: ServerFactory
) -> None:
    """An English browser that picks Portuguese gets Portuguese dates too, and the
    choice holds on the next page; picking English again brings English back."""
    server = make_server()
    page = pages.new(locale="en-US", timezone_id="America/Sao_Paulo", viewport=PHONE)
    page.goto(server.url + "/")
    page.get_by_role("link", name="Português").click()
    expect(page.locator("html")).to_have_attribute("lang", "pt-BR")
    page.get_by_label("Seu nome").fill("Cy")
    page.get_by_role("button", name="Criar sala").click()
    page.wait_for_url("**/rooms/*")
    _send(page, "Mensagem", "olá")
    expect(page.locator(".day-separator").first).to_have_text("Hoje")
    title = page.locator("#timeline .entry.message time").last.get_attribute("title") or ""
    assert WEEKDAYS_PT.search(title), title

    # The switch in the room's header (its short form) brings English back.
    switch = page.locator(".room-header .language-switch a")
    expect(switch).to_have_text(re.compile("EN"))
    switch.click()
    expect(page.locator("html")).to_have_attribute("lang", "en")
    expect(page.get_by_role("button", name="Send")).to_be_visible()
    expect(page.locator(".day-separator").first).to_have_text("Today")
    title = page.locator("#timeline .entry.message time").last.get_attribute("title") or ""
    assert WEEKDAYS_EN.search(title), title

"""Portuguese and English: choosing the language, errors in it, one room in both at once.

Over real HTTP against a real server; the catalog checks read the real catalogs.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from babel.messages.extract import extract_from_dir
from babel.messages.mofile import read_mo
from babel.messages.pofile import read_po
from bs4 import BeautifulSoup

from tests.client import Person, SSEEvent, Stream
from tests.conftest import ROOT, Server, ServerFactory
from web import i18n

pytestmark = pytest.mark.anyio

PO = ROOT / "web/locale/pt_BR/LC_MESSAGES/messages.po"
CATALOGS = sorted((ROOT / "web/locale").glob("*/LC_MESSAGES/messages.po"))
HX = {"HX-Request": "true"}
PYBABEL = str(Path(sys.executable).parent / "pybabel")
PYBABEL_EXTRACT = [PYBABEL, "extract", "-F", "babel.cfg", "-k", "N_", "--no-wrap"]
PT = {"Accept-Language": "pt-BR,pt;q=0.9,en;q=0.8"}
EN = {"Accept-Language": "en-US,en;q=0.9"}


def html_lang(response: httpx.Response) -> str:
    match = re.search(r'<html lang="([^"]+)"', response.text)
    assert match, response.text[:300]
    return match.group(1)


def words(response: httpx.Response) -> str:
    """The text a reader sees, attributes a screen reader reads included."""
    soup = BeautifulSoup(response.text, "html.parser")
    shown = [soup.get_text(" ")]
    for tag in soup.find_all(True):
        for attribute in ("placeholder", "aria-label", "title", "value"):
            value = tag.get(attribute)
            if isinstance(value, str):
                shown.append(value)
    return " ".join(" ".join(shown).split())


# -- the catalogs ------------------------------------------------------------------------


def _extracted() -> list[tuple[str | tuple[str, ...], str | None]]:
    """(msgid, msgctxt) of every string the code and templates mark, as `make
    translations-extract` finds them."""
    method_map = [("web/**.py", "python"), ("web/templates/**.html", "jinja2")]
    options = {"web/templates/**.html": {"trim_blocks": "true", "lstrip_blocks": "true"}}
    found = []
    for _file, _line, message, _comments, context in extract_from_dir(
        str(ROOT), method_map, options, keywords={**_KEYWORDS}
    ):
        found.append((message, context))
    return found


_KEYWORDS: dict[str, tuple[int | tuple[int, str], ...] | None] = {
    "_": None,
    "gettext": None,
    "ngettext": (1, 2),
    "pgettext": ((1, "c"), 2),
    "N_": None,
}


@pytest.mark.parametrize("po", CATALOGS, ids=lambda p: p.parent.parent.name)
def test_every_string_the_interface_shows_is_translated(po: Path) -> None:
    assert PO in CATALOGS
    with po.open("rb") as f:
        catalog = read_po(f)
    extracted = _extracted()
    assert len(extracted) > 120  # the templates and the error messages
    untranslated = []
    for message, context in extracted:
        msgid = message[0] if isinstance(message, tuple) else message
        entry = catalog.get(msgid, context=context)
        if entry is None or entry.fuzzy or not entry.string or not all(entry.string):
            untranslated.append(msgid)
    assert not untranslated, f"not in {po}: {untranslated}"


@pytest.mark.parametrize("po", CATALOGS, ids=lambda p: p.parent.parent.name)
def test_each_translation_keeps_the_placeholders_of_its_original(po: Path) -> None:
    """A translation that drops or renames `%(code)s` or `{count}` breaks the page."""
    with po.open("rb") as f:
        catalog = read_po(f)
    pattern = re.compile(r"%\(\w+\)s|\{\w+\}")
    for message in catalog:
        if not message.id:
            continue
        originals = [
            str(m) for m in (message.id if isinstance(message.id, tuple) else [message.id])
        ]
        strings = message.string if isinstance(message.string, tuple) else [message.string]
        wanted = set(pattern.findall(originals[-1]))
        for translation in strings:
            assert set(pattern.findall(str(translation))) == wanted, (message.id, translation)


@pytest.mark.parametrize("po", CATALOGS, ids=lambda p: p.parent.parent.name)
def test_the_compiled_catalog_is_the_catalog(po: Path) -> None:
    """The committed .mo (what the server loads) says what the .po says: a translation
    edited without `make translations-compile` fails here."""
    with po.open("rb") as f:
        source = read_po(f)
    with po.with_suffix(".mo").open("rb") as f:
        compiled = read_mo(f)

    def flat(value: object) -> object:
        return tuple(value) if isinstance(value, list | tuple) else value

    expected = {(m.context, flat(m.id)): flat(m.string) for m in source if m.id and not m.fuzzy}
    got = {(m.context, flat(m.id)): flat(m.string) for m in compiled if m.id}
    assert len(got) > 120 and got == expected


def test_the_makefile_extracts_what_the_catalog_holds(tmp_path: Path) -> None:
    """`pybabel extract` with the project's babel.cfg finds no string the template
    (messages.pot) lacks: the catalogs were updated after the last change of words."""
    out = tmp_path / "messages.pot"
    subprocess.run(
        [*PYBABEL_EXTRACT, "-o", str(out), "."],
        cwd=ROOT,
        check=True,
    )
    with out.open("rb") as f:
        fresh = {(m.context, m.id) for m in read_po(f) if m.id}
    with (ROOT / "web/locale/messages.pot").open("rb") as f:
        kept = {(m.context, m.id) for m in read_po(f) if m.id}
    assert fresh == kept


def test_the_language_negotiation() -> None:
    assert i18n.negotiate("pt-BR,pt;q=0.9") == "pt-BR"
    assert i18n.negotiate("pt-PT") == "pt-BR"
    assert i18n.negotiate("pt") == "pt-BR"
    assert i18n.negotiate("PT-br") == "pt-BR"
    assert i18n.negotiate("fr-FR,fr;q=0.9,pt;q=0.5") == "pt-BR"  # the best we have
    assert i18n.negotiate("fr-FR,fr;q=0.9,en;q=0.8,pt;q=0.7") == "en"
    assert i18n.negotiate("en-US,en;q=0.9,pt-BR;q=0.8") == "en"
    assert i18n.negotiate("de") == "en"
    assert i18n.negotiate("") == "en"
    assert i18n.negotiate(None) == "en"
    assert i18n.negotiate("pt;q=0, en;q=0.1") == "en"  # q=0 means "not this"
    assert i18n.negotiate("pt;q=abc,,;;,=,en;q=nan") == "en"
    assert i18n.negotiate("*") == "en"
    assert i18n.parse("pt-br") == "pt-BR" and i18n.parse("EN") == "en"
    assert i18n.parse("xx") is None and i18n.parse("") is None and i18n.parse(None) is None


def test_an_event_is_rendered_once_per_language_not_per_reader() -> None:
    renders: list[str] = []

    def render() -> bytes:
        renders.append(i18n.current())
        return i18n.gettext("Leave").encode()

    frames = i18n.Localized(render)
    got = [frames.get(language) for language in ["en", "pt-BR"] * 500]
    assert sorted(renders) == ["en", "pt-BR"]
    assert set(got) == {b"Leave", b"Sair"}


# -- pages -------------------------------------------------------------------------------


async def test_the_home_page_follows_accept_language(server: Server) -> None:
    async with httpx.AsyncClient(base_url=server.url) as client:
        for header in ("pt-BR,pt;q=0.9", "pt-PT", "pt", "fr, pt;q=0.5"):
            page = await client.get("/", headers={"Accept-Language": header})
            assert html_lang(page) == "pt-BR", header
            shown = words(page)
            for expected in ("Seu nome", "Código da sala", "Entrar na sala", "Criar sala"):
                assert expected in shown, (header, expected)
            assert "Join" not in shown and "Your name" not in shown
        for header in ("en-US,en;q=0.9", "de-DE", "", "*"):
            page = await client.get("/", headers={"Accept-Language": header})
            assert html_lang(page) == "en", header
            shown = words(page)
            assert "Your name" in shown and "Create room" in shown
            assert "Entrar" not in shown and "Criar" not in shown, header


async def test_the_switch_overrides_accept_language_and_sticks(server: Server) -> None:
    async with httpx.AsyncClient(base_url=server.url, headers=EN) as client:
        page = await client.get("/")
        switch = BeautifulSoup(page.text, "html.parser").select_one(".language-switch a")
        assert switch is not None and switch.get_text(" ") == "Português PT"
        assert switch["href"] == "/?lang=pt-BR" and switch["lang"] == "pt-BR"

        page = await client.get("/?lang=pt-BR&code=abcd")
        assert html_lang(page) == "pt-BR" and "Entrar na sala" in page.text
        # The switch keeps the rest of the query.
        switch = BeautifulSoup(page.text, "html.parser").select_one(".language-switch a")
        assert switch is not None and switch["href"] == "/?code=abcd&lang=en"
        # Remembered in the session, whatever the browser says.
        page = await client.get("/")
        assert html_lang(page) == "pt-BR"
        # An unknown value is ignored: the choice stands.
        for odd in ("xx", "", "pt-BR%00", "<script>", "pt_BR' or 1=1"):
            page = await client.get("/", params={"lang": odd})
            assert page.status_code == 200 and html_lang(page) == "pt-BR", odd
        page = await client.get("/?lang=en")
        assert html_lang(page) == "en" and "Create room" in page.text
        page = await client.get("/", headers=PT)
        assert html_lang(page) == "en"  # the session's choice beats Accept-Language


async def test_errors_come_in_the_readers_language(server: Server) -> None:
    async with Person(server.url, "Ana") as ana:
        ana.client.headers.update(PT)
        refused = await ana.client.post("/", data={"name": "", "action": "create"})
        assert refused.status_code == 422 and "Digite o seu nome." in refused.text
        assert html_lang(refused) == "pt-BR"
        too_long = "x" * 40
        refused = await ana.client.post("/", data={"name": too_long, "action": "create"})
        assert "Seu nome pode ter no máximo 32 caracteres." in refused.text
        missing = await ana.client.post(
            "/", data={"name": "Ana", "code": "ZZZZ-ZZZZ", "action": "join"}
        )
        assert missing.status_code == 404
        assert "Não existe sala com o código ZZZZ-ZZZZ" in missing.text

        code = await ana.create_room()
        empty = await ana.say(code, "   ")
        assert empty.status_code == 422 and "Escreva algo antes de enviar." in empty.text
        long = await ana.say(code, "x" * 2001)
        assert long.status_code == 422
        assert "Uma mensagem pode ter no máximo 2000 caracteres (esta tem 2001)." in long.text
        page = await ana.page(code)
        assert 'placeholder="Mensagem"' in page.text and ">Enviar</button>" in page.text
        assert ">Sair</button>" in page.text

        # Switched to English in the session: the same mistakes, in English.
        await ana.client.get(f"/rooms/{code}?lang=en")
        empty = await ana.say(code, "   ")
        assert "Write something before sending." in empty.text
        # A post's ?lang= sticks as a page's does.
        switched = await ana.client.post(f"/rooms/{code}/messages?lang=pt-BR", data={"text": ""})
        assert "Escreva algo antes de enviar." in switched.text
        assert "Escreva algo antes de enviar." in (await ana.say(code, "   ")).text
        await ana.client.get(f"/rooms/{code}?lang=en")
        other = await ana.client.post(
            f"/rooms/{code}/messages",
            data={"text": "oi"},
            headers={"Origin": "https://evil.example"},
        )
        assert other.status_code == 403 and "from another site" in other.text

    async with httpx.AsyncClient(base_url=server.url, headers=PT) as stranger:
        # Refused before any session exists: Accept-Language decides.
        other = await stranger.post(
            "/", data={"name": "Eve"}, headers={"Origin": "https://evil.example"}
        )
        assert other.status_code == 403 and "veio de outro site" in other.text
        unjoined = await stranger.get(f"/rooms/{code}/events")
        assert unjoined.status_code == 403 and "Escolha um nome e entre na sala" in unjoined.text


async def test_too_fast_says_so_in_portuguese_with_retry_after(make_server: ServerFactory) -> None:
    server = make_server(limit_message_burst="2", limit_messages_per_second="0.01")
    async with Person(server.url, "Ana") as ana:
        ana.client.headers.update(PT)
        code = await ana.create_room()
        statuses = [(await ana.say(code, f"m{i}")).status_code for i in range(3)]
        assert statuses[:2] == [200, 200]
        refused = await ana.say(code, "mais uma")
        assert refused.status_code == 429 and refused.headers["Retry-After"].isdigit()
        assert "Você está mandando mensagens rápido demais." in refused.text


async def test_one_room_two_languages_same_ids_own_words(server: Server) -> None:
    """Ana reads Portuguese and Bo English, in one room at the same moment: each event
    reaches both with the same id, in each reader's words."""
    async with Person(server.url, "Ana") as ana, Person(server.url, "Bo") as bo:
        ana.client.headers.update(PT)
        bo.client.headers.update(EN)
        code = await ana.create_room()
        assert (await bo.join(code)).status_code == 303
        async with ana.stream(code, after=0) as ana_stream, bo.stream(code, after=0) as bo_stream:
            async with Person(server.url, "Cy") as cy:
                await cy.join(code)
                async with cy.stream(code, after=0) as cy_stream:
                    await cy_stream.wait_for(lambda s: any(e.kind == "join" for e in s.entries))
                said = await bo.say(code, "hello @Ana")
                message_id = int(said.headers["Sala-Entry-Id"])
                edit = await bo.client.post(
                    f"/rooms/{code}/messages/{message_id}/edit",
                    data={"text": "hello again @Ana"},
                    headers=HX,
                )
                assert edit.status_code == 200, edit.text
                await cy.client.post(f"/rooms/{code}/leave")

            def settled(stream: Stream) -> bool:
                events = stream.events
                return any("edited" in e.data or "editada" in e.data for e in events) and any(
                    "Cy" in e.data and 'class="entry leave"' in e.data for e in events
                )

            await ana_stream.wait_for(settled)
            await bo_stream.wait_for(settled)

            def by_id(events: list[SSEEvent]) -> dict[str, str]:
                return {e.id: e.data for e in events if e.id}

            ana_events, bo_events = by_id(ana_stream.events), by_id(bo_stream.events)
            assert list(ana_events) == list(bo_events)  # same ids, same order
            cy_joined = [i for i, d in bo_events.items() if 'class="entry join"' in d and "Cy" in d]
            cy_left = [i for i, d in bo_events.items() if 'class="entry leave"' in d and "Cy" in d]
            assert len(cy_joined) == 1 and len(cy_left) == 1
            assert "joined" in bo_events[cy_joined[0]] and "left" in bo_events[cy_left[0]]
            assert "entrou" in ana_events[cy_joined[0]] and "joined" not in ana_events[cy_joined[0]]
            assert "saiu" in ana_events[cy_left[0]] and "left" not in ana_events[cy_left[0]]
            edited = [i for i, d in bo_events.items() if ">edited<" in d]
            assert edited and ">editada<" in ana_events[edited[-1]]
            # The message itself is the same in both: only the interface's words differ.
            assert "hello again" in ana_events[edited[-1]]
            # Member lists (events without an id) in each language.
            assert any("Na sala" in e.data for e in ana_stream.events if e.id is None)
            assert any("In the room" in e.data for e in bo_stream.events if e.id is None)
            assert not any("Na sala" in e.data for e in bo_stream.events)
            # The page each reloads to says the same as the stream did.
            page = await ana.page(code)
            assert "editada" in page.text and 'lang="pt-BR"' in page.text


async def test_the_export_speaks_the_readers_language(server: Server) -> None:
    async with Person(server.url, "Ana") as ana:
        ana.client.headers.update(PT)
        code = await ana.create_room()
        async with ana.stream(code, after=0) as stream:
            await stream.wait_for(lambda s: any(e.kind == "join" for e in s.entries))
        await ana.say(code, "Bom dia")
        text = (await ana.client.get(f"/rooms/{code}/export.txt")).text
        assert text.startswith(f"Sala {code}: a conversa inteira, com horários em UTC.")
        assert "Ana entrou" in text and "Ana: Bom dia" in text
        search = await ana.client.get(f"/rooms/{code}/search", params={"q": "bom"})
        assert "1 mensagem encontrada" in search.text and "Pesquisar nesta sala" in search.text

"""The room page and its history pages."""

from __future__ import annotations

import httpx
import pytest
from bs4 import BeautifulSoup

from tests.client import Person, page_entries
from tests.conftest import Server, ServerFactory

pytestmark = pytest.mark.anyio


async def test_room_page_without_a_name_goes_home(server: Server) -> None:
    async with Person(server.url, "Ana") as ana:
        code = await ana.create_room()
    async with httpx.AsyncClient() as stranger:
        response = await stranger.get(f"{server.url}/rooms/{code}")
    assert response.status_code == 303
    assert response.headers["location"] == f"/?code={code}"


async def test_unknown_room_is_404_in_words(server: Server) -> None:
    async with Person(server.url, "Ana") as ana:
        await ana.create_room()
        response = await ana.page("QQQQQQ")
        assert response.status_code == 404
        assert "no room with code QQQQQQ" in response.text


async def test_room_page_shows_code_invite_members_form_and_stream(server: Server) -> None:
    async with Person(server.url, "Ana") as ana:
        code = await ana.create_room()
        await ana.say(code, "first")
        response = await ana.page(code)
    assert response.status_code == 200
    soup = BeautifulSoup(response.text, "html.parser")
    assert f"{code[:4]}-{code[4:]}" in soup.select_one("h1").get_text()  # type: ignore[union-attr]
    invite = soup.select_one("#invite-link")
    assert invite is not None and str(invite["value"]).endswith(f"/?code={code}")
    timeline = soup.select_one("#timeline[aria-live]")
    assert timeline is not None
    entries = page_entries(response.text)
    assert [(e.kind, e.text) for e in entries] == [("message", "first")]
    stream = soup.select_one("[hx-sse\\:connect]")
    assert stream is not None
    assert stream["hx-sse:connect"] == f"/rooms/{code}/events?after={entries[-1].id}"
    form = soup.select_one("form#message-form")
    assert form is not None
    assert form["action"] == f"/rooms/{code}/messages" and form["method"] == "post"
    assert form.select_one("label[for=message-text]") is not None
    assert form.select_one("input[name=idempotency_key]") is not None
    assert soup.select_one("#members") is not None


async def test_pages_have_a_strict_csp_and_no_inline_script_or_style(server: Server) -> None:
    async with Person(server.url, "Ana") as ana:
        code = await ana.create_room()
        for response in (await ana.client.get("/"), await ana.page(code)):
            csp = response.headers["content-security-policy"]
            assert "script-src 'self'" in csp and "unsafe-inline" not in csp
            soup = BeautifulSoup(response.text, "html.parser")
            assert all(script.get("src") for script in soup.select("script"))
            assert not soup.select("style") and not soup.select("[style]")
            assert not [t for t in soup.find_all(True) if any(a.startswith("on") for a in t.attrs)]


async def test_page_shows_the_last_50_and_older_pages_load_before_an_id(
    make_server: ServerFactory,
) -> None:
    server = make_server(limit_messages_per_second=0)
    async with Person(server.url, "Ana") as ana:
        code = await ana.create_room()
        texts = [f"message {i}" for i in range(60)]
        for text in texts:
            assert (await ana.say(code, text, htmx=False)).status_code == 303
        page = await ana.page(code)
        shown = page_entries(page.text)
        assert [e.text for e in shown] == texts[10:]
        soup = BeautifulSoup(page.text, "html.parser")
        older = soup.select_one("#load-older a")
        assert older is not None
        assert older["hx-get"] == f"/rooms/{code}/messages?before={shown[0].id}"
        assert older["href"] == f"/rooms/{code}?before={shown[0].id}"

        fragment = await ana.client.get(str(older["hx-get"]))
        assert fragment.status_code == 200
        assert "<html" not in fragment.text
        assert [e.text for e in page_entries(fragment.text)] == texts[:10]
        assert "start of the room" in fragment.text

        # Without JavaScript the same history is a page of its own, not live.
        no_js = await ana.client.get(str(older["href"]))
        assert [e.text for e in page_entries(no_js.text)] == texts[:10]
        assert "hx-sse:connect" not in no_js.text

        bad = await ana.client.get(f"/rooms/{code}/messages?before=abc")
        assert bad.status_code == 400 and "whole number" in bad.text


async def test_room_codes_in_urls_are_case_insensitive(server: Server) -> None:
    async with Person(server.url, "Ana") as ana:
        code = await ana.create_room()
        response = await ana.page(code.lower())
        assert response.status_code == 200
        soup = BeautifulSoup(response.text, "html.parser")
        stream = soup.select_one("[hx-sse\\:connect]")
        assert stream is not None
        assert str(stream["hx-sse:connect"]).startswith(f"/rooms/{code}/events?after=")


async def test_a_page_showing_no_entries_streams_the_room_from_its_start(server: Server) -> None:
    """The stream goes on after the newest entry the page shows. A page showing none
    (its room is new) must not start after some other room's newest id: the creator's
    join, committed while the page was drawn, fell between the page and its stream."""
    async with Person(server.url, "Bo") as bo, Person(server.url, "Ana") as ana:
        busy = await bo.create_room()
        await bo.say(busy, "other rooms have entries")
        code = await ana.create_room()
        page = await ana.page(code)
        assert page_entries(page.text) == []
        assert f'hx-sse:connect="/rooms/{code}/events?after=0"' in page.text
        # Ana's join, recorded after the page was drawn, reaches a stream from that cursor.
        async with ana.stream(code, after=0) as stream:
            await stream.wait_for(lambda s: [e.kind for e in s.entries] == ["join"])

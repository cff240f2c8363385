"""Replies, edits, deletions, reactions, mentions, search and export, over real HTTP.

Each change is a timeline entry of its own whose event re-renders the message in
place (`hx-swap-oob`). What a reader ends with, live or after resuming from a cursor
taken before the changes, must be what a fresh page load shows.
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass

import pytest
from bs4 import BeautifulSoup, Tag

from tests.client import Person, SSEEvent
from tests.conftest import Server, ServerFactory
from tests.test_postgres import postgres_url

pytestmark = pytest.mark.anyio
__all__ = ["postgres_url"]

HX = {"HX-Request": "true"}


@dataclass(frozen=True)
class Shown:
    """What a reader sees of one entry."""

    id: int
    kind: str
    author: str
    text: str | None
    quote: str | None
    edited: bool
    deleted: bool
    reactions: tuple[str, ...]


def shown(li: Tag) -> Shown:
    classes = list(li.get("class") or [])
    kind = next(k for k in ("message", "join", "leave") if k in classes)
    author = li.select_one(".author")
    text = li.select_one(".text")
    quote = li.select_one(".quote")
    return Shown(
        id=int(str(li["id"]).removeprefix("entry-")),
        kind=kind,
        author=author.get_text() if author else "",
        text=text.get_text() if text else None,
        quote=" ".join(quote.get_text().split()) if quote else None,
        edited=li.select_one(".edited") is not None,
        deleted="deleted" in classes,
        reactions=tuple(" ".join(b.get_text().split()) for b in li.select(".reactions button")),
    )


def page_state(html: str) -> dict[int, Shown]:
    timeline = BeautifulSoup(html, "html.parser").select_one("#timeline")
    assert timeline is not None
    return {s.id: s for s in (shown(li) for li in timeline.select("li.entry"))}


def apply(state: dict[int, Shown], events: list[SSEEvent]) -> dict[int, Shown]:
    """What htmx does with the events: append new entries, swap changed ones in place."""
    state = dict(state)
    for event in events:
        for li in event.html.select("li.entry"):
            entry = shown(li)
            if li.has_attr("hx-swap-oob"):
                if entry.id in state:
                    state[entry.id] = entry
            else:
                state[entry.id] = entry
    return state


async def two_in_a_room(server: Server) -> tuple[Person, Person, str]:
    ana = await Person(server.url, "Ana").__aenter__()
    bo = await Person(server.url, "Bo").__aenter__()
    code = await ana.create_room()
    assert (await bo.join(code)).status_code == 303
    return ana, bo, code


async def say(person: Person, code: str, text: str, **fields: str) -> int:
    response = await person.client.post(
        f"/rooms/{code}/messages", data={"text": text, **fields}, headers=HX
    )
    assert response.status_code == 200, response.text
    return int(response.headers["sala-entry-id"])


async def change(person: Person, code: str, message: int, what: str, **fields: str) -> int:
    response = await person.client.post(
        f"/rooms/{code}/messages/{message}/{what}", data=fields, headers=HX
    )
    assert response.status_code == 200, response.text
    return int(response.headers["sala-entry-id"])


async def test_a_reply_quotes_its_original_escaped_and_only_in_its_room(server: Server) -> None:
    ana, bo, code = await two_in_a_room(server)
    async with ana, bo, bo.stream(code) as stream:
        original = await say(ana, code, "<b>bold</b> & a long tail " + "x" * 200)
        reply = await say(bo, code, "answer", reply_to=str(original))
        await stream.wait_text("answer")
        event = next(e for e in stream.events if e.id == str(reply))
        quote = event.html.select_one(".quote")
        assert quote is not None and quote["href"] == f"#entry-{original}"
        assert "<b>" not in event.data and "&lt;b&gt;bold&lt;/b&gt;" in event.data
        words = " ".join(quote.get_text().split())
        assert words.startswith("Ana <b>bold</b> & a long tail") and words.endswith("…")
        assert len(words) < 140

        other = await Person(server.url, "Cy").__aenter__()
        async with other:
            elsewhere = await other.create_room()
            foreign = await say(other, elsewhere, "not yours")
        join = next(e.id for e in stream.entries if e.kind == "join")
        for bad in (str(foreign), str(join), "999999", "abc", "-1"):
            refused = await bo.client.post(
                f"/rooms/{code}/messages", data={"text": "x", "reply_to": bad}, headers=HX
            )
            assert refused.status_code == 422, bad
            assert "reply to a message in this room" in refused.text
        page = page_state((await bo.page(code)).text)
        shown_quote = page[reply].quote
        assert shown_quote is not None and shown_quote.startswith("Ana <b>bold</b> & a long tail")


async def test_edits_deletes_and_reactions_live_on_reload_and_after_resuming(
    server: Server,
) -> None:
    """One reader is live, another resumes with a cursor from before every change: both
    end with exactly the page a fresh load shows; the deleted text is gone everywhere
    in the database; only the author may edit or delete."""
    ana, bo, code = await two_in_a_room(server)
    async with ana, bo, bo.stream(code) as live:
        first = await say(ana, code, "first, with a tpyo")
        secret = await say(ana, code, "the door code is 4711")
        reply = await say(bo, code, "what secret?", reply_to=str(secret))
        await live.wait_text("what secret?")
        before = (await bo.page(code)).text
        cursor = reply

        await change(ana, code, first, "edit", text="first, with no typo")
        await change(bo, code, first, "reactions", emoji="👍")
        await change(ana, code, first, "reactions", emoji="❤")  # ❤ is ❤️
        await change(bo, code, secret, "reactions", emoji="😮")
        await change(ana, code, secret, "edit", text="the door code is 4711, edited")
        last = await change(ana, code, secret, "delete")
        await live.wait_for(lambda s: any(e.id == str(last) for e in s.events))

        fresh = page_state((await bo.page(code)).text)
        assert fresh[first].text == "first, with no typo" and fresh[first].edited
        assert fresh[first].reactions == ("👍 1", "❤️ 1")
        assert fresh[secret].deleted and fresh[secret].text == "Message deleted"
        assert fresh[secret].reactions == ()
        assert fresh[reply].quote == "Ana Message deleted"

        state_live = apply(
            page_state(before), [e for e in live.events if e.id and int(e.id) > cursor]
        )
        assert state_live == fresh
        async with bo.stream(code, last_event_id=cursor) as resumed:
            await resumed.wait_for(lambda s: any(e.id == str(last) for e in s.events))
        assert apply(page_state(before), resumed.events) == fresh
        ids = [int(e.id) for e in resumed.events if e.id]
        assert ids == sorted(set(ids)) and ids[0] > cursor
        assert await search_hits(bo, code, "4711") == []  # the index forgot it too

    with sqlite3.connect(server.db_path) as db:
        rows = db.execute("SELECT kind, body, quote_text FROM entry").fetchall()
    assert not any("4711" in (body or "") + (quote or "") for _k, body, quote in rows), rows
    assert ("delete", None, None) in rows


async def test_only_the_author_edits_or_deletes_and_bad_changes_change_nothing(
    server: Server,
) -> None:
    ana, bo, code = await two_in_a_room(server)
    async with ana, bo:
        mine = await say(ana, code, "Ana's words")
        for what, fields in (("edit", {"text": "Bo's words"}), ("delete", {})):
            refused = await bo.client.post(
                f"/rooms/{code}/messages/{mine}/{what}", data=fields, headers=HX
            )
            assert refused.status_code == 403 and "your own messages" in refused.text
        empty = await ana.client.post(
            f"/rooms/{code}/messages/{mine}/edit", data={"text": "   "}, headers=HX
        )
        assert empty.status_code == 422
        for message in ("999999", "abc"):
            missing = await ana.client.post(
                f"/rooms/{code}/messages/{message}/edit", data={"text": "x"}, headers=HX
            )
            assert missing.status_code == 404 and "no such message" in missing.text
        pizza = await bo.client.post(
            f"/rooms/{code}/messages/{mine}/reactions", data={"emoji": "🍕"}, headers=HX
        )
        assert pizza.status_code == 422 and "👍" in pizza.text
        page = page_state((await ana.page(code)).text)
        assert page[mine].text == "Ana's words" and not page[mine].edited
        assert page[mine].reactions == ()

        await change(ana, code, mine, "delete")
        gone = await ana.client.post(
            f"/rooms/{code}/messages/{mine}/edit", data={"text": "back"}, headers=HX
        )
        assert gone.status_code == 404 and "deleted" in gone.text
        # Without JavaScript: the options page, and a plain form's 303.
        other = await say(ana, code, "plain")
        options = await ana.client.get(f"/rooms/{code}/messages/{other}")
        assert options.status_code == 200 and "Delete for everyone" in options.text
        theirs = await bo.client.get(f"/rooms/{code}/messages/{other}")
        assert "Delete for everyone" not in theirs.text and "React with 👍" in theirs.text
        plain = await ana.client.post(
            f"/rooms/{code}/messages/{other}/edit", data={"text": "plain, edited"}
        )
        assert plain.status_code == 303
        assert plain.headers["location"] == f"/rooms/{code}#entry-{other}"


async def test_reactions_toggle_count_and_store_once_per_key(server: Server) -> None:
    ana, bo, code = await two_in_a_room(server)
    async with ana, bo:
        message = await say(ana, code, "react to me")
        await change(ana, code, message, "reactions", emoji="👍")
        await change(bo, code, message, "reactions", emoji="👍")
        html = BeautifulSoup((await bo.page(code)).text, "html.parser")
        button = html.select_one(f"#entry-{message} .reactions button")
        assert button is not None and " ".join(button.get_text().split()) == "👍 2"
        assert button["title"] == "Ana, Bo"
        # The same key twice (a double click): one toggle.
        for _ in range(2):
            await change(ana, code, message, "reactions", emoji="👍", idempotency_key="k-1")
        assert page_state((await bo.page(code)).text)[message].reactions == ("👍 1",)
        await change(ana, code, message, "reactions", emoji="👍", idempotency_key="k-2")
        assert page_state((await bo.page(code)).text)[message].reactions == ("👍 2",)


async def test_mentions_of_people_who_were_in_the_room(server: Server) -> None:
    ana, bo, code = await two_in_a_room(server)
    async with ana, bo, ana.stream(code) as stream:
        message = await say(bo, code, "@ana look, and @Nobody, and mail@bo.example")
        await stream.wait_for(lambda s: any(e.id == str(message) for e in s.events))
        event = next(e for e in stream.events if e.id == str(message))
        mentions = event.html.select(".mention")
        assert [m.get_text() for m in mentions] == ["@ana"]
        html = BeautifulSoup((await ana.page(code)).text, "html.parser")
        body = html.select_one("body")
        assert body is not None and mentions[0]["data-tag"] == body["data-me"]


async def search_hits(person: Person, code: str, query: str) -> list[str]:
    response = await person.client.get(f"/rooms/{code}/search", params={"q": query})
    assert response.status_code == 200
    html = BeautifulSoup(response.text, "html.parser")
    return [" ".join(p.get_text().split()) for p in html.select(".search-result .hit-text")]


async def check_search(server: Server) -> None:
    ana, bo, code = await two_in_a_room(server)
    async with ana, bo:
        await say(ana, code, "Amanhã não vou")
        await say(bo, code, "AMANHA sim, à tarde")
        gone = await say(bo, code, "amanhã talvez, não sei")
        await say(ana, code, "outra coisa")
        await change(bo, code, gone, "delete")
        assert await search_hits(bo, code, "nao") == ["Amanhã não vou"]
        assert await search_hits(bo, code, "Amanha") == ["AMANHA sim, à tarde", "Amanhã não vou"]
        assert await search_hits(bo, code, "amanh nao") == ["Amanhã não vou"]
        assert await search_hits(bo, code, 'tarde" * ( :') == ["AMANHA sim, à tarde"]
        assert await search_hits(bo, code, "sei") == []
        response = await bo.client.get(f"/rooms/{code}/search", params={"q": "nao"})
        assert "<mark>não</mark>" in response.text
        link = BeautifulSoup(response.text, "html.parser").select_one(".open-at")
        assert link is not None
        opened = await bo.client.get(str(link["href"]).split("#")[0])
        target = str(link["href"]).split("#")[1]
        entry = BeautifulSoup(opened.text, "html.parser").select_one(f"#{target}")
        assert entry is not None and "highlight" in (entry.get("class") or [])
        async with Person(server.url, "Dee") as stranger:
            await stranger.create_room()
            refused = await stranger.client.get(f"/rooms/{code}/search", params={"q": "nao"})
            assert refused.status_code == 403


async def test_search_ignores_case_and_accents_on_sqlite(server: Server) -> None:
    await check_search(server)


async def test_search_ignores_case_and_accents_on_postgresql(
    make_server: ServerFactory, postgres_url: str
) -> None:
    await check_search(make_server(database_url=postgres_url))


async def test_export_has_every_kind_of_entry(server: Server) -> None:
    ana, bo, code = await two_in_a_room(server)
    async with ana, bo:
        async with bo.stream(code) as stream:
            await stream.wait_for(lambda s: any(e.kind == "join" for e in s.entries))
            first = await say(ana, code, "línea uno\nline two")
            reply = await say(bo, code, "a reply", reply_to=str(first))
            await change(ana, code, first, "edit", text="line one, edited")
            await change(bo, code, first, "reactions", emoji="🙏")
            doomed = await say(bo, code, "to be deleted")
            await change(bo, code, doomed, "delete")
        left = await bo.client.post(f"/rooms/{code}/leave")
        assert left.status_code == 303
        response = await ana.client.get(f"/rooms/{code}/export.json")
        assert response.status_code == 200
        assert "attachment" in response.headers["content-disposition"]
        data = json.loads(response.text)
        assert data["room"] == code
        kinds = [e["kind"] for e in data["entries"]]
        for kind in ("join", "message", "edit", "reaction", "delete", "leave"):
            assert kind in kinds, kind
        by_id = {e["id"]: e for e in data["entries"]}
        assert by_id[first]["text"] == "line one, edited" and "edited" in by_id[first]
        assert by_id[reply]["reply_to"] == first
        assert by_id[doomed]["text"] is None and "deleted" in by_id[doomed]
        assert all(e["time"].endswith("Z") for e in data["entries"])
        text = (await ana.client.get(f"/rooms/{code}/export.txt")).text
        assert f"#{reply} Bo (reply to #{first}): a reply" in text
        assert f"#{doomed} Bo: (message deleted)" in text and "to be deleted" not in text
        assert "Bo reacted 🙏" in text and "Bo left" in text
        other = await ana.client.get(f"/rooms/{code}/export.xml")
        assert other.status_code == 404
        async with Person(server.url, "Dee") as stranger:
            await stranger.create_room()
            for ending in ("txt", "json"):
                refused = await stranger.client.get(f"/rooms/{code}/export.{ending}")
                assert refused.status_code == 403


async def test_pages_count_messages_not_changes(server: Server) -> None:
    ana, bo, code = await two_in_a_room(server)
    async with ana, bo:
        messages = [await say(ana, code, f"m{n}") for n in range(3)]
        for n in range(60):
            await change(bo, code, messages[0], "reactions", emoji="👍", idempotency_key=f"r{n}")
        state = page_state((await ana.page(code)).text)
        assert [s.text for s in state.values() if s.kind == "message"] == ["m0", "m1", "m2"]
        assert "This is the start of the room." in (await ana.page(code)).text

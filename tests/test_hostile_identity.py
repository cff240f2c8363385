"""Hostile users: nobody speaks as someone else, reads a room unseen, or forges a post.

Black-box over HTTP against a real server; each test is named after what a hostile
user could do before, with a Bug/Fix docstring.
"""

from __future__ import annotations

import re

import httpx
import pytest
from bs4 import BeautifulSoup

from tests.client import Person, page_entries
from tests.conftest import Server, ServerFactory
from tests.hostile import room_still_works, stored, stored_messages, words

pytestmark = pytest.mark.anyio


async def test_a_session_made_elsewhere_cannot_post_read_or_stream(server: Server) -> None:
    """Bug: any session (say, one that created another room as "Ana") could post to
    and stream from any room whose code it knew, under any name.
    Fix: joining binds the session to the room and name; everything else is 403."""
    async with Person(server.url, "Ana") as ana, Person(server.url, "Ana") as eve:
        code = await ana.create_room()
        await ana.say(code, "private")
        await eve.create_room()  # Eve's session is "Ana" in her own room
        async with ana.stream(code, after=0) as watching:
            await watching.wait_entries(2)
            before = stored(server.db_path)
            posted = await eve.say(code, "I am Ana")
            assert posted.status_code == 403 and "join" in words(posted)
            history = await eve.client.get(f"/rooms/{code}/messages")
            assert history.status_code == 403 and "private" not in history.text
            older = await eve.client.get(f"/rooms/{code}/messages?before=999")
            assert older.status_code == 403
            async with eve.stream(code) as stream:
                assert stream.response is not None and stream.response.status_code == 403
            page = await eve.page(code)  # no GET joins anyone: back to the home form
            assert page.status_code == 303 and page.headers["location"] == f"/?code={code}"
            assert stored(server.db_path) == before
            assert watching.presence[-1] == ["Ana"]
        async with httpx.AsyncClient(base_url=server.url) as nobody:
            assert (await nobody.get(f"/rooms/{code}/messages")).status_code == 403
            assert (await nobody.get(f"/rooms/{code}/events")).status_code == 403


@pytest.mark.parametrize(
    "lookalike",
    [
        "ANA",
        "Ana\u200b",
        "A\u200dna",
        "\u0410na",  # Cyrillic capital A
        "\uff21\uff4e\uff41",  # fullwidth
        "\u202eanA",
        " Ana ",
        "Ana\u00ad",
    ],
)
async def test_lookalike_names_are_taken(server: Server, lookalike: str) -> None:
    """Bug: "Ana" with a zero-width space, a Cyrillic or a fullwidth A … joined next to Ana.
    Fix: names are NFKC, invisible characters go, and "taken" compares confusable
    skeletons case-insensitively."""
    async with Person(server.url, "Ana") as ana, Person(server.url, lookalike) as eve:
        code = await ana.create_room()
        async with ana.stream(code) as watching:
            await watching.wait_for(lambda s: ["Ana"] in s.presence)
            answer = await eve.join(code)
            assert answer.status_code == 422 and "already called" in words(answer)
            assert "set-cookie" not in answer.headers


async def test_decomposed_and_composed_names_are_one_name(server: Server) -> None:
    async with Person(server.url, "Zoe\u0308") as zoe, Person(server.url, "Zoë") as other:
        code = await zoe.create_room()
        async with zoe.stream(code) as watching:
            await watching.wait_for(lambda s: ["Zoë"] in s.presence)
            assert (await other.join(code)).status_code == 422


@pytest.mark.parametrize(
    ("name", "why"),
    [
        ("\u200b\u200d\u2060", "enter your name"),
        ("\u3164", "enter your name"),  # Hangul filler: invisible
        ("!!!", "letter or digit"),
        ("\x1b[31mred", "control characters"),
        ("\ue000x", "invisible"),
        ("Z" + "\u0301\u0302\u0303\u0304\u0306", "accents"),
    ],
)
async def test_names_made_of_nothing_visible_are_refused(
    server: Server, name: str, why: str
) -> None:
    """Bug: names made only of invisible characters were accepted."""
    async with httpx.AsyncClient() as client:
        answer = await client.post(server.url + "/", data={"name": name, "action": "create"})
    assert answer.status_code == 422 and why in words(answer)
    assert stored(server.db_path) == []


async def test_bidi_controls_in_a_name_cannot_flip_the_line(server: Server) -> None:
    """Bug: a name with U+202E reversed the rest of its line.
    Fix: bidi controls are stripped from names; names sit in <bdi>, texts in dir=auto."""
    async with Person(server.url, "\u202eevil") as eve:
        code = await eve.create_room()
        async with eve.stream(code, after=0) as stream:
            await eve.say(code, "\u202ehello")
            await stream.wait_for(lambda s: any(e.kind == "message" for e in s.entries))
        page = BeautifulSoup((await eve.page(code)).text, "html.parser")
        author = page.select_one(".entry.message .author bdi")
        assert author is not None and author.get_text() == "evil"
        text = page.select_one(".entry.message .text")
        assert text is not None and text.get("dir") == "auto"
        assert "\u202e" not in str(page.select_one("#members"))


async def test_unknown_codes_are_throttled_per_address(make_server: ServerFactory) -> None:
    """Bug: ~900 code guesses a second from one client, over 23**6 codes.
    Fix: 8-letter codes, and failed lookups per address are limited (429)."""
    server = make_server(limit_lookups_per_minute=10)
    async with Person(server.url, "Ana") as ana, Person(server.url, "Eve") as eve:
        code = await ana.create_room()
        assert len(code) == 8
        answers = [(await eve.join(f"QQQQQQQ{c}")).status_code for c in "ABCDEFGHJKMN"]
        assert answers[:10] == [404] * 10 and answers[10:] == [429, 429]
        throttled = await eve.join(code)  # even a real code, while throttled
        assert throttled.status_code == 429 and int(throttled.headers["retry-after"]) >= 1
        assert "room codes" in words(throttled)
        assert (await eve.page(code)).status_code == 429
        # Ana, who joined, is not throttled in her own room.
        await room_still_works(ana, code, "unaffected")


async def test_codes_are_typed_with_or_without_the_dash_in_any_case(server: Server) -> None:
    async with Person(server.url, "Ana") as ana, Person(server.url, "Bo") as bo:
        code = await ana.create_room()
        dashed = f"{code[:4]}-{code[4:]}"
        answer = await bo.join(f" {dashed.lower()} ")
        assert answer.status_code == 303 and answer.headers["location"] == f"/rooms/{code}"
        page = await bo.page(dashed.lower())
        assert page.status_code == 200 and dashed in page.text


@pytest.mark.parametrize(
    "headers",
    [
        {"Origin": "http://evil.example"},
        {"Origin": "null"},
        {"Sec-Fetch-Site": "cross-site"},
        {"Sec-Fetch-Site": "same-site", "Origin": "http://127.0.0.1:1"},
    ],
)
async def test_posts_from_another_site_are_refused(server: Server, headers: dict[str, str]) -> None:
    """Bug: only SameSite=Lax stood between a sibling origin and a forged post, and a
    cross-site `POST /` replaced the victim's session (login CSRF).
    Fix: every unsafe request checks Sec-Fetch-Site / Origin (403 in words)."""
    async with Person(server.url, "Ana") as ana:
        code = await ana.create_room()
        before = stored(server.db_path)
        forged = await ana.client.post(
            f"/rooms/{code}/messages", data={"text": "forged"}, headers=headers
        )
        assert forged.status_code == 403 and "another site" in words(forged)
        login = await ana.client.post(
            "/", data={"name": "Mallory", "action": "create"}, headers=headers
        )
        assert login.status_code == 403 and "set-cookie" not in login.headers
        assert stored(server.db_path) == before
        own = {"Origin": server.url, "Sec-Fetch-Site": "same-origin"}
        mine = await ana.client.post(f"/rooms/{code}/messages", data={"text": "mine"}, headers=own)
        assert mine.status_code == 303
        assert stored_messages(server.db_path) == [("Ana", "mine")]


async def test_a_cross_site_link_to_the_stream_joins_nobody(server: Server) -> None:
    """Bug: a cross-site top-level GET of /rooms/CODE/events made the victim join."""
    async with Person(server.url, "Ana") as ana:
        code = await ana.create_room()
        answer = await ana.client.get(
            f"/rooms/{code}/events", headers={"Sec-Fetch-Site": "cross-site"}
        )
        assert answer.status_code == 403
        assert stored(server.db_path)[1:] == []  # the room, and no join


async def test_someone_elses_idempotency_key_is_a_conflict(server: Server) -> None:
    """Bug: a key already used by another member answered "success" and stored nothing."""
    async with Person(server.url, "Ana") as ana, Person(server.url, "Bo") as bo:
        code = await ana.create_room()
        await bo.join(code)
        assert (await ana.say(code, "first", key="shared-key")).status_code == 200
        clash = await bo.say(code, "second", key="shared-key")
        assert clash.status_code == 409 and "reload" in words(clash)
        assert (await ana.say(code, "first", key="shared-key")).status_code == 200
        assert stored_messages(server.db_path) == [("Ana", "first")]


async def test_author_tags_differ_from_room_to_room(server: Server) -> None:
    """Bug: one member had the same author tag everywhere (linkable across rooms)."""
    async with Person(server.url, "Ana") as ana:
        rooms = [await ana.create_room() for _ in range(2)]
        tags = set()
        for code in rooms:
            await ana.say(code, "hi")
            page = BeautifulSoup((await ana.page(code)).text, "html.parser")
            entry = page.select_one(".entry.message")
            assert entry is not None and page.body is not None
            assert entry["data-author"] == page.body["data-me"]
            tags.add(str(entry["data-author"]))
        assert len(tags) == 2


async def test_sse_framing_cannot_be_forged_from_a_message(server: Server) -> None:
    async with Person(server.url, "Ana") as ana:
        code = await ana.create_room()
        async with ana.stream(code, after=0) as stream:
            await ana.say(code, 'x\n\nid: 999999\ndata: <li id="entry-999999">\n\nevent: x')
            await ana.say(code, "after")
            await stream.wait_text("after")
        assert "999999" not in [e.id for e in stream.events]
        assert all(
            line.startswith(("data:", "id:", "retry:", ":", "")) for line in stream.raw_lines
        )
        assert not [line for line in stream.raw_lines if line.startswith("event:")]


async def test_a_tampered_cookie_is_no_session(server: Server) -> None:
    async with Person(server.url, "Ana") as ana:
        code = await ana.create_room()
        cookie = ana.client.cookies["session"]
        tampered = re.sub(r"[A-Za-z]", lambda m: m.group().swapcase(), cookie, count=3)
        async with httpx.AsyncClient(base_url=server.url, cookies={"session": tampered}) as eve:
            assert (
                await eve.post(f"/rooms/{code}/messages", data={"text": "x"})
            ).status_code == 403
            assert (await eve.get(f"/rooms/{code}/events")).status_code == 403
        assert page_entries((await ana.page(code)).text) == []

"""Leaving a room and coming back: the exit at once, the home page's list of rooms."""

from __future__ import annotations

import anyio
import pytest
from bs4 import BeautifulSoup

from tests.client import Person, page_entries
from tests.conftest import Server, ServerFactory
from tests.hostile import stored_messages

pytestmark = pytest.mark.anyio


async def test_leave_records_the_exit_at_once_and_ends_the_streams(
    make_server: ServerFactory,
) -> None:
    server = make_server(presence_grace_seconds=60)  # a leave must not wait for this
    async with Person(server.url, "Ana") as ana, Person(server.url, "Bo") as bo:
        code = await ana.create_room()
        await bo.join(code)
        async with ana.stream(code) as watching, bo.stream(code) as tab, bo.stream(code) as other:
            await watching.wait_for(lambda s: ["Ana", "Bo"] in s.presence)
            with anyio.fail_after(5):
                left = await bo.client.post(f"/rooms/{code}/leave")
            assert left.status_code == 303 and left.headers["location"] == "/"
            await watching.wait_for(lambda s: [e.kind for e in s.entries][-1:] == ["leave"], 2)
            await watching.wait_for(lambda s: s.presence[-1] == ["Ana"], 2)
            await tab.wait_end(2)
            await other.wait_end(2)
        # Bo's other tabs cannot come back in without joining again, and make no noise.
        assert (await bo.client.get(f"/rooms/{code}/events")).status_code == 403
        assert (await bo.say(code, "still here?")).status_code == 403
        assert (await bo.page(code)).status_code == 303
        assert stored_messages(server.db_path) == []
        kinds = [e.kind for e in page_entries((await ana.page(code)).text)]
        assert kinds == ["join", "join", "leave"]
        # Joining again works, under the same or another name.
        assert (await bo.join(code)).status_code == 303
        assert (await bo.say(code, "back")).status_code == 200


async def test_leaving_needs_the_room_joined(server: Server) -> None:
    async with Person(server.url, "Ana") as ana, Person(server.url, "Eve") as eve:
        code = await ana.create_room()
        await eve.create_room()
        refused = await eve.client.post(f"/rooms/{code}/leave")
        assert refused.status_code == 403
        forged = await ana.client.post(
            f"/rooms/{code}/leave", headers={"Origin": "http://evil.example"}
        )
        assert forged.status_code == 403
        assert (await ana.page(code)).status_code == 200  # still in


async def test_home_lists_your_rooms_newest_first_one_click_away(server: Server) -> None:
    async with Person(server.url, "Ana") as ana:
        first = await ana.create_room()
        second = await ana.create_room()
        await ana.client.post(f"/rooms/{first}/leave")
        home = BeautifulSoup((await ana.client.get("/")).text, "html.parser")
        items = home.select(".your-rooms li")
        codes = [code.get_text() for code in home.select(".your-rooms li .code")]
        assert codes == [f"{second[:4]}-{second[4:]}", f"{first[:4]}-{first[4:]}"]
        link = items[0].select_one("a")
        assert link is not None and link["href"] == f"/rooms/{second}"
        # A room left is one click away too: a form that joins again under the same name.
        form = items[1].select_one("form[method=post][action='/']")
        assert form is not None
        fields = {str(i["name"]): str(i["value"]) for i in form.select("input[type=hidden]")}
        assert fields == {"name": "Ana", "code": first}
        again = await ana.client.post("/", data={**fields, "action": "join"})
        assert again.status_code == 303 and again.headers["location"] == f"/rooms/{first}"


async def test_an_invite_link_says_so(server: Server) -> None:
    async with Person(server.url, "Ana") as ana, Person(server.url, "Bo") as bo:
        code = await ana.create_room()
        page = await bo.client.get(f"/?code={code}")
        soup = BeautifulSoup(page.text, "html.parser")
        invited = soup.select_one(".invited")
        assert invited is not None
        assert f"invited to room {code[:4]}-{code[4:]}" in invited.get_text()
        buttons = [str(b["value"]) for b in soup.select("form.home-form button[name=action]")]
        assert buttons[0] == "join"  # the default action for Enter


async def test_the_member_list_counts_the_reader_without_a_stream(server: Server) -> None:
    async with Person(server.url, "Ana") as ana:
        code = await ana.create_room()
        page = BeautifulSoup((await ana.page(code)).text, "html.parser")
        names = [li.get_text() for li in page.select("#members li[data-author]")]
        assert names == ["Ana"]
        count = page.select_one("#members .count")
        assert count is not None and count.get_text() == "(1)"


async def test_links_in_messages_and_nothing_else_become_markup(server: Server) -> None:
    async with Person(server.url, "Ana") as ana:
        code = await ana.create_room()
        text = (
            "see https://example.org/a?b=1&c=2. and javascript:alert(1) "
            'or <a href="https://evil.example">x</a>\nnext line (http://w.example/x_(y))'
        )
        async with ana.stream(code, after=0) as stream:
            await ana.say(code, text)
            await stream.wait_for(lambda s: any(e.kind == "message" for e in s.entries))
        event = next(e for e in stream.events if e.entry is not None and "message" in e.data)
        for html in (event.data, (await ana.page(code)).text):
            soup = BeautifulSoup(html, "html.parser")
            body = soup.select_one(".entry.message .text")
            assert body is not None
            links = [(a["href"], a["rel"], a["target"]) for a in body.select("a")]
            rel = ["noopener", "noreferrer", "nofollow"]
            assert links == [
                ("https://example.org/a?b=1&c=2", rel, "_blank"),
                ("https://evil.example", rel, "_blank"),
                ("http://w.example/x_(y)", rel, "_blank"),
            ]
            assert body.get_text() == text  # every character shown as typed, line break kept
            assert not body.select("script, img, [onclick]")


async def test_the_session_cookie_stays_under_4_kb_with_many_rooms_and_long_names(
    make_server: ServerFactory,
) -> None:
    """Browsers drop a cookie over 4 KB, and with it every room joined: the oldest rooms
    are forgotten first instead."""
    server = make_server(limits="off")
    name = "東京都渋谷区の山田太郎さん" * 2  # 26 characters, six bytes each in the JSON
    async with Person(server.url, name) as yamada:
        codes = [await yamada.create_room() for _ in range(20)]
        cookie = yamada.client.cookies["session"]
        assert len(f"session={cookie}") < 4000
        assert (await yamada.page(codes[-1])).status_code == 200  # the newest rooms stay
        assert (await yamada.page(codes[0])).status_code == 303  # the oldest went first

"""The home page: create a room or join one by code, with errors in words."""

from __future__ import annotations

import httpx
import pytest
from bs4 import BeautifulSoup

from tests.client import Person, eventually
from tests.conftest import Server

pytestmark = pytest.mark.anyio

CODE_ALPHABET = set("ABCDEFGHJKMNPQRSTUVWXYZ")


def form_values(html: str) -> dict[str, str]:
    soup = BeautifulSoup(html, "html.parser")
    return {str(i["name"]): str(i.get("value", "")) for i in soup.select("form input[name]")}


def error_text(html: str) -> str:
    found = BeautifulSoup(html, "html.parser").select_one(".form-error")
    assert found is not None, "no error shown"
    return found.get_text()


def test_home_page_has_the_form(server: Server) -> None:
    response = httpx.get(server.url + "/?code=abc")
    assert response.status_code == 200
    soup = BeautifulSoup(response.text, "html.parser")
    form = soup.select_one("form[method=post][action='/']")
    assert form is not None
    assert soup.select_one("label[for=name]") and soup.select_one("label[for=code]")
    actions = {str(b["value"]): b.get_text() for b in form.select("button[name=action]")}
    assert actions == {"join": "Join", "create": "Create room"}
    assert form_values(response.text)["code"] == "ABC"


async def test_create_room_makes_a_new_code_each_time(server: Server) -> None:
    async with Person(server.url, "Ana") as ana:
        codes = {await ana.create_room() for _ in range(5)}
        assert len(codes) == 5
        for code in codes:
            assert len(code) == 8 and set(code) <= CODE_ALPHABET
        page = await ana.page(codes.pop())
        assert page.status_code == 200


@pytest.mark.parametrize(
    ("data", "status", "words"),
    [
        ({"name": "", "code": "ABCDEF", "action": "join"}, 422, "enter your name"),
        ({"name": "   ", "action": "create"}, 422, "enter your name"),
        ({"name": "x" * 33, "action": "create"}, 422, "at most 32"),
        ({"name": "a\x07b", "action": "create"}, 422, "control characters"),
        ({"name": "Ana", "code": "  ", "action": "join"}, 422, "room code"),
        ({"name": "Ana", "code": "zzzzzz", "action": "join"}, 404, "no room with code ZZZZZZ"),
    ],
)
def test_bad_home_form_keeps_values_and_says_why(
    server: Server, data: dict[str, str], status: int, words: str
) -> None:
    response = httpx.post(server.url + "/", data=data)
    assert response.status_code == status
    assert words in error_text(response.text)
    values = form_values(response.text)
    assert values["name"] == data["name"].strip()
    if data.get("code", "").strip():
        assert values["code"] == data["code"].strip().upper()
    assert "set-cookie" not in response.headers


async def test_join_trims_and_upper_cases_the_code(server: Server) -> None:
    async with Person(server.url, "Ana") as ana, Person(server.url, "Bo") as bo:
        code = await ana.create_room()
        response = await bo.join(f"  {code.lower()} ")
        assert response.status_code == 303
        assert response.headers["location"] == f"/rooms/{code}"
        assert (await bo.page(code)).status_code == 200


async def test_a_present_name_is_taken_case_insensitively(server: Server) -> None:
    async with (
        Person(server.url, "Ana") as ana,
        Person(server.url, "ANA") as other,
        Person(server.url, "Ana") as later,
    ):
        code = await ana.create_room()
        async with ana.stream(code) as stream:
            await stream.wait_for(lambda s: ["Ana"] in s.presence)
            response = await other.join(code)
            assert response.status_code == 422
            assert "already called ANA" in error_text(response.text)
            assert form_values(response.text)["code"] == code
            # The same member may come back under their own name.
            assert (await ana.join(code)).status_code == 303
        # Once Ana has left (after the grace period), the name is free again.
        assert await eventually(lambda: later.join(code), lambda r: r.status_code == 303)


async def test_a_link_into_a_room_whose_name_is_now_taken_asks_for_another(
    server: Server,
) -> None:
    """Ana joined, left; someone else took her name meanwhile. Her old binding does
    not let her in under a name now held by someone else: she picks another."""
    async with Person(server.url, "Ana") as ana, Person(server.url, "Ana") as other:
        code = await ana.create_room()
        assert (await ana.page(code)).status_code == 200
        assert (await other.join(code)).status_code == 303  # Ana is not present
        async with other.stream(code) as stream:
            await stream.wait_for(lambda s: ["Ana"] in s.presence)
            response = await ana.page(code)
            assert response.status_code == 303
            assert response.headers["location"] == f"/?code={code}&taken=1"
            home = await ana.client.get(response.headers["location"])
            assert "already called Ana" in error_text(home.text)
            assert form_values(home.text)["code"] == code
            # Her stream and her posts are refused too, in words.
            refused = await ana.say(code, "it is me")
            assert refused.status_code == 403 and "already called Ana" in refused.text
            async with ana.stream(code) as hers:
                assert hers.response is not None and hers.response.status_code == 403

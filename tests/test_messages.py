"""Posting messages: validation, answers for htmx and plain forms, idempotency, rate limit."""

from __future__ import annotations

import httpx
import pytest
from bs4 import BeautifulSoup

from tests.client import Person, page_entries
from tests.conftest import Server, ServerFactory

pytestmark = pytest.mark.anyio


async def stored_texts(person: Person, code: str) -> list[str | None]:
    response = await person.client.get(f"/rooms/{code}/messages")
    assert response.status_code == 200
    return [e.text for e in page_entries(response.text) if e.kind == "message"]


async def test_htmx_post_answers_a_fresh_form_and_plain_post_redirects(server: Server) -> None:
    async with Person(server.url, "Ana") as ana:
        code = await ana.create_room()
        response = await ana.say(code, "  hello  ", key="k-1")
        assert response.status_code == 200
        form = BeautifulSoup(response.text, "html.parser").select_one("form#message-form")
        assert form is not None
        text_input = form.select_one("textarea[name=text]")
        assert text_input is not None and text_input.get_text() == ""
        assert text_input.has_attr("autofocus")
        key_input = form.select_one("input[name=idempotency_key]")
        assert key_input is not None and key_input["value"] not in ("", "k-1")
        assert form["action"] == f"/rooms/{code}/messages"
        # Each room's form posts to its own room (the form is made once for all).
        other = await ana.create_room()
        answer = await ana.say(other, "elsewhere")
        elsewhere = BeautifulSoup(answer.text, "html.parser").select_one("form#message-form")
        assert elsewhere is not None and elsewhere["action"] == f"/rooms/{other}/messages"

        plain = await ana.say(code, "again", htmx=False)
        assert plain.status_code == 303
        assert plain.headers["location"] == f"/rooms/{code}"
        assert await stored_texts(ana, code) == ["hello", "again"]


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("", "Write something"),
        ("   \n ", "Write something"),
        ("x" * 2001, "at most 2000"),
        ("bell\x07", "control characters"),
    ],
)
async def test_bad_messages_get_422_in_words_and_store_nothing(
    server: Server, text: str, words: str
) -> None:
    async with Person(server.url, "Ana") as ana:
        code = await ana.create_room()
        await ana.say(code, "kept")
        for htmx in (True, False):
            response = await ana.say(code, text, htmx=htmx)
            assert response.status_code == 422
            soup = BeautifulSoup(response.text, "html.parser")
            error = soup.select_one("#message-form .form-error")
            assert error is not None and words in error.get_text()
            if text.strip():
                field = soup.select_one("#message-form textarea[name=text]")
                assert field is not None and field.get_text() == text
        assert await stored_texts(ana, code) == ["kept"]


async def test_the_longest_message_is_accepted(server: Server) -> None:
    async with Person(server.url, "Ana") as ana:
        code = await ana.create_room()
        assert (await ana.say(code, "y" * 2000)).status_code == 200
        assert await stored_texts(ana, code) == ["y" * 2000]


async def test_posting_without_a_session_or_to_no_room(server: Server) -> None:
    async with Person(server.url, "Ana") as ana:
        code = await ana.create_room()
        async with httpx.AsyncClient() as stranger:
            anonymous = await stranger.post(
                f"{server.url}/rooms/{code}/messages", data={"text": "hi"}
            )
        assert anonymous.status_code == 403
        assert "join the room" in anonymous.text
        missing = await ana.say("QQQQQQ", "hi")
        assert missing.status_code == 404
        assert "no room with code QQQQQQ" in missing.text
        assert await stored_texts(ana, code) == []


async def test_the_same_idempotency_key_stores_one_message(server: Server) -> None:
    async with Person(server.url, "Ana") as ana:
        code = await ana.create_room()
        async with ana.stream(code, after=0) as stream:
            first = await ana.say(code, "only once", key="same-key")
            second = await ana.say(code, "only once", key="same-key")
            plain = await ana.say(code, "only once", key="same-key", htmx=False)
            assert (first.status_code, second.status_code, plain.status_code) == (200, 200, 303)
            await ana.say(code, "marker")
            await stream.wait_for(lambda s: any(e.text == "marker" for e in s.entries))
        assert [e.text for e in stream.entries if e.kind == "message"] == ["only once", "marker"]
        assert await stored_texts(ana, code) == ["only once", "marker"]


async def test_html_in_a_message_is_escaped_everywhere(server: Server) -> None:
    evil = '<script>alert("x")</script><img src=x onerror=alert(1)>'
    async with Person(server.url, "<b>Ana</b>") as ana:
        code = await ana.create_room()
        async with ana.stream(code, after=0) as stream:
            await ana.say(code, evil)
            await stream.wait_for(lambda s: any(e.kind == "message" for e in s.entries))
        event = next(e for e in stream.events if e.entry is not None and "message" in e.data)
        assert "<script>" not in event.data and "&lt;script&gt;" in event.data
        assert "<b>Ana</b>" not in event.data
        page = await ana.page(code)
        assert "<script>alert" not in page.text and "<img src=x" not in page.text
        assert [e.text for e in page_entries(page.text) if e.kind == "message"] == [evil]


async def test_too_fast_gets_429_with_retry_after(make_server: ServerFactory) -> None:
    server = make_server(limit_message_burst=3, limit_messages_per_second=0.5)
    async with Person(server.url, "Ana") as ana:
        code = await ana.create_room()
        answers = [await ana.say(code, f"m{i}") for i in range(5)]
        assert [a.status_code for a in answers] == [200, 200, 200, 429, 429]
        assert int(answers[3].headers["retry-after"]) >= 1
        assert "too fast" in answers[3].text
        field = BeautifulSoup(answers[3].text, "html.parser").select_one("textarea[name=text]")
        assert field is not None and field.get_text() == "m3"
        assert await stored_texts(ana, code) == ["m0", "m1", "m2"]

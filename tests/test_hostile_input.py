"""Hostile input: hand-built requests get a clear 4xx, and nothing stored changes.

Each test is named after what a hostile user could do before, with a Bug/Fix
docstring; each also checks that the room keeps working for everyone else.
"""

from __future__ import annotations

import socket
import sqlite3

import anyio
import httpx
import pytest

from db.models import Entry, EntryKind
from db.store import Store
from tests.client import Person
from tests.conftest import Server, ServerFactory
from tests.hostile import multipart, room_still_works, stored, stored_messages, words
from web.broker import MemoryBroker
from web.rendering import make_templates
from web.timeline import Timeline

pytestmark = pytest.mark.anyio

SURROGATE_NAME = rb"x\udcff"  # what charset=unicode_escape decodes to a lone surrogate


async def test_a_lone_surrogate_name_cannot_take_a_room_down(server: Server) -> None:
    """Bug: multipart with charset=unicode_escape put a lone surrogate into a name;
    rendering the member list then failed, and the room was a 500 for everyone.
    Fix: forms are UTF-8 only (415 otherwise) and every name is checked."""
    async with Person(server.url, "Ana") as ana, Person(server.url, "Eve") as eve:
        code = await ana.create_room()
        async with ana.stream(code) as watching:
            await watching.wait_entries(1)
            before = stored(server.db_path)
            for charset in ("unicode_escape", "undefined", "latin-1", "utf-16"):
                body, headers = multipart(
                    {"name": SURROGATE_NAME, "code": code.encode(), "action": b"join"},
                    charset=charset,
                )
                answer = await eve.client.post("/", content=body, headers=headers)
                assert answer.status_code == 415 and "UTF-8" in words(answer)
                assert "set-cookie" not in answer.headers
            # Honest UTF-8 multipart still works (and its name is checked like any other).
            body, headers = multipart({"name": b"Eve", "code": code.encode()})
            assert (await eve.client.post("/", content=body, headers=headers)).status_code == 303
            assert stored(server.db_path) == before
            async with eve.stream(code):
                await watching.wait_for(lambda s: ["Ana", "Eve"] in s.presence)
            await room_still_works(ana, code, "still here")
            assert not watching.ended


async def test_a_bad_message_cannot_fail_everyone_elses(server: Server) -> None:
    """Bug: a surrogate smuggled into one message failed the whole group commit.
    Fix: validation before the commit (415/422 for the attacker)."""
    async with Person(server.url, "Ana") as ana, Person(server.url, "Eve") as eve:
        code = await ana.create_room()
        assert (await eve.join(code)).status_code == 303

        async def attack() -> None:
            for _ in range(20):
                body, headers = multipart({"text": rb"bad \udcff"}, charset="unicode_escape")
                answer = await eve.client.post(
                    f"/rooms/{code}/messages", content=body, headers=headers
                )
                assert answer.status_code == 415

        async def honest(n: int) -> None:
            async with Person(server.url, f"Honest {n}") as person:
                assert (await person.join(code)).status_code == 303
                for i in range(10):
                    assert (await person.say(code, f"{n}-{i}")).status_code == 200

        async with anyio.create_task_group() as tg:
            tg.start_soon(attack)
            for n in range(4):
                tg.start_soon(honest, n)
        texts = {text for _, text in stored_messages(server.db_path)}
        assert texts == {f"{n}-{i}" for n in range(4) for i in range(10)}


async def test_one_entry_that_cannot_be_stored_fails_alone(tmp_path: object) -> None:
    """Bug: a failed group commit failed every message in the batch.
    Fix: the batch is stored again entry by entry; only the bad one fails."""
    from pathlib import Path

    assert isinstance(tmp_path, Path)
    store = Store(f"sqlite:///{tmp_path / 'sala.db'}")
    store.init()
    room = await store.create_room()
    timeline = Timeline(store=store, broker=MemoryBroker(10), env=make_templates("k").env)

    async def append(body: str) -> str:
        try:
            await timeline.append(
                room, kind=EntryKind.MESSAGE, author_id="m", author_name="Ana", body=body
            )
        except Exception:
            return "failed"
        return "stored"

    bodies = ["one", "two \udcff", "three", "four"]
    results: dict[str, str] = {}

    async def run(body: str) -> None:
        results[body] = await append(body)

    async with anyio.create_task_group() as tg:  # one batch: queued before the writer runs
        for body in bodies:
            tg.start_soon(run, body)
    assert results == {"one": "stored", "two \udcff": "failed", "three": "stored", "four": "stored"}
    assert room.id is not None
    rows = await store.entries_after(room_id=room.id, after=0, limit=10)
    assert [e.body for e in rows if isinstance(e, Entry)] == ["one", "three", "four"]
    store.dispose()


@pytest.mark.parametrize(
    ("query", "status"),
    [
        ("before=²", 400),
        ("before=" + "9" * 4300, 400),
        ("before=9223372036854775808", 400),
        ("before=2147483648", 400),
        ("before=-1", 400),
        ("before=0x10", 400),
    ],
)
async def test_odd_numbers_in_urls_are_400_not_500(server: Server, query: str, status: int) -> None:
    """Bug: `isdigit()` accepted "²", and huge numbers overflowed the database.
    Fix: ids are ASCII digits up to 2**31 - 1."""
    async with Person(server.url, "Ana") as ana:
        code = await ana.create_room()
        await ana.say(code, "kept")
        for path in (f"/rooms/{code}/messages?{query}", f"/rooms/{code}?{query}"):
            answer = await ana.client.get(path)
            assert answer.status_code == status and "whole number" in words(answer)
        cursor = query.replace("before=", "after=")
        answer = await ana.client.get(f"/rooms/{code}/events?{cursor}")
        assert answer.status_code == 400
        # A bad Last-Event-ID is ignored in favour of the URL's cursor, never a 500.
        header = query.split("=", 1)[1].encode()
        url = f"/rooms/{code}/events?after=0&mode=poll"
        answer = await ana.client.get(url, headers=[(b"Last-Event-ID", header)])
        assert answer.status_code == 200 and "kept" in answer.text


@pytest.mark.parametrize(
    "raw", ["%00", "ABCD%00EFGH", "x" * 3000, "ÅBCDEFGH", "ABCDEFGH%0A", "%2e%2e", "ABCD-EFGH-"]
)
async def test_odd_room_codes_are_404_not_500(server: Server, raw: str) -> None:
    """Bug: a NUL in a room code reached the database (a 500 on PostgreSQL).
    Fix: codes are checked against their pattern before any query."""
    async with Person(server.url, "Ana") as ana:
        await ana.create_room()
        for path in (f"/rooms/{raw}", f"/rooms/{raw}/messages", f"/rooms/{raw}/events"):
            answer = await ana.client.get(path)
            assert answer.status_code in (403, 404), (path, answer.status_code)
        joined = await ana.client.post("/", data={"name": "Ana", "code": raw, "action": "join"})
        assert joined.status_code == 404 and "no room with code" in words(joined)


async def test_file_parts_and_other_media_types_are_refused(server: Server) -> None:
    """Bug: a multipart file part was stored as the text `UploadFile(filename=…)`.
    Fix: 415 for file parts, JSON, plain text and anything but a form."""
    async with Person(server.url, "Ana") as ana:
        code = await ana.create_room()
        before = stored(server.db_path)
        body, headers = multipart({}, files={"text": ("a.txt", b"hello")})
        url = f"/rooms/{code}/messages"
        answer = await ana.client.post(url, content=body, headers=headers)
        assert answer.status_code == 415 and "Files" in words(answer)
        for content_type in ("application/json", "text/plain", ""):
            answer = await ana.client.post(
                url, content=b'{"text": "hi"}', headers={"Content-Type": content_type}
            )
            assert answer.status_code == 415
        bad_utf8 = await ana.client.post(
            url,
            content=b"text=%FF%FE",
            headers={"Content-Type": "application/x-www-form-urlencoded"},
        )
        assert bad_utf8.status_code == 400 and "UTF-8" in words(bad_utf8)
        assert stored(server.db_path) == before
        await room_still_works(ana, code, "plain text is fine")


async def test_huge_bodies_get_413_without_being_read(server: Server) -> None:
    """Bug: a 300 MB url-encoded body was parsed in full.
    Fix: bodies over 32 KB get 413, by Content-Length or while they stream."""
    async with Person(server.url, "Ana") as ana:
        code = await ana.create_room()
        before = stored(server.db_path)
        big = b"text=" + b"a" * 300_000
        answer = await ana.client.post(
            f"/rooms/{code}/messages",
            content=big,
            headers={"Content-Type": "application/x-www-form-urlencoded"},
        )
        assert answer.status_code == 413 and "too large" in words(answer)

        async def chunks() -> object:
            yield b"name=Ana&action=create&x="
            for _ in range(100):
                yield b"b" * 1000

        chunked = await ana.client.post(
            "/",
            content=chunks(),  # type: ignore[arg-type]
            headers={"Content-Type": "application/x-www-form-urlencoded"},
        )
        assert chunked.status_code == 413
        assert stored(server.db_path) == before
        # The longest message, every character four bytes, still fits.
        assert (await ana.say(code, "😀" * 2000)).status_code == 200


async def test_a_body_that_never_finishes_gets_408(make_server: ServerFactory) -> None:
    """Bug: nothing bounded how long a body could take to arrive.
    Fix: SALA_BODY_TIMEOUT_SECONDS, then 408."""
    server = make_server(body_timeout_seconds=1)
    async with Person(server.url, "Ana") as ana:
        code = await ana.create_room()
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(
            b"POST / HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            b"Content-Type: application/x-www-form-urlencoded\r\nContent-Length: 100\r\n\r\nname="
        )
        answer = sock.recv(4096)
    assert answer.startswith(b"HTTP/1.1 408")
    assert b"content-security-policy" in answer.lower()
    assert code


async def test_messages_that_are_not_text_are_refused_in_words(server: Server) -> None:
    """Private-use, unassigned and control characters, and "Zalgo" stacks, are 422."""
    async with Person(server.url, "Ana") as ana:
        code = await ana.create_room()
        before = stored(server.db_path)
        for text in ("\ue000", "\U000e0001\u0378", "a\x00b", "a" + "\u0301" * 30):
            answer = await ana.say(code, text)
            assert answer.status_code == 422, repr(text)
            assert 'role="alert"' in answer.text
        assert stored(server.db_path) == before
        # Newer emoji, joiners and right-to-left text are text.
        for text in ("🫨 new", "👩‍💻", "שלום 123", "e\u0301"):
            assert (await ana.say(code, text)).status_code == 200


async def test_a_500_still_carries_the_security_headers(server: Server) -> None:
    """Bug: 500 pages came from Starlette's error middleware, outside the headers.
    Fix: the headers are added by the outermost layer."""
    async with Person(server.url, "Ana") as ana:
        code = await ana.create_room()
        with sqlite3.connect(server.db_path) as db:
            db.execute("DROP TABLE entry")  # the database goes wrong under the server
        answer = await ana.client.get(f"/rooms/{code}/messages")
        assert answer.status_code == 500
        assert answer.headers["content-security-policy"].startswith("default-src 'self'")
        assert answer.headers["x-content-type-options"] == "nosniff"
        assert "went wrong" in answer.text
    async with httpx.AsyncClient(base_url=server.url) as client:  # uvicorn closed that one
        health = await client.get("/healthz")
        assert set(health.json()) == {"status"}  # no internals, even now


async def test_request_smuggling_and_path_traversal_still_fail(server: Server) -> None:
    """What held before keeps holding: CL+TE smuggling and ../ in static paths."""
    smuggle = (
        b"POST / HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 6\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"
    )
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
        sock.sendall(smuggle)
        data = b""
        with pytest.raises((TimeoutError, OSError)):
            while chunk := sock.recv(4096):
                data += chunk
            raise OSError("closed")
    assert data.startswith(b"HTTP/1.1 400"), data[:200]
    assert data.count(b"HTTP/1.1") == 1  # the smuggled request was never answered
    async with httpx.AsyncClient(base_url=server.url) as client:
        for path in ("/static/../web/app.py", "/static/%2e%2e/web/app.py", "/static/..%2fsala.db"):
            answer = await client.get(path)
            assert answer.status_code == 404
            assert "create_app" not in answer.text

"""Limits per client address and per member, and the deployment settings.

The limits must stop floods from one address (new sessions do not reset them) and
still let a class of 30 people behind one address join a room and chat.
"""

from __future__ import annotations

import contextlib

import anyio
import httpx
import pytest
from bs4 import BeautifulSoup

from tests.client import Person, eventually
from tests.conftest import Server, ServerFactory
from tests.hostile import stored_messages, words

pytestmark = pytest.mark.anyio


async def test_room_creation_and_joins_are_limited_per_address(
    make_server: ServerFactory,
) -> None:
    """Bug: 2,000 rooms in 3 s; 200 sessions flashing in and out of a room.
    Fix: rooms and joins per client address, whatever the session."""
    server = make_server(limit_rooms_per_minute=3, limit_joins_per_minute=4)
    created = []
    for n in range(4):
        async with Person(server.url, f"Maker {n}") as maker:
            answer = await maker.client.post("/", data={"name": maker.name, "action": "create"})
            created.append(answer)
    assert [a.status_code for a in created] == [303, 303, 303, 429]
    assert int(created[3].headers["retry-after"]) >= 1 and "rooms" in words(created[3])
    code = created[0].headers["location"].rsplit("/", 1)[1]
    joins = []
    for n in range(5):
        async with Person(server.url, f"Guest {n}") as guest:
            joins.append(await guest.join(code))
    assert [a.status_code for a in joins] == [303, 303, 303, 303, 429]
    assert "joined from your network" in words(joins[4])


async def test_new_sessions_do_not_reset_the_posting_limit(make_server: ServerFactory) -> None:
    """Bug: a new session per burst got around the per-member limit (491 messages/s).
    Fix: posts are also counted per client address."""
    server = make_server(limit_posts_per_minute=6, limit_joins_per_minute=100)
    async with Person(server.url, "Ana") as ana:
        code = await ana.create_room()
        answers = []
        for n in range(4):
            async with Person(server.url, f"Spam {n}") as spammer:
                await spammer.join(code)
                answers += [(await spammer.say(code, f"{n}-{i}")).status_code for i in range(2)]
        assert answers == [200] * 6 + [429, 429]
        assert len(stored_messages(server.db_path)) == 6


async def test_streams_per_member_and_per_address_are_capped(make_server: ServerFactory) -> None:
    """Bug: 2,000 streams on one cookie.
    Fix: about 10 streams per member and 50 per address (here 2 and 3)."""
    server = make_server(limit_streams_per_member=2, limit_streams_per_address=3)
    async with (
        Person(server.url, "Ana") as ana,
        Person(server.url, "Bo") as bo,
        contextlib.AsyncExitStack() as stack,
    ):
        code = await ana.create_room()
        await bo.join(code)
        statuses = []
        for person in (ana, ana, ana, bo, bo):
            stream = await stack.enter_async_context(person.stream(code))
            assert stream.response is not None
            statuses.append(stream.response.status_code)
        assert statuses == [200, 200, 429, 200, 429]
        refused = await ana.client.get(f"/rooms/{code}/events")
        assert refused.status_code == 429 and "Too many open connections" in words(refused)
        assert int(refused.headers["retry-after"]) >= 1
    # Closed streams are counted out again (as soon as the server has seen them go).
    async with Person(server.url, "Ana") as again:
        again.client.cookies = ana.client.cookies

        async def poll_once() -> int:
            answer = await again.client.get(f"/rooms/{code}/events?mode=poll&after=0")
            return answer.status_code

        assert await eventually(poll_once, lambda status: status == 200) == 200


async def test_limits_off_turns_every_limit_off(make_server: ServerFactory) -> None:
    server = make_server(
        limits="off", limit_rooms_per_minute=1, limit_message_burst=1, limit_posts_per_minute=1
    )
    async with Person(server.url, "Ana") as ana:
        codes = [await ana.create_room() for _ in range(3)]
        for i in range(5):
            assert (await ana.say(codes[0], f"m{i}")).status_code == 200


async def test_a_class_of_30_behind_one_address_joins_and_chats(server: Server) -> None:
    """With the default limits, 30 people on one school NAT join within a minute,
    each with the room open, and talk."""
    async with Person(server.url, "Teacher") as teacher, contextlib.AsyncExitStack() as stack:
        code = await teacher.create_room()
        watching = await stack.enter_async_context(teacher.stream(code))
        students = [
            await stack.enter_async_context(Person(server.url, f"Student {n:02}"))
            for n in range(30)
        ]

        everyone_in = anyio.Event()
        arrived = 0

        async def arrive(student: Person) -> None:
            nonlocal arrived
            assert (await student.join(code)).status_code == 303
            assert (await student.page(code)).status_code == 200
            async with student.stream(code, parse=False) as stream:
                assert stream.response is not None and stream.response.status_code == 200
                for i in range(3):
                    answer = await student.say(code, f"{student.name}: {i}")
                    assert answer.status_code == 200, answer.text
                arrived += 1
                if arrived == len(students):
                    everyone_in.set()
                await everyone_in.wait()
                await watching.wait_for(lambda s: any(len(p) == 31 for p in s.presence))

        with anyio.fail_after(120):  # generous: CI machines can be busy
            async with anyio.create_task_group() as tg:
                for student in students:
                    tg.start_soon(arrive, student)
        assert len(stored_messages(server.db_path)) == 90


async def test_public_url_fixes_the_invite_link_and_the_host(make_server: ServerFactory) -> None:
    """Bug: the invite link followed whatever Host header the request carried.
    Fix: SALA_PUBLIC_URL; other hosts get 400."""
    server = make_server(public_url="http://chat.example.test")
    host = {"Host": "chat.example.test"}
    async with httpx.AsyncClient(base_url=server.url, headers=host) as client:
        created = await client.post("/", data={"name": "Ana", "action": "create"})
        assert created.status_code == 303
        page = await client.get(created.headers["location"])
        invite = BeautifulSoup(page.text, "html.parser").select_one("#invite-link")
        assert invite is not None
        assert str(invite["value"]).startswith("http://chat.example.test/?code=")
        posted = await client.post(
            created.headers["location"] + "/messages",
            data={"text": "hi"},
            headers={"Origin": "http://chat.example.test"},
        )
        assert posted.status_code == 303
        evil = await client.get("/", headers={"Host": "evil.example"})
        assert evil.status_code == 400 and "chat.example.test" in words(evil)
        assert evil.headers["content-security-policy"].startswith("default-src")
        probe = await client.get("/healthz", headers={"Host": f"127.0.0.1:{server.port}"})
        assert probe.status_code == 200  # load balancers probe by address


async def test_secure_cookie_setting(make_server: ServerFactory) -> None:
    """Bug: the session cookie was never Secure, whatever the deployment."""
    server = make_server(cookie_secure="true")
    async with httpx.AsyncClient() as client:
        answer = await client.post(server.url + "/", data={"name": "Ana", "action": "create"})
    cookie = answer.headers["set-cookie"]
    assert cookie.startswith("__Host-session=")
    assert "secure" in cookie.lower() and "httponly" in cookie.lower()
    assert "path=/" in cookie.lower() and "domain" not in cookie.lower()


async def test_every_response_has_security_headers(server: Server) -> None:
    async with Person(server.url, "Ana") as ana:
        code = await ana.create_room()
        answers = [
            await ana.client.get("/"),
            await ana.page(code),
            await ana.client.get("/nowhere"),
            await ana.client.put("/"),
            await ana.client.get("/static/app.css"),
            await ana.client.get("/healthz"),
            await ana.client.get(f"/rooms/{code}/messages?before=x"),
            await ana.client.post(f"/rooms/{code}/messages", data={"text": ""}),
        ]
        for answer in answers:
            assert answer.headers["x-content-type-options"] == "nosniff", answer.url
            assert "frame-ancestors 'none'" in answer.headers["content-security-policy"]
            if answer.headers.get("content-type", "").startswith("text/html"):
                assert answer.headers["cache-control"] == "no-store", answer.url
        assert (await ana.client.get("/healthz")).json() == {"status": "ok"}

"""Delivery that never loses a message: reconnects, proxies, slow readers, restarts.

Each test follows a room as a browser does (reconnecting with its cursor) through
a fault, and checks that the ids it received are exactly the ids stored: in
order, none missing, none twice.
"""

from __future__ import annotations

import contextlib
import socket
import sqlite3
from collections.abc import AsyncIterator

import anyio
import httpx
import pytest

from tests.client import Follower, Person, Stream
from tests.conftest import Server, ServerFactory
from tests.proxies import ToyProxy, toy_proxy

pytestmark = pytest.mark.anyio


def stored_ids(server: Server, code: str) -> list[int]:
    with sqlite3.connect(server.db_path) as db:
        rows = db.execute(
            "SELECT entry.id FROM entry JOIN room ON room.id = entry.room_id "
            "WHERE room.code = ? ORDER BY entry.id",
            (code,),
        ).fetchall()
    return [row[0] for row in rows]


def assert_exactly_stored(received: list[int], server: Server, code: str) -> None:
    stored = stored_ids(server, code)
    assert received == stored, f"received {received}\nstored   {stored}"


async def health(server: Server) -> dict[str, int]:
    async with httpx.AsyncClient() as client:
        data: dict[str, int] = (await client.get(server.url + "/healthz/detail")).json()
        return data


@contextlib.asynccontextmanager
async def _stream_behind_idle_proxy(
    server: Server,
) -> AsyncIterator[tuple[Person, str, Stream, ToyProxy]]:
    """Ana's room, and her stream through a proxy that cuts connections idle for 0.6 s."""
    async with (
        Person(server.url, "Ana") as ana,
        toy_proxy(server.port, idle_timeout=0.6) as proxy,
        Person(proxy.url, "Ana") as via_proxy,
    ):
        code = await ana.create_room()
        via_proxy.client.cookies = ana.client.cookies
        async with via_proxy.stream(code) as stream:
            yield ana, code, stream, proxy


async def test_a_proxy_that_cuts_idle_connections_never_cuts_a_live_stream(
    make_server: ServerFactory,
) -> None:
    server = make_server(heartbeat_seconds=0.4)
    async with _stream_behind_idle_proxy(server) as (ana, code, stream, proxy):
        await anyio.sleep(3)  # many idle periods, no messages
        await ana.say(code, "still here")
        await stream.wait_text("still here")
        assert not stream.ended
    assert proxy.cut == 0


async def test_without_heartbeats_that_proxy_would_cut_the_stream(
    make_server: ServerFactory,
) -> None:
    """The control for the test above: the toy proxy does cut idle streams."""
    server = make_server(heartbeat_seconds=30)
    async with _stream_behind_idle_proxy(server) as (_, _, stream, proxy):
        await stream.wait_end(timeout=10)
    assert proxy.cut == 1


async def test_poll_mode_works_through_a_proxy_that_buffers_whole_responses(
    server: Server,
) -> None:
    async with (
        Person(server.url, "Ana") as ana,
        toy_proxy(server.port, buffer=True) as proxy,
        Person(proxy.url, "Bo") as bo,
    ):
        code = await ana.create_room()
        assert (await bo.join(code)).status_code == 303
        # A plain stream through this proxy shows nothing while it is open.
        async with bo.stream(code, wait_open=False) as held:
            await ana.say(code, "lost in the buffer?")
            await anyio.sleep(1)
            assert held.response is None and held.events == []
        async with Follower(bo.client, code, after=0, mode="poll") as follower:
            for n in range(5):
                await ana.say(code, f"poll {n}")
                await anyio.sleep(0.3)
            await follower.wait_for_ids(stored_ids(server, code))
            assert follower.connections > 2
        assert_exactly_stored(follower.ids, server, code)
        texts = [e.text for e in follower.entries if e.kind == "message"]
        assert texts == ["lost in the buffer?", *[f"poll {n}" for n in range(5)]]


async def test_poll_mode_answers_at_once_with_what_is_pending_or_waits(
    make_server: ServerFactory,
) -> None:
    server = make_server(poll_wait_seconds=1)
    async with Person(server.url, "Ana") as ana:
        code = await ana.create_room()
        await ana.say(code, "pending")
        async with ana.stream(code, after=0, mode="poll") as pending:
            await pending.wait_end(timeout=5)
        assert "pending" in [e.text for e in pending.entries]
        cursor = pending.ids[-1]
        async with ana.stream(code, mode="poll", last_event_id=cursor) as quiet:
            await quiet.wait_end(timeout=5)
        assert quiet.entries == []
        assert quiet.retry is not None and quiet.retry < 1000


async def test_a_proxy_answering_502_for_a_while_loses_nothing(server: Server) -> None:
    async with (
        Person(server.url, "Ana") as ana,
        toy_proxy(server.port) as proxy,
        Person(proxy.url, "Bo") as bo,
    ):
        code = await ana.create_room()
        await bo.join(code)
        async with Follower(bo.client, code, after=0) as follower:
            await ana.say(code, "before")
            await follower.wait_for_ids(stored_ids(server, code))
            proxy.fail = True
            # Cut the open stream, as a restarting proxy would.
            for task in list(proxy._tasks):
                task.cancel()
            for n in range(5):
                await ana.say(code, f"during {n}")
            await anyio.sleep(1)
            proxy.fail = False
            await ana.say(code, "after")
            await follower.wait_for_ids(stored_ids(server, code))
            assert follower.failures >= 1
        assert_exactly_stored(follower.ids, server, code)


async def test_the_stream_lifetime_ends_and_the_client_resumes(
    make_server: ServerFactory,
) -> None:
    server = make_server(stream_max_seconds=0.7)
    async with Person(server.url, "Ana") as ana:
        code = await ana.create_room()
        async with Follower(ana.client, code, after=0) as follower:
            for n in range(12):
                await ana.say(code, f"tick {n}")
                await anyio.sleep(0.25)
            await follower.wait_for_ids(stored_ids(server, code))
            assert follower.connections >= 3
        assert_exactly_stored(follower.ids, server, code)


async def test_restart_with_sigterm_then_clients_resume(server: Server) -> None:
    async with Person(server.url, "Ana") as ana, Person(server.url, "Bo") as bo:
        code = await ana.create_room()
        await bo.join(code)
        async with Follower(bo.client, code, after=0) as follower:
            await ana.say(code, "before")
            await follower.wait_for_ids(stored_ids(server, code))
            took = await anyio.to_thread.run_sync(server.stop)
            assert took < 8
            server.start()
            for n in range(3):
                await ana.say(code, f"after restart {n}")
            await follower.wait_for_ids(stored_ids(server, code))
        assert_exactly_stored(follower.ids, server, code)
        kinds = [e.kind for e in follower.entries]
        assert kinds.count("join") == 1 and "leave" not in kinds  # the restart made no noise


async def test_a_slow_reader_is_cut_off_and_catches_up_others_unharmed(
    make_server: ServerFactory,
) -> None:
    server = make_server(subscriber_queue_size=5, limits="off", send_timeout_seconds=2)
    async with Person(server.url, "Ana") as ana, Person(server.url, "Bo") as bo:
        code = await ana.create_room()
        await bo.join(code)
        cookie = "; ".join(f"{k}={v}" for k, v in bo.client.cookies.items())
        # Bo's stalled tab: connects, then never reads. A tiny receive buffer fills fast.
        stalled = socket.socket()
        stalled.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        stalled.connect(("127.0.0.1", server.port))
        request = (
            f"GET /rooms/{code}/events?after=0 HTTP/1.1\r\nHost: x\r\nCookie: {cookie}\r\n\r\n"
        )
        stalled.sendall(request.encode())
        try:
            async with ana.stream(code) as healthy:
                await healthy.wait_for(lambda s: len(s.events) >= 1)
                with anyio.fail_after(60):
                    while (await health(server))["subscribers"] == 2:
                        assert len(healthy.entries) < 5000, "the stalled reader was never cut off"
                        async with anyio.create_task_group() as tg:
                            for _ in range(4):
                                tg.start_soon(post_many, ana, code, 10)
                    # Only the stalled stream was dropped; the healthy one got everything.
                    assert (await health(server))["subscribers"] == 1
                ids = stored_ids(server, code)
                await healthy.wait_for(lambda s: s.ids[-1:] == ids[-1:], timeout=30)
        finally:
            stalled.close()
        assert healthy.ids == [i for i in ids if i >= healthy.ids[0]]
        async with Follower(bo.client, code, after=0) as caught_up:
            await caught_up.wait_for_ids(stored_ids(server, code), timeout=30)
        assert_exactly_stored(caught_up.ids, server, code)
        with anyio.fail_after(10):
            while (await health(server))["subscribers"] != 0:
                await anyio.sleep(0.1)


async def post_many(person: Person, code: str, count: int) -> None:
    for n in range(count):
        # Three bytes a character: big frames fill socket buffers sooner.
        response = await person.say(code, f"{n} " + "€" * 1990)
        assert response.status_code == 200


async def test_gone_clients_leave_nothing_behind(server: Server) -> None:
    async with Person(server.url, "Ana") as ana:
        code = await ana.create_room()
        for _ in range(10):
            async with ana.stream(code) as stream:
                await stream.wait_for(lambda s: len(s.events) >= 1)
        with anyio.fail_after(10):
            while (h := await health(server))["subscribers"] or h["members"]:
                await anyio.sleep(0.1)


async def test_a_bad_last_event_id_falls_back_to_the_url_cursor(server: Server) -> None:
    async with Person(server.url, "Ana") as ana:
        code = await ana.create_room()
        await ana.say(code, "one")
        await ana.say(code, "two")
        first = stored_ids(server, code)[0]
        async with ana.stream(code, after=first, last_event_id="garbage") as stream:
            await stream.wait_for(lambda s: "two" in [e.text for e in s.entries])
        # The URL's cursor was used: "one" (the cursor itself) is not replayed.
        assert [e.text for e in stream.entries if e.kind == "message"] == ["two"]


async def test_concurrent_posts_with_one_key_store_one_entry(server: Server) -> None:
    async with Person(server.url, "Ana") as ana:
        code = await ana.create_room()
        answers: list[int] = []

        async def post() -> None:
            answers.append((await ana.say(code, "double click", key="one-key")).status_code)

        async with ana.stream(code, after=0) as stream, anyio.create_task_group() as tg:
            for _ in range(5):
                tg.start_soon(post)
        assert answers == [200] * 5
        async with ana.stream(code, after=0) as again:
            await again.wait_for(lambda s: any(e.kind == "message" for e in s.entries))
            await anyio.sleep(0.3)
        assert [e.text for e in again.entries if e.kind == "message"] == ["double click"]
        assert stream is not None

"""Join and leave: stored entries, with no noise from refreshes, tabs or restarts."""

from __future__ import annotations

import contextlib

import anyio
import httpx
import pytest
from bs4 import BeautifulSoup

from tests.client import Person, SSEEvent, Stream
from tests.conftest import Server, ServerFactory

pytestmark = pytest.mark.anyio


async def kinds(person: Person, code: str) -> list[tuple[str, str]]:
    async with person.stream(code, after=0) as stream:
        await anyio.sleep(0.3)
    return [(e.kind, e.author) for e in stream.entries if e.kind != "message"]


async def test_refresh_and_second_tab_make_no_noise_and_leave_follows_grace(
    server: Server,
) -> None:
    async with Person(server.url, "Ana") as ana, Person(server.url, "Bo") as bo:
        code = await ana.create_room()
        await bo.join(code)
        async with bo.stream(code) as watcher:
            await watcher.wait_entries(1)
            # A refresh: the stream closes and a new one opens within the grace period.
            async with ana.stream(code) as tab:
                await tab.wait_for(lambda s: len(s.events) >= 1)
            async with ana.stream(code) as tab, ana.stream(code) as second_tab:
                await tab.wait_for(lambda s: len(s.events) >= 1)
                await second_tab.wait_for(lambda s: len(s.events) >= 1)
            await watcher.wait_for(lambda s: s.entries[-1].kind == "leave", timeout=10)
            assert [(e.kind, e.author) for e in watcher.entries] == [
                ("join", "Bo"),
                ("join", "Ana"),
                ("leave", "Ana"),
            ]
            await watcher.wait_for(lambda s: bool(s.presence) and s.presence[-1] == ["Bo"])
        async with httpx.AsyncClient() as client:
            health = (await client.get(server.url + "/healthz/detail")).json()
        assert health["subscribers"] == 0


async def test_presence_survives_a_restart_without_noise(server: Server) -> None:
    async with Person(server.url, "Ana") as ana, Person(server.url, "Bo") as bo:
        code = await ana.create_room()
        await bo.join(code)
        async with ana.stream(code) as stream:
            await stream.wait_entries(1)
            server.restart()
            await stream.wait_end()
        # Ana comes back after the restart: she never left, so nothing is recorded.
        page = BeautifulSoup((await ana.page(code)).text, "html.parser")
        assert [li.get_text() for li in page.select("#members li[data-author]")] == ["Ana"]
        # Her name is still held while she reconnects.
        async with Person(server.url, "ana") as impostor:
            assert (await impostor.join(code)).status_code == 422
        async with ana.stream(code) as again:
            await again.wait_for(lambda s: len(s.events) >= 1)
            await anyio.sleep(0.3)
        assert await kinds(bo, code) == [("join", "Ana"), ("join", "Bo")]


def member_lists_of(stream: Stream) -> list[SSEEvent]:
    """The member-list events a stream has had (events without an id)."""
    return [e for e in stream.events if e.id is None]


async def test_a_crowd_arriving_gets_few_member_lists_of_bounded_size(
    make_server: ServerFactory,
) -> None:
    """Bug: every join pushed the whole, growing member list to everyone (n² bytes).
    Fix: member-list events are coalesced and show at most 100 names."""
    server = make_server(limits="off")  # 120 people from one address
    async with Person(server.url, "Host") as host:
        code = await host.create_room()
        async with host.stream(code) as watcher, contextlib.AsyncExitStack() as stack:
            await watcher.wait_entries(1)
            guests = [
                await stack.enter_async_context(Person(server.url, f"Guest {i:03}"))
                for i in range(120)
            ]
            for guest in guests:
                assert (await guest.join(code)).status_code == 303
                await stack.enter_async_context(guest.stream(code, parse=False))
            await watcher.wait_for(lambda s: len(s.entries) == 121, timeout=30)
            # The newest member list, not the newest event: a join stored slower than
            # the list's coalescing delay (a busy machine) arrives after it.
            await watcher.wait_for(lambda s: "(121)" in member_lists_of(s)[-1].data, timeout=10)
        member_lists = member_lists_of(watcher)
        assert len(member_lists) < 40, len(member_lists)
        last = member_lists[-1].html
        assert len(last.select("li[data-author]")) == 100
        more = last.select_one("li.more")
        assert more is not None and more.get_text() == "and 21 more"


async def test_the_name_index_agrees_with_the_members_it_indexes() -> None:
    """is_name_taken looks names up in an index kept beside the members (a crowd
    arriving in a big room must not make every arrival walk the room). Random
    arrivals, renames, departures and restores: the index answers exactly what a
    walk over the members present would."""
    import random

    from web.presence import Presence
    from web.text import name_key

    async def nothing(room: str, member_id: str, name: str) -> None:
        pass

    presence = Presence(grace_seconds=0.01, on_leave=nothing)
    names = ["Ana", "ana", "\u0410NA", "Bo", "Bó", "Cy", "cy "]  # a Cyrillic capital A
    rooms, ids = ["R1", "R2"], [f"m{i}" for i in range(6)]
    rng = random.Random(7)
    for _ in range(600):
        room, member_id, name = rng.choice(rooms), rng.choice(ids), rng.choice(names)
        action = rng.random()
        if action < 0.4:
            presence.connect(room, member_id, name)
        elif action < 0.6:
            presence.disconnect(room, member_id)
        elif action < 0.75:
            presence.leave_now(room, member_id)
        elif action < 0.85:
            presence.restore(room, member_id, name, 0.005)
        else:
            await anyio.sleep(0.006)  # graces run out: members leave
        for asked_room in rooms:
            members = presence._rooms.get(asked_room, {})
            for asked in names:
                for asker in [None, *ids]:
                    walked = any(
                        other != asker and m.key == name_key(asked) for other, m in members.items()
                    )
                    assert presence.is_name_taken(asked_room, asked, asker) == walked
    presence.close()

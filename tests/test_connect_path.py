"""A stream whose cursor is the room's newest entry connects without the database.

The room page puts its newest entry's id into the stream's URL, and a reconnect
sends the last id it got: in both cases there is nothing to replay, and the
memory broker knows the room's newest entry (every entry is published there after
it commits). The server counts its database round trips (`/healthz/detail`).
"""

from __future__ import annotations

import re

import anyio
import httpx
import pytest

from tests.client import Person
from tests.conftest import Server

pytestmark = pytest.mark.anyio


def database_calls(server: Server) -> int:
    detail = httpx.get(server.url + "/healthz/detail", timeout=5).json()
    return int(detail["database_calls"])


async def first_bytes(person: Person, code: str, **cursor: int) -> str:
    """Open a stream, read its first chunk (the member list) and a moment more."""
    headers = {}
    url = f"/rooms/{code}/events"
    if "last_event_id" in cursor:
        headers["Last-Event-ID"] = str(cursor["last_event_id"])
    if "after" in cursor:
        url += f"?after={cursor['after']}"
    chunks = []
    async with person.client.stream("GET", url, headers=headers) as response:
        assert response.status_code == 200
        with anyio.move_on_after(0.5):
            async for chunk in response.aiter_text():
                chunks.append(chunk)
    return "".join(chunks)


async def test_a_current_cursor_touches_no_database(server: Server) -> None:
    async with Person(server.url, "Ana") as ana:
        code = await ana.create_room()
        said = await ana.say(code, "first")
        first_id = int(said.headers["Sala-Entry-Id"])
        # Ana's first stream records her join (a write), as it should.
        async with ana.stream(code, after=first_id) as stream:
            await stream.wait_for(lambda s: any(e.kind == "join" for e in s.entries))
            joined = stream.entries[-1].id
            page = await ana.page(code)
            match = re.search(r'hx-sse:connect="/rooms/\w+/events\?after=(\d+)"', page.text)
            assert match is not None
            newest = int(match.group(1))
            assert newest == joined

            before = database_calls(server)
            # A second tab from the page, and a reconnect with the last id it got.
            text = await first_bytes(ana, code, after=newest)
            assert 'id="members"' in text and "id: " not in text
            text = await first_bytes(ana, code, last_event_id=newest)
            assert 'id="members"' in text and "id: " not in text
            assert database_calls(server) == before

            # The counter does count: an older cursor is looked up and replayed.
            text = await first_bytes(ana, code, after=first_id)
            assert f"id: {joined}" in text
            assert database_calls(server) > before


async def test_after_a_restart_the_first_lookup_teaches_the_newest(server: Server) -> None:
    async with Person(server.url, "Ana") as ana:
        code = await ana.create_room()
        async with ana.stream(code, after=0) as stream:
            await stream.wait_for(lambda s: any(e.kind == "join" for e in s.entries))
        said = await ana.say(code, "before the restart")
        newest = int(said.headers["Sala-Entry-Id"])
        server.restart()
        async with ana.stream(code, after=newest) as stream:
            await stream.wait_for(lambda s: s.presence != [])
            # Nothing was published since the start: the database answered, and
            # taught the broker the room's newest entry.
            before = database_calls(server)
            text = await first_bytes(ana, code, last_event_id=newest)
            assert "id: " not in text
            assert database_calls(server) == before
            # A new message moves the newest on; the old cursor replays it.
            said = await ana.say(code, "after the restart")
            text = await first_bytes(ana, code, last_event_id=newest)
            assert f"id: {said.headers['Sala-Entry-Id']}" in text

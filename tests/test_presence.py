"""Join and leave: stored entries, with no noise from refreshes, tabs or restarts."""

from __future__ import annotations

import anyio
import httpx
import pytest
from bs4 import BeautifulSoup

from tests.client import Person
from tests.conftest import Server

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
            health = (await client.get(server.url + "/healthz")).json()
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

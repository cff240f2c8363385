"""The garbage collector's policy (web/collector.py): what outlives a young pass is
frozen, cycles among frozen objects wait for a full collection, and streams, which
end by reference counting, leave nothing behind."""

from __future__ import annotations

import gc
import weakref

import anyio
import httpx
import pytest
from anyio.abc import SocketStream

from tests.client import Person, cookie_header, health_detail, open_bare_stream
from tests.conftest import ServerFactory
from web.collector import Collector


class Node:
    other: Node | None = None


@pytest.fixture
def collector() -> object:
    made = Collector(growth=0.0, check_interval=1, min_interval=0)
    try:
        yield made
    finally:
        made.uninstall()
        gc.unfreeze()


def test_what_outlives_a_pass_is_frozen_and_cycles_wait_for_a_full_collection(
    collector: Collector,
) -> None:
    collector.install()
    at_start = gc.get_freeze_count()
    first, second = Node(), Node()
    first.other, second.other = second, first  # a reference cycle
    cycle = weakref.ref(first)
    gc.collect(0)  # a young pass: both outlive it, and are frozen
    assert gc.get_freeze_count() >= at_start + 2
    del first, second
    gc.collect(0)
    gc.collect(1)
    assert cycle() is not None  # no pass looks at frozen objects: the policy's cost

    plain = Node()
    freed = weakref.ref(plain)
    gc.collect(0)
    del plain  # frozen, but not in a cycle: freed by reference counting at once
    assert freed() is None

    ballast = [[n] for n in range(300_000)]  # memory grows (some 30 MB)
    assert collector.check() is True  # grew since the last full collection
    assert cycle() is None
    assert collector.full_collections == 1
    assert collector.check() is False  # nothing grew since
    assert len(ballast) == 300_000


def test_a_full_collection_waits_for_growth_and_its_interval() -> None:
    collector = Collector(growth=0.25, check_interval=1, min_interval=3600)
    try:
        collector.install()
        collector.min_interval = 0
        kept = [[n] for n in range(1000)]
        gc.collect(0)
        assert collector.check() is False  # grown by far less than a quarter
        collector.growth, collector.min_interval = 0.0, 3600
        kept += [[n] for n in range(300_000)]  # some 30 MB more
        assert collector.check() is False  # grown, but the last one was just now
        collector.min_interval = 0
        assert collector.check() is True
        assert len(kept) == 301_000
    finally:
        collector.uninstall()
        gc.unfreeze()


@pytest.mark.anyio
async def test_streams_that_end_leave_nothing_frozen_behind(make_server: ServerFactory) -> None:
    """Hundreds of streams open (their objects outlive young passes, so are frozen)
    and close: the frozen count falls back, since nothing of a stream is kept in a
    reference cycle. A leak here would grow until the next full collection."""

    # One member, hundreds of streams. A closed stream is let go once its member's
    # presence grace is over and its heartbeat timer has come (both short here).
    server = make_server(limits="off", presence_grace_seconds="1", heartbeat_seconds="1")

    def frozen() -> int:
        return int(health_detail(server.url, "?count=frozen")["garbage_collector"]["frozen"])

    # Counting the frozen objects walks them all: only when asked.
    async with httpx.AsyncClient() as client:
        plain = (await client.get(server.url + "/healthz/detail")).json()["garbage_collector"]
    assert "frozen" not in plain and plain["resident_bytes"] > 10_000_000

    async with Person(server.url, "Ana") as ana:
        code = await ana.create_room()
        cookie = cookie_header(ana)
        path = f"/rooms/{code}/events"

        async def open_streams(count: int) -> list[SocketStream]:
            return [(await open_bare_stream(server.url, path, cookie))[0] for _ in range(count)]

        async def settled() -> int:
            """The frozen count once it has not moved for 2 seconds."""
            counts = [frozen()]
            with anyio.fail_after(20):
                while len(counts) < 5 or min(counts[-5:]) < max(counts[-5:]):
                    await anyio.sleep(0.5)
                    counts.append(frozen())
            return counts[-1]

        # The first round leaves what first use makes (caches); the second must leave
        # nothing more.
        for sock in await open_streams(500):
            await sock.aclose()
        before = await settled()
        socks = await open_streams(500)
        assert frozen() > before + 500 * 15  # the open streams' objects are frozen
        for sock in socks:
            await sock.aclose()
        with anyio.fail_after(15):  # a leak never falls back
            while frozen() > before + 500:
                await anyio.sleep(0.5)

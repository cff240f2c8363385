"""The room's SSE stream, read by a real HTTP client from a real server."""

from __future__ import annotations

import contextlib
import signal
import time
from collections.abc import AsyncIterator

import anyio
import httpx
import pytest
from anyio.abc import SocketStream

from tests.client import Person, cookie_header, health_detail, open_bare_stream
from tests.conftest import Server, ServerFactory

pytestmark = pytest.mark.anyio


async def test_stream_headers_and_first_bytes(server: Server) -> None:
    async with Person(server.url, "Ana") as ana:
        code = await ana.create_room()
        headers = {"Accept-Encoding": "gzip, br, deflate"}
        async with ana.client.stream("GET", f"/rooms/{code}/events", headers=headers) as response:
            assert response.status_code == 200
            assert response.headers["content-type"] == "text/event-stream; charset=utf-8"
            assert response.headers["cache-control"] == "no-store, no-transform"
            assert response.headers["x-accel-buffering"] == "no"
            assert "content-encoding" not in response.headers
            # Something arrives before anything happens in the room.
            with anyio.fail_after(5):
                first = await response.aiter_raw().__anext__()
        lines = first.decode().split("\n")
        assert lines[0].startswith(":")
        retry = int(next(line for line in lines if line.startswith("retry: ")).split()[1])
        assert 50 <= retry <= 3000
        assert 'id="members"' in first.decode()


async def test_stream_refuses_strangers_unknown_rooms_and_bad_cursors(server: Server) -> None:
    async with Person(server.url, "Ana") as ana:
        code = await ana.create_room()
        async with httpx.AsyncClient() as client:
            stranger = await client.get(f"{server.url}/rooms/{code}/events")
        assert stranger.status_code == 403
        assert (await ana.client.get("/rooms/QQQQQQ/events")).status_code == 404
        bad = await ana.client.get(f"/rooms/{code}/events?after=-3")
        assert bad.status_code == 400 and "whole number" in bad.text
        assert bad.headers["content-security-policy"].startswith("default-src 'self'")
        assert (await ana.client.post(f"/rooms/{code}/events")).status_code == 405
        head = await ana.client.head(f"/rooms/{code}/events")
        assert head.status_code == 200
        assert head.headers["content-type"].startswith("text/event-stream")


async def test_two_members_see_messages_joins_and_leaves_in_order(server: Server) -> None:
    async with Person(server.url, "Ana") as ana, Person(server.url, "Bo") as bo:
        code = await ana.create_room()
        assert (await bo.join(code)).status_code == 303
        async with ana.stream(code) as ana_stream:
            await ana_stream.wait_entries(1)
            bo_stream = bo.stream(code)
            async with bo_stream:
                await ana_stream.wait_entries(2)
                await ana.say(code, "hi Bo")
                await bo.say(code, "hi Ana")
                await bo_stream.wait_for(lambda s: "hi Ana" in [e.text for e in s.entries])
            await ana_stream.wait_for(lambda s: s.entries[-1].kind == "leave")
            await ana_stream.wait_for(lambda s: s.presence[-1] == ["Ana"])
        seen = [(e.kind, e.author, e.text) for e in ana_stream.entries]
        assert seen == [
            ("join", "Ana", None),
            ("join", "Bo", None),
            ("message", "Ana", "hi Bo"),
            ("message", "Bo", "hi Ana"),
            ("leave", "Bo", None),
        ]
        assert ana_stream.ids == sorted(set(ana_stream.ids))
        assert [(e.kind, e.author) for e in bo_stream.entries][-2:] == [
            ("message", "Ana"),
            ("message", "Bo"),
        ]
        assert ["Ana", "Bo"] in ana_stream.presence and ana_stream.presence[-1] == ["Ana"]
        for entry in ana_stream.entries:
            assert entry.time.endswith("Z") and "T" in entry.time


async def test_events_carry_ids_presence_does_not_and_no_id_is_empty(server: Server) -> None:
    async with Person(server.url, "Ana") as ana:
        code = await ana.create_room()
        async with ana.stream(code) as stream:
            await ana.say(code, "one")
            await stream.wait_entries(2)
        for event in stream.events:
            if event.entry is not None:
                assert event.id == str(event.entry["id"]).removeprefix("entry-")
            else:
                assert event.id is None
                assert event.html.select_one("#members[hx-swap-oob]") is not None
        assert not [line for line in stream.raw_lines if line.strip() in ("id:", "id")]


async def test_resume_replays_exactly_the_missed_entries(server: Server) -> None:
    async with Person(server.url, "Ana") as ana, Person(server.url, "Bo") as bo:
        code = await ana.create_room()
        await bo.join(code)
        async with bo.stream(code) as first:
            await bo.say(code, "before")
            await first.wait_for(lambda s: "before" in [e.text for e in s.entries])
        cursor = first.ids[-1]
        missed = [f"missed {i}" for i in range(5)]
        for text in missed:
            await ana.say(code, text)
        # Last-Event-ID wins over a stale ?after= in the URL, as htmx reconnects.
        async with bo.stream(code, after=0, last_event_id=cursor) as again:
            await again.wait_for(lambda s: "missed 4" in [e.text for e in s.entries])
            await ana.say(code, "live")
            await again.wait_for(lambda s: "live" in [e.text for e in s.entries])
        texts = [e.text for e in again.entries if e.kind == "message"]
        assert texts == [*missed, "live"]
        assert all(i > cursor for i in again.ids)
        assert again.ids == sorted(set(again.ids))

        # ?after= alone works the same way; a cursor beyond the database is clamped.
        async with bo.stream(code, after=cursor) as by_query:
            await by_query.wait_for(lambda s: "live" in [e.text for e in s.entries])
        assert [e.text for e in by_query.entries if e.kind == "message"] == [*missed, "live"]
        async with bo.stream(code, after=10**9) as beyond:
            await anyio.sleep(0.2)
            await ana.say(code, "after a reset")
            await beyond.wait_for(lambda s: "after a reset" in [e.text for e in s.entries])


async def test_heartbeats_and_the_stream_ends_itself(make_server: ServerFactory) -> None:
    server = make_server(heartbeat_seconds=0.2, stream_max_seconds=1.5)
    async with Person(server.url, "Ana") as ana:
        code = await ana.create_room()
        stream = ana.stream(code)
        async with stream:
            await stream.wait_for(lambda s: s.comments.count("heartbeat") >= 3)
            await stream.wait_end(timeout=5)
        assert stream.error is None
        assert stream.ended


async def test_streams_opened_together_do_not_beat_together(make_server: ServerFactory) -> None:
    """A crowd's streams opened in the same moment: each still gets a heartbeat within
    the heartbeat of its last write, but not all in the same instant (a heartbeat a
    quarter of a second apart or more; in step, 10,000 streams stalled the process for
    some 60 ms at every beat)."""
    beat = 1.0
    server = make_server(heartbeat_seconds=beat, limits="off")  # 30 streams, one member
    async with Person(server.url, "Ana") as ana:
        code = await ana.create_room()
        cookie = cookie_header(ana)
        opened = [
            await open_bare_stream(server.url, f"/rooms/{code}/events", cookie) for _ in range(30)
        ]
        gaps: list[list[float]] = [[] for _ in opened]

        async def read(n: int, sock: SocketStream, last: float) -> None:
            data = b""
            while len(gaps[n]) < 2:
                data += await sock.receive()
                while b": heartbeat\n\n" in data:
                    _, _, data = data.partition(b": heartbeat\n\n")
                    now = time.monotonic()
                    gaps[n].append(now - last)
                    last = now

        try:
            with anyio.fail_after(10):
                async with anyio.create_task_group() as tg:
                    for n, (sock, _) in enumerate(opened):
                        tg.start_soon(read, n, sock, time.monotonic())
        finally:
            for sock, _ in opened:
                await sock.aclose()
    assert all(gap <= beat + 0.1 for each in gaps for gap in each), gaps
    firsts = [each[0] for each in gaps]
    assert max(firsts) - min(firsts) >= 0.25, firsts


async def test_closed_streams_free_their_connections_before_their_next_heartbeat(
    make_server: ServerFactory,
) -> None:
    """A parked stream's heartbeat alarm (up to a heartbeat away) holds its
    subscription until it rings. What the stream wrote through (uvicorn's request,
    transport and the writer) must not be held with it: a crowd that drops and comes
    back would otherwise hold the old connections' memory beside the new ones'.
    Measured as the server's resident size: 2,000 streams open, close, open again."""
    server = make_server(limits="off", presence_grace_seconds="0.5", heartbeat_seconds="120")

    def resident() -> int:
        return int(health_detail(server.url)["garbage_collector"]["resident_bytes"])

    async with Person(server.url, "Ana") as ana:
        code = await ana.create_room()
        cookie = cookie_header(ana)
        start = resident()
        opened: list[int] = []
        for _ in range(3):  # the alarms ring 60 to 119.5 s from now: none in this test
            socks = [
                (await open_bare_stream(server.url, f"/rooms/{code}/events", cookie))[0]
                for _ in range(2000)
            ]
            opened.append(resident())
            for sock in socks:
                await sock.aclose()
            await anyio.sleep(1)
    first = opened[0] - start  # about 24 MB
    # Held until their alarms, each round's closed streams kept about 10 MB more.
    assert opened[2] - opened[0] < 0.3 * first, [round(n / 1e6, 1) for n in [start, *opened]]


async def test_twenty_posters_times_ten_all_arrive_once_in_order(server: Server) -> None:
    people = [Person(server.url, f"Poster {i}") for i in range(20)]
    async with Person(server.url, "Reader") as reader:
        code = await reader.create_room()
        for person in people:
            assert (await person.join(code)).status_code == 303
        async with reader.stream(code) as stream:
            await stream.wait_entries(1)

            async def post_all(person: Person) -> None:
                for n in range(10):
                    response = await person.say(code, f"{person.name} #{n}")
                    assert response.status_code == 200

            async with anyio.create_task_group() as tg:
                for person in people:
                    tg.start_soon(post_all, person)
            await stream.wait_for(
                lambda s: len([e for e in s.entries if e.kind == "message"]) >= 200
            )
            await anyio.sleep(0.3)
        for person in people:
            await person.client.aclose()
        messages = [e for e in stream.entries if e.kind == "message"]
        assert len(messages) == 200
        assert len({e.text for e in messages}) == 200
        assert stream.ids == sorted(set(stream.ids))
        for person in people:
            theirs = [e.text for e in messages if e.author == person.name]
            assert theirs == [f"{person.name} #{n}" for n in range(10)]
        stored = await reader.client.get(f"/rooms/{code}/messages?before={messages[-1].id + 1}")
        assert stored.status_code == 200


async def test_history_survives_a_restart_and_streams_resume(server: Server) -> None:
    async with Person(server.url, "Ana") as ana:
        code = await ana.create_room()
        await ana.say(code, "before the restart")
        server.restart()
        page = await ana.page(code)
        assert page.status_code == 200
        assert "before the restart" in page.text
        await ana.say(code, "after the restart")
        async with ana.stream(code, after=0) as stream:
            await stream.wait_for(lambda s: "after the restart" in [e.text for e in s.entries])
        assert [e.text for e in stream.entries if e.kind == "message"] == [
            "before the restart",
            "after the restart",
        ]


async def test_sigterm_ends_open_streams_cleanly(server: Server) -> None:
    async with Person(server.url, "Ana") as ana:
        code = await ana.create_room()
        async with contextlib.AsyncExitStack() as stack:
            streams = [await stack.enter_async_context(ana.stream(code)) for _ in range(5)]
            for stream in streams:
                await stream.wait_for(lambda s: len(s.events) >= 1)
            took = await anyio.to_thread.run_sync(server.stop)
            for stream in streams:
                await stream.wait_end()
                assert stream.error is None, stream.error
        # uvicorn finishes its graceful shutdown, then re-raises the signal it caught.
        assert server.exit_code in (0, -signal.SIGTERM)
        assert "Finished server process" in server.log()
        assert took < 8
        assert "ASGI callable returned without completing response" not in server.log()


async def test_events_reach_a_parked_stream_by_direct_writes(server: Server) -> None:
    """A live stream waiting for events is written to by whoever publishes (one pass
    per event, no task woken per stream; web/direct.py). This fails loudly if a
    server upgrade makes uvicorn's `send` wait every time: the fallback would still
    deliver, only slower."""

    def counts() -> dict[str, int]:
        broker = httpx.get(server.url + "/healthz/detail", timeout=5).json()["broker"]
        return {k: int(broker[k]) for k in ("direct_writes", "chunks_written", "finished_by_task")}

    async with Person(server.url, "Ana") as ana:
        code = await ana.create_room()
        async with ana.stream(code, after=0) as stream:
            await stream.wait_for(lambda s: any(e.kind == "join" for e in s.entries))
            await anyio.sleep(0.3)  # parked
            before = counts()
            for n in range(5):
                await ana.say(code, f"direct {n}")
                await stream.wait_text(f"direct {n}")
            after = counts()
        assert after["direct_writes"] - before["direct_writes"] >= 5
        # Under uvicorn's httptools protocol each is a ready chunk, written as is.
        assert after["chunks_written"] - before["chunks_written"] >= 5
        assert after["finished_by_task"] == before["finished_by_task"]
        assert [e.text for e in stream.entries if e.kind == "message"] == [
            f"direct {n}" for n in range(5)
        ]


async def test_the_stream_sends_the_headers_sse_starlette_would() -> None:
    """The stream builds its headers once instead of through sse-starlette's
    EventSourceResponse for every stream (web/stream.py): they must stay the ones
    the library gives, so an upgrade that changes them fails here."""
    from sse_starlette import EventSourceResponse

    from web.sse import STREAM_HEADERS, STREAM_RAW_HEADERS

    async def nothing() -> AsyncIterator[bytes]:
        yield b""

    library = EventSourceResponse(nothing(), headers=STREAM_HEADERS, ping=0, sep="\n")
    assert library.raw_headers == STREAM_RAW_HEADERS


def test_uvicorn_still_has_what_direct_chunk_writes_rely_on() -> None:
    """web.direct.ChunkWriter writes chunks to uvicorn's transport itself: an upgrade
    that renamed what it reads would silently send every event the slow way (or
    worse). This names all of it."""
    import inspect

    from uvicorn.protocols.http.httptools_impl import RequestResponseCycle

    from web.direct import _UVICORN_CYCLE

    assert (RequestResponseCycle.__module__, RequestResponseCycle.__qualname__) == _UVICORN_CYCLE
    source = inspect.getsource(RequestResponseCycle)
    for name in (
        "self.transport",
        "self.flow",
        "self.disconnected",
        "self.response_complete",
        "self.on_response",  # DisconnectWatch finds the protocol through it
    ):
        assert name in source, name
    # The chunk framing it copies: size in hex, CRLF, the body, CRLF.
    assert 'b"%x\\r\\n" % len(body)' in source or "b'%x\\r\\n' % len(body)" in source
    assert "self.chunked_encoding" in source and "write_paused" in source

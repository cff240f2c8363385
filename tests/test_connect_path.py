"""A stream whose cursor is the room's newest entry connects without the database.

The room page puts its newest entry's id into the stream's URL, and a reconnect
sends the last id it got: in both cases there is nothing to replay, and the
memory broker knows the room's newest entry (every entry is published there after
it commits). The server counts its database round trips (`/healthz/detail`).
"""

from __future__ import annotations

import re
import time

import anyio
import pytest

from tests.client import Person, cookie_header, health_detail, open_bare_stream
from tests.conftest import Server

pytestmark = pytest.mark.anyio


def database_calls(server: Server) -> int:
    return int(health_detail(server.url)["database_calls"])


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


async def raw_stream_start(server: Server, path: str, cookie: str) -> bytes:
    """The first bytes of a stream read off the socket: the head and the first chunk."""
    sock, data = await open_bare_stream(server.url, path, cookie)
    await sock.aclose()
    return data


async def test_a_stream_starts_with_its_head_and_first_event_in_one_write(
    server: Server,
) -> None:
    """Under uvicorn the head goes out with the first chunk (web/direct.py): the same
    bytes uvicorn's own `send` writes (it makes them once a second), its access log
    line included, and chunked like the rest of the stream."""

    def heads_written() -> int:
        return int(health_detail(server.url)["broker"]["heads_written"])

    async with Person(server.url, "Ana") as ana:
        code = await ana.create_room()
        cookie = cookie_header(ana)
        before = heads_written()
        starts = [await raw_stream_start(server, f"/rooms/{code}/events", cookie) for _ in range(3)]
        assert heads_written() - before == 3
    heads = []
    for start in starts:
        head, _, body = start.partition(b"\r\n\r\n")
        lines = head.split(b"\r\n")
        assert lines[0] == b"HTTP/1.1 200 OK"
        fields = dict(line.split(b": ", 1) for line in lines[1:])
        assert fields[b"content-type"] == b"text/event-stream; charset=utf-8"
        assert fields[b"transfer-encoding"] == b"chunked"
        assert fields[b"server"] == b"uvicorn" and b"date" in fields
        assert b"content-security-policy" in fields and b"x-accel-buffering" in fields
        heads.append([line for line in lines if not line.startswith(b"date: ")])
        size, _, chunk = body.partition(b"\r\n")
        first = chunk[: int(size, 16)]
        assert first.startswith(b": sala room ") and first.endswith(b"</details>\n\n")
        assert chunk[len(first) : len(first) + 2] == b"\r\n"
    assert heads[0] == heads[1] == heads[2]  # the ones made by uvicorn and the reused
    log = server.log()
    assert log.count(f'"GET /rooms/{code}/events HTTP/1.1" 200') >= 3


def test_the_gate_reads_sessions_as_starlette_signs_and_parses_them() -> None:
    """The gate checks the session's signature with its own signer (the key derived
    once, HMAC in C) and finds the cookie without Starlette's request: both must
    agree with what Starlette's SessionMiddleware and Request.cookies do."""
    import itsdangerous
    from starlette.requests import cookie_parser

    from web.gate import _cookie, _Signer

    signed = itsdangerous.TimestampSigner("a secret").sign(b"eyJ4IjogMX0=")
    assert _Signer("a secret").unsign(signed, max_age=60) == b"eyJ4IjogMX0="
    assert _Signer("a secret").sign(b"v").split(b".")[0] == b"v"
    assert itsdangerous.TimestampSigner("a secret").unsign(_Signer("a secret").sign(b"v")) == b"v"
    value, timestamp, signature = signed.split(b".")
    flipped = signature[:5] + (b"A" if signature[5:6] != b"A" else b"B") + signature[6:]
    # (Not the signature's last character: base64 may carry only padding bits there.)
    for wrong in (b".".join([value, timestamp, flipped]), b"x" + signed):
        with pytest.raises(itsdangerous.BadSignature):
            _Signer("a secret").unsign(wrong, max_age=60)
    with pytest.raises(itsdangerous.BadSignature):
        _Signer("another secret").unsign(signed, max_age=60)

    # The gate's own check against itsdangerous's unsign, input by input.
    now = int(time.time())

    class At(itsdangerous.TimestampSigner):
        def __init__(self, when: int) -> None:
            super().__init__("a secret")
            self.when = when

        def get_timestamp(self) -> int:
            return self.when

    plain = itsdangerous.Signer("a secret")  # the same key, no timestamp
    cases = [
        signed,
        At(now - 60).sign(b"just in time"),
        At(now - 61).sign(b"expired"),
        At(now + 30).sign(b"from the future"),
        plain.sign(b"no timestamp"),
        plain.sign(b"payload.!!not-base64!!"),
        plain.sign(b"payload."),
        b".".join([value, timestamp, flipped]),
        b".".join([value + b"x", timestamp, signature]),
        value + b"." + timestamp + b".***",
        b"no dots",
        b"..",
        b"",
        signed + b"=",
    ]
    for case in cases:
        try:
            expected: bytes | None = itsdangerous.TimestampSigner("a secret").unsign(
                case, max_age=60
            )
        except itsdangerous.BadSignature:
            expected = None
        except ValueError:  # a signed timestamp past year 9999: itsdangerous fails to
            expected = None  # make the date for its error; refused either way
        assert _Signer("a secret").check(case, 60) == expected, case
    assert _Signer("a secret").check(At(now - 60).sign(b"x"), 60) == b"x"

    for header in (
        "session=abc",
        "a=1; session=abc; b=2",
        "session=first; session=second",
        'session="quoted\\"value"',
        " session = spaced ;x",
        "nosuchpair; session=abc",
        "sessionx=1; xsession=2",
        "session=",
        "=session; session",
        "",
    ):
        scope = {"headers": [(b"cookie", header.encode("latin-1"))]}
        assert _cookie(scope, "session") == cookie_parser(header).get("session"), header
    assert _cookie({"headers": []}, "session") is None

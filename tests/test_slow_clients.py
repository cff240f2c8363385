"""Slow clients: a request head must arrive in full within the header timeout."""

from __future__ import annotations

import asyncio
import itertools
import re
import threading
import time
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager

import anyio
import httpx
import pytest
import uvicorn
from anyio.abc import SocketStream
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.server import ServerState

from tests.conftest import Server, ServerFactory, free_port
from web import server as web_server
from web.direct import DisconnectWatch

pytestmark = pytest.mark.anyio

HEADER_TIMEOUT = 1.0
# How late a close may come: timers, a busy test machine.
MARGIN = 1.5
# The server started in a thread, for a response longer than the timeout.
_THREAD_TIMEOUT = 0.5
_HEAD = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n"
_GONE = (anyio.EndOfStream, anyio.BrokenResourceError, anyio.ClosedResourceError, OSError)


@pytest.fixture
def slow_server(make_server: ServerFactory) -> Server:
    return make_server(header_timeout_seconds=str(HEADER_TIMEOUT))


async def _until_closed(port: int, head: bytes, *, every: float) -> tuple[float, bytes]:
    """Sends `head` then a header value one byte per `every` seconds, for ever; returns
    how long the server took to close the connection and what it sent."""
    received = bytearray()
    async with await anyio.connect_tcp("127.0.0.1", port) as conn:
        started = time.monotonic()
        with anyio.fail_after(HEADER_TIMEOUT + MARGIN + 5):
            async with anyio.create_task_group() as tg:

                async def dribble() -> None:
                    try:
                        for byte in itertools.chain(head, b"X-Slow: ", itertools.repeat(ord("a"))):
                            await conn.send(bytes([byte]))
                            await anyio.sleep(every)
                    except _GONE:
                        pass

                if head:
                    tg.start_soon(dribble)
                try:
                    while True:
                        received += await conn.receive()
                except _GONE:
                    pass
                elapsed = time.monotonic() - started
                tg.cancel_scope.cancel()
    return elapsed, bytes(received)


def _assert_cut_at_the_timeout(elapsed: float, received: bytes, *, answer: bytes) -> None:
    assert HEADER_TIMEOUT - 0.1 <= elapsed <= HEADER_TIMEOUT + MARGIN, elapsed
    # The 408 may be lost to a reset when the client is still sending as the server closes.
    assert received in (b"", answer) or received.startswith(answer), received


class _Connection:
    """One keep-alive connection that reads Content-Length responses."""

    def __init__(self, conn: SocketStream) -> None:
        self.conn = conn
        self.buffer = b""

    async def dribble(self, data: bytes, *, over: float, pieces: int = 6) -> None:
        """Sends `data` in `pieces` spread over `over` seconds (paced by the clock, so
        a busy machine's late wake-ups do not add up)."""
        started = time.monotonic()
        size = -(-len(data) // pieces)
        for n in range(pieces):
            await anyio.sleep(max(0.0, started + over * n / pieces - time.monotonic()))
            await self.conn.send(data[n * size : (n + 1) * size])

    async def response(self) -> tuple[int, bytes]:
        while b"\r\n\r\n" not in self.buffer:
            self.buffer += await self.conn.receive()
        head, self.buffer = self.buffer.split(b"\r\n\r\n", 1)
        lines = head.decode("latin-1").split("\r\n")
        headers = [line.lower().partition(": ") for line in lines[1:]]
        length = int(next(value for name, _, value in headers if name == "content-length"))
        while len(self.buffer) < length:
            self.buffer += await self.conn.receive()
        body, self.buffer = self.buffer[:length], self.buffer[length:]
        return int(lines[0].split()[1]), body

    async def closed_after(self) -> float:
        started = time.monotonic()
        try:
            while data := await self.conn.receive():
                self.buffer += data
        except _GONE:
            pass
        return time.monotonic() - started


async def test_a_head_dribbled_byte_by_byte_is_cut_off_at_the_header_timeout(
    slow_server: Server,
) -> None:
    """Bug: uvicorn's only timer is cancelled by every byte received, so clients sending a
    header byte every few seconds held their connections for ever (slowloris).
    Fix: web.server gives each request head a deadline, then answers 408 and closes."""
    results: list[tuple[float, bytes]] = []

    async def slow_client() -> None:
        results.append(await _until_closed(slow_server.port, _HEAD, every=0.1))

    async with anyio.create_task_group() as tg:
        for _ in range(3):
            tg.start_soon(slow_client)
        await anyio.sleep(HEADER_TIMEOUT / 2)
        # Meanwhile everybody else is served as usual.
        async with httpx.AsyncClient() as client:
            assert (await client.get(slow_server.url + "/healthz")).status_code == 200
    assert len(results) == 3
    for elapsed, received in results:
        _assert_cut_at_the_timeout(elapsed, received, answer=b"HTTP/1.1 408 ")


async def test_a_connection_that_never_sends_a_byte_is_closed(slow_server: Server) -> None:
    """Bug: uvicorn arms no timer before a first response, so a connection that sent
    nothing stayed open for ever.
    Fix: the head deadline runs from the moment the connection opens; with no request
    begun there is nothing to answer, so the server just closes."""
    elapsed, received = await _until_closed(slow_server.port, b"", every=0.1)
    _assert_cut_at_the_timeout(elapsed, received, answer=b"")


async def test_slow_but_complete_heads_and_keep_alive_requests_are_served(
    slow_server: Server,
) -> None:
    """Bug (guarded against): a deadline counted from the connection's opening would cut a
    keep-alive connection after its first few requests.
    Fix: the deadline starts again when each response ends."""
    request = _HEAD + b"\r\n"
    async with await anyio.connect_tcp("127.0.0.1", slow_server.port) as conn:
        with anyio.fail_after(HEADER_TIMEOUT * 3 + MARGIN + 5):
            connection = _Connection(conn)
            # Slow, but each head is complete within the timeout...
            await connection.dribble(request, over=HEADER_TIMEOUT * 0.6)
            assert (await connection.response())[0] == 200
            await anyio.sleep(HEADER_TIMEOUT * 0.3)
            await connection.dribble(request, over=HEADER_TIMEOUT * 0.6)
            assert (await connection.response())[0] == 200
            # ...while the connection as a whole is older than the timeout.
            await conn.send(request)
            assert (await connection.response())[0] == 200
            # Idle after a response: closed at the timeout, without an answer.
            elapsed = await connection.closed_after()
    _assert_cut_at_the_timeout(elapsed, connection.buffer, answer=b"")


async def _stream_app(scope: Scope, receive: Receive, send: Send) -> None:
    """`/stream` takes three header timeouts, in the spirit of a room's stream; the rest
    answers at once."""
    assert scope["type"] == "http"
    chunks = [b"tick\n"] * 15 if scope["path"] == "/stream" else [b"ok\n"]
    if scope["path"].startswith("/echo/"):
        chunks = [scope["path"].encode()]
    start: Message = {
        "type": "http.response.start",
        "status": 200,
        "headers": [(b"content-length", str(sum(map(len, chunks))).encode())],
    }
    await send(start)
    for chunk in chunks:
        if len(chunks) > 1:
            await asyncio.sleep(_THREAD_TIMEOUT * 3 / len(chunks))
        await send({"type": "http.response.body", "body": chunk, "more_body": True})
    await send({"type": "http.response.body", "body": b""})


@contextmanager
def _serving_in_a_thread(loop: str, app: ASGIApp = _stream_app) -> Iterator[int]:
    port = free_port()
    config = web_server.config(
        app,
        host="127.0.0.1",
        port=port,
        log_level="warning",
        header_timeout=_THREAD_TIMEOUT,
    )
    config.loop = loop
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "server did not start"
        time.sleep(0.01)
    try:
        yield port
    finally:
        server.should_exit = True
        thread.join(10)


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
async def test_a_long_response_is_not_cut_by_the_header_timer(loop: str) -> None:
    """Bug (guarded against): a head deadline still running while the response streams
    would cut every room's event stream after a few seconds.
    Fix: the deadline is cancelled when the head is complete and armed again only when
    the response has ended."""
    with _serving_in_a_thread(loop) as port:
        async with await anyio.connect_tcp("127.0.0.1", port) as conn:
            with anyio.fail_after(_THREAD_TIMEOUT * 3 + MARGIN + 5):
                connection = _Connection(conn)
                await conn.send(b"GET /stream HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
                assert await connection.response() == (200, b"tick\n" * 15)
                # The connection is still good for another request, within the deadline.
                await conn.send(_HEAD + b"\r\n")
                assert await connection.response() == (200, b"ok\n")


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
async def test_requests_pipelined_behind_a_stream_are_answered_in_order(loop: str) -> None:
    """The protocol keeps pipelined requests in a list, not uvicorn's deque, and its
    events wait with lists (web/server.py): still first in, first out, every one
    answered once the stream before them ends."""
    with _serving_in_a_thread(loop) as port:
        async with await anyio.connect_tcp("127.0.0.1", port) as conn:
            with anyio.fail_after(_THREAD_TIMEOUT * 3 + MARGIN + 5):
                connection = _Connection(conn)
                heads = [
                    f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode()
                    for path in ("/stream", "/echo/1", "/echo/2", "/echo/3")
                ]
                await conn.send(b"".join(heads))
                assert await connection.response() == (200, b"tick\n" * 15)
                for n in (1, 2, 3):
                    assert await connection.response() == (200, f"/echo/{n}".encode())


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
async def test_a_streams_client_going_away_is_told_by_the_protocol(loop: str) -> None:
    """A stream learns that its client went from the protocol's connection_lost, with
    no receive waiting (web/direct.py DisconnectWatch; memory per stream). If an
    uvicorn upgrade broke how it finds the protocol, the watch would fall back to
    receive: this test fails then."""
    seen: list[str] = []
    gone = threading.Event()

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        assert scope["type"] == "http"  # (no lifespan)
        watch = DisconnectWatch(receive, lambda: gone.set())
        seen.append("protocol" if watch._protocol is not None else "receive")
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"open\n", "more_body": True})
        while not gone.is_set():
            await asyncio.sleep(0.01)
        watch.stop()

    with _serving_in_a_thread(loop, app) as port:
        async with await anyio.connect_tcp("127.0.0.1", port) as conn:
            await conn.send(b"GET /events HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            received = b""
            while b"open" not in received:
                received += await conn.receive()
        assert await anyio.to_thread.run_sync(gone.wait, 5)
    assert seen == ["protocol"]


def test_a_connection_waits_with_lists_not_deques() -> None:
    """uvicorn's deques cost 760 bytes each, empty, three per connection (bench/memory.py);
    the protocol swaps them for lists, and an event waiting on a list still works."""
    config = web_server.config(
        _stream_app, host="127.0.0.1", port=0, log_level="warning", header_timeout=3.0
    )
    config.load()
    loop = asyncio.new_event_loop()
    try:
        protocol = web_server.protocol_with(3.0)(
            config=config, server_state=ServerState(), app_state={}, _loop=loop
        )
        assert isinstance(protocol.pipeline, web_server._Pipeline)
        event = asyncio.Event()
        web_server._lighten(event)
        assert not isinstance(event._waiters, deque)

        async def wait_then_set() -> bool:
            waiting = asyncio.ensure_future(event.wait())
            await asyncio.sleep(0)
            assert len(event._waiters) == 1
            event.set()
            return await waiting

        assert loop.run_until_complete(wait_then_set()) is True
        assert not isinstance(event._waiters, deque)
    finally:
        loop.close()


def test_uvicorn_still_has_what_the_head_timer_relies_on() -> None:
    """Bug (guarded against): web.server overrides uvicorn's protocol callbacks; an
    upgrade that renamed one would silently switch the head deadline off.
    Fix: this test names everything web.server relies on."""
    for name in (
        "connection_made",
        "connection_lost",
        "on_message_begin",
        "on_headers_complete",
        "on_response_complete",
    ):
        assert callable(getattr(HttpToolsProtocol, name)), name
    config = web_server.config(
        _stream_app, host="127.0.0.1", port=0, log_level="warning", header_timeout=3.0
    )
    config.load()
    assert issubclass(config.http_protocol_class, web_server.HeadTimeoutProtocol)
    loop = asyncio.new_event_loop()
    try:
        protocol = config.http_protocol_class(
            config=config, server_state=ServerState(), app_state={}, _loop=loop
        )
    finally:
        loop.close()
    assert isinstance(protocol, web_server.HeadTimeoutProtocol)
    assert protocol.header_timeout == 3.0
    for attribute in ("loop", "transport", "cycle", "pipeline", "server_state"):
        assert hasattr(protocol, attribute), attribute


@pytest.mark.parametrize("loop_factory", ["uvloop", "asyncio"])
def test_a_connection_is_made_as_uvicorn_makes_it(loop_factory: str) -> None:
    """web.server's connection_made is uvicorn's, but for where it reads the
    addresses (the transport's, not a socket object made for the purpose): the
    protocol must come out the same, on both event loops. An upgrade that changes
    uvicorn's fails here too."""
    import inspect

    import uvloop

    body = inspect.getsource(HttpToolsProtocol.connection_made)
    for line in (
        "self.connections.add(self)",
        "self.transport = transport",
        "self.flow = FlowControl(transport)",
        "self.server = get_local_addr(transport)",
        "self.client = get_remote_addr(transport)",
        'self.scheme = "https" if is_ssl(transport) else "http"',
        "if self.logger.level <= TRACE_LOG_LEVEL:",
    ):
        assert line in body, line
    # Nothing set that the copy leaves out.
    assert re.findall(r"self\.(\w+) = ", body) == [
        "transport",
        "flow",
        "server",
        "client",
        "scheme",
    ]

    config = web_server.config(
        _stream_app, host="127.0.0.1", port=0, log_level="warning", header_timeout=3.0
    )
    config.load()
    loop = uvloop.new_event_loop() if loop_factory == "uvloop" else asyncio.new_event_loop()

    async def made() -> None:
        transports: list[asyncio.Transport] = []

        class Accept(asyncio.Protocol):
            def connection_made(self, transport: asyncio.BaseTransport) -> None:
                transports.append(transport)  # type: ignore[arg-type]

        server = await loop.create_server(Accept, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        _, writer = await asyncio.open_connection("127.0.0.1", port)
        while not transports:
            await asyncio.sleep(0.01)
        ours = web_server.protocol_with(3.0)(
            config=config, server_state=ServerState(), app_state={}, _loop=loop
        )
        theirs = HttpToolsProtocol(
            config=config, server_state=ServerState(), app_state={}, _loop=loop
        )
        ours.connection_made(transports[0])
        HttpToolsProtocol.connection_made(theirs, transports[0])
        assert (ours.server, ours.client, ours.scheme) == (
            theirs.server,
            theirs.client,
            theirs.scheme,
        )
        assert ours.client == writer.get_extra_info("sockname")
        assert ours.transport is transports[0] and ours in ours.connections
        assert type(ours.flow) is type(theirs.flow)
        ours._cancel_head_timer()
        writer.close()
        server.close()

    try:
        loop.run_until_complete(made())
    finally:
        loop.close()

"""A stream's send and receive, driven by hand instead of by a task of the stream's own.

At thousands of streams the cost that matters is per stream and per delivery. Two
things here save a task switch per delivered event and a task per stream:

- `write_now`: whoever publishes an event writes it to a parked stream at once, by
  starting the server's `send` coroutine and running it to its end. uvicorn's
  `send` only waits when the client's socket buffer is full; then the rest of the
  write (`Rest`) goes to the stream's own task, which finishes it before anything
  else, so order holds.
- `DisconnectWatch`: the client going away is seen through the request's own
  `receive`, started by hand and resumed by a callback on the future it waits on,
  instead of by a second task per stream (under Sala's uvicorn protocol, by a
  callback from the protocol itself).

Both work with any ASGI server: when `send` or `receive` is not a plain coroutine
waiting on asyncio futures (Granian's are native), they fall back to awaiting it
in a task, as before. tests/test_servers.py runs Sala under uvicorn, Hypercorn and
Granian.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Coroutine, Generator
from types import CoroutineType
from typing import Any, Generic, TypeVar

from starlette.types import Message, Receive, Scope, Send
from uvicorn.protocols.utils import get_client_addr, get_path_with_query_string

from web.server import HeadTimeoutProtocol

T = TypeVar("T")


class Counts:
    """How events reached parked streams, for /healthz/detail. Counted on a slotted
    instance: a class attribute set on every delivery would invalidate the class's
    attribute cache each time, and slow every other lookup on it."""

    __slots__ = ("chunks_written", "direct_writes", "finished_by_task", "heads_written")

    def __init__(self) -> None:
        self.direct_writes = 0  # events written by their publisher straight to a stream
        self.chunks_written = 0  # of which as ready chunks to uvicorn's transport
        self.finished_by_task = 0  # of which the stream's task had to finish (buffer full)
        self.heads_written = 0  # streams whose head went out with their first chunk


COUNTS = Counts()


class ChunkWriter:
    """Writes ready HTTP/1.1 chunks straight to the connection of a response that uvicorn's
    httptools protocol is streaming, chunked: the same bytes its `send` would write,
    without its per-call checks, one `transport.write` per stream, the chunk made once
    per event and language. Anything unusual (the client is slow, gone, or the response
    is not a plain chunked one) returns False, and the caller goes through `send`.

    It reads uvicorn's `RequestResponseCycle` (private: `transport`, `flow`,
    `disconnected`, `response_complete`, `chunked_encoding`); tests/test_stream.py
    fails when an upgrade changes what this relies on.
    """

    __slots__ = ("_cycle", "_flow", "_transport")

    def __init__(self, cycle: Any) -> None:
        self._cycle = cycle
        self._flow = cycle.flow
        self._transport = cycle.transport

    @classmethod
    def for_send(cls, send: Send) -> ChunkWriter | None:
        cycle = _uvicorn_cycle(send)
        if cycle is None:
            return None  # another server, or uvicorn's h11 protocol: its state machine
        if getattr(cycle, "chunked_encoding", None) is not True:
            return None
        return cls(cycle)

    def write(self, chunk: bytes) -> bool:
        cycle = self._cycle
        if self._flow.write_paused or cycle.disconnected or cycle.response_complete:
            return False
        self._transport.write(chunk)
        COUNTS.chunks_written += 1
        return True


_UVICORN_CYCLE = ("uvicorn.protocols.http.httptools_impl", "RequestResponseCycle")


def _uvicorn_cycle(bound: Send | Receive) -> Any:
    """The httptools protocol's request cycle that `send` or `receive` is a method of,
    or None (another server, uvicorn's h11 protocol)."""
    cycle = getattr(bound, "__self__", None)
    kind = type(cycle)
    return cycle if (kind.__module__, kind.__qualname__) == _UVICORN_CYCLE else None


_CLOSE = (b"connection", b"close")


class _Collected:
    """Stands in for a transport while uvicorn's `send` writes a response head."""

    __slots__ = ("data",)

    def __init__(self) -> None:
        self.data = b""

    def write(self, data: bytes) -> None:
        self.data += data


# The last head made: (uvicorn's default headers, the stream's headers, the bytes).
# uvicorn renews its default headers once a second (`date`), so this is made again
# about once a second, by uvicorn's own `send`.
_last_head: tuple[object, object, bytes] | None = None


def write_head_with(
    send: Send, scope: Scope, headers: list[tuple[bytes, bytes]], chunk: bytes
) -> bool:
    """Start a 200 chunked response with `headers` and its first chunk in one write to the
    connection, under uvicorn's httptools protocol: one socket write, not two, for every
    stream opened, and the head's bytes (uvicorn's own, header checks included) made
    once a second rather than per stream; the access log gets uvicorn's line. False,
    having done nothing, wherever that protocol's `send` would do more (another
    server, the h11 protocol, a connection to be closed, a client already slow or
    gone): the caller then sends the head through `send`."""
    global _last_head
    cycle = _uvicorn_cycle(send)
    if (
        cycle is None
        or cycle.response_started
        or cycle.disconnected
        or cycle.flow.write_paused
        or not cycle.keep_alive
        or scope["method"] != "GET"
        or _CLOSE in scope["headers"]
    ):
        return False
    last = _last_head
    if last is not None and last[0] is cycle.default_headers and last[1] is headers:
        # As uvicorn's send logs a response it starts (its arguments only made when
        # the line is written).
        if cycle.access_log and cycle.access_logger.isEnabledFor(logging.INFO):
            own = cycle.scope
            cycle.access_logger.info(
                '%s - "%s %s HTTP/%s" %d',
                get_client_addr(own),
                own["method"],
                get_path_with_query_string(own),
                own["http_version"],
                200,
            )
        head = last[2]
        cycle.response_started = True
        cycle.waiting_for_100_continue = False
        cycle.chunked_encoding = True
    else:
        head = _uvicorn_head(cycle, headers)
        if cycle.chunked_encoding is not True:  # not for a stream's headers
            raise RuntimeError("a stream's response must be chunked")
        _last_head = (cycle.default_headers, headers, head)
    cycle.transport.write(b"%b%x\r\n%b\r\n" % (head, len(chunk), chunk))
    COUNTS.heads_written += 1
    return True


def _uvicorn_head(cycle: Any, headers: list[tuple[bytes, bytes]]) -> bytes:
    """The head uvicorn's `send` writes for this response, collected instead of written;
    the cycle's state is set by that `send` itself."""
    transport, collected = cycle.transport, _Collected()
    cycle.transport = collected
    try:
        sending = cycle.send({"type": "http.response.start", "status": 200, "headers": headers})
        try:
            sending.send(None)
        except StopIteration:
            pass
        else:  # it waited: not when the client reads (checked by the caller)
            sending.close()
            raise RuntimeError("uvicorn's send waited while starting a response")
    finally:
        cycle.transport = transport
    return collected.data


def _streaming_protocol(receive: Receive) -> HeadTimeoutProtocol | None:
    """Sala's uvicorn protocol whose current request `receive` belongs to, if it is one
    and its client is still there."""
    cycle = _uvicorn_cycle(receive)
    if cycle is None or cycle.disconnected:
        return None
    protocol = getattr(cycle.on_response, "__self__", None)
    if isinstance(protocol, HeadTimeoutProtocol) and protocol.cycle is cycle:
        return protocol
    return None


def write_now(send: Send, frame: bytes) -> Awaitable[None] | None:
    """Send a body chunk now, from the caller's task: None when it was written, else
    what is left of the write, for the stream's task to await."""
    sending = send({"type": "http.response.body", "body": frame, "more_body": True})
    if type(sending) is not CoroutineType:  # (cheaper than an ABC check, once per delivery)
        return sending  # not a coroutine: awaited by the stream's task as it is
    try:
        waiting_on = sending.send(None)
    except StopIteration:
        return None
    return Rest(sending, waiting_on)


class Rest(Generic[T]):
    """The rest of a coroutine that was started by hand and is waiting on `waiting_on`:
    awaiting this in another task goes on exactly where it stopped."""

    __slots__ = ("_coroutine", "_waiting_on")

    def __init__(self, coroutine: Coroutine[Any, Any, T], waiting_on: Any) -> None:
        self._coroutine = coroutine
        self._waiting_on = waiting_on

    def __await__(self) -> Generator[Any, Any, T]:
        coroutine, value = self._coroutine, self._waiting_on
        while True:
            try:
                sent = yield value
            except BaseException as exc:  # cancelled while waiting: let it see that
                try:
                    value = coroutine.throw(exc)
                except StopIteration as done:
                    return done.value  # type: ignore[no-any-return]
            else:
                try:
                    value = coroutine.send(sent)
                except StopIteration as done:
                    return done.value  # type: ignore[no-any-return]

    def close(self) -> None:
        self._coroutine.close()


class DisconnectWatch:
    """Calls `on_gone` once when `receive` says the client disconnected.

    Under Sala's own uvicorn protocol (web/server.py) no receive waits at all: the
    protocol calls back when the connection is lost (a coroutine, a future and an
    event's wait less per stream). It reads uvicorn's `RequestResponseCycle`
    (`on_response`, `disconnected`); tests/test_stream.py names both.
    """

    __slots__ = ("_coroutine", "_on_gone", "_protocol", "_receive", "_task")

    def __init__(self, receive: Receive, on_gone: Callable[[], None]) -> None:
        self._receive = receive
        self._on_gone: Callable[[], None] | None = on_gone
        self._coroutine: Coroutine[Any, Any, Message] | None = None
        self._task: asyncio.Task[None] | None = None
        self._protocol = _streaming_protocol(receive)
        if self._protocol is not None:
            self._protocol.on_lost = self._gone
        else:
            self._listen()

    def stop(self) -> None:
        self._on_gone = None
        if self._protocol is not None:
            self._protocol.on_lost = None
        coroutine, self._coroutine = self._coroutine, None
        if coroutine is not None:
            coroutine.close()
        if self._task is not None:
            self._task.cancel()

    def _listen(self) -> None:
        receiving = self._receive()
        if type(receiving) is not CoroutineType:
            self._task = asyncio.ensure_future(self._in_a_task(receiving))
            return
        self._step(receiving)

    def _step(self, receiving: Coroutine[Any, Any, Message]) -> None:
        try:
            waiting_on = receiving.send(None)
        except StopIteration as done:
            self._got(done.value)
            return
        except Exception:
            self._gone()
            return
        if not isinstance(waiting_on, asyncio.Future):
            # It waits on something other than a future: let a task drive the rest.
            self._task = asyncio.ensure_future(self._in_a_task(Rest(receiving, waiting_on)))
            return
        self._coroutine = receiving
        waiting_on.add_done_callback(self._resume)

    def _resume(self, _future: asyncio.Future[Any]) -> None:
        receiving, self._coroutine = self._coroutine, None
        if receiving is not None:  # not stopped meanwhile
            self._step(receiving)

    async def _in_a_task(self, receiving: Awaitable[Any]) -> None:
        message = await receiving
        while message.get("type") != "http.disconnect":
            message = await self._receive()
        self._gone()

    def _got(self, message: Message) -> None:
        if message.get("type") == "http.disconnect":
            self._gone()
        elif self._on_gone is not None:
            self._listen()  # the request's body (a GET has none): listen on

    def _gone(self) -> None:
        on_gone, self._on_gone = self._on_gone, None
        if on_gone is not None:
            on_gone()

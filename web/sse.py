"""The stream's HTTP response: SSE headers built once, one task per stream, a watchdog.

web/stream.py decides what a room's stream says; this module carries it to the
client under any ASGI server: the response start, the chunks, the end, the client
going away (web/direct.py), server shutdown, and readers that stopped reading.
"""

from __future__ import annotations

import asyncio
import logging
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, cast

import anyio
from sse_starlette import EventSourceResponse
from starlette.datastructures import MutableHeaders
from starlette.types import Message, Receive, Scope, Send

from web.broker import Subscription
from web.direct import DisconnectWatch, write_head_with
from web.security import SECURITY_HEADERS

logger = logging.getLogger(__name__)

STREAM_HEADERS = {
    "Cache-Control": "no-store, no-transform",
    "X-Accel-Buffering": "no",
    **SECURITY_HEADERS,
}


def _raw_headers() -> list[tuple[bytes, bytes]]:
    """What sse-starlette's EventSourceResponse sends given STREAM_HEADERS, built once."""
    headers = MutableHeaders()
    headers.update(STREAM_HEADERS)
    headers.setdefault("Cache-Control", "no-store")
    headers["Connection"] = "keep-alive"
    headers["X-Accel-Buffering"] = "no"
    raw = [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers.items()]
    return [*raw, (b"content-type", b"text/event-stream; charset=utf-8")]


STREAM_RAW_HEADERS = _raw_headers()


class StreamSignal:
    """Set when the server is stopping: ends the stream cleanly (its subscription
    closes) instead of cancelling it mid-write. Also carries the server's `send` from
    the response to the stream's live phase (direct writes)."""

    __slots__ = ("is_gone", "is_set", "send", "subscription")

    def __init__(self) -> None:
        self.is_set = False
        self.is_gone = False
        self.subscription: Subscription | None = None
        self.send: Send | None = None

    def set(self) -> None:
        self.is_set = True
        if self.subscription is not None:
            self.subscription.close("shutdown")

    def gone(self) -> None:
        """The client disconnected: the stream ends (and its member may leave)."""
        self.is_gone = True
        if self.subscription is not None:
            self.subscription.close("gone")


class EventStream(EventSourceResponse):
    """sse-starlette's response, lighter per stream and per send.

    The library gives every stream four tasks (stream, ping, shutdown watch,
    disconnect watch) and wraps every send in its own cancel scope; at thousands
    of streams that was most of the memory per stream and most of the CPU per
    delivered event. Here a stream runs in its request's task alone: the client
    going away is seen by a callback on `receive`, and events reach a parked
    stream by direct writes (web/direct.py). One task per process (the
    watchdog) does the rest: on server shutdown it signals every stream to end
    (the library's own shutdown detection), and it cancels a stream whose
    current send has been stuck for `stall_seconds`, i.e. a reader that stopped
    reading. Its client reconnects with its cursor and loses nothing.
    """

    # Deliberately not the library's __init__: it builds the same headers (and an
    # anyio lock, and settings for its own tasks) for every stream, which was a fifth
    # of the cost of opening one. tests/test_stream.py checks these stay its headers.
    def __init__(
        self,
        content: AsyncIterator[bytes | Awaitable[None]],
        *,
        stall_seconds: float,
        signal: StreamSignal,
        on_close: Callable[[], None],
    ) -> None:
        self.body_iterator = content
        self.status_code = 200
        self.background = None
        self.raw_headers = STREAM_RAW_HEADERS
        self.active = True
        self.stall_seconds = stall_seconds
        self.signal = signal
        self.on_close = on_close
        self.sending_since: float | None = None
        self.task: asyncio.Task[Any] | None = None
        self.stalled = False  # the watchdog cancelled it: its reader stopped reading

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        # One coroutine from the server to the events: every frame a parked stream
        # holds is memory (bench/memory.py).
        watch = None
        try:
            if scope["method"] == "HEAD":  # headers only, no stream
                await send(_start(self.raw_headers))
                await send({"type": "http.response.body", "body": b""})
                return
            # One task per stream: the client going away is seen by a callback on
            # `receive` (direct.py), and ends the stream through its subscription.
            watch = DisconnectWatch(receive, self.signal.gone)
            loop = asyncio.get_running_loop()
            self.signal.send = send
            self.task = asyncio.current_task()
            # Under uvicorn the head goes out with the first chunk, in one write; where
            # that cannot be done, the head goes through `send` first.
            started = False
            try:
                _watch(self)
                async for chunk in self.body_iterator:
                    self.sending_since = loop.time()
                    if not started:
                        started = True
                        if isinstance(chunk, bytes) and write_head_with(
                            send, scope, self.raw_headers, chunk
                        ):
                            self.sending_since = None
                            continue
                        await send(_start(self.raw_headers))
                    if isinstance(chunk, bytes):
                        await send({"type": "http.response.body", "body": chunk, "more_body": True})
                    else:
                        await cast(Awaitable[None], chunk)  # the rest of a direct write
                    self.sending_since = None
                    del chunk  # not kept while parked
            except asyncio.CancelledError:
                if not self.stalled or self.task is None:
                    raise
                self.task.uncancel()  # the watchdog's own cancellation, handled here
            finally:
                _WATCHED.discard(self)
                # Cut off mid-send, the generator still waits at its yield: close it so
                # that it unsubscribes and counts its member out.
                aclose = getattr(self.body_iterator, "aclose", None)
                if aclose is not None:
                    await aclose()
            if self.stalled:
                # The reader stopped reading: drop the connection rather than wait on it.
                logger.info("closed a stream whose reader stalled for %ss", self.stall_seconds)
                return
            self.active = False
            if not started:  # it ended before its first chunk (the server is stopping)
                await send(_start(self.raw_headers))
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        finally:
            if watch is not None:
                watch.stop()
            self.on_close()  # counted when the stream was allowed to open


def _start(headers: list[tuple[bytes, bytes]]) -> Message:
    return {"type": "http.response.start", "status": 200, "headers": headers}


_WATCHED: set[EventStream] = set()  # removed by each stream on its way out
_watchdogs: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Task[None]] = (
    weakref.WeakKeyDictionary()
)


def _watch(stream: EventStream) -> None:
    _WATCHED.add(stream)
    loop = asyncio.get_running_loop()
    if loop not in _watchdogs:
        _watchdogs[loop] = loop.create_task(_watchdog())
    elif _watchdogs[loop].done():  # shutdown already began: end this one too
        stream.signal.set()


async def _watchdog() -> None:
    loop = asyncio.get_running_loop()
    async with anyio.create_task_group() as tasks:

        async def watch_shutdown() -> None:
            # The library's own detection of uvicorn shutting down (SIGTERM, SIGINT).
            await EventSourceResponse._listen_for_exit_signal()
            for stream in list(_WATCHED):
                stream.signal.set()
            tasks.cancel_scope.cancel()

        tasks.start_soon(watch_shutdown)
        while True:
            await anyio.sleep(1)
            now = loop.time()
            for stream in list(_WATCHED):
                since = stream.sending_since
                task = stream.task
                stuck = since is not None and now - since > stream.stall_seconds
                if stuck and task is not None and not stream.stalled:
                    stream.stalled = True
                    task.cancel()

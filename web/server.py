"""The HTTP server: uvicorn's httptools protocol with a deadline for each request head.

uvicorn has no read timeout for request headers: its keep-alive timer is cancelled by
every byte received, so a client that sends a header byte every few seconds (slowloris)
holds a connection, and whatever the app keeps per connection, for ever. Here a request
head (request line and headers) must arrive in full within `header_timeout` seconds of
the connection opening or of the previous response ending; otherwise the connection gets
a short 408 and is closed. Once a head is complete the deadline is off, so a long
response (a room's event stream) is never cut by it.

    connection opens ──┐                    ┌─▶ head complete: deadline off, the app
                       ├─▶ deadline armed ──┤     answers (a stream may last hours)
    response ends ─────┘                    └─▶ deadline passes: 408 if a request
                                                had begun, then close

`tests/test_slow_clients.py` checks the uvicorn internals this relies on.
"""

from __future__ import annotations

import asyncio
import functools
from collections import deque
from collections.abc import Callable
from typing import Any, ClassVar

import uvicorn
from starlette.types import ASGIApp
from uvicorn.logging import TRACE_LOG_LEVEL
from uvicorn.protocols.http.flow_control import FlowControl
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

DEFAULT_HEADER_TIMEOUT = 10.0

_TIMEOUT_BODY = b"The request took too long to arrive.\n"


class _Pipeline(list[Any]):
    """uvicorn's queue of pipelined requests as a list: it is nearly always empty, and an
    empty deque is 760 bytes (a list, 56) on every connection, streams included."""

    __slots__ = ()

    def appendleft(self, item: Any) -> None:
        self.insert(0, item)


def _lighten(event: asyncio.Event) -> None:
    """An asyncio.Event waits with a deque of waiters (760 bytes empty); it only
    appends, removes and iterates, which a list does as well (56 bytes). uvicorn keeps
    two per connection (flow control, the request's messages)."""
    if isinstance(event._waiters, deque) and not event._waiters:
        event._waiters = []  # type: ignore[assignment]


class HeadTimeoutProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol, plus a deadline for each request head, and lighter
    containers than uvicorn's own for what a connection keeps while it streams."""

    header_timeout: ClassVar[float] = DEFAULT_HEADER_TIMEOUT
    # Slots, not the instance dict: uvicorn's protocol has 28 attributes, and past 30 a
    # dict stops sharing its keys with the others (1.4 KB more per connection).
    __slots__ = ("_head_begun", "_head_timeout", "_head_timer", "on_lost")

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if not self.pipeline:
            self.pipeline = _Pipeline()  # type: ignore[assignment]
        self._head_timeout = self.header_timeout
        self._head_timer: asyncio.TimerHandle | None = None
        # Whether bytes of the next request have arrived: they get a 408, an idle
        # connection is just closed (as the keep-alive timeout would).
        self._head_begun = False
        # Called once if the connection is lost while a response streams: a stream's
        # way to learn that its client went (web/direct.py), with no receive waiting.
        self.on_lost: Callable[[], None] | None = None

    def connection_made(  # type: ignore[override]
        self, transport: asyncio.Transport
    ) -> None:
        # uvicorn's own, but for the addresses: it reads them through the transport's
        # socket object, which uvloop makes for the purpose (6 µs of a stream's ~130 to
        # open); the transport has them as they are. tests/test_slow_clients.py names
        # what this copies.
        self.connections.add(self)
        self.transport = transport
        self.flow = FlowControl(transport)
        self.server = _local_address(transport.get_extra_info("sockname"))
        self.client = _remote_address(transport.get_extra_info("peername"))
        self.scheme = "https" if transport.get_extra_info("sslcontext") else "http"
        if self.logger.level <= TRACE_LOG_LEVEL:
            prefix = f"{self.client[0]}:{self.client[1]} - " if self.client else ""
            self.logger.log(TRACE_LOG_LEVEL, "%sHTTP connection made", prefix)
        _lighten(self.flow._is_writable_event)
        # uvicorn arms no timer at all until a first response: a connection that never
        # sends a byte would otherwise stay open for ever.
        self._arm_head_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_head_timer()
        super().connection_lost(exc)
        on_lost, self.on_lost = self.on_lost, None
        if on_lost is not None:
            on_lost()

    def on_message_begin(self) -> None:
        super().on_message_begin()
        # No new deadline here: the one armed when the connection opened or the last
        # response ended still runs, so dribbling the head byte by byte gains nothing. A
        # head pipelined behind a response still in flight gets its deadline when that
        # response ends.
        self._head_begun = True

    def on_headers_complete(self) -> None:
        self._cancel_head_timer()
        self._head_begun = False
        super().on_headers_complete()
        if self.cycle is not None:
            _lighten(self.cycle.message_event)

    def on_response_complete(self) -> None:
        # A request already queued behind this one has its head in full: uvicorn starts
        # it now and no deadline applies until its own response ends.
        queued = bool(self.pipeline)
        super().on_response_complete()
        if not queued and not self.transport.is_closing():
            self._arm_head_timer()

    def _arm_head_timer(self) -> None:
        self._cancel_head_timer()
        self._head_timer = self.loop.call_later(self._head_timeout, self._head_timed_out)

    def _cancel_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if self.transport.is_closing():
            return
        if self.cycle is not None and not self.cycle.response_complete:
            # A response is in flight (a stream): the timer is never armed then, and if it
            # ever were, cutting the response would be worse than waiting for its end.
            return
        if self._head_begun:
            self._send_408()
        self.transport.close()

    def _send_408(self) -> None:
        content = [STATUS_LINE[408]]
        for name, value in self.server_state.default_headers:
            content.extend([name, b": ", value, b"\r\n"])
        content.extend(
            [
                b"content-type: text/plain; charset=utf-8\r\n",
                b"content-length: " + str(len(_TIMEOUT_BODY)).encode("ascii") + b"\r\n",
                b"connection: close\r\n",
                b"\r\n",
                _TIMEOUT_BODY,
            ]
        )
        self.transport.write(b"".join(content))


def _remote_address(info: Any) -> tuple[str, int] | None:
    """uvicorn's get_remote_addr from the peer's address: (host, port) of an IP socket."""
    if isinstance(info, (tuple, list)) and len(info) >= 2:
        return (str(info[0]), int(info[1]))
    return None


def _local_address(info: Any) -> tuple[str, int | None] | None:
    """uvicorn's get_local_addr from the socket's own address (a path for a Unix socket)."""
    if isinstance(info, (tuple, list)) and len(info) >= 2:
        return (str(info[0]), int(info[1]))
    if isinstance(info, str):
        return (info, None)
    return None


class SettingsHeadTimeoutProtocol(HeadTimeoutProtocol):
    """For `--workers`: uvicorn's worker processes build the protocol from its name,
    so the deadline comes from the settings each worker reads (the same environment)."""

    __slots__ = ()

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._head_timeout = _settings_header_timeout()


@functools.cache
def _settings_header_timeout() -> float:
    from web.settings import Settings

    return Settings.from_env().header_timeout_seconds


def protocol_with(header_timeout: float) -> type[HeadTimeoutProtocol]:
    """The protocol class with this head deadline (uvicorn builds protocols from a class)."""
    if not header_timeout > 0:
        raise ValueError(
            f"the header timeout must be a positive number of seconds: {header_timeout}"
        )
    seconds = header_timeout

    class _Protocol(HeadTimeoutProtocol):
        header_timeout = seconds

    return _Protocol


def config(
    app: ASGIApp | str,
    *,
    host: str,
    port: int,
    log_level: str,
    header_timeout: float = DEFAULT_HEADER_TIMEOUT,
    forwarded_allow_ips: str | None = None,
    workers: int = 1,
) -> uvicorn.Config:
    """uvicorn's settings for Sala.

    `forwarded_allow_ips` (comma-separated addresses or networks, or `*`) are the
    proxies whose `X-Forwarded-For` / `X-Forwarded-Proto` are believed. Without it
    nothing is: any client could otherwise pick the address its limits are counted by.

    With `workers` above 1, `app` is an import string ("web.app:app"): uvicorn starts
    that many processes, each building the app and its protocol from the environment.
    """
    http: type[HeadTimeoutProtocol] | str = protocol_with(header_timeout)
    if workers > 1:
        http = f"{__name__}:SettingsHeadTimeoutProtocol"
    return uvicorn.Config(
        app,
        host=host,
        port=port,
        log_level=log_level,
        http=http,
        workers=workers if workers > 1 else None,
        proxy_headers=forwarded_allow_ips is not None,
        forwarded_allow_ips=forwarded_allow_ips,
        # How long a shutdown waits for open responses; streams end themselves sooner.
        timeout_graceful_shutdown=10,
    )

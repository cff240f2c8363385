"""Toy reverse proxies, each with one bad habit real proxies have.

They run in the test's event loop and sit in front of a real Sala server:
- `idle_timeout`: cuts a connection that has been silent that long;
- `buffer`: holds a whole response until the server ends it, then sends it;
- `fail`: while set, answers 502 without asking the server.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import AsyncIterator
from dataclasses import dataclass, field


@dataclass
class ToyProxy:
    upstream_port: int
    idle_timeout: float | None = None
    buffer: bool = False
    fail: bool = False
    connections: int = 0
    cut: int = 0
    port: int = 0
    _server: asyncio.Server | None = None
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        assert self._server is not None
        self._server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self.connections += 1
        try:
            await self._serve(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.CancelledError):
            pass  # a client or server went away, or the proxy is stopping
        finally:
            self._tasks.discard(task)
            writer.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.fail:
            with contextlib.suppress(asyncio.IncompleteReadError, asyncio.LimitOverrunError):
                await reader.readuntil(b"\r\n\r\n")
            body = b"Bad Gateway"
            writer.write(
                b"HTTP/1.1 502 Bad Gateway\r\nContent-Type: text/plain\r\nConnection: close\r\n"
                + f"Content-Length: {len(body)}\r\n\r\n".encode()
                + body
            )
            await writer.drain()
            return
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.upstream_port)
        try:
            if self.buffer:
                await self._buffered(reader, writer, up_reader, up_writer)
            else:
                await self._piped(reader, writer, up_reader, up_writer)
        finally:
            up_writer.close()

    async def _piped(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        up_reader: asyncio.StreamReader,
        up_writer: asyncio.StreamWriter,
    ) -> None:
        async def to_server() -> None:
            while chunk := await reader.read(65536):
                up_writer.write(chunk)
                await up_writer.drain()

        async def to_client() -> None:
            # Idle means nothing from the server for `idle_timeout`: a stream's case.
            while True:
                try:
                    chunk = await asyncio.wait_for(up_reader.read(65536), self.idle_timeout)
                except TimeoutError:
                    self.cut += 1
                    return
                if not chunk:
                    return
                writer.write(chunk)
                await writer.drain()

        # Either side ending (or idling out) ends the connection, as proxies do.
        tasks = [asyncio.ensure_future(to_server()), asyncio.ensure_future(to_client())]
        try:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def _buffered(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        up_reader: asyncio.StreamReader,
        up_writer: asyncio.StreamWriter,
    ) -> None:
        # One request per connection, so the end of the response is the end of the
        # connection; then hold everything until the server is done.
        head = await reader.readuntil(b"\r\n\r\n")
        lines = [
            line
            for line in head.split(b"\r\n")
            if line and not line.lower().startswith(b"connection:")
        ]
        up_writer.write(b"\r\n".join([*lines, b"Connection: close", b"", b""]))
        length = _content_length(head)
        if length:
            up_writer.write(await reader.readexactly(length))
        await up_writer.drain()
        held = await up_reader.read()
        writer.write(held)
        await writer.drain()


def _content_length(head: bytes) -> int:
    for line in head.split(b"\r\n"):
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return int(value.strip())
    return 0


@contextlib.asynccontextmanager
async def toy_proxy(upstream_port: int, **habits: object) -> AsyncIterator[ToyProxy]:
    proxy = ToyProxy(upstream_port, **habits)  # type: ignore[arg-type]
    await proxy.start()
    try:
        yield proxy
    finally:
        await proxy.stop()


class ProxyThread:
    """A toy proxy on its own event loop in a thread, for the (synchronous) browser tests."""

    def __init__(self, upstream_port: int, **habits: object) -> None:
        self.proxy = ToyProxy(upstream_port, **habits)  # type: ignore[arg-type]
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)

    def __enter__(self) -> ToyProxy:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self.proxy.start(), self._loop).result(10)
        return self.proxy

    def __exit__(self, *exc: object) -> None:
        asyncio.run_coroutine_threadsafe(self.proxy.stop(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()

"""The bare baseline: an asyncio SSE fan-out server speaking raw HTTP/1.1, no framework.

It answers the same routes the load client uses on Sala and sends frames of the
same shape and size (an `id:` line and the same HTML as Sala's entry partial),
so that Sala's figures can be given as ratios to it. It stores nothing.

    python -m bench.baseline --port 8001
"""

from __future__ import annotations

import argparse
import asyncio
import html
import itertools
import time
from urllib.parse import parse_qs

FRAME = (
    'id: {id}\ndata: <li id="entry-{id}" class="entry message" data-author="0123456789abcdef">\n'
    'data:   <div class="bubble">\n'
    'data:     <span class="author author-c7" title="Bench #0123"><bdi>Bench</bdi></span>\n'
    'data:     <p class="text" dir="auto">{text}</p>\n'
    'data:     <time datetime="{iso}">{clock}</time>\ndata:   </div>\ndata: </li>\n\n'
)
STREAM_HEAD = (
    b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream; charset=utf-8\r\n"
    b"cache-control: no-store, no-transform\r\nx-accel-buffering: no\r\n"
    b"transfer-encoding: chunked\r\n\r\n"
)


def _chunk(payload: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(payload), payload)


class Baseline:
    def __init__(self) -> None:
        self.rooms: dict[str, set[asyncio.Transport]] = {}
        self.ids = itertools.count(1)

    def publish(self, room: str, text: str) -> None:
        now = time.gmtime()
        frame = FRAME.format(
            id=next(self.ids),
            text=html.escape(text),
            iso=time.strftime("%Y-%m-%dT%H:%M:%S.000Z", now),
            clock=time.strftime("%H:%M UTC", now),
        ).encode()
        chunk = _chunk(frame)  # encoded once, written to every subscriber
        for transport in self.rooms.get(room, ()):
            transport.write(chunk)


class _Protocol(asyncio.Protocol):
    def __init__(self, app: Baseline) -> None:
        self.app = app
        self.buffer = b""
        self.transport: asyncio.Transport | None = None
        self.room: str | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def connection_lost(self, exc: Exception | None) -> None:
        if self.room is not None and self.transport is not None:
            self.app.rooms.get(self.room, set()).discard(self.transport)

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while True:
            head_end = self.buffer.find(b"\r\n\r\n")
            if head_end < 0:
                return
            head = self.buffer[:head_end].decode("latin-1")
            lines = head.split("\r\n")
            method, target, _ = lines[0].split(" ", 2)
            length = 0
            for line in lines[1:]:
                name, _, value = line.partition(":")
                if name.strip().lower() == "content-length":
                    length = int(value.strip())
            if len(self.buffer) < head_end + 4 + length:
                return
            body = self.buffer[head_end + 4 : head_end + 4 + length]
            self.buffer = self.buffer[head_end + 4 + length :]
            self._handle(method, target, body)

    def _handle(self, method: str, target: str, body: bytes) -> None:
        assert self.transport is not None
        path = target.split("?", 1)[0]
        parts = path.strip("/").split("/")
        if method == "GET" and len(parts) == 3 and parts[2] == "events":
            self.room = parts[1]
            self.app.rooms.setdefault(self.room, set()).add(self.transport)
            self.transport.write(STREAM_HEAD + _chunk(b": baseline\nretry: 2000\ndata: hello\n\n"))
        elif method == "POST" and len(parts) == 3 and parts[2] == "messages":
            text = parse_qs(body.decode()).get("text", [""])[0]
            self.app.publish(parts[1], text)
            self._answer(b"<form>ok</form>")
        else:
            self._answer(b"ok")

    def _answer(self, body: bytes) -> None:
        assert self.transport is not None
        self.transport.write(
            b"HTTP/1.1 200 OK\r\ncontent-type: text/html\r\ncontent-length: %d\r\n\r\n%s"
            % (len(body), body)
        )


async def serve(host: str, port: int) -> None:
    app = Baseline()
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: _Protocol(app), host, port, backlog=4096)
    async with server:
        await server.serve_forever()


def main() -> None:
    parser = argparse.ArgumentParser(description="Bare asyncio SSE fan-out baseline.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8001)
    args = parser.parse_args()
    asyncio.run(serve(args.host, args.port))


if __name__ == "__main__":
    main()

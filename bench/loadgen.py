"""The load client: many raw SSE connections, a keep-alive poster, and timing.

Written on asyncio protocols, not an HTTP library, so one Python process can hold
thousands of streams and still time every delivery: each posted message carries
its sequence number (`m{seq} `), and every stream notes when each one arrives.
"""

from __future__ import annotations

import asyncio
import os
import random
import re
import time
from collections import defaultdict
from dataclasses import dataclass, field

MARK = re.compile(rb'class="text"[^>]*>m(\d+) ')
EVENT_ID = re.compile(rb"\nid: (\d+)\n")
RETRY = re.compile(rb"\nretry: (\d+)\n")
TAIL = 64
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


@dataclass
class Recorder:
    post_times: dict[int, float] = field(default_factory=dict)
    arrivals: defaultdict[int, list[float]] = field(default_factory=lambda: defaultdict(list))
    first_event: list[float] = field(default_factory=list)
    opened: int = 0
    closed: int = 0

    def deliveries(self) -> int:
        return sum(len(times) for times in self.arrivals.values())


class _Stream(asyncio.Protocol):
    def __init__(self, request: bytes, recorder: Recorder) -> None:
        self.request = request
        self.recorder = recorder
        self.started = time.monotonic()
        self.tail = b""
        self.first = True

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.recorder.opened += 1
        transport.write(self.request)

    def data_received(self, data: bytes) -> None:
        now = time.monotonic()
        buf = self.tail + data
        # At the start of a line: a response header may hold "data:" too (Sala's
        # Content-Security-Policy has `img-src 'self' data:`).
        if self.first and b"\ndata:" in buf:
            self.first = False
            self.on_first_event(now)
        skip = len(self.tail)
        for match in MARK.finditer(buf):
            if match.end() > skip:
                self.on_message(int(match.group(1)), now)
        self.tail = buf[-TAIL:]

    def on_first_event(self, now: float) -> None:
        self.recorder.first_event.append(now - self.started)

    def on_message(self, seq: int, now: float) -> None:
        self.recorder.arrivals[seq].append(now)

    def connection_lost(self, exc: Exception | None) -> None:
        self.recorder.closed += 1


async def open_streams(
    host: str,
    port: int,
    paths: list[str],
    cookie: str | list[str],
    recorder: Recorder,
    *,
    batch: int = 250,
    addresses: int = 8,
    languages: list[str] | None = None,
) -> list[asyncio.Transport]:
    """Open one stream per path (with its own cookie, if given a list: a session is
    bound to the rooms it joined), spread over 127.0.0.x source addresses. With
    `languages`, stream i asks for languages[i % len] (Accept-Language)."""
    loop = asyncio.get_running_loop()
    transports: list[asyncio.Transport] = []
    cookies = cookie if isinstance(cookie, list) else [cookie] * len(paths)

    async def one(index: int, path: str) -> None:
        language = f"Accept-Language: {languages[index % len(languages)]}\r\n" if languages else ""
        request = (
            f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nAccept: text/event-stream\r\n"
            f"Cookie: {cookies[index]}\r\n{language}\r\n"
        ).encode()
        local = (f"127.0.0.{1 + index % addresses}", 0)
        transport, _ = await loop.create_connection(
            lambda: _Stream(request, recorder), host, port, local_addr=local
        )
        transports.append(transport)

    for start in range(0, len(paths), batch):
        await asyncio.gather(
            *(one(start + i, p) for i, p in enumerate(paths[start : start + batch]))
        )
    return transports


class Reader:
    """One reader of a room that stays a reader, as a browser's EventSource does: when
    its stream closes under it (the server died or ended the stream), it connects
    again, to the next server that accepts, with the last event id it saw
    (Last-Event-ID): at once, or, with `follow_retry`, after the stream's `retry:`
    with htmx's ±30% jitter. It keeps, per message, when it first arrived, and counts
    messages that came twice or out of order."""

    def __init__(
        self,
        host: str,
        ports: list[int],
        index: int,
        path: str,
        cookie: str,
        *,
        local: str,
        cursor: int | None,
        follow_retry: bool = False,
    ) -> None:
        self.host, self.ports, self.path, self.cookie, self.local = host, ports, path, cookie, local
        self.home = index  # the port it was given
        self.index = index  # the port it reads from now
        self.last_id = cursor
        self.follow_retry = follow_retry
        self.retry_ms: int | None = None  # the last stream's `retry:`
        self.seen: dict[int, float] = {}  # message seq → first arrival
        self.duplicates = 0
        self.out_of_order = 0
        self.refused = 0  # streams answered with anything but 200
        self.first_event: float | None = None
        self.lost: list[float] = []  # when a stream closed under it
        self.resumed: list[float] = []  # first event of each stream after the first
        self.transport: asyncio.Transport | None = None
        self.stopping = False
        self._highest = -1
        self._retry: asyncio.Task[None] | None = None

    @property
    def port(self) -> int:
        return self.ports[self.index]

    async def connect(self, recorder: Recorder) -> None:
        resume = f"Last-Event-ID: {self.last_id}\r\n" if self.last_id is not None else ""
        request = (
            f"GET {self.path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n"
            f"Accept: text/event-stream\r\nCookie: {self.cookie}\r\n{resume}\r\n"
        ).encode()
        loop = asyncio.get_running_loop()
        transport, _ = await loop.create_connection(
            lambda: _ReaderStream(request, recorder, self),
            self.host,
            self.port,
            local_addr=(self.local, 0),
        )
        self.transport = transport

    def note(self, seq: int, now: float) -> None:
        if seq in self.seen:
            self.duplicates += 1
            return
        if seq < self._highest:
            self.out_of_order += 1
        self._highest = max(self._highest, seq)
        self.seen[seq] = now

    def stream_lost(self, recorder: Recorder, *, answered: bool) -> None:
        self.transport = None
        if self.stopping:
            return
        self.lost.append(time.monotonic())
        pause = 0.0 if answered else 0.1  # a refusal is not retried in a tight loop
        if self.follow_retry and self.retry_ms is not None:
            pause = max(pause, self.retry_ms / 1000 * random.uniform(0.7, 1.3))
        self._retry = asyncio.get_running_loop().create_task(self._reconnect(recorder, pause))

    async def _reconnect(self, recorder: Recorder, pause: float) -> None:
        """The next port first (the one it was on is likely gone), round and round."""
        await asyncio.sleep(pause)
        attempt = 0
        while not self.stopping:
            self.index = (self.index + 1) % len(self.ports)
            try:
                await self.connect(recorder)
                return
            except OSError:
                attempt += 1
                if attempt % len(self.ports) == 0:
                    await asyncio.sleep(0.05)

    def close(self) -> None:
        self.stopping = True
        if self._retry is not None:
            self._retry.cancel()
        if self.transport is not None:
            self.transport.close()


class _ReaderStream(_Stream):
    def __init__(self, request: bytes, recorder: Recorder, reader: Reader) -> None:
        super().__init__(request, recorder)
        self.reader = reader
        self.answered: bool | None = None  # whether the answer was 200

    def data_received(self, data: bytes) -> None:
        if self.answered is None:
            self.answered = data.startswith(b"HTTP/1.1 200")
            if not self.answered:
                self.reader.refused += 1
        buf = self.tail + data
        skip = len(self.tail)
        for match in EVENT_ID.finditer(buf):
            if match.end() > skip:
                self.reader.last_id = int(match.group(1))
        if self.first:  # `retry:` comes in the stream's first event
            retry = RETRY.search(buf)
            if retry is not None:
                self.reader.retry_ms = int(retry.group(1))
        super().data_received(data)

    def on_first_event(self, now: float) -> None:
        if self.reader.first_event is None:
            self.reader.first_event = now
            super().on_first_event(now)
        else:
            self.reader.resumed.append(now)

    def on_message(self, seq: int, now: float) -> None:
        self.reader.note(seq, now)

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        self.reader.stream_lost(self.recorder, answered=bool(self.answered))


async def open_readers(
    host: str,
    ports: list[int],
    count: int,
    path: str,
    cookie: str,
    recorder: Recorder,
    *,
    cursor: int | None = None,
    follow_retry: bool = False,
    batch: int = 250,
    addresses: int = 8,
) -> list[Reader]:
    """`count` readers of one path, reader i on ports[i % len(ports)], spread over
    127.0.0.x source addresses."""
    readers = [
        Reader(
            host,
            ports,
            i % len(ports),
            path,
            cookie,
            local=f"127.0.0.{1 + i % addresses}",
            cursor=cursor,
            follow_retry=follow_retry,
        )
        for i in range(count)
    ]
    for start in range(0, count, batch):
        await asyncio.gather(*(r.connect(recorder) for r in readers[start : start + batch]))
    return readers


class Poster:
    """One keep-alive HTTP/1.1 connection that posts forms and times the answers."""

    def __init__(self, host: str, port: int, cookie: str) -> None:
        self.host, self.port, self.cookie = host, port, cookie
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def connect(self) -> None:
        self.reader, self.writer = await asyncio.open_connection(self.host, self.port)

    async def post(
        self, path: str, body: str, *, htmx: bool = True, cookie: str | None = None
    ) -> tuple[int, bytes]:
        if self.writer is None:
            await self.connect()
        assert self.reader is not None and self.writer is not None
        data = body.encode()
        extra = "HX-Request: true\r\n" if htmx else ""
        self.writer.write(
            (
                f"POST {path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n"
                f"Cookie: {cookie or self.cookie}\r\n{extra}"
                "Content-Type: application/x-www-form-urlencoded\r\n"
                f"Content-Length: {len(data)}\r\n\r\n"
            ).encode()
            + data
        )
        head = await self.reader.readuntil(b"\r\n\r\n")
        status = int(head.split(b" ", 2)[1])
        length = 0
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value.strip())
        payload = await self.reader.readexactly(length) if length else b""
        return status, head + payload

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def session_cookie(head: bytes) -> str:
    match = re.search(rb"set-cookie: ((?:__Host-)?session=[^;]+)", head, re.IGNORECASE)
    return match.group(1).decode() if match else ""


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as fh:
        fields = fh.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def rss_bytes(pid: int) -> int:
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]

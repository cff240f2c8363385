"""The load client: many raw SSE connections, a keep-alive poster, and timing.

Written on asyncio protocols, not an HTTP library, so one Python process can hold
thousands of streams and still time every delivery: each posted message carries
its sequence number (`m{seq} `), and every stream notes when each one arrives.
"""

from __future__ import annotations

import asyncio
import os
import re
import time
from collections import defaultdict
from dataclasses import dataclass, field

MARK = re.compile(rb'class="text"[^>]*>m(\d+) ')
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
        if self.first and b"data:" in data:
            self.first = False
            self.recorder.first_event.append(now - self.started)
        buf = self.tail + data
        skip = len(self.tail)
        for match in MARK.finditer(buf):
            if match.end() > skip:
                self.recorder.arrivals[int(match.group(1))].append(now)
        self.tail = buf[-TAIL:]

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
) -> list[asyncio.Transport]:
    """Open one stream per path (with its own cookie, if given a list: a session is
    bound to the rooms it joined), spread over 127.0.0.x source addresses."""
    loop = asyncio.get_running_loop()
    transports: list[asyncio.Transport] = []
    cookies = cookie if isinstance(cookie, list) else [cookie] * len(paths)

    async def one(index: int, path: str) -> None:
        request = (
            f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nAccept: text/event-stream\r\n"
            f"Cookie: {cookies[index]}\r\n\r\n"
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

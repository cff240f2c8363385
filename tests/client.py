"""Test clients: a person with a cookie jar, and an SSE reader that parses the stream."""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Self, TypeVar

import anyio
import httpx
from anyio.abc import SocketStream, TaskGroup
from bs4 import BeautifulSoup, Tag

T = TypeVar("T")
CODE_RE = re.compile(r"^/rooms/([A-Z]{8})$")


@dataclass
class SSEEvent:
    data: str
    id: str | None = None
    event: str | None = None

    @property
    def html(self) -> BeautifulSoup:
        return BeautifulSoup(self.data, "html.parser")

    @property
    def entry(self) -> Tag | None:
        found = self.html.select_one("li.entry")
        return found if isinstance(found, Tag) else None


@dataclass
class Entry:
    id: int
    kind: str
    author: str
    text: str | None
    time: str


def parse_entry(li: Tag) -> Entry:
    classes: list[str] = list(li.get("class") or [])
    kind = next(k for k in ("message", "join", "leave") if k in classes)
    author = li.select_one(".author")
    text = li.select_one(".text")
    time = li.select_one("time")
    assert author is not None and time is not None
    return Entry(
        id=int(str(li["id"]).removeprefix("entry-")),
        kind=kind,
        author=author.get_text(),
        text=text.get_text() if text is not None else None,
        time=str(time["datetime"]),
    )


def page_entries(html: str) -> list[Entry]:
    return [parse_entry(li) for li in BeautifulSoup(html, "html.parser").select("li.entry")]


@dataclass
class Stream:
    """Reads one SSE response in the background, keeping what it parsed."""

    client: httpx.AsyncClient
    url: str
    headers: dict[str, str] = field(default_factory=dict)
    events: list[SSEEvent] = field(default_factory=list)
    comments: list[str] = field(default_factory=list)
    raw_lines: list[str] = field(default_factory=list)
    retry: int | None = None
    response: httpx.Response | None = None
    ended: bool = False
    error: BaseException | None = None
    on_event: Callable[[SSEEvent], None] | None = None
    wait_open: bool = True
    parse: bool = True  # False: keep the raw events only (cheap, for crowds)
    _entries: list[Entry] = field(default_factory=list)
    _tg: TaskGroup | None = None
    _opened: anyio.Event = field(default_factory=anyio.Event)

    async def __aenter__(self) -> Self:
        self._tg = anyio.create_task_group()
        await self._tg.__aenter__()
        self._tg.start_soon(self._read)
        if self.wait_open:
            try:
                with anyio.fail_after(10):
                    await self._opened.wait()
            except BaseException as exc:
                # Leave the task group properly even when cancelled while waiting.
                self._tg.cancel_scope.cancel()
                await self._tg.__aexit__(type(exc), exc, exc.__traceback__)
                raise
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        assert self._tg is not None
        self._tg.cancel_scope.cancel()
        await self._tg.__aexit__(exc_type, exc, tb)

    async def close(self) -> None:
        await self.__aexit__(None, None, None)

    async def _read(self) -> None:
        try:
            async with self.client.stream("GET", self.url, headers=self.headers) as response:
                self.response = response
                self._opened.set()
                if response.status_code != 200:
                    await response.aread()
                    return
                await self._parse(response)
        except httpx.HTTPError as exc:
            self.error = exc
        finally:
            self.ended = True
            self._opened.set()

    async def _parse(self, response: httpx.Response) -> None:
        data: list[str] = []
        event_id: str | None = None
        name: str | None = None
        async for line in response.aiter_lines():
            self.raw_lines.append(line)
            if line == "":
                if data:
                    event = SSEEvent("\n".join(data), event_id, name)
                    self.events.append(event)
                    entry = event.entry if self.parse else None
                    # A change (edit, delete, reaction) re-renders a message in place
                    # (hx-swap-oob): not a new entry.
                    if entry is not None and not entry.has_attr("hx-swap-oob"):
                        self._entries.append(parse_entry(entry))
                    if self.on_event is not None:
                        self.on_event(event)
                data, event_id, name = [], None, None
            elif line.startswith(":"):
                self.comments.append(line[1:].strip())
            else:
                key, _, value = line.partition(":")
                value = value.removeprefix(" ")
                if key == "data":
                    data.append(value)
                elif key == "id":
                    event_id = value
                elif key == "event":
                    name = value
                elif key == "retry":
                    self.retry = int(value)

    @property
    def entries(self) -> list[Entry]:
        return self._entries

    @property
    def ids(self) -> list[int]:
        return [e.id for e in self.entries]

    @property
    def presence(self) -> list[list[str]]:
        """Member lists pushed, each as a list of names."""
        lists = []
        for event in self.events:
            section = event.html.select_one("#members")
            if section is not None:
                lists.append([li.get_text() for li in section.select("li[data-author]")])
        return lists

    async def wait_for(self, check: Callable[[Stream], bool], timeout: float = 10) -> None:
        with anyio.fail_after(timeout):
            while not check(self):
                if self.ended and not check(self):
                    raise AssertionError(f"stream ended first: {self.raw_lines[-20:]}")
                await anyio.sleep(0.01)

    async def wait_text(self, text: str, timeout: float = 10) -> None:
        await self.wait_for(lambda s: text in [e.text for e in s.entries], timeout)

    async def wait_entries(self, count: int, timeout: float = 10) -> list[Entry]:
        await self.wait_for(lambda s: len(s.entries) >= count, timeout)
        return self.entries

    async def wait_end(self, timeout: float = 10) -> None:
        with anyio.fail_after(timeout):
            while not self.ended:
                await anyio.sleep(0.01)


async def eventually(
    call: Callable[[], Awaitable[T]], check: Callable[[T], bool], timeout: float = 10
) -> T:
    """Call until `check` passes on the result; fail after `timeout` seconds."""
    with anyio.fail_after(timeout):
        while True:
            result = await call()
            if check(result):
                return result
            await anyio.sleep(0.05)


class Person:
    """Someone using Sala from a browser without JavaScript (plus htmx headers on demand)."""

    def __init__(self, base_url: str, name: str) -> None:
        self.name = name
        self.client = httpx.AsyncClient(base_url=base_url, timeout=httpx.Timeout(10, read=30))

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.client.aclose()

    async def create_room(self) -> str:
        response = await self.client.post("/", data={"name": self.name, "action": "create"})
        assert response.status_code == 303, response.text
        match = CODE_RE.match(response.headers["location"])
        assert match, response.headers["location"]
        return match.group(1)

    async def join(self, code: str) -> httpx.Response:
        return await self.client.post("/", data={"name": self.name, "code": code, "action": "join"})

    async def say(
        self, code: str, text: str, *, key: str | None = None, htmx: bool = True
    ) -> httpx.Response:
        data = {"text": text}
        if key is not None:
            data["idempotency_key"] = key
        headers = {"HX-Request": "true"} if htmx else {}
        return await self.client.post(f"/rooms/{code}/messages", data=data, headers=headers)

    def stream(
        self,
        code: str,
        *,
        after: int | str | None = None,
        last_event_id: int | str | None = None,
        mode: str | None = None,
        headers: dict[str, str] | None = None,
        wait_open: bool = True,
        parse: bool = True,
    ) -> Stream:
        params = []
        if after is not None:
            params.append(f"after={after}")
        if mode is not None:
            params.append(f"mode={mode}")
        url = f"/rooms/{code}/events" + ("?" + "&".join(params) if params else "")
        all_headers = dict(headers or {})
        if last_event_id is not None:
            all_headers["Last-Event-ID"] = str(last_event_id)
        return Stream(self.client, url, all_headers, wait_open=wait_open, parse=parse)

    async def page(self, code: str) -> httpx.Response:
        return await self.client.get(f"/rooms/{code}")


class Follower:
    """Follows a room's stream as htmx 4 does: the original URL every time, reconnecting
    after each end or failure with the last `id:` it saw as Last-Event-ID."""

    def __init__(
        self, client: httpx.AsyncClient, code: str, *, after: int, mode: str | None = None
    ) -> None:
        self.client = client
        query = f"after={after}" + (f"&mode={mode}" if mode else "")
        self.url = f"/rooms/{code}/events?{query}"
        self.last_event_id: str | None = None
        self.entries: list[Entry] = []
        self.connections = 0
        self.failures = 0
        self._tg: TaskGroup | None = None

    @property
    def ids(self) -> list[int]:
        return [e.id for e in self.entries]

    async def __aenter__(self) -> Self:
        self._tg = anyio.create_task_group()
        await self._tg.__aenter__()
        self._tg.start_soon(self._run)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._tg is not None
        self._tg.cancel_scope.cancel()
        await self._tg.__aexit__(None, None, None)

    async def _run(self) -> None:
        while True:
            headers = {"Last-Event-ID": self.last_event_id} if self.last_event_id else {}
            stream = Stream(self.client, self.url, headers, on_event=self._take)
            self.connections += 1
            async with stream:
                await stream.wait_end(timeout=3600)
            ok = stream.response is not None and stream.response.status_code == 200
            if not ok or stream.error is not None:
                self.failures += 1
            await anyio.sleep(0.05 if ok else 0.2)

    def _take(self, event: SSEEvent) -> None:
        if event.id:
            self.last_event_id = event.id
        if event.entry is not None:
            self.entries.append(parse_entry(event.entry))

    async def wait_for_ids(self, ids: list[int], timeout: float = 20) -> None:
        with anyio.fail_after(timeout):
            while not set(ids) <= set(self.ids):
                await anyio.sleep(0.02)


async def open_bare_stream(url: str, path: str, cookie: str) -> tuple[SocketStream, bytes]:
    """A stream opened on a bare socket and read up to its first event (the member
    list): the socket, still open, and the bytes read (the head included)."""
    host, port = url.removeprefix("http://").split(":")
    request = f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nCookie: {cookie}\r\n\r\n"
    sock = await anyio.connect_tcp(host, int(port))
    data = b""
    try:
        await sock.send(request.encode())
        with anyio.fail_after(5):
            while b"\r\n\r\n" not in data or b"</details>" not in data:
                data += await sock.receive()
    except BaseException:
        await sock.aclose()
        raise
    return sock, data


def cookie_header(person: Person) -> str:
    return "; ".join(f"{name}={value}" for name, value in person.client.cookies.items())


def health_detail(url: str, query: str = "") -> dict[str, Any]:
    """The server's `/healthz/detail` (counts and sizes for tests and operators)."""
    detail: dict[str, Any] = httpx.get(f"{url}/healthz/detail{query}", timeout=5).json()
    return detail

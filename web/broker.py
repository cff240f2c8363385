"""Fan-out of rendered events to a room's streams.

The interface follows encode/broadcaster: `publish(room, event)` and
`subscribe(room)`, an async context manager that gives each subscriber its own
queue and removes it on the way out. Unlike broadcaster, queues are bounded: a
subscriber that falls behind is closed, and its client resumes from its cursor.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from typing import Any, Protocol

from db.models import Room
from web.direct import ChunkWriter
from web.i18n import Localized


@dataclass(frozen=True, slots=True)
class Event:
    """One SSE frame per language, each encoded once for every subscriber reading it."""

    id: int | None  # the timeline entry id; None for presence updates
    frames: Localized
    seq: int | None = None  # the entry's place in its room (entry.seq)

    def frame(self, language: str) -> bytes:
        return self.frames.get(language)

    def chunk(self, language: str) -> bytes:
        return self.frames.chunk(language)


ROOMS_REMEMBERED = 100_000  # newest entries kept per room


class SubscriptionClosed(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class Delivery(Protocol):
    """Writes an event to a parked stream at once (see `Subscription.deliver`): None when
    done, or the rest of a write that has to wait (the client is slow), for the
    stream's own task to finish."""

    def __call__(self, event: Event) -> Awaitable[None] | None: ...


class Subscription:
    __slots__ = (
        "_items",
        "_maxsize",
        "_timer",
        "_timer_at",
        "_waiter",
        "closed",
        "deliver",
        "member",
        "unfinished",
    )
    # Events written by their publisher straight to a parked stream, and how many of
    # those writes a stream's task had to finish (a full socket buffer): /healthz/detail.
    direct_writes = 0
    finished_by_task = 0

    def __init__(self, maxsize: int, member: str | None = None) -> None:
        self.member = member  # whose stream this is, so that leaving can end it
        self._items: list[Event] = []  # (an empty deque is 760 bytes, a list 56)
        self._maxsize = maxsize
        self._waiter: asyncio.Future[None] | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = 0.0
        self.closed: str | None = None
        # Set by a live stream: while its task is parked in `get` with nothing queued,
        # an event is written by whoever publishes it, in one pass over the room's
        # streams, instead of waking each stream's task to write it.
        self.deliver: Delivery | None = None
        self.unfinished: Awaitable[None] | None = None  # a write the task must finish

    def push(self, event: Event) -> None:
        if self.closed is not None:
            return
        deliver = self.deliver
        waiter = self._waiter
        if (
            deliver is not None
            and waiter is not None
            and not waiter.done()
            and not self._items
            and self.unfinished is None
        ):
            try:
                rest = deliver(event)
            except Exception:
                self.close("error")
                return
            Subscription.direct_writes += 1
            if rest is not None:
                Subscription.finished_by_task += 1
                self.unfinished = rest
                self._wake()
            return
        if len(self._items) >= self._maxsize:
            self.close("overflow")
            return
        self._items.append(event)
        self._wake()

    def close(self, reason: str) -> None:
        if self.closed is None:
            self.closed = reason
            # What was queued is dropped: the client resumes from its cursor.
            self._items.clear()
            unfinished = self.unfinished
            self.unfinished = None
            close = getattr(unfinished, "close", None)
            if close is not None:
                close()
        if self._timer is not None:
            self._timer.cancel()
        self._wake()

    def _on_timer(self) -> None:
        # Forget the timer once it has fired (possibly a hair early): never reuse it.
        self._timer = None
        self._wake()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def get(self, until: float) -> list[Event]:
        """Everything queued (at least one event), or [] at loop time `until`.

        The timer is kept while `until` stays the same, so waiting for event after
        event costs no new timer each time (this runs once per delivery).
        """
        if not self._items and self.closed is None:
            loop = asyncio.get_running_loop()
            if until <= loop.time():
                return []
            if self._timer is None or self._timer_at != until:
                if self._timer is not None:
                    self._timer.cancel()
                self._timer = loop.call_at(until, self._on_timer)
                self._timer_at = until
            self._waiter = loop.create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        if self.closed is not None:
            raise SubscriptionClosed(self.closed)
        items, self._items = self._items, []
        return items


def delivery_counts() -> dict[str, int]:
    return {
        "direct_writes": Subscription.direct_writes,
        "chunks_written": ChunkWriter.writes,
        "finished_by_task": Subscription.finished_by_task,
    }


class Broker(Protocol):
    # True: whoever stores an entry publishes it here. False: entries reach the broker
    # from the database itself (NOTIFY), and `publish` carries member lists only.
    publishes_entries: bool

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    async def publish(self, room: str, event: Event) -> None: ...

    def subscribe(
        self, room: Room, member: str | None = None
    ) -> AbstractAsyncContextManager[Subscription]: ...

    def close_member(self, room: str, member: str, reason: str) -> None: ...

    def subscriber_count(self) -> int: ...

    def newest(self, room: str) -> tuple[int, int] | None:
        """(id, seq) of the room's newest entry when this broker knows it for certain,
        so a stream whose cursor is that id has nothing to replay."""
        ...

    def note_newest(self, room: str, entry_id: int, seq: int) -> None:
        """What a replay found to be the room's newest entry (kept if newer)."""
        ...

    def close_all(self, reason: str) -> None: ...

    def status(self) -> dict[str, Any]: ...


class MemoryBroker:
    """One process: subscribers live in a dict of sets."""

    publishes_entries = True

    def __init__(self, queue_size: int) -> None:
        self._queue_size = queue_size
        self._rooms: dict[str, set[Subscription]] = {}
        # Every stored entry is published here after it commits, in its room's order,
        # so the newest one published (or read since) is the room's newest.
        self._newest: dict[str, tuple[int, int]] = {}

    async def start(self) -> None:
        pass

    async def stop(self) -> None:
        self.close_all("shutdown")

    async def publish(self, room: str, event: Event) -> None:
        if event.id is not None and event.seq is not None:
            self.note_newest(room, event.id, event.seq)
        for subscription in tuple(self._rooms.get(room, ())):
            subscription.push(event)

    def newest(self, room: str) -> tuple[int, int] | None:
        return self._newest.get(room)

    def note_newest(self, room: str, entry_id: int, seq: int) -> None:
        known = self._newest.get(room)
        if known is None or seq > known[1]:
            if len(self._newest) >= ROOMS_REMEMBERED:
                self._newest.clear()
            self._newest[room] = (entry_id, seq)

    @asynccontextmanager
    async def subscribe(self, room: Room, member: str | None = None) -> AsyncIterator[Subscription]:
        code = room.code
        subscription = Subscription(self._queue_size, member)
        self._rooms.setdefault(code, set()).add(subscription)
        try:
            yield subscription
        finally:
            # Synchronous on purpose: this runs in a cancelled scope on disconnect.
            subscribers = self._rooms.get(code)
            if subscribers is not None:
                subscribers.discard(subscription)
                if not subscribers:
                    del self._rooms[code]

    def close_member(self, room: str, member: str, reason: str) -> None:
        """End every stream `member` has open in `room` (they left)."""
        for subscription in tuple(self._rooms.get(room, ())):
            if subscription.member == member:
                subscription.close(reason)

    def subscriber_count(self) -> int:
        return sum(len(s) for s in self._rooms.values())

    def close_all(self, reason: str) -> None:
        for subscribers in self._rooms.values():
            for subscription in subscribers:
                subscription.close(reason)

    def status(self) -> dict[str, Any]:
        return {"kind": "memory", **delivery_counts()}

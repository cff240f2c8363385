"""Fan-out of rendered events to a room's streams.

The interface follows encode/broadcaster: `publish(room, event)` and
`subscribe(room)`, an async context manager that gives each subscriber its own
queue and removes it on the way out. Unlike broadcaster, queues are bounded: a
subscriber that falls behind is closed, and its client resumes from its cursor.
"""

from __future__ import annotations

import asyncio
import math
import weakref
from collections.abc import Awaitable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Any, Protocol

from db.models import Room
from web.direct import COUNTS
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
        "_alarm_at",
        "_items",
        "_maxsize",
        "_waiter",
        "closed",
        "deliver",
        "member",
        "unfinished",
    )

    def __init__(self, maxsize: int, member: str | None = None) -> None:
        self.member = member  # whose stream this is, so that leaving can end it
        self._items: list[Event] = []  # (an empty deque is 760 bytes, a list 56)
        self._maxsize = maxsize
        self._waiter: asyncio.Future[None] | None = None
        self._alarm_at = 0.0  # when an alarm will wake it (0: none set)
        self.closed: str | None = None
        # Set by a live stream: while its task is parked in `wait` with nothing queued,
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
            COUNTS.direct_writes += 1
            if rest is not None:
                COUNTS.finished_by_task += 1
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
        self._wake()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def wait(self, until: float) -> asyncio.Future[None] | None:
        """A future to await while nothing is queued, done when something is (or the
        subscription closes), or at loop time `until`; None when `take` has something
        now (or `until` has passed). A future, not a coroutine: a parked stream holds
        one frame less.

        Streams due at about the same moment share one timer (`_Alarms`), and a stream
        that waits for the same `until` again (event after event) sets no new one.
        """
        if self._items or self.closed is not None:
            return None
        loop = asyncio.get_running_loop()
        if until <= loop.time():
            return None
        if self._alarm_at != until:
            self._alarm_at = until
            _Alarms.of(loop).add(until, self)
        waiter = self._waiter = loop.create_future()
        return waiter

    def take(self) -> list[Event]:
        """Everything queued (maybe nothing, after an alarm); raises SubscriptionClosed."""
        self._waiter = None
        if self.closed is not None:
            raise SubscriptionClosed(self.closed)
        items, self._items = self._items, []
        return items


class _Alarms:
    """One timer for all the subscriptions due in the same 1/64 s (rounded up), instead
    of a timer per parked stream (about 600 bytes each, by bench/memory.py): streams
    wait for their next heartbeat tick or their end, far apart."""

    __slots__ = ("_due", "_loop")
    STEP = 64  # per second

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._due: dict[float, list[Subscription]] = {}

    @classmethod
    def of(cls, loop: asyncio.AbstractEventLoop) -> _Alarms:
        alarms = _ALARMS.get(loop)
        if alarms is None:
            alarms = _ALARMS[loop] = cls(loop)
        return alarms

    @classmethod
    def slot(cls, at: float) -> float:
        return math.ceil(at * cls.STEP) / cls.STEP

    def add(self, at: float, subscription: Subscription) -> None:
        slot = self.slot(at)
        due = self._due.get(slot)
        if due is None:
            due = self._due[slot] = []
            self._loop.call_at(slot, self._ring, slot)
        due.append(subscription)

    def _ring(self, slot: float) -> None:
        for subscription in self._due.pop(slot, ()):
            # Only if it still waits for this moment (not a later one set since).
            if subscription._alarm_at and self.slot(subscription._alarm_at) == slot:
                subscription._alarm_at = 0.0  # the next wait sets another, even if early
                subscription._wake()


_ALARMS: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Alarms] = weakref.WeakKeyDictionary()


def delivery_counts() -> dict[str, int]:
    return {
        "direct_writes": COUNTS.direct_writes,
        "chunks_written": COUNTS.chunks_written,
        "finished_by_task": COUNTS.finished_by_task,
        "heads_written": COUNTS.heads_written,
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

    def subscribe(self, room: Room, member: str | None = None) -> _Subscribed:
        return _Subscribed(self._rooms, room.code, Subscription(self._queue_size, member))

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


class _Subscribed:
    """`MemoryBroker.subscribe`: in the room's set from entry to exit. A class, not an
    async generator: a stream keeps it for its whole life (bench/memory.py)."""

    __slots__ = ("_code", "_rooms", "_subscription")

    def __init__(
        self, rooms: dict[str, set[Subscription]], code: str, subscription: Subscription
    ) -> None:
        self._rooms = rooms
        self._code = code
        self._subscription = subscription

    async def __aenter__(self) -> Subscription:
        self._rooms.setdefault(self._code, set()).add(self._subscription)
        return self._subscription

    async def __aexit__(self, *exc_info: object) -> None:
        # Nothing awaited: this runs in a cancelled task on disconnect.
        subscribers = self._rooms.get(self._code)
        if subscribers is not None:
            subscribers.discard(self._subscription)
            if not subscribers:
                del self._rooms[self._code]

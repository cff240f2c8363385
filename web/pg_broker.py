"""Fan-out across processes through PostgreSQL LISTEN/NOTIFY.

Every entry is announced with NOTIFY in the transaction that stores it (db/crud.py),
so it reaches every process when, and only if, it commits, in commit order, which
for one room is seq order (seqs are given under the room's row lock). Each process
holds one LISTEN connection and one relay that renders each entry once and pushes
it to the streams of that process:

    NOTIFY sala_timeline ─▶ listener ─▶ queue ─▶ relay ─▶ room feed ─▶ subscriptions
                                          ▲
            a room's first local stream ──┘ (init: the room's last seq, read in order)

The relay handles everything in one order: a room's first local subscriber puts an
"init" in the same queue, so the room's baseline seq is read after every earlier
notification was seen and before every later one. Per room it then expects seq
`last + 1`: an older seq is a duplicate, a newer one a gap (after a reconnect, or a
payload too long for NOTIFY that carries ids only), filled from the database before
anything newer goes out. Writers never publish to their own streams directly: their
entries come back through LISTEN like everyone else's, so a local entry can never
overtake a remote one with a lower seq.

The listener reconnects with backoff when its connection fails or when its own ping
(a NOTIFY on a channel of its own, sent through another connection) does not come
back in time; after reconnecting it refetches every local room from its last seq.
A periodic tail check compares each local room with the database as a last net.
Member lists: a NOTIFY on sala_presence makes each process re-read the room's
members (coalesced) and push the list to its streams.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

import psycopg
from jinja2 import Environment

from db import cluster
from db.crud import PRESENCE_CHANNEL, TIMELINE_CHANNEL
from db.engine import normalize_url
from db.models import Entry, Room
from db.store import Store
from web.broker import Event, Subscription, delivery_counts
from web.i18n import Localized
from web.rendering import members_frame

if TYPE_CHECKING:
    from web.timeline import Timeline

logger = logging.getLogger(__name__)

FILL_BATCH = 500
PRESENCE_COALESCE_SECONDS = 0.2
RECONNECT_MIN_SECONDS = 0.05


@dataclass(eq=False)
class _Feed:
    """A room with streams on this process."""

    room: Room
    subscriptions: set[Subscription] = field(default_factory=set)
    last_seq: int | None = None  # None until the init has read the room's baseline
    ready: asyncio.Future[None] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )
    roster: list[tuple[str, str]] | None = None
    roster_frame: Localized | None = None
    presence_due: bool = False
    idle_rounds: int = 0

    @property
    def room_id(self) -> int:
        assert self.room.id is not None
        return self.room.id


class _CatchUp:
    """Refetch every local room after its last seq (after the listener reconnected)."""


class _Fill:
    def __init__(self, feed: _Feed) -> None:
        self.feed = feed


class PgBroker:
    publishes_entries = False

    def __init__(
        self,
        url: str,
        *,
        store: Store,
        env: Environment,
        queue_size: int,
        node_id: str,
        ping_seconds: float,
        reconnect_max_seconds: float,
        tail_check_seconds: float,
    ) -> None:
        # psycopg takes libpq URLs: postgresql://…, without SQLAlchemy's driver suffix.
        self._url = normalize_url(url).replace("postgresql+psycopg://", "postgresql://", 1)
        self._store = store
        self._env = env
        self._queue_size = queue_size
        self.node_id = node_id
        self._ping_seconds = ping_seconds
        self._reconnect_max = reconnect_max_seconds
        self._tail_check_seconds = tail_check_seconds
        self._ping_channel = f"sala_ping_{node_id}"
        self._feeds: dict[int, _Feed] = {}
        self._by_code: dict[str, _Feed] = {}
        self._queue: asyncio.Queue[Any] = asyncio.Queue()
        self._tasks: list[asyncio.Task[None]] = []
        self._spawned: set[asyncio.Task[None]] = set()
        self._closing = False
        # Called with (room code, member id) when a member left on purpose anywhere.
        self.on_left: Callable[[str, str], None] | None = None
        # Renders entries (set by the app: the Timeline, which renders for one process).
        self.timeline: Timeline | None = None
        # Called with the LISTEN backend's pid after each (re)connect.
        self.on_listening: Callable[[int], Any] | None = None
        # What operators see (/healthz/detail).
        self.connected = False
        self.reconnects = 0
        self._connections = 0
        self._last_notification: float | None = None
        self._ping_back = 0.0
        self._pings_back = 0

    # -- lifecycle --

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._ping_back = loop.time()
        self._tasks = [
            loop.create_task(self._listen(), name="sala-listen"),
            loop.create_task(self._relay(), name="sala-relay"),
            loop.create_task(self._ping(), name="sala-ping"),
            loop.create_task(self._tail_check(), name="sala-tail-check"),
        ]

    async def stop(self) -> None:
        self._closing = True
        for task in [*self._tasks, *self._spawned]:
            task.cancel()
        for task in [*self._tasks, *self._spawned]:
            with contextlib.suppress(BaseException):
                await task
        self.close_all("shutdown")

    # -- the Broker interface --

    async def publish(self, room: str, event: Event) -> None:
        """Local streams only: used for member lists; entries arrive through LISTEN."""
        feed = self._by_code.get(room)
        if feed is not None:
            self._push(feed, event)

    @asynccontextmanager
    async def subscribe(self, room: Room, member: str | None = None) -> AsyncIterator[Subscription]:
        assert room.id is not None
        feed = self._feeds.get(room.id)
        if feed is None:
            feed = _Feed(room)
            self._feeds[room.id] = feed
            self._by_code[room.code] = feed
            self._queue.put_nowait(feed)  # the init, in order with the notifications
        feed.idle_rounds = 0
        subscription = Subscription(self._queue_size, member)
        feed.subscriptions.add(subscription)
        try:
            # Until the baseline is known, a replay from the database could miss what
            # commits before the relay starts counting this room.
            await asyncio.shield(feed.ready)
            yield subscription
        finally:
            # Synchronous: runs in a cancelled scope on disconnect. The feed stays a
            # while (the tail check drops idle ones): reconnects need no new init.
            feed.subscriptions.discard(subscription)

    def close_member(self, room: str, member: str, reason: str) -> None:
        feed = self._by_code.get(room)
        if feed is None:
            return
        for subscription in tuple(feed.subscriptions):
            if subscription.member == member:
                subscription.close(reason)

    def subscriber_count(self) -> int:
        return sum(len(f.subscriptions) for f in self._feeds.values())

    def newest(self, room: str) -> tuple[int, int] | None:
        # Other processes write too, and a feed's baseline may be newer than anything
        # relayed here: a cursor is always looked up.
        return None

    def note_newest(self, room: str, entry_id: int, seq: int) -> None:
        pass

    def close_all(self, reason: str) -> None:
        for feed in self._feeds.values():
            for subscription in tuple(feed.subscriptions):
                subscription.close(reason)

    def status(self) -> dict[str, Any]:
        loop = asyncio.get_running_loop()
        age = None
        if self._last_notification is not None:
            age = round(loop.time() - self._last_notification, 3)
        return {
            "kind": "postgresql",
            "node_id": self.node_id,
            "connected": self.connected,
            "reconnects": self.reconnects,
            "last_notification_age_seconds": age,
            "rooms": len(self._feeds),
            **delivery_counts(),
        }

    def catch_up(self) -> None:
        """Refetch every local room after its last seq (this process was cut off)."""
        self._queue.put_nowait(_CatchUp())

    # -- member lists --

    async def roster(self, room: Room) -> list[tuple[str, str]]:
        """(member id, name) of everyone present, by name; cached for local rooms."""
        assert room.id is not None
        feed = self._feeds.get(room.id)
        if feed is not None and feed.roster is not None:
            return feed.roster
        roster = _sorted(await self._store.call(cluster.room_members, room_id=room.id))
        if feed is not None and feed.roster is None:
            feed.roster = roster
        return roster

    async def roster_frame(self, room: Room) -> Localized:
        assert room.id is not None
        feed = self._feeds.get(room.id)
        if feed is not None and feed.roster is not None and feed.roster_frame is not None:
            return feed.roster_frame
        roster = await self.roster(room)
        frame = members_frame(self._env, room, roster)
        if feed is not None and feed.roster is roster:
            feed.roster_frame = frame
        return frame

    def _on_presence(self, payload: str) -> None:
        data = json.loads(payload)
        feed = self._feeds.get(data["r"])
        if feed is None:
            return
        left = data.get("left")
        if isinstance(left, str):
            self.close_member(feed.room.code, left, "left")
            if self.on_left is not None:
                self.on_left(feed.room.code, left)
        self._roster_due(feed)

    def _roster_due(self, feed: _Feed) -> None:
        """Re-read the room's members soon: changes within PRESENCE_COALESCE_SECONDS go
        out as one list (when hundreds join at once, each would send the whole list)."""
        if feed.presence_due:
            return
        feed.presence_due = True
        loop = asyncio.get_running_loop()
        loop.call_later(PRESENCE_COALESCE_SECONDS, self._spawn_refresh, feed)

    def _spawn_refresh(self, feed: _Feed) -> None:
        self._spawn(self._refresh_roster(feed))

    async def _refresh_roster(self, feed: _Feed) -> None:
        feed.presence_due = False
        try:
            members = await self._store.call(cluster.room_members, room_id=feed.room_id)
        except Exception:
            logger.exception("could not read the members of room %s", feed.room.code)
            return
        feed.roster = _sorted(members)
        feed.roster_frame = members_frame(self._env, feed.room, feed.roster)
        self._push(feed, Event(None, feed.roster_frame))

    def _spawn(self, coroutine: Any) -> None:
        task = asyncio.get_running_loop().create_task(coroutine)
        self._spawned.add(task)
        task.add_done_callback(self._spawned.discard)

    # -- the listener --

    async def _listen(self) -> None:
        loop = asyncio.get_running_loop()
        delay = RECONNECT_MIN_SECONDS
        while not self._closing:
            connections = self._connections
            try:
                await self._listen_once(loop)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                logger.warning("LISTEN connection lost (%s); reconnecting", exc)
            finally:
                self.connected = False
            if self._connections != connections:
                delay = RECONNECT_MIN_SECONDS  # it had worked: start the backoff afresh
            # Backoff with jitter, so that processes do not all come back at once.
            await asyncio.sleep(delay * random.uniform(0.5, 1.0))
            delay = min(self._reconnect_max, delay * 2)

    async def _listen_once(self, loop: asyncio.AbstractEventLoop) -> None:
        conn = await psycopg.AsyncConnection.connect(
            self._url,
            autocommit=True,
            application_name=cluster.listen_application_name(self.node_id),
            keepalives=1,
            keepalives_idle=10,
            keepalives_interval=5,
            keepalives_count=3,
            connect_timeout=5,
        )
        async with conn:
            for channel in (TIMELINE_CHANNEL, PRESENCE_CHANNEL, self._ping_channel):
                await conn.execute(f'LISTEN "{channel}"')
            self.connected = True
            if self._connections:
                self.reconnects += 1
                logger.info("LISTEN connection back; catching up")
            self._connections += 1
            self._ping_back = loop.time()
            # LISTEN first, then refetch: whatever committed while nobody listened is
            # read now; whatever commits from here on is also notified (seqs dedupe).
            self._queue.put_nowait(_CatchUp())
            if self.on_listening is not None:
                self._spawn(self.on_listening(conn.info.backend_pid))
            while not self._closing:
                async for notify in conn.notifies(timeout=self._ping_seconds):
                    now = loop.time()
                    if notify.channel == self._ping_channel:
                        self._ping_back = now
                        self._pings_back += 1
                        continue
                    self._last_notification = now
                    self._queue.put_nowait((notify.channel, notify.payload))
                if loop.time() - self._ping_back > 2 * self._ping_seconds + 1:
                    if not self._pings_back:
                        logger.error(
                            "no ping sent through SALA_DATABASE_URL ever reached the LISTEN "
                            "connection of SALA_BROKER_URL: both must name the same database"
                        )
                    raise ConnectionError("the LISTEN connection stopped answering pings")

    async def _ping(self) -> None:
        while True:
            await asyncio.sleep(self._ping_seconds)
            if not self.connected:
                continue
            try:
                await self._store.call(cluster.notify, channel=self._ping_channel, payload="")
            except Exception as exc:
                logger.debug("ping not sent: %s", exc)

    # -- the relay: one order for everything --

    async def _relay(self) -> None:
        while True:
            item = await self._queue.get()
            try:
                if isinstance(item, tuple):
                    channel, payload = item
                    if channel == TIMELINE_CHANNEL:
                        await self._on_entry(payload)
                    elif channel == PRESENCE_CHANNEL:
                        self._on_presence(payload)
                elif isinstance(item, _Feed):
                    await self._init(item)
                elif isinstance(item, _CatchUp):
                    for feed in list(self._feeds.values()):
                        if feed.last_seq is not None:
                            await self._fill(feed)
                        self._roster_due(feed)  # member changes may have gone unheard too
                elif isinstance(item, _Fill) and item.feed.last_seq is not None:
                    await self._fill(item.feed)
            except asyncio.CancelledError:
                raise
            except Exception:
                logger.exception("relay: could not handle %r", item)

    async def _init(self, feed: _Feed) -> None:
        if feed.ready.done():
            return
        try:
            seqs = await self._store.last_seqs([feed.room_id])
        except Exception as exc:
            if self._feeds.get(feed.room_id) is feed:
                del self._feeds[feed.room_id]
                self._by_code.pop(feed.room.code, None)
            feed.ready.set_exception(exc)
            feed.ready.exception()  # seen: each subscriber gets it from its own await
            return
        feed.last_seq = seqs.get(feed.room_id, 0)
        feed.ready.set_result(None)

    async def _on_entry(self, payload: str) -> None:
        data = json.loads(payload)
        feed = self._feeds.get(data["r"])
        if feed is None or feed.last_seq is None:
            # Not a room with streams here, or one whose baseline (read later, in this
            # same order) will already count this entry.
            return
        seq = data["s"]
        if seq <= feed.last_seq:
            return
        if seq == feed.last_seq + 1 and "a" in data:
            entry = Entry(
                id=data["i"],
                room_id=data["r"],
                seq=seq,
                kind=data["k"],
                author_id=data["a"],
                author_name=data["n"],
                body=data["b"],
                created_at=datetime.fromisoformat(data["t"]),
                reply_to=data.get("p"),
                quote_author=data.get("qa"),
                quote_text=data.get("qt"),
            )
            await self._deliver(feed, [entry])
            return
        # A gap, an entry too long for a notification, or a change (shown as the message
        # is now): read it from the database.
        await self._fill(feed)

    async def _fill(self, feed: _Feed) -> None:
        """Deliver everything the database has after the room's last seq, in order."""
        while feed.last_seq is not None:
            try:
                batch = await self._store.entries_after_seq(
                    room_id=feed.room_id, after_seq=feed.last_seq, limit=FILL_BATCH
                )
            except Exception as exc:
                # The tail check (or the next notification) tries again; nothing newer
                # goes out before this gap is filled.
                logger.warning("could not fill room %s from the database: %s", feed.room.code, exc)
                return
            await self._deliver(feed, batch)
            if len(batch) < FILL_BATCH:
                return

    async def _deliver(self, feed: _Feed, entries: list[Entry] | Any) -> None:
        assert self.timeline is not None
        try:
            events = await self.timeline.events(feed.room, entries)
        except Exception:
            # Counted as delivered all the same (the order must go on): streams of this
            # room end, and their readers resume from their cursors, from the database.
            logger.exception("could not render entries of room %s", feed.room.code)
            events = []
            for subscription in tuple(feed.subscriptions):
                subscription.close("render failed")
        for entry in entries:
            assert entry.seq is not None and feed.last_seq is not None
            if entry.seq != feed.last_seq + 1:
                logger.error("room %s: seq %s after %s", feed.room.code, entry.seq, feed.last_seq)
            feed.last_seq = entry.seq
        for event in events:
            self._push(feed, event)

    @staticmethod
    def _push(feed: _Feed, event: Event) -> None:
        for subscription in tuple(feed.subscriptions):
            subscription.push(event)

    async def _tail_check(self) -> None:
        """Compare each local room's last seq with the database; forget idle rooms."""
        while True:
            await asyncio.sleep(self._tail_check_seconds)
            for room_id, feed in list(self._feeds.items()):
                if feed.subscriptions or not feed.ready.done():
                    feed.idle_rounds = 0
                    continue
                feed.idle_rounds += 1
                if feed.idle_rounds >= 2:
                    del self._feeds[room_id]
                    if self._by_code.get(feed.room.code) is feed:
                        del self._by_code[feed.room.code]
            known = {i: f.last_seq for i, f in self._feeds.items() if f.last_seq is not None}
            if not known:
                continue
            try:
                seqs = await self._store.last_seqs(list(known))
            except Exception as exc:
                logger.debug("tail check skipped: %s", exc)
                continue
            for room_id, seq in seqs.items():
                lagging = self._feeds.get(room_id)
                behind = known.get(room_id)
                if lagging is not None and behind is not None and seq > behind:
                    self._queue.put_nowait(_Fill(lagging))


def _sorted(members: list[tuple[str, str]]) -> list[tuple[str, str]]:
    return sorted(members, key=lambda pair: pair[1].casefold())

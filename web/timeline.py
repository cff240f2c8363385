"""Appending to a room's timeline: store, render once, publish, in id order."""

from __future__ import annotations

import asyncio
import weakref

from jinja2 import Environment

from db.models import Entry, EntryKind, Room
from db.store import Store
from web.broker import Broker, Event
from web.presence import Presence
from web.rendering import entry_frame, render_members, sse_frame


class Timeline:
    def __init__(self, *, store: Store, broker: Broker, env: Environment) -> None:
        self.store = store
        self.broker = broker
        self.env = env
        # Insert and publish under one lock per room, so ids reach subscribers in
        # order; a stream skips ids it has already sent and would drop a late one.
        self._locks: weakref.WeakValueDictionary[int, asyncio.Lock] = weakref.WeakValueDictionary()

    def _lock(self, room_id: int) -> asyncio.Lock:
        lock = self._locks.get(room_id)
        if lock is None:
            lock = self._locks[room_id] = asyncio.Lock()
        return lock

    async def append(
        self,
        room: Room,
        *,
        kind: EntryKind,
        author_id: str,
        author_name: str,
        body: str | None = None,
        idempotency_key: str | None = None,
    ) -> tuple[Entry, bool]:
        """Store an entry and publish it; (entry, False) when the key was seen before."""
        assert room.id is not None
        async with self._lock(room.id):
            entry, created = await self.store.create_entry(
                room_id=room.id,
                kind=kind,
                author_id=author_id,
                author_name=author_name,
                body=body,
                idempotency_key=idempotency_key,
            )
            if created:
                event = Event(id=entry.id, frame=entry_frame(self.env, entry))
                await self.broker.publish(room.code, event)
        return entry, created

    def presence_frame(self, room: Room, presence: Presence) -> bytes:
        return sse_frame(render_members(self.env, room.code, presence.members(room.code)))

    async def publish_presence(self, room: Room, presence: Presence) -> None:
        event = Event(id=None, frame=self.presence_frame(room, presence))
        await self.broker.publish(room.code, event)

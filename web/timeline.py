"""Appending to a room's timeline: store, render once, publish, in id order.

One writer task takes every pending append, stores the batch in one transaction
(a group commit: SQLite has one writer anyway), then publishes the new entries in
id order. Ids therefore reach subscribers in order, which matters: a stream skips
ids it has already sent, and would drop one that came late.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

from jinja2 import Environment

from db.crud import copy_entry
from db.models import Entry, EntryKind, Room
from db.store import Store
from web.broker import Broker, Event
from web.presence import Presence
from web.rendering import entry_frame, render_members, sse_frame

logger = logging.getLogger(__name__)

BATCH_MAX = 200
PRESENCE_COALESCE_SECONDS = 0.2


@dataclass(slots=True)
class _Append:
    room: Room
    entry: Entry
    done: asyncio.Future[tuple[Entry, bool]]


class Timeline:
    def __init__(self, *, store: Store, broker: Broker, env: Environment) -> None:
        self.store = store
        self.broker = broker
        self.env = env
        self._pending: list[_Append] = []
        self._writer: asyncio.Task[None] | None = None
        self._presence_frames: dict[str, tuple[int, bytes]] = {}
        self._presence_due: set[str] = set()
        self._tasks: set[asyncio.Task[None]] = set()

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
        entry = Entry(
            room_id=room.id,
            kind=kind.value,
            author_id=author_id,
            author_name=author_name,
            body=body,
            idempotency_key=idempotency_key,
        )
        loop = asyncio.get_running_loop()
        done: asyncio.Future[tuple[Entry, bool]] = loop.create_future()
        self._pending.append(_Append(room, entry, done))
        if self._writer is None or self._writer.done():
            self._writer = loop.create_task(self._write())
        # Shielded: a client that goes away mid-post does not unstore its message.
        return await asyncio.shield(done)

    async def _write(self) -> None:
        while self._pending:
            batch, self._pending = self._pending[:BATCH_MAX], self._pending[BATCH_MAX:]
            results = await self._store(batch)
            published = sorted(
                (
                    (result[0], append)
                    for append, result in zip(batch, results, strict=True)
                    if not isinstance(result, BaseException) and result[1]
                ),
                key=lambda pair: (pair[0].room_id, pair[0].seq or 0),
            )
            if not self.broker.publishes_entries:
                published = []  # they come back from the database (NOTIFY) to every process
            for entry, append in published:
                await self.broker.publish(
                    append.room.code, Event(entry.id, entry_frame(self.env, entry), entry.seq)
                )
            for append, result in zip(batch, results, strict=True):
                if append.done.done():
                    continue
                if isinstance(result, BaseException):
                    append.done.set_exception(result)
                else:
                    append.done.set_result(result)

    async def _store(self, batch: list[_Append]) -> list[tuple[Entry, bool] | Exception]:
        """Store a batch in one transaction; if that fails, entry by entry, so that one
        bad entry fails alone instead of taking everyone else's messages with it."""
        try:
            return list(await self.store.create_entries([a.entry for a in batch]))
        except Exception:
            if len(batch) == 1:
                logger.exception("could not store an entry")
        results: list[tuple[Entry, bool] | Exception] = []
        for append in batch:
            try:
                stored = await self.store.create_entries([copy_entry(append.entry)])
                results.append(stored[0])
            except Exception as exc:
                logger.exception("could not store an entry")
                results.append(exc)
        return results

    def presence_frame(self, room: Room, presence: Presence) -> bytes:
        """The member list as an SSE frame, rendered once per change, not per stream."""
        version = presence.version(room.code)
        cached = self._presence_frames.get(room.code)
        if cached is not None and cached[0] == version:
            return cached[1]
        frame = sse_frame(render_members(self.env, room, presence.members(room.code)))
        if len(self._presence_frames) > 10_000:
            self._presence_frames.clear()
        self._presence_frames[room.code] = (version, frame)
        return frame

    def publish_presence(self, room: Room, presence: Presence) -> None:
        """Push the member list soon. Changes within PRESENCE_COALESCE_SECONDS go out
        as one event: when hundreds join at once, each would otherwise send the
        whole, growing list to everyone."""
        if room.code in self._presence_due:
            return
        self._presence_due.add(room.code)
        loop = asyncio.get_running_loop()
        loop.call_later(PRESENCE_COALESCE_SECONDS, self._flush_presence, room, presence)

    def _flush_presence(self, room: Room, presence: Presence) -> None:
        self._presence_due.discard(room.code)
        event = Event(id=None, frame=self.presence_frame(room, presence))
        task = asyncio.get_running_loop().create_task(self.broker.publish(room.code, event))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

"""Appending to a room's timeline: store, render once, publish, in id order.

One writer task takes every pending append, stores the batch in one transaction
(a group commit: SQLite has one writer anyway), then publishes the new entries in
id order. Ids therefore reach subscribers in order, which matters: a stream skips
ids it has already sent, and would drop one that came late.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial
from typing import cast

from jinja2 import Environment

from db.crud import ReactionSummary, copy_entry
from db.models import CHANGE_KINDS, Entry, EntryKind, Room
from db.store import Store
from web.broker import Broker, Event
from web.i18n import Localized
from web.presence import Presence
from web.rendering import (
    AuthorTagger,
    Mentionable,
    change_frame,
    entry_frame,
    members_frame,
)

logger = logging.getLogger(__name__)

BATCH_MAX = 200
PRESENCE_COALESCE_SECONDS = 0.2
NAMES_FRESH_SECONDS = 30.0  # another process may have seen someone join meanwhile


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
        self._presence_frames: dict[str, tuple[int, Localized]] = {}
        self._presence_due: set[str] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._names: dict[int, tuple[float, Mentionable]] = {}

    async def append(
        self,
        room: Room,
        *,
        kind: EntryKind,
        author_id: str,
        author_name: str,
        body: str | None = None,
        idempotency_key: str | None = None,
        reply_to: int | None = None,
        target_id: int | None = None,
    ) -> tuple[Entry, bool]:
        """Store an entry and publish it; (entry, False) when the key was seen before."""
        assert room.id is not None
        entry = Entry.fresh(
            room_id=room.id,
            kind=kind.value,
            author_id=author_id,
            author_name=author_name,
            body=body,
            idempotency_key=idempotency_key,
            reply_to=reply_to,
            target_id=target_id,
        )
        loop = asyncio.get_running_loop()
        done: asyncio.Future[tuple[Entry, bool]] = loop.create_future()
        self._pending.append(_Append(room, entry, done))
        if self._writer is None or self._writer.done():
            self._writer = loop.create_task(self._write())
        # A client that goes away mid-post cancels only its wait: the writer stores the
        # entry all the same (and skips answering a cancelled wait). Awaited directly,
        # not shielded, so the answer is one loop step away (see _write).
        return await done

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
            # Answer the posts first: the author's page gets its 2xx (which names the
            # entry) before the stream brings the entry, so its pending bubble becomes the
            # message without showing both for a moment (streams are written at once).
            for append, result in zip(batch, results, strict=True):
                if append.done.done():
                    continue
                if isinstance(result, BaseException):
                    append.done.set_exception(result)
                else:
                    append.done.set_result(result)
            if published:
                await asyncio.sleep(0)  # the posters' tasks write their answers
            for entry, append in published:
                try:
                    events = await self.events(append.room, [entry])
                except Exception:
                    # Stored: readers get it when they next resume from their cursor.
                    logger.exception("could not prepare entry %s", entry.id)
                    continue
                for event in events:
                    await self.broker.publish(append.room.code, event)

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

    async def events(self, room: Room, entries: Sequence[Entry]) -> list[Event]:
        """Each entry as its event, rendered once for every reader. A change (edit,
        delete, reaction) shows its message as it is now, read from the database."""
        changes = [e for e in entries if e.kind in CHANGE_KINDS]
        messages: dict[int, Entry] = {}
        replies: dict[int, list[Entry]] = {}
        reactions: dict[int, ReactionSummary] = {}
        if changes:
            messages, replies = await self.store.changed_messages(changes)
            reactions = await self.store.reactions_for(list(messages))
        if any(e.kind == EntryKind.JOIN.value for e in entries):
            self._names.pop(room.id or 0, None)  # someone new can be mentioned
        mentions = await self.mentionable(room)
        events = []
        for entry in entries:
            if entry.kind in CHANGE_KINDS:
                target = entry.target_id or 0
                quoting = replies.get(target, []) if entry.kind != EntryKind.REACTION else []
                render = partial(
                    change_frame,
                    self.env,
                    entry,
                    code=room.code,
                    message=messages.get(target),
                    replies=quoting,
                    reactions=reactions,
                    mentions=mentions,
                )
            else:
                render = partial(entry_frame, self.env, entry, code=room.code, mentions=mentions)
            events.append(Event(entry.id, Localized(render), entry.seq))
        return events

    async def mentionable(self, room: Room) -> Mentionable:
        """Who can be mentioned in the room (everyone who joined it), kept a while."""
        assert room.id is not None
        now = time.monotonic()
        cached = self._names.get(room.id)
        if cached is not None and now - cached[0] < NAMES_FRESH_SECONDS:
            return cached[1]
        tag = cast(AuthorTagger, self.env.globals["author_tag"])
        names = await self.store.room_names(room.id)
        mentionable = sorted(
            ((name, tag(room.id, member_id)) for name, member_id in names),
            key=lambda pair: -len(pair[0]),
        )
        if len(self._names) > 10_000:
            self._names.clear()
        self._names[room.id] = (now, mentionable)
        return mentionable

    def presence_frame(self, room: Room, presence: Presence) -> Localized:
        """The member list as an SSE frame, rendered once per change and language, not
        per stream."""
        version = presence.version(room.code)
        cached = self._presence_frames.get(room.code)
        if cached is not None and cached[0] == version:
            return cached[1]
        frame = members_frame(self.env, room, presence.members(room.code))
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
        event = Event(id=None, frames=self.presence_frame(room, presence))
        task = asyncio.get_running_loop().create_task(self.broker.publish(room.code, event))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

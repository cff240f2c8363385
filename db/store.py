"""The async face of the database: every query runs in a worker thread, off the loop."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import anyio
from anyio import CapacityLimiter
from sqlalchemy import Engine
from sqlmodel import Session

from db import cluster, crud, search
from db.engine import init_db, is_sqlite, make_engine
from db.models import Entry, Room
from db.sqlite_writes import SqliteWrites

T = TypeVar("T")
ROOM_CACHE_SIZE = 100_000


class Store:
    def __init__(self, url: str) -> None:
        self.url = url
        self.engine: Engine = make_engine(url)
        # SQLite has one writer at a time: queue writes here rather than in busy_timeout.
        self._writes = CapacityLimiter(1 if is_sqlite(url) else 8)
        self._reads = CapacityLimiter(8)
        self._rooms: dict[str, Room] = {}
        self._sqlite_writes = SqliteWrites(self.engine) if is_sqlite(url) else None
        # Announce every new entry with NOTIFY in its transaction (the PostgreSQL broker).
        self.notify = False
        self.calls = 0  # database round trips so far (/healthz/detail; tests count them)

    def init(self) -> None:
        init_db(self.engine)

    def dispose(self) -> None:
        self.engine.dispose()

    async def _run(
        self, limiter: CapacityLimiter, fn: Callable[..., T], *, counted: bool = True, **kwargs: Any
    ) -> T:
        if counted:
            self.calls += 1

        def call() -> T:
            with Session(self.engine, expire_on_commit=False) as session:
                return fn(session=session, **kwargs)

        return await anyio.to_thread.run_sync(call, limiter=limiter)

    async def create_room(self) -> Room:
        room = await self._run(self._writes, crud.create_room)
        self._remember(room)
        return room

    async def get_room(self, code: str) -> Room | None:
        # Rooms never change and are never deleted: once found, keep them at hand.
        room = self._rooms.get(code)
        if room is None:
            room = await self._run(self._reads, crud.get_room, code=code)
            if room is not None:
                self._remember(room)
        return room

    def _remember(self, room: Room) -> None:
        if len(self._rooms) >= ROOM_CACHE_SIZE:
            self._rooms.clear()
        self._rooms[room.code] = room

    async def create_entries(self, entries: Sequence[Entry]) -> list[tuple[Entry, bool]]:
        fast = self._sqlite_writes
        if fast is not None and fast.takes(entries):
            self.calls += 1
            return await anyio.to_thread.run_sync(
                fast.create_entries, entries, limiter=self._writes
            )
        return await self._run(
            self._writes, crud.create_entries, entries=entries, notify=self.notify
        )

    async def entries_after(self, *, room_id: int, after: int, limit: int) -> Sequence[Entry]:
        return await self._run(
            self._reads, crud.entries_after, room_id=room_id, after=after, limit=limit
        )

    async def entries_after_seq(
        self, *, room_id: int, after_seq: int, limit: int
    ) -> Sequence[Entry]:
        return await self._run(
            self._reads, crud.entries_after_seq, room_id=room_id, after_seq=after_seq, limit=limit
        )

    async def get_entry(self, entry_id: int) -> Entry | None:
        return await self._run(self._reads, crud.get_entry, entry_id=entry_id)

    async def shown_after(self, *, room_id: int, after: int, limit: int) -> Sequence[Entry]:
        return await self._run(
            self._reads, crud.shown_after, room_id=room_id, after=after, limit=limit
        )

    async def reactions_for(self, message_ids: Sequence[int]) -> dict[int, crud.ReactionSummary]:
        if not message_ids:
            return {}
        return await self._run(self._reads, crud.reactions_for, message_ids=message_ids)

    async def changed_messages(
        self, changes: Sequence[Entry]
    ) -> tuple[dict[int, Entry], dict[int, list[Entry]]]:
        return await self._run(self._reads, crud.changed_messages, changes=changes)

    async def room_names(self, room_id: int) -> list[tuple[str, str]]:
        return await self._run(self._reads, crud.room_names, room_id=room_id)

    async def search(self, *, room_id: int, query: str, limit: int) -> Sequence[Entry]:
        return await self._run(
            self._reads, search.search_messages, room_id=room_id, query=query, limit=limit
        )

    async def neighbours(self, *, room_id: int, entry_id: int) -> tuple[Entry | None, Entry | None]:
        return await self._run(self._reads, crud.neighbours, room_id=room_id, entry_id=entry_id)

    async def entry_at_cursor(self, *, room_id: int, after: int) -> tuple[int, int]:
        return await self._run(self._reads, crud.entry_at_cursor, room_id=room_id, after=after)

    async def last_seqs(self, room_ids: Sequence[int]) -> dict[int, int]:
        return await self._run(self._reads, crud.last_seqs, room_ids=room_ids)

    # -- several processes (PostgreSQL) --

    async def call(self, fn: Callable[..., T], **kwargs: Any) -> T:
        """A query of db.cluster (or any `fn(session=…)`), off the loop."""
        return await self._run(self._reads, fn, **kwargs)

    async def sweep(self) -> int:
        return await anyio.to_thread.run_sync(
            lambda: cluster.sweep(engine=self.engine), limiter=self._reads
        )

    async def entries_before(
        self, *, room_id: int, before: int | None, limit: int
    ) -> Sequence[Entry]:
        return await self._run(
            self._reads, crud.entries_before, room_id=room_id, before=before, limit=limit
        )

    async def present_members(self) -> Sequence[tuple[str, str, str]]:
        return await self._run(self._reads, crud.present_members)

    async def ping(self) -> None:
        await self._run(self._reads, crud.ping, counted=False)  # health checks aside

"""The async face of the database: every query runs in a worker thread, off the loop."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import partial
from typing import Any, TypeVar

import anyio
from anyio import CapacityLimiter
from sqlalchemy import Engine
from sqlmodel import Session

from db import crud
from db.engine import init_db, is_sqlite, make_engine
from db.models import Entry, EntryKind, Room

T = TypeVar("T")


class Store:
    def __init__(self, url: str) -> None:
        self.url = url
        self.engine: Engine = make_engine(url)
        # SQLite has one writer at a time: queue writes here rather than in busy_timeout.
        self._writes = CapacityLimiter(1 if is_sqlite(url) else 8)
        self._reads = CapacityLimiter(8)

    def init(self) -> None:
        init_db(self.engine)

    def dispose(self) -> None:
        self.engine.dispose()

    async def _run(self, limiter: CapacityLimiter, fn: Callable[..., T], **kwargs: Any) -> T:
        def call() -> T:
            with Session(self.engine, expire_on_commit=False) as session:
                return fn(session=session, **kwargs)

        return await anyio.to_thread.run_sync(call, limiter=limiter)

    async def create_room(self) -> Room:
        return await self._run(self._writes, crud.create_room)

    async def get_room(self, code: str) -> Room | None:
        return await self._run(self._reads, crud.get_room, code=code)

    async def create_entry(
        self,
        *,
        room_id: int,
        kind: EntryKind,
        author_id: str,
        author_name: str,
        body: str | None = None,
        idempotency_key: str | None = None,
    ) -> tuple[Entry, bool]:
        fn = partial(
            crud.create_entry,
            room_id=room_id,
            kind=kind,
            author_id=author_id,
            author_name=author_name,
            body=body,
            idempotency_key=idempotency_key,
        )
        return await self._run(self._writes, fn)

    async def entries_after(self, *, room_id: int, after: int, limit: int) -> Sequence[Entry]:
        return await self._run(
            self._reads, crud.entries_after, room_id=room_id, after=after, limit=limit
        )

    async def entries_before(
        self, *, room_id: int, before: int | None, limit: int
    ) -> Sequence[Entry]:
        return await self._run(
            self._reads, crud.entries_before, room_id=room_id, before=before, limit=limit
        )

    async def present_members(self) -> Sequence[tuple[str, str, str]]:
        return await self._run(self._reads, crud.present_members)

    async def max_entry_id(self) -> int:
        return await self._run(self._reads, crud.max_entry_id)

    async def ping(self) -> None:
        await self._run(self._reads, crud.ping)

"""Storing a batch of new messages on SQLite through the driver's own cursor.

Every post takes this path: the transaction of `crud.create_entries` (the write lock,
the keys already used, the rooms' next seqs, one INSERT, the commit) without
SQLAlchemy's work around each statement and without a Session. That work was most of
the database thread's time, and it holds the GIL: the loop waited for it. Its six
statements are also six hand-overs of the GIL whatever the batch's size, where
SQLAlchemy's path made two for each entry or room (it inserted row by row to return
ids in order): under load the thread waited for the GIL longer than it worked.

A batch with anything more to do (a reply, which quotes its original; an edit, delete
or reaction; an idempotency key seen before, in the database or earlier in the batch)
goes through `crud.create_entries` whole. tests/test_sequence.py holds the two paths
equal, row for row.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any

from sqlalchemy import Engine, Table
from sqlalchemy.exc import DBAPIError
from sqlmodel import Session

from db import crud
from db.models import CHANGE_KINDS, Entry


class SqliteWrites:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        table: Table = Entry.__table__  # type: ignore[attr-defined]
        dialect = engine.dialect
        # Each column with its own conversion (a datetime to SQLAlchemy's stored text,
        # say), so that rows read back exactly as the other path's.
        self._columns: list[tuple[str, Callable[[Any], Any] | None]] = [
            (name, table.c[name].type.dialect_impl(dialect).bind_processor(dialect))
            for name in crud.ENTRY_COLUMNS
        ]
        self._insert = f"INSERT INTO entry ({', '.join(crud.ENTRY_COLUMNS)}) VALUES "
        self._row = "(" + ", ".join("?" * len(crud.ENTRY_COLUMNS)) + ")"

    @staticmethod
    def takes(entries: Sequence[Entry]) -> bool:
        """Whether this path can store the batch (the database may still send it on)."""
        keys = [(e.room_id, e.idempotency_key) for e in entries if e.idempotency_key]
        return len(set(keys)) == len(keys) and all(
            e.reply_to is None and e.kind not in CHANGE_KINDS for e in entries
        )

    def create_entries(self, entries: Sequence[Entry]) -> list[tuple[Entry, bool]]:
        """`crud.create_entries` for a batch that `takes` accepts; (entry, True) each."""
        if not entries:
            return []
        dbapi_error = self.engine.dialect.loaded_dbapi.Error
        connection = self.engine.raw_connection()
        try:
            cursor = connection.cursor()
            cursor.execute("BEGIN IMMEDIATE")
            try:
                stored = self._insert_all(cursor, entries)
                if stored:
                    connection.commit()
            except BaseException:
                connection.rollback()
                raise
            if not stored:
                connection.rollback()
        except dbapi_error as exc:
            # As SQLAlchemy raises it on the other path: "database is locked" is then
            # an OperationalError that the app answers with 503 and Retry-After.
            raise DBAPIError.instance(None, None, exc, dbapi_error) from exc
        finally:
            connection.close()  # back to the pool
        if stored:
            return [(entry, True) for entry in entries]
        with Session(self.engine, expire_on_commit=False) as session:
            return crud.create_entries(session=session, entries=entries)

    def _insert_all(self, cursor: Any, entries: Sequence[Entry]) -> bool:
        """Store the batch under the write lock; False, storing nothing, when one of its
        keys was used before (a retried post: the general path answers it)."""
        room_ids = sorted({e.room_id for e in entries})
        marks = ", ".join("?" * len(room_ids))
        # One row, not one a room: each row is a step of SQLite's, and each step gives
        # up the GIL and waits to take it back from a busy loop.
        locked = (
            f"SELECT json_group_array(json_array(id, last_seq)) FROM room WHERE id IN ({marks})"
        )
        last_seq: dict[int, int] = dict(json.loads(cursor.execute(locked, room_ids).fetchone()[0]))
        missing = [r for r in room_ids if r not in last_seq]
        if missing:
            raise ValueError(f"no room with id {missing[0]}")
        keys = sorted({e.idempotency_key for e in entries if e.idempotency_key})
        if keys:
            used = (
                f"SELECT room_id, idempotency_key FROM entry WHERE room_id IN ({marks}) "
                f"AND idempotency_key IN ({', '.join('?' * len(keys))})"
            )
            wanted = {(e.room_id, e.idempotency_key) for e in entries}
            if any(row in wanted for row in cursor.execute(used, [*room_ids, *keys])):
                return False
        # Values read and written in the instances' dicts, where SQLAlchemy keeps them:
        # its instrumented attributes cost microseconds each, and these entries are new,
        # in no Session, with no history to keep.
        fields = [entry.__dict__ for entry in entries]
        for entry in fields:
            last_seq[entry["room_id"]] += 1
            entry["seq"] = last_seq[entry["room_id"]]
        added = sorted(Counter(entry["room_id"] for entry in fields).items())
        cases = " ".join("WHEN ? THEN ?" for _ in added)
        cursor.execute(
            f"UPDATE room SET last_seq = last_seq + CASE id {cases} END WHERE id IN ({marks})",
            [*(value for pair in added for value in pair), *room_ids],
        )
        values: list[Any] = []
        for entry in fields:
            for name, process in self._columns:
                value = entry.get(name)
                values.append(value if process is None or value is None else process(value))
        # One statement, one step. The ids are consecutive, in the rows' order: the table
        # is AUTOINCREMENT (each new id is one more than the largest there has been), the
        # rows of a VALUES list go in in order, and no one else writes while this holds
        # the write lock. The last one is the connection's last_insert_rowid (the search
        # index's trigger inserts elsewhere and leaves it as it was).
        cursor.execute(self._insert + ", ".join([self._row] * len(entries)), values)
        first = cursor.lastrowid - len(entries) + 1
        for offset, entry in enumerate(fields):
            entry["id"] = first + offset
        return True

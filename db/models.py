"""Table models: rooms and their timeline."""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, ClassVar

from sqlalchemy import BigInteger, DateTime, Index, String, TypeDecorator, UniqueConstraint
from sqlalchemy.engine import Dialect
from sqlmodel import Field, SQLModel


def utcnow() -> datetime:
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC in and out; SQLite hands back naive datetimes otherwise."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given for a UTC column")
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


class EntryKind(StrEnum):
    MESSAGE = "message"
    JOIN = "join"
    LEAVE = "leave"


class Room(SQLModel, table=True):
    __table_args__: ClassVar[Any] = {"sqlite_autoincrement": True}

    id: int | None = Field(default=None, primary_key=True)
    code: str = Field(sa_type=String(8), unique=True, index=True)
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    # The seq of the room's newest entry; writers take the row's lock to add to it.
    last_seq: int = Field(default=0, sa_type=BigInteger, sa_column_kwargs={"server_default": "0"})


class Entry(SQLModel, table=True):
    """One timeline entry; its id is the SSE event id and only ever grows.

    `seq` numbers a room's entries 1, 2, 3… with no gap, in the order they were
    stored (given under the room's row lock, so one order for every process).
    """

    __table_args__: ClassVar[Any] = (
        UniqueConstraint("room_id", "idempotency_key", name="uq_entry_room_key"),
        Index("ix_entry_room_id_id", "room_id", "id"),
        Index("ix_entry_room_author", "room_id", "author_id", "id"),
        Index("uq_entry_room_seq", "room_id", "seq", unique=True),
        {"sqlite_autoincrement": True},
    )

    id: int | None = Field(default=None, primary_key=True)
    room_id: int = Field(foreign_key="room.id")
    # None until stored: crud.create_entries gives it.
    seq: int | None = Field(default=None, sa_type=BigInteger, nullable=False)
    kind: str = Field(sa_type=String(8))
    author_name: str = Field(sa_type=String(32))
    author_id: str = Field(sa_type=String(64))
    body: str | None = Field(default=None)
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    idempotency_key: str | None = Field(default=None, sa_type=String(64))


class Node(SQLModel, table=True):
    """A Sala process sharing the database with others (PostgreSQL broker only).

    It renews `expires_at` (the database's clock) while it lives; once that has
    passed, another process sweeps its presence claims.
    """

    __tablename__: ClassVar[Any] = "sala_node"

    id: str = Field(sa_type=String(32), primary_key=True)
    host: str = Field(sa_type=String(255))
    pid: int
    started_at: datetime = Field(sa_type=UTCDateTime)
    expires_at: datetime = Field(sa_type=UTCDateTime)
    # The backend of its LISTEN connection, so a sweeper can end a stuck one.
    listen_pid: int | None = Field(default=None)


class PresenceClaim(SQLModel, table=True):
    """Member `member_id` has a stream (or is inside the grace) in a room on a node."""

    __tablename__: ClassVar[Any] = "presence_claim"
    __table_args__: ClassVar[Any] = (Index("ix_presence_claim_node", "node_id"),)

    room_id: int = Field(foreign_key="room.id", primary_key=True)
    member_id: str = Field(sa_type=String(64), primary_key=True)
    node_id: str = Field(sa_type=String(32), primary_key=True)
    name: str = Field(sa_type=String(32))
    claimed_at: datetime = Field(sa_type=UTCDateTime)

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
    # Changes to a message (`target_id`): their events carry the message re-rendered.
    EDIT = "edit"
    DELETE = "delete"
    REACTION = "reaction"


# What a page of history counts (changes show in the messages they changed).
SHOWN_KINDS = (EntryKind.MESSAGE.value, EntryKind.JOIN.value, EntryKind.LEAVE.value)
CHANGE_KINDS = (EntryKind.EDIT.value, EntryKind.DELETE.value, EntryKind.REACTION.value)
REACTIONS = ("👍", "❤️", "😂", "😮", "😢", "🙏")
QUOTE_MAX = 120  # characters of the original a reply shows


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
        Index("ix_entry_target", "target_id"),
        Index("ix_entry_reply_to", "reply_to"),
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
    # A message that answers another: the original's id, author and first words as
    # they are now (an edit updates them, a delete erases the words).
    reply_to: int | None = Field(default=None)
    quote_author: str | None = Field(default=None, sa_type=String(32))
    quote_text: str | None = Field(default=None, sa_type=String(QUOTE_MAX))
    # A change (edit, delete, reaction): the message it changes.
    target_id: int | None = Field(default=None)
    # A message's current state: edited when, withdrawn when (its text is then gone).
    edited_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    deleted_at: datetime | None = Field(default=None, sa_type=UTCDateTime)

    @classmethod
    def fresh(cls, **values: Any) -> Entry:
        """A new, unsaved entry, the same as `Entry(**values)` at a fourteenth of the
        cost: SQLModel's table-model `__init__` sets every field through SQLAlchemy's
        instrumentation (64 µs, a tenth of a post's CPU). For entries that
        crud.insert_entries stores (a Core insert reads their attributes); every other
        use of the instance is as usual. tests/test_sequence.py holds the two equal."""
        entry: Entry = cls._sa_class_manager.new_instance()  # type: ignore[attr-defined]
        fields = entry.__dict__
        fields.update(_ENTRY_DEFAULTS)
        fields["created_at"] = utcnow()
        fields.update(values)
        object.__setattr__(entry, "__pydantic_fields_set__", set(values))
        object.__setattr__(entry, "__pydantic_extra__", None)
        object.__setattr__(entry, "__pydantic_private__", None)
        return entry


_ENTRY_DEFAULTS = {
    name: field.default
    for name, field in Entry.model_fields.items()
    if not field.is_required() and field.default_factory is None
}


class Reaction(SQLModel, table=True):
    """A member's reaction to a message; reacting again with the same emoji removes it."""

    message_id: int = Field(foreign_key="entry.id", primary_key=True)
    member_id: str = Field(sa_type=String(64), primary_key=True)
    emoji: str = Field(sa_type=String(16), primary_key=True)
    author_name: str = Field(sa_type=String(32))
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)


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

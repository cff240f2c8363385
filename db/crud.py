"""Queries. Keyword-only, the session first; no HTML here."""

from __future__ import annotations

import secrets
from collections.abc import Sequence

from sqlalchemy import func, text
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select

from db.models import Entry, EntryKind, Room

# Upper-case letters a reader cannot mistake for another (no I, L, O).
CODE_ALPHABET = "ABCDEFGHJKMNPQRSTUVWXYZ"
CODE_LENGTH = 8  # 23**8: about 78 billion codes; rooms made earlier keep their 6 letters
CODE_LENGTHS = (6, CODE_LENGTH)


def new_code() -> str:
    return "".join(secrets.choice(CODE_ALPHABET) for _ in range(CODE_LENGTH))


def create_room(*, session: Session, attempts: int = 20) -> Room:
    for _ in range(attempts):
        code = new_code()
        if session.exec(select(Room.id).where(Room.code == code)).first() is not None:
            continue
        room = Room(code=code)
        session.add(room)
        try:
            session.commit()
        except IntegrityError:  # taken between the check and the insert
            session.rollback()
            continue
        return room
    raise RuntimeError("no unused room code found")


def get_room(*, session: Session, code: str) -> Room | None:
    return session.exec(select(Room).where(Room.code == code)).first()


def create_entry(
    *,
    session: Session,
    room_id: int,
    kind: EntryKind,
    author_id: str,
    author_name: str,
    body: str | None = None,
    idempotency_key: str | None = None,
) -> tuple[Entry, bool]:
    """Store an entry; returns it and whether it is new (False: the key was used before)."""
    if idempotency_key is not None:
        existing = _entry_by_key(session=session, room_id=room_id, key=idempotency_key)
        if existing is not None:
            return existing, False
    entry = Entry(
        room_id=room_id,
        kind=kind.value,
        author_id=author_id,
        author_name=author_name,
        body=body,
        idempotency_key=idempotency_key,
    )
    session.add(entry)
    try:
        session.commit()
    except IntegrityError:
        session.rollback()
        if idempotency_key is None:
            raise
        existing = _entry_by_key(session=session, room_id=room_id, key=idempotency_key)
        if existing is None:
            raise
        return existing, False
    return entry, True


def create_entries(*, session: Session, entries: Sequence[Entry]) -> list[tuple[Entry, bool]]:
    """Store a batch in one transaction (a group commit), in order.

    Returns (entry, is_new) for each: an entry whose idempotency key was used
    before (in the database or earlier in the batch) comes back as the stored one.
    """
    keyed = [e for e in entries if e.idempotency_key is not None]
    existing: dict[tuple[int, str], Entry] = {}
    if keyed:
        query = select(Entry).where(
            col(Entry.room_id).in_({e.room_id for e in keyed}),
            col(Entry.idempotency_key).in_({e.idempotency_key for e in keyed}),
        )
        for found in session.exec(query).all():
            assert found.idempotency_key is not None
            existing[(found.room_id, found.idempotency_key)] = found
    results: list[tuple[Entry, bool]] = []
    fresh: list[Entry] = []
    for entry in entries:
        key = (entry.room_id, entry.idempotency_key) if entry.idempotency_key else None
        if key is not None and key in existing:
            results.append((existing[key], False))
            continue
        if key is not None:
            existing[key] = entry
        fresh.append(entry)
        results.append((entry, True))
    session.add_all(fresh)
    try:
        session.commit()
    except IntegrityError:
        # Another writer used one of the keys meanwhile: go one by one.
        session.rollback()
        return [
            create_entry(
                session=session,
                room_id=e.room_id,
                kind=EntryKind(e.kind),
                author_id=e.author_id,
                author_name=e.author_name,
                body=e.body,
                idempotency_key=e.idempotency_key,
            )
            for e in (copy_entry(e) for e in entries)
        ]
    return results


def copy_entry(entry: Entry) -> Entry:
    """A fresh, unsaved copy (after a failed transaction the original's state is unsure)."""
    return Entry(
        room_id=entry.room_id,
        kind=entry.kind,
        author_id=entry.author_id,
        author_name=entry.author_name,
        body=entry.body,
        created_at=entry.created_at,
        idempotency_key=entry.idempotency_key,
    )


def _entry_by_key(*, session: Session, room_id: int, key: str) -> Entry | None:
    query = select(Entry).where(Entry.room_id == room_id, Entry.idempotency_key == key)
    return session.exec(query).first()


def entries_after(*, session: Session, room_id: int, after: int, limit: int) -> Sequence[Entry]:
    query = (
        select(Entry)
        .where(Entry.room_id == room_id, col(Entry.id) > after)
        .order_by(col(Entry.id))
        .limit(limit)
    )
    return session.exec(query).all()


def entries_before(
    *, session: Session, room_id: int, before: int | None, limit: int
) -> Sequence[Entry]:
    """The `limit` entries just before `before` (or the newest), oldest first."""
    query = select(Entry).where(Entry.room_id == room_id)
    if before is not None:
        query = query.where(col(Entry.id) < before)
    rows = session.exec(query.order_by(col(Entry.id).desc()).limit(limit)).all()
    return list(reversed(rows))


def present_members(*, session: Session) -> Sequence[tuple[str, str, str]]:
    """(room code, member id, name) of everyone whose last join/leave was a join."""
    last = (
        select(Entry.room_id, Entry.author_id, func.max(Entry.id).label("last_id"))
        .where(col(Entry.kind).in_([EntryKind.JOIN.value, EntryKind.LEAVE.value]))
        .group_by(col(Entry.room_id), col(Entry.author_id))
        .subquery()
    )
    query = (
        select(Room.code, Entry.author_id, Entry.author_name)
        .join(last, col(Entry.id) == last.c.last_id)
        .join(Room, col(Room.id) == Entry.room_id)
        .where(Entry.kind == EntryKind.JOIN.value)
        .order_by(col(Entry.id))
    )
    return [(r, a, n) for r, a, n in session.exec(query).all()]


def max_entry_id(*, session: Session) -> int:
    return session.exec(select(func.max(Entry.id))).one() or 0


def ping(*, session: Session) -> None:
    session.exec(select(text("1"))).one()

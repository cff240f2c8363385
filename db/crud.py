"""Queries. Keyword-only, the session first; no HTML here."""

from __future__ import annotations

import json
import secrets
from collections import Counter
from collections.abc import Sequence

from sqlalchemy import bindparam, func, text, update
from sqlalchemy import select as sa_select
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select

from db.models import Entry, EntryKind, Room

# LISTEN/NOTIFY channels (PostgreSQL broker): every entry as it commits, and member lists.
TIMELINE_CHANNEL = "sala_timeline"
PRESENCE_CHANNEL = "sala_presence"
# NOTIFY refuses payloads of 8,000 bytes or more: an entry longer than this goes as ids only.
PAYLOAD_MAX = 7900

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
    entry = Entry(
        room_id=room_id,
        kind=kind.value,
        author_id=author_id,
        author_name=author_name,
        body=body,
        idempotency_key=idempotency_key,
    )
    return create_entries(session=session, entries=[entry])[0]


# Statements of the write path, built once: it runs once per batch, every batch. Core
# rather than the ORM where no entry objects are needed.
# FOR UPDATE on PostgreSQL (SQLite leaves it out): the row lock of each room, in id order.
_LOCK_ROOMS = (
    sa_select(col(Room.id), col(Room.last_seq))
    .where(col(Room.id).in_(bindparam("rooms", expanding=True)))
    .order_by(col(Room.id))
    .with_for_update()
)
_KEYS_USED = sa_select(col(Entry.id), col(Entry.room_id), col(Entry.idempotency_key)).where(
    col(Entry.room_id).in_(bindparam("rooms", expanding=True)),
    col(Entry.idempotency_key).in_(bindparam("keys", expanding=True)),
)
_ADD_SEQS = (
    update(Room)
    .where(col(Room.id) == bindparam("room"))
    .values(last_seq=col(Room.last_seq) + bindparam("added"))
)


def create_entries(
    *, session: Session, entries: Sequence[Entry], notify: bool = False
) -> list[tuple[Entry, bool]]:
    """Store a batch in one transaction (a group commit), in order.

    Returns (entry, is_new) for each: an entry whose idempotency key was used
    before (in the database or earlier in the batch) comes back as the stored one.
    New entries get their room's next sequence numbers, in batch order.

    The transaction first locks the batch's rooms (in id order, so that two batches
    cannot deadlock), and only then looks for used keys: whatever another writer
    stored before it let go of a room is seen, so a retried post stores once however
    many processes it reached. No other writer can take the same seqs meanwhile.

    With `notify` (PostgreSQL), each new entry is also announced on TIMELINE_CHANNEL in
    the same transaction: listeners get it when, and only if, it commits, in commit
    order, which under the room lock is seq order.
    """
    if not entries:
        return []
    try:
        results = insert_entries(session=session, entries=entries, notify=notify)
        session.commit()
    except BaseException:
        session.rollback()
        raise
    return results


def insert_entries(
    *, session: Session, entries: Sequence[Entry], notify: bool
) -> list[tuple[Entry, bool]]:
    """create_entries without the commit (for a caller with more to do in the transaction)."""
    room_ids = sorted({e.room_id for e in entries})
    last_seq = _lock_rooms(session=session, room_ids=room_ids)
    missing = [r for r in room_ids if r not in last_seq]
    if missing:
        raise ValueError(f"no room with id {missing[0]}")
    existing = _entries_by_key(session=session, entries=entries)
    results: list[tuple[Entry, bool]] = []
    fresh: list[Entry] = []
    for entry in entries:
        key = (entry.room_id, entry.idempotency_key) if entry.idempotency_key else None
        if key is not None and key in existing:
            results.append((existing[key], False))
            continue
        if key is not None:
            existing[key] = entry
        last_seq[entry.room_id] += 1
        entry.seq = last_seq[entry.room_id]
        fresh.append(entry)
        results.append((entry, True))
    added = Counter(e.room_id for e in fresh)
    if added:
        params = [{"room": room_id, "added": n} for room_id, n in sorted(added.items())]
        session.connection().execute(_ADD_SEQS, params[0] if len(params) == 1 else params)
    session.add_all(fresh)
    if notify and fresh:
        session.flush()  # ids, for the payloads
        _notify(session, TIMELINE_CHANNEL, [timeline_payload(e) for e in fresh])
    return results


_NOTIFY_EACH = text("SELECT pg_notify(:channel, p) FROM unnest(CAST(:payloads AS text[])) AS t(p)")


def _notify(session: Session, channel: str, payloads: list[str]) -> None:
    """NOTIFY each payload, in order, in the session's transaction."""
    session.connection().execute(_NOTIFY_EACH, {"channel": channel, "payloads": payloads})


def timeline_payload(entry: Entry) -> str:
    """What a listener needs to render the entry without a query; ids only if too long."""
    assert entry.id is not None and entry.seq is not None
    full = json.dumps(
        {
            "r": entry.room_id,
            "s": entry.seq,
            "i": entry.id,
            "k": entry.kind,
            "a": entry.author_id,
            "n": entry.author_name,
            "b": entry.body,
            "t": entry.created_at.isoformat(),
        },
        ensure_ascii=False,
        separators=(",", ":"),
    )
    if len(full.encode()) <= PAYLOAD_MAX:
        return full
    return json.dumps({"r": entry.room_id, "s": entry.seq, "i": entry.id}, separators=(",", ":"))


def _lock_rooms(*, session: Session, room_ids: list[int]) -> dict[int, int]:
    """Take the rooms' write locks, in id order; returns each one's last_seq as locked."""
    connection = session.connection()
    if connection.dialect.name == "sqlite" and not getattr(
        connection.connection.dbapi_connection, "in_transaction", True
    ):
        # One writer at a time on SQLite, but a deferred transaction would read last_seq
        # before it had the write lock: take it first. (In a transaction already, an
        # earlier write holds it.)
        connection.exec_driver_sql("BEGIN IMMEDIATE")
    rows = connection.execute(_LOCK_ROOMS, {"rooms": room_ids})
    return {room_id: seq for room_id, seq in rows if room_id is not None}


def _entries_by_key(*, session: Session, entries: Sequence[Entry]) -> dict[tuple[int, str], Entry]:
    """The stored entries whose (room, idempotency key) one of `entries` has."""
    wanted = {(e.room_id, e.idempotency_key) for e in entries if e.idempotency_key is not None}
    found: dict[tuple[int, str], Entry] = {}
    if not wanted:
        return found
    params = {"rooms": sorted({r for r, _ in wanted}), "keys": sorted({k for _, k in wanted})}
    rows = session.connection().execute(_KEYS_USED, params)
    ids = [i for i, room_id, key in rows if (room_id, key) in wanted]
    if ids:  # a retry: rare, so the stored entries are loaded only then
        for stored in session.exec(select(Entry).where(col(Entry.id).in_(ids))).all():
            assert stored.idempotency_key is not None
            found[(stored.room_id, stored.idempotency_key)] = stored
    return found


def copy_entry(entry: Entry) -> Entry:
    """A fresh, unsaved copy (after a failed transaction the original's state is unsure).

    Without id or seq: storing the copy gives it new ones.
    """
    return Entry(
        room_id=entry.room_id,
        kind=entry.kind,
        author_id=entry.author_id,
        author_name=entry.author_name,
        body=entry.body,
        created_at=entry.created_at,
        idempotency_key=entry.idempotency_key,
    )


def entries_after(*, session: Session, room_id: int, after: int, limit: int) -> Sequence[Entry]:
    query = (
        select(Entry)
        .where(Entry.room_id == room_id, col(Entry.id) > after)
        .order_by(col(Entry.id))
        .limit(limit)
    )
    return session.exec(query).all()


def entries_after_seq(
    *, session: Session, room_id: int, after_seq: int, limit: int
) -> Sequence[Entry]:
    query = (
        select(Entry)
        .where(Entry.room_id == room_id, col(Entry.seq) > after_seq)
        .order_by(col(Entry.seq))
        .limit(limit)
    )
    return session.exec(query).all()


def seq_for_cursor(*, session: Session, room_id: int, after: int) -> int:
    """The seq of the room's last entry with an id up to `after` (0: none).

    Exact because a room's ids grow with its seqs (both are given under its lock); a
    cursor beyond the room's newest id maps to its newest seq.
    """
    query = (
        select(Entry.seq)
        .where(Entry.room_id == room_id, col(Entry.id) <= after)
        .order_by(col(Entry.id).desc())
        .limit(1)
    )
    return session.exec(query).first() or 0


def last_seqs(*, session: Session, room_ids: Sequence[int]) -> dict[int, int]:
    rows = session.exec(select(Room.id, Room.last_seq).where(col(Room.id).in_(room_ids))).all()
    return {room_id: seq for room_id, seq in rows if room_id is not None}


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

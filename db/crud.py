"""Queries. Keyword-only, the session first; no HTML here."""

from __future__ import annotations

import json
import secrets
from collections import Counter
from collections.abc import Sequence

from sqlalchemy import bindparam, delete, func, text, update
from sqlalchemy import insert as sa_insert
from sqlalchemy import select as sa_select
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select

from db.models import (
    CHANGE_KINDS,
    QUOTE_MAX,
    REACTIONS,
    SHOWN_KINDS,
    Entry,
    EntryKind,
    Reaction,
    Room,
)

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
# The columns an insert gives (all but the id); db/sqlite_writes.py inserts the same.
ENTRY_COLUMNS = tuple(c.name for c in Entry.__table__.columns if c.name != "id")  # type: ignore[attr-defined]
# One multi-row INSERT for the batch; each row's id is matched back by (room, seq), which
# is unique, so the RETURNING rows may come in any order (asking the database for the
# batch's order made SQLite insert row by row).
_INSERT_ENTRIES = sa_insert(Entry).returning(col(Entry.id), col(Entry.room_id), col(Entry.seq))
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
        if entry.reply_to is not None:
            _quote(session, entry)
        if entry.kind in CHANGE_KINDS:
            _apply_change(session, entry)
    added = Counter(e.room_id for e in fresh)
    if added:
        params = [{"room": room_id, "added": n} for room_id, n in sorted(added.items())]
        session.connection().execute(_ADD_SEQS, params[0] if len(params) == 1 else params)
    if fresh:
        # Core, not the ORM's unit of work (a third of a post's database time).
        rows = [{name: getattr(entry, name) for name in ENTRY_COLUMNS} for entry in fresh]
        ids = {
            (room_id, seq): i
            for i, room_id, seq in session.connection().execute(_INSERT_ENTRIES, rows)
        }
        for entry in fresh:
            entry.id = ids[(entry.room_id, entry.seq)]
    if notify and fresh:
        _notify(session, TIMELINE_CHANNEL, [timeline_payload(e) for e in fresh])
    return results


def quote_of(text_: str | None) -> str | None:
    """The first words of a message, as a reply shows them."""
    if text_ is None:
        return None
    flat = " ".join(text_.split())
    return flat if len(flat) <= QUOTE_MAX else flat[: QUOTE_MAX - 1] + "…"


def _quote(session: Session, entry: Entry) -> None:
    """A reply's snapshot of its original, read under the room's lock (so a delete
    cannot slip in between and leave words behind)."""
    original = session.get(Entry, entry.reply_to)
    if original is None or original.room_id != entry.room_id or original.kind != "message":
        entry.reply_to = None
        return
    entry.quote_author = original.author_name
    entry.quote_text = quote_of(original.body)


def _apply_change(session: Session, change: Entry) -> None:
    """Apply an edit, delete or reaction to its message, in the change's transaction.

    The view checked who may do what; this re-checks under the lock. A change that
    no longer applies (the message was deleted meanwhile) is stored without effect
    and without words.
    """
    conn = session.connection()
    target = change.target_id
    mine = (
        col(Entry.id) == target,
        col(Entry.room_id) == change.room_id,
        col(Entry.kind) == EntryKind.MESSAGE.value,
        col(Entry.deleted_at).is_(None),
    )
    if change.kind == EntryKind.EDIT.value:
        done = conn.execute(
            update(Entry)
            .where(*mine, col(Entry.author_id) == change.author_id)
            .values(body=change.body, edited_at=change.created_at)
        )
        if not done.rowcount:
            change.body = None
            return
        conn.execute(
            update(Entry)
            .where(col(Entry.reply_to) == target)
            .values(quote_text=quote_of(change.body))
        )
    elif change.kind == EntryKind.DELETE.value:
        change.body = None
        done = conn.execute(
            update(Entry)
            .where(*mine, col(Entry.author_id) == change.author_id)
            .values(body=None, deleted_at=change.created_at)
        )
        if not done.rowcount:
            return
        # Its words go everywhere they were kept: earlier versions, replies' quotes.
        conn.execute(
            update(Entry)
            .where(col(Entry.target_id) == target, col(Entry.kind) == EntryKind.EDIT.value)
            .values(body=None)
        )
        conn.execute(update(Entry).where(col(Entry.reply_to) == target).values(quote_text=None))
        conn.execute(delete(Reaction).where(col(Reaction.message_id) == target))
    elif change.kind == EntryKind.REACTION.value:
        emoji = change.body or ""
        alive = conn.execute(sa_select(col(Entry.id)).where(*mine)).first()
        if alive is None:
            change.body = None
            return
        removed = conn.execute(
            delete(Reaction).where(
                col(Reaction.message_id) == target,
                col(Reaction.member_id) == change.author_id,
                col(Reaction.emoji) == emoji,
            )
        )
        if removed.rowcount:
            change.body = "-" + emoji
            return
        assert target is not None
        session.add(
            Reaction(
                message_id=target,
                member_id=change.author_id,
                emoji=emoji,
                author_name=change.author_name,
                created_at=change.created_at,
            )
        )
        change.body = "+" + emoji


_NOTIFY_EACH = text("SELECT pg_notify(:channel, p) FROM unnest(CAST(:payloads AS text[])) AS t(p)")


def _notify(session: Session, channel: str, payloads: list[str]) -> None:
    """NOTIFY each payload, in order, in the session's transaction."""
    session.connection().execute(_NOTIFY_EACH, {"channel": channel, "payloads": payloads})


def timeline_payload(entry: Entry) -> str:
    """What a listener needs to render the entry without a query; ids only if too long."""
    assert entry.id is not None and entry.seq is not None
    if entry.kind in CHANGE_KINDS:
        # Rendered from the message's state in the database, as every replay does.
        change = {"r": entry.room_id, "s": entry.seq, "i": entry.id, "k": entry.kind}
        return json.dumps({**change, "g": entry.target_id}, separators=(",", ":"))
    fields: dict[str, object] = {
        "r": entry.room_id,
        "s": entry.seq,
        "i": entry.id,
        "k": entry.kind,
        "a": entry.author_id,
        "n": entry.author_name,
        "b": entry.body,
        "t": entry.created_at.isoformat(),
    }
    if entry.reply_to is not None:
        fields.update(p=entry.reply_to, qa=entry.quote_author, qt=entry.quote_text)
    full = json.dumps(fields, ensure_ascii=False, separators=(",", ":"))
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
        reply_to=entry.reply_to,
        target_id=entry.target_id,
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


def entry_at_cursor(*, session: Session, room_id: int, after: int) -> tuple[int, int]:
    """(id, seq) of the room's last entry with an id up to `after`; (0, 0) for none.

    Exact because a room's ids grow with its seqs (both are given under its lock); a
    cursor beyond the room's newest id maps to its newest entry.
    """
    query = (
        select(Entry.id, Entry.seq)
        .where(Entry.room_id == room_id, col(Entry.id) <= after)
        .order_by(col(Entry.id).desc())
        .limit(1)
    )
    row = session.exec(query).first()
    return (row[0] or 0, row[1] or 0) if row is not None else (0, 0)


def last_seqs(*, session: Session, room_ids: Sequence[int]) -> dict[int, int]:
    rows = session.exec(select(Room.id, Room.last_seq).where(col(Room.id).in_(room_ids))).all()
    return {room_id: seq for room_id, seq in rows if room_id is not None}


def entries_before(
    *, session: Session, room_id: int, before: int | None, limit: int
) -> Sequence[Entry]:
    """The `limit` entries just before `before` (or the newest), oldest first."""
    query = select(Entry).where(Entry.room_id == room_id, col(Entry.kind).in_(SHOWN_KINDS))
    if before is not None:
        query = query.where(col(Entry.id) < before)
    rows = session.exec(query.order_by(col(Entry.id).desc()).limit(limit)).all()
    return list(reversed(rows))


def shown_after(*, session: Session, room_id: int, after: int, limit: int) -> Sequence[Entry]:
    """The `limit` entries a page shows just after id `after`, oldest first."""
    query = (
        select(Entry)
        .where(Entry.room_id == room_id, col(Entry.kind).in_(SHOWN_KINDS), col(Entry.id) > after)
        .order_by(col(Entry.id))
        .limit(limit)
    )
    return session.exec(query).all()


def get_entry(*, session: Session, entry_id: int) -> Entry | None:
    return session.get(Entry, entry_id)


ReactionSummary = list[tuple[str, int, list[str]]]  # (emoji, count, names) in REACTIONS order


def reactions_for(*, session: Session, message_ids: Sequence[int]) -> dict[int, ReactionSummary]:
    """Each message's reactions, for showing: emoji, how many, who."""
    if not message_ids:
        return {}
    rows = session.exec(
        select(Reaction)
        .where(col(Reaction.message_id).in_(message_ids))
        .order_by(col(Reaction.created_at))
    ).all()
    names: dict[int, dict[str, list[str]]] = {}
    for reaction in rows:
        names.setdefault(reaction.message_id, {}).setdefault(reaction.emoji, []).append(
            reaction.author_name
        )
    order = {emoji: n for n, emoji in enumerate(REACTIONS)}
    return {
        message_id: sorted(
            ((emoji, len(who), who) for emoji, who in by_emoji.items()),
            key=lambda item: order.get(item[0], len(order)),
        )
        for message_id, by_emoji in names.items()
    }


def changed_messages(
    *, session: Session, changes: Sequence[Entry]
) -> tuple[dict[int, Entry], dict[int, list[Entry]]]:
    """For change entries: the messages they changed (as they are now) and, for edits and
    deletes, the replies that quote those messages (their quotes changed too)."""
    targets = sorted({c.target_id for c in changes if c.target_id is not None})
    if not targets:
        return {}, {}
    messages = {
        m.id: m for m in session.exec(select(Entry).where(col(Entry.id).in_(targets))).all()
    }
    quoting = sorted(
        {
            c.target_id
            for c in changes
            if c.target_id is not None and c.kind != EntryKind.REACTION.value
        }
    )
    replies: dict[int, list[Entry]] = {}
    if quoting:
        rows = session.exec(
            select(Entry).where(col(Entry.reply_to).in_(quoting)).order_by(col(Entry.id))
        ).all()
        for reply in rows:
            assert reply.reply_to is not None
            replies.setdefault(reply.reply_to, []).append(reply)
    return {i: m for i, m in messages.items() if i is not None}, replies


def room_names(*, session: Session, room_id: int) -> list[tuple[str, str]]:
    """(name, member id) of everyone who has joined the room, once per name."""
    rows = session.exec(
        select(Entry.author_name, func.max(Entry.author_id))
        .where(Entry.room_id == room_id, Entry.kind == EntryKind.JOIN.value)
        .group_by(col(Entry.author_name))
    ).all()
    return [(name, member_id) for name, member_id in rows]


def neighbours(
    *, session: Session, room_id: int, entry_id: int
) -> tuple[Entry | None, Entry | None]:
    """The messages just before and just after a message (for a search result's context)."""
    messages = select(Entry).where(
        Entry.room_id == room_id,
        Entry.kind == EntryKind.MESSAGE.value,
        col(Entry.deleted_at).is_(None),
    )
    before = session.exec(
        messages.where(col(Entry.id) < entry_id).order_by(col(Entry.id).desc()).limit(1)
    ).first()
    after = session.exec(
        messages.where(col(Entry.id) > entry_id).order_by(col(Entry.id)).limit(1)
    ).first()
    return before, after


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


def ping(*, session: Session) -> None:
    session.exec(select(text("1"))).one()

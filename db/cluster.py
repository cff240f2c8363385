"""Queries for several processes on one PostgreSQL database: nodes, presence claims.

A member is present in a room while at least one claim row says some process holds
them there. Claims are added and removed under the room's row lock (the lock that
numbers entries), so whether a change is a JOIN or a LEAVE is decided exactly once,
whichever processes race: the first claim records the JOIN, removing the last one
records the LEAVE. A process that stops renewing its lease (`sala_node.expires_at`,
on the database's clock) has its claims removed by a sweeper on another process.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import cast

from sqlalchemy import Engine, text
from sqlmodel import Session

from db.crud import PRESENCE_CHANNEL, _notify, insert_entries
from db.models import Entry, EntryKind

# Held (pg_try_advisory_lock) by the one process sweeping at a time: b"SWEP".
SWEEP_LOCK_KEY = 0x53574550

_LISTEN_APP = "sala-listen-"


def listen_application_name(node_id: str) -> str:
    return _LISTEN_APP + node_id


def register_node(*, session: Session, node_id: str, host: str, pid: int, lease: float) -> None:
    session.connection().execute(
        text(
            "INSERT INTO sala_node (id, host, pid, started_at, expires_at) "
            "VALUES (:id, :host, :pid, now(), now() + make_interval(secs => :lease)) "
            "ON CONFLICT (id) DO UPDATE SET expires_at = EXCLUDED.expires_at"
        ),
        {"id": node_id, "host": host[:255], "pid": pid, "lease": lease},
    )
    session.commit()


def renew_node(*, session: Session, node_id: str, lease: float) -> bool:
    """Extend the lease; False when the row is gone (this node was swept)."""
    row = session.connection().execute(
        text(
            "UPDATE sala_node SET expires_at = now() + make_interval(secs => :lease) "
            "WHERE id = :id RETURNING id"
        ),
        {"id": node_id, "lease": lease},
    )
    renewed = row.first() is not None
    session.commit()
    return renewed


def set_listen_pid(*, session: Session, node_id: str, pid: int) -> None:
    session.connection().execute(
        text("UPDATE sala_node SET listen_pid = :pid WHERE id = :id"), {"id": node_id, "pid": pid}
    )
    session.commit()


def claim(
    *, session: Session, room_id: int, member_id: str, node_id: str, name: str
) -> Entry | None:
    """This node holds the member in the room; the JOIN entry if they were not present."""
    try:
        _lock_room(session, room_id)
        present = (
            session.connection()
            .execute(
                text(
                    "SELECT 1 FROM presence_claim WHERE room_id = :room AND member_id = :member "
                    "LIMIT 1"
                ),
                {"room": room_id, "member": member_id},
            )
            .first()
        )
        session.connection().execute(
            text(
                "INSERT INTO presence_claim (room_id, member_id, node_id, name, claimed_at) "
                "VALUES (:room, :member, :node, :name, now()) "
                "ON CONFLICT (room_id, member_id, node_id) DO UPDATE SET name = EXCLUDED.name"
            ),
            {"room": room_id, "member": member_id, "node": node_id, "name": name},
        )
        joined = None
        if present is None:
            joined = _record(session, room_id, EntryKind.JOIN, member_id, name)
        _notify(session, PRESENCE_CHANNEL, [json.dumps({"r": room_id})])
        session.commit()
    except BaseException:
        session.rollback()
        raise
    return joined


def release(*, session: Session, room_id: int, member_id: str, node_id: str | None) -> Entry | None:
    """The node (every node when None: the member left on purpose) no longer holds the
    member; the LEAVE entry if that was their last claim."""
    try:
        _lock_room(session, room_id)
        params = {"room": room_id, "member": member_id, "node": node_id}
        only_node = " AND node_id = :node" if node_id is not None else ""
        names = [
            str(name)
            for (name,) in session.connection().execute(
                text(
                    "DELETE FROM presence_claim WHERE room_id = :room AND member_id = :member"
                    f"{only_node} RETURNING name"
                ),
                params,
            )
        ]
        left = None
        if names:
            remaining = (
                session.connection()
                .execute(
                    text(
                        "SELECT 1 FROM presence_claim "
                        "WHERE room_id = :room AND member_id = :member LIMIT 1"
                    ),
                    params,
                )
                .first()
            )
            if remaining is None:
                left = _record(session, room_id, EntryKind.LEAVE, member_id, names[0])
        payload: dict[str, object] = {"r": room_id}
        if node_id is None:
            payload["left"] = member_id  # every process ends the member's streams here
        if names or node_id is None:
            _notify(session, PRESENCE_CHANNEL, [json.dumps(payload)])
        session.commit()
    except BaseException:
        session.rollback()
        raise
    return left


def _lock_room(session: Session, room_id: int) -> None:
    session.connection().execute(
        text("SELECT id FROM room WHERE id = :room FOR UPDATE"), {"room": room_id}
    )


def _record(session: Session, room_id: int, kind: EntryKind, member_id: str, name: str) -> Entry:
    entry = Entry(room_id=room_id, kind=kind.value, author_id=member_id, author_name=name)
    return insert_entries(session=session, entries=[entry], notify=True)[0][0]


def room_members(*, session: Session, room_id: int) -> list[tuple[str, str]]:
    """(member id, name) of everyone present in the room on any process."""
    rows = session.connection().execute(
        text(
            "SELECT member_id, min(name) FROM presence_claim WHERE room_id = :room "
            "GROUP BY member_id"
        ),
        {"room": room_id},
    )
    return [(str(member_id), str(name)) for member_id, name in rows]


def dead_nodes(*, session: Session) -> list[tuple[str, int | None]]:
    rows = session.connection().execute(
        text("SELECT id, listen_pid FROM sala_node WHERE expires_at < now() ORDER BY id")
    )
    return [(str(node_id), cast(int | None, pid)) for node_id, pid in rows]


def end_listener(*, session: Session, node_id: str, pid: int) -> None:
    """End a dead node's LISTEN backend (it could pin the notification queue), checked
    by name: PIDs are reused."""
    session.connection().execute(
        text(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE pid = :pid AND application_name = :app"
        ),
        {"pid": pid, "app": listen_application_name(node_id)},
    )
    session.commit()


def node_claims(*, session: Session, node_id: str) -> Sequence[tuple[int, str]]:
    rows = session.connection().execute(
        text("SELECT room_id, member_id FROM presence_claim WHERE node_id = :node"),
        {"node": node_id},
    )
    return [(cast(int, room_id), str(member_id)) for room_id, member_id in rows]


def forget_node(*, session: Session, node_id: str) -> None:
    session.connection().execute(
        text(
            "DELETE FROM sala_node WHERE id = :id AND expires_at < now() "
            "AND NOT EXISTS (SELECT 1 FROM presence_claim WHERE node_id = :id)"
        ),
        {"id": node_id},
    )
    session.commit()


def shorten_lease(*, session: Session, node_id: str, seconds: float) -> None:
    """Shutting down: keep the claims (readers move to other processes without noise);
    whoever has not come back by then is swept."""
    session.connection().execute(
        text(
            "UPDATE sala_node SET expires_at = now() + make_interval(secs => :seconds), "
            "listen_pid = NULL WHERE id = :id"
        ),
        {"id": node_id, "seconds": seconds},
    )
    session.commit()


def queue_usage(*, session: Session) -> float:
    usage = session.connection().execute(text("SELECT pg_notification_queue_usage()"))
    return float(usage.scalar_one())


def sweep(*, engine: Engine) -> int:
    """Release every claim of nodes whose lease has run out, then forget those nodes.

    One process sweeps at a time (an advisory lock; the others skip this round).
    Each claim goes through `release`, so a member held by no live process any more
    leaves exactly once. Returns how many claims were released.
    """
    released = 0
    with engine.connect() as conn:
        locked = conn.execute(text("SELECT pg_try_advisory_lock(:k)"), {"k": SWEEP_LOCK_KEY})
        got = bool(locked.scalar())
        conn.commit()
        if not got:
            return 0
        try:
            with Session(engine) as session:
                for node_id, pid in dead_nodes(session=session):
                    session.commit()
                    if pid is not None:
                        end_listener(session=session, node_id=node_id, pid=pid)
                    for room_id, member_id in node_claims(session=session, node_id=node_id):
                        session.commit()
                        release(
                            session=session, room_id=room_id, member_id=member_id, node_id=node_id
                        )
                        released += 1
                    forget_node(session=session, node_id=node_id)
        finally:
            conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": SWEEP_LOCK_KEY})
            conn.commit()
    return released


def notify(*, session: Session, channel: str, payload: str) -> None:
    session.connection().execute(
        text("SELECT pg_notify(:channel, :payload)"), {"channel": channel, "payload": payload}
    )
    session.commit()

"""Per-room sequence numbers: 1, 2, 3… in every room, given under the room's lock.

Whoever writes, and however many write at once, a room's entries are numbered
without a gap or a repeat, in id order, and room.last_seq is the newest number.
"""

from __future__ import annotations

import sqlite3
import threading
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import anyio
import pytest
from sqlalchemy import Engine, create_engine
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlmodel import Session, col, select

from db import crud
from db.engine import init_db, make_engine
from db.models import Entry, EntryKind, Room
from db.sqlite_writes import SqliteWrites
from db.store import Store
from tests.client import Person
from tests.conftest import ServerFactory
from tests.test_migrations import ENTRIES, ROOMS, _make_legacy, _rows
from tests.test_migrations import database_url as database_url  # SQLite and PostgreSQL
from tests.test_postgres import postgres_url as postgres_url  # a fresh database per test
from web.app import _unreachable

POSTERS = 8
MESSAGES = 50  # each, half in either room


def _numbering(engine: Engine) -> tuple[dict[str, list[tuple[int, int, str]]], dict[str, int]]:
    """Each room's (id, seq, kind) in id order, and each room's last_seq, by code."""
    with Session(engine) as session:
        rows = session.exec(
            select(Room.code, Entry.id, Entry.seq, Entry.kind)
            .join(Room, col(Room.id) == Entry.room_id)
            .order_by(col(Entry.id))
        ).all()
        last = dict(session.exec(select(Room.code, Room.last_seq)).all())
    entries: dict[str, list[tuple[int, int, str]]] = defaultdict(list)
    for code, entry_id, seq, kind in rows:
        assert entry_id is not None and seq is not None
        entries[code].append((entry_id, seq, kind))
    return dict(entries), last


def _assert_numbered(engine: Engine) -> dict[str, list[tuple[int, int, str]]]:
    """Every room's seqs are exactly 1..n in id order, and its last_seq is n."""
    entries, last = _numbering(engine)
    for code, last_seq in last.items():
        seqs = [seq for _, seq, _ in entries.get(code, [])]
        assert seqs == list(range(1, len(seqs) + 1)), code
        assert last_seq == len(seqs), code
    return entries


@pytest.mark.anyio
async def test_concurrent_posts_number_each_room_one_to_n(
    make_server: ServerFactory, database_url: str
) -> None:
    server = make_server(database_url=database_url, limits="off")
    async with Person(server.url, "Host") as host:
        codes = [await host.create_room(), await host.create_room()]
    people = [Person(server.url, f"P{i}") for i in range(POSTERS)]
    answers: list[int] = []

    async def post(person: Person) -> None:
        for code in codes:
            assert (await person.join(code)).status_code == 303
        for n in range(MESSAGES):
            key = f"{person.name}-{n}"
            answers.append((await person.say(codes[n % 2], f"{key}", key=key)).status_code)
        # A retry stores nothing and takes no number.
        answers.append((await person.say(codes[0], "again", key=f"{person.name}-0")).status_code)

    try:
        async with anyio.create_task_group() as group:
            for person in people:
                group.start_soon(post, person)
    finally:
        for person in people:
            await person.client.aclose()
    assert answers == [200] * (POSTERS * (MESSAGES + 1))
    engine = make_engine(database_url)
    try:
        entries = _assert_numbered(engine)
    finally:
        engine.dispose()
    for code in codes:
        messages = [e for e in entries[code] if e[2] == "message"]
        assert len(messages) == POSTERS * MESSAGES // 2


@pytest.mark.anyio
async def test_joins_and_leaves_are_numbered_with_the_messages(
    make_server: ServerFactory,
) -> None:
    server = make_server(presence_grace_seconds=60)
    async with Person(server.url, "Ana") as ana, Person(server.url, "Bo") as bo:
        code = await ana.create_room()
        assert (await bo.join(code)).status_code == 303
        async with ana.stream(code) as watching, bo.stream(code):
            await watching.wait_for(lambda s: ["Ana", "Bo"] in s.presence)
            assert (await ana.say(code, "hello")).status_code == 200
            assert (await bo.client.post(f"/rooms/{code}/leave")).status_code == 303
            await watching.wait_for(lambda s: [e.kind for e in s.entries][-1:] == ["leave"], 5)
    engine = make_engine(f"sqlite:///{server.db_path}")
    try:
        entries = _assert_numbered(engine)
    finally:
        engine.dispose()
    assert [(seq, kind) for _, seq, kind in entries[code]] == [
        (1, "join"),
        (2, "join"),
        (3, "message"),
        (4, "leave"),
    ]


WRITERS = 6
ROUNDS = 15


def test_writers_with_engines_of_their_own_take_turns_per_room(database_url: str) -> None:
    """Each writer has its own engine, as another process would: the room's lock (a row
    lock on PostgreSQL, the write lock on SQLite) makes them take turns. Batches name
    the rooms in either order (no deadlock), and in every round all writers send the
    same idempotency key at once: it is stored once, and all of them get that one."""
    setup = make_engine(database_url)
    init_db(setup)
    sqlite = setup.dialect.name == "sqlite"
    with Session(setup) as session:
        rooms = [crud.create_room(session=session).id for _ in range(2)]
    a, b = (r for r in rooms if r is not None)
    start = threading.Barrier(WRITERS)
    shared: dict[int, list[tuple[int | None, bool]]] = defaultdict(list)
    lock = threading.Lock()

    def write(writer: int) -> None:
        engine = make_engine(database_url)
        try:
            for round_ in range(ROUNDS):
                batch = [
                    _message(a if writer % 2 else b, f"w{writer} r{round_} first"),
                    _message(b if writer % 2 else a, f"w{writer} r{round_} second"),
                    _message(a, "shared", key=f"shared-{round_}"),
                    _message(b, f"w{writer} r{round_} third"),
                ]
                start.wait(timeout=10)
                if sqlite and writer % 2:
                    # On SQLite half the writers take the driver's own path: the two
                    # paths take turns under one write lock.
                    assert SqliteWrites.takes(batch)
                    results = SqliteWrites(engine).create_entries(batch)
                else:
                    with Session(engine, expire_on_commit=False) as session:
                        results = crud.create_entries(session=session, entries=batch)
                assert [r[1] for r in results][:2] == [True, True]
                assert all(entry.seq is not None for entry, _ in results)
                with lock:
                    shared[round_].append((results[2][0].id, results[2][1]))
        finally:
            engine.dispose()

    try:
        with ThreadPoolExecutor(WRITERS) as pool:
            for done in [pool.submit(write, w) for w in range(WRITERS)]:
                done.result()
        entries = _assert_numbered(setup)
    finally:
        setup.dispose()
    assert sum(len(e) for e in entries.values()) == WRITERS * ROUNDS * 3 + ROUNDS
    for round_ in range(ROUNDS):
        ids = {entry_id for entry_id, _ in shared[round_]}
        assert len(ids) == 1, ids
        assert sorted(is_new for _, is_new in shared[round_]) == [False] * (WRITERS - 1) + [True]


def _message(room_id: int, body: str, *, key: str | None = None) -> Entry:
    return Entry(
        room_id=room_id,
        kind=EntryKind.MESSAGE.value,
        author_id="m-writer",
        author_name="Writer",
        body=body,
        idempotency_key=key,
    )


@pytest.mark.anyio
async def test_an_old_database_is_numbered_per_room_in_id_order(database_url: str) -> None:
    legacy = _make_legacy(database_url)
    sqlite = legacy.dialect.name == "sqlite"
    if sqlite:
        with legacy.begin() as conn:
            # As if entries 11 to 20 had been stored and removed: their ids stay unused.
            conn.exec_driver_sql("UPDATE sqlite_sequence SET seq = 20 WHERE name = 'entry'")
    before = _rows(legacy)
    try:
        init_db(legacy)
        assert _rows(legacy) == before
        entries = _assert_numbered(legacy)
        for room_id, code in enumerate(ROOMS, start=1):
            ids = [i for i, entry in enumerate(ENTRIES, start=1) if entry[0] == room_id]
            numbered = [(i, seq) for i, seq, _ in entries.get(code, [])]
            assert numbered == [(i, n) for n, i in enumerate(ids, start=1)]
    finally:
        legacy.dispose()

    store = Store(database_url)
    try:
        store.init()
        old_key = _message(1, "a retry of an old message", key="key-1")
        (stored, is_new), (new, new_is_new), (other, _) = await store.create_entries(
            [old_key, _message(1, "after the upgrade"), _message(3, "first in the empty room")]
        )
        assert (stored.id, stored.seq, is_new) == (3, 3, False)
        assert new_is_new and new.seq == 8 and new.id == (21 if sqlite else len(ENTRIES) + 1)
        assert other.seq == 1
        _assert_numbered(store.engine)
    finally:
        store.dispose()


def test_a_failed_batch_takes_no_numbers(tmp_path: Path) -> None:
    """A batch that cannot be stored leaves last_seq as it was, and a copy stores anew."""
    engine = make_engine(f"sqlite:///{tmp_path / 'sala.db'}")
    try:
        init_db(engine)
        with Session(engine) as session:
            room = crud.create_room(session=session).id
        assert room is not None
        bad = _message(room, "x" * 10)
        bad.author_name = None  # type: ignore[assignment]  # NOT NULL: the insert fails
        batch = [_message(room, "good"), bad]
        with Session(engine, expire_on_commit=False) as session, pytest.raises(IntegrityError):
            crud.create_entries(session=session, entries=batch)
        assert _numbering(engine)[1] == {_code(engine, room): 0}
        with Session(engine, expire_on_commit=False) as session:
            stored = crud.create_entries(session=session, entries=[crud.copy_entry(batch[0])])
        assert stored[0][0].seq == 1
        _assert_numbered(engine)
        with Session(engine) as session, pytest.raises(ValueError, match="no room"):
            crud.create_entries(session=session, entries=[_message(room + 1, "nowhere")])
    finally:
        engine.dispose()


def test_the_sqlite_write_path_stores_what_the_general_one_does(tmp_path: Path) -> None:
    """Every post on SQLite goes through db/sqlite_writes.py; crud.create_entries is
    the general path (and PostgreSQL's). The same batches through either, into two
    databases, leave the same rows, answer the same (id, seq, is_new), and find the
    same words. Batches the fast path does not take (a key used before or twice in the
    batch, a reply, an edit) go to the general path, with the same answers."""
    engines = [make_engine(f"sqlite:///{tmp_path / name}.db") for name in ("fast", "general")]
    answers: list[list[list[tuple[int | None, int | None, bool]]]] = []
    tables: list[list[list[tuple[Any, ...]]]] = []
    try:
        for engine in engines:
            init_db(engine)
            with Session(engine) as session:
                for _ in range(3):
                    crud.create_room(session=session)
            with engine.begin() as conn:  # ids that were used before and deleted stay unused
                conn.exec_driver_sql("UPDATE sqlite_sequence SET seq = 20 WHERE name = 'entry'")
        moment = datetime(2026, 12, 1, 12, 30, 5, 123456, tzinfo=UTC)

        def batches() -> list[list[Entry]]:
            def message(
                room: int, body: str, key: str | None = None, to: int | None = None
            ) -> Entry:
                return Entry(
                    room_id=room,
                    kind="message",
                    body=body,
                    idempotency_key=key,
                    reply_to=to,
                    author_id="m-ana",
                    author_name="Ana",
                    created_at=moment,
                )

            return [
                [message(2, "one"), message(1, "two <b>&"), message(3, "três 🙂", key="k1")],
                [message(1, "olá mundo", key="k2"), message(2, "join?")],
                [message(1, "retry", key="k2"), message(3, "new")],  # a key seen before
                [message(2, "same", key="k3"), message(2, "same", key="k3")],  # twice
                [message(1, "a reply", to=22)],
                [
                    Entry(
                        room_id=1,
                        kind="edit",
                        body="dois",
                        target_id=22,
                        author_id="m-ana",
                        author_name="Ana",
                        created_at=moment,
                    )
                ],
                [
                    Entry(
                        room_id=3,
                        kind="join",
                        author_id="m-bo",
                        author_name="Bo",
                        created_at=moment,
                    )
                ],
            ]

        takes = [SqliteWrites.takes(batch) for batch in batches()]
        assert takes == [True, True, True, False, False, False, True]
        for engine, path in zip(engines, ("fast", "general"), strict=True):
            results = []
            for batch in batches():
                if path == "fast" and SqliteWrites.takes(batch):
                    stored = SqliteWrites(engine).create_entries(batch)
                else:
                    with Session(engine, expire_on_commit=False) as session:
                        stored = crud.create_entries(session=session, entries=batch)
                results.append([(entry.id, entry.seq, new) for entry, new in stored])
            answers.append(results)
            queries = [
                "SELECT * FROM entry ORDER BY id",
                "SELECT id, last_seq FROM room ORDER BY id",  # (codes are random)
                "SELECT * FROM sqlite_sequence ORDER BY name",
                "SELECT rowid FROM entry_fts WHERE entry_fts MATCH 'mundo OR dois' ORDER BY 1",
            ]
            with engine.connect() as conn:
                tables.append([[tuple(row) for row in conn.exec_driver_sql(q)] for q in queries])
        assert answers[0] == answers[1]
        assert answers[0][0] == [(21, 1, True), (22, 1, True), (23, 1, True)]
        assert answers[0][2][0] == (24, 2, False)
        assert tables[0] == tables[1]
        assert tables[0][3] == [(22,), (24,)]
        _assert_numbered(engines[0])
    finally:
        for engine in engines:
            engine.dispose()


def test_a_locked_sqlite_database_is_an_outage_on_the_fast_path_too(tmp_path: Path) -> None:
    """Another writer holding SQLite's write lock past the busy timeout: the fast path
    raises what SQLAlchemy's raises (an OperationalError the app answers with 503 and
    Retry-After, tests/test_pg_broker.py), and stores nothing."""
    url = f"sqlite:///{tmp_path / 'sala.db'}"
    setup = make_engine(url)
    impatient = create_engine(url, connect_args={"timeout": 0.2})
    holder = sqlite3.connect(tmp_path / "sala.db", isolation_level=None)
    try:
        init_db(setup)
        with Session(setup) as session:
            room = crud.create_room(session=session).id
        assert room is not None
        batch = [_message(room, "while locked", key="k-locked")]
        assert SqliteWrites.takes(batch)
        holder.execute("BEGIN IMMEDIATE")
        with pytest.raises(OperationalError, match="database is locked") as raised:
            SqliteWrites(impatient).create_entries(batch)
        assert _unreachable(raised.value)
        holder.execute("ROLLBACK")
        assert _numbering(setup) == ({}, {_code(setup, room): 0})
        ((stored, is_new),) = SqliteWrites(impatient).create_entries(batch)
        assert (stored.seq, is_new) == (1, True)
    finally:
        holder.close()
        impatient.dispose()
        setup.dispose()


def _code(engine: Engine, room_id: int) -> str:
    with engine.connect() as conn:
        return str(conn.exec_driver_sql("SELECT code FROM room WHERE id = ?", (room_id,)).scalar())


def test_a_fresh_entry_is_the_entry_its_init_would_build() -> None:
    """Entry.fresh skips SQLModel's slow table-model __init__ (the timeline builds one
    per post): the instance must be the same, field for field, and a normal mapped
    instance (transient, settable, storable)."""
    from sqlalchemy import inspect

    cases: list[dict[str, Any]] = [
        {"room_id": 1, "kind": "message", "author_id": "a", "author_name": "Ana", "body": "hi"},
        {"room_id": 2, "kind": "join", "author_id": "b", "author_name": "Bo"},
        {
            "room_id": 3,
            "kind": "edit",
            "author_id": "a",
            "author_name": "Ana",
            "body": "new",
            "idempotency_key": "k",
            "target_id": 7,
            "reply_to": None,
        },
    ]
    for values in cases:
        slow, fast = Entry(**values), Entry.fresh(**values)
        assert sorted(slow.__dict__) == sorted(fast.__dict__)
        assert slow.model_dump(exclude={"created_at"}) == fast.model_dump(exclude={"created_at"})
        assert slow.model_fields_set == fast.model_fields_set
        assert fast.created_at.tzinfo is not None
        assert inspect(fast).transient
        fast.seq, fast.id = 5, 9
        assert (fast.seq, fast.id) == (5, 9)
        assert inspect(fast).attrs.seq.history.added == [5]

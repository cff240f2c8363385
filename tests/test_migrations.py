"""Schema migrations: a database from before them upgrades in place, once, keeping every row."""

from __future__ import annotations

import logging
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, Engine, create_engine, inspect
from sqlalchemy.exc import DataError
from sqlmodel import SQLModel

from db import migrations
from db.engine import init_db, make_engine, normalize_url
from db.migrations import outside_the_models
from db.models import UTCDateTime
from db.store import Store
from tests.client import Person, page_entries
from tests.conftest import ROOT, Server
from tests.test_postgres import postgres_url as postgres_url  # a fresh database per test

HEAD = ScriptDirectory(str(migrations.SCRIPT_LOCATION)).get_current_head()

# What `SQLModel.metadata.create_all` made before migrations existed (every earlier main).
LEGACY_SQLITE = [
    "CREATE TABLE room (\n\tid INTEGER NOT NULL PRIMARY KEY AUTOINCREMENT, \n"
    "\tcode VARCHAR(6) NOT NULL, \n\tcreated_at DATETIME NOT NULL\n)",
    "CREATE UNIQUE INDEX ix_room_code ON room (code)",
    "CREATE TABLE entry (\n\tid INTEGER NOT NULL PRIMARY KEY AUTOINCREMENT, \n"
    "\troom_id INTEGER NOT NULL, \n\tkind VARCHAR(8) NOT NULL, \n"
    "\tauthor_name VARCHAR(32) NOT NULL, \n\tauthor_id VARCHAR(64) NOT NULL, \n"
    "\tbody VARCHAR, \n\tcreated_at DATETIME NOT NULL, \n\tidempotency_key VARCHAR(64), \n"
    "\tCONSTRAINT uq_entry_room_key UNIQUE (room_id, idempotency_key), \n"
    "\tFOREIGN KEY(room_id) REFERENCES room (id)\n)",
    "CREATE INDEX ix_entry_room_author ON entry (room_id, author_id, id)",
    "CREATE INDEX ix_entry_room_id_id ON entry (room_id, id)",
]
LEGACY_POSTGRESQL = [
    "CREATE TABLE room (\n\tid SERIAL NOT NULL, \n\tcode VARCHAR(6) NOT NULL, \n"
    "\tcreated_at TIMESTAMP WITH TIME ZONE NOT NULL, \n\tPRIMARY KEY (id)\n)",
    "CREATE UNIQUE INDEX ix_room_code ON room (code)",
    "CREATE TABLE entry (\n\tid SERIAL NOT NULL, \n\troom_id INTEGER NOT NULL, \n"
    "\tkind VARCHAR(8) NOT NULL, \n\tauthor_name VARCHAR(32) NOT NULL, \n"
    "\tauthor_id VARCHAR(64) NOT NULL, \n\tbody VARCHAR, \n"
    "\tcreated_at TIMESTAMP WITH TIME ZONE NOT NULL, \n\tidempotency_key VARCHAR(64), \n"
    "\tPRIMARY KEY (id), \n\tCONSTRAINT uq_entry_room_key UNIQUE (room_id, idempotency_key), \n"
    "\tFOREIGN KEY(room_id) REFERENCES room (id)\n)",
    "CREATE INDEX ix_entry_room_author ON entry (room_id, author_id, id)",
    "CREATE INDEX ix_entry_room_id_id ON entry (room_id, id)",
]

T0 = datetime(2025, 3, 1, 9, 0, 0, 123456, tzinfo=UTC)
ROOMS = ["ABCDEF", "GHJKMN", "PQRSTU"]  # the last one stays empty: rooms are kept
# (room, kind, author id, author name, body, idempotency key)
ENTRIES = [
    (1, "join", "m-ana", "Ana", None, None),
    (1, "join", "m-bo", "Bo", None, None),
    (1, "message", "m-ana", "Ana", "olá <b>mundo</b>", "key-1"),
    (1, "message", "m-bo", "Bo", "linha 1\nlinha 2 🎉", "key-2"),
    (1, "message", "m-ana", "Ana", "sem chave", None),
    (2, "join", "m-caio", "Caio", None, None),
    (2, "message", "m-caio", "Caio", "a key used in another room", "key-1"),
    (1, "leave", "m-bo", "Bo", None, None),
    (2, "leave", "m-caio", "Caio", None, None),
    (1, "leave", "m-ana", "Ana", None, None),
]

_room = sa.table("room", sa.column("code"), sa.column("created_at", UTCDateTime()))
_entry = sa.table(
    "entry",
    *(sa.column(name) for name in ("room_id", "kind", "author_id", "author_name", "body")),
    sa.column("idempotency_key"),
    sa.column("created_at", UTCDateTime()),
)

# A start-up in its own process that waits for a go, so that they all migrate at once.
_START_UP = """
import sys
from db.engine import init_db, make_engine
engine = make_engine(sys.argv[1])
print("ready", flush=True)
sys.stdin.readline()
init_db(engine)
engine.dispose()
"""


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'sala.db'}"
    url: str = request.getfixturevalue("postgres_url")
    return url


def _plain_engine(url: str) -> Engine:
    """An engine without Sala's set-up: no pragmas, no migrations."""
    return create_engine(normalize_url(url))


def _make_legacy(url: str) -> Engine:
    engine = _plain_engine(url)
    ddl = LEGACY_SQLITE if engine.dialect.name == "sqlite" else LEGACY_POSTGRESQL
    with engine.begin() as conn:
        for statement in ddl:
            conn.exec_driver_sql(statement)
        for i, code in enumerate(ROOMS):
            conn.execute(_room.insert().values(code=code, created_at=T0 + timedelta(minutes=i)))
        for i, (room_id, kind, author_id, name, body, key) in enumerate(ENTRIES):
            conn.execute(
                _entry.insert().values(
                    room_id=room_id,
                    kind=kind,
                    author_id=author_id,
                    author_name=name,
                    body=body,
                    idempotency_key=key,
                    created_at=T0 + timedelta(seconds=i),
                )
            )
    return engine


def _empty_beside(url: str, tmp_path: Path) -> Engine:
    """An empty database next to `url`'s (on PostgreSQL a schema of its own in it)."""
    if url.startswith("sqlite"):
        return make_engine(f"sqlite:///{tmp_path / 'fresh.db'}")
    admin = _plain_engine(url)
    with admin.begin() as conn:
        conn.exec_driver_sql("CREATE SCHEMA fresh")
    admin.dispose()
    return create_engine(normalize_url(url), connect_args={"options": "-c search_path=fresh"})


# The columns the legacy rows were made with; later revisions add columns of their own.
LEGACY_COLUMNS = {
    "room": "id, code, created_at",
    "entry": "id, room_id, kind, author_name, author_id, body, created_at, idempotency_key",
}


def _rows(engine: Engine) -> dict[str, list[tuple[Any, ...]]]:
    with engine.connect() as conn:
        return {
            table: [
                tuple(row)
                for row in conn.exec_driver_sql(f"SELECT {columns} FROM {table} ORDER BY id")
            ]
            for table, columns in LEGACY_COLUMNS.items()
        }


def _versions(engine: Engine) -> list[str]:
    with engine.connect() as conn:
        return [row[0] for row in conn.exec_driver_sql("SELECT version_num FROM alembic_version")]


def _schema(engine: Engine) -> dict[str, Any]:
    """Tables, columns, keys and indexes as the database reports them."""
    with engine.connect() as conn:
        found = inspect(conn)
        schema: dict[str, Any] = {}
        for table in sorted(found.get_table_names()):
            schema[table] = (
                [(c["name"], str(c["type"]), c["nullable"]) for c in found.get_columns(table)],
                found.get_pk_constraint(table)["constrained_columns"],
                sorted(
                    (i["name"], tuple(i["column_names"]), i["unique"])
                    for i in found.get_indexes(table)
                ),
                sorted(
                    (u["name"], tuple(u["column_names"]))
                    for u in found.get_unique_constraints(table)
                ),
                sorted(
                    (
                        tuple(f["constrained_columns"]),
                        f["referred_table"],
                        tuple(f["referred_columns"]),
                    )
                    for f in found.get_foreign_keys(table)
                ),
            )
        if engine.dialect.name == "sqlite":
            schema["sqlite_master"] = conn.exec_driver_sql(
                "SELECT type, name, sql FROM sqlite_master ORDER BY name"
            ).all()
        return schema


def _model_differences(conn: Connection) -> list[Any]:
    context = MigrationContext.configure(conn, opts={"include_name": outside_the_models})
    differences: list[Any] = compare_metadata(context, SQLModel.metadata)
    return differences


def _autoincrement_lost(conn: Connection) -> list[str]:
    """SQLite tables the models make AUTOINCREMENT that are not (compare_metadata misses it)."""
    if conn.dialect.name != "sqlite":
        return []
    query = "SELECT sql FROM sqlite_master WHERE type = 'table' AND name = ?"
    return [
        table.name
        for table in SQLModel.metadata.sorted_tables
        if table.dialect_options["sqlite"]["autoincrement"]
        and "AUTOINCREMENT" not in str(conn.exec_driver_sql(query, (table.name,)).scalar())
    ]


def _start_at_once(url: str, processes: int = 4) -> None:
    starting = [
        subprocess.Popen(
            [sys.executable, "-c", _START_UP, url],
            cwd=ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(processes)
    ]
    for proc in starting:
        assert proc.stdout is not None and proc.stdout.readline() == "ready\n"
    for proc in starting:
        assert proc.stdin is not None
        proc.stdin.write("go\n")
        proc.stdin.close()
    for proc in starting:
        assert proc.wait(timeout=30) == 0, proc.stderr.read() if proc.stderr else ""


@pytest.mark.anyio
async def test_a_database_from_before_migrations_upgrades_in_place_at_start(
    tmp_path: Path, database_url: str
) -> None:
    legacy = _make_legacy(database_url)
    before = _rows(legacy)
    workdir = tmp_path / "server"
    workdir.mkdir()
    server = Server(workdir, {"SALA_DATABASE_URL": database_url})
    try:
        server.start()
        assert _rows(legacy) == before
        assert _versions(legacy) == [HEAD]
        code = {c["name"]: c["type"] for c in inspect(legacy).get_columns("room")}["code"]
        assert isinstance(code, sa.String) and code.length == 8
        # A 6-letter room made before still works: join it and read its history.
        async with Person(server.url, "Dora") as dora:
            assert (await dora.client.get("/healthz")).status_code == 200
            joined = await dora.join("abcdef")
            assert joined.status_code == 303, joined.text
            assert joined.headers["location"] == "/rooms/ABCDEF"
            page = await dora.page("ABCDEF")
            assert page.status_code == 200
            texts = [e.text for e in page_entries(page.text) if e.kind == "message"]
            assert texts == ["olá <b>mundo</b>", "linha 1\nlinha 2 🎉", "sem chave"]
    finally:
        server.stop()
        legacy.dispose()


@pytest.mark.anyio
async def test_upgraded_rows_read_back_through_the_store(database_url: str) -> None:
    _make_legacy(database_url).dispose()
    store = Store(database_url)
    try:
        store.init()
        room = await store.get_room("ABCDEF")
        assert room is not None and room.id == 1 and room.created_at == T0
        entries = await store.entries_after(room_id=1, after=0, limit=100)
        assert [
            (e.kind, e.author_id, e.author_name, e.body, e.idempotency_key) for e in entries
        ] == [
            (kind, author_id, name, body, key)
            for room_id, kind, author_id, name, body, key in ENTRIES
            if room_id == 1
        ]
        assert entries[2].created_at == T0 + timedelta(seconds=2)
        assert await store.get_room("PQRSTU") is not None
        new = await store.create_room()
        assert await store.get_room(new.code) is not None and new.id == len(ROOMS) + 1
    finally:
        store.dispose()


def test_upgraded_and_fresh_databases_have_the_schema_of_the_models(
    tmp_path: Path, database_url: str
) -> None:
    legacy = _make_legacy(database_url)
    fresh = _empty_beside(database_url, tmp_path)
    try:
        init_db(legacy)
        init_db(fresh)
        assert _schema(legacy) == _schema(fresh)
        for engine in (legacy, fresh):
            with engine.connect() as conn:
                assert _model_differences(conn) == []
                assert _autoincrement_lost(conn) == []
    finally:
        legacy.dispose()
        fresh.dispose()


def test_postgresql_room_codes_take_eight_letters_after_the_upgrade(postgres_url: str) -> None:
    engine = _make_legacy(postgres_url)
    try:
        with pytest.raises(DataError), engine.begin() as conn:
            conn.execute(_room.insert().values(code="ABCDEFGH", created_at=T0))
        init_db(engine)
        with engine.begin() as conn:
            conn.execute(_room.insert().values(code="ABCDEFGH", created_at=T0))
            codes = [row[0] for row in conn.exec_driver_sql("SELECT code FROM room ORDER BY id")]
        assert codes == [*ROOMS, "ABCDEFGH"]
    finally:
        engine.dispose()


@pytest.mark.parametrize("made_before_migrations", [False, True], ids=["empty", "legacy"])
def test_processes_starting_at_once_migrate_once(
    database_url: str, made_before_migrations: bool
) -> None:
    engine = _make_legacy(database_url) if made_before_migrations else _plain_engine(database_url)
    before = _rows(engine) if made_before_migrations else {"room": [], "entry": []}
    try:
        _start_at_once(database_url)
        assert _versions(engine) == [HEAD]
        assert _rows(engine) == before
    finally:
        engine.dispose()


def test_a_second_start_changes_nothing(
    database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    engine = _make_legacy(database_url)
    try:
        with caplog.at_level(logging.INFO, logger="db.migrations"):
            init_db(engine)
            assert "upgraded from 0001 to" in caplog.text
            caplog.clear()
            schema, rows = _schema(engine), _rows(engine)
            init_db(engine)
            assert caplog.text == ""
        assert (_schema(engine), _rows(engine), _versions(engine)) == (schema, rows, [HEAD])
    finally:
        engine.dispose()


def test_a_failed_upgrade_leaves_the_sqlite_database_as_it_was(tmp_path: Path) -> None:
    """pysqlite runs DDL outside any transaction: without BEGIN IMMEDIATE on the
    migrating connection, this failure would leave the table rebuilt and the file
    stamped, half-way between two revisions."""
    url = f"sqlite:///{tmp_path / 'sala.db'}"
    engine = _make_legacy(url)
    with engine.begin() as conn:
        # An entry whose room is gone (foreign keys are off on this plain connection):
        # the check after the table rebuild refuses to commit.
        conn.execute(
            _entry.insert().values(
                room_id=99, kind="join", author_id="m", author_name="X", created_at=T0
            )
        )
    schema, rows = _schema(engine), _rows(engine)
    try:
        with pytest.raises(RuntimeError, match="foreign keys do not hold"):
            init_db(make_engine(url))
        assert (_schema(engine), _rows(engine)) == (schema, rows)
    finally:
        engine.dispose()


def test_room_ids_keep_counting_after_sqlite_rebuilds_the_table(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'sala.db'}"
    engine = _make_legacy(url)
    with engine.begin() as conn:
        # As if rooms 4 to 10 had been made and removed: their ids are not given again.
        conn.exec_driver_sql("UPDATE sqlite_sequence SET seq = 10 WHERE name = 'room'")
    try:
        init_db(engine)
        with engine.begin() as conn:
            conn.execute(_room.insert().values(code="ABCDEFGH", created_at=T0))
            assert conn.exec_driver_sql("SELECT max(id) FROM room").scalar() == 11
    finally:
        engine.dispose()


def test_a_database_in_memory_is_made_at_head() -> None:
    engine = make_engine("sqlite:///:memory:")
    try:
        init_db(engine)
        with engine.connect() as conn:
            assert MigrationContext.configure(conn).get_current_revision() == HEAD
            assert _model_differences(conn) == []
    finally:
        engine.dispose()

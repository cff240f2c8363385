"""Schema migrations: Alembic driven from code, one migrator at a time.

`upgrade(engine)` runs at start. It takes a lock first (PostgreSQL: an advisory lock
on the migrating connection; SQLite: an exclusive flock on `<database>.migrate.lock`),
stamps a database that `create_all` made before migrations existed as the baseline,
then upgrades to the newest revision in one transaction.

Revisions live in `versions/`, numbered, and never import the models: they describe
the schema as it was when they were written. To draft the next one from the models:
`command.revision(alembic_config(conn), "what changes", autogenerate=True,
rev_id="0004")` on a connection to a database at head, then read and mend it. On
SQLite a batch rebuild forgets AUTOINCREMENT unless given
`table_kwargs={"sqlite_autoincrement": True}` (see 0002).
"""

from __future__ import annotations

import contextlib
import logging
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Connection, Engine, create_engine, event, inspect, text
from sqlalchemy.engine import URL
from sqlalchemy.exc import DBAPIError
from sqlalchemy.pool import NullPool

if sys.platform != "win32":
    import fcntl

logger = logging.getLogger(__name__)

SCRIPT_LOCATION = Path(__file__).resolve().parent
BASELINE = "0001"
# Every Sala process that migrates a PostgreSQL database takes this advisory lock: b"SALA".
PG_LOCK_KEY = 0x53414C41

# Alembic's `context` and `op` are module-level proxies: one migration at a time per process.
_one_at_a_time = threading.Lock()


def outside_the_models(name: str | None, type_: str, _parent: Any) -> bool:
    """False for the search machinery the models do not describe (0005): the FTS5 tables
    on SQLite, the expression index on PostgreSQL. For autogenerate and comparisons."""
    if type_ == "table" and name is not None and name.startswith("entry_fts"):
        return False
    return not (type_ == "index" and name == "ix_entry_search")


def alembic_config(connection: Connection) -> Config:
    """Alembic's configuration, built here rather than read from an alembic.ini."""
    config = Config()
    config.set_main_option("script_location", str(SCRIPT_LOCATION))
    config.attributes["connection"] = connection
    return config


def upgrade(engine: Engine) -> None:
    """Bring the database to the newest revision; safe when several processes start at once."""
    with _one_at_a_time, _quiet_alembic():
        if engine.dialect.name == "postgresql":
            _upgrade_postgresql(engine)
        elif engine.dialect.name == "sqlite":
            _upgrade_sqlite(engine)
        else:
            raise ValueError(f"no migration lock for {engine.dialect.name} databases")


def _upgrade_postgresql(engine: Engine) -> None:
    with engine.connect() as conn:
        # A session-level lock, held by this connection through the whole upgrade (the
        # commit only ends the transaction that took it); the others wait here, then
        # find the database at head and do nothing.
        conn.execute(text("SELECT pg_advisory_lock(:key)"), {"key": PG_LOCK_KEY})
        conn.commit()
        try:
            with conn.begin():
                _upgrade(conn)
        finally:
            try:
                conn.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": PG_LOCK_KEY})
                conn.commit()
            except DBAPIError:
                # Closing the session releases its locks; never pool a connection holding one.
                conn.invalidate()


def _upgrade_sqlite(engine: Engine) -> None:
    lock_path = _lock_path(engine.url)
    if lock_path is None:
        # A database in memory is new and private to this process: nothing to keep apart.
        with engine.begin() as conn:
            _upgrade(conn)
        return
    with _file_lock(lock_path):
        migrator = _sqlite_migrator(engine.url)
        try:
            with migrator.begin() as conn:
                _upgrade(conn)
                _check_foreign_keys(conn)
        finally:
            migrator.dispose()


def _upgrade(conn: Connection) -> None:
    config = alembic_config(conn)
    before = MigrationContext.configure(conn).get_current_revision()
    if before is None and {"room", "entry"} <= set(inspect(conn).get_table_names()):
        # Made by create_all before migrations existed: that schema is the baseline.
        command.stamp(config, BASELINE)
        before = BASELINE
        logger.info("database made before migrations: stamped as revision %s", BASELINE)
    command.upgrade(config, "head")
    after = MigrationContext.configure(conn).get_current_revision()
    if after != before:
        logger.info("database schema upgraded from %s to %s", before or "nothing", after)


@contextlib.contextmanager
def _quiet_alembic() -> Iterator[None]:
    # Alembic reports its set-up at INFO on every start; _upgrade says what changed instead.
    alembic_logger = logging.getLogger("alembic")
    level = alembic_logger.level
    alembic_logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        alembic_logger.setLevel(level)


def _lock_path(url: URL) -> Path | None:
    database = url.database or ""
    if url.query.get("uri"):
        database = database.removeprefix("file:")
    if database in ("", ":memory:") or url.query.get("mode") == "memory":
        return None
    return Path(database + ".migrate.lock")


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    if sys.platform == "win32":
        # No flock: BEGIN IMMEDIATE alone keeps migrators apart, within the busy timeout.
        yield
        return
    # The file stays: removing a lock file lets a late-comer lock a different one.
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)  # released when the file closes, or the process ends
        yield


def _sqlite_migrator(url: URL) -> Engine:
    # A connection of its own, because pysqlite would run DDL outside any transaction
    # and batch mode's table rebuilds need foreign keys off, which only works outside one.
    migrator = create_engine(url, poolclass=NullPool, connect_args={"timeout": 30})
    event.listen(migrator, "connect", _sqlite_migrator_pragmas)
    event.listen(migrator, "begin", _begin_immediate)
    return migrator


def _sqlite_migrator_pragmas(dbapi_connection: Any, _record: Any) -> None:
    dbapi_connection.isolation_level = None  # no implicit transactions: BEGIN is ours
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA foreign_keys=OFF")
    cursor.close()


def _begin_immediate(conn: Connection) -> None:
    # The write lock at once, and every statement after it, DDL included, in this one
    # transaction: the whole upgrade commits or none of it.
    conn.exec_driver_sql("BEGIN IMMEDIATE")


def _check_foreign_keys(conn: Connection) -> None:
    broken = conn.exec_driver_sql("PRAGMA foreign_key_check").fetchall()
    if broken:
        # Checked before the commit: a table rebuild must leave every reference whole.
        raise RuntimeError(
            f"foreign keys do not hold after the upgrade, not committed: {broken[:5]}"
        )

"""Per-room sequence numbers: room.last_seq, entry.seq (1, 2, 3… in each room, id order).

A writer takes the room's row lock, adds the batch's size to room.last_seq and gives
its entries the numbers in between, so every process sees a room's entries in one
order. Entries already stored are numbered per room in id order, the order they
were delivered in.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import sqlalchemy as sa
from alembic import op
from alembic.operations import BatchOperations

revision = "0003"
down_revision: str | None = "0002"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    # A constant default: SQLite adds such a column in place, without a table rebuild.
    op.add_column(
        "room", sa.Column("last_seq", sa.BigInteger(), server_default="0", nullable=False)
    )
    op.add_column("entry", sa.Column("seq", sa.BigInteger(), nullable=True))
    _number_entries()
    with _rebuilt("entry") as batch:
        batch.alter_column("seq", existing_type=sa.BigInteger(), nullable=False)
        batch.create_index("uq_entry_room_seq", ["room_id", "seq"], unique=True)
    op.execute(
        sa.text(
            "UPDATE room SET last_seq = COALESCE("
            "(SELECT max(entry.seq) FROM entry WHERE entry.room_id = room.id), 0)"
        )
    )


def downgrade() -> None:
    with _rebuilt("entry") as batch:
        batch.drop_index("uq_entry_room_seq")
        batch.drop_column("seq")
    with _rebuilt("room") as batch:
        batch.drop_column("last_seq")


def _number_entries() -> None:
    """entry.seq = the entry's place in its room, in id order (row_number(): SQLite 3.25+)."""
    numbered = "SELECT id, row_number() OVER (PARTITION BY room_id ORDER BY id) AS seq FROM entry"
    if op.get_bind().dialect.name == "postgresql":
        op.execute(
            sa.text(f"UPDATE entry SET seq = n.seq FROM ({numbered}) AS n WHERE entry.id = n.id")
        )
        return
    # No UPDATE … FROM before SQLite 3.33: number into a keyed table, then look each up.
    op.execute(
        sa.text("CREATE TEMP TABLE entry_seq_0003 (id INTEGER PRIMARY KEY, seq BIGINT NOT NULL)")
    )
    op.execute(sa.text(f"INSERT INTO entry_seq_0003 (id, seq) {numbered}"))
    op.execute(
        sa.text(
            "UPDATE entry SET seq = (SELECT n.seq FROM entry_seq_0003 AS n WHERE n.id = entry.id)"
        )
    )
    op.execute(sa.text("DROP TABLE entry_seq_0003"))


@contextmanager
def _rebuilt(table: str) -> Iterator[BatchOperations]:
    """Batch alterations; on SQLite a table rebuild (create, copy, drop, rename) keeping
    rows, ids, AUTOINCREMENT and its counter, which would otherwise restart at the
    highest id left (see 0002). PostgreSQL alters in place."""
    counter = _autoincrement_counter(table)
    with op.batch_alter_table(table, table_kwargs={"sqlite_autoincrement": True}) as batch:
        yield batch
    if counter is not None:
        op.execute(sa.text("DELETE FROM sqlite_sequence WHERE name = :name").bindparams(name=table))
        op.execute(
            sa.text("INSERT INTO sqlite_sequence (name, seq) VALUES (:name, :seq)").bindparams(
                name=table, seq=counter
            )
        )


def _autoincrement_counter(table: str) -> int | None:
    bind = op.get_bind()
    if bind.dialect.name != "sqlite":
        return None
    query = sa.text("SELECT seq FROM sqlite_sequence WHERE name = :name")
    seq: int | None = bind.execute(query, {"name": table}).scalar()
    return seq

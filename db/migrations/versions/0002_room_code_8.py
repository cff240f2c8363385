"""Room codes of 8 letters: room.code widens to VARCHAR(8); earlier rooms keep their 6."""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision: str | None = "0001"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    _code_length(6, 8)


def downgrade() -> None:
    # PostgreSQL refuses while an 8-letter code exists, rather than cutting it short.
    _code_length(8, 6)


def _code_length(old: int, new: int) -> None:
    # On SQLite batch mode rebuilds the table (create, copy, drop, rename), keeping
    # rows and ids; the AUTOINCREMENT counter would restart at the highest id left,
    # so it is carried over. PostgreSQL alters the column in place.
    counter = _autoincrement_counter("room")
    with op.batch_alter_table("room", table_kwargs={"sqlite_autoincrement": True}) as batch:
        batch.alter_column(
            "code",
            existing_type=sa.String(old),
            type_=sa.String(new),
            existing_nullable=False,
        )
    if counter is not None:
        op.execute(sa.text("DELETE FROM sqlite_sequence WHERE name = 'room'"))
        op.execute(
            sa.text("INSERT INTO sqlite_sequence (name, seq) VALUES ('room', :seq)").bindparams(
                seq=counter
            )
        )


def _autoincrement_counter(table: str) -> int | None:
    bind = op.get_bind()
    if bind.dialect.name != "sqlite":
        return None
    query = sa.text("SELECT seq FROM sqlite_sequence WHERE name = :name")
    seq: int | None = bind.execute(query, {"name": table}).scalar()
    return seq

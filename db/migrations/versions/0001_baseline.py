"""Baseline: the schema that create_all made before migrations existed."""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision: str | None = None
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    op.create_table(
        "room",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("code", sa.String(6), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        # Ids never come back after a delete (SQLite would reuse the highest otherwise).
        sqlite_autoincrement=True,
    )
    op.create_index("ix_room_code", "room", ["code"], unique=True)
    op.create_table(
        "entry",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("room_id", sa.Integer(), sa.ForeignKey("room.id"), nullable=False),
        sa.Column("kind", sa.String(8), nullable=False),
        sa.Column("author_name", sa.String(32), nullable=False),
        sa.Column("author_id", sa.String(64), nullable=False),
        sa.Column("body", sa.String(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("idempotency_key", sa.String(64), nullable=True),
        sa.UniqueConstraint("room_id", "idempotency_key", name="uq_entry_room_key"),
        # Entry ids are the stream's event ids: they only ever grow.
        sqlite_autoincrement=True,
    )
    op.create_index("ix_entry_room_author", "entry", ["room_id", "author_id", "id"])
    op.create_index("ix_entry_room_id_id", "entry", ["room_id", "id"])


def downgrade() -> None:
    op.drop_table("entry")
    op.drop_table("room")

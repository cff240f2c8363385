"""Processes and presence claims, for several processes on one PostgreSQL database.

`sala_node`: one row per running process, with a lease on the database clock.
`presence_claim`: which process holds which member in which room. SQLite gets the
tables too (one schema everywhere), though one process never uses them.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision: str | None = "0003"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    op.create_table(
        "sala_node",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("host", sa.String(length=255), nullable=False),
        sa.Column("pid", sa.Integer(), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("listen_pid", sa.Integer(), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_table(
        "presence_claim",
        sa.Column("room_id", sa.Integer(), nullable=False),
        sa.Column("member_id", sa.String(length=64), nullable=False),
        sa.Column("node_id", sa.String(length=32), nullable=False),
        sa.Column("name", sa.String(length=32), nullable=False),
        sa.Column("claimed_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["room_id"], ["room.id"]),
        sa.PrimaryKeyConstraint("room_id", "member_id", "node_id"),
    )
    op.create_index("ix_presence_claim_node", "presence_claim", ["node_id"])


def downgrade() -> None:
    op.drop_index("ix_presence_claim_node", table_name="presence_claim")
    op.drop_table("presence_claim")
    op.drop_table("sala_node")

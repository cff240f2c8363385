"""Replies, edits, deletions, reactions and full-text search.

New entry columns (all nullable, added in place: no table rebuild, so the search
triggers stay): `reply_to` with a snapshot of the original (`quote_author`,
`quote_text`), `target_id` (the message a change changes), `edited_at`,
`deleted_at`. A `reaction` table holds who reacted with what.

Search: on SQLite an FTS5 index over message texts (`unicode61 remove_diacritics 2`:
case and accents ignored), kept by triggers; on PostgreSQL an expression index over
`to_tsvector('simple', sala_fold(body))`, where `sala_fold` lower-cases and strips
accents (no extension needed).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision: str | None = "0004"
branch_labels: str | None = None
depends_on: str | None = None

# Lower-case letters with accents, and the same letters without (one for one).
ACCENTED = "áàâãäåāăąçćčďéèêëēėęěíìîïīįıñńňóòôõöøōőŕřśšşťúùûüūůűųýÿžźż"
PLAIN = "aaaaaaaaacccdeeeeeeeeiiiiiiinnnoooooooorrssstuuuuuuuuyyzzz"


def upgrade() -> None:
    for column in (
        sa.Column("reply_to", sa.Integer(), nullable=True),
        sa.Column("quote_author", sa.String(length=32), nullable=True),
        sa.Column("quote_text", sa.String(length=120), nullable=True),
        sa.Column("target_id", sa.Integer(), nullable=True),
        sa.Column("edited_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("deleted_at", sa.DateTime(timezone=True), nullable=True),
    ):
        op.add_column("entry", column)
    op.create_index("ix_entry_target", "entry", ["target_id"])
    op.create_index("ix_entry_reply_to", "entry", ["reply_to"])
    op.create_table(
        "reaction",
        sa.Column("message_id", sa.Integer(), nullable=False),
        sa.Column("member_id", sa.String(length=64), nullable=False),
        sa.Column("emoji", sa.String(length=16), nullable=False),
        sa.Column("author_name", sa.String(length=32), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["message_id"], ["entry.id"]),
        sa.PrimaryKeyConstraint("message_id", "member_id", "emoji"),
    )
    if op.get_bind().dialect.name == "postgresql":
        _postgresql_search()
    else:
        _sqlite_search()


def _sqlite_search() -> None:
    op.execute(
        "CREATE VIRTUAL TABLE entry_fts USING fts5(body, content='entry', content_rowid='id', "
        "tokenize='unicode61 remove_diacritics 2')"
    )
    op.execute(
        "CREATE TRIGGER entry_fts_insert AFTER INSERT ON entry "
        "WHEN new.kind = 'message' AND new.body IS NOT NULL BEGIN "
        "INSERT INTO entry_fts (rowid, body) VALUES (new.id, new.body); END"
    )
    op.execute(
        "CREATE TRIGGER entry_fts_update AFTER UPDATE OF body ON entry "
        "WHEN old.kind = 'message' BEGIN "
        "INSERT INTO entry_fts (entry_fts, rowid, body) SELECT 'delete', old.id, old.body "
        "WHERE old.body IS NOT NULL; "
        "INSERT INTO entry_fts (rowid, body) SELECT new.id, new.body WHERE new.body IS NOT NULL; "
        "END"
    )
    op.execute(
        "INSERT INTO entry_fts (rowid, body) "
        "SELECT id, body FROM entry WHERE kind = 'message' AND body IS NOT NULL"
    )


def _postgresql_search() -> None:
    assert len(ACCENTED) == len(PLAIN)
    op.execute(
        "CREATE FUNCTION sala_fold(text) RETURNS text LANGUAGE sql IMMUTABLE PARALLEL SAFE "
        f"RETURN translate(lower($1), '{ACCENTED}', '{PLAIN}')"
    )
    op.execute(
        "CREATE INDEX ix_entry_search ON entry "
        "USING gin (to_tsvector('simple'::regconfig, sala_fold(body))) "
        "WHERE kind = 'message' AND body IS NOT NULL"
    )


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP INDEX ix_entry_search")
        op.execute("DROP FUNCTION sala_fold(text)")
    else:
        op.execute("DROP TRIGGER entry_fts_update")
        op.execute("DROP TRIGGER entry_fts_insert")
        op.execute("DROP TABLE entry_fts")
    op.drop_table("reaction")
    op.drop_index("ix_entry_reply_to", table_name="entry")
    op.drop_index("ix_entry_target", table_name="entry")
    for name in ("deleted_at", "edited_at", "target_id", "quote_text", "quote_author", "reply_to"):
        op.drop_column("entry", name)

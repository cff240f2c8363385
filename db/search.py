"""Full-text search in a room's messages: SQLite FTS5 or PostgreSQL text search.

Both ignore case and accents ("nao" finds "não") and match words by their start
("amanh" finds "amanhã"); a deleted message has no text, so it is never found.
The index is kept by the database (migration 0005), not by Python.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from sqlalchemy import text
from sqlmodel import Session, col, select

from db.models import Entry

WORDS_MAX = 8
_WORD = re.compile(r"\w+")


def query_words(query: str) -> list[str]:
    """The words searched for (letters and digits; everything else separates them)."""
    return _WORD.findall(query)[:WORDS_MAX]


def search_messages(*, session: Session, room_id: int, query: str, limit: int) -> Sequence[Entry]:
    """The room's messages with every word of `query`, newest first."""
    words = query_words(query)
    if not words:
        return []
    if session.connection().dialect.name == "postgresql":
        matches = text(
            "SELECT id FROM entry WHERE room_id = :room AND kind = 'message' "
            "AND body IS NOT NULL AND deleted_at IS NULL "
            "AND to_tsvector('simple'::regconfig, sala_fold(body)) "
            "@@ to_tsquery('simple'::regconfig, sala_fold(:q)) "
            "ORDER BY id DESC LIMIT :limit"
        )
        q = " & ".join(f"{word}:*" for word in words)
    else:
        matches = text(
            "SELECT e.id FROM entry_fts JOIN entry AS e ON e.id = entry_fts.rowid "
            "WHERE entry_fts MATCH :q AND e.room_id = :room AND e.kind = 'message' "
            "AND e.deleted_at IS NULL ORDER BY e.id DESC LIMIT :limit"
        )
        # Each word quoted (no FTS5 syntax gets through) and matched by its start.
        q = " ".join('"' + word.replace('"', '""') + '"*' for word in words)
    ids = [
        row[0]
        for row in session.connection().execute(matches, {"room": room_id, "q": q, "limit": limit})
    ]
    if not ids:
        return []
    found = {e.id: e for e in session.exec(select(Entry).where(col(Entry.id).in_(ids))).all()}
    return [found[i] for i in ids if i in found]

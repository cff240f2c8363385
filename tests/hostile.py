"""Helpers for the hostile-user tests: hand-built bodies and what the database holds."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import httpx

from tests.client import Person, page_entries

BOUNDARY = "sala-boundary"


def multipart(
    fields: dict[str, bytes],
    *,
    charset: str | None = None,
    files: dict[str, tuple[str, bytes]] | None = None,
) -> tuple[bytes, dict[str, str]]:
    """A multipart/form-data body built by hand, so its charset can lie."""
    parts = []
    for name, value in fields.items():
        head = f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n'
        parts.append(head.encode() + value + b"\r\n")
    for name, (filename, data) in (files or {}).items():
        head = (
            f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="{name}"; '
            f'filename="{filename}"\r\nContent-Type: text/plain\r\n\r\n'
        )
        parts.append(head.encode() + data + b"\r\n")
    body = b"".join(parts) + f"--{BOUNDARY}--\r\n".encode()
    content_type = f"multipart/form-data; boundary={BOUNDARY}"
    if charset is not None:
        content_type += f"; charset={charset}"
    return body, {"Content-Type": content_type}


def stored(db_path: Path) -> list[tuple[Any, ...]]:
    """Every room and entry, every column: what a bad request must leave alone."""
    with sqlite3.connect(f"file:{db_path}?mode=ro", uri=True) as db:
        rooms = db.execute("SELECT * FROM room ORDER BY id").fetchall()
        entries = db.execute("SELECT * FROM entry ORDER BY id").fetchall()
    return [("room", *r) for r in rooms] + [("entry", *e) for e in entries]


def stored_messages(db_path: Path) -> list[tuple[str, str]]:
    """(author name, text) of every stored message, oldest first."""
    with sqlite3.connect(f"file:{db_path}?mode=ro", uri=True) as db:
        rows = db.execute(
            "SELECT author_name, body FROM entry WHERE kind = 'message' ORDER BY id"
        ).fetchall()
    return [(str(a), str(b)) for a, b in rows]


async def room_still_works(person: Person, code: str, text: str) -> None:
    """An honest member can still post, load the page and read the history."""
    posted = await person.say(code, text)
    assert posted.status_code == 200, posted.text
    page = await person.page(code)
    assert page.status_code == 200, page.text
    history = await person.client.get(f"/rooms/{code}/messages")
    assert history.status_code == 200
    assert text in [e.text for e in page_entries(history.text)]


def words(response: httpx.Response) -> str:
    """The error a person reads on the page (it must be there, in words)."""
    assert 'role="alert"' in response.text, response.text[:500]
    return response.text

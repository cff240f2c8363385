"""Who is asking: a random member id and, per room joined, the name used there.

All of it lives in the signed session cookie. Joining binds the session to a room
and a name; reading or writing a room needs that binding, so a session made
anywhere cannot speak in, or read, a room it never joined.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import Any

from starlette.requests import HTTPConnection

ROOMS_REMEMBERED = 20  # keeps the cookie well under browsers' 4 KB


@dataclass(frozen=True, slots=True)
class Member:
    id: str
    name: str


def _session(connection: HTTPConnection) -> dict[str, Any]:
    session = connection.scope.get("session")
    return session if isinstance(session, dict) else {}


def member_id(connection: HTTPConnection) -> str | None:
    value = _session(connection).get("member_id")
    return value if isinstance(value, str) and value else None


def last_name(connection: HTTPConnection) -> str:
    """The name this browser used last (to fill in the home form)."""
    value = _session(connection).get("name")
    return value if isinstance(value, str) else ""


def _rooms(session: dict[str, Any]) -> dict[str, str]:
    rooms = session.get("rooms")
    return rooms if isinstance(rooms, dict) else {}


def member_in(connection: HTTPConnection, code: str) -> Member | None:
    """The member and their name in room `code`, if this session joined it."""
    mid = member_id(connection)
    name = _rooms(_session(connection)).get(code)
    if mid is None or not isinstance(name, str) or not name:
        return None
    return Member(id=mid, name=name)


def bind(connection: HTTPConnection, code: str, name: str) -> Member:
    """Join: this session is `name` in room `code` from now on."""
    session = _session(connection)
    mid = member_id(connection) or secrets.token_urlsafe(16)
    rooms = {k: v for k, v in _rooms(session).items() if k != code}
    rooms[code] = name
    while len(rooms) > ROOMS_REMEMBERED:
        del rooms[next(iter(rooms))]
    session.update(member_id=mid, name=name, rooms=rooms)
    return Member(id=mid, name=name)

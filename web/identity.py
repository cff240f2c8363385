"""Who is asking: a random member id and, per room joined, the name used there.

All of it lives in the signed session cookie. Joining binds the session to a room
and a name; reading or writing a room needs that binding, so a session made
anywhere cannot speak in, or read, a room it never joined.
"""

from __future__ import annotations

import json
import re
import secrets
from dataclasses import dataclass
from typing import Any

from starlette.requests import HTTPConnection

from web.text import clean_name, parse_code

ROOMS_REMEMBERED = 20
_SESSION_JSON_MAX = 2_400  # base64 and the signature make it about 3.3 KB


@dataclass(frozen=True, slots=True)
class Member:
    id: str
    name: str


def _session(connection: HTTPConnection) -> dict[str, Any]:
    session = connection.scope.get("session")
    return session if isinstance(session, dict) else {}


_MEMBER_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")


def _is_member_id(value: object) -> bool:
    return isinstance(value, str) and _MEMBER_ID.fullmatch(value) is not None


def _is_name(value: object) -> bool:
    """A name as joining would have accepted it (a cookie may be older than the rules)."""
    return isinstance(value, str) and clean_name(value) == (value, None)


def member_id(connection: HTTPConnection) -> str | None:
    value = _session(connection).get("member_id")
    return value if isinstance(value, str) and _is_member_id(value) else None


def last_name(connection: HTTPConnection) -> str:
    """The name this browser used last (to fill in the home form)."""
    value = _session(connection).get("name")
    return value if isinstance(value, str) and _is_name(value) else ""


def _rooms(session: dict[str, Any]) -> dict[str, str]:
    rooms = session.get("rooms")
    return rooms if isinstance(rooms, dict) else {}


def _left(session: dict[str, Any]) -> list[str]:
    left = session.get("left")
    return left if isinstance(left, list) else []


def member_in(connection: HTTPConnection, code: str) -> Member | None:
    """The member and their name in room `code`, if this session joined it (and has
    not left it since)."""
    session = _session(connection)
    mid = member_id(connection)
    name = _rooms(session).get(code)
    if mid is None or not isinstance(name, str) or not _is_name(name):
        return None
    if code in _left(session):
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
    left = [c for c in _left(session) if c != code and c in rooms]
    session.update(member_id=mid, name=name, rooms=rooms, left=left)
    # Browsers drop a cookie over 4 KB (and with it every room): forget the oldest
    # rooms first. Names outside ASCII take six bytes a character in the JSON.
    while len(json.dumps(session)) > _SESSION_JSON_MAX and len(rooms) > 1:
        oldest = next(iter(rooms))
        del rooms[oldest]
        session["left"] = [c for c in session["left"] if c != oldest]
    return Member(id=mid, name=name)


def unbind(connection: HTTPConnection, code: str) -> None:
    """Leave: the room stays in this browser's list, but reading it needs joining again."""
    session = _session(connection)
    if code in _rooms(session) and code not in _left(session):
        session["left"] = [*_left(session), code]


def visited(connection: HTTPConnection) -> list[tuple[str, str, bool]]:
    """(code, name, still joined) of the rooms this browser has been in, newest first."""
    session = _session(connection)
    left = set(_left(session))
    rooms = [(code, name, code not in left) for code, name in _rooms(session).items()]
    return [r for r in reversed(rooms) if parse_code(r[0]) == r[0] and _is_name(r[1])]

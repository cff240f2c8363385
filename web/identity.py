"""Who is asking: a random member id and a display name in the signed session cookie."""

from __future__ import annotations

import secrets
import unicodedata
from dataclasses import dataclass

from starlette.requests import Request

NAME_MAX = 32


@dataclass(frozen=True, slots=True)
class Member:
    id: str
    name: str


def current_member(request: Request) -> Member | None:
    member_id = request.session.get("member_id")
    name = request.session.get("name")
    if not isinstance(member_id, str) or not isinstance(name, str) or not member_id or not name:
        return None
    return Member(id=member_id, name=name)


def remember(request: Request, name: str) -> Member:
    member_id = request.session.get("member_id")
    if not isinstance(member_id, str) or not member_id:
        member_id = secrets.token_urlsafe(16)
    request.session["member_id"] = member_id
    request.session["name"] = name
    return Member(id=member_id, name=name)


def has_control_characters(text: str, allowed: str = "") -> bool:
    return any(unicodedata.category(ch) == "Cc" and ch not in allowed for ch in text)


def clean_name(raw: str) -> tuple[str, str | None]:
    """The trimmed name and, if it is not acceptable, why (in words)."""
    name = raw.strip()
    if not name:
        return name, "Please enter your name."
    if len(name) > NAME_MAX:
        return name, f"Your name can be at most {NAME_MAX} characters long."
    if has_control_characters(name):
        return name, "Your name cannot contain control characters."
    return name, None

"""Who may see which room: lookups by code (throttled) and the member's binding.

Reading or writing a room needs a session bound to it by joining. Someone who
has not joined may only learn whether a code exists, and every code that
matches no room counts against their address, so codes cannot be guessed.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from db.models import Room
from web.i18n import _
from web.identity import Member, member_id, member_in
from web.limits import Limit, limit_words
from web.responses import error_response
from web.state import app_state
from web.text import display_code, parse_code

_SHOWN_MAX = 16  # of a code that is not one, in an error


def client_address(request: Request) -> str:
    return request.client.host if request.client else "unknown"


def shown_code(raw: str) -> str:
    code = parse_code(raw)
    return display_code(code) if code else raw.strip().upper()[:_SHOWN_MAX]


async def lookup_room(request: Request, raw_code: str) -> Room | Response:
    """The room with this code for someone who has not joined it; 404 or 429 in words."""
    state = app_state(request)
    address = client_address(request)
    wait = state.limits.wait(Limit.LOOKUPS, address)
    if wait:
        return error_response(request, 429, limit_words(Limit.LOOKUPS), wait=wait)
    code = parse_code(raw_code)
    room = await state.store.get_room(code) if code else None
    if room is None:
        state.limits.take(Limit.LOOKUPS, address)
        shown = shown_code(raw_code)
        return error_response(
            request, 404, _("There is no room with code %(code)s.", code=shown), code=shown
        )
    return room


async def room_for_member(request: Request) -> tuple[Room, Member] | Response:
    """The room in the path and the member who joined it; 403, 404 or 429 otherwise."""
    raw = request.path_params["code"]
    code = parse_code(raw)
    member = member_in(request, code) if code else None
    if member is None:
        if member_id(request) is None:
            return error_response(request, 403, _("Pick a name and join the room first."))
        found = await lookup_room(request, raw)
        if isinstance(found, Response):
            return found
        message = _(
            "You have not joined room %(code)s: join it first.", code=display_code(found.code)
        )
        return error_response(request, 403, message, code=found.code)
    assert code is not None
    room = await app_state(request).store.get_room(code)
    if room is None:
        return error_response(
            request, 404, _("There is no room with code %(code)s.", code=display_code(code))
        )
    return room, member


def name_taken_words(code: str, name: str) -> str:
    return _(
        "Someone in room %(code)s is already called %(name)s. Pick another name.",
        code=display_code(code),
        name=name,
    )


async def refuse_if_name_taken(request: Request, room: Room, member: Member) -> Response | None:
    """403 when someone else present now holds a name that looks like this member's."""
    if not await app_state(request).membership.is_name_taken(room, member.name, member.id):
        return None
    return error_response(request, 403, name_taken_words(room.code, member.name), code=room.code)

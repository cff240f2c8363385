"""Pages and forms: parse input, call the database, render, publish. No SQL here."""

from __future__ import annotations

import ipaddress
import secrets
from typing import Any, cast

from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response

from db import cluster
from db.models import EntryKind, Room
from web import i18n
from web.access import (
    client_address,
    lookup_room,
    name_taken_words,
    refuse_if_name_taken,
    room_for_member,
)
from web.collector import COLLECTOR
from web.forms import FormProblem, read_form
from web.i18n import _
from web.identity import Member, bind, last_name, member_id, member_in, unbind, visited
from web.limits import Limit, limit_words, retry_after
from web.rendering import MEMBERS_SHOWN, AuthorTagger
from web.responses import error_response, is_htmx, render
from web.state import app_state
from web.text import (
    NAME_MAX,
    clean_field,
    clean_message,
    clean_name,
    display_code,
    is_utf8,
    parse_code,
    parse_id,
)

PAGE_SIZE = 50
KEY_MAX = 64
_CODE_FIELD_MAX = 16


def _typed_code(raw: str) -> str:
    """A code field as the person typed it (trimmed, upper-cased), to show back."""
    return raw.strip().upper()[:_CODE_FIELD_MAX]


# -- home --------------------------------------------------------------------


async def home(request: Request) -> Response:
    code = _typed_code(request.query_params.get("code", ""))
    name = last_name(request)
    error = None
    if name and code and request.query_params.get("taken"):
        error = name_taken_words(code, name)
    return render(request, "home.html", _home_context(request, name, code, error))


def _home_context(request: Request, name: str, code: str, error: str | None) -> dict[str, Any]:
    invited = parse_code(code)
    return {
        "name": name,
        "code": code,
        "error": error,
        "invited": display_code(invited) if invited else None,
        "your_rooms": visited(request),
    }


async def enter(request: Request) -> Response:
    state = app_state(request)
    address = client_address(request)
    values = {"name": "", "code": ""}

    def again(status_code: int, error: str, wait: float | None = None) -> Response:
        context = _home_context(request, values["name"], values["code"], error)
        response = render(request, "home.html", context, status_code)
        if wait is not None:
            response.headers["Retry-After"] = retry_after(wait)
        return response

    try:
        form = await read_form(request, within=state.settings.body_timeout_seconds)
    except FormProblem as exc:
        return again(exc.status_code, exc.message)
    raw_code = form.get("code", "")
    values = {"name": form.get("name", "").strip()[:64], "code": _typed_code(raw_code)}
    action = form.get("action", "").strip().lower()
    if action not in ("join", "create"):
        action = "join" if raw_code.strip() else "create"

    name, problem = clean_name(form.get("name", ""))
    if problem:
        return again(422, _(problem, max=NAME_MAX))
    values["name"] = name
    if action == "create":
        wait = state.limits.take(Limit.ROOMS, address)
        if wait:
            return again(429, limit_words(Limit.ROOMS), wait)
        room = await state.store.create_room()
        bind(request, room.code, name)
        return RedirectResponse(f"/rooms/{room.code}", status_code=303)

    if not raw_code.strip():
        return again(422, _("Please enter a room code, or create a new room."))
    found = await lookup_room(request, raw_code)
    if isinstance(found, Response):
        if found.status_code == 404:
            shown = values["code"]
            return again(
                404,
                _("There is no room with code %(code)s. Check the code and try again.", code=shown),
            )
        return again(found.status_code, limit_words(Limit.LOOKUPS), _retry_after(found))
    wait = state.limits.take(Limit.JOINS, address)
    if wait:
        return again(429, limit_words(Limit.JOINS), wait)
    if await state.membership.is_name_taken(found, name, member_id(request)):
        return again(422, name_taken_words(found.code, name))
    bind(request, found.code, name)
    return RedirectResponse(f"/rooms/{found.code}", status_code=303)


def _retry_after(response: Response) -> float | None:
    value = response.headers.get("retry-after")
    return float(value) if value else None


# -- room page ---------------------------------------------------------------


def _parse_before(request: Request, name: str = "before") -> int | str | None:
    raw = request.query_params.get(name)
    if raw is None or raw.strip() == "":
        return None
    before = parse_id(raw)
    if before is None:
        return f"{name}= must be a message id (a whole number)."
    return before


async def _history(
    room: Room, request: Request, before: int | None, around: int | None = None
) -> dict[str, Any]:
    """A page of the room: the newest entries, those before `before`, or those around
    `around` (a search result: the conversation opened at that message)."""
    assert room.id is not None
    state = app_state(request)
    store = state.store
    if around is not None:
        before = around + 1
    wanted = PAGE_SIZE // 2 if around is not None else PAGE_SIZE
    rows = await store.entries_before(room_id=room.id, before=before, limit=wanted + 1)
    has_older = len(rows) > wanted
    entries = list(rows[1:] if has_older else rows)
    if around is not None:
        entries += await store.shown_after(
            room_id=room.id, after=around, limit=PAGE_SIZE - len(entries)
        )
    messages = [e.id for e in entries if e.kind == EntryKind.MESSAGE.value and e.id is not None]
    return {
        "room": room,
        "entries": entries,
        "has_older": has_older,
        "reactions": await store.reactions_for(messages),
        "mentions": await state.timeline.mentionable(room),
        "highlight": around,
    }


def _context(request: Request, room: Room, member: Member) -> dict[str, Any]:
    """What every room template needs to know about the reader."""
    tag = cast(AuthorTagger, app_state(request).templates.env.globals["author_tag"])
    return {"room": room, "me": member.id, "me_tag": tag(room.id, member.id)}


async def room_page(request: Request) -> Response:
    raw = request.path_params["code"]
    code = parse_code(raw)
    member = member_in(request, code) if code else None
    if member is None:
        # Not joined (a shared link, say): the home form, with the code filled in.
        found = await lookup_room(request, raw)
        if isinstance(found, Response):
            return found
        return RedirectResponse(f"/?code={found.code}", status_code=303)
    checked = await room_for_member(request)
    if isinstance(checked, Response):
        return checked
    room, member = checked
    if await app_state(request).membership.is_name_taken(room, member.name, member.id):
        # Someone present now has a name like this member's: pick another first.
        return RedirectResponse(f"/?code={room.code}&taken=1", status_code=303)
    return await _room_response(request, room, member)


async def _room_response(
    request: Request,
    room: Room,
    member: Member,
    *,
    status_code: int = 200,
    form_error: str | None = None,
    text: str = "",
    key: str | None = None,
) -> Response:
    state = app_state(request)
    before = _parse_before(request)
    if isinstance(before, str):
        return error_response(request, 400, before, code=room.code)
    around = _parse_before(request, "around")
    if isinstance(around, str):
        return error_response(request, 400, around, code=room.code)
    context = await _history(room, request, before, around)
    if around is not None:
        before = around  # an older page: not live, with a way back to the latest
    entries = context["entries"]
    members = await state.membership.members(room)
    if all(member_id != member.id for member_id, _ in members):
        # The reader is here, even before (or without) a live stream: count them.
        members = sorted([*members, (member.id, member.name)], key=lambda m: m[1].casefold())
    # The stream goes on after the newest entry shown. A page showing none streams the
    # room from its start: an entry committed since the history was read (the
    # creator's join, say) must not fall between the page and its stream. An older
    # page is not live.
    newest_id = (entries[-1].id if entries else 0) if before is None else None
    origin = state.settings.public_origin or str(request.base_url).rstrip("/")
    context.update(
        _context(request, room, member),
        before=before,
        newest_id=newest_id,
        members=members[:MEMBERS_SHOWN],
        total=len(members),
        invite_url=f"{origin}/?code={room.code}",
        idempotency_key=key or new_key(),
        text=text,
        form_error=form_error,
    )
    return render(request, "room.html", context, status_code)


async def history(request: Request) -> Response:
    checked = await room_for_member(request)
    if isinstance(checked, Response):
        return checked
    room, member = checked
    before = _parse_before(request)
    if isinstance(before, str):
        return error_response(request, 400, before, code=room.code)
    context = await _history(room, request, before)
    context.update(_context(request, room, member))
    return render(request, "_history.html", context)


# -- posting -----------------------------------------------------------------


def new_key() -> str:
    return secrets.token_urlsafe(16)


async def post_message(request: Request) -> Response:
    state = app_state(request)
    checked = await room_for_member(request)
    if isinstance(checked, Response):
        return checked
    room, member = checked
    try:
        form = await read_form(request, within=state.settings.body_timeout_seconds)
    except FormProblem as exc:
        return await _form_error(request, room, member, exc.status_code, exc.message)
    raw_text = form.get("text", "")
    raw_key = form.get("idempotency_key", "") or request.headers.get("idempotency-key", "")
    text, problem = clean_message(raw_text)
    key = clean_field(raw_key, max_length=KEY_MAX) or None
    if problem is None and raw_key.strip() and key is None:
        problem = _("The message form is out of date: reload the page and send again.")
    shown_text = raw_text if is_utf8(raw_text) else ""
    if problem:
        return await _form_error(request, room, member, 422, problem, shown_text, key)
    reply_to = None
    if form.get("reply_to", "").strip():
        reply_to = parse_id(form["reply_to"])
        original = await state.store.get_entry(reply_to) if reply_to is not None else None
        if original is None or original.room_id != room.id or original.kind != "message":
            problem = _("You can only reply to a message in this room.")
            return await _form_error(request, room, member, 422, problem, raw_text, key)
    taken = await refuse_if_name_taken(request, room, member)
    if taken is not None:
        return taken
    for limit, subject in ((Limit.MESSAGES, member.id), (Limit.POSTS, client_address(request))):
        wait = state.limits.take(limit, subject)
        if wait:
            refused = await _form_error(
                request, room, member, 429, limit_words(limit), raw_text, key
            )
            refused.headers["Retry-After"] = retry_after(wait)
            return refused

    entry, _new = await state.timeline.append(
        room,
        kind=EntryKind.MESSAGE,
        author_id=member.id,
        author_name=member.name,
        body=text,
        idempotency_key=key,
        reply_to=reply_to,
    )
    if entry.author_id != member.id:
        # Keys are unique per room: someone else's message already has this one.
        error = _("This message's form was already used by someone else: reload and send again.")
        return await _form_error(request, room, member, 409, error, raw_text, None)
    if is_htmx(request):
        response: Response = HTMLResponse(_fresh_form(request, room).replace(_KEY_SLOT, new_key()))
    else:
        response = RedirectResponse(f"/rooms/{room.code}", status_code=303)
    # Which entry this post became, so a page can swap its pending bubble for it.
    response.headers["Sala-Entry-Id"] = str(entry.id)
    return response


# The empty message form a successful post answers with is the same for every post in
# one language but for its room's code and its new idempotency key: rendered once per
# language, the two put in.
_KEY_SLOT = "\x00key\x00"
_CODE_SLOT = "\x00code\x00"
_FRESH_FORMS: dict[str, str] = {}


def _fresh_form(request: Request, room: Room) -> str:
    language = i18n.current()
    form = _FRESH_FORMS.get(language)
    if form is None:
        template = app_state(request).templates.env.get_template("_message_form.html")
        context = {
            "room": {"code": _CODE_SLOT},
            "idempotency_key": _KEY_SLOT,
            "text": "",
            "form_error": None,
        }
        form = _FRESH_FORMS[language] = template.render(context)
    return form.replace(_CODE_SLOT, room.code)


async def _form_error(
    request: Request,
    room: Room,
    member: Member,
    status_code: int,
    error: str,
    text: str = "",
    key: str | None = None,
) -> Response:
    if is_htmx(request):
        context = {
            **_context(request, room, member),
            "form_error": error,
            "text": text,
            "idempotency_key": key or new_key(),
        }
        return render(request, "_message_form.html", context, status_code)
    return await _room_response(
        request, room, member, status_code=status_code, form_error=error, text=text, key=key
    )


# -- leaving -----------------------------------------------------------------


async def leave(request: Request) -> Response:
    """The member leaves now: the exit is recorded at once, their streams in the room
    end, and their other tabs cannot come back in without joining again."""
    state = app_state(request)
    checked = await room_for_member(request)
    if isinstance(checked, Response):
        return checked
    room, member = checked
    unbind(request, room.code)
    state.broker.close_member(room.code, member.id, "left")
    await state.membership.leave_now(room, member.id)
    return RedirectResponse("/", status_code=303)


# -- health ------------------------------------------------------------------


async def healthz(request: Request) -> Response:
    """Ok or not, and nothing about the inside."""
    try:
        await app_state(request).store.ping()
    except Exception:
        return JSONResponse({"status": "error"}, status_code=503)
    return JSONResponse({"status": "ok"})


async def healthz_detail(request: Request) -> Response:
    """For operators on the machine itself: what this process holds (with
    `?count=frozen`, the collector's frozen objects too: a walk of them all).

    Answered only to a loopback peer that no proxy forwarded (nginx adds
    X-Forwarded-For), so it is never public.
    """
    forwarded = any(h in request.headers for h in ("x-forwarded-for", "forwarded"))
    if forwarded or not ip_address_is_loopback(client_address(request)):
        return error_response(request, 404, _("Not found."))
    state = app_state(request)
    database_calls = state.store.calls  # health checks are not counted
    try:
        await state.store.ping()
        database = "ok"
    except Exception as exc:
        database = f"error: {type(exc).__name__}"
    broker = state.broker.status()
    if broker["kind"] == "postgresql":
        try:
            broker["notification_queue_usage"] = await state.store.call(cluster.queue_usage)
        except Exception as exc:
            broker["notification_queue_usage"] = None
            database = f"error: {type(exc).__name__}"
    healthy = database == "ok" and broker.get("connected", True)
    return JSONResponse(
        {
            "status": "ok" if healthy else "error",
            "node_id": state.node_id,
            "database": database,
            "database_calls": database_calls,
            "broker": broker,
            "subscribers": state.broker.subscriber_count(),
            "members": state.membership.count(),
            "garbage_collector": COLLECTOR.status(
                count_frozen=request.query_params.get("count") == "frozen"
            ),
        }
    )


def ip_address_is_loopback(address: str) -> bool:
    try:
        return ipaddress.ip_address(address).is_loopback
    except ValueError:
        return False

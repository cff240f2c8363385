"""Pages and forms: parse input, call the database, render, publish. No SQL here."""

from __future__ import annotations

import secrets
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response

from db.models import EntryKind, Room
from web.identity import clean_name, current_member, has_control_characters, remember
from web.rendering import MEMBERS_SHOWN
from web.state import app_state

PAGE_SIZE = 50
TEXT_MAX = 2000
KEY_MAX = 64


def normalize_code(raw: str) -> str:
    return raw.strip().upper()


async def room_or_404(request: Request) -> Room | Response:
    """The room named in the path, or a 404 that says so."""
    code = normalize_code(request.path_params["code"])
    room = await app_state(request).store.get_room(code)
    if room is None:
        return error_response(request, 404, f"There is no room with code {code}.", code=code)
    return room


def is_htmx(request: Request) -> bool:
    return request.headers.get("hx-request") == "true"


def render(
    request: Request, template: str, context: dict[str, Any], status_code: int = 200
) -> Response:
    templates = app_state(request).templates
    member = current_member(request)
    context = {"me": member.id if member else None, **context}
    return templates.TemplateResponse(request, template, context, status_code=status_code)


def error_response(
    request: Request, status_code: int, message: str, *, code: str | None = None
) -> Response:
    template = "_error.html" if is_htmx(request) else "error.html"
    context = {"message": message, "status": status_code, "code": code}
    return render(request, template, context, status_code)


# -- home --------------------------------------------------------------------


async def home(request: Request) -> Response:
    member = current_member(request)
    code = normalize_code(request.query_params.get("code", ""))[:16]
    error = None
    if member and code and request.query_params.get("taken"):
        error = _name_taken(code, member.name)
    context = {"name": member.name if member else "", "code": code, "error": error}
    return render(request, "home.html", context)


def _name_taken(code: str, name: str) -> str:
    return f"Someone in room {code} is already called {name}. Pick another name."


async def enter(request: Request) -> Response:
    state = app_state(request)
    form = await request.form()
    raw_name = str(form.get("name", ""))
    code = normalize_code(str(form.get("code", "")))
    action = str(form.get("action", "")).strip().lower()
    if action not in ("join", "create"):
        action = "join" if code else "create"

    def again(status_code: int, error: str) -> Response:
        context = {"name": raw_name.strip(), "code": code, "error": error}
        return render(request, "home.html", context, status_code)

    name, problem = clean_name(raw_name)
    if problem:
        return again(422, problem)
    if action == "create":
        remember(request, name)
        room = await state.store.create_room()
        return RedirectResponse(f"/rooms/{room.code}", status_code=303)

    if not code:
        return again(422, "Please enter a room code, or create a new room.")
    found = await state.store.get_room(code)
    if found is None:
        return again(404, f"There is no room with code {code}. Check the code and try again.")
    member_id = request.session.get("member_id")
    if state.presence.is_name_taken(found.code, name, member_id):
        return again(422, _name_taken(found.code, name))
    remember(request, name)
    return RedirectResponse(f"/rooms/{found.code}", status_code=303)


# -- room page ---------------------------------------------------------------


def _parse_before(request: Request) -> int | str | None:
    raw = request.query_params.get("before")
    if raw is None or raw.strip() == "":
        return None
    if not raw.strip().isdigit():
        return "before= must be a message id (a whole number)."
    return int(raw.strip())


async def _history(room: Room, request: Request, before: int | None) -> dict[str, Any]:
    assert room.id is not None
    rows = await app_state(request).store.entries_before(
        room_id=room.id, before=before, limit=PAGE_SIZE + 1
    )
    has_older = len(rows) > PAGE_SIZE
    entries = list(rows[1:] if has_older else rows)
    return {"room": room, "entries": entries, "has_older": has_older}


async def room_page(request: Request) -> Response:
    # Codes are case-insensitive: /rooms/kxq7tb is the same room as /rooms/KXQ7TB.
    code = normalize_code(request.path_params["code"])
    room = await room_or_404(request)
    if isinstance(room, Response):
        return room
    member = current_member(request)
    if member is None:
        return RedirectResponse(f"/?code={code}", status_code=303)
    if app_state(request).presence.is_name_taken(room.code, member.name, member.id):
        # Came by link with a name someone present already has: pick another first.
        return RedirectResponse(f"/?code={code}&taken=1", status_code=303)
    return await _room_response(request, room)


async def _room_response(
    request: Request,
    room: Room,
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
    context = await _history(room, request, before)
    entries = context["entries"]
    members = state.presence.members(room.code)
    if before is None:
        newest_id = entries[-1].id if entries else await state.store.max_entry_id()
    else:
        newest_id = None  # an older page is not live
    context.update(
        before=before,
        newest_id=newest_id,
        members=members[:MEMBERS_SHOWN],
        total=len(members),
        invite_url=str(request.url_for("home").include_query_params(code=room.code)),
        idempotency_key=key or new_key(),
        text=text,
        form_error=form_error,
    )
    return render(request, "room.html", context, status_code)


async def history(request: Request) -> Response:
    room = await room_or_404(request)
    if isinstance(room, Response):
        return room
    before = _parse_before(request)
    if isinstance(before, str):
        return error_response(request, 400, before, code=room.code)
    context = await _history(room, request, before)
    return render(request, "_history.html", context)


# -- posting -----------------------------------------------------------------


def new_key() -> str:
    return secrets.token_urlsafe(16)


def _clean_text(raw: str) -> tuple[str, str | None]:
    text = raw.replace("\r\n", "\n").replace("\r", "\n").strip()
    if not text:
        return text, "Write something before sending."
    if len(text) > TEXT_MAX:
        return (
            text,
            f"A message can be at most {TEXT_MAX} characters long (this one has {len(text)}).",
        )
    if has_control_characters(text, allowed="\n\t"):
        return text, "A message cannot contain control characters."
    return text, None


def _clean_key(raw: str) -> tuple[str | None, str | None]:
    key = raw.strip()
    if not key:
        return None, None
    if len(key) > KEY_MAX or not key.isascii() or not key.isprintable():
        return None, "The message form is out of date: reload the page and send again."
    return key, None


async def post_message(request: Request) -> Response:
    state = app_state(request)
    code = normalize_code(request.path_params["code"])
    member = current_member(request)
    if member is None:
        message = "Your session has ended: pick a name and join the room again."
        return error_response(request, 403, message, code=code)
    room = await room_or_404(request)
    if isinstance(room, Response):
        return room

    form = await request.form()
    raw_text = str(form.get("text", ""))
    raw_key = str(form.get("idempotency_key", "") or request.headers.get("idempotency-key", ""))
    text, problem = _clean_text(raw_text)
    key, key_problem = _clean_key(raw_key)
    if problem or key_problem:
        return await _form_error(request, room, 422, problem or key_problem or "", raw_text, key)
    wait = state.rate_limiter.acquire(member.id)
    if wait:
        error = "You are sending messages too fast. Wait a moment, then send again."
        response = await _form_error(request, room, 429, error, raw_text, key)
        response.headers["Retry-After"] = state.rate_limiter.retry_after_header(wait)
        return response

    await state.timeline.append(
        room,
        kind=EntryKind.MESSAGE,
        author_id=member.id,
        author_name=member.name,
        body=text,
        idempotency_key=key,
    )
    if is_htmx(request):
        context = {"room": room, "idempotency_key": new_key(), "text": "", "form_error": None}
        return render(request, "_message_form.html", context)
    return RedirectResponse(f"/rooms/{room.code}", status_code=303)


async def _form_error(
    request: Request, room: Room, status_code: int, error: str, text: str, key: str | None
) -> Response:
    if is_htmx(request):
        context = {
            "room": room,
            "form_error": error,
            "text": text,
            "idempotency_key": key or new_key(),
        }
        return render(request, "_message_form.html", context, status_code)
    return await _room_response(
        request, room, status_code=status_code, form_error=error, text=text, key=key
    )


# -- health ------------------------------------------------------------------


async def healthz(request: Request) -> Response:
    state = app_state(request)
    try:
        await state.store.ping()
    except Exception as exc:
        return JSONResponse({"status": "error", "database": str(exc)}, status_code=503)
    return JSONResponse(
        {
            "status": "ok",
            "database": "ok",
            "subscribers": state.broker.subscriber_count(),
            "members": state.presence.count(),
        }
    )

"""Changing the conversation: edit, delete, react; and reading it: search, export.

Every change is a timeline entry of its own (kinds `edit`, `delete`, `reaction`,
with `target_id` the message it changes), stored like a message (group commit,
idempotency key, limits), so every reader gets it live, in order, and on resume.
Its event carries the message re-rendered, which replaces the one on the page.
Everything works without JavaScript: each message links to a page of its options.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response, StreamingResponse

from db.models import REACTIONS, Entry, EntryKind, Room
from web.access import client_address, room_for_member
from web.forms import FormProblem, read_form
from web.i18n import _
from web.identity import Member
from web.limits import Limit, limit_words, retry_after
from web.rendering import utc_iso
from web.responses import error_response, is_htmx, render
from web.state import app_state
from web.text import clean_field, clean_message, parse_id
from web.views import KEY_MAX, _context, new_key

SEARCH_RESULTS = 30
EXPORT_BATCH = 500
# "❤" without its emoji selector is the same heart.
_SAME_EMOJI = {"❤": "❤️"}


async def _message(request: Request) -> tuple[Room, Member, Entry] | Response:
    """The room, the member and the message in the path; 403/404 in words otherwise."""
    checked = await room_for_member(request)
    if isinstance(checked, Response):
        return checked
    room, member = checked
    message_id = parse_id(request.path_params["id"])
    message = await app_state(request).store.get_entry(message_id) if message_id else None
    if message is None or message.room_id != room.id or message.kind != EntryKind.MESSAGE.value:
        return error_response(
            request, 404, _("There is no such message in this room."), code=room.code
        )
    if message.deleted_at is not None:
        return error_response(request, 404, _("This message was deleted."), code=room.code)
    return room, member, message


# -- the options of one message (a page without JavaScript, a fragment with it) ----------


async def message_options(request: Request) -> Response:
    found = await _message(request)
    if isinstance(found, Response):
        return found
    room, member, message = found
    return _options(request, room, member, message)


def _options(
    request: Request,
    room: Room,
    member: Member,
    message: Entry,
    *,
    status_code: int = 200,
    error: str | None = None,
    text: str | None = None,
) -> Response:
    context = {
        **_context(request, room, member),
        "message": message,
        "mine": message.author_id == member.id,
        "reactions": REACTIONS,
        "error": error,
        "text": message.body if text is None else text,
        "editing": request.query_params.get("edit") == "1" or error is not None,
        "keys": {name: new_key() for name in ("reply", "edit", "delete", "react")},
    }
    template = "_message_options.html" if is_htmx(request) else "message_options.html"
    return render(request, template, context, status_code)


# -- changes ----------------------------------------------------------------------------


async def edit_message(request: Request) -> Response:
    return await _change(request, EntryKind.EDIT)


async def delete_message(request: Request) -> Response:
    return await _change(request, EntryKind.DELETE)


async def react(request: Request) -> Response:
    return await _change(request, EntryKind.REACTION)


async def _change(request: Request, kind: EntryKind) -> Response:
    state = app_state(request)
    found = await _message(request)
    if isinstance(found, Response):
        return found
    room, member, message = found
    try:
        form = await read_form(request, within=state.settings.body_timeout_seconds)
    except FormProblem as exc:
        return _options(
            request, room, member, message, status_code=exc.status_code, error=exc.message
        )
    raw_key = form.get("idempotency_key", "") or request.headers.get("idempotency-key", "")
    key = clean_field(raw_key, max_length=KEY_MAX) or None
    body: str | None = None
    if kind in (EntryKind.EDIT, EntryKind.DELETE) and message.author_id != member.id:
        if kind == EntryKind.EDIT:
            refusal = _("You can only edit your own messages.")
        else:
            refusal = _("You can only delete your own messages.")
        return error_response(request, 403, refusal, code=room.code)
    if kind == EntryKind.EDIT:
        raw_text = form.get("text", "")
        body, problem = clean_message(raw_text)
        if problem:
            return _options(
                request, room, member, message, status_code=422, error=problem, text=raw_text
            )
    elif kind == EntryKind.REACTION:
        emoji = form.get("emoji", "").strip()
        emoji = _SAME_EMOJI.get(emoji, emoji)
        if emoji not in REACTIONS:
            allowed = " ".join(REACTIONS)
            return error_response(
                request, 422, _("React with one of %(emoji)s.", emoji=allowed), code=room.code
            )
        body = emoji
    for limit, subject in ((Limit.MESSAGES, member.id), (Limit.POSTS, client_address(request))):
        wait = state.limits.take(limit, subject)
        if wait:
            refused = error_response(request, 429, limit_words(limit), code=room.code)
            refused.headers["Retry-After"] = retry_after(wait)
            return refused
    entry, _new = await state.timeline.append(
        room,
        kind=kind,
        author_id=member.id,
        author_name=member.name,
        body=body,
        idempotency_key=key,
        target_id=message.id,
    )
    if entry.author_id != member.id or entry.kind != kind.value:
        error = _("This form was already used for something else: reload and try again.")
        return error_response(request, 409, error, code=room.code)
    if is_htmx(request):
        # The change reaches this page through its stream, like every other reader's.
        response: Response = render(request, "_options_done.html", {"room": room})
    else:
        response = RedirectResponse(f"/rooms/{room.code}#entry-{message.id}", status_code=303)
    response.headers["Sala-Entry-Id"] = str(entry.id)
    return response


# -- search -----------------------------------------------------------------------------


async def search(request: Request) -> Response:
    checked = await room_for_member(request)
    if isinstance(checked, Response):
        return checked
    room, member = checked
    state = app_state(request)
    query = request.query_params.get("q", "").strip()[:200]
    results: list[dict[str, Any]] = []
    if query:
        assert room.id is not None
        for found in await state.store.search(room_id=room.id, query=query, limit=SEARCH_RESULTS):
            assert found.id is not None
            before, after = await state.store.neighbours(room_id=room.id, entry_id=found.id)
            results.append({"entry": found, "before": before, "after": after})
    context = {**_context(request, room, member), "query": query, "results": results}
    return render(request, "search.html", context)


# -- export -----------------------------------------------------------------------------


async def export(request: Request) -> Response:
    checked = await room_for_member(request)
    if isinstance(checked, Response):
        return checked
    room, _member = checked
    if request.path_params["format"] not in ("txt", "json"):
        return error_response(request, 404, _("Exports are .txt or .json."), code=room.code)
    as_json = request.path_params["format"] == "json"
    media = "application/json" if as_json else "text/plain; charset=utf-8"
    filename = f"sala-{room.code}.{'json' if as_json else 'txt'}"
    return StreamingResponse(
        _export_json(request, room) if as_json else _export_text(request, room),
        media_type=media,
        headers={"Content-Disposition": f'attachment; filename="{filename}"'},
    )


async def _entries(request: Request, room: Room) -> AsyncIterator[Entry]:
    """Every entry of the room in order, a batch at a time (never the whole room at once)."""
    store = app_state(request).store
    assert room.id is not None
    after = 0
    while True:
        batch = await store.entries_after_seq(room_id=room.id, after_seq=after, limit=EXPORT_BATCH)
        for entry in batch:
            yield entry
        if len(batch) < EXPORT_BATCH:
            return
        after = batch[-1].seq or after


def _exported(entry: Entry) -> dict[str, Any]:
    item: dict[str, Any] = {
        "id": entry.id,
        "kind": entry.kind,
        "author": entry.author_name,
        "time": utc_iso(entry.created_at),
    }
    if entry.kind == EntryKind.MESSAGE.value:
        item["text"] = entry.body
        if entry.reply_to is not None:
            item["reply_to"] = entry.reply_to
        if entry.edited_at is not None:
            item["edited"] = utc_iso(entry.edited_at)
        if entry.deleted_at is not None:
            item["deleted"] = utc_iso(entry.deleted_at)
    elif entry.target_id is not None:
        item["message"] = entry.target_id
        if entry.kind == EntryKind.EDIT.value:
            item["text"] = entry.body  # gone (None) once the message was deleted
        elif entry.kind == EntryKind.REACTION.value and entry.body:
            item["reaction"] = entry.body[1:]
            item["added"] = entry.body.startswith("+")
    return item


async def _export_json(request: Request, room: Room) -> AsyncIterator[bytes]:
    yield b'{"room": ' + json.dumps(room.code).encode() + b', "entries": [\n'
    first = True
    async for entry in _entries(request, room):
        line = json.dumps(_exported(entry), ensure_ascii=False)
        yield (b"" if first else b",\n") + line.encode()
        first = False
    yield b"\n]}\n"


async def _export_text(request: Request, room: Room) -> AsyncIterator[bytes]:
    title = _("Sala room %(code)s: the whole conversation, times in UTC.", code=room.code)
    yield f"{title}\n\n".encode()
    async for entry in _entries(request, room):
        line = _text_line(entry)
        if line:
            yield (line + "\n").encode()


def _text_line(entry: Entry) -> str:
    when = entry.created_at.strftime("%Y-%m-%d %H:%M:%S")
    who = entry.author_name
    target = entry.target_id
    if entry.kind == EntryKind.JOIN.value:
        return f"[{when}] " + _("%(name)s joined", name=who)
    if entry.kind == EntryKind.LEAVE.value:
        return f"[{when}] " + _("%(name)s left", name=who)
    if entry.kind == EntryKind.MESSAGE.value:
        reply = ""
        if entry.reply_to is not None:
            reply = " " + _("(reply to #%(id)s)", id=entry.reply_to)
        if entry.deleted_at is not None:
            return f"[{when}] #{entry.id} {who}{reply}: " + _("(message deleted)")
        edited = " " + _("(edited)") if entry.edited_at is not None else ""
        text = (entry.body or "").replace("\n", "\n    ")
        return f"[{when}] #{entry.id} {who}{reply}{edited}: {text}"
    if entry.kind == EntryKind.EDIT.value:
        return f"[{when}] " + _("%(name)s edited #%(id)s", name=who, id=target)
    if entry.kind == EntryKind.DELETE.value:
        return f"[{when}] " + _("%(name)s deleted #%(id)s", name=who, id=target)
    if entry.kind == EntryKind.REACTION.value and entry.body:
        emoji = entry.body[1:]
        if entry.body.startswith("+"):
            line = _("%(name)s reacted %(emoji)s to #%(id)s", name=who, emoji=emoji, id=target)
        else:
            line = _("%(name)s took back %(emoji)s on #%(id)s", name=who, emoji=emoji, id=target)
        return f"[{when}] {line}"
    return ""

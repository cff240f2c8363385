"""Templates and the SSE frames built from them."""

from __future__ import annotations

import hashlib
import hmac
import re
import unicodedata
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import cast
from urllib.parse import urlencode

from jinja2 import Environment, FileSystemLoader
from markupsafe import Markup, escape
from starlette.requests import Request
from starlette.templating import Jinja2Templates

from db.models import Entry, Room
from web import i18n
from web.i18n import Localized
from web.text import TEXT_MAX, display_code

TEMPLATES_DIR = Path(__file__).parent / "templates"
_LINE_BREAK = re.compile(r"\r\n|\r|\n")


def make_templates(secret_key: str) -> Jinja2Templates:
    env = Environment(
        loader=FileSystemLoader(TEMPLATES_DIR),
        autoescape=True,
        trim_blocks=True,
        lstrip_blocks=True,
        auto_reload=False,  # no stat() of the template file on every render
        extensions=["jinja2.ext.i18n"],
    )
    # The words in the language of the request, or of the readers an event is for.
    env.install_gettext_callables(  # type: ignore[attr-defined]
        i18n.raw_gettext, i18n.raw_ngettext, newstyle=True, pgettext=i18n.raw_pgettext
    )
    env.globals["current_language"] = i18n.current
    env.globals["languages"] = i18n.NAMES
    env.filters["number"] = i18n.number
    templates = Jinja2Templates(env=env)
    templates.env.globals["author_tag"] = AuthorTagger(secret_key)
    templates.env.filters["utc_iso"] = utc_iso
    templates.env.filters["utc_clock"] = utc_clock
    templates.env.filters["author_colour"] = author_colour
    templates.env.filters["linkify"] = linkify
    templates.env.filters["message_html"] = message_html
    templates.env.filters["highlight"] = highlight
    templates.env.globals["text_max"] = TEXT_MAX
    templates.env.globals["bdi"] = bdi
    templates.env.globals["language_url"] = language_url
    templates.env.globals["strong_code"] = strong_code
    templates.env.filters["room_code"] = display_code
    return templates


_URL = re.compile(r"https?://[^\s<>\"'`]+", re.IGNORECASE)
_TRAILING = ".,;:!?'\")]}"


def linkify(text: str) -> Markup:
    """The text, HTML-escaped, with http(s) URLs made into links (and nothing else:
    escape first, then link; `javascript:` and other schemes never match)."""
    parts: list[str] = []
    position = 0
    for match in _URL.finditer(text):
        url = match.group()
        # Trailing punctuation usually ends the sentence, not the URL (but keep a
        # closing bracket that has its opening one inside, as in Wikipedia links).
        while url and url[-1] in _TRAILING:
            if url[-1] == ")" and url.count("(") >= url.count(")"):
                break
            url = url[:-1]
        if len(url) <= len("https://"):
            continue
        start = match.start()
        parts.append(str(escape(text[position:start])))
        href = escape(url)
        parts.append(
            f'<a href="{href}" rel="noopener noreferrer nofollow" target="_blank">{href}</a>'
        )
        position = start + len(url)
    parts.append(str(escape(text[position:])))
    return Markup("".join(parts))


# (name, author tag) of people who have been in a room, longest name first.
Mentionable = list[tuple[str, str]]


def message_html(text: str | None, mentions: Mentionable | None = None) -> Markup:
    """A message's text as HTML: escaped, links made, and `@Name` of someone who has
    been in the room marked (with their author tag, so each reader's page can tell
    whether it is them)."""
    if not text:
        return Markup("")
    if not mentions or "@" not in text:
        return linkify(text)
    parts: list[str] = []
    position = 0
    folded = text.casefold()
    at = text.find("@")
    while at != -1:
        found = None
        for name, tag in mentions:
            end = at + 1 + len(name)
            if folded[at + 1 : end] == name.casefold() and (
                end == len(text) or not (text[end].isalnum() or text[end] == "_")
            ):
                found = (end, tag)
                break
        if found is None or (at > 0 and (text[at - 1].isalnum() or text[at - 1] == "_")):
            at = text.find("@", at + 1)
            continue
        end, tag = found
        parts.append(str(linkify(text[position:at])))
        parts.append(
            f'<span class="mention" data-tag="{escape(tag)}">{escape(text[at:end])}</span>'
        )
        position = end
        at = text.find("@", end)
    parts.append(str(linkify(text[position:])))
    return Markup("".join(parts))


def _fold(word: str) -> str:
    """Without case or accents, as the search index compares words."""
    decomposed = unicodedata.normalize("NFKD", word.casefold())
    return "".join(c for c in decomposed if not unicodedata.combining(c))


_WORD = re.compile(r"\w+")


def highlight(text: str | None, query: str) -> Markup:
    """The text, escaped, with the words that a search for `query` matched in <mark>."""
    if not text:
        return Markup("")
    wanted = [_fold(w) for w in _WORD.findall(query)]
    parts: list[str] = []
    position = 0
    for match in _WORD.finditer(text):
        if any(_fold(match.group()).startswith(w) for w in wanted):
            parts.append(str(escape(text[position : match.start()])))
            parts.append(f"<mark>{escape(match.group())}</mark>")
            position = match.end()
    parts.append(str(escape(text[position:])))
    return Markup("".join(parts))


def language_url(request: Request, language: str) -> str:
    """This page in `language`: the same path and query, `lang` replaced. After a form
    post (an error page), the page the form was on."""
    if request.method not in ("GET", "HEAD"):
        code = request.path_params.get("code")
        path = f"/rooms/{code}" if isinstance(code, str) and code.isalnum() else "/"
        return f"{path}?{urlencode({'lang': language})}"
    query = [(k, v) for k, v in request.query_params.multi_items() if k != "lang"]
    return f"{request.url.path}?{urlencode([*query, ('lang', language)])}"


def bdi(text: str) -> Markup:
    """A name inside a translated sentence: escaped, isolated from the text's direction."""
    return Markup("<bdi>%s</bdi>") % text


def strong_code(code: str) -> Markup:
    return Markup('<strong class="code">%s</strong>') % code


def utc_iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def utc_clock(moment: datetime) -> str:
    """What shows without JS; app.js rewrites it in the reader's time zone."""
    return moment.astimezone(UTC).strftime("%H:%M UTC")


class AuthorTagger:
    """A stable, non-reversible tag of a member in one room (an HMAC of both).

    The fragment is shared by every reader, so it carries this instead of the member
    id; being per room, it does not link one person's messages across rooms.
    """

    def __init__(self, secret_key: str) -> None:
        self._key = hashlib.sha256(b"author-tag:" + secret_key.encode()).digest()
        self._cache: dict[tuple[int | None, str], str] = {}

    def __call__(self, room_id: int | None, member_id: str) -> str:
        tag = self._cache.get((room_id, member_id))
        if tag is None:
            message = f"{room_id}:{member_id}".encode()
            digest = hmac.new(self._key, message, hashlib.sha256).hexdigest()
            tag = self._cache[(room_id, member_id)] = digest[:16]
            if len(self._cache) > 100_000:
                self._cache.clear()
        return tag


AUTHOR_COLOURS = 20  # .author-c0 … .author-c19 in app.css


def author_colour(tag: str) -> int:
    """Which of the author colours a tag gets: stable, spread evenly."""
    return int(tag[:8], 16) % AUTHOR_COLOURS


def render_entry(
    env: Environment,
    entry: Entry,
    *,
    code: str = "",
    reactions: dict[int, list[tuple[str, int, list[str]]]] | None = None,
    mentions: Mentionable | None = None,
    oob: bool = False,
) -> str:
    if code and not reactions and not oob:
        plain = _plain_entry(env, entry, code, mentions)
        if plain is not None:
            return plain
    return env.get_template("_entry.html").render(
        entry=entry, code=code, reactions=reactions, mentions=mentions, oob=oob
    )


def _plain_entry(
    env: Environment, entry: Entry, code: str, mentions: Mentionable | None
) -> str | None:
    """What _entry.html makes of a new message (no reply, edit or reactions), a join or a
    leave, for every reader (no `me`), written out: the template took more of a post's
    time than anything but the writes to the readers' sockets. None for anything else
    (the template draws it). tests/test_rendering.py holds the two to the same text."""
    fields = entry.__dict__  # the loaded values, without SQLAlchemy's attribute lookups
    try:
        kind = fields["kind"]
        if kind == "message":
            if fields["reply_to"] or fields["deleted_at"] or fields["edited_at"]:
                return None
        elif kind not in ("join", "leave"):
            return None
        room_id, author_id, author_name = (
            fields["room_id"],
            fields["author_id"],
            fields["author_name"],
        )
        entry_id, created, body = fields["id"], fields["created_at"], fields["body"]
    except KeyError:  # not loaded (expired): the template reads it through the session
        return None
    tagger = cast(AuthorTagger, env.globals["author_tag"])
    tag = tagger(room_id, author_id)
    name = escape(author_name)
    author = (
        f'<span class="author author-c{author_colour(tag)}" title="{name} #{tag[:4]}">'
        f"<bdi>{name}</bdi></span>"
    )
    stamp = f'<time datetime="{utc_iso(created)}">{utc_clock(created)}</time>'
    head = f'<li id="entry-{entry_id}" class="entry {kind}" data-author="{tag}">\n'
    if kind != "message":
        said = i18n.raw_gettext("joined" if kind == "join" else "left")
        return f'{head}  <p class="notice">{author} {said} {stamp}</p>\n</li>'
    more = i18n.raw_gettext("More: reply, react")
    return (
        f'{head}  <div class="bubble">\n    {author}\n'
        f'    <p class="text" dir="auto">{message_html(body, mentions)}</p>\n'
        f'    <p class="meta"><a class="options" href="/rooms/{escape(code)}/messages/{entry_id}"'
        f' aria-label="{more}">⋯</a>      {stamp}</p>\n  </div>\n</li>'
    )


MEMBERS_SHOWN = 100


def render_members(env: Environment, room: Room, members: Iterable[tuple[str, str]]) -> str:
    """The member list; past MEMBERS_SHOWN names it says how many more there are."""
    everyone = list(members)
    return env.get_template("_members.html").render(
        room=room, members=everyone[:MEMBERS_SHOWN], total=len(everyone), oob=True
    )


def members_frame(env: Environment, room: Room, members: Iterable[tuple[str, str]]) -> Localized:
    """The member list as an event without an id, in each language that asks for it."""
    everyone = list(members)
    return Localized(lambda: sse_frame(render_members(env, room, everyone)))


def sse_frame(html: str, event_id: int | None = None) -> bytes:
    """One SSE event: optional `id:` line, then the HTML as `data:` lines.

    Never an empty `id:` line: it would reset the client's cursor.
    """
    lines = [f"id: {event_id}"] if event_id is not None else []
    lines.extend("data: " + line for line in _LINE_BREAK.split(html.strip()))
    return ("\n".join(lines) + "\n\n").encode()


def entry_frame(
    env: Environment, entry: Entry, *, code: str = "", mentions: Mentionable | None = None
) -> bytes:
    assert entry.id is not None
    return sse_frame(render_entry(env, entry, code=code, mentions=mentions), entry.id)


def change_frame(
    env: Environment,
    change: Entry,
    *,
    code: str,
    message: Entry | None,
    replies: Iterable[Entry] = (),
    reactions: dict[int, list[tuple[str, int, list[str]]]] | None = None,
    mentions: Mentionable | None = None,
) -> bytes:
    """The event of an edit, delete or reaction: the message as it is now (and replies
    quoting it), each replacing its namesake on the page; nothing is appended."""
    assert change.id is not None
    parts = [
        render_entry(env, shown, code=code, reactions=reactions, mentions=mentions, oob=True)
        for shown in ([message] if message is not None else []) + list(replies)
    ]
    return sse_frame("\n".join(parts) or "<template></template>", change.id)

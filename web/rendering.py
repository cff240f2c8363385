"""Templates and the SSE frames built from them."""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path

from jinja2 import Environment, FileSystemLoader
from markupsafe import Markup, escape
from starlette.templating import Jinja2Templates

from db.models import Entry, Room
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
    )
    templates = Jinja2Templates(env=env)
    templates.env.globals["author_tag"] = AuthorTagger(secret_key)
    templates.env.filters["utc_iso"] = utc_iso
    templates.env.filters["utc_clock"] = utc_clock
    templates.env.filters["author_colour"] = author_colour
    templates.env.filters["linkify"] = linkify
    templates.env.globals["text_max"] = TEXT_MAX
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


def render_entry(env: Environment, entry: Entry) -> str:
    return env.get_template("_entry.html").render(entry=entry)


MEMBERS_SHOWN = 100


def render_members(env: Environment, room: Room, members: Iterable[tuple[str, str]]) -> str:
    """The member list; past MEMBERS_SHOWN names it says how many more there are."""
    everyone = list(members)
    return env.get_template("_members.html").render(
        room=room, members=everyone[:MEMBERS_SHOWN], total=len(everyone), oob=True
    )


def sse_frame(html: str, event_id: int | None = None) -> bytes:
    """One SSE event: optional `id:` line, then the HTML as `data:` lines.

    Never an empty `id:` line: it would reset the client's cursor.
    """
    lines = [f"id: {event_id}"] if event_id is not None else []
    lines.extend("data: " + line for line in _LINE_BREAK.split(html.strip()))
    return ("\n".join(lines) + "\n\n").encode()


def entry_frame(env: Environment, entry: Entry) -> bytes:
    assert entry.id is not None
    return sse_frame(render_entry(env, entry), entry.id)

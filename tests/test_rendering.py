"""The written-out drawing of a new message, join or leave (web/rendering.py's
`_plain_entry`, taken for every event of that kind) is the template's, character for
character: for any name and text, with mentions and links, in both languages, and for
entries as the database gives them back."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from db.models import Entry, EntryKind
from db.store import Store
from web import i18n
from web.broker import MemoryBroker
from web.rendering import _plain_entry, make_templates, render_entry
from web.timeline import Timeline

ENV = make_templates("test-key").env
TEMPLATE = ENV.get_template("_entry.html")

# Text as a form can carry it (no lone surrogates), with the characters that matter to
# HTML, to links and to mentions well represented.
_TEXT = st.lists(
    st.one_of(
        st.characters(exclude_categories=["Cs"]),
        st.sampled_from(list("<>&\"'@ \n\t:/.#?=_()")),
        st.sampled_from(["http://", "https://x.pt/a?b=1&c=2", "@Ana", "@bo_", "javascript:"]),
    ),
    max_size=40,
).map("".join)
_NAME = st.text(
    alphabet=st.one_of(st.characters(exclude_categories=["Cs"]), st.sampled_from("<&\"' ")),
    min_size=1,
    max_size=20,
)


def _template(entry: Entry, code: str, mentions: list[tuple[str, str]] | None) -> str:
    return TEMPLATE.render(entry=entry, code=code, reactions=None, mentions=mentions, oob=False)


@settings(max_examples=300, deadline=None)
@given(
    kind=st.sampled_from([EntryKind.MESSAGE, EntryKind.JOIN, EntryKind.LEAVE]),
    name=_NAME,
    body=_TEXT,
    mentioned=st.lists(st.tuples(_NAME, st.text("0123456789abcdef", min_size=16, max_size=16))),
    language=st.sampled_from(sorted(i18n.NAMES)),
    moment=st.datetimes(
        min_value=datetime(2000, 1, 1), max_value=datetime(2100, 1, 1), timezones=st.just(UTC)
    ),
    entry_id=st.integers(1, 2**31 - 1),
    room_id=st.integers(1, 2**31 - 1),
)
def test_a_new_entry_is_drawn_as_the_template_draws_it(
    kind: EntryKind,
    name: str,
    body: str,
    mentioned: list[tuple[str, str]],
    language: str,
    moment: datetime,
    entry_id: int,
    room_id: int,
) -> None:
    entry = Entry(
        id=entry_id,
        room_id=room_id,
        seq=1,
        kind=kind,
        author_id="member-1",
        author_name=name,
        body=body if kind == EntryKind.MESSAGE else None,
        created_at=moment,
    )
    mentions = sorted(mentioned, key=lambda pair: -len(pair[0])) or None
    with i18n.use(language):
        written = _plain_entry(ENV, entry, "ABCD2345", mentions)
        assert written is not None  # the written-out drawing is the one taken
        assert written == _template(entry, "ABCD2345", mentions)
        assert render_entry(ENV, entry, code="ABCD2345", mentions=mentions) == written


@pytest.mark.anyio
async def test_entries_from_the_database_are_drawn_as_the_template_draws_them(
    tmp_path: Path,
) -> None:
    """As the write path returns them and as a read gives them back; a reply, an edited
    or a deleted message is left to the template."""
    store = Store(f"sqlite:///{tmp_path / 'sala.db'}")
    store.init()
    try:
        room = await store.create_room()
        timeline = Timeline(store=store, broker=MemoryBroker(10), env=ENV)
        appended = []
        for kind, body in [
            (EntryKind.JOIN, None),
            (EntryKind.MESSAGE, "olá <b>@Ana</b> https://example.org/x?y=1&z"),
            (EntryKind.MESSAGE, "duas\nlinhas"),
            (EntryKind.LEAVE, None),
        ]:
            entry, _ = await timeline.append(
                room, kind=kind, author_id="m1", author_name="Ana & <Bo>", body=body
            )
            appended.append(entry)
        reply, _ = await timeline.append(
            room,
            kind=EntryKind.MESSAGE,
            author_id="m1",
            author_name="Ana",
            body="sim",
            reply_to=appended[1].id,
        )
        assert room.id is not None
        read = list(await store.entries_after(room_id=room.id, after=0, limit=10))
        assert [e.id for e in read] == [e.id for e in [*appended, reply]]
        mentions = [("Ana", "0123456789abcdef")]
        for language in sorted(i18n.NAMES):
            with i18n.use(language):
                for entry in [*appended, *read[:4]]:
                    assert _plain_entry(ENV, entry, room.code, mentions) is not None
                    drawn = render_entry(ENV, entry, code=room.code, mentions=mentions)
                    assert drawn == _template(entry, room.code, mentions)
                for changed in (reply, read[4]):
                    assert _plain_entry(ENV, changed, room.code, mentions) is None
                edited = Entry(**{**read[1].model_dump(), "edited_at": datetime.now(UTC)})
                deleted = Entry(**{**read[2].model_dump(), "deleted_at": datetime.now(UTC)})
                for changed in (edited, deleted):
                    assert _plain_entry(ENV, changed, room.code, mentions) is None
                    drawn = render_entry(ENV, changed, code=room.code, mentions=mentions)
                    assert drawn == _template(changed, room.code, mentions)
    finally:
        store.dispose()

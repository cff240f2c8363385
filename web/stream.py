"""The room's SSE stream: cursor, replay, live, heartbeat, lifetime, presence.

    request ──► subscribe to the room (events queue up from here on)
            ──► presence: count this stream
            ──► at once: a comment, `retry:` and the member list
            ──► a member's first stream records a join
            ──► replay from the database every entry after the cursor
            ──► live: queued events, skipping those already sent; heartbeats
            ──► end: lifetime reached, poll answered, too slow, or shutdown

Each stream reads in its request's language: events carry a frame per language,
rendered by the first stream that asks for it (i18n.Localized).

Subscribing before the replay means nothing posted meanwhile is missed. Entries are
counted by their place in the room (seq, one order on every process): the cursor,
an entry id, maps to the seq of the room's last entry up to it, and live entries at
or below the last seq sent are skipped, so nothing is sent twice. A cursor at the
room's newest entry (the memory broker knows it: every entry is published there
after it commits) connects without touching the database.

The HTTP response that carries a stream (headers, one task per stream, the stall
and shutdown watchdog) is web/sse.py.
"""

from __future__ import annotations

import asyncio
import functools
import random
from collections.abc import AsyncIterator, Awaitable
from dataclasses import dataclass

from starlette.datastructures import QueryParams
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Send

from db.models import Room
from web import i18n
from web.access import client_address, refuse_if_name_taken, room_for_member
from web.broker import Event, SubscriptionClosed
from web.direct import ChunkWriter, write_now
from web.i18n import _
from web.identity import Member
from web.limits import TOO_MANY_STREAMS, Limit, limit_words
from web.responses import error_response
from web.security import SECURITY_HEADERS, header
from web.sse import EventStream, StreamSignal
from web.state import AppState, app_state
from web.text import parse_id

REPLAY_BATCH = 500


def _quiet_seconds(heartbeat: float) -> float:
    """How long one stream stays quiet before a heartbeat: between half and nearly all
    of `heartbeat`, at random. The margin left covers the alarm's rounding up to the
    next 1/64 s (web/broker.py) and a busy loop's lateness, so that no gap exceeds
    `heartbeat`."""
    longest = heartbeat - min(heartbeat / 8, 0.5)
    return longest * random.uniform(0.5, 1.0)


@dataclass(frozen=True, slots=True)
class _Cursor:
    after: int | None


def _parse_cursor(request: Request, query: QueryParams | None) -> _Cursor | str:
    """Last-Event-ID wins over ?after= (htmx reconnects to the original URL)."""
    last_id = parse_id(header(request.scope, b"last-event-id"))
    if last_id is not None:
        return _Cursor(last_id)
    after = query.get("after") if query is not None else None
    if after is None or after.strip() == "":
        return _Cursor(None)
    cursor = parse_id(after)
    if cursor is None:
        return _("The cursor (after=) must be a whole number of zero or more.")
    return _Cursor(cursor)


async def room_events(request: Request) -> Response:
    """The stream, or an error page; served outside the middleware stack (see gate.py)."""
    response = await _room_events(request)
    if not isinstance(response, EventStream):
        response.headers.update(SECURITY_HEADERS)
    return response


async def _room_events(request: Request) -> Response:
    state = app_state(request)
    site = header(request.scope, b"sec-fetch-site")
    if site is not None and site not in ("same-origin", "none"):
        # Another site cannot make a visitor appear in a room (a top-level GET joins).
        return error_response(request, 403, _("Open the room from Sala itself."))
    checked = await room_for_member(request)
    if isinstance(checked, Response):
        return checked
    room, member = checked
    taken = await refuse_if_name_taken(request, room, member)
    if taken is not None:
        return taken
    # Most streams have no query string (reconnects carry Last-Event-ID): not parsed then.
    query = request.query_params if request.scope["query_string"] else None
    cursor = _parse_cursor(request, query)
    if isinstance(cursor, str):
        return error_response(request, 400, cursor, code=room.code)
    limits = state.limits
    wait = limits.take(Limit.STREAM_OPENS, member.id)
    if wait:
        return error_response(request, 429, limit_words(Limit.STREAM_OPENS), wait=wait)
    address = client_address(request)
    if not limits.open_stream(member.id, address):
        return error_response(request, 429, _(TOO_MANY_STREAMS), wait=5)
    after = cursor.after
    poll = query is not None and query.get("mode") == "poll"
    # The server keeps the scope as long as the stream is open; the session is not
    # needed from here on.
    request.scope.pop("session", None)
    signal = StreamSignal()
    return EventStream(
        _events(state, room, member, after, poll, signal, i18n.current()),
        stall_seconds=state.settings.send_timeout_seconds,
        signal=signal,
        on_close=functools.partial(limits.close_stream, member.id, address),
    )


class _Live:
    """A live stream's place: the last seq it sent and when it last wrote. Its own task
    writes what was queued; while that task is parked, whoever publishes an event
    writes it at once through `deliver` (one pass over a room's streams per event,
    no task woken per stream)."""

    __slots__ = ("chunks", "language", "last_seq", "last_write", "loop", "send")

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        language: str,
        last_seq: int | None,
        send: Send | None,
    ) -> None:
        self.loop = loop
        self.language = language
        self.last_seq = last_seq
        self.last_write = loop.time()
        self.send = send
        self.chunks = ChunkWriter.for_send(send) if send is not None else None

    def _is_new(self, event: Event) -> bool:
        """False for an entry sent already (by the replay); counts it as sent otherwise."""
        seq = event.seq
        if seq is None:
            return True
        if self.last_seq is not None and seq <= self.last_seq:
            return False
        self.last_seq = seq
        return True

    def admit(self, event: Event) -> bytes | None:
        """The event's frame in this stream's language, or None if it was sent already."""
        return (event.frame(self.language) or None) if self._is_new(event) else None

    def deliver(self, event: Event) -> Awaitable[None] | None:
        """Write the event now (the publisher's pass over the room): once per stream
        and event, so it looks the frame up once, as a ready chunk where it can."""
        send = self.send
        if not self._is_new(event) or send is None:
            return None
        chunks = self.chunks
        if chunks is not None:
            chunk = event.chunk(self.language)
            if not chunk:
                return None  # nothing to send (it could not be rendered)
            self.last_write = self.loop.time()
            if chunks.write(chunk):
                return None
        frame = event.frame(self.language)
        if not frame:
            return None
        self.last_write = self.loop.time()
        return write_now(send, frame)


async def _events(
    state: AppState,
    room: Room,
    member: Member,
    after: int | None,
    poll: bool,
    signal: StreamSignal,
    language: str,
) -> AsyncIterator[bytes | Awaitable[None]]:
    settings = state.settings
    loop = asyncio.get_running_loop()
    started = loop.time()
    if poll:
        retry_ms = random.randint(100, 400)
        deadline = started + settings.poll_wait_seconds
    else:
        # Reconnects come back well inside the presence grace: no join/leave noise.
        ceiling = max(200, min(3000, int(settings.presence_grace_seconds * 500)))
        retry_ms = random.randint(ceiling // 3, ceiling)
        deadline = started + settings.stream_max_seconds * random.uniform(0.8, 1.0)

    presence = state.presence
    assert room.id is not None
    async with state.broker.subscribe(room, member.id) as subscription:
        signal.subscription = subscription
        if signal.is_set or signal.is_gone:
            return
        joined = presence.connect(room.code, member.id, member.name)
        try:
            # First bytes at once: a comment, then `retry:` riding on the member list
            # (htmx only reads `retry:` from an event with data).
            head = f": sala room {room.code}\nretry: {retry_ms}\n".encode()
            yield head + (await state.membership.frame(room)).get(language)
            del head
            if joined:
                await state.membership.joined(room, member.id, member.name)

            # Entries are counted by their place in the room (seq): the cursor is an
            # entry id, the seq of the room's last entry up to it is where to go on.
            # A cursor at the room's newest entry, as the broker knows it, needs no
            # database at all (a page's stream, a reconnect): nothing to replay.
            last_seq = None
            replay = False
            at_cursor = (0, 0)
            if after is not None:
                newest = state.broker.newest(room.code)
                if newest is not None and newest[0] == after:
                    last_seq = newest[1]
                else:
                    at_cursor = await state.store.entry_at_cursor(room_id=room.id, after=after)
                    last_seq, replay = at_cursor[1], True
            sent_entries = False
            while replay and last_seq is not None:
                batch = await state.store.entries_after_seq(
                    room_id=room.id, after_seq=last_seq, limit=REPLAY_BATCH
                )
                if not batch:
                    if not sent_entries and at_cursor[0]:
                        state.broker.note_newest(room.code, *at_cursor)
                    break
                events = await state.timeline.events(room, batch)
                yield b"".join(event.frame(language) for event in events)
                sent_entries = True
                last_seq = batch[-1].seq
                if len(batch) < REPLAY_BATCH:
                    newest_id, newest_seq = batch[-1].id, batch[-1].seq
                    if newest_id is not None and newest_seq is not None:
                        state.broker.note_newest(room.code, newest_id, newest_seq)
                    break
            if poll and sent_entries:
                return

            # A heartbeat when nothing was written for `quiet` seconds (between half and
            # nearly all of a heartbeat). The stream wakes at `tick`, fixed in advance (events
            # written meanwhile move no timer), and finds the next one from its last
            # write. `quiet` differs from stream to stream: a crowd that connected in the
            # same second would otherwise wake, and write, in the same instant, every
            # heartbeat, stalling everything else the process does.
            live = _Live(loop, language, last_seq, signal.send)
            quiet = _quiet_seconds(settings.heartbeat_seconds)
            tick = live.last_write + quiet
            if not poll and live.send is not None:
                subscription.deliver = live.deliver  # written to directly while parked
            while True:
                now = loop.time()
                if now >= deadline:
                    return
                if now >= tick:
                    if now - live.last_write >= quiet:
                        yield b": heartbeat\n\n"
                        live.last_write = now
                    tick = live.last_write + quiet
                waiter = subscription.wait(min(deadline, tick))
                if waiter is not None:
                    await waiter
                    del waiter
                try:
                    events = subscription.take()
                except SubscriptionClosed:
                    return
                unfinished = subscription.unfinished
                if unfinished is not None:
                    # A direct write met a full send buffer: finish it here, before
                    # anything queued meanwhile (the response watches it for a stall).
                    subscription.unfinished = None
                    yield unfinished
                frames = [frame for frame in map(live.admit, events) if frame]
                if frames:
                    yield b"".join(frames)
                    live.last_write = loop.time()
                    if poll:
                        return
        finally:
            # Runs in a cancelled scope when the client goes: nothing here awaits.
            presence.disconnect(room.code, member.id, shutting_down=signal.is_set)
            # The heartbeat alarm holds the subscription until it rings, up to a
            # heartbeat from now; through `deliver` it held the whole connection too
            # (the writer, uvicorn's request and transport: about 5 KB a stream).
            subscription.deliver = None

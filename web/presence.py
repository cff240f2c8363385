"""Who is in which room, with a grace period before anyone leaves.

A member enters when their first stream in a room opens and leaves when their
last stream has stayed closed for the grace period, so a refresh, a second tab
or a reconnect makes no join/leave noise. Members inside the grace period still
hold their name.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from web.text import name_key

logger = logging.getLogger(__name__)

OnLeave = Callable[[str, str, str], Awaitable[None]]


@dataclass(slots=True)
class _Member:
    name: str
    key: str  # what names are compared on: lookalikes have the same key
    streams: int = 0
    leave_timer: asyncio.Task[None] | None = None


class Presence:
    def __init__(self, grace_seconds: float, on_leave: OnLeave) -> None:
        self._grace = grace_seconds
        self._on_leave = on_leave
        self._rooms: dict[str, dict[str, _Member]] = {}
        # Who holds which name key in a room: is_name_taken runs on every post and
        # every stream opened, so it must not walk the room (a crowd arriving in a
        # room of thousands would make that quadratic).
        self._keys: dict[str, dict[str, set[str]]] = {}
        self._versions: dict[str, int] = {}

    def connect(self, room: str, member_id: str, name: str) -> bool:
        """Count one more stream; True when the member has just entered the room.

        Synchronous, so the member is marked present before anything awaits the
        join: two tabs opening together record one join.
        """
        members = self._rooms.setdefault(room, {})
        member = members.get(member_id)
        if member is None:
            members[member_id] = _Member(name=name, key=name_key(name), streams=1)
            self._hold_key(room, members[member_id].key, member_id)
            self._changed(room)
            return True
        member.streams += 1
        if member.name != name:
            self._drop_key(room, member.key, member_id)
            member.name = name
            member.key = name_key(name)
            self._hold_key(room, member.key, member_id)
            self._changed(room)
        if member.leave_timer is not None:
            member.leave_timer.cancel()
            member.leave_timer = None
        return False

    def disconnect(self, room: str, member_id: str, *, shutting_down: bool = False) -> None:
        """Count one stream fewer. Synchronous: it runs in an already-cancelled scope.

        A stream ended by the server shutting down starts no leave: the member is
        held (their reader reconnects to another process, or to this one restarted).
        """
        member = self._rooms.get(room, {}).get(member_id)
        if member is None:
            return
        member.streams -= 1
        if member.streams <= 0:
            member.streams = 0
            if not shutting_down:
                self._schedule_leave(room, member_id, member, self._grace)

    def restore(self, room: str, member_id: str, name: str, grace_seconds: float) -> None:
        """Someone the database says is in the room, from before a restart.

        They hold their place (and their name) for `grace_seconds`; if they reconnect
        by then there is no join noise, otherwise they leave as usual.
        """
        members = self._rooms.setdefault(room, {})
        if member_id in members:
            return
        member = _Member(name=name, key=name_key(name))
        members[member_id] = member
        self._hold_key(room, member.key, member_id)
        self._changed(room)
        self._schedule_leave(room, member_id, member, grace_seconds)

    def leave_now(self, room: str, member_id: str) -> str | None:
        """The member left on purpose: gone at once, no grace. Their name, if they
        were present (a reader without JavaScript never entered)."""
        members = self._rooms.get(room, {})
        member = members.pop(member_id, None)
        if member is None:
            return None
        self._drop_key(room, member.key, member_id)
        if member.leave_timer is not None:
            member.leave_timer.cancel()
            member.leave_timer = None
        member.streams = 0
        self._changed(room)
        if not members:
            self._rooms.pop(room, None)
        return member.name

    def _schedule_leave(self, room: str, member_id: str, member: _Member, delay: float) -> None:
        if member.leave_timer is not None:
            member.leave_timer.cancel()
        member.leave_timer = asyncio.get_running_loop().create_task(
            self._leave_later(room, member_id, member, delay)
        )

    async def _leave_later(self, room: str, member_id: str, member: _Member, delay: float) -> None:
        await asyncio.sleep(delay)
        members = self._rooms.get(room)
        if members is None or members.get(member_id) is not member or member.streams:
            return
        member.leave_timer = None
        del members[member_id]
        self._drop_key(room, member.key, member_id)
        self._changed(room)
        if not members:
            del self._rooms[room]
        try:
            await self._on_leave(room, member_id, member.name)
        except Exception:
            logger.exception("could not record that %s left room %s", member_id, room)

    def _changed(self, room: str) -> None:
        self._versions[room] = self._versions.get(room, 0) + 1

    def version(self, room: str) -> int:
        """Grows whenever the room's member list changes (for caching its rendering)."""
        return self._versions.get(room, 0)

    def is_name_taken(self, room: str, name: str, member_id: str | None) -> bool:
        """Someone else present (or inside their grace) has a name that looks like it."""
        holders = self._keys.get(room, {}).get(name_key(name))
        if not holders:
            return False
        return len(holders) > 1 or member_id not in holders

    def _hold_key(self, room: str, key: str, member_id: str) -> None:
        self._keys.setdefault(room, {}).setdefault(key, set()).add(member_id)

    def _drop_key(self, room: str, key: str, member_id: str) -> None:
        keys = self._keys.get(room)
        holders = keys.get(key) if keys is not None else None
        if keys is None or holders is None:
            return
        holders.discard(member_id)
        if not holders:
            del keys[key]
            if not keys:
                del self._keys[room]

    def members(self, room: str) -> list[tuple[str, str]]:
        """(member id, name) of everyone present, by name."""
        members = self._rooms.get(room, {})
        return sorted(
            ((member_id, m.name) for member_id, m in members.items()),
            key=lambda pair: pair[1].casefold(),
        )

    def local_members(self) -> list[tuple[str, str, str]]:
        """(room code, member id, name) of everyone this process holds."""
        return [
            (room, member_id, member.name)
            for room, members in self._rooms.items()
            for member_id, member in members.items()
        ]

    def count(self) -> int:
        return sum(len(members) for members in self._rooms.values())

    def close(self) -> None:
        """Cancel pending leaves at shutdown; the next start restores these members."""
        for members in self._rooms.values():
            for member in members.values():
                if member.leave_timer is not None:
                    member.leave_timer.cancel()
                    member.leave_timer = None

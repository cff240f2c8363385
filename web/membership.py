"""Who is in a room, recorded: joins, leaves and the member list.

`Presence` (web/presence.py) counts this process's streams per member and runs the
grace timer; this module turns its transitions into timeline entries and answers
"who is here". Two ways:

- `LocalMembership` (one process, memory broker): the process's own counts are the
  whole truth; joins and leaves are appended like messages.
- `SharedMembership` (several processes, PostgreSQL broker): presence is claim rows,
  one per (room, member, process). A process claims a member at their first stream
  there and releases them when their grace there ends; the database decides, under
  the room's lock, whether that was a JOIN (the first claim anywhere) or a LEAVE (the
  last one). Each process renews a lease; another sweeps the claims of one that
  stopped. Shutting down keeps the claims (readers move to other processes without
  noise) and shortens the lease to the grace.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
from typing import Protocol

from db import cluster
from db.models import EntryKind, Room
from db.store import Store
from web.i18n import Localized
from web.pg_broker import PgBroker
from web.presence import Presence
from web.settings import Settings
from web.text import name_key
from web.timeline import Timeline

logger = logging.getLogger(__name__)

# After a restart, members the database calls present keep their place this long.
RESTORE_GRACE_SECONDS = 30.0


class Membership(Protocol):
    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    async def joined(self, room: Room, member_id: str, name: str) -> None: ...

    async def left(self, code: str, member_id: str, name: str) -> None: ...

    async def leave_now(self, room: Room, member_id: str) -> None: ...

    async def members(self, room: Room) -> list[tuple[str, str]]: ...

    async def is_name_taken(self, room: Room, name: str, member_id: str | None) -> bool: ...

    async def frame(self, room: Room) -> Localized: ...

    def count(self) -> int: ...


class LocalMembership:
    def __init__(
        self, presence: Presence, timeline: Timeline, store: Store, settings: Settings
    ) -> None:
        self.presence = presence
        self.timeline = timeline
        self.store = store
        self.settings = settings

    async def start(self) -> None:
        """Members who were in a room when the server stopped hold their place a while."""
        grace = max(RESTORE_GRACE_SECONDS, self.settings.presence_grace_seconds)
        rows = await self.store.present_members()
        for code, member_id, name in rows:
            self.presence.restore(code, member_id, name, grace)
        if rows:
            logger.info("restored %d present members from the timeline", len(rows))

    async def stop(self) -> None:
        self.presence.close()

    async def joined(self, room: Room, member_id: str, name: str) -> None:
        await self.timeline.append(room, kind=EntryKind.JOIN, author_id=member_id, author_name=name)
        self.timeline.publish_presence(room, self.presence)

    async def left(self, code: str, member_id: str, name: str) -> None:
        room = await self.store.get_room(code)
        if room is None:
            return
        await self.timeline.append(
            room, kind=EntryKind.LEAVE, author_id=member_id, author_name=name
        )
        self.timeline.publish_presence(room, self.presence)

    async def leave_now(self, room: Room, member_id: str) -> None:
        name = self.presence.leave_now(room.code, member_id)
        if name is not None:
            await self.timeline.append(
                room, kind=EntryKind.LEAVE, author_id=member_id, author_name=name
            )
            self.timeline.publish_presence(room, self.presence)

    async def members(self, room: Room) -> list[tuple[str, str]]:
        return self.presence.members(room.code)

    async def is_name_taken(self, room: Room, name: str, member_id: str | None) -> bool:
        return self.presence.is_name_taken(room.code, name, member_id)

    async def frame(self, room: Room) -> Localized:
        return self.timeline.presence_frame(room, self.presence)

    def count(self) -> int:
        return self.presence.count()


class SharedMembership:
    def __init__(
        self, presence: Presence, store: Store, broker: PgBroker, settings: Settings
    ) -> None:
        self.presence = presence
        self.store = store
        self.broker = broker
        self.settings = settings
        self.node_id = broker.node_id
        self._claims: dict[tuple[str, str], asyncio.Task[None]] = {}
        self._unclaimed: set[tuple[str, str]] = set()  # claims that failed: retried
        self._unreleased: set[tuple[str, str]] = set()  # releases that failed: retried
        self._tasks: list[asyncio.Task[None]] = []
        self._renewed_since: float | None = None
        broker.on_left = self._forget
        broker.on_listening = self._listening

    async def start(self) -> None:
        await self._register()
        loop = asyncio.get_running_loop()
        self._renewed_since = loop.time()
        self._tasks = [
            loop.create_task(self._keep_lease(), name="sala-lease"),
            loop.create_task(self._sweep(), name="sala-sweep"),
        ]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(BaseException):
                await task
        self.presence.close()
        try:
            await self.store.call(
                cluster.shorten_lease,
                node_id=self.node_id,
                seconds=self.settings.presence_grace_seconds,
            )
        except Exception as exc:
            logger.warning("could not shorten this process's lease: %s", exc)

    async def _register(self) -> None:
        await self.store.call(
            cluster.register_node,
            node_id=self.node_id,
            host=socket.gethostname(),
            pid=os.getpid(),
            lease=self.settings.node_lease_seconds,
        )

    async def _listening(self, pid: int) -> None:
        try:
            await self.store.call(cluster.set_listen_pid, node_id=self.node_id, pid=pid)
        except Exception as exc:
            logger.warning("could not record the LISTEN backend: %s", exc)

    # -- transitions --

    async def joined(self, room: Room, member_id: str, name: str) -> None:
        key = (room.code, member_id)
        task = asyncio.get_running_loop().create_task(self._claim(room, member_id, name))
        self._claims[key] = task
        try:
            await asyncio.shield(task)
        finally:
            if self._claims.get(key) is task and task.done():
                del self._claims[key]

    async def _claim(self, room: Room, member_id: str, name: str) -> None:
        assert room.id is not None
        try:
            await self.store.call(
                cluster.claim, room_id=room.id, member_id=member_id, node_id=self.node_id, name=name
            )
            self._unclaimed.discard((room.code, member_id))
        except Exception as exc:
            logger.warning(
                "could not record %s in room %s (retrying): %s", member_id, room.code, exc
            )
            self._unclaimed.add((room.code, member_id))

    async def left(self, code: str, member_id: str, name: str) -> None:
        pending = self._claims.pop((code, member_id), None)
        if pending is not None:
            with contextlib.suppress(BaseException):
                await pending  # released after it was claimed, never before
        self._unclaimed.discard((code, member_id))
        await self._release(code, member_id)

    async def _release(self, code: str, member_id: str) -> None:
        try:
            room = await self.store.get_room(code)
            if room is None or room.id is None:
                return
            await self.store.call(
                cluster.release, room_id=room.id, member_id=member_id, node_id=self.node_id
            )
            self._unreleased.discard((code, member_id))
        except Exception as exc:
            # Retried with the lease: a claim left behind would keep them present.
            logger.warning("could not record that %s left %s (retrying): %s", member_id, code, exc)
            self._unreleased.add((code, member_id))

    async def leave_now(self, room: Room, member_id: str) -> None:
        assert room.id is not None
        self.presence.leave_now(room.code, member_id)
        pending = self._claims.pop((room.code, member_id), None)
        if pending is not None:
            with contextlib.suppress(BaseException):
                await pending
        self._unclaimed.discard((room.code, member_id))
        # Every process's claim: the member left, whichever processes held them.
        await self.store.call(cluster.release, room_id=room.id, member_id=member_id, node_id=None)

    def _forget(self, code: str, member_id: str) -> None:
        """The member left on purpose on some process: not present here either."""
        self.presence.leave_now(code, member_id)

    # -- who is here --

    async def members(self, room: Room) -> list[tuple[str, str]]:
        return await self.broker.roster(room)

    async def is_name_taken(self, room: Room, name: str, member_id: str | None) -> bool:
        wanted = name_key(name)
        return any(
            other != member_id and name_key(other_name) == wanted
            for other, other_name in await self.broker.roster(room)
        )

    async def frame(self, room: Room) -> Localized:
        return await self.broker.roster_frame(room)

    def count(self) -> int:
        return self.presence.count()

    # -- the lease and the sweeper --

    async def _keep_lease(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(self.settings.node_heartbeat_seconds)
            try:
                renewed = await self.store.call(
                    cluster.renew_node, node_id=self.node_id, lease=self.settings.node_lease_seconds
                )
                if not renewed:
                    # Swept (stopped, or cut off, for longer than the lease): come back,
                    # claim every member this process still holds, refetch every room.
                    logger.warning("this process was swept; registering again")
                    await self._register()
                    self._unclaimed.update(
                        (code, member_id) for code, member_id, _ in self.presence.local_members()
                    )
                    self.broker.catch_up()
                    self._renewed_since = loop.time()
                elif self._renewed_since is None:
                    self._renewed_since = loop.time()
            except Exception as exc:
                logger.warning("could not renew this process's lease: %s", exc)
                self._renewed_since = None
                continue
            await self._retry_claims()

    async def _retry_claims(self) -> None:
        names = {(c, m): n for c, m, n in self.presence.local_members()}
        for key in list(self._unreleased):
            if key in names:
                self._unreleased.discard(key)  # back meanwhile: the claim stands
            else:
                await self._release(*key)
        for code, member_id in list(self._unclaimed):
            name = names.get((code, member_id))
            room = await self.store.get_room(code)
            if name is None or room is None:
                self._unclaimed.discard((code, member_id))
                continue
            await self._claim(room, member_id, name)

    async def _sweep(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(self.settings.sweep_seconds)
            since = self._renewed_since
            # Only a process that has itself kept its lease for a whole lease sweeps:
            # right after a database outage every lease has run out, and the first
            # process back must not sweep the others before they could renew.
            if since is None or loop.time() - since < self.settings.node_lease_seconds:
                continue
            try:
                released = await self.store.sweep()
            except Exception as exc:
                logger.warning("sweep failed: %s", exc)
                continue
            if released:
                logger.info("swept %d presence claims of stopped processes", released)

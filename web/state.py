"""Everything a request needs, built once per app and kept on `app.state.sala`."""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass

from starlette.requests import Request
from starlette.templating import Jinja2Templates

from db.store import Store
from web.broker import Broker, MemoryBroker
from web.limits import Limits
from web.membership import LocalMembership, Membership, SharedMembership
from web.pg_broker import PgBroker
from web.presence import Presence
from web.rendering import make_templates
from web.settings import Settings
from web.timeline import Timeline

logger = logging.getLogger(__name__)


@dataclass
class AppState:
    settings: Settings
    store: Store
    broker: Broker
    templates: Jinja2Templates
    timeline: Timeline
    presence: Presence
    membership: Membership
    limits: Limits
    node_id: str

    @classmethod
    def build(cls, settings: Settings) -> AppState:
        store = Store(settings.database_url)
        templates = make_templates(settings.secret_key)
        node_id = uuid.uuid4().hex  # this process, among those sharing the database
        broker: Broker
        if settings.broker_url.startswith("memory:"):
            broker = MemoryBroker(settings.subscriber_queue_size)
            pg_broker = None
        else:
            broker = pg_broker = PgBroker(
                settings.broker_url,
                store=store,
                env=templates.env,
                queue_size=settings.subscriber_queue_size,
                node_id=node_id,
                ping_seconds=settings.broker_ping_seconds,
                reconnect_max_seconds=settings.broker_reconnect_max_seconds,
                tail_check_seconds=settings.tail_check_seconds,
            )
            store.notify = True
        timeline = Timeline(store=store, broker=broker, env=templates.env)
        if pg_broker is not None:
            pg_broker.timeline = timeline

        async def record_leave(code: str, member_id: str, name: str) -> None:
            await membership.left(code, member_id, name)

        presence = Presence(settings.presence_grace_seconds, on_leave=record_leave)
        membership: Membership
        if pg_broker is None:
            membership = LocalMembership(presence, timeline, store, settings)
        else:
            membership = SharedMembership(presence, store, pg_broker, settings)
        return cls(
            settings=settings,
            store=store,
            broker=broker,
            templates=templates,
            timeline=timeline,
            presence=presence,
            membership=membership,
            limits=Limits(settings),
            node_id=node_id,
        )

    async def start(self) -> None:
        await self.broker.start()
        await self.membership.start()

    async def stop(self) -> None:
        await self.membership.stop()
        await self.broker.stop()


def app_state(request: Request) -> AppState:
    state: AppState = request.app.state.sala
    return state

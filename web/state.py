"""Everything a request needs, built once per app and kept on `app.state.sala`."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from starlette.requests import Request
from starlette.templating import Jinja2Templates

from db.models import EntryKind
from db.store import Store
from web.broker import Broker, make_broker
from web.limits import Limits
from web.presence import Presence
from web.rendering import make_templates
from web.settings import Settings
from web.timeline import Timeline

logger = logging.getLogger(__name__)

# After a restart, members the database calls present keep their place this long.
RESTORE_GRACE_SECONDS = 30.0


@dataclass
class AppState:
    settings: Settings
    store: Store
    broker: Broker
    templates: Jinja2Templates
    timeline: Timeline
    presence: Presence
    limits: Limits

    @classmethod
    def build(cls, settings: Settings) -> AppState:
        store = Store(settings.database_url)
        broker = make_broker(settings.broker_url, queue_size=settings.subscriber_queue_size)
        templates = make_templates(settings.secret_key)
        timeline = Timeline(store=store, broker=broker, env=templates.env)

        async def record_leave(code: str, member_id: str, name: str) -> None:
            room = await store.get_room(code)
            if room is None:
                return
            await timeline.append(room, kind=EntryKind.LEAVE, author_id=member_id, author_name=name)
            timeline.publish_presence(room, presence)

        presence = Presence(settings.presence_grace_seconds, on_leave=record_leave)
        return cls(
            settings=settings,
            store=store,
            broker=broker,
            templates=templates,
            timeline=timeline,
            presence=presence,
            limits=Limits(settings),
        )

    async def restore_presence(self) -> None:
        """Members who were in a room when the server stopped hold their place a while."""
        grace = max(RESTORE_GRACE_SECONDS, self.settings.presence_grace_seconds)
        rows = await self.store.present_members()
        for code, member_id, name in rows:
            self.presence.restore(code, member_id, name, grace)
        if rows:
            logger.info("restored %d present members from the timeline", len(rows))


def app_state(request: Request) -> AppState:
    state: AppState = request.app.state.sala
    return state

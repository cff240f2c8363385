"""The ASGI app: routes, middleware, and a lifespan that opens the database and broker."""

from __future__ import annotations

import contextlib
import gc
import json
import logging
import re
from base64 import b64decode
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio
import itsdangerous
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.sessions import SessionMiddleware
from starlette.requests import HTTPConnection, Request
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Receive, Scope, Send

from web import stream, views
from web.security import SecurityHeadersMiddleware
from web.settings import Settings
from web.state import AppState

logger = logging.getLogger(__name__)

STATIC_DIR = Path(__file__).parent / "static"
SESSION_MAX_AGE = 60 * 60 * 24 * 30


def create_app(settings: Settings | None = None) -> ASGIApp:
    settings = settings or Settings.from_env()
    state = AppState.build(settings)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        # Thousands of long-lived stream objects make the collector's passes costly:
        # move what exists at start-up out of its way, and collect young objects less often.
        gc.freeze()
        gen0, gen1, gen2 = gc.get_threshold()
        gc.set_threshold(max(gen0, 20_000), gen1, gen2)
        await anyio.to_thread.run_sync(state.store.init)
        await state.restore_presence()
        app.state.sala = state
        try:
            yield
        finally:
            state.presence.close()
            state.broker.close_all("shutdown")
            state.store.dispose()

    routes = [
        Route("/", views.home, methods=["GET"], name="home"),
        Route("/", views.enter, methods=["POST"]),
        Route("/healthz", views.healthz, methods=["GET"]),
        Route("/rooms/{code}", views.room_page, methods=["GET"]),
        Route("/rooms/{code}/messages", views.post_message, methods=["POST"]),
        Route("/rooms/{code}/messages", views.history, methods=["GET"]),
        # Served by _StreamsBypassMiddleware below; listed so other methods get 405.
        Route("/rooms/{code}/events", stream.room_events, methods=["GET"]),
        Mount("/static", StaticFiles(directory=STATIC_DIR), name="static"),
    ]
    middleware = [
        Middleware(SecurityHeadersMiddleware),
        Middleware(
            SessionMiddleware,
            secret_key=settings.secret_key,
            session_cookie="session",
            max_age=SESSION_MAX_AGE,
            same_site="lax",
            https_only=False,
        ),
    ]
    app = Starlette(routes=routes, middleware=middleware, lifespan=lifespan)
    app.state.sala = state
    return _StreamsBypassMiddleware(app, settings.secret_key)


_EVENTS_PATH = re.compile(r"^/rooms/(?P<code>[^/]+)/events$")


class _StreamsBypassMiddleware:
    """Room streams skip the middleware stack.

    Every chunk of a stream went through four middleware send wrappers, which cost
    more per delivered event than the rest of the send. Streams only need to read
    the session, so they read the cookie here (the same signed format that
    SessionMiddleware writes) and set the security headers themselves.
    """

    def __init__(self, app: Starlette, secret_key: str) -> None:
        self.app = app
        self.state = app.state
        self._signer = itsdangerous.TimestampSigner(secret_key)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        is_read = scope["type"] == "http" and scope["method"] in ("GET", "HEAD")
        match = _EVENTS_PATH.match(scope["path"]) if is_read else None
        if match is None:
            await self.app(scope, receive, send)
            return
        scope["app"] = self.app
        scope["path_params"] = {"code": match["code"]}
        scope["session"] = self._session(scope)
        # Called directly, without request_response(): its send wrapper would run for
        # every chunk of the stream too.
        response = await stream.room_events(Request(scope, receive, send))
        await response(scope, receive, send)

    def _session(self, scope: Scope) -> dict[str, Any]:
        cookie = HTTPConnection(scope).cookies.get("session")
        if not cookie:
            return {}
        try:
            data = self._signer.unsign(cookie.encode(), max_age=SESSION_MAX_AGE)
            session = json.loads(b64decode(data))
        except (itsdangerous.BadSignature, ValueError):
            return {}
        return session if isinstance(session, dict) else {}


def __getattr__(name: str) -> ASGIApp:
    # `web.app:app` for uvicorn and other ASGI servers, built on first use so that
    # importing this module reads no environment and touches no file.
    if name == "app":
        application = create_app()
        globals()["app"] = application
        return application
    raise AttributeError(name)

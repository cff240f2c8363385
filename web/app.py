"""The ASGI app: routes, middleware, and a lifespan that opens the database and broker."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator
from pathlib import Path

import anyio
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.sessions import SessionMiddleware
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from web import stream, views
from web.settings import Settings
from web.state import AppState

logger = logging.getLogger(__name__)

STATIC_DIR = Path(__file__).parent / "static"
SESSION_MAX_AGE = 60 * 60 * 24 * 30

CONTENT_SECURITY_POLICY = "; ".join(
    [
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' data:",
        "connect-src 'self'",
        "object-src 'none'",
        "base-uri 'none'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    ]
)
SECURITY_HEADERS = [
    (b"content-security-policy", CONTENT_SECURITY_POLICY.encode()),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"same-origin"),
    (b"x-frame-options", b"DENY"),
]


class SecurityHeadersMiddleware:
    """Plain ASGI, so streaming responses pass through untouched."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), *SECURITY_HEADERS]
            await send(message)

        await self.app(scope, receive, send_with_headers)


def create_app(settings: Settings | None = None) -> Starlette:
    settings = settings or Settings.from_env()
    state = AppState.build(settings)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
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
    return app


def __getattr__(name: str) -> Starlette:
    # `web.app:app` for uvicorn and other ASGI servers, built on first use so that
    # importing this module reads no environment and touches no file.
    if name == "app":
        application = create_app()
        globals()["app"] = application
        return application
    raise AttributeError(name)

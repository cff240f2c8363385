"""The ASGI app: routes, middleware, and a lifespan that opens the database and broker."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import traceback
from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import psycopg
from sqlalchemy.exc import DBAPIError, OperationalError
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Receive, Scope, Send

from web import conversation, stream, views
from web.collector import COLLECTOR
from web.gate import Gate, RememberLanguage, Sessions
from web.i18n import _
from web.responses import error_response
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
        # what outlives a young pass is frozen (web/collector.py), and young passes
        # come less often.
        COLLECTOR.install()
        gen0, gen1, gen2 = gc.get_threshold()
        gc.set_threshold(max(gen0, 20_000), gen1, gen2)
        await anyio.to_thread.run_sync(state.store.init)
        await state.start()
        app.state.sala = state
        collecting = asyncio.get_running_loop().create_task(COLLECTOR.run())
        try:
            yield
        finally:
            collecting.cancel()
            await state.stop()
            state.store.dispose()

    routes = [
        Route("/", views.home, methods=["GET"], name="home"),
        Route("/", views.enter, methods=["POST"]),
        Route("/healthz", views.healthz, methods=["GET"]),
        Route("/healthz/detail", views.healthz_detail, methods=["GET"]),
        Route("/rooms/{code}", views.room_page, methods=["GET"]),
        # Served by the gate (gate.py), unless the query sets a language.
        Route("/rooms/{code}/messages", views.post_message, methods=["POST"]),
        Route("/rooms/{code}/messages", views.history, methods=["GET"]),
        Route("/rooms/{code}/leave", views.leave, methods=["POST"]),
        Route("/rooms/{code}/messages/{id}", conversation.message_options, methods=["GET"]),
        Route("/rooms/{code}/messages/{id}/edit", conversation.edit_message, methods=["POST"]),
        Route("/rooms/{code}/messages/{id}/delete", conversation.delete_message, methods=["POST"]),
        Route("/rooms/{code}/messages/{id}/reactions", conversation.react, methods=["POST"]),
        Route("/rooms/{code}/search", conversation.search, methods=["GET"]),
        Route("/rooms/{code}/export.{format:str}", conversation.export, methods=["GET"]),
        # Served by the gate (gate.py) outside the middleware; listed so other
        # methods get 405.
        Route("/rooms/{code}/events", stream.room_events, methods=["GET"]),
        Mount("/static", StaticFiles(directory=STATIC_DIR), name="static"),
    ]
    # An https deployment gets a Secure cookie whose __Host- name keeps it to this host.
    cookie = "__Host-session" if settings.secure_cookie else "session"
    middleware = [
        Middleware(
            Sessions,
            secret_key=settings.secret_key,
            session_cookie=cookie,
            max_age=SESSION_MAX_AGE,
            same_site="lax",
            https_only=settings.secure_cookie,
        ),
        Middleware(RememberLanguage),
    ]
    app = Starlette(
        routes=routes,
        middleware=middleware,
        lifespan=lifespan,
        exception_handlers={OperationalError: _database_unavailable, Exception: _server_error},
    )
    app.state.sala = state
    return Gate(app, settings, session_cookie=cookie, max_age=SESSION_MAX_AGE)


def _unreachable(exc: Exception) -> bool:
    """Whether a database error means "cannot reach it now" (rather than a bug): a lost
    or refused PostgreSQL connection, or SQLite busy past its timeout."""
    if not isinstance(exc, DBAPIError):
        return False
    if exc.connection_invalidated:
        return True
    original = exc.orig
    if isinstance(original, psycopg.OperationalError):
        return True
    return "database is locked" in str(original)


async def _database_unavailable(request: Request, exc: Exception) -> Response:
    """The database cannot be reached (restarting, failing over): 503, in words."""
    if not _unreachable(exc):
        # A bug (a missing table, say), not an outage: a 500, and the traceback logged.
        logger.error("%s %s failed", request.method, request.url.path, exc_info=exc)
        return await _server_error(request, exc)
    logger.warning("database unavailable for %s %s: %s", request.method, request.url.path, exc)
    message = _(
        "Sala cannot reach its database just now. Please try again in a moment "
        "(a message sent again is stored once)."
    )
    try:
        return error_response(request, 503, message, wait=2)
    except Exception:
        return PlainTextResponse(message, status_code=503, headers={"Retry-After": "2"})


async def _server_error(request: Request, exc: Exception) -> Response:
    """A 500 in words (the traceback goes to the log, not to the reader)."""
    try:
        message = _("Something went wrong on our side. Please try again in a moment.")
        return error_response(request, 500, message)
    except Exception:
        return PlainTextResponse(_("Something went wrong on our side."), status_code=500)


class _BuiltOnFirstCall:
    """`web.app:app` for uvicorn, Hypercorn, Granian and any ASGI server. A real object,
    not a module `__getattr__`, because some loaders read the module's namespace directly
    (Hypercorn evaluates the name in `vars(module)`); it builds the app on its first call
    (the lifespan's, normally), so that importing this module reads no environment and
    touches no file."""

    def __init__(self) -> None:
        self._app: ASGIApp | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self._app is None:
            try:
                self._app = create_app()
            except Exception as exc:
                if scope["type"] != "lifespan":
                    raise
                # Refuse to start, in words: a server whose lifespan call just raised may
                # take the app for one without a lifespan and serve 500s instead.
                await receive()
                said = f"sala: {exc}" if isinstance(exc, ValueError) else traceback.format_exc()
                await send({"type": "lifespan.startup.failed", "message": said})
                return
        await self._app(scope, receive, send)


app = _BuiltOnFirstCall()

"""The outermost layer: every request passes here before Starlette sees it.

- With `SALA_PUBLIC_URL`, a request for another `Host` gets 400.
- An unsafe method sent from another site gets 403 (see security.py).
- Security headers go on every response, 500s included (Starlette's error
  middleware sits inside this layer), and HTML is never cached.
- Room streams skip the middleware stack. Every chunk of a stream went through
  four middleware send wrappers, which cost more per delivered event than the
  rest of the send. Streams only need the session, so it is read here (the same
  signed format that SessionMiddleware writes), and they set their own headers.
- Posted messages skip it too (the stack was a quarter of a post's time); they
  read the session but never change it.
"""

from __future__ import annotations

import hmac
import json
import re
import time
from base64 import b64decode
from http.cookies import _unquote
from typing import Any, Literal
from urllib.parse import parse_qs

import itsdangerous
from itsdangerous.encoding import base64_decode, bytes_to_int
from itsdangerous.exc import BadData
from itsdangerous.signer import HMACAlgorithm
from starlette.applications import Starlette
from starlette.datastructures import Headers
from starlette.middleware.sessions import SessionMiddleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from web import i18n, stream, views
from web.i18n import _
from web.responses import error_response
from web.security import (
    CROSS_SITE_WORDS,
    RAW_SECURITY_HEADERS,
    SAFE_METHODS,
    header,
    is_cross_site,
    own_origin,
)
from web.settings import Settings

_EVENTS_PATH = re.compile(r"^/rooms/(?P<code>[^/]+)/events$")
_MESSAGES_PATH = re.compile(r"^/rooms/(?P<code>[^/]+)/messages$")
_UNGUARDED_HOST_PATHS = ("/healthz",)  # load balancers probe by address
_NO_STORE = (b"cache-control", b"no-store")


class Gate:
    def __init__(
        self, app: Starlette, settings: Settings, *, session_cookie: str, max_age: int
    ) -> None:
        self.app = app
        self.state = app.state
        self._public_origin = settings.public_origin
        self._public_host = self._public_origin.split("://", 1)[1] if self._public_origin else None
        self._cookie = session_cookie
        self._max_age = max_age
        self._signer = _Signer(settings.secret_key)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        session = self._read_session(scope)
        language = i18n.choose(_lang_param(scope), session, header(scope, b"accept-language"))
        i18n.activate(language)  # this request's task; not reset, so 500 pages have it too
        problem = self._refusal(scope)
        if problem is not None:
            await self._refuse(scope, receive, send, *problem)
            return
        if (
            scope["method"] == "POST"
            and session is not None
            and b"lang=" not in scope["query_string"]
        ):
            match = _MESSAGES_PATH.match(scope["path"])
            if match is not None:
                await self._post(scope, receive, send, match["code"], session)
                return
        if scope["method"] in ("GET", "HEAD"):
            match = _EVENTS_PATH.match(scope["path"])
            if match is not None:
                # Through the scope, not a local: the stream drops it once it has read the
                # member. Nothing here is kept for the stream's lifetime (memory).
                scope["session"] = session or {}
                response = await self._stream(scope, receive, send, match["code"])
                del session, match, problem
                await response(scope, receive, send)
                return
        if session is None:
            # Signed by our key yet not a session (an older format, a leaked key):
            # SessionMiddleware would fail on it, so it is no session at all.
            scope["headers"] = [(k, v) for k, v in scope["headers"] if k != b"cookie"]
        await self.app(scope, receive, _guarded(send))

    def _refusal(self, scope: Scope) -> tuple[int, str] | None:
        if self._public_host is not None and scope["path"] not in _UNGUARDED_HOST_PATHS:
            host = (header(scope, b"host") or "").lower()
            if host != self._public_host and _default_port(host, scope) != self._public_host:
                return 400, _(
                    "This server only answers for %(origin)s.", origin=self._public_origin
                )
        if scope["method"] not in SAFE_METHODS:
            headers = Headers(scope=scope)
            origin = own_origin(headers, scope["scheme"], self._public_origin)
            if is_cross_site(headers, origin):
                return 403, _(CROSS_SITE_WORDS)
        return None

    async def _refuse(
        self, scope: Scope, receive: Receive, send: Send, status: int, message: str
    ) -> None:
        scope["app"] = self.app
        scope.setdefault("session", {})
        response = error_response(Request(scope, receive), status, message)
        await response(scope, receive, _guarded(send))

    async def _stream(self, scope: Scope, receive: Receive, send: Send, code: str) -> Response:
        """The stream's response (or an error page), for the caller to run: called
        directly, without request_response(), whose send wrapper would run for every
        chunk of the stream too."""
        scope["app"] = self.app
        scope["path_params"] = {"code": code}
        return await stream.room_events(Request(scope, receive, send))

    async def _post(
        self, scope: Scope, receive: Receive, send: Send, code: str, session: dict[str, Any]
    ) -> None:
        """A posted message, served without the middleware stack and the router (a
        quarter of a post's time went to them). The gate has read the session, and a
        post only reads it (no Set-Cookie); a post with `?lang=` takes the stack, whose
        RememberLanguage stores the choice. Errors get the app's own handlers, as the
        stack would give them: a 503 or 500 page, and the 500's traceback in the log."""
        scope["app"] = self.app
        scope["path_params"] = {"code": code}
        scope["session"] = session
        request = Request(scope, receive, send)
        try:
            response = await views.post_message(request)
        except Exception as exc:
            handler = _handler(self.app, exc)
            if handler is None:
                raise
            response = await handler(request, exc)
            await response(scope, receive, _guarded(send))
            if handler is self.app.exception_handlers.get(Exception):
                raise  # as Starlette's error middleware does with it: the server logs it
            return
        await response(scope, receive, _guarded(send))

    def _read_session(self, scope: Scope) -> dict[str, Any] | None:
        """The session in the cookie; {} without one; None when it is signed but unreadable."""
        cookie = _cookie(scope, self._cookie)
        if not cookie:
            return {}
        data = self._signer.check(cookie.encode(), self._max_age)
        if data is None:
            return {}
        try:
            session = json.loads(b64decode(data))
        except ValueError:  # not base64, not UTF-8 or not JSON
            return None
        return session if isinstance(session, dict) else None


class _Sha1(HMACAlgorithm):
    """HMAC-SHA1, as itsdangerous signs Starlette's session by default, through the
    C one-shot `hmac.digest` rather than a pure-Python `hmac.HMAC` per check."""

    def get_signature(self, key: bytes, value: bytes) -> bytes:
        return hmac.digest(key, value, "sha1")


class _Signer(itsdangerous.TimestampSigner):
    """Checks what SessionMiddleware's signer signs (same key derivation and
    algorithm), with the key derived once instead of on every check."""

    def __init__(self, secret_key: str) -> None:
        super().__init__(secret_key, algorithm=_Sha1())
        self._derived: dict[str | bytes | None, bytes] = {}

    def derive_key(self, secret_key: str | bytes | None = None) -> bytes:
        derived = self._derived.get(secret_key)
        if derived is None:
            derived = self._derived[secret_key] = super().derive_key(secret_key)
        return derived

    def check(self, signed: bytes, max_age: int) -> bytes | None:
        """What `unsign(signed, max_age=max_age)` returns, or None where it raises
        BadSignature (a wrong signature, a malformed or missing timestamp, an age over
        `max_age` or below 0), in a third of its time: asked on every request, it was
        the dearest part of opening a stream. tests/test_connect_path.py holds the two
        to the same answers."""
        value, dot, signature = signed.rpartition(b".")
        if not dot:
            return None
        try:
            given = base64_decode(signature)
        except BadData:
            return None
        if not hmac.compare_digest(given, hmac.digest(self.derive_key(), value, "sha1")):
            return None
        payload, dot, stamp = value.rpartition(b".")
        if not dot:
            return None
        try:
            age = int(time.time()) - bytes_to_int(base64_decode(stamp))
        except Exception:  # what itsdangerous catches here too
            return None
        return payload if 0 <= age <= max_age else None


class Sessions(SessionMiddleware):
    """Starlette's session middleware, signing and checking with the gate's signer
    (the same signatures, made faster)."""

    def __init__(
        self,
        app: ASGIApp,
        secret_key: str,
        session_cookie: str,
        max_age: int,
        same_site: Literal["lax", "strict", "none"],
        https_only: bool,
    ) -> None:
        super().__init__(
            app,
            secret_key=secret_key,
            session_cookie=session_cookie,
            max_age=max_age,
            same_site=same_site,
            https_only=https_only,
        )
        self.signer = _Signer(secret_key)


def _cookie(scope: Scope, name: str) -> str | None:
    """The cookie `name` as Starlette's `Request.cookies` reads it (the first Cookie
    header, the last value given for the name, unquoted), without parsing the others."""
    cookies = header(scope, b"cookie")
    if cookies is None:
        return None
    found = None
    for chunk in cookies.split(";"):
        cookie, sep, content = chunk.partition("=")
        if sep and cookie.strip() == name:
            found = content
    return None if found is None else _unquote(found.strip())


class RememberLanguage:
    """`?lang=` on any page sticks: stored in the session (inside SessionMiddleware)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            chosen = i18n.parse(_lang_param(scope))
            session = scope.get("session")
            if chosen is not None and isinstance(session, dict) and session.get("lang") != chosen:
                session["lang"] = chosen
        await self.app(scope, receive, send)


def _lang_param(scope: Scope) -> str | None:
    query: bytes = scope.get("query_string", b"")
    if b"lang=" not in query:
        return None
    values = parse_qs(query.decode("latin-1")).get("lang")
    return values[-1] if values else None


def _default_port(host: str, scope: Scope) -> str:
    """`host:443` for https (and `:80` for http) names the same origin as `host`."""
    default = ":443" if scope["scheme"] == "https" else ":80"
    return host.removesuffix(default)


def _guarded(send: Send) -> Send:
    async def send_with_headers(message: Message) -> None:
        if message["type"] == "http.response.start":
            headers = list(message.get("headers", []))
            names = {name.lower() for name, _ in headers}
            content_type = dict(headers).get(b"content-type", b"")
            if content_type.startswith(b"text/html") and b"cache-control" not in names:
                headers.append(_NO_STORE)
            message["headers"] = [*headers, *RAW_SECURITY_HEADERS]
        await send(message)

    return send_with_headers


def _handler(app: Starlette, exc: Exception) -> Any:
    """The app's handler for `exc` (by its class, nearest first), as Starlette picks it."""
    for cls in type(exc).__mro__:
        if cls in app.exception_handlers:
            return app.exception_handlers[cls]
    return None

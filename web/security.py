"""What every response carries, and the checks every unsafe request passes.

A strict CSP (no inline script or style) and friends go on every response,
errors included. Unsafe methods must come from Sala's own pages: browsers say
where a request comes from (`Sec-Fetch-Site`, else `Origin`), and anything from
another site (cross-site request forgery, login CSRF) is refused.
"""

from __future__ import annotations

from starlette.datastructures import Headers
from starlette.types import Scope

from web.i18n import N_

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
SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "X-Frame-Options": "DENY",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Resource-Policy": "same-origin",
    "Permissions-Policy": "camera=(), microphone=(), geolocation=()",
}
RAW_SECURITY_HEADERS = [(k.lower().encode(), v.encode()) for k, v in SECURITY_HEADERS.items()]
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
CROSS_SITE_WORDS = N_(
    "This form was sent from another site, so Sala did not accept it. "
    "Open Sala itself and send it from there."
)


def header(scope: Scope, name: bytes) -> str | None:
    """The first header `name` (lower case), as Starlette's `Headers.get` gives it,
    without building a `Headers` (asked on every stream opened)."""
    for key, value in scope["headers"]:
        if key == name:
            found: str = value.decode("latin-1")
            return found
    return None


def own_origin(headers: Headers, scheme: str, public_origin: str | None) -> str:
    """The app's origin: the public URL when set, else the one the request was sent to."""
    if public_origin:
        return public_origin
    return f"{scheme}://{headers.get('host', '')}".lower()


def is_cross_site(headers: Headers, origin: str) -> bool:
    """True when a browser says this request was started by another site.

    Requests without either header (curl, scripts, old browsers) are not cross-site
    requests a browser can be tricked into; they pass.
    """
    site = headers.get("sec-fetch-site")
    if site is not None:
        return site not in ("same-origin", "none")
    sender = headers.get("origin")
    if sender is not None:
        return sender.lower() != origin
    return False

"""Responses every part of the app gives: pages, fragments and errors in words."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from web.limits import retry_after
from web.state import app_state


def is_htmx(request: Request) -> bool:
    return request.headers.get("hx-request") == "true"


def render(
    request: Request, template: str, context: dict[str, Any], status_code: int = 200
) -> Response:
    templates = app_state(request).templates
    return templates.TemplateResponse(request, template, context, status_code=status_code)


def error_response(
    request: Request,
    status_code: int,
    message: str,
    *,
    code: str | None = None,
    wait: float | None = None,
) -> Response:
    """A page (or, for htmx, a fragment) that says what went wrong; 429s say when to retry."""
    template = "_error.html" if is_htmx(request) else "error.html"
    context = {"message": message, "status": status_code, "code": code}
    response = render(request, template, context, status_code)
    if wait is not None:
        response.headers["Retry-After"] = retry_after(wait)
    return response

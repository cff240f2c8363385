"""Reading a form body, strictly: bounded in size and time, UTF-8, no files.

Starlette's own form parsing decodes with whatever charset the client names
(`charset=unicode_escape` lets lone surrogates through) and reads any size of
body; every form in Sala comes through here instead.
"""

from __future__ import annotations

import asyncio
from urllib.parse import parse_qsl

from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.requests import ClientDisconnect, Request

from web.i18n import _

BODY_MAX_BYTES = 32 * 1024  # the longest message, every character 4 bytes, percent-encoded
FIELDS_MAX = 20


class FormProblem(Exception):
    def __init__(self, status_code: int, message: str) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.message = message


async def read_form(request: Request, *, within: float) -> dict[str, str]:
    """The form's fields (the first value of each name), or FormProblem in words."""
    raw_type = request.headers.get("content-type", "")
    if not raw_type and request.headers.get("content-length", "0") == "0":
        # A button alone (delete, say) from a client that sends no body at all.
        return {}
    content_type, params = parse_options_header(raw_type)
    kind = content_type.decode("latin-1").lower()
    if kind not in ("application/x-www-form-urlencoded", "multipart/form-data"):
        raise FormProblem(
            415, _("Send the form as application/x-www-form-urlencoded (a normal HTML form).")
        )
    charset = params.get(b"charset", b"utf-8").decode("latin-1").lower()
    if charset not in ("utf-8", "utf8"):
        raise FormProblem(415, _("Forms must be sent in UTF-8."))
    body = await _read_body(request, within)
    if kind == "multipart/form-data":
        fields = _parse_multipart(body, params)
    else:
        fields = _parse_urlencoded(body)
    form: dict[str, str] = {}
    for name, value in fields:
        form.setdefault(name, value)
    return form


async def _read_body(request: Request, within: float) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and (not declared.isdigit() or int(declared) > BODY_MAX_BYTES):
        raise FormProblem(413, _too_large())
    chunks: list[bytes] = []
    size = 0
    try:
        async with asyncio.timeout(within):  # (anyio.fail_after: 9 µs, this 3.5)
            async for chunk in request.stream():
                size += len(chunk)
                if size > BODY_MAX_BYTES:
                    raise FormProblem(413, _too_large())
                chunks.append(chunk)
    except TimeoutError:
        raise FormProblem(
            408, _("The form took too long to arrive. Please send it again.")
        ) from None
    except ClientDisconnect:
        raise FormProblem(400, _("The form did not arrive whole. Please send it again.")) from None
    return b"".join(chunks)


def _too_large() -> str:
    return _("The form is too large (at most %(size)s KB).", size=BODY_MAX_BYTES // 1024)


def _not_utf8() -> FormProblem:
    return FormProblem(400, _("The form is not valid UTF-8 text."))


def _parse_urlencoded(body: bytes) -> list[tuple[str, str]]:
    try:
        text = body.decode("utf-8")
        return parse_qsl(
            text,
            keep_blank_values=True,
            encoding="utf-8",
            errors="strict",
            max_num_fields=FIELDS_MAX,
        )
    except UnicodeDecodeError:
        raise _not_utf8() from None
    except ValueError:
        raise FormProblem(400, _("The form has too many fields.")) from None


def _parse_multipart(body: bytes, params: dict[bytes, bytes]) -> list[tuple[str, str]]:
    boundary = params.get(b"boundary")
    if not boundary:
        raise FormProblem(400, _("The form has no multipart boundary."))
    fields: list[tuple[bytes, bytearray]] = []
    header_name = bytearray()
    header_value = bytearray()
    disposition = bytearray()

    def on_header_field(data: bytes, start: int, end: int) -> None:
        header_name.extend(data[start:end])

    def on_header_value(data: bytes, start: int, end: int) -> None:
        header_value.extend(data[start:end])

    def on_header_end() -> None:
        if bytes(header_name).lower() == b"content-disposition":
            disposition[:] = header_value
        del header_name[:], header_value[:]

    def on_headers_finished() -> None:
        _value, options = parse_options_header(bytes(disposition))
        del disposition[:]
        if b"filename" in options:
            raise FormProblem(415, _("Files cannot be sent here."))
        if b"name" not in options:
            raise FormProblem(400, _("A part of the form has no field name."))
        if len(fields) >= FIELDS_MAX:
            raise FormProblem(400, _("The form has too many fields."))
        fields.append((options[b"name"], bytearray()))

    def on_part_data(data: bytes, start: int, end: int) -> None:
        fields[-1][1].extend(data[start:end])

    parser = MultipartParser(
        boundary,
        {
            "on_header_field": on_header_field,
            "on_header_value": on_header_value,
            "on_header_end": on_header_end,
            "on_headers_finished": on_headers_finished,
            "on_part_data": on_part_data,
        },
    )
    try:
        parser.write(body)
        parser.finalize()
    except FormProblem:
        raise
    except Exception:  # python-multipart's own parse errors
        raise FormProblem(400, _("The form could not be read.")) from None
    try:
        return [(name.decode("utf-8"), bytes(value).decode("utf-8")) for name, value in fields]
    except UnicodeDecodeError:
        raise _not_utf8() from None

"""Languages: which one a request reads in, and the words in it.

Interface text is English in the code and goes through gettext catalogs
(`web/locale/`, made with Babel: `make translations`). The language of a request
is `?lang=` when it names one we have (remembered in the session), else the
session's, else the best match in `Accept-Language`, else English. It is set for
the request (a context variable) by the gate, so templates and error messages
need no argument for it; the timeline sets it around each rendering of an event
in one language, since one room has readers in several at once.
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

from babel import Locale
from babel.numbers import format_decimal
from babel.support import NullTranslations, Translations

logger = logging.getLogger(__name__)

LOCALE_DIR = Path(__file__).parent / "locale"
ENGLISH = "en"  # the words in the code; no catalog


def _found() -> dict[str, str]:
    """Language tag (as `?lang=` and `<html lang>` spell it) → its catalog's folder:
    every compiled catalog in web/locale is a language, so adding one is a file."""
    found = {ENGLISH: "en"}
    for mo in sorted(LOCALE_DIR.glob("*/LC_MESSAGES/messages.mo")):
        folder = mo.parent.parent.name
        found[folder.replace("_", "-")] = folder
    return found


_FOLDERS = _found()
LANGUAGES = tuple(_FOLDERS)
_LOCALES = {language: Locale.parse(folder) for language, folder in _FOLDERS.items()}
# Each named in itself, for the switch: "English", "Português".
NAMES = {
    language: (locale.language_name or language)[:1].upper() + (locale.language_name or "")[1:]
    for language, locale in _LOCALES.items()
}
# Accept-Language: `pt`, `pt-BR` and `pt-PT` all read the one Portuguese we have.
_PRIMARY = {language.split("-")[0].lower(): language for language in reversed(LANGUAGES)}
_EXACT = {language.lower(): language for language in LANGUAGES}

_current: contextvars.ContextVar[str] = contextvars.ContextVar("sala_language", default=ENGLISH)


def _load() -> dict[str, NullTranslations]:
    catalogs: dict[str, NullTranslations] = {ENGLISH: NullTranslations()}
    for language, folder in _FOLDERS.items():
        if language != ENGLISH:
            catalogs[language] = Translations.load(LOCALE_DIR, [folder], "messages")
    return catalogs


_CATALOGS = _load()


def current() -> str:
    return _current.get()


def activate(language: str) -> None:
    """This request (this task) reads in `language` from here on."""
    _current.set(language if language in _CATALOGS else ENGLISH)


@contextlib.contextmanager
def use(name: str) -> Iterator[None]:
    """Render in `name` for a while (an event for the readers of one language)."""
    token = _current.set(name if name in _CATALOGS else ENGLISH)
    try:
        yield
    finally:
        _current.reset(token)


def raw_gettext(message: str) -> str:
    """For Jinja's i18n extension, which fills in variables (escaped) itself."""
    return _CATALOGS[_current.get()].gettext(message)


def raw_ngettext(singular: str, plural: str, n: int) -> str:
    return _CATALOGS[_current.get()].ngettext(singular, plural, n)


def raw_pgettext(context: str, message: str) -> str:
    return str(_CATALOGS[_current.get()].pgettext(context, message))


def gettext(message: str, **variables: Any) -> str:
    """`message` in the current language; `%(name)s` filled from `variables`."""
    text = _CATALOGS[_current.get()].gettext(message)
    return text % variables if variables else text


def ngettext(singular: str, plural: str, n: int, **variables: Any) -> str:
    text = _CATALOGS[_current.get()].ngettext(singular, plural, n)
    return text % {"num": number(n), **variables}


_ = gettext


def N_(message: str) -> str:
    """Marks a message for the catalog where it is defined; translated where used."""
    return message


def number(value: int) -> str:
    """A count as the language writes it (1,234 / 1.234)."""
    if -1000 < value < 1000:
        return str(value)
    return format_decimal(value, locale=_LOCALES[_current.get()])


def parse(value: str | None) -> str | None:
    """A language we have, from `?lang=` or the session; None for anything else."""
    if not value:
        return None
    for language in LANGUAGES:
        if value.strip().lower() == language.lower():
            return language
    return None


def negotiate(accept_language: str | None) -> str:
    """The best language we have for an `Accept-Language` header (English if none)."""
    if not accept_language:
        return ENGLISH
    best, best_q = ENGLISH, 0.0
    for item in accept_language[:500].split(",")[:20]:
        tag, _sep, params = item.strip().partition(";")
        q = 1.0
        params = params.strip()
        if params.startswith("q="):
            try:
                q = float(params[2:])
            except ValueError:
                continue
        tag = tag.strip().lower()
        language = _EXACT.get(tag) or _PRIMARY.get(tag.split("-")[0])
        if language is None or not 0 < q <= 1:
            continue
        if q > best_q:  # on a tie, the one listed first
            best, best_q = language, q
    return best


def choose(query: str | None, session: Mapping[str, Any] | None, accept: str | None) -> str:
    """The language of a request: `?lang=`, else the session's, else Accept-Language."""
    chosen = parse(query)
    if chosen is None and session:
        stored = session.get("lang")
        chosen = parse(stored) if isinstance(stored, str) else None
    return chosen or negotiate(accept)


class Localized:
    """Something rendered once per language that has readers, on first asking.

    One event in one room goes to readers of several languages at the same moment:
    each stream asks for its language, and the first to ask renders it.
    """

    __slots__ = ("_chunks", "_frames", "_render")

    def __init__(self, render: Callable[[], bytes]) -> None:
        self._render = render
        self._frames: dict[str, bytes] = {}
        self._chunks: dict[str, bytes] | None = None

    def chunk(self, language: str) -> bytes:
        """The frame as one HTTP/1.1 chunk (size line, frame, CRLF), made once per
        language for every stream that is written to directly (web/direct.py)."""
        chunks = self._chunks
        if chunks is None:
            chunks = self._chunks = {}
        chunk = chunks.get(language)
        if chunk is None:
            frame = self.get(language)
            chunk = chunks[language] = b"%x\r\n%b\r\n" % (len(frame), frame) if frame else b""
        return chunk

    def get(self, language: str) -> bytes:
        frame = self._frames.get(language)
        if frame is None:
            with use(language):
                try:
                    frame = self._render()
                except Exception:
                    # Stored all the same: readers get it when they next resume.
                    logger.exception("could not render an event in %s", language)
                    frame = b""
            self._frames[language] = frame
        return frame

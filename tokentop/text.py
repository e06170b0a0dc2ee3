"""Strings from outside made safe once, where they enter tokentop.

Server pages and labels, NVML names, process command lines, config names and server error texts
are written by other programs; tokentop draws them on an operator's terminal and into files.
``safe_text`` is applied where such a string enters (the collectors, the NVML reader, the
process reader, the config), so everything downstream holds only printable text of bounded
length. ``markdown_cell`` and ``csv_cell`` add what those two formats need on top.
"""

from __future__ import annotations

import re

MAX_TEXT = 200
ELLIPSIS = "…"
REPLACEMENT = "\N{REPLACEMENT CHARACTER}"

# Line breaks and tabs fold to one space; every other character that is not printable (C0 and C1
# controls with ESC, CSI and OSC among them, DEL, bidi overrides, zero-width format characters)
# becomes U+FFFD, so that something visibly remains.
_FOLD = re.compile(r"[\t\n\r\v\f\x1c-\x1e\x85\u2028\u2029]+")
_CSV_FORMULA = ("=", "+", "-", "@", "\t", "\r")


def safe_text(value: object, limit: int = MAX_TEXT) -> str:
    """Printable, single-line text of at most ``limit`` characters (an ellipsis when cut)."""
    text = value if isinstance(value, str) else str(value)
    if text.isprintable() and len(text) <= limit:
        return text  # the common case, checked in C
    text = "".join(c if c.isprintable() else REPLACEMENT for c in _FOLD.sub(" ", text[: limit * 4]))
    if len(text) > limit:
        text = text[: limit - 1] + ELLIPSIS
    return text


def safe_optional(value: object | None, limit: int = MAX_TEXT) -> str | None:
    return None if value is None else safe_text(value, limit)


def markdown_cell(text: str) -> str:
    """A Markdown table cell: ``|`` and backslashes escaped (text already made safe)."""
    return text.replace("\\", "\\\\").replace("|", "\\|")


def csv_cell(text: str) -> str:
    """A CSV cell a spreadsheet will not run: a leading ``= + - @``, tab or CR is quoted away
    with an apostrophe (the OWASP rule). Numbers are written by the caller, not through here."""
    return "'" + text if text.startswith(_CSV_FORMULA) else text

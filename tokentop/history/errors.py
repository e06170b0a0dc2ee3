"""``StoreError`` and the translation of SQLite's failures into one line a user can act on."""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Callable, Iterator
from pathlib import Path

# SQLite primary result codes (https://sqlite.org/rescode.html) and what they mean to a user.
BUSY, LOCKED, READONLY, IOERR, CORRUPT, FULL, CANTOPEN, NOTADB = 5, 6, 8, 10, 11, 13, 14, 26
TRANSIENT = frozenset({BUSY, LOCKED, FULL})  # a tick waits in memory and is written later
_PLAIN = {
    BUSY: "is locked by another process",
    LOCKED: "is locked by another connection",
    READONLY: "is read-only",
    IOERR: "could not be read or written (disk I/O error)",
    CORRUPT: "is damaged (database disk image is malformed)",
    FULL: "cannot grow: the disk is full",
    CANTOPEN: "cannot be opened",
    NOTADB: "is not a SQLite database",
}
_TEXT_TO_CODE = (  # Python 3.10 has no sqlite_errorcode; match SQLite's own messages instead
    ("database is locked", BUSY),
    ("database table is locked", LOCKED),
    ("readonly database", READONLY),
    ("disk i/o error", IOERR),
    ("malformed", CORRUPT),
    ("database or disk is full", FULL),
    ("unable to open", CANTOPEN),
    ("not a database", NOTADB),
)


class StoreError(Exception):
    """The history cannot be used; the message is one line that says which file and why."""


def error_code(exc: BaseException) -> int | None:
    """SQLite's primary result code of ``exc``, when it can be told."""
    code = getattr(exc, "sqlite_errorcode", None)
    if isinstance(code, int):
        return code & 0xFF
    text = str(exc).lower()
    return next((found for needle, found in _TEXT_TO_CODE if needle in text), None)


def describe(path: Path, exc: BaseException) -> str:
    """One line naming the file and what went wrong, in plain words where SQLite's code is known."""
    plain = _PLAIN.get(error_code(exc) or -1)
    if plain is None:
        return f"history {path}: {exc}"
    return f"history {path} {plain}"


@contextlib.contextmanager
def as_store_error(path: Path, hint: Callable[[sqlite3.Error], str] | None = None) -> Iterator[None]:
    """Raise any ``sqlite3.Error`` of the block as ``StoreError`` (plus ``hint(exc)``, if given)."""
    try:
        yield
    except sqlite3.Error as exc:
        raise StoreError(describe(path, exc) + (hint(exc) if hint else "")) from None

"""Noticing that the history file was deleted or replaced while a session writes to it.

SQLite keeps writing into the file it opened, even once no name leads to it any more: every
tick "succeeds" and is lost, and the next ``tokentop summary`` finds no history or another one.
So the writer compares the file behind the path with the one it opened (device and inode) every
``CHECK_EVERY_S`` (monotonic seconds) and at close.
"""

from __future__ import annotations

import os
from pathlib import Path

CHECK_EVERY_S = 5.0


def _identity(path: Path) -> tuple[int, int] | None:
    try:
        info = os.stat(path)
    except OSError:
        return None
    return info.st_dev, info.st_ino


class FileWatch:
    """The history file as the session opened it."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._opened = _identity(path)

    def problem(self) -> str | None:
        """None while the path still leads to the file opened; else what happened, in words."""
        now = _identity(self.path)
        if now == self._opened:
            return None
        what = "deleted" if now is None else "replaced by another file"
        return f"history {self.path} was {what} while recording"

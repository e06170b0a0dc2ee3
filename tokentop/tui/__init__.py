"""The live view (Textual). Only this package imports Textual.

``tokentop.cli.live`` runs ``TokentopApp`` inside ``logs_on_screen`` and prints ``short_summary``
when there is no history to summarise.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from tokentop.tui.app import LogLine, TokentopApp
from tokentop.tui.session import short_summary

__all__ = ["TokentopApp", "logs_on_screen", "short_summary"]


class _ScreenLogHandler(logging.Handler):
    """Log records go to the app (a notification and the message line), never onto the
    screen's bytes. Records that arrive while no app can take them are kept for afterwards."""

    def __init__(self, app: Any) -> None:
        super().__init__(logging.INFO)
        self.app = app
        self.left_over: list[logging.LogRecord] = []
        self.setFormatter(logging.Formatter("%(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = self.format(record)
            if not self.app.is_running or not self.app.post_message(LogLine(record.levelno, text, record.created)):
                self.left_over.append(record)
        except Exception:  # a log call must never break the caller
            self.handleError(record)


@contextmanager
def logs_on_screen(app: Any) -> Iterator[_ScreenLogHandler]:
    """Swap the root logger's handlers (stderr) for one that posts to ``app``; put them back
    afterwards and pass on, at WARNING and above, what the screen could not show."""
    root = logging.getLogger()
    saved = root.handlers[:]
    handler = _ScreenLogHandler(app)
    root.handlers = [handler]
    try:
        yield handler
    finally:
        root.handlers = saved
        for record in handler.left_over:
            if record.levelno >= logging.WARNING:
                root.handle(record)

"""The live view (Textual). Only this package imports Textual.

``tokentop.cli.live`` runs ``TokentopApp`` inside ``logs_on_screen`` (``cli.watchdog.run_watched``,
as ``cli.fleet`` the fleet's app) and prints ``short_summary`` when there is no history to
summarise. ``TokentopApp`` (and with it Textual) is imported when
first asked for: the modules that make rows and columns without drawing them (``gpu_table``,
``engine_table``, ``processes``, ``host``, ``header_parts``) load without Textual, for
``tokentop --once``.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from tokentop.tui.session import short_summary

if TYPE_CHECKING:
    from tokentop.tui.app import TokentopApp

__all__ = ["TokentopApp", "logs_on_screen", "short_summary"]


def __getattr__(name: str) -> Any:
    if name == "TokentopApp":
        from tokentop.tui.app import TokentopApp

        return TokentopApp
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


class _ScreenLogHandler(logging.Handler):
    """Log records go to the app (a notification and the message line), never onto the
    screen's bytes. Records that arrive while no app can take them are kept for afterwards."""

    def __init__(self, app: Any) -> None:
        super().__init__(logging.INFO)
        self.app = app
        self.left_over: list[logging.LogRecord] = []
        self.setFormatter(logging.Formatter("%(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        from tokentop.tui.events import LogLine  # loaded with the app already

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

"""The live view (Textual). Only this package imports Textual.

``run_live(runtime, store)`` is what ``tokentop`` (no subcommand) runs.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tokentop.cli import Runtime


class _ScreenLogHandler(logging.Handler):
    """Log records go to the app (a notification and the message line), never onto the
    screen's bytes. Records that arrive while no app can take them are kept for afterwards."""

    def __init__(self, app: Any) -> None:
        super().__init__(logging.INFO)
        self.app = app
        self.left_over: list[logging.LogRecord] = []
        self.setFormatter(logging.Formatter("%(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        from tokentop.tui.app import LogLine

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


def run_live(runtime: Runtime, store: Any | None, *, summary: bool = True) -> int:
    """Run the live view until the user quits, a signal or a lost terminal ends it.

    Stops the sampler (which closes ``store``) whatever happened, then, once the terminal is
    back from the alternate screen (not after a hangup: there is no terminal), prints the
    session summary: the full one from the history, or a short one from the last snapshot
    when there is no history. Returns the exit code: 0 on quit, 129 on hangup or a lost
    terminal, 143 on SIGTERM.
    """
    from tokentop.config import default_db_path
    from tokentop.sampler import Sampler
    from tokentop.tui.app import TokentopApp

    config = runtime.config
    sampler = Sampler(config, runtime.gpus, store=store)
    summary_dir = (config.db_path or default_db_path()).parent if store is not None else None
    app = TokentopApp(config, sampler=sampler, store=store, summary_dir=summary_dir)
    try:
        with logs_on_screen(app):
            app.run()
    finally:
        sampler.stop()  # closes the history: the summary below then covers every tick
        runtime.close()
    if summary and app.ended_by not in ("hangup", "terminal lost"):  # a terminal to print on
        _print_summary(app)
    return app.return_code or 0


def _print_summary(app: Any) -> None:
    """The full summary from the history when there is one, else the short one."""
    from tokentop.report import print_session_summary
    from tokentop.tui.session import short_summary

    store = app.store
    if (
        store is not None
        and store.session_id is not None
        and app.latest is not None
        and print_session_summary(store.path, store.session_id, sys.stdout) == 0
    ):
        return
    try:
        sys.stdout.write(short_summary(app.latest, app.host_name))
        if app.summary_path is not None:
            sys.stdout.write(f"  summary file {app.summary_path}\n")
        sys.stdout.flush()
    except OSError:  # the terminal went away as we left
        pass

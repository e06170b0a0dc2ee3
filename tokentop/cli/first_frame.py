"""The live view's first frame, written to the terminal before Textual is loaded.

Loading Textual takes about 0.2 s, and no Textual app draws before about 0.3 s: so, as soon as
the settings are read, the live command enters the alternate screen and writes the header's
first lines (``starting``), and once the GPUs are read (``derive.first_look``), every GPU row:
plain text, no colour, in the columns and widths the live view gives them (``tui.first_screen``
makes the text from the live view's own header and table parts). Textual's driver then takes
the terminal without clearing it (``hand_over``; ``tui.quiet_driver``), and the app's first
screen with the same reading replaces this one.

Only where the live view runs on Textual's Linux driver, with a terminal on standard input and
standard error (Textual draws on standard error). Any failure skips the frame, logged at -v.
Log records are held while the frame owns the screen (a record printed there would be drawn
over, then lost) and given back with ``stop_holding_logs``.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
from collections.abc import Mapping

from tokentop.config import Config
from tokentop.model import Snapshot
from tokentop.tui.first_screen import frame_lines, screen_text

log = logging.getLogger(__name__)

ENTER = "\x1b[?1049h\x1b[?25l"  # the alternate screen (cleared), the cursor hidden
LEAVE = "\x1b[?1049l\x1b[?25h"  # as Textual leaves it: the screen before, the cursor shown


def wanted(environ: Mapping[str, str]) -> bool:
    """Whether the live view will draw on this terminal with Textual's Linux driver."""
    if sys.platform.startswith("win") or environ.get("TEXTUAL_DRIVER") or environ.get("TERM") == "dumb":
        return False
    try:
        return os.isatty(0) and os.isatty(2)
    except (OSError, ValueError):
        return False


class _HeldLogs(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


class FirstFrame:
    """The alternate screen entered, and what is drawn on it until Textual takes the terminal.
    ``draw`` and ``hand_over`` may come from different threads: a draw never runs past it."""

    def __init__(self, config: Config, host_name: str, encoding: str) -> None:
        self.config, self.host_name, self.encoding = config, host_name, encoding
        self.rows_shown = False
        self._lock = threading.Lock()
        self._owned = True  # the frame still owns the screen
        self._held = _HeldLogs()
        self._saved_handlers: list[logging.Handler] | None = None

    @classmethod
    def open(cls, config: Config, host_name: str, environ: Mapping[str, str] = os.environ) -> FirstFrame | None:
        """Enter the alternate screen and write the header; None where the live view will not
        draw on a terminal with Textual's Linux driver, or where the terminal cannot be written."""
        if not wanted(environ):
            return None
        frame = cls(config, host_name, getattr(sys.__stderr__, "encoding", None) or "utf-8")
        try:
            frame._write(ENTER + frame._text(None))
        except Exception:
            log.debug("no first frame", exc_info=True)
            return None
        root = logging.getLogger()
        frame._saved_handlers, root.handlers = root.handlers[:], [frame._held]
        return frame

    def draw(self, snapshot: Snapshot) -> None:
        """Every GPU row of ``snapshot`` (a first look), unless Textual has the terminal already."""
        with self._lock:
            if not self._owned:
                return
            try:
                self._write(self._text(snapshot))
                self.rows_shown = self.rows_shown or bool(snapshot.gpus)
            except Exception:
                log.debug("the first frame's rows were not drawn", exc_info=True)

    def hand_over(self) -> bool:
        """Textual takes the terminal (its driver, as it starts): nothing is drawn from now on.
        Whether rows are on screen, which Textual's first screen should not blank out."""
        with self._lock:
            self._owned = False
            return self.rows_shown

    def leave(self) -> None:
        """Leave the alternate screen if Textual never took it (a start that failed, Ctrl-C)."""
        with self._lock:
            if not self._owned:
                return
            self._owned = False
            try:
                self._write(LEAVE)
            except Exception:
                log.debug("the alternate screen could not be left", exc_info=True)

    def stop_holding_logs(self) -> list[logging.LogRecord]:
        """Put the log handlers back; the records held meanwhile, once."""
        if self._saved_handlers is not None:
            logging.getLogger().handlers, self._saved_handlers = self._saved_handlers, None
        records, self._held.records = self._held.records, []
        return records

    def _text(self, snapshot: Snapshot | None) -> str:
        width, height = os.get_terminal_size(2)
        return screen_text(frame_lines(self.config, self.host_name, snapshot, width, height), width)

    def _write(self, text: str) -> None:
        data = memoryview(text.encode(self.encoding, "replace"))
        while data:
            data = data[os.write(2, data) :]

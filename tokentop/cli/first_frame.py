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
over, then lost) and given back with ``stop_holding_logs``. Until Textual's handlers are in
place, SIGTERM, SIGHUP and Ctrl-Z are the frame's: the terminal is never left in the alternate
screen (``FirstFrame``).
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import signal
import sys
import threading
from collections.abc import Callable, Mapping
from typing import Any

from tokentop.config import Config
from tokentop.model import Snapshot
from tokentop.tui.endings import ENDING_SIGNALS
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
    ``draw`` and ``hand_over`` may come from different threads: a draw never runs past it.

    Until then the frame's own signal handlers (set by ``open`` on the main thread) keep the
    terminal sane: SIGTERM and SIGHUP raise ``SystemExit`` with the app's exit codes (143, 129),
    so that the command leaves the alternate screen on its way out; Ctrl-Z (SIGTSTP) leaves it,
    stops the process, and enters it again with the frame drawn anew when the process goes on.
    ``hand_over`` and ``leave`` put back the handlers that were there before (those that the app
    or its driver have not replaced meanwhile)."""

    def __init__(self, config: Config, host_name: str, encoding: str) -> None:
        self.config, self.host_name, self.encoding = config, host_name, encoding
        self.rows_shown = False
        self._lock = threading.RLock()  # a signal handler on the main thread may take it again
        self._owned = True  # the frame still owns the screen
        self._entered = False  # the alternate screen is on (not while stopped by Ctrl-Z)
        self._shown: Snapshot | None = None  # the reading drawn last, drawn again after Ctrl-Z
        self._held = _HeldLogs()
        self._saved_handlers: list[logging.Handler] | None = None
        self._signals: dict[int, tuple[Any, Any]] = {}  # by signal: the handler replaced, and ours
        self._bytes_written = 0  # how much went to the terminal: some, and the alternate screen may be on
        self._ending = False  # SIGTERM or SIGHUP came: the command is on its way out

    @classmethod
    def open(cls, config: Config, host_name: str, environ: Mapping[str, str] = os.environ) -> FirstFrame | None:
        """Enter the alternate screen and write the header; None where the live view will not
        draw on a terminal with Textual's Linux driver, or where the terminal cannot be written
        (the alternate screen left again where part of what enters it was written)."""
        if not wanted(environ):
            return None
        frame = cls(config, host_name, getattr(sys.__stderr__, "encoding", None) or "utf-8")
        try:
            text = ENTER + frame._text(None)
        except Exception:
            log.debug("no first frame", exc_info=True)
            return None
        frame._catch_signals()  # before the screen is entered: no moment without a way out
        try:
            frame._entered = True
            frame._write(text)
            root = logging.getLogger()
            frame._saved_handlers, root.handlers = root.handlers[:], [frame._held]
            return frame
        except BaseException as exc:  # the terminal cannot be written, or SIGTERM came meanwhile
            frame._entered = frame._bytes_written > 0  # part of it went: the alternate screen may be on
            frame.leave()
            for record in frame.stop_holding_logs():
                logging.getLogger().handle(record)
            if not isinstance(exc, Exception):
                raise
            log.debug("no first frame", exc_info=True)
            return None

    def draw(self, snapshot: Snapshot) -> None:
        """Every GPU row of ``snapshot`` (a first look), unless Textual has the terminal already."""
        with self._lock:
            if not self._owned:
                return
            self._shown = snapshot
            if self._entered:  # else drawn when the process goes on after Ctrl-Z
                self._redraw()

    def hand_over(self) -> bool:
        """Textual takes the terminal (its driver, as it starts): nothing is drawn from now on.
        Whether rows are on screen, which Textual's first screen should not blank out."""
        with self._lock:
            self._owned = False
            shown = self.rows_shown
        self._put_signals_back()
        return shown

    def leave(self) -> None:
        """Leave the alternate screen if Textual never took it (a start that failed, Ctrl-C)."""
        with self._lock:
            entered = self._owned and self._entered
            self._owned = self._entered = False
            if entered:
                try:
                    self._write(LEAVE)
                except Exception:
                    log.debug("the alternate screen could not be left", exc_info=True)
        self._put_signals_back()

    def stop_holding_logs(self) -> list[logging.LogRecord]:
        """Put the log handlers back; the records held meanwhile, once."""
        if self._saved_handlers is not None:
            logging.getLogger().handlers, self._saved_handlers = self._saved_handlers, None
        records, self._held.records = self._held.records, []
        return records

    # -- signals until Textual takes the terminal --

    def _catch_signals(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return  # only the main thread sets handlers: the frame goes without
        ours: dict[int, Callable[[int, Any], None]] = {signal.SIGTSTP: self._stop}
        ours.update((sig, functools.partial(self._end, code)) for sig, _, code in ENDING_SIGNALS)
        for sig, handler in ours.items():
            self._signals[sig] = (signal.signal(sig, handler), handler)

    def _put_signals_back(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return  # ``leave``, on the main thread, will
        signals, self._signals = self._signals, {}
        for sig, (previous, ours) in signals.items():
            if signal.getsignal(sig) is ours:  # not one the app or its driver put in place since
                signal.signal(sig, signal.SIG_DFL if previous is None else previous)

    def _end(self, code: int, signum: int, frame: object) -> None:
        """SIGTERM or SIGHUP: out through the command's ``finally``, which leaves the screen."""
        if not self._ending:  # a second one must not cut that short
            self._ending = True
            raise SystemExit(code)

    def _stop(self, signum: int, frame: object) -> None:
        """Ctrl-Z: the screen as it was before, the process stopped; when it goes on, the
        alternate screen again and the frame on it."""
        with self._lock:
            entered, self._entered = self._entered, False
            if entered:
                with contextlib.suppress(Exception):
                    self._write(LEAVE)
        os.kill(os.getpid(), signal.SIGSTOP)
        with self._lock:
            if entered and self._owned and not self._ending:
                self._entered, self.rows_shown = True, False
                with contextlib.suppress(Exception):
                    self._write(ENTER)
                self._redraw()

    def _redraw(self) -> None:
        """The frame's text from the reading drawn last (the lock held)."""
        try:
            self._write(self._text(self._shown))
            self.rows_shown = self.rows_shown or (self._shown is not None and bool(self._shown.gpus))
        except Exception:
            log.debug("the first frame's rows were not drawn", exc_info=True)

    def _text(self, snapshot: Snapshot | None) -> str:
        width, height = os.get_terminal_size(2)
        return screen_text(frame_lines(self.config, self.host_name, snapshot, width, height), width, height)

    def _write(self, text: str) -> None:
        """``text`` on standard error, whole (``_bytes_written`` counts what went)."""
        data = memoryview(text.encode(self.encoding, "replace"))
        while data:
            count = os.write(2, data)
            self._bytes_written += count
            data = data[count:]

"""Textual's Linux driver with an input thread that sleeps until a key comes.

Textual's input thread wakes ten times a second, input or not, to see whether the app is
ending: about 1 ms of CPU a second on a monitor that otherwise draws once a second. Here it
waits without a timeout: ending the app wakes it through a pipe (``exit_event.set``), and for a
second after each input it still wakes every 0.1 s, so that a key sequence left unfinished (a
lone Esc, told apart from the start of an arrow key by a timeout) is delivered.

The loop is Textual's own (``LinuxDriver.run_input_thread``, Textual 8) but for the timeout.

A first frame already on the alternate screen (the app's ``frame_on_screen``: the live command
writes one before Textual is loaded) is taken over without a blank screen: the driver does not
enter the alternate screen again (entering it clears it), and while that frame shows rows the
app's output is dropped, until ``show_held_screen`` (once the app's first look is painted) or
``HOLD_MAX_S``, and the app's whole screen is then drawn at once: the frame stays until a screen
at least as full replaces it. Once only: after a suspend (Ctrl-Z) the alternate screen is
entered as Textual does. A suspend closes the driver (and its wake-up pipe): the pipe is opened
again as the driver starts again.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import selectors
import time
from codecs import getincrementaldecoder
from threading import Event
from typing import Any

from textual._loop import loop_last
from textual._parser import ParseError
from textual._xterm_parser import XTermParser
from textual.drivers.linux_driver import LinuxDriver

POLL_S = 0.1  # Textual's wait between checks, kept while a key sequence may be unfinished
AWAKE_AFTER_INPUT_S = 1.0  # an unfinished sequence times out well within this
HOLD_MAX_S = 1.0  # the app's output dropped at most this long behind a first frame
ENTER_ALT_SCREEN = "\x1b[?1049h"  # what Textual's driver writes first (and clears the screen with)


class _WakingEvent(Event):
    """An ``Event`` whose ``set`` also writes to a pipe, waking a thread waiting on its other end."""

    def __init__(self, wake_fd: int) -> None:
        super().__init__()
        self._wake_fd = wake_fd

    def set(self) -> None:
        super().set()
        if self._wake_fd >= 0:
            with contextlib.suppress(BlockingIOError):  # the pipe is full of wake-ups already
                os.write(self._wake_fd, b".")

    def disconnect(self) -> None:
        """No more waking: the pipe is about to be closed (Textual sets the event again when
        it leaves application mode, after closing the driver)."""
        self._wake_fd = -1


class QuietLinuxDriver(LinuxDriver):
    def __init__(self, app: Any, **options: Any) -> None:
        super().__init__(app, **options)
        self._open_pipe()
        self._frame = getattr(app, "frame_on_screen", None)  # taken over on the first start only
        self._in_alt_screen = False  # entered before Textual: its ENTER_ALT_SCREEN is not written
        self._holding = False  # the app's output is dropped: a first frame stays meanwhile

    def _open_pipe(self) -> None:
        self._wake_read, self._wake_write = os.pipe()
        os.set_blocking(self._wake_write, False)
        self._pipe_open = True
        self.exit_event = _WakingEvent(self._wake_write)

    def start_application_mode(self) -> None:
        if not self._pipe_open:  # closed by a suspend (Textual closes the driver, then starts it again)
            self._open_pipe()
        frame, self._frame = self._frame, None
        hold = frame.hand_over() if frame is not None else False
        self._in_alt_screen = frame is not None
        try:
            super().start_application_mode()
        finally:
            self._in_alt_screen = False
        if hold:
            self._holding = True
            asyncio.get_running_loop().call_later(HOLD_MAX_S, self.show_held_screen)

    def write(self, data: str) -> None:
        if self._in_alt_screen and data == ENTER_ALT_SCREEN:
            self._in_alt_screen = False
            return
        if not self._holding:
            super().write(data)

    def show_held_screen(self) -> None:
        """Let the app's output through (on the event loop, as Textual's writes), and draw its
        whole screen again at the next refresh: one frame, where the frames it drew meanwhile,
        written one after the other, could each be seen in turn."""
        if self._holding:
            self._holding = False
            self._app.refresh(layout=True)

    def stop_application_mode(self) -> None:
        self._holding = False  # leaving: the screen is not drawn again
        super().stop_application_mode()

    def run_input_thread(self) -> None:
        """Wait for input (or the end) and dispatch events, as Textual does."""
        selector = selectors.SelectSelector()
        selector.register(self.fileno, selectors.EVENT_READ)
        selector.register(self._wake_read, selectors.EVENT_READ)
        parser = XTermParser(self._debug)
        decode = getincrementaldecoder("utf-8")().decode
        last_input = 0.0

        def process(ready: list[tuple[selectors.SelectorKey, int]], final: bool = False) -> None:
            nonlocal last_input
            for last, (key, mask) in loop_last(ready):
                if key.fd == self._wake_read:
                    os.read(self._wake_read, 64)
                elif mask & selectors.EVENT_READ:
                    last_input = time.monotonic()
                    data = decode(os.read(self.fileno, 1024 * 4), final=final and last)
                    if not data:  # standard input is a pipe that ended
                        break
                    for event in parser.feed(data):
                        self.process_message(event)
            for event in parser.tick():
                self.process_message(event)

        try:
            while not self.exit_event.is_set():
                awake = time.monotonic() - last_input < AWAKE_AFTER_INPUT_S
                process(selector.select(POLL_S if awake else None))
            selector.unregister(self.fileno)
            process(selector.select(POLL_S), final=True)
        finally:
            selector.close()
            try:
                for _ in parser.feed(""):
                    pass
            except (EOFError, ParseError):
                pass

    def close(self) -> None:
        super().close()
        if self._pipe_open:
            thread = self._key_thread
            if thread is not None and thread.is_alive():  # still waiting: wake it before the pipe goes
                self.exit_event.set()
                thread.join(1.0)
            self._pipe_open = False
            if isinstance(self.exit_event, _WakingEvent):
                self.exit_event.disconnect()
            os.close(self._wake_read)
            os.close(self._wake_write)

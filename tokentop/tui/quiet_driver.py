"""Textual's Linux driver with an input thread that sleeps until a key comes.

Textual's input thread wakes ten times a second, input or not, to see whether the app is
ending: about 1 ms of CPU a second on a monitor that otherwise draws once a second. Here it
waits without a timeout: ending the app wakes it through a pipe (``exit_event.set``), and for a
second after each input it still wakes every 0.1 s, so that a key sequence left unfinished (a
lone Esc, told apart from the start of an arrow key by a timeout) is delivered.

The loop is Textual's own (``LinuxDriver.run_input_thread``, Textual 8) but for the timeout.
"""

from __future__ import annotations

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
        self._wake_read, self._wake_write = os.pipe()
        os.set_blocking(self._wake_write, False)
        self._pipe_open = True
        self.exit_event = _WakingEvent(self._wake_write)

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

"""The live view always ends after its terminal is gone.

When the terminal disappears (an SSH drop, ``tmux kill-session``), Textual's output thread dies
on its first failed write, and about one shutdown in six then waits for ever on that thread's
full queue. The app calls ``arm`` as soon as a hangup, SIGTERM or a lost terminal ends it (from
the signal handler, so even when the event loop is stuck); if the app has not returned
``grace_s`` later, the watchdog says its last words (stops the sampler, which closes the
history) and ends the process with the exit code it was armed with.

``run_watched`` is how both live views (``cli.live``, ``cli.fleet``) run their app with one. Once
the app has returned (and put back the signal handlers it had), SIGHUP and SIGTERM wait for the
last words (a terminal closed right after ``q`` must not kill the process halfway through
closing the history), then end the process as they would have.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Protocol, TypeVar

log = logging.getLogger(__name__)


class _Runs(Protocol):
    def run(self) -> object: ...


AppT = TypeVar("AppT", bound=_Runs)


class ExitWatchdog:
    """A daemon thread, started before the app runs, that waits to be armed. Arming only sets
    an event: it is safe from a signal handler, whatever the interrupted code held."""

    def __init__(self, last_words: Callable[[], None], *, grace_s: float = 1.5, last_words_s: float = 1.5) -> None:
        self.last_words = last_words
        self.grace_s, self.last_words_s = grace_s, last_words_s
        self._armed = threading.Event()
        self._done = threading.Event()
        self._why, self._code = "", 1
        self._thread = threading.Thread(target=self._watch, name="tokentop-watchdog", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def arm(self, why: str, code: int) -> None:
        """Start counting down (the first call counts; any thread, or a signal handler)."""
        if not self._armed.is_set():
            self._why, self._code = why, code
            self._armed.set()

    def done(self) -> None:
        """The app returned: the rest of the shutdown is tokentop's own, and bounded."""
        self._done.set()
        self._armed.set()  # the thread ends

    def _watch(self) -> None:
        self._armed.wait()
        if self._done.wait(self.grace_s):
            return
        log.debug("%s, and the app did not end within %.1f s: ending the process", self._why, self.grace_s)
        closing = threading.Thread(target=self.last_words, name="tokentop-last-words", daemon=True)
        closing.start()
        closing.join(self.last_words_s)
        if not self._done.is_set():
            os._exit(self._code)


def run_watched(make_app: Callable[[Callable[[str, int], None]], AppT], last_words: Callable[[], None]) -> AppT:
    """Build the app (``make_app`` gets the watchdog's ``arm`` for its ``on_end``), run it with
    log records on its screen, and say ``last_words`` however it ends: once, from here or from
    the watchdog when the app is stuck on a terminal that is gone (``last_words`` must be safe
    to call twice). Returns the app, ended."""
    from tokentop.tui import logs_on_screen

    watchdog = ExitWatchdog(last_words)
    app = make_app(watchdog.arm)
    watchdog.start()
    try:
        with logs_on_screen(app):
            app.run()
    finally:
        watchdog.done()
        with signals_held():
            last_words()
    return app


HELD_SIGNALS = (signal.SIGHUP, signal.SIGTERM)


@contextmanager
def signals_held() -> Iterator[None]:
    """SIGHUP and SIGTERM wait until the block is done, then act as the handlers in place before
    it would have (by default: end the process, 129 or 143). Only the main thread sets handlers:
    elsewhere the block runs as it is."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    caught: list[int] = []
    previous = {sig: signal.signal(sig, lambda signum, frame: caught.append(signum)) for sig in HELD_SIGNALS}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, signal.SIG_DFL if handler is None else handler)
        if caught:
            signal.raise_signal(caught[0])

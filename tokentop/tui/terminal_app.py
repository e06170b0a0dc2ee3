"""What the local and the fleet views share as apps on a terminal: how they end when something
outside them ends them, and drawing for the terminal they have.

Ending: SIGHUP and SIGTERM end the app, and so does a controlling terminal that is gone (an SSH
drop, seen when a reading comes in); exit codes 0 on quit, 129 on hangup or a lost terminal, 143
on SIGTERM. ``on_end`` is called at once, even when the event loop is stuck writing to a
terminal that is gone (the command's watchdog then ends the process). Drawing: ``--ascii``
(every character drawn made ASCII), the terminal's own colours where it has only 16, the theme
key, and notifications as plain text. Taking over a first frame the command wrote on the
alternate screen before Textual was loaded (``frame_on_screen``, ``show_held_screen``).
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections import deque
from collections.abc import Callable, Sequence
from typing import Protocol

from textual.app import App
from textual.driver import Driver
from textual.filter import LineFilter
from textual.message import Message

from tokentop.tui.endings import ENDING_SIGNALS
from tokentop.tui.terminal import ANSI_THEMES, AsciiFilter, theme_for

TERMINAL_LOST = ("terminal lost", 129)


class FrameOnScreen(Protocol):
    """A first frame the command wrote on the alternate screen before Textual was loaded
    (``cli.first_frame``)."""

    def hand_over(self) -> bool:
        """The driver takes the terminal: the frame stops drawing. Whether it shows rows that
        the app's first screen (drawn before its first reading) should not blank out."""
        ...


class ShowHeldScreen(Message):
    """Posted after what the app should first show: the driver then lets the app's screen out."""


class TerminalApp(App[None]):
    """The base of both apps. A subclass calls ``watch_terminal`` from ``on_mount`` and
    ``unwatch_terminal`` from ``on_unmount``, and ``end(*TERMINAL_LOST)`` when
    ``terminal_alive`` turns False."""

    def __init__(
        self,
        *,
        ascii_only: bool,
        handle_signals: bool,
        terminal_fd: int | None,
        on_end: Callable[[str, int], None] | None,
    ) -> None:
        """``terminal_fd``: the terminal to watch for an SSH drop (default: standard input when
        it is a terminal and the app is not headless). ``on_end``: called with why and the exit
        code as soon as a signal or a lost terminal ends the app."""
        super().__init__()
        self._ascii = AsciiFilter() if ascii_only else None
        for theme in ANSI_THEMES.values():
            self.register_theme(theme)
        if not self.no_color:  # the terminal's own colours where it has only 16
            self.theme = theme_for(True, self.console.color_system)
        self.handle_signals = handle_signals
        self.on_end = on_end
        self.ended_by: str | None = None
        self._tty_fd = terminal_fd
        self._signals: dict[int, object] = {}  # the handlers the app replaced
        self.announcements: deque[str] = deque(maxlen=100)  # what was notified, newest last
        # Set by the command before ``run``: the alternate screen is entered already, and the
        # driver neither enters (clears) it again nor, while the frame shows rows, lets the app's
        # screen out until ``show_held_screen`` (``quiet_driver``).
        self.frame_on_screen: FrameOnScreen | None = None

    def get_driver_class(self) -> type[Driver]:
        """Textual's driver for this platform; on Linux, one whose input thread sleeps until a
        key comes (``quiet_driver``: Textual's wakes ten times a second)."""
        driver = super().get_driver_class()
        if driver.__module__ == "textual.drivers.linux_driver" and driver.__name__ == "LinuxDriver":
            from tokentop.tui.quiet_driver import QuietLinuxDriver

            return QuietLinuxDriver
        return driver

    def show_held_screen(self) -> None:
        """Any thread, after posting what the first screen should show (a first look): once
        that is handled (messages keep their order), the driver lets the app's screen out,
        drawn whole from what the widgets hold then."""
        self.post_message(ShowHeldScreen())

    def on_show_held_screen(self, message: ShowHeldScreen) -> None:
        show = getattr(self._driver, "show_held_screen", None)
        if show is not None:
            show()

    def get_line_filters(self) -> Sequence[LineFilter]:
        """Textual's (NO_COLOR's among them), then with ``--ascii`` the one that makes every
        character drawn ASCII."""
        filters = super().get_line_filters()
        return filters if self._ascii is None else [*filters, self._ascii]

    def action_toggle_theme(self) -> None:
        colours = None if self.no_color else self.console.color_system
        self.theme = theme_for(not self.current_theme.dark, colours)

    def _notify(self, text: str, severity: str = "information") -> None:
        """A toast, as plain text: endpoint names, error texts and remote hosts' reasons are
        not ours to write, and their ``[`` ``]`` as markup would style, link, run an action or
        raise."""
        self.announcements.append(text)
        self.notify(text, severity=severity, timeout=6, markup=False)  # type: ignore[arg-type]

    # -- ending --

    def watch_terminal(self) -> None:
        """Let signals end the app, and find the terminal to watch (from ``on_mount``)."""
        if self.handle_signals:
            self._install_signal_handlers()
        if self._tty_fd is None and not self.is_headless:
            fd = sys.__stdin__.fileno() if sys.__stdin__ is not None else -1
            self._tty_fd = fd if fd >= 0 and os.isatty(fd) else None

    def unwatch_terminal(self) -> None:
        """Put back the signal handlers the app replaced (from ``on_unmount``)."""
        for sig, previous in self._signals.items():
            signal.signal(sig, previous)  # type: ignore[arg-type]
        self._signals.clear()

    def _install_signal_handlers(self) -> None:
        """The handler runs in Python's own signal handling, not on the event loop: ``on_end``
        is called even when the loop is stuck; the loop is then asked to end the app."""
        loop = asyncio.get_running_loop()
        for sig, why, code in ENDING_SIGNALS:

            def handler(signum: int, frame: object, why: str = why, code: int = code) -> None:
                if self.on_end is not None:
                    self.on_end(why, code)
                loop.call_soon_threadsafe(self.end, why, code)

            try:
                self._signals[sig] = signal.signal(sig, handler)
            except (ValueError, OSError):  # not the main thread, or no such signal
                continue

    def end(self, why: str, code: int) -> None:
        """Leave the app because of something outside it (a signal, a lost terminal)."""
        if self.on_end is not None:
            self.on_end(why, code)
        if self.ended_by is None:
            self.ended_by = why
        self.exit(return_code=code)

    def terminal_alive(self) -> bool:
        """False once the controlling terminal is gone (an SSH drop): its ioctls fail."""
        if self._tty_fd is None:
            return True
        try:
            os.get_terminal_size(self._tty_fd)
        except OSError:
            return False
        return True

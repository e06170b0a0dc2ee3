"""The live view on a real terminal (a pseudo-terminal) with the driver whose input thread sleeps
until a key comes (``tokentop.tui.quiet_driver``): keys still arrive, a lone Esc included (told
apart from an arrow key's sequence only by a timeout, which the sleeping thread must still
keep), and ``q`` still ends the app (ending wakes the thread)."""

from __future__ import annotations

import contextlib
import fcntl
import os
import select
import struct
import subprocess
import sys
import termios
import time
from pathlib import Path

import pytest

from tokentop.config import Config
from tokentop.tui.app import TokentopApp
from tokentop.tui.quiet_driver import QuietLinuxDriver

ROOT = Path(__file__).resolve().parent.parent
WAIT_S = 30.0  # a guard against a hang only: each step takes well under a second


def test_the_live_view_uses_the_quiet_driver_on_linux() -> None:
    if not sys.platform.startswith("linux"):
        pytest.skip("Textual's Linux driver is the one replaced")
    assert TokentopApp(Config(), handle_signals=False).get_driver_class() is QuietLinuxDriver


class Terminal:
    """A process on a 120x40 pseudo-terminal: what it wrote so far, and keys typed to it."""

    def __init__(self, command: list[str], cwd: Path) -> None:
        self.master, slave = os.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
        env = {**os.environ, "TERM": "xterm-256color", "COLORTERM": "truecolor"}
        self.process = subprocess.Popen(
            command, stdin=slave, stdout=slave, stderr=slave, cwd=cwd, env=env, start_new_session=True
        )
        os.close(slave)
        self.output = ""

    def read(self, timeout_s: float) -> None:
        ready, _, _ = select.select([self.master], [], [], timeout_s)
        if ready:
            with contextlib.suppress(OSError):  # the process ended: the terminal is hung up
                self.output += os.read(self.master, 65536).decode("utf-8", "replace")

    def wait_for(self, text: str, after: int = 0) -> None:
        """Read until ``text`` appears after offset ``after`` of the output."""
        deadline = time.monotonic() + WAIT_S
        while text not in self.output[after:]:
            assert time.monotonic() < deadline, f"{text!r} never came; last output:\n{self.output[-2000:]}"
            self.read(0.2)

    def type(self, keys: str) -> int:
        """Type ``keys``; the offset in the output from which their effect shows."""
        mark = len(self.output)
        os.write(self.master, keys.encode())
        return mark

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        os.close(self.master)


def test_keys_a_lone_escape_and_quit_reach_the_live_view_on_a_terminal(tmp_path: Path) -> None:
    terminal = Terminal([sys.executable, "-m", "tokentop.cli", "--demo", "--db", str(tmp_path / "demo.db")], ROOT)
    try:
        terminal.wait_for("● live")
        terminal.wait_for("tokentop help", terminal.type("?"))
        terminal.type("\x1b")  # Esc alone closes the help: delivered once the parser's timeout passes
        time.sleep(1.0)  # a key typed within that timeout would make Esc its Alt- prefix
        terminal.wait_for("tokentop help", terminal.type("?"))  # opened again: Esc had closed it
        terminal.type("?")
        terminal.wait_for("PAUSED", terminal.type("p"))
        terminal.type("q")
        deadline = time.monotonic() + WAIT_S
        while terminal.process.poll() is None:
            assert time.monotonic() < deadline, f"q did not end the app; last output:\n{terminal.output[-2000:]}"
            terminal.read(0.2)
        assert terminal.process.returncode == 0
    finally:
        terminal.close()


# --- taking over a first frame ---------------------------------------------------------------

# A small Textual app on the quiet driver, run where a first frame is already on the alternate
# screen: argv[1] "rows" where the frame shows rows (``hand_over`` is True), argv[2] the driver's
# HOLD_MAX_S ("default": its own). Its screen is one line; ``s`` suspends it (``App.suspend``).
TINY_APP = """
import os, sys
from textual.app import App
from textual.widgets import Static
from tokentop.tui import quiet_driver

class Frame:
    def hand_over(self):
        return sys.argv[1] == "rows"

class Tiny(App):
    BINDINGS = [("q", "quit"), ("s", "suspend")]
    def compose(self):
        yield Static("the tiny app drawn")
    def get_driver_class(self):
        return quiet_driver.QuietLinuxDriver
    def action_suspend(self):
        with self.suspend():
            os.write(2, b"|suspended|")

if sys.argv[2] != "default":
    quiet_driver.HOLD_MAX_S = float(sys.argv[2])
os.write(2, b"\\x1b[?1049h|frame|")
app = Tiny()
app.frame_on_screen = Frame()
app.run()
"""
ENTER_ALT = "\x1b[?1049h"
LEAVE_ALT = "\x1b[?1049l"


def tiny_app(rows: bool, hold_max_s: str) -> Terminal:
    return Terminal([sys.executable, "-c", TINY_APP, "rows" if rows else "none", hold_max_s], ROOT)


def quit_and_end(terminal: Terminal) -> None:
    terminal.type("q")
    deadline = time.monotonic() + WAIT_S
    while terminal.process.poll() is None:
        assert time.monotonic() < deadline, f"q did not end the app; last output:\n{terminal.output[-2000:]}"
        terminal.read(0.2)
    terminal.read(0.2)
    assert terminal.process.returncode == 0 and "Traceback" not in terminal.output, terminal.output[-2000:]


def test_a_screen_held_behind_a_frame_is_let_out_after_at_most_hold_max_s() -> None:
    """The frame shows rows and the app never says its first look is drawn: its screen comes
    all the same (after ``HOLD_MAX_S``), in the alternate screen the frame entered."""
    terminal = tiny_app(rows=True, hold_max_s="default")
    try:
        terminal.wait_for("the tiny app drawn")
        quit_and_end(terminal)
    finally:
        terminal.close()
    assert terminal.output.count(ENTER_ALT) == 1  # the frame's: the driver did not enter (clear) it again


def test_a_frame_without_rows_holds_nothing() -> None:
    """Nothing to keep on screen: the app's screen comes at once (were it held, the hour that
    HOLD_MAX_S is set to here would pass first)."""
    terminal = tiny_app(rows=False, hold_max_s="3600")
    try:
        terminal.wait_for("the tiny app drawn")
        quit_and_end(terminal)
    finally:
        terminal.close()
    assert terminal.output.count(ENTER_ALT) == 1


def test_after_a_suspend_the_driver_enters_the_alternate_screen_as_textual_does() -> None:
    """The frame is taken over on the first start only; each start after a suspend enters the
    alternate screen again, and keys still come (the driver's wake-up pipe, closed with it, is
    opened again)."""
    terminal = tiny_app(rows=False, hold_max_s="3600")
    try:
        terminal.wait_for("the tiny app drawn")
        for _ in range(2):
            terminal.wait_for("|suspended|", terminal.type("s"))
            back = terminal.output.rindex("|suspended|")
            terminal.wait_for("the tiny app drawn", back)
        quit_and_end(terminal)
    finally:
        terminal.close()
    out = terminal.output
    assert out.count(ENTER_ALT) == 3 and out.count(LEAVE_ALT) == 3
    for suspended in (out.index("|suspended|"), out.rindex("|suspended|")):
        assert out.rindex(LEAVE_ALT, 0, suspended) > out.rindex(ENTER_ALT, 0, suspended)  # left, then
        assert ENTER_ALT in out[suspended:]  # entered again

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

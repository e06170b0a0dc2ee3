"""The live view's first frame (``tokentop.cli.first_frame``), written before Textual is loaded.

Its text against what the app itself draws from the same first look (the same header line, the
same GPU table, column for column), cut to the terminal; then the real program on a real
terminal (a pseudo-terminal): the frame's rows come first, Textual takes the alternate screen
over without entering it again and never shows its "reading the GPUs" screen in between, and
every way out (quit, a start-up that fails, a failure before Textual) leaves the alternate
screen before anything is printed. Timings are ``benchmarks/bench_startup.py``'s, not here.
"""

from __future__ import annotations

import re
import signal
import sys
import threading
import time
from pathlib import Path

import pytest
from test_quiet_driver import WAIT_S, Terminal
from test_tui import screen_text

from tokentop.cli.first_frame import ENTER, LEAVE
from tokentop.cli.live import EarlyLook, Startup
from tokentop.config import Config
from tokentop.derive.first_look import gpus_alone
from tokentop.model import Snapshot
from tokentop.nvml.fake import FakeMig, FakeNvml
from tokentop.nvml.reader import NvmlReader
from tokentop.tui.app import TokentopApp
from tokentop.tui.first_screen import frame_lines
from tokentop.tui.first_screen import screen_text as frame_screen_text
from tokentop.tui.host import FixedHost

ROOT = Path(__file__).resolve().parent.parent
ANSI = re.compile(r"\x1b(\[[0-9;?<>=$]*[ -/]*[@-~]|\][^\x07]*\x07|[=>])")
GPU_ROW = re.compile(r"^\s+(\d+)\s+H200\s", re.M)


def look(config: Config, count: int = 8, mig: bool = False) -> Snapshot:
    nvml = FakeNvml.healthy(count=count, name="NVIDIA H200", power_w=420.0)
    if mig:
        nvml.gpus[1].mig_instances = [FakeMig("MIG-a"), FakeMig("MIG-b")]
    reader = NvmlReader(lib=nvml)
    reader.open()
    return gpus_alone(config, reader.read(time.monotonic(), False), time.time())


def plain(text: str) -> str:
    """The text written, a line break where the cursor is moved to a line's start."""
    return ANSI.sub("", re.sub(r"\x1b\[\d+;1H", "\n", text))


# --- the frame's text: the app's own, cut to the terminal ------------------------------------


async def test_the_frame_is_what_the_app_draws_from_the_same_first_look() -> None:
    config = Config(discover=False)
    snapshot = look(config, mig=True)
    frame = frame_lines(config, "box", snapshot, 120, 40)
    app = TokentopApp(config, host_name="box", handle_signals=False, start_sampler=False, host=FixedHost())
    async with app.run_test(size=(120, 40)) as pilot:
        app.post_snapshot(snapshot)
        await pilot.pause()
        await pilot.pause()
        drawn = [line.rstrip() for line in screen_text(app).splitlines()]
    table = next(i for i, line in enumerate(frame) if "▲#" in line)
    assert frame[0] == drawn[0] and frame[0].startswith(" tokentop  box  8× NVIDIA H200")
    assert frame[table:] == drawn[table : len(frame)]  # titles, windows, every GPU and its MIG instances
    assert len(GPU_ROW.findall("\n".join(frame))) == 8 and "MIG 0" in "\n".join(frame)
    assert frame[table + 2].endswith("…")  # the engines still being read


def test_the_frame_is_cut_to_the_terminal_and_ascii_where_the_view_would_be() -> None:
    config = Config(discover=False)
    snapshot = look(config)
    narrow = frame_lines(config, "box", snapshot, 50, 8)
    assert len(narrow) == 8 and all(len(line) <= 50 for line in narrow)
    assert narrow[0].startswith(" tokentop  box")
    ascii_only = frame_lines(Config(discover=False, ascii_only=True), "box", snapshot, 120, 40)
    assert all(line.isascii() for line in ascii_only) and len(GPU_ROW.findall("\n".join(ascii_only))) == 8
    before = frame_lines(config, "box", None, 120, 40)
    assert before == [" tokentop  box  ‖ starting", " waiting for the first reading…"]


def test_a_line_that_fills_the_width_keeps_its_last_cell() -> None:
    """``ESC [K`` after a line that fills the width would erase its last cell (the cursor waits
    on it): such a line is not followed by one."""
    text = frame_screen_text(["x" * 10, "short"], 10, 5)
    assert text.startswith("\x1b[1;1H" + "x" * 10 + "\x1b[2;1Hshort\x1b[K") and text.endswith("\x1b[3;1H\x1b[J")
    assert shown(text, 10, 5) == ["x" * 10, "short", "", "", ""]


def shown(text: str, width: int, height: int, before: str = "#") -> list[str]:
    """What a terminal (``width`` x ``height``, every cell ``before``) shows once ``text`` is
    written: the cursor moves (clamped to the screen, as terminals do), ``ESC [K`` and ``ESC [J``
    erase from the cursor, and a character in the last column leaves the cursor on it."""
    screen = [[before] * width for _ in range(height)]
    y = x = 0
    for move, erase, char in re.findall(r"\x1b\[(\d+;\d+)H|\x1b\[([KJ])|([^\x1b])", text):
        if move:
            row, column = map(int, move.split(";"))
            y, x = min(row, height) - 1, min(column, width) - 1
        elif erase:
            for row in range(y, height if erase == "J" else y + 1):
                start = x if row == y else 0
                screen[row][start:] = [" "] * (width - start)
        else:
            screen[y][x] = char
            x = min(x + 1, width - 1)
    return ["".join(row).rstrip() for row in screen]


def test_a_frame_as_tall_as_the_terminal_keeps_its_last_line() -> None:
    """Eight GPUs on a 12-row pane: the frame's 12 lines fill it; clearing "below" them would move
    the cursor no further than the last line, and erase it."""
    config = Config(discover=False)
    lines = frame_lines(config, "box", look(config), 120, 12)
    assert len(lines) == 12 and GPU_ROW.search(lines[-1])
    assert shown(frame_screen_text(lines, 120, 12), 120, 12) == lines
    fewer = frame_lines(config, "box", None, 120, 12)  # shorter: what was below is cleared
    assert shown(frame_screen_text(fewer, 120, 12), 120, 12) == fewer + [""] * (12 - len(fewer))


# --- the GPU source built before the app, and an app that never began ------------------------


def test_what_the_early_look_built_is_closed_when_no_start_up_takes_it() -> None:
    config = Config(demo=True, history=False)
    early = EarlyLook(config, None)
    startup = Startup(config, early=early)
    early.start()
    startup.stop()  # the app never began: nobody will take it, built yet or not
    for thread in running("tokentop-early-look"):
        thread.join(WAIT_S)
    for thread in running("demo-"):
        thread.join(WAIT_S)
    assert not running("demo-")


def running(prefix: str) -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith(prefix) and t.is_alive()]


# --- the real program on a terminal ----------------------------------------------------------


def run_until_end(terminal: Terminal) -> None:
    deadline = time.monotonic() + WAIT_S
    while terminal.process.poll() is None:
        assert time.monotonic() < deadline, f"the program did not end; last output:\n{terminal.output[-2000:]}"
        terminal.read(0.2)
    terminal.read(0.2)


def test_the_first_frame_shows_every_gpu_then_textual_takes_it_over_without_a_blank(tmp_path: Path) -> None:
    terminal = Terminal([sys.executable, "-m", "tokentop.cli", "--demo", "--no-history"], ROOT)
    try:
        terminal.wait_for("● live")
        terminal.type("q")
        run_until_end(terminal)
    finally:
        terminal.close()
    out = terminal.output
    assert terminal.process.returncode == 0
    assert out.startswith(ENTER) and out.count("\x1b[?1049h") == 1  # entered once: Textual did not clear it
    textual = out.index("\x1b[38;")  # Textual's first colour: the frame has none
    frame = plain(out[:textual])
    assert " tokentop  " in frame and sorted(set(GPU_ROW.findall(frame))) == [str(i) for i in range(8)]
    assert "reading the GPUs" not in plain(out)  # the app's screen before its first look never showed
    leave = out.rindex(LEAVE)
    assert out.count("\x1b[?1049l") == 1 and "tokentop session on" in out[leave:]  # the summary after


FAIL_AFTER_FRAME = """
import sys
from tokentop.cli import live, main
def broken(config):
    raise OSError("no port free for the demo's engines")
live.build_runtime = broken
sys.exit(main(["--demo", "--no-history"]))
"""

FAIL_BEFORE_TEXTUAL = """
import sys
from tokentop.cli import live, main
from tokentop.cli.runtime import UsageError
def broken(*args, **kwargs):
    raise UsageError("the terminal went away")
live._run_app = broken
sys.exit(main(["--demo", "--no-history"]))
"""


def test_a_start_up_that_fails_leaves_the_alternate_screen_before_its_line() -> None:
    for script, line, code in (
        (FAIL_AFTER_FRAME, "tokentop: cannot start: no port free for the demo's engines", 1),
        (FAIL_BEFORE_TEXTUAL, "tokentop: the terminal went away", 2),
    ):
        terminal = Terminal([sys.executable, "-c", script], ROOT)
        try:
            run_until_end(terminal)
        finally:
            terminal.close()
        out = terminal.output
        assert terminal.process.returncode == code, out[-2000:]
        assert out.startswith(ENTER) and out.count("\x1b[?1049l") == 1
        assert line in out[out.index("\x1b[?1049l") :] and line not in out[: out.index("\x1b[?1049l")]
        assert "Traceback" not in out


LOGS_DURING_FRAME = """
import logging, sys
from tokentop.cli import live, main
original = live.build_runtime
def noisy(config):
    logging.getLogger("tokentop.nvml.reader").warning("GPU 3 is lost; listed as lost")
    return original(config)
live.build_runtime = noisy
sys.exit(main(["--demo", "--no-history"]))
"""


def test_what_is_logged_while_the_frame_has_the_screen_is_shown_by_the_app() -> None:
    """Printed on the frame, a warning would be drawn over and lost: it waits for the app."""
    terminal = Terminal([sys.executable, "-c", LOGS_DURING_FRAME], ROOT)
    try:
        terminal.wait_for("● live")
        terminal.wait_for("GPU 3 is lost")
        terminal.type("q")
        run_until_end(terminal)
    finally:
        terminal.close()
    out = terminal.output
    assert "GPU 3 is lost" not in out[: out.index("\x1b[38;")]


# --- signals before Textual: the frame's own handlers ------------------------------------------

# The real command, held between the first frame and Textual's import until the test creates the
# file named by argv[1]: a signal sent meanwhile comes while the frame has the terminal, as one
# sent during the import would (0.2 s, seconds on a first run that compiles Textual).
HELD_BEFORE_TEXTUAL = """
import os, sys, time
from tokentop.cli import live, main
run_app = live._run_app
def held(*args, **kwargs):
    while not os.path.exists(sys.argv[1]):
        time.sleep(0.01)
    return run_app(*args, **kwargs)
live._run_app = held
sys.exit(main(["--demo", "--no-history"]))
"""


def held_before_textual(gate: Path) -> Terminal:
    return Terminal([sys.executable, "-c", HELD_BEFORE_TEXTUAL, str(gate)], ROOT)


def test_sigterm_sighup_or_ctrl_c_before_textual_leave_the_alternate_screen(tmp_path: Path) -> None:
    """As the app ends on them (143, 129; Ctrl-C 130): out through the command's ``finally``,
    the screen as it was, no summary (the start failed), no traceback."""
    for sig, code in ((signal.SIGTERM, 143), (signal.SIGHUP, 129), (signal.SIGINT, 130)):
        terminal = held_before_textual(tmp_path / "never")
        try:
            terminal.wait_for(ENTER)
            terminal.process.send_signal(sig)
            run_until_end(terminal)
        finally:
            terminal.close()
        out = terminal.output
        assert terminal.process.returncode == code, (sig, out[-2000:])
        assert out.startswith(ENTER) and out.count(LEAVE) == 1 and out.count("\x1b[?1049h") == 1, sig
        assert "Traceback" not in out and "tokentop session on" not in out, sig


def test_sigterm_as_textual_is_imported_leaves_the_alternate_screen() -> None:
    """The real command, not held: SIGTERM as soon as the frame is on the screen comes while Textual
    is imported, or (on a fast machine) once the app has its own handlers: 143 either way."""
    terminal = Terminal([sys.executable, "-m", "tokentop.cli", "--demo", "--no-history"], ROOT)
    try:
        terminal.wait_for(ENTER)
        terminal.process.send_signal(signal.SIGTERM)
        run_until_end(terminal)
    finally:
        terminal.close()
    out = terminal.output
    assert terminal.process.returncode == 143, out[-2000:]
    assert out.startswith(ENTER) and out.count("\x1b[?1049l") == 1 and "Traceback" not in out


def stopped(pid: int) -> bool:
    with open(f"/proc/{pid}/stat") as stat:
        return stat.read().rsplit(")", 1)[1].split()[0] == "T"


def test_ctrl_z_before_textual_gives_the_screen_back_and_draws_the_frame_again_after(tmp_path: Path) -> None:
    if not Path("/proc/self/stat").exists():
        pytest.skip("a stopped process is told by /proc/<pid>/stat")
    gate = tmp_path / "go"
    terminal = held_before_textual(gate)
    try:
        terminal.wait_for(" 7  ")  # every GPU row drawn (the demo's eight)
        terminal.process.send_signal(signal.SIGTSTP)
        terminal.wait_for(LEAVE)
        deadline = time.monotonic() + WAIT_S
        while not stopped(terminal.process.pid):
            assert time.monotonic() < deadline, "Ctrl-Z did not stop the process"
            time.sleep(0.05)
        back = len(terminal.output)
        terminal.process.send_signal(signal.SIGCONT)
        terminal.wait_for(ENTER, back)
        terminal.wait_for(" 7  ", back)  # the frame again, every row
        gate.touch()
        terminal.wait_for("● live")
        terminal.type("q")
        run_until_end(terminal)
    finally:
        terminal.close()
    out = terminal.output
    assert terminal.process.returncode == 0, out[-2000:]
    suspended = out.index(LEAVE)
    assert out.startswith(ENTER) and out.count("\x1b[?1049h") == 2 and out.count("\x1b[?1049l") == 2
    again = out.index(ENTER, suspended)
    redrawn = plain(out[again : out.index("\x1b[38;", again)])
    assert " tokentop  " in redrawn and sorted(set(GPU_ROW.findall(redrawn))) == [str(i) for i in range(8)]
    assert "Traceback" not in out


CUT_ENTERING = """
import sys
from tokentop.cli.first_frame import ENTER, FirstFrame
from tokentop.config import Config
class Cut(FirstFrame):
    def _write(self, text):
        if text.startswith(ENTER):  # the terminal fails part-way through entering
            super()._write(text[: len(ENTER) + 10])
            raise OSError(5, "Input/output error")
        super()._write(text)
frame = Cut.open(Config(discover=False), "box")
sys.stdout.write(f"|opened {frame}|")
"""


def test_a_frame_cut_short_as_it_entered_the_alternate_screen_leaves_it() -> None:
    terminal = Terminal([sys.executable, "-c", CUT_ENTERING], ROOT)
    try:
        run_until_end(terminal)
    finally:
        terminal.close()
    out = terminal.output
    assert terminal.process.returncode == 0, out[-2000:]
    assert out.startswith(ENTER) and out.index(LEAVE) < out.index("|opened None|")

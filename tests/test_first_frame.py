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
import sys
import threading
import time
from pathlib import Path

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
    text = frame_screen_text(["x" * 10, "short"], 10)
    assert text.startswith("\x1b[1;1H" + "x" * 10 + "\x1b[2;1Hshort\x1b[K") and text.endswith("\x1b[3;1H\x1b[J")


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

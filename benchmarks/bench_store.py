"""Measure the SQLite history: append time, size per 24 h, chart and window queries.

    python benchmarks/bench_store.py             # the full 24 h: 86,400 ticks (about a minute)
    python benchmarks/bench_store.py --hours 2   # shorter; sizes extrapolated linearly to 24 h

A synthetic host of 8 GPUs and 4 endpoints ticks once a second with synthetic timestamps (one
day ending now), realistic values (power in mW steps, counters, jittered tokens) and the default
retention. Targets (issue 13): a 24 h chart within 10 ms; at most 100 MiB per 24 h; at most 200 MiB
with 30 days of rollups beside it.
"""

from __future__ import annotations

import argparse
import os
import random
import sqlite3
import statistics
import sys
import tempfile
import time
from pathlib import Path

from tokentop.history import Store
from tokentop.model import Snapshot, Totals

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from factories import build_snapshot  # the snapshot builder the tests use

N_GPUS, N_ENDPOINTS = 8, 4
MIB = 1024 * 1024


class SyntheticHost:
    """Two engines on four GPUs each, two more endpoints without GPUs of their own."""

    def __init__(self, start: float, seed: int = 7) -> None:
        self.rng = random.Random(seed)
        self.t = start
        self.seq = 0
        self.uuids = [f"GPU-{i}a7c3e91-4f2b-8d6e-1c0a-{i:012x}" for i in range(N_GPUS)]
        self.totals = [[0.0] * 6 for _ in range(N_GPUS)]
        self.energy_mj = [random.Random(i).randrange(10**9, 10**11) for i in range(N_GPUS)]
        self.raw = [
            [float(self.rng.randrange(10**6, 10**8)), float(self.rng.randrange(10**6))] for _ in range(N_ENDPOINTS)
        ]
        self.delivered = [[0.0, 0.0] for _ in range(N_ENDPOINTS)]
        self.finished = [0.0] * N_ENDPOINTS

    def tick(self) -> Snapshot:
        self.t += 1.0 + self.rng.uniform(-0.002, 0.002)
        self.seq += 1
        tokens = [[0.0, 0.0] for _ in range(N_ENDPOINTS)]
        gpus = [self._gpu(i, tokens[i // 4]) for i in range(N_GPUS)]
        endpoints = [self._endpoint(j, tokens[j]) for j in range(N_ENDPOINTS)]
        return build_snapshot(
            self.t,
            [Totals(*totals, elapsed_s=float(self.seq)) for totals in self.totals],
            [(d[0], d[1]) for d in self.delivered],
            seq=self.seq,
            gpus=gpus,
            endpoints=endpoints,
        )

    def _gpu(self, i: int, engine_tokens: list[float]) -> dict[str, object]:
        """Advance GPU ``i`` by one second (its tokens count towards its engine's)."""
        rng, totals = self.rng, self.totals[i]
        busy = rng.random() < 0.8
        power = rng.randrange(150_000, 700_000) / 1000 if busy else rng.randrange(70_000, 90_000) / 1000
        tok_in = float(rng.randrange(0, 4000)) / 4 if busy else 0.0
        tok_out = float(rng.randrange(0, 1200)) / 4 if busy else 0.0
        engine_tokens[0] += tok_in
        engine_tokens[1] += tok_out
        self.energy_mj[i] += int(power * 1000)
        usd = 3.5 / 3600
        for k, delta in enumerate((tok_in, tok_out, power, usd, 1.0 if busy else 0.0, usd if busy else 0.0)):
            totals[k] += delta
        return {
            "uuid": self.uuids[i],
            "utilization_pct": float(rng.randrange(60, 100) if busy else 0),
            "memory_used_bytes": 120_000_000_000 + rng.randrange(0, 2**24) * 4096,
            "power_w": power,
            "energy_counter_mj": self.energy_mj[i],
            "temperature_c": float(rng.randrange(45, 80)),
            "sm_clock_mhz": rng.choice((1755, 1980)),
            "engines": (f"engine-{i // 4}",),
            "usd_per_hour_now": 3.5,
        }

    def _endpoint(self, j: int, tokens: list[float]) -> dict[str, object]:
        """Advance endpoint ``j`` by one second: the first two serve the GPUs' tokens, the
        others are remote endpoints with tokens of their own and no GPU here."""
        rng = self.rng
        if j >= 2:
            tokens[:] = [float(rng.randrange(0, 3000)), float(rng.randrange(0, 300))]
        for k, delta in enumerate(tokens):
            self.raw[j][k] += round(delta)
            self.delivered[j][k] += round(delta)
        self.finished[j] += rng.randrange(0, 4)
        return {
            "name": f"engine-{j}",
            "url": f"http://10.0.0.{j + 1}:8000/metrics",
            "prompt_tokens_total": self.raw[j][0],
            "generation_tokens_total": self.raw[j][1],
            "running": float(rng.randrange(0, 64)),
            "waiting": float(rng.randrange(0, 8)),
            "kv_cache_fraction": rng.random(),
            "requests_finished_total": self.finished[j],
            "gpus": tuple(self.uuids[4 * j : 4 * j + 4]) if j < 2 else (),
            "mapping": "process" if j < 2 else None,
            "pid": 1000 + j,
            "ttft_p50_s": rng.uniform(0.05, 0.4),
            "ttft_p95_s": rng.uniform(0.4, 2.0),
            "itl_p50_s": rng.uniform(0.01, 0.05),
        }


def used_bytes(path: Path) -> tuple[int, dict[str, int]]:
    """Bytes in use after a checkpoint (pages minus free pages), and per table (dbstat)."""
    conn = sqlite3.connect(path)
    try:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        page_size = conn.execute("PRAGMA page_size").fetchone()[0]
        pages = conn.execute("PRAGMA page_count").fetchone()[0]
        free = conn.execute("PRAGMA freelist_count").fetchone()[0]
        try:
            per_table = dict(conn.execute("SELECT name, sum(pgsize) FROM dbstat GROUP BY name"))
        except sqlite3.OperationalError:  # SQLite built without dbstat
            per_table = {}
        return (pages - free) * page_size, per_table
    finally:
        conn.close()


def timed(fn, repeat: int) -> str:
    """Median (and fastest) wall time of ``repeat`` calls, in ms."""
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return f"{statistics.median(times) * 1e3:.2f} ms (fastest {min(times) * 1e3:.2f})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hours", type=float, default=24.0, help="hours of 1 Hz ticks to write")
    parser.add_argument("--db", type=Path, help="file to write (default: a temporary folder)")
    args = parser.parse_args()
    ticks = int(args.hours * 3600)
    with tempfile.TemporaryDirectory() as tmp:
        path = args.db or Path(tmp) / "history.db"
        end = time.time()
        host = SyntheticHost(start=end - ticks)
        store = Store.open(path, host="bench", version="bench", config={})
        empty, _ = used_bytes(path)
        append_s = []
        wall = time.perf_counter()
        for _ in range(ticks):
            snapshot = host.tick()
            start = time.perf_counter()
            status = store.append(snapshot)
            append_s.append(time.perf_counter() - start)
            assert status is None, status
        wall = time.perf_counter() - wall
        session = store.session_id
        assert session is not None
        now = host.t

        size, per_table = used_bytes(path)
        per_day = (size - empty) * 86400 / ticks + empty
        raw_tables = ("gpu_ticks", "endpoint_ticks")
        rollup_tables = ("gpu_rollup_1m", "endpoint_rollup_1m")
        print(f"ticks written: {ticks:,} ({args.hours:g} h of 8 GPUs + 4 endpoints at 1 Hz) in {wall:.1f} s")
        print(
            f"append, one tick (8 GPU + 4 endpoint rows, rollups), median: "
            f"{statistics.median(append_s) * 1e3:.3f} ms; over the last hour: "
            f"{statistics.median(append_s[-3600:]) * 1e3:.3f} ms; "
            f"p99: {sorted(append_s)[int(0.99 * len(append_s))] * 1e3:.3f} ms"
        )
        method = "measured" if ticks == 86400 else f"{args.hours:g} h measured, scaled x{24 / args.hours:g}"
        print(
            f"file size per 24 h: {per_day / MIB:.1f} MiB ({method}; pages in use after a "
            f"checkpoint; target <= 100 MiB)"
        )
        if per_table:
            scale = 86400 / ticks
            raw = sum(per_table.get(t, 0) for t in raw_tables) * scale
            rollups = sum(per_table.get(t, 0) for t in rollup_tables) * scale
            print(
                f"  of which raw rows {raw / MIB:.1f} MiB "
                f"({raw / (ticks * scale * (N_GPUS + N_ENDPOINTS)):.0f} B per row), "
                f"1-minute rollups {rollups / MIB:.2f} MiB"
            )
            print(
                f"  steady state with the default retention (24 h raw, 30 d rollups): "
                f"{(raw + 30 * rollups + empty) / MIB:.0f} MiB (target <= 200 MiB)"
            )

        span = min(86400.0, float(ticks))
        since = now - span

        def chart(session_id: int | None, uuid: str | None, step: float) -> None:
            points = store.gpu_series(session_id, uuid, since, now, step)
            assert points[-1].watts is not None

        print(f"chart of the last {span / 3600:g} h from the rollups, median of 25 (target <= 10 ms):")
        for label, session_id, uuid, step in (
            ("whole host, 1-min steps", session, None, 60),
            ("whole host, 5-min steps", session, None, 300),
            ("one GPU, 1-min steps", session, host.uuids[3], 60),
            ("all sessions, 1-min steps", None, None, 60),
        ):
            points = int(span // step)
            result = timed(lambda s=session_id, u=uuid, st=step: chart(s, u, st), 25)
            print(f"  {label} ({points:,} points): {result}")
        print(
            f"chart of the last 10 min from raw rows (5 s steps), median of 25: "
            f"{timed(lambda: store.gpu_series(session, None, now - 600, now, 5), 25)}"
        )

        rng = random.Random(1)
        windows = [sorted(rng.uniform(since, now) for _ in range(2)) for _ in range(200)]
        window_iter = iter(windows * 2)
        whole_host = timed(lambda: store.window_totals(session, None, *next(window_iter)), 200)
        one_gpu = timed(lambda: store.window_totals(session, host.uuids[0], *next(window_iter)), 200)
        print(
            f"energy over a random window of the day (window_totals), median of 200: "
            f"whole host {whole_host}, one GPU {one_gpu}"
        )
        store.close()
        print(f"load average during the run: {os.getloadavg()[1]:.1f} (1 = one busy core)")


if __name__ == "__main__":
    main()

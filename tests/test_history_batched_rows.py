"""A tick's rows go in one ``executemany`` per table when none of them can have been written
before (issue 13: ``ticks._batched``), row by row otherwise. Over a hostile session (values
missing or odd, states and names changing, GPUs coming and going, a GPU or an endpoint twice in a
tick, ticks written again whole or in part, time stepping back a little, a full disk failing
transactions that are written again later) every table is exactly what writing every row one by
one makes, both ways were taken, and the tables are those the code before the per-tick work of
issue 13 session 19 (cached row ids, plain-tuple rows, a tick's statements back to back, None
bound through an adapter) wrote."""

from __future__ import annotations

import hashlib
import random
import sqlite3
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from factories import build_snapshot, gpu_uuid

from tokentop.history import Store, ticks
from tokentop.model import Snapshot, Totals

# sha256 of ``repr(dump(...))`` of the hostile session as written by commit b81c7c5 (before the
# changes above). It changes only with the tables: with a deliberate change to what is stored, to
# the schema, or to the hostile session and its factories, record it again from code known right.
HOSTILE_TABLES_SHA256 = "dcd0add889810c005abce1201c07decf5105b18d3b65237a5ec346bd3a8fb7c5"


def maybe(rng: random.Random, value: object, none_share: float = 0.15) -> object:
    return None if rng.random() < none_share else value


def hostile_gpu(rng: random.Random, i: int, k: int) -> dict[str, Any]:
    return {
        "uuid": gpu_uuid(1 if rng.random() < 0.04 else i),  # now and then the same GPU twice
        "index": maybe(rng, i, 0.05),
        "name": rng.choice(["NVIDIA H200", '=x|\x1b[2J "H200"']),
        "status": rng.choice(["ok"] * 8 + ["error", "lost"]),
        "error": rng.choice([None] * 6 + ["nvmlDeviceGetTemperature: Unknown Error", f"changing {k}"]),
        "utilization_pct": maybe(rng, float(rng.randrange(101))),
        "memory_used_bytes": maybe(rng, rng.choice([rng.randrange(2**37), 2**20 * rng.randrange(1, 140_000)])),
        "memory_total_bytes": maybe(rng, 150_754_820_096),
        "power_w": maybe(rng, rng.choice([rng.randrange(700_000) / 1000, rng.uniform(0, 700), 1e13, 1 / 3])),
        "power_limit_w": maybe(rng, rng.choice([700.0, 650.5])),
        "energy_counter_mj": maybe(rng, rng.randrange(2**62)),
        "temperature_c": maybe(rng, float(rng.randrange(20, 90))),
        "sm_clock_mhz": maybe(rng, rng.randrange(2000)),
        "engines": rng.choice([(), ("a",), ("a", "=cmd|x\n")]),
        "energy_method": rng.choice(["counter", "counter", "integrated", None]),
        "usd_per_hour_now": rng.choice([None, 3.5, 3.5, 2.0 + k / 1000]),
    }


def hostile_endpoint(rng: random.Random, j: int, k: int) -> dict[str, Any]:
    j = 0 if rng.random() < 0.05 else j  # now and then the same endpoint twice
    return {
        "name": f"e{j}",
        "url": f"http://h:{8000 + j}/metrics",
        "status": rng.choice(["up", "up", "down"]),
        "error": rng.choice([None, None, f"HTTP {k}"]),
        "kind": rng.choice(["vllm", None]),
        "model": rng.choice(["m", "-m|y\r"]),
        "prompt_tokens_total": maybe(rng, float(k * 100)),
        "running": maybe(rng, float(rng.randrange(9))),
        "kv_cache_fraction": maybe(rng, rng.random()),
        "ttft_p50_s": maybe(rng, 0.1),
        "gpus": rng.choice([(), (gpu_uuid(0), gpu_uuid(1))]),
    }


def hostile_session(ticks: int = 300, seed: int = 13) -> Iterator[Snapshot]:
    rng = random.Random(seed)
    t = 1_700_000_000.0
    cumulative = [[0.0] * 6 for _ in range(6)]
    for k in range(ticks):
        t += rng.choice([1.0, 1.0, 1.0, 0.5, 61.0, -0.0004, 0.0])
        gpus = [hostile_gpu(rng, i, k) for i in range(rng.choice([3, 4, 5]))]
        for sums in cumulative:
            sums[:] = [s + rng.choice([0.0, 1.0, 0.25, 1e-9]) for s in sums]
        totals = [Totals(*sums[:3], maybe(rng, sums[3]), sums[4], maybe(rng, sums[5])) for sums in cumulative]
        endpoints = [hostile_endpoint(rng, j, k) for j in range(rng.choice([0, 1, 3]))]
        tokens = [(float(k), k / 2)] * len(endpoints)
        snapshot = build_snapshot(t, totals[: len(gpus)], tokens, seq=k + 1, gpus=gpus, endpoints=endpoints)
        yield snapshot
        if rng.random() < 0.05:
            yield snapshot  # the same tick again
        elif rng.random() < 0.05:  # the same instant: two GPUs again, one new
            again = [*gpus[:2], {"uuid": gpu_uuid(7)}]
            yield build_snapshot(t, totals[:3], tokens, seq=k + 1, gpus=again, endpoints=endpoints)


def record(path: Path, monkeypatch: pytest.MonkeyPatch, *, batched: bool) -> Counter[bool]:
    """Write the hostile session (a full disk for a while in the middle); how often rows went
    in one ``executemany`` (True) or one by one (False)."""
    ways: Counter[bool] = Counter()
    in_one_call = ticks._batched

    def counted(values: list[tuple], fresh: bool) -> bool:
        way = in_one_call(values, fresh and batched)
        ways[way] += 1
        return way

    opened: list[sqlite3.Connection] = []
    connect = sqlite3.connect
    monkeypatch.setattr(sqlite3, "connect", lambda *a, **k: opened.append(connect(*a, **k)) or opened[-1])
    monkeypatch.setattr(ticks, "_batched", counted)
    monkeypatch.setattr(time, "time", lambda: 1_700_000_000.0)  # the session's start and end, both ways
    messages = []
    with Store.open(path, host="h", version="v", config={}) as store:
        own = opened[0]
        for n, snapshot in enumerate(hostile_session()):
            if n == 150:  # SQLite's limit on the file size: a full disk, transactions fail
                own.execute(f"PRAGMA max_page_count = {own.execute('PRAGMA page_count').fetchone()[0]}")
            if n == 190:
                own.execute("PRAGMA max_page_count = 1073741823")
            messages.append(store.append(snapshot))
    monkeypatch.undo()
    assert any(message and "disk is full" in message for message in messages)
    return ways


def dump(path: Path) -> dict[str, list[tuple]]:
    """Every table's rows with their types (1 and 1.0 differ), in rowid or primary key order."""
    conn = sqlite3.connect(path)
    try:
        tables = [name for (name,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        return {table: [tuple((type(v).__name__, v) for v in row) for row in rows_of(conn, table)] for table in tables}
    finally:
        conn.close()


def rows_of(conn: sqlite3.Connection, table: str) -> list[tuple]:
    try:
        return conn.execute(f'SELECT rowid, * FROM "{table}" ORDER BY rowid').fetchall()
    except sqlite3.OperationalError:  # WITHOUT ROWID: in primary key order
        return conn.execute(f'SELECT * FROM "{table}"').fetchall()


def test_rows_in_one_executemany_make_the_tables_rows_one_by_one_make(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    batched_ways = record(tmp_path / "batched.db", monkeypatch, batched=True)
    one_by_one_ways = record(tmp_path / "one_by_one.db", monkeypatch, batched=False)

    batched, one_by_one = dump(tmp_path / "batched.db"), dump(tmp_path / "one_by_one.db")
    assert batched == one_by_one
    assert hashlib.sha256(repr(batched).encode()).hexdigest() == HOSTILE_TABLES_SHA256
    assert batched_ways[True] > 100 and batched_ways[False] > 100 and one_by_one_ways[True] == 0
    assert len(batched["gpu_ticks"]) > 500 and len(batched["gpu_rollup_1m"]) > 50

"""Issue 13: schema 5 makes the history a fifth smaller (states, milliwatts, memory units) and
loses nothing. A fixed simulated run recorded by the schema-4 code (``fixtures/history_v4.sql``)
and the same run recorded now give the same summary, over the whole session and over ranges
inside it; migrating the old file changes no value its views show, however odd the values."""

from __future__ import annotations

import json
import math
import random
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from tokentop import report
from tokentop.config import Config, CostConfig
from tokentop.demo import simulated_snapshots
from tokentop.history import SCHEMA_VERSION, Store
from tokentop.history.states import memory_columns, power_column

V4_SQL = Path(__file__).parent / "fixtures" / "history_v4.sql"
TICKS, SEED = 60, 13  # how the fixture was recorded (its header says so)
VOLATILE = {"db_path", "started_unix_s", "started_utc", "ended_unix_s", "ended_utc"}
VIEWS = ("gpu_ticks_v", "endpoint_ticks_v")


def write_version_4(path: Path) -> None:
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.executescript(V4_SQL.read_text())
        conn.execute("PRAGMA journal_mode = WAL")
    finally:
        conn.close()


def record_now(path: Path) -> None:
    """The fixture's run, recorded by today's code."""
    cost = CostConfig()
    store = Store.open(path, host="fixture", version="0", config=Config(cost=cost).public_dict())
    for snapshot in simulated_snapshots(TICKS, seed=SEED, cost=cost):
        store.append(snapshot)
    store.close()


def summary(path: Path, since: float | None = None, until: float | None = None) -> str:
    found = report.to_json_dict(report.summarize(path, 1, since=since, until=until))
    return json.dumps(_scrub(found), indent=1, sort_keys=True)


def _scrub(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: "<volatile>" if k in VOLATILE else _scrub(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_scrub(v) for v in value]
    return value


def view_rows(path: Path) -> dict[str, list[str]]:
    """Every row of the raw views, each value with its type (``repr``), in key order."""
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return {
            view: [repr(row) for row in conn.execute(f"SELECT * FROM {view} ORDER BY session_id, t, 3")]
            for view in VIEWS
        }
    finally:
        conn.close()


def ranges(path: Path) -> list[tuple[float | None, float | None]]:
    with Store.open_readonly(path) as store:
        bounds = store.session_bounds(1)
    assert bounds is not None
    first, last = bounds
    third = (last - first) / 3
    return [(None, None), (first + third, last), (first, first + third), (first + 7.5, last - 12.25)]


@pytest.fixture
def old_file(tmp_path: Path) -> Path:
    path = tmp_path / "v4.db"
    write_version_4(path)
    return path


def test_the_same_run_recorded_before_and_now_gives_the_same_summary(old_file: Path, tmp_path: Path) -> None:
    new_file = tmp_path / "v5.db"
    record_now(new_file)
    assert sqlite3.connect(new_file).execute("PRAGMA user_version").fetchone() == (SCHEMA_VERSION,) == (5,)
    for since, until in ranges(old_file):
        assert summary(new_file, since, until) == summary(old_file, since, until), (since, until)


def test_migrating_keeps_every_summary_figure(old_file: Path) -> None:
    before = {r: summary(old_file, *r) for r in ranges(old_file)}
    Store.open(old_file, host="h", version="v", config={}).close()  # migrates to 5
    assert sqlite3.connect(old_file).execute("PRAGMA user_version").fetchone() == (SCHEMA_VERSION,)
    assert {r: summary(old_file, *r) for r in ranges(old_file)} == before


def test_migrating_keeps_every_value_however_odd(old_file: Path) -> None:
    """Rows whose power is no whole milliwatt (or none), whose memory is no whole KiB, whose cost
    rate changes every tick or is missing, and whose state (energy method included) changes: the
    views show them as the schema-4 file held them, value for value and type for type."""
    rng = random.Random(5)
    conn = sqlite3.connect(old_file, isolation_level=None)
    keys = conn.execute("SELECT session_id, t, gpu_id FROM gpu_ticks").fetchall()
    for n, key in enumerate(keys):
        power = [None, 700.0, 123.4567, rng.uniform(50, 700), 0.001, 1e13][n % 6]
        memory = [None, 2**20 * 7, 1024 * 3, 123_456_789, 0][n % 5]
        rate = [None, 3.5, rng.uniform(1, 9)][n % 3]
        status, error = [("ok", None), ("lost", "GPU is lost"), ("error", "NVML: unknown")][n % 7 % 3]
        conn.execute(
            "UPDATE gpu_ticks SET power_w = ?, mem_used_bytes = ?, usd_per_hour = ?, status = ?, error = ?,"
            " gpu_index = ?, energy_method_id = ? WHERE session_id = ? AND t = ? AND gpu_id = ?",
            (power, memory, rate, status, error, n % 9, [None, 1, 2][n % 4 % 3], *key),
        )
    keys = conn.execute("SELECT session_id, t, endpoint_id FROM endpoint_ticks").fetchall()
    for n, key in enumerate(keys):
        status, error = [("up", None), ("stale", "timed out after 0.8 s"), ("error", "HTTP 500")][n % 3]
        conn.execute(
            "UPDATE endpoint_ticks SET status = ?, error = ?, kind_id = ?, model_id = NULL"
            " WHERE session_id = ? AND t = ? AND endpoint_id = ?",
            (status, error, None if n % 4 == 0 else 1, *key),
        )
    conn.close()
    before = view_rows(old_file)
    Store.open(old_file, host="h", version="v", config={}).close()
    after = view_rows(old_file)
    for view in VIEWS:
        assert after[view] == before[view], view


def test_power_and_memory_columns_give_every_value_back() -> None:
    rng = random.Random(3)
    powers = [None, 0.0, 700.0, 0.001, 146.668, 1e12, -1.0, math.inf, *(rng.uniform(0, 1500) for _ in range(2000))]
    powers += [rng.randrange(0, 2_000_000) / 1000 for _ in range(2000)]  # NVML's milliwatts
    for power in powers:
        stored = power_column(power)
        back = stored / 1000 if isinstance(stored, int) else stored
        assert back == power or (back is None and power is None), power
    assert power_column(146.668) == 146668  # the usual case: 3 bytes, not 8
    assert power_column(146.6685) == 146.6685 and isinstance(power_column(700), int)
    for used in (None, 0, 1, 1023, 1024, 3 * 2**20, 141 * 2**30 - 4096, 2**47 + 1):
        stored, unit = memory_columns(used)
        assert (None if stored is None else stored * unit) == used
    assert memory_columns(80 * 2**30) == (80 * 1024, 2**20)

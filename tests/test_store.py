"""The SQLite history (``tokentop.history``): real files in temporary folders, real processes.

This file is also a small program (``python tests/test_store.py writer DB ...``) so that the
concurrency and kill tests can run real writer processes with the same fake host.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import os
import random
import signal
import sqlite3
import stat
import subprocess
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import sqlite_utils
from factories import build_snapshot, gpu_uuid

from tokentop import report
from tokentop.config import Config, EndpointConfig
from tokentop.history import SCHEMA_VERSION, SeriesPoint, Store, StoreError, retention
from tokentop.model import Snapshot, Totals

T0 = 1_700_000_040.0  # a whole minute, so ticks at T0 + k fall in predictable minutes
THIS_FILE = Path(__file__).resolve()


# --- a fake host that produces snapshots ---------------------------------------------------------


@dataclass
class FakeHost:
    """Identical GPUs all serving every endpoint; figures advance at the given rates.

    ``jitter`` varies each tick's power and tokens (seeded), so rollups and series are checked
    against uneven data too; with ``jitter=0`` every figure is known exactly.
    """

    n_gpus: int = 2
    n_endpoints: int = 1
    t: float = T0
    power_w: float = 500.0
    tok_s_in: float = 1000.0
    tok_s_out: float = 100.0
    usd_per_hour: float | None = 3.6
    jitter: float = 0.0
    seed: int = 1
    seq: int = 0
    cum: list[list[float]] = field(default_factory=list)  # per GPU: the six Totals figures
    history: list[Snapshot] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)
        self.cum = [[0.0] * 6 for _ in range(self.n_gpus)]

    def uuid(self, i: int) -> str:
        return gpu_uuid(i)

    def tick(self, dt: float = 1.0, *, power: bool = True) -> Snapshot:
        """Advance ``dt`` seconds. ``power=False``: this tick has no power reading."""
        self.t += dt
        self.seq += 1
        totals, gpus = [], []
        for i, cum in enumerate(self.cum):
            watts = self.power_w * (1 + self.jitter * (self.rng.random() - 0.5))
            tok_in = self.tok_s_in * dt * (1 + self.jitter * (self.rng.random() - 0.5))
            tok_out = self.tok_s_out * dt * (1 + self.jitter * (self.rng.random() - 0.5))
            cost = None if self.usd_per_hour is None else self.usd_per_hour * dt / 3600
            cum[0] += tok_in
            cum[1] += tok_out
            cum[2] += watts * dt
            cum[3] = None if cost is None else cum[3] + cost
            cum[4] += dt if tok_out > 0 else 0.0
            cum[5] = None if cost is None else cum[5] + (cost if tok_out > 0 else 0.0)
            totals.append(Totals(*cum, elapsed_s=self.seq * dt))
            gpus.append(
                {
                    "utilization_pct": float(self.rng.randint(0, 100)),
                    "memory_used_bytes": 100_000_000_000 + i,
                    "power_w": watts if power else None,
                    "energy_counter_mj": int(9e9 + cum[2] * 1000),
                    "temperature_c": 61.0,
                    "sm_clock_mhz": 1980,
                    "usd_per_hour_now": self.usd_per_hour,
                }
            )
        tokens_in = sum(c[0] for c in self.cum) / max(1, self.n_endpoints)
        tokens_out = sum(c[1] for c in self.cum) / max(1, self.n_endpoints)
        endpoint = {
            "prompt_tokens_total": 1e6 + tokens_in,
            "generation_tokens_total": 2e5 + tokens_out,
            "running": float(self.seq % 7),
            "waiting": float(self.seq % 3),
            "kv_cache_fraction": (self.seq % 10) / 10,
            "requests_finished_total": float(self.seq),
            "pid": 4242,
            "ttft_p50_s": 0.12,
            "ttft_p95_s": 0.48,
            "itl_p50_s": 0.021,
        }
        snapshot = build_snapshot(
            self.t,
            totals,
            [(tokens_in, tokens_out)] * self.n_endpoints,
            seq=self.seq,
            dt_s=dt,
            gpus=gpus,
            endpoints=[endpoint] * self.n_endpoints,
        )
        self.history.append(snapshot)
        return snapshot


def open_store(path: Path, **options: object) -> Store:
    return Store.open(path, host="test-host", version="0.1.0", config={"interval_s": 1.0, "endpoints": []}, **options)


def rows(path: Path, sql: str, params: tuple = ()) -> list[tuple]:
    """Read with a plain connection of our own, as any other program would."""
    conn = sqlite3.connect(path)
    try:
        return conn.execute(sql, params).fetchall()
    finally:
        conn.close()


def execute(path: Path, sql: str) -> None:
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute(sql)
    finally:
        conn.close()


def fill(path: Path, host: FakeHost, ticks: int, dt: float = 1.0, **options: object) -> int:
    """A closed session of ``ticks`` ticks; returns its id."""
    with open_store(path, **options) as store:
        for _ in range(ticks):
            assert store.append(host.tick(dt)) is None
        assert store.session_id is not None
        return store.session_id


# --- file, schema, session -------------------------------------------------------------------


@pytest.fixture
def connections(monkeypatch: pytest.MonkeyPatch) -> list[sqlite3.Connection]:
    """Every connection opened during the test, the store's first. Some settings belong to a
    connection (synchronous, busy_timeout, max_page_count): only the store's own shows them."""
    opened: list[sqlite3.Connection] = []
    connect = sqlite3.connect

    def recording_connect(*args: Any, **kwargs: Any) -> sqlite3.Connection:
        conn = connect(*args, **kwargs)
        opened.append(conn)
        return conn

    monkeypatch.setattr(sqlite3, "connect", recording_connect)
    return opened


def test_new_file_is_private_wal_with_schema_version(tmp_path: Path, connections: list[sqlite3.Connection]) -> None:
    path = tmp_path / "deep" / "er" / "history.db"
    with open_store(path) as store:
        [own] = connections
        store.append(FakeHost().tick())
        for name in ("history.db", "history.db-wal", "history.db-shm"):
            mode = stat.S_IMODE((path.parent / name).stat().st_mode)
            assert mode == 0o600, f"{name} has mode {oct(mode)}"
        assert own.execute("PRAGMA synchronous").fetchone()[0] == 1  # NORMAL
        assert own.execute("PRAGMA busy_timeout").fetchone()[0] == 250
    assert rows(path, "PRAGMA journal_mode") == [("wal",)]
    assert rows(path, "PRAGMA user_version") == [(SCHEMA_VERSION,)]
    tables = {name for (name,) in rows(path, "SELECT name FROM sqlite_master WHERE type='table'")}
    assert {"sessions", "gpu_ticks", "endpoint_ticks", "gpu_rollup_1m", "endpoint_rollup_1m"} <= tables


def test_existing_file_open_to_others_is_made_private(tmp_path: Path) -> None:
    path = tmp_path / "history.db"
    fill(path, FakeHost(), 1)
    path.chmod(0o644)
    open_store(path).close()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_session_row_records_host_version_config_and_end(tmp_path: Path) -> None:
    path = tmp_path / "history.db"
    before = time.time()
    store = Store.open(path, host="gpu-box-7", version="9.9.9", config={"interval_s": 0.5, "cost": {"mode": "owned"}})
    [session] = store.sessions()
    assert (session.host, session.tokentop_version) == ("gpu-box-7", "9.9.9")
    assert session.config == {"interval_s": 0.5, "cost": {"mode": "owned"}}
    assert session.started_at >= before and session.ended_at is None
    assert store.latest_session_id() == session.id == store.session_id
    assert store.close() is None
    assert store.close() is None  # idempotent
    [(ended_at,)] = rows(path, "SELECT ended_at FROM sessions")
    assert ended_at >= session.started_at
    with pytest.raises(StoreError, match="closed"):
        store.append(FakeHost().tick())
    second = open_store(path)
    assert [s.id for s in second.sessions()] == [session.id, session.id + 1]
    second.close()


# --- what append writes ------------------------------------------------------------------------


def test_append_writes_one_row_per_gpu_and_endpoint_as_given(tmp_path: Path) -> None:
    path = tmp_path / "history.db"
    host = FakeHost(n_gpus=3, n_endpoints=2, jitter=0.3)
    fill(path, host, 5)
    snap = host.history[-1]
    gpu_rows = rows(
        path,
        "SELECT uuid, gpu_index, name, status, util_pct, mem_used_bytes,"
        " mem_total_bytes, power_w, power_limit_w, energy_counter_mj,"
        " temperature_c, sm_clock_mhz, energy_method, engines, tokens_in_cum,"
        " tokens_out_cum, energy_j_cum, cost_usd_cum, busy_s_cum,"
        " busy_cost_usd_cum, usd_per_hour FROM gpu_ticks_v WHERE t = ?"
        " ORDER BY gpu_index",
        (snap.t_wall,),
    )
    assert gpu_rows == [
        (
            g.sample.uuid,
            g.sample.index,
            g.sample.name,
            "ok",
            g.sample.utilization_pct,
            g.sample.memory_used_bytes,
            g.sample.memory_total_bytes,
            g.sample.power_w,
            g.sample.power_limit_w,
            g.sample.energy_counter_mj,
            g.sample.temperature_c,
            g.sample.sm_clock_mhz,
            "counter",
            "srv0,srv1",
            g.totals.tokens_in,
            g.totals.tokens_out,
            g.totals.energy_j,
            g.totals.cost_usd,
            g.totals.busy_s,
            g.totals.busy_cost_usd,
            3.6,
        )
        for g in snap.gpus
    ]
    endpoint_rows = rows(
        path,
        "SELECT name, url, kind, status, error, model, prompt_tokens_raw,"
        " generation_tokens_raw, tokens_in_cum, tokens_out_cum, running,"
        " waiting, kv_cache_fraction, requests_finished_raw, ttft_p50_s,"
        " ttft_p95_s, itl_p50_s, gpus FROM endpoint_ticks_v WHERE t = ?"
        " ORDER BY name",
        (snap.t_wall,),
    )
    assert endpoint_rows == [
        (
            s.sample.name,
            s.sample.url,
            "vllm",
            "up",
            None,
            s.sample.model,
            s.sample.prompt_tokens_total,
            s.sample.generation_tokens_total,
            s.tokens_in_total,
            s.tokens_out_total,
            s.sample.running,
            s.sample.waiting,
            s.sample.kv_cache_fraction,
            s.sample.requests_finished_total,
            0.12,
            0.48,
            0.021,
            ",".join(s.gpus),
        )
        for s in snap.endpoints
    ]
    assert rows(path, "SELECT count(*) FROM gpu_ticks") == [(15,)]
    assert rows(path, "SELECT count(*) FROM endpoint_ticks") == [(10,)]
    # Repeated strings are stored once.
    assert rows(path, "SELECT count(*) FROM gpus") == [(3,)]
    assert rows(path, "SELECT count(*) FROM labels WHERE text LIKE 'GPU-%'") == [(1,)]


def test_a_host_without_gpus_keeps_its_endpoints(tmp_path: Path) -> None:
    path = tmp_path / "history.db"
    host = FakeHost(n_gpus=0, n_endpoints=2)
    sid = fill(path, host, 5)
    assert rows(path, "SELECT count(*) FROM endpoint_ticks") == [(10,)]
    assert rows(path, "SELECT count(*) FROM gpu_ticks") == [(0,)]
    with Store.open_readonly(path) as store:
        assert store.gpus(sid) == []
        assert store.window_totals(sid, None, T0, T0 + 10) is None
        assert {p.watts for p in store.gpu_series(sid, None, T0, T0 + 10, 1)} == {None}


def test_rollups_equal_what_the_raw_rows_give(tmp_path: Path) -> None:
    path = tmp_path / "history.db"
    host = FakeHost(n_gpus=2, n_endpoints=2, jitter=0.5, seed=3)
    with open_store(path) as store:
        for k in range(200):  # a bit over three minutes; every 7th tick has no power reading
            assert store.append(host.tick(1.0, power=k % 7 != 0)) is None
    second = FakeHost(n_gpus=2, n_endpoints=2, jitter=0.5, seed=4)  # same GPUs, another session
    fill(path, second, 90)

    expected: dict[tuple, tuple] = {}
    for session, uuid, minute in rows(
        path, "SELECT DISTINCT session_id, uuid, CAST(t / 60 AS INTEGER) * 60 FROM gpu_ticks_v"
    ):
        raw = rows(
            path,
            "SELECT t, power_w, util_pct, tokens_in_cum, tokens_out_cum,"
            " energy_j_cum, cost_usd_cum, busy_s_cum, busy_cost_usd_cum"
            " FROM gpu_ticks_v WHERE session_id = ? AND uuid = ? AND t >= ?"
            " AND t < ? ORDER BY t",
            (session, uuid, minute, minute + 60),
        )
        # The row the minute's differences start from: the last one before it, else its first.
        base = rows(
            path,
            "SELECT t, tokens_in_cum, tokens_out_cum, energy_j_cum, cost_usd_cum"
            " FROM gpu_ticks_v WHERE session_id = ? AND uuid = ? AND t < ?"
            " ORDER BY t DESC LIMIT 1",
            (session, uuid, minute),
        )
        base = base or [raw[0][:1] + raw[0][3:7]]
        powers = [r[1] for r in raw if r[1] is not None]
        expected[(session, uuid, minute)] = (
            len(raw),
            pytest.approx(sum(powers) / len(powers)),
            max(powers),
            pytest.approx(sum(r[2] for r in raw) / len(raw)),
            raw[-1][0],
            *raw[-1][3:],
            *(pytest.approx(last - first) for last, first in zip(raw[-1][3:7], base[0][1:], strict=True)),
            pytest.approx(raw[-1][0] - base[0][0]),
        )
    actual = {
        (r[0], r[1], r[2]): r[3:]
        for r in rows(
            path,
            "SELECT session_id, uuid, minute, samples, power_w_mean, power_w_max,"
            " util_pct_mean, t_last, tokens_in_cum, tokens_out_cum, energy_j_cum,"
            " cost_usd_cum, busy_s_cum, busy_cost_usd_cum, tokens_in_delta, tokens_out_delta,"
            " energy_j_delta, cost_usd_delta, covered_s FROM gpu_rollup_1m_v",
        )
    }
    assert len(expected) == 2 * 4 + 2 * 2  # GPUs x minutes, for each session
    assert actual == expected

    endpoint_expected = {}
    for session, name, minute in rows(
        path, "SELECT DISTINCT session_id, name, CAST(t / 60 AS INTEGER) * 60 FROM endpoint_ticks_v"
    ):
        raw = rows(
            path,
            "SELECT t, running, waiting, kv_cache_fraction, tokens_in_cum,"
            " tokens_out_cum, status FROM endpoint_ticks_v WHERE session_id = ?"
            " AND name = ? AND t >= ? AND t < ? ORDER BY t",
            (session, name, minute, minute + 60),
        )
        endpoint_expected[(session, name, minute)] = (
            len(raw),
            sum(r[6] == "up" for r in raw),
            pytest.approx(sum(r[1] for r in raw) / len(raw)),
            pytest.approx(sum(r[2] for r in raw) / len(raw)),
            pytest.approx(sum(r[3] for r in raw) / len(raw)),
            max(r[3] for r in raw),
            raw[-1][0],
            raw[-1][4],
            raw[-1][5],
        )
    endpoint_actual = {
        (r[0], r[1], r[2]): r[3:]
        for r in rows(
            path,
            "SELECT session_id, name, minute, samples, up_samples, running_mean, waiting_mean,"
            " kv_cache_fraction_mean, kv_cache_fraction_max, t_last, tokens_in_cum,"
            " tokens_out_cum FROM endpoint_rollup_1m_v",
        )
    }
    assert endpoint_actual == endpoint_expected


def test_writing_the_same_tick_twice_changes_nothing(tmp_path: Path) -> None:
    path = tmp_path / "history.db"
    host = FakeHost()
    with open_store(path) as store:
        snap = host.tick()
        store.append(snap)
        store.append(snap)  # e.g. a retry after an interrupted commit
    assert rows(path, "SELECT count(*), sum(samples) FROM gpu_rollup_1m") == [(2, 2)]
    assert rows(path, "SELECT count(*) FROM gpu_ticks") == [(2,)]


# --- queries ----------------------------------------------------------------------------------


def test_window_totals_are_differences_of_the_nearest_rows(tmp_path: Path) -> None:
    path = tmp_path / "history.db"
    host = FakeHost(n_gpus=2, power_w=500, tok_s_in=1000, tok_s_out=100, usd_per_hour=3.6)
    with open_store(path) as store:
        for _ in range(300):
            store.append(host.tick())
        sid = store.session_id
        assert sid is not None
        # 100 s inside the session, bounds between ticks: the rows at T0+100 and T0+200.
        window = store.window_totals(sid, host.uuid(1), T0 + 100.5, T0 + 200.5)
        assert window is not None
        assert window.span_s == pytest.approx(100)
        assert window.energy_j == pytest.approx(500 * 100)
        assert window.tokens_out == pytest.approx(100 * 100)
        assert window.tokens_in == pytest.approx(1000 * 100)
        assert window.cost_usd == pytest.approx(0.1)
        assert window.busy_s == pytest.approx(100)
        assert window.usd_per_mtok == pytest.approx(10.0)  # $3.6/h at 100 tok/s
        # The whole host: sums over both GPUs.
        host_window = store.window_totals(sid, None, T0 + 100.5, T0 + 200.5)
        assert host_window is not None
        assert host_window.watts == pytest.approx(1000)
        assert host_window.tok_s_out == pytest.approx(200)
        # From before the session started: counted from its first row.
        early = store.window_totals(sid, None, T0 - 1000, T0 + 11)
        assert early is not None and early.span_s == pytest.approx(10)
        # Nothing in the window, or an unknown GPU.
        assert store.window_totals(sid, None, T0 + 5000, T0 + 6000) is None
        assert store.window_totals(sid, "GPU-nope", T0, T0 + 100) is None


def test_window_totals_without_a_price_say_so(tmp_path: Path) -> None:
    path = tmp_path / "history.db"
    sid = fill(path, FakeHost(usd_per_hour=None), 30)
    with Store.open_readonly(path) as store:
        window = store.window_totals(sid, None, T0, T0 + 30)
        assert window is not None and window.cost_usd is None and window.usd_per_mtok is None
        assert window.energy_j == pytest.approx(2 * 500 * 29)


def expected_series(host: FakeHost, since: float, until: float, step: float, per_minute: bool) -> list[tuple]:
    """The chart computed in Python from the snapshots: per bucket, what all GPUs delivered
    over the seconds it covers. Ticks fall in buckets by their time (raw rows) or by the start
    of their minute (rollups)."""
    buckets: list[dict[int, list[float]]] = [{} for _ in range(math.ceil((until - since) / step))]
    for before, now in itertools.pairwise(host.history):
        key = now.t_wall // 60 * 60 if per_minute else now.t_wall
        if not since <= key < until:
            continue
        for i, (a, b) in enumerate(zip(before.gpus, now.gpus, strict=True)):
            acc = buckets[int((key - since) // step)].setdefault(i, [0.0] * 5)
            for k, d in enumerate(
                (
                    b.totals.tokens_in - a.totals.tokens_in,
                    b.totals.tokens_out - a.totals.tokens_out,
                    b.totals.energy_j - a.totals.energy_j,
                    b.totals.cost_usd - a.totals.cost_usd,
                    now.t_wall - before.t_wall,
                )
            ):
                acc[k] += d
    out = []
    for b, per_gpu in enumerate(buckets):
        if not per_gpu:
            out.append((since + b * step, None, None, None, None))
            continue
        span = max(v[4] for v in per_gpu.values())
        tin, tout, energy, cost = (sum(v[k] for v in per_gpu.values()) for k in range(4))
        out.append(
            (
                since + b * step,
                pytest.approx(tin / span),
                pytest.approx(tout / span),
                pytest.approx(energy / span),
                pytest.approx(cost / tout * 1e6),
            )
        )
    return out


def as_tuples(points: list[SeriesPoint]) -> list[tuple]:
    return [(p.t, p.tok_s_in, p.tok_s_out, p.watts, p.usd_per_mtok) for p in points]


def test_gpu_series_short_window_reads_raw_rows(tmp_path: Path) -> None:
    path = tmp_path / "history.db"
    host = FakeHost(n_gpus=3, jitter=0.6, seed=9)
    sid = fill(path, host, 700)
    with Store.open_readonly(path) as store:
        since, until = T0 + 100.5, T0 + 700.5
        points = store.gpu_series(sid, None, since, until, 10)
        assert as_tuples(points) == expected_series(host, since, until, 10, per_minute=False)
        assert len(points) == 60 and all(p.watts is not None for p in points)  # finer than 1 min
        one = store.gpu_series(sid, host.uuid(2), since, until, 60)
        assert one[3].watts == pytest.approx(
            (host.history[339].gpus[2].totals.energy_j - host.history[279].gpus[2].totals.energy_j) / 60
        )  # bucket [T0 + 280.5, T0 + 340.5): the ticks at T0 + 281 ... T0 + 340
        # Past the end of the data: buckets without rows are None, never zero.
        tail = store.gpu_series(sid, None, T0 + 690, T0 + 720, 10)
        assert tail[0].watts is not None and tail[-1] == SeriesPoint(T0 + 710, None, None, None, None)


def test_gpu_series_long_window_reads_only_rollups(tmp_path: Path) -> None:
    path = tmp_path / "history.db"
    host = FakeHost(n_gpus=2, jitter=0.6, seed=5)
    sid = fill(path, host, 3 * 720, dt=5.0)  # three hours at one tick per 5 s
    since, until = T0 + 610, T0 + 3 * 3600
    with Store.open_readonly(path) as store:
        before = store.gpu_series(sid, None, since, until, 300)
        one_gpu = store.gpu_series(sid, host.uuid(1), since, until, 300)
    execute(path, "DELETE FROM gpu_ticks")  # the long path must not need them
    with Store.open_readonly(path) as store:
        after = store.gpu_series(sid, None, since, until, 300)
        all_sessions = store.gpu_series(None, None, since, until, 300)
        assert store.gpu_series(sid, host.uuid(1), since, until, 300) == one_gpu
        # Steps below a minute rise to a whole number of minutes.
        assert len(store.gpu_series(sid, None, since, until, 45)) == math.ceil((until - since) / 60)
    assert after == before == all_sessions
    assert as_tuples(after) == expected_series(host, since, until, 300, per_minute=True)
    assert sum(p.watts or 0 for p in one_gpu) == pytest.approx(sum(p.watts or 0 for p in after) / 2, rel=0.05)


def test_gpu_series_has_known_figures_at_constant_rates(tmp_path: Path) -> None:
    path = tmp_path / "history.db"
    host = FakeHost(n_gpus=2, power_w=400, tok_s_out=50, usd_per_hour=1.8)
    sid = fill(path, host, 2 * 720, dt=5.0)
    with Store.open_readonly(path) as store:
        for since, until, step in ((T0 + 600, T0 + 7200, 300), (T0 + 600, T0 + 1200, 30)):
            points = store.gpu_series(sid, None, since, until, step)
            assert [p.watts for p in points] == [pytest.approx(800)] * len(points)
            assert [p.tok_s_out for p in points] == [pytest.approx(100)] * len(points)
            assert [p.usd_per_mtok for p in points] == [pytest.approx(10.0)] * len(points)


def test_gpu_series_counts_a_gpu_watched_by_two_sessions_once(tmp_path: Path) -> None:
    path = tmp_path / "history.db"
    a, b = FakeHost(power_w=300), FakeHost(power_w=300)
    with open_store(path) as first, open_store(path) as second:
        for _ in range(400):
            first.append(a.tick())
            second.append(b.tick())
        points = first.gpu_series(None, None, T0 + 60, T0 + 360, 60)
    assert [p.watts for p in points] == [pytest.approx(600)] * 5


def test_gpus_lists_a_sessions_gpus(tmp_path: Path) -> None:
    path = tmp_path / "history.db"
    host = FakeHost(n_gpus=3)
    sid = fill(path, host, 3)
    with Store.open_readonly(path) as store:
        assert [(g.uuid, g.index, g.name) for g in store.gpus(sid)] == [
            (host.uuid(i), i, "NVIDIA H200") for i in range(3)
        ]
        assert store.gpus(sid + 1) == []


# --- retention --------------------------------------------------------------------------------


def test_retention_deletes_old_raw_rows_then_old_rollups_and_empty_sessions(tmp_path: Path) -> None:
    path = tmp_path / "history.db"
    start = float(int(time.time() // 60) * 60)
    old = FakeHost(t=start)
    fill(path, old, 30)  # an earlier session, ended now
    host = FakeHost(t=start)
    options = {"raw_retention_h": 120 / 3600, "rollup_retention_d": 600 / 86400}
    with open_store(path, **options) as store:
        for _ in range(300):
            store.append(host.tick())
        now = host.t
        raw_oldest = rows(path, "SELECT min(t) FROM gpu_ticks WHERE session_id = ?", (store.session_id,))[0][0]
        # Retention runs once a minute: nothing older than 120 s + one minute is left.
        assert now - 180 <= raw_oldest <= now - 120
        assert (
            rows(path, "SELECT min(t) FROM endpoint_ticks WHERE session_id = ?", (store.session_id,))[0][0]
            == raw_oldest
        )
        assert rows(path, "SELECT min(minute) FROM gpu_rollup_1m WHERE session_id = ?", (store.session_id,)) == [
            (start,)
        ]  # rollups outlive raw rows
        # The window totals of a time whose raw rows are gone come from the rollups.
        window = store.window_totals(store.session_id, host.uuid(0), start + 60, start + 120)
        assert window is not None and window.energy_j == pytest.approx(500 * 60)

        for _ in range(1000):
            host.tick(1.0)  # skip time: the host keeps counting while we do not append
        store.append(host.tick())
        assert rows(path, "SELECT min(minute) FROM gpu_rollup_1m") == [(start + 1260,)]
        assert rows(path, "SELECT count(*) FROM gpu_ticks WHERE t < ?", (host.t - 120,)) == [(0,)]
        sessions = [s.id for s in store.sessions()]
        assert sessions == [store.session_id]  # the old, now empty session is gone


def test_an_interrupt_in_the_middle_of_a_retention_pass_leaves_no_transaction_open(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A signal's exception (Ctrl-C's KeyboardInterrupt, a handler's SystemExit) raised in the
    pass: the pass is rolled back, so the session still closes with its end and every tick."""
    path = tmp_path / "history.db"
    host = FakeHost(n_gpus=2, n_endpoints=1)
    next_session = retention._next_session

    def interrupted(conn: sqlite3.Connection, table: str, after: int) -> int | None:
        if table == "endpoint_ticks":  # the pass has deleted from gpu_ticks by now
            raise KeyboardInterrupt
        return next_session(conn, table, after)

    store = open_store(path)
    for _ in range(60):
        assert store.append(host.tick()) is None
    monkeypatch.setattr(retention, "_next_session", interrupted)
    with pytest.raises(KeyboardInterrupt):
        for _ in range(10):  # the first pass comes a minute after the first tick
            store.append(host.tick())
    monkeypatch.undo()
    assert store.close() is None
    [(ended_at, ticks)] = rows(path, "SELECT ended_at, (SELECT count(DISTINCT t) FROM gpu_ticks) FROM sessions")
    assert ended_at is not None and ticks == store.ticks_written > 60 and store.ticks_lost == 0


# --- failures ---------------------------------------------------------------------------------


def test_locked_database_keeps_ticks_in_memory_and_writes_them_later(tmp_path: Path) -> None:
    path = tmp_path / "history.db"
    host = FakeHost(n_gpus=2, n_endpoints=1)
    with open_store(path, busy_timeout_s=0.05) as store:
        assert store.append(host.tick()) is None
        blocker = sqlite3.connect(path, isolation_level=None)
        blocker.execute("BEGIN IMMEDIATE")  # another writer holds the write lock
        first = store.append(host.tick())
        second = store.append(host.tick())
        assert first is not None and second is not None
        assert "locked by another process" in first and "(1 tick so far, waiting in memory" in first
        assert second == first and "\n" not in second and str(path) in second  # said once, not every tick
        assert rows(path, "SELECT count(*) FROM gpu_ticks") == [(2,)]
        blocker.execute("COMMIT")
        blocker.close()
        assert store.append(host.tick()) is None
    assert rows(path, "SELECT count(*), count(DISTINCT t) FROM gpu_ticks") == [(8, 4)]
    assert rows(path, "SELECT count(*) FROM endpoint_ticks") == [(4,)]
    assert rows(path, "SELECT sum(samples) FROM gpu_rollup_1m") == [(8,)]


def test_queue_is_bounded_and_says_what_it_dropped(tmp_path: Path) -> None:
    path = tmp_path / "history.db"
    host = FakeHost()
    with open_store(path, busy_timeout_s=0.02, queue_ticks=2) as store:
        blocker = sqlite3.connect(path, isolation_level=None)
        blocker.execute("BEGIN IMMEDIATE")
        messages = [store.append(host.tick()) for _ in range(4)]
        assert messages[-1] is not None and "memory holds the latest 2, 1 older lost" in messages[-1]
        assert messages[-1] == messages[-2] != messages[-3]  # said when dropping began, not every tick
        assert (store.ticks_written, store.ticks_lost) == (0, 2)
        blocker.execute("ROLLBACK")
        blocker.close()
        assert store.append(host.tick()) is None
        assert (store.ticks_written, store.ticks_lost) == (3, 2)
    kept = [s.t_wall for s in host.history[2:]]
    assert [t for (t,) in rows(path, "SELECT DISTINCT t FROM gpu_ticks ORDER BY t")] == kept


def test_full_disk_keeps_ticks_in_memory_and_writes_them_later(
    tmp_path: Path, connections: list[sqlite3.Connection]
) -> None:
    path = tmp_path / "history.db"
    host = FakeHost(n_gpus=8, n_endpoints=4)
    with open_store(path) as store:
        [own] = connections
        store.append(host.tick())
        # SQLite's own limit on the file size fails exactly like a full disk (SQLITE_FULL).
        pages = own.execute("PRAGMA page_count").fetchone()[0]
        own.execute(f"PRAGMA max_page_count = {pages}")
        messages = [store.append(host.tick()) for _ in range(40)]
        failed = [m for m in messages if m is not None]
        assert failed and "disk is full" in failed[0] and "waiting in memory" in failed[0]
        own.execute("PRAGMA max_page_count = 1073741823")
        assert store.append(host.tick()) is None
    assert rows(path, "SELECT count(DISTINCT t), count(*) FROM gpu_ticks") == [(42, 42 * 8)]
    assert rows(path, "PRAGMA integrity_check") == [("ok",)]


def test_close_on_a_locked_database_reports_instead_of_raising(tmp_path: Path) -> None:
    path = tmp_path / "history.db"
    host = FakeHost()
    store = open_store(path, busy_timeout_s=0.02)
    store.append(host.tick())
    blocker = sqlite3.connect(path, isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")
    assert store.append(host.tick()) is not None
    message = store.close()
    blocker.execute("ROLLBACK")
    blocker.close()
    assert message is not None and "locked" in message and "1 tick of this session not written" in message
    assert (store.ticks_written, store.ticks_lost) == (1, 1)
    assert store.close() is None


def test_a_snapshot_with_an_unstorable_value_is_skipped_alone(tmp_path: Path) -> None:
    path = tmp_path / "history.db"
    host = FakeHost()
    with open_store(path) as store:
        assert store.append(host.tick()) is None
        good = host.tick()
        bad_sample = dataclasses.replace(good.gpus[0].sample, utilization_pct=complex(1, 2))
        bad = dataclasses.replace(good, gpus=(dataclasses.replace(good.gpus[0], sample=bad_sample),))
        with pytest.raises(StoreError, match=f"tick {bad.seq} skipped, a value cannot be stored"):
            store.append(bad)
        assert store.append(host.tick()) is None
    assert rows(path, "SELECT count(DISTINCT t) FROM gpu_ticks") == [(2,)]


def with_gpu_sample(snapshot: Snapshot, **changes: object) -> Snapshot:
    """The snapshot with its first GPU's sample changed."""
    first = snapshot.gpus[0]
    sample = dataclasses.replace(first.sample, **changes)
    return dataclasses.replace(snapshot, gpus=(dataclasses.replace(first, sample=sample), *snapshot.gpus[1:]))


def test_an_integer_past_64_bits_skips_its_tick_alone(tmp_path: Path) -> None:
    path = tmp_path / "history.db"
    host = FakeHost()
    with open_store(path) as store:
        assert store.append(host.tick()) is None
        bad = with_gpu_sample(host.tick(), energy_counter_mj=2**64 - 1)  # a driver's garbage counter
        with pytest.raises(StoreError, match=f"tick {bad.seq} skipped, a value cannot be stored .*too large"):
            store.append(bad)
        for _ in range(3):
            assert store.append(host.tick()) is None
        assert (store.ticks_written, store.ticks_lost) == (4, 1)
    assert rows(path, "SELECT count(DISTINCT t) FROM gpu_ticks") == [(4,)]


def queued_behind_a_lock(path: Path, first: Snapshot, *snapshots: Snapshot) -> Store:
    """A store with ``first`` written, then ``snapshots`` queued while another writer held the
    file's write lock, which is free again."""
    store = open_store(path, busy_timeout_s=0.02)
    assert store.append(first) is None
    blocker = sqlite3.connect(path, isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")
    for snapshot in snapshots:
        assert store.append(snapshot) is not None  # queued: the file is locked
    blocker.execute("ROLLBACK")
    blocker.close()
    return store


def test_an_unstorable_tick_queued_behind_a_lock_does_not_hold_up_the_ones_after_it(tmp_path: Path) -> None:
    path = tmp_path / "history.db"
    host = FakeHost()
    first = host.tick()
    bad = with_gpu_sample(host.tick(), energy_counter_mj=2**64 - 1)
    store = queued_behind_a_lock(path, first, bad, host.tick())
    after = host.tick()
    with pytest.raises(StoreError, match=f"tick {bad.seq} skipped") as info:
        store.append(after)  # the bad tick is left out; the one queued after it and this one go in
    assert f"tick {after.seq}" not in str(info.value)
    for _ in range(3):
        assert store.append(host.tick()) is None
    assert store.close() is None
    assert (store.ticks_written, store.ticks_lost) == (6, 1)
    assert rows(path, "SELECT count(DISTINCT t) FROM gpu_ticks") == [(6,)]
    assert rows(path, "SELECT ended_at IS NOT NULL FROM sessions") == [(1,)]


def test_unstorable_ticks_among_good_ones_are_left_out_in_one_line_and_the_good_ones_written(
    tmp_path: Path,
) -> None:
    path = tmp_path / "history.db"
    host = FakeHost()
    first = host.tick()
    queued = [host.tick(), with_gpu_sample(host.tick(), energy_counter_mj=2**64 - 1), host.tick()]
    queued += [with_gpu_sample(host.tick(), memory_total_bytes=2**64), host.tick()]
    store = queued_behind_a_lock(path, first, *queued)
    with pytest.raises(StoreError) as info:
        store.append(host.tick())
    assert str(info.value) == (
        f"history {path}: 2 ticks (the first {queued[1].seq}) skipped, a value cannot be stored"
        " (Python int too large to convert to SQLite INTEGER)"
    )
    assert (store.ticks_written, store.ticks_lost) == (5, 2)
    assert store.close() is None
    times = [t for (t,) in rows(path, "SELECT DISTINCT t FROM gpu_ticks ORDER BY t")]
    assert len(times) == 5 and times == sorted(set(times))
    assert rows(path, "SELECT count(*) FROM gpu_ticks") == [(5 * len(queued[0].gpus),)]


def test_closing_with_an_unstorable_tick_queued_writes_the_others_and_says_which_was_left_out(
    tmp_path: Path,
) -> None:
    path = tmp_path / "history.db"
    host = FakeHost()
    first = host.tick()
    bad = with_gpu_sample(host.tick(), memory_total_bytes=2**64)
    store = queued_behind_a_lock(path, first, bad, host.tick())
    message = store.close()
    assert message is not None and f"tick {bad.seq} skipped, a value cannot be stored" in message
    assert (store.ticks_written, store.ticks_lost) == (2, 1)
    assert rows(path, "SELECT count(DISTINCT t) FROM gpu_ticks") == [(2,)]
    assert rows(path, "SELECT ended_at IS NOT NULL FROM sessions") == [(1,)]


def test_not_a_database_is_refused_and_left_alone(tmp_path: Path) -> None:
    path = tmp_path / "notes.txt"
    content = b"these are my notes, not a database\n" * 200
    path.write_bytes(content)
    with pytest.raises(StoreError) as info:
        open_store(path)
    assert str(info.value) == (f"history {path} is not a SQLite database; move it away or choose another db_path")
    with pytest.raises(StoreError, match="is not a SQLite database"):
        Store.open_readonly(path)
    assert path.read_bytes() == content


def test_another_programs_database_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "other.db"
    execute(path, "CREATE TABLE recipes (name TEXT)")
    with pytest.raises(StoreError, match="database of another program, not a tokentop history"):
        open_store(path)
    assert rows(path, "SELECT name FROM sqlite_master") == [("recipes",)]


def test_newer_schema_is_refused_with_versions(tmp_path: Path) -> None:
    path = tmp_path / "history.db"
    fill(path, FakeHost(), 1)
    execute(path, f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    for opener in (open_store, Store.open_readonly):
        with pytest.raises(
            StoreError, match=f"newer tokentop .*schema {SCHEMA_VERSION + 1}; this version reads up to {SCHEMA_VERSION}"
        ):
            opener(path)
    assert len(rows(path, "SELECT * FROM sessions")) == 1


# --- schema versions ---------------------------------------------------------------------------

V1_SQL = Path(__file__).parent / "fixtures" / "history_v1.sql"  # a file the schema-1 code wrote
V1_SESSION = 1
RENAMED_IN_V2 = {
    "servers": "endpoints",
    "server_ticks": "endpoint_ticks",
    "server_rollup_1m": "endpoint_rollup_1m",
    "server_ticks_v": "endpoint_ticks_v",
    "server_rollup_1m_v": "endpoint_rollup_1m_v",
}


ADDED_IN_V3 = ("session_endpoints", "session_endpoints_v")
ADDED_IN_V5 = ("gpu_states", "endpoint_states")


def write_version_1(path: Path) -> None:
    """The fixture's history as the schema-1 code left it (in WAL mode, as it kept its files)."""
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.executescript(V1_SQL.read_text())
        conn.execute("PRAGMA journal_mode = WAL")
    finally:
        conn.close()


def contents(path: Path) -> dict[str, list[tuple]]:
    """Every row of every table and view, under its schema-2 name."""
    db = sqlite_utils.Database(path)
    try:
        names = db.table_names() + db.view_names()
    finally:
        db.close()
    return {RENAMED_IN_V2.get(name, name): sorted(rows(path, f"SELECT * FROM {name}"), key=repr) for name in names}


def shape(path: Path) -> dict[str, object]:
    """Tables (columns, primary keys, foreign keys, WITHOUT ROWID) and views (columns)."""
    db = sqlite_utils.Database(path)
    try:
        found: dict[str, object] = {}
        for name in db.table_names():
            table = db.table(name)
            columns = [(c.name, c.type, c.notnull, c.is_pk) for c in table.columns]
            keys = sorted((k.column, k.other_table, k.other_column) for k in table.foreign_keys)
            found[name] = (columns, keys, "WITHOUT ROWID" in table.schema.upper())
        for name in db.view_names():
            found[name] = [c.name for c in db.view(name).columns]
        return found
    finally:
        db.close()


def summary_reads(store: Store) -> list[object]:
    """Everything ``tokentop summary`` asks of a history, over the fixture's session."""
    sid = V1_SESSION
    bounds = store.session_bounds(sid)
    assert bounds is not None
    start, end = bounds
    [endpoint] = store.endpoint_tracks(sid, start, end, 10)
    return [
        store.sessions()[0],
        bounds,
        store.gpus(sid),
        store.raw_rows_cover(sid, start),
        store.window_totals(sid, None, start, end),
        [store.window_totals(sid, g.uuid, start, end) for g in store.gpus(sid)],
        store.gpu_series(sid, None, start, end, 10),
        store.gpu_tracks(sid, start, end, 10),
        store.gpu_minutes(sid, start, end),
        store.gpu_energy_methods(sid, gpu_uuid(0), start, end),
        endpoint,
        store.endpoint_rows(sid, endpoint.name, endpoint.url, start, end),
    ]


def test_a_version_1_file_is_read_as_it_is(tmp_path: Path) -> None:
    path = tmp_path / "history.db"
    write_version_1(path)
    before = path.read_bytes()
    with Store.open_readonly(path) as store:
        bounds = store.session_bounds(V1_SESSION)
        assert bounds == (T0 + 5, T0 + 120)
        window = store.window_totals(V1_SESSION, None, *bounds)
        [endpoint] = store.endpoint_tracks(V1_SESSION, *bounds, 10)
    assert path.read_bytes() == before and rows(path, "PRAGMA user_version") == [(1,)]
    # The figures are those of the rows: last minus first, summed over the GPUs.
    [(first, last)] = rows(path, "SELECT min(t), max(t) FROM gpu_ticks")
    [(tokens_out, energy_j)] = rows(
        path,
        "SELECT sum(b.tokens_out_cum - a.tokens_out_cum), sum(b.energy_j_cum - a.energy_j_cum)"
        " FROM gpu_ticks a JOIN gpu_ticks b ON a.gpu_id = b.gpu_id AND a.t = ? AND b.t = ?",
        (first, last),
    )
    assert window is not None and window.span_s == last - first
    assert (window.tokens_out, window.energy_j) == (pytest.approx(tokens_out), pytest.approx(energy_j))
    assert (endpoint.name, endpoint.kind, len(endpoint.t)) == ("srv0", "vllm", 13)  # 5, 15 ... 115, 120


def test_a_version_1_file_migrates_to_the_current_version_without_losing_rows_or_figures(tmp_path: Path) -> None:
    path = tmp_path / "history.db"
    write_version_1(path)
    old_contents = contents(path)
    with Store.open_readonly(path) as store:
        old_reads = summary_reads(store)
    old_summary = report.to_json_dict(report.summarize(path, V1_SESSION))

    with open_store(path) as store:  # opening to write migrates, then starts a session
        assert store.session_id == V1_SESSION + 1
    assert rows(path, "PRAGMA user_version") == [(SCHEMA_VERSION,)] == [(5,)]
    new_contents = contents(path)
    # Version 5 keeps what repeats tick after tick in states and power in milliwatts: the raw
    # rows changed shape, not in number, and the views (compared below) read every value as
    # it was.
    for raw in ("gpu_ticks", "endpoint_ticks"):
        assert len(new_contents.pop(raw)) == len(old_contents.pop(raw))
    assert [len(new_contents.pop(name)) for name in ADDED_IN_V5] == [2, 1]  # each GPU's index, one endpoint
    # Version 4 added which command recorded a session (not known for older ones: NULL) and
    # whether its host was simulated (from their settings: not the fixture's).
    sessions = new_contents.pop("sessions")
    assert [row[6:] for row in sessions] == [(None, 0), ("record", 0)]
    assert [row[:6] for row in sessions[:-1]] == old_contents.pop("sessions")
    assert new_contents.pop("sqlite_sequence") == [("sessions", V1_SESSION + 1)]
    old_contents.pop("sqlite_sequence")
    # Version 3 added the session totals: none for the sessions written before.
    gpus = len(old_contents["session_gpus"])
    assert [row[3:] for row in new_contents["session_gpus"]] == [(None,) * 17] * gpus
    assert [row[4:] for row in new_contents.pop("session_gpus_v")] == [(None,) * 10] * gpus
    new_contents["session_gpus"] = [row[:3] for row in new_contents["session_gpus"]]
    assert [new_contents.pop(name) for name in ADDED_IN_V3] == [[], []]
    assert new_contents == old_contents  # every row of every table and view, renamed
    with Store.open_readonly(path) as store:
        assert summary_reads(store) == old_reads
    assert report.to_json_dict(report.summarize(path, V1_SESSION)) == old_summary


def test_an_older_demo_session_reads_as_simulated_before_and_after_migrating(tmp_path: Path) -> None:
    """Issue 10, item 2: schema 4 says which command recorded a session and whether its host was
    simulated. A file from before says neither; its sessions' settings still say ``demo``."""
    path = tmp_path / "history.db"
    write_version_1(path)
    execute(path, """UPDATE sessions SET config_json = '{"demo": true, "interval_s": 1.0}'""")
    with Store.open_readonly(path) as store:
        [old] = store.sessions()
    assert (old.origin, old.simulated) == (None, True)
    demo_summary = report.to_json_dict(report.summarize(path, V1_SESSION))["session"]
    assert (demo_summary["origin"], demo_summary["simulated"]) == (None, True)
    with Store.open(path, host="h", version="v", config={}, origin="live", simulated=False):
        pass
    with Store.open_readonly(path) as store:
        assert [(s.origin, s.simulated) for s in store.sessions()] == [(None, True), ("live", False)]
    assert rows(path, "SELECT origin, simulated FROM sessions") == [(None, 1), ("live", 0)]
    with pytest.raises(ValueError, match="origin must be one of live, record, export, snapshot"):
        Store.open(path, host="h", version="v", config={}, origin="demo")


def test_a_migrated_file_has_the_shape_of_a_new_one(tmp_path: Path) -> None:
    migrated, new = tmp_path / "migrated.db", tmp_path / "new.db"
    write_version_1(migrated)
    open_store(migrated).close()
    open_store(new).close()
    assert shape(migrated) == shape(new)
    assert [name for name in shape(new) if "server" in name] == []


def test_a_migration_that_fails_changes_nothing(tmp_path: Path) -> None:
    path = tmp_path / "history.db"
    write_version_1(path)
    execute(path, "CREATE TABLE endpoints (note TEXT)")  # the new name is taken: the rename fails
    schema_before = rows(path, "SELECT type, name, sql FROM sqlite_master ORDER BY name")
    with pytest.raises(StoreError, match="endpoints") as info:
        open_store(path)
    assert "\n" not in str(info.value)
    assert rows(path, "PRAGMA user_version") == [(1,)]
    assert rows(path, "SELECT type, name, sql FROM sqlite_master ORDER BY name") == schema_before
    assert rows(path, "SELECT count(*) FROM sessions") == [(1,)]
    with Store.open_readonly(path) as store:  # still readable as version 1
        assert store.session_bounds(V1_SESSION) == (T0 + 5, T0 + 120)


@pytest.mark.parametrize("case", ["parent is a file", "system folder", "path is a folder"])
def test_unwritable_paths_give_one_clear_line(tmp_path: Path, case: str) -> None:
    if case == "parent is a file":
        (tmp_path / "plain").write_text("x")
        path = tmp_path / "plain" / "sub" / "history.db"
        expected = f"cannot create the history folder {path.parent}: Not a directory"
    elif case == "system folder":  # sysfs refuses new files, even to root
        path = Path("/sys/tokentop-test-history.db")
        expected = f"cannot write the history file {path}: Permission denied"
    else:
        path, expected = tmp_path, f"history {tmp_path} is a folder, not a file"
    with pytest.raises(StoreError) as info:
        open_store(path)
    assert str(info.value) == expected


def test_read_only_file_gives_a_clear_error_and_stays_as_it_was(tmp_path: Path) -> None:
    folder = Path(tempfile.mkdtemp(prefix="tokentop-test-"))
    try:
        path = folder / "history.db"
        fill(path, FakeHost(), 3)
        content = path.read_bytes()
        path.chmod(0o444)
        folder.chmod(0o555)
        message = open_as_unprivileged_user(path)
        assert message == f"cannot write the history file {path}: Permission denied"
        assert path.read_bytes() == content
    finally:
        folder.chmod(0o700)
        for child in folder.iterdir():
            child.unlink()
        folder.rmdir()


def open_as_unprivileged_user(path: Path) -> str:
    """``Store.open(path)``'s error message, as ``nobody`` when we run as root (root ignores
    file permissions). Forked, not exec'd: root's interpreter may not be readable by nobody."""
    if os.geteuid() != 0:
        with pytest.raises(StoreError) as info:
            open_store(path)
        return str(info.value)
    read_end, write_end = os.pipe()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # fork with threads (3.12+)
        pid = os.fork()
    if pid == 0:  # pragma: no cover - runs in the child
        try:
            os.setgid(65534)
            os.setuid(65534)
            try:
                open_store(path).close()
                os.write(write_end, b"opened")
            except StoreError as exc:
                os.write(write_end, str(exc).encode())
        finally:
            os._exit(0)
    os.close(write_end)
    os.waitpid(pid, 0)
    with os.fdopen(read_end, "rb") as reader:
        return reader.read().decode()


def test_open_readonly_creates_nothing(tmp_path: Path) -> None:
    path = tmp_path / "history.db"
    with pytest.raises(StoreError, match="no history at"):
        Store.open_readonly(path)
    assert not path.exists()
    host = FakeHost()
    with open_store(path) as writer:
        writer.append(host.tick())
        with Store.open_readonly(path) as reader:  # while the writer is running
            assert reader.latest_session_id() == writer.session_id
            with pytest.raises(StoreError, match="read-only"):
                reader.append(host.tick())
            writer.append(host.tick())
            assert len(reader.gpus(writer.session_id or 0)) == 2
    with Store.open_readonly(path) as reader:
        assert len(reader.sessions()) == 1


def test_no_secret_reaches_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    token = "tt-Bearer-9f8e7d6c5b4a39281706f5e4d3c2b1a0"
    monkeypatch.setenv("TOKENTOP_TEST_TOKEN", token)
    endpoint = EndpointConfig(
        url="http://127.0.0.1:8000/metrics?model=m1", name="srv0", token_env="TOKENTOP_TEST_TOKEN"
    )
    assert endpoint.bearer_token() == token
    config = Config(endpoints=(endpoint,))
    path = tmp_path / "history.db"
    host = FakeHost()
    with Store.open(path, host="h", version="0.1.0", config=config.public_dict()) as store:
        for _ in range(3):
            store.append(host.tick())
        on_disk = b"".join(p.read_bytes() for p in tmp_path.iterdir())
        assert token.encode() not in on_disk
    on_disk = path.read_bytes()
    assert token.encode() not in on_disk
    assert b"http://127.0.0.1:8000/metrics?model=m1" in on_disk  # the URL as given
    assert b"TOKENTOP_TEST_TOKEN" in on_disk  # only the variable's name


# --- real processes ---------------------------------------------------------------------------


def start_writer(path: Path, ticks: int, seed: int) -> subprocess.Popen[str]:
    """Another tokentop-like process appending to ``path`` (``ticks=0``: until stopped). It
    opens the file once it reads a line on stdin, so that several can start together."""
    return subprocess.Popen(
        [sys.executable, str(THIS_FILE), "writer", str(path), str(ticks), str(seed)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def go(*writers: subprocess.Popen[str]) -> None:
    for writer in writers:
        assert writer.stdin is not None
        writer.stdin.write("go\n")
        writer.stdin.flush()


def check_consistent(path: Path) -> dict[int, int]:
    """integrity_check, whole ticks only, rollups matching raw rows; ticks per session."""
    assert rows(path, "PRAGMA integrity_check") == [("ok",)]
    ticks = {}
    for session_id, n_rows, n_ticks in rows(
        path, "SELECT session_id, count(*), count(DISTINCT t) FROM gpu_ticks GROUP BY session_id"
    ):
        assert n_rows == 4 * n_ticks  # four GPUs each tick: no tick half written
        ticks[session_id] = n_ticks
    assert rows(path, "SELECT session_id, count(*) / 2 FROM endpoint_ticks GROUP BY session_id") == sorted(
        ticks.items()
    )
    assert rows(path, "SELECT session_id, gpu_id, count(*) FROM gpu_ticks GROUP BY session_id, gpu_id") == rows(
        path, "SELECT session_id, gpu_id, sum(samples) FROM gpu_rollup_1m GROUP BY session_id, gpu_id"
    )
    return ticks


def test_two_processes_write_one_file_without_harm(tmp_path: Path) -> None:
    path = tmp_path / "history.db"
    writers = [start_writer(path, 1500, seed) for seed in (1, 2)]
    go(*writers)  # both create the schema and append at the same time
    spans = []
    for writer in writers:
        out, err = writer.communicate(timeout=60)
        assert writer.returncode == 0, err
        last = out.splitlines()[-1].split()
        assert last[:2] == ["done", "1500"]
        spans.append((float(last[2]), float(last[3])))
    (a_start, a_end), (b_start, b_end) = spans
    assert a_start < b_end and b_start < a_end, "the two writers did not overlap"
    assert list(check_consistent(path).values()) == [1500, 1500]
    assert rows(path, "SELECT count(*) FROM sessions WHERE ended_at IS NOT NULL") == [(2,)]


def test_processes_opening_a_new_file_together_all_get_a_session(tmp_path: Path) -> None:
    path = tmp_path / "history.db"
    writers = [start_writer(path, 20, seed) for seed in range(4)]
    go(*writers)  # all race to create the schema
    for writer in writers:
        _, err = writer.communicate(timeout=60)
        assert writer.returncode == 0, err
    assert list(check_consistent(path).values()) == [20] * 4


def test_processes_opening_a_version_1_file_together_migrate_it_once(tmp_path: Path) -> None:
    path = tmp_path / "history.db"
    write_version_1(path)
    v1_rows = rows(path, "SELECT count(*) FROM gpu_ticks"), rows(path, "SELECT count(*) FROM server_ticks")
    writers = [start_writer(path, 20, seed) for seed in range(3)]
    go(*writers)  # all race to migrate
    for writer in writers:
        _, err = writer.communicate(timeout=60)
        assert writer.returncode == 0, err
    assert rows(path, "PRAGMA user_version") == [(SCHEMA_VERSION,)]
    assert (
        rows(path, "SELECT count(*) FROM gpu_ticks WHERE session_id = ?", (V1_SESSION,)),
        rows(path, "SELECT count(*) FROM endpoint_ticks WHERE session_id = ?", (V1_SESSION,)),
    ) == v1_rows
    assert (
        rows(path, "SELECT count(DISTINCT t) FROM gpu_ticks WHERE session_id > ? GROUP BY session_id", (V1_SESSION,))
        == [(20,)] * 3
    )


@pytest.mark.parametrize(
    "signum", [signal.SIGINT, signal.SIGTERM, signal.SIGKILL], ids=["SIGINT", "SIGTERM", "SIGKILL"]
)
def test_killed_writer_keeps_what_it_committed(tmp_path: Path, signum: int) -> None:
    path = tmp_path / "history.db"
    seed = random.randrange(1_000_000)
    chooser = random.Random(seed)
    writer = start_writer(path, 0, seed)
    go(writer)
    assert writer.stdout is not None
    stop_after = chooser.randint(20, 120)
    acknowledged = 0
    for line in writer.stdout:
        acknowledged = int(line.split()[1])  # this tick's append had returned
        if acknowledged >= stop_after:
            break
    time.sleep(chooser.random() * 0.02)  # land anywhere in the loop, mid-write likely
    writer.send_signal(signum)
    writer.communicate(timeout=30)
    [committed] = check_consistent(path).values()
    assert committed >= acknowledged > 0, f"seed {seed}"
    [(ended_at,)] = rows(path, "SELECT ended_at FROM sessions")
    assert (ended_at is None) == (signum == signal.SIGKILL), f"seed {seed}"
    with open_store(path) as store:  # the file opens and takes new sessions afterwards
        assert store.append(FakeHost(n_gpus=4, n_endpoints=2).tick()) is None


def writer_main(db: str, ticks: str, seed: str) -> None:
    """Append ticks as fast as possible, printing each acknowledged one; close on SIGINT and
    SIGTERM the way tokentop does."""
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    host = FakeHost(n_gpus=4, n_endpoints=2, jitter=0.2, seed=int(seed))
    sys.stdin.readline()
    store = open_store(Path(db))
    try:
        started = time.time()
        while int(ticks) == 0 or host.seq < int(ticks):
            status = store.append(host.tick())
            print("queued" if status else "ok", host.seq, flush=True)
        print("done", host.seq, started, time.time(), flush=True)
    finally:
        store.close()


if __name__ == "__main__":
    if sys.argv[1] == "writer":
        writer_main(*sys.argv[2:])

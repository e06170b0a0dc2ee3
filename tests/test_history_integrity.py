"""What the history must survive: a wall clock that jumps, retention run by a later session, and
a file that cannot take the ticks (a full disk, a deleted file). Real SQLite files, the real
Store, the real Sampler on injected clocks, the real ``tokentop record`` in a process."""

from __future__ import annotations

import resource
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import replace
from itertools import pairwise
from pathlib import Path
from typing import Any

import pytest
from factories import build_snapshot
from test_store import FakeHost, open_store, rows
from test_summary import record_scripted

from tokentop import report
from tokentop.changes import changes
from tokentop.config import Config
from tokentop.demo import DemoGpuReader, DemoHost
from tokentop.history import Store, StoreError
from tokentop.model import Snapshot, Totals
from tokentop.sampler import Sampler
from tokentop.tui.notices import current_messages

T0 = 1_700_000_040.0
DAY = 86400.0
approx = pytest.approx


def summary(path: Path, session_id: int | None = None) -> dict:
    return report.to_json_dict(report.summarize(path, session_id))


# --- the wall clock jumps: durations and rates come from the monotonic clock ---------------------


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def record_demo(path: Path, wall_shift: Callable[[int], float], ticks: int = 31) -> tuple[list[Snapshot], dict]:
    """The demo host through the real Sampler and Store, ``ticks`` ticks a monotonic second
    apart; the wall clock reads ``wall_shift(k)`` seconds off at tick ``k`` (``k`` monotonic
    seconds in). Returns the snapshots and the simulation's truth over the run."""
    clock = FakeClock()
    start = clock.now
    host = DemoHost(seed=7, clock=clock)
    config = replace(Config(demo=True, db_path=path), endpoints=host.serve())
    store = Store.open(path, host="demo", version="0.1.0", config=config.public_dict())
    sampler = Sampler(
        config,
        DemoGpuReader(host),
        store=store,
        clock=clock,
        wall_clock=lambda: T0 + clock.now + wall_shift(round(clock.now - start)),
    )
    snapshots = []
    try:
        first = host.now()
        for _ in range(ticks):
            snapshots.append(sampler.tick())
            clock.now += 1.0
        last = host.now() - 1.0
    finally:
        assert sampler.stop() is None
        host.close()
    truth = host.truth(first, last)
    return snapshots, {"energy_j": truth.energy_j, "tokens_out": truth.tokens_out}


def clock_notes(snapshots: list[Snapshot]) -> list[str]:
    return [m for s in snapshots for m in s.messages if "wall clock" in m]


def test_a_wall_clock_two_days_ahead_for_ten_seconds_changes_nothing(tmp_path: Path) -> None:
    path = tmp_path / "h.db"
    snapshots, truth = record_demo(path, lambda k: 2 * DAY if 10 <= k < 20 else 0.0)
    # Retention (24 h of raw rows) would have deleted the first ten seconds at the jump.
    assert rows(path, "SELECT count(*) FROM gpu_ticks GROUP BY gpu_id") == [(31,)] * 8
    times = [t for (t,) in rows(path, "SELECT DISTINCT t FROM gpu_ticks ORDER BY t")]
    assert times == [T0 + 1000.0 + k for k in range(31)]  # the session's clock: no leap, no step back
    data = summary(path)
    assert data["range"]["duration_s"] == 30.0 and data["range"]["since_unix_s"] == T0 + 1000.0
    assert data["host"]["duration_s"] == 30.0
    for g in data["gpus"]:
        assert g["duration_s"] == 30.0
        assert g["energy_kwh"] * 3.6e6 == approx(truth["energy_j"][g["index"]], abs=0.01)
    assert all(e["tokens_out"] >= 0 and e["duration_s"] == 30.0 for e in data["endpoints"])
    [note] = clock_notes(snapshots)  # said once, when it happened
    assert "wall clock is 2d00h ahead of this session's clock" in note
    assert any(note in s.messages for s in snapshots[10:11])


def test_a_wall_clock_set_back_an_hour_keeps_durations_and_rates(tmp_path: Path) -> None:
    path = tmp_path / "h.db"
    snapshots, truth = record_demo(path, lambda k: -3600.0 if k >= 10 else 0.0)
    data = summary(path)
    host_energy = sum(truth["energy_j"].values())
    assert data["host"]["duration_s"] == 30.0  # not 1h00m20s
    assert data["host"]["power_w_mean"] == approx(host_energy / 30, rel=1e-6)  # hundreds of W, not 3.5
    for g in data["gpus"]:
        assert g["duration_s"] == 30.0
        assert g["usd_per_hour_mean"] == approx(g["cost_usd"] / 30 * 3600) and g["usd_per_hour_mean"] > 3.4
    [note] = clock_notes(snapshots)
    assert "1h00m behind" in note


def test_rows_of_a_session_are_timed_by_its_own_clock(tmp_path: Path) -> None:
    """The Store alone: wall times that step back and leap ahead, monotonic times steady."""
    path = tmp_path / "h.db"
    walls = [T0, T0 + 1, T0 - 50, T0 - 49, T0 + 5 * DAY, T0 + 5]
    with open_store(path) as store:
        notes = []
        for k, wall in enumerate(walls):
            snapshot = replace(build_snapshot(wall, [Totals(tokens_out=10.0 * k)], seq=k + 1), t_mono=500.0 + k)
            notes.append(store.append(snapshot))
    assert [t for (t,) in rows(path, "SELECT t FROM gpu_ticks ORDER BY t")] == [T0 + k for k in range(6)]
    # Said when the clocks parted, again when they parted anew after agreeing, not in between.
    assert [n is not None for n in notes] == [False, False, True, False, True, False]


def test_a_range_in_the_snapshots_own_times_selects_exactly_their_rows(tmp_path: Path) -> None:
    """The wall clock read a little before or after the monotonic one (a few 1e-7 s, or a thread
    switch between the two reads): a row is timed by its snapshot's wall time, so that a range
    given in those times (the exporter's, ``snapshot --json``) starts and ends on those rows,
    and the summary of it is the difference of the snapshots' totals."""
    path = tmp_path / "h.db"
    jitter = [0.0, 3e-7, -2.5e-7, 4e-4, -8e-4, 1e-7, -3e-7, 2e-7]  # each under a millisecond
    snapshots = [
        replace(build_snapshot(T0 + k + jitter[k], [Totals(tokens_out=100.0 * k * k)], seq=k + 1), t_mono=500.0 + k)
        for k in range(len(jitter))
    ]
    with open_store(path) as store:
        for snapshot in snapshots:
            store.append(snapshot)
    assert [t for (t,) in rows(path, "SELECT t FROM gpu_ticks ORDER BY t")] == [s.t_wall for s in snapshots]
    with Store.open_readonly(path) as history:
        [session] = history.sessions()
        for first, last in ((1, 6), (2, 4), (3, 7)):
            since, until = snapshots[first].t_wall, snapshots[last].t_wall
            [gpu] = report.build_summary(history, session, since, until).gpus
            assert gpu.figures.tokens_out == approx(100.0 * (last * last - first * first))


def test_a_wall_clock_a_few_milliseconds_off_is_the_session_clocks(tmp_path: Path) -> None:
    path = tmp_path / "h.db"
    walls = [T0, T0 + 1 + 0.002, T0 + 2 - 0.0005]  # 2 ms off: the session's clock; 0.5 ms: its own
    with open_store(path) as store:
        for k, wall in enumerate(walls):
            store.append(replace(build_snapshot(wall, [Totals(tokens_out=10.0 * k)], seq=k + 1), t_mono=500.0 + k))
    assert [t for (t,) in rows(path, "SELECT t FROM gpu_ticks ORDER BY t")] == [T0, T0 + 1, T0 + 2 - 0.0005]


# --- retention run by a later session never changes a closed one ---------------------------------

KEPT_FIGURES = (
    "duration_s",
    "tokens_in",
    "tokens_out",
    "energy_kwh",
    "cost_usd",
    "busy_pct",
    "power_w_mean",
    "usd_per_mtok",
)
KEPT_GPU = ("index", "uuid", "engines", "energy_method", "energy_integrated_ticks", "energy_unmeasured_ticks")
KEPT_ENDPOINT = ("name", "url", "kind", "model", "gpus", "duration_s", "tokens_in", "tokens_out")


def rounded(value: object) -> object:
    """``value`` with every float to 9 significant digits (sums in another order differ in the
    last bits)."""
    if isinstance(value, float):
        return float(f"{value:.9g}")
    if isinstance(value, dict):
        return {k: rounded(v) for k, v in value.items()}
    if isinstance(value, list):
        return [rounded(v) for v in value]
    return value


def kept_part(data: dict) -> object:
    """What a summary must keep of a closed session, whatever retention deleted."""
    return rounded(
        {
            "session": data["session"],
            "range": data["range"],
            "host": {k: data["host"][k] for k in KEPT_FIGURES},
            "gpus": [{k: g[k] for k in KEPT_GPU + KEPT_FIGURES} for g in data["gpus"]],
            "endpoints": [{k: e[k] for k in KEPT_ENDPOINT} for e in data["endpoints"]],
            "requests": [e["requests_completed"] for e in data["endpoints"]],
        }
    )


@pytest.mark.parametrize("deleted_s", [20, 100], ids=["half of its rows", "all of its rows"])
def test_retention_by_a_later_session_leaves_a_closed_session_as_it_was(tmp_path: Path, deleted_s: int) -> None:
    path = tmp_path / "h.db"
    session = record_scripted(path)  # 41 ticks from T0, closed
    before = summary(path, session)
    # A later session, a day on, runs retention as it ends: raw rows before T0 + deleted_s go.
    with open_store(path) as later:
        for k in range(2):
            later.append(build_snapshot(T0 + DAY + deleted_s - 1 + k, [Totals()], seq=k + 1))
    left = rows(path, "SELECT count(*) FROM gpu_ticks WHERE session_id = ?", (session,))[0][0]
    assert left == 4 * max(0, 41 - deleted_s), "retention did not delete the rows it should have"
    after = summary(path, session)
    assert kept_part(after) == kept_part(before)
    for old, new in zip(before["endpoints"], after["endpoints"]):
        for key in ("ttft_p50_s_mean", "ttft_p95_s_mean", "itl_p50_s_mean"):
            assert new[key] == approx(old[key])
    assert any("session's own totals" in note for note in after["notes"])
    assert all("session's own totals" not in note for note in before["notes"])


def test_the_range_of_a_session_whose_rows_are_gone_starts_at_its_first_reading(tmp_path: Path) -> None:
    path = tmp_path / "h.db"
    session = record_scripted(path, t0=T0 + 13)  # starts 13 s into a minute
    with open_store(path) as later:
        later.append(build_snapshot(T0 + 3 * DAY, [Totals()]))
    with Store.open_readonly(path) as store:
        assert store.session_bounds(session) == (T0 + 13, T0 + 53)  # not the minute's start


# --- ticks that cannot be written are said, counted, and make record fail ------------------------


@pytest.fixture
def connections(monkeypatch: pytest.MonkeyPatch) -> list[sqlite3.Connection]:
    """Every connection opened during the test, the store's first (``max_page_count`` belongs
    to a connection: only the store's own can be limited)."""
    opened: list[sqlite3.Connection] = []
    connect = sqlite3.connect

    def recording_connect(*args: Any, **kwargs: Any) -> sqlite3.Connection:
        opened.append(connect(*args, **kwargs))
        return opened[-1]

    monkeypatch.setattr(sqlite3, "connect", recording_connect)
    return opened


def test_a_disk_full_for_the_whole_run_loses_every_tick_and_says_how_many(
    tmp_path: Path, connections: list[sqlite3.Connection]
) -> None:
    host = FakeHost(n_gpus=8, n_endpoints=4)
    store = open_store(tmp_path / "h.db", queue_ticks=30)
    [own] = connections
    own.execute("PRAGMA max_page_count = 1")  # no page more (SQLITE_FULL, as a full disk gives)
    messages = [store.append(host.tick()) for _ in range(90)]
    written = messages.index(next(m for m in messages if m is not None))  # the free pages filled
    assert written < 10 and None not in messages[written:]
    messages = messages[written:]
    assert "disk is full" in messages[0]
    # Said when it began and when ticks began to be dropped, not every tick.
    assert list(dict.fromkeys(messages)) == [messages[0], messages[-1]]
    assert "(1 tick so far, waiting in memory" in messages[0]
    assert "(31 ticks so far" in messages[-1] and "memory holds the latest 30, 1 older lost" in messages[-1]
    closing = store.close()
    assert closing is not None and f"{90 - written} ticks of this session not written" in closing
    assert (store.ticks_written, store.ticks_lost) == (written, 90 - written)


def test_the_count_of_ticks_not_written_is_said_again_once_a_minute(tmp_path: Path) -> None:
    host = FakeHost()
    with open_store(tmp_path / "h.db", busy_timeout_s=0.01) as store:
        store.append(host.tick())
        blocker = sqlite3.connect(tmp_path / "h.db", isolation_level=None)
        blocker.execute("BEGIN IMMEDIATE")
        messages = [store.append(host.tick()) for _ in range(125)]
        blocker.execute("ROLLBACK")
        blocker.close()
    assert [m.split("(")[1].split(",")[0] for m in dict.fromkeys(messages) if m] == [
        "1 tick so far",
        "61 ticks so far",
        "121 ticks so far",
    ]


@pytest.mark.parametrize("how", ["deleted", "replaced"])
def test_a_file_deleted_or_replaced_while_recording_is_noticed_and_counted(tmp_path: Path, how: str) -> None:
    path = tmp_path / "h.db"
    host = FakeHost()
    store = open_store(path)
    for _ in range(3):
        assert store.append(host.tick()) is None
    for name in ("h.db", "h.db-wal", "h.db-shm"):
        if how == "deleted":
            (tmp_path / name).unlink(missing_ok=True)
        elif (tmp_path / name).exists():
            (tmp_path / name).rename(tmp_path / f"moved-{name}")
    if how == "replaced":
        open_store(path).close()  # another history now lives at the path
    errors = []
    for _ in range(10):
        try:
            store.append(host.tick())
        except StoreError as exc:
            errors.append(str(exc))
    expected = "deleted" if how == "deleted" else "replaced by another file"
    assert len(errors) == 8 and len(set(errors)) == 1  # noticed within 5 s, then the same line
    assert f"history {path} was {expected} while recording" in errors[0]
    closing = store.close()
    assert closing is not None and "13 ticks of this session not written" in closing
    assert (store.ticks_written, store.ticks_lost) == (0, 13)


def test_a_sampler_passes_on_what_closing_the_history_could_not_do(tmp_path: Path) -> None:
    path = tmp_path / "h.db"
    store = open_store(path, busy_timeout_s=0.01)
    host = DemoHost(seed=1)
    sampler = Sampler(Config(), DemoGpuReader(host), store=store)
    sampler.tick()
    blocker = sqlite3.connect(path, isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")
    waiting = sampler.tick()
    closing = sampler.stop()
    host.close()
    blocker.execute("ROLLBACK")
    blocker.close()
    assert any("waiting in memory" in m for m in waiting.messages)
    assert closing is not None and "1 tick of this session not written" in closing
    assert sampler.stop() is None  # once


def test_the_live_view_says_a_waiting_history_once_and_shows_it_while_it_lasts(tmp_path: Path) -> None:
    path = tmp_path / "h.db"
    host = DemoHost(seed=1)
    sampler = Sampler(Config(), DemoGpuReader(host), store=open_store(path, busy_timeout_s=0.01))
    snapshots = [sampler.tick()]
    blocker = sqlite3.connect(path, isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")
    snapshots += [sampler.tick() for _ in range(5)]
    blocker.execute("ROLLBACK")
    blocker.close()
    snapshots.append(sampler.tick())
    assert sampler.stop() is None
    host.close()
    said = [change.text for old, new in pairwise(snapshots) for change in changes(old, new)]
    notified = [text for text in said if "history" in text]
    assert len(notified) == 1 and "locked" in notified[0] and "waiting in memory" in notified[0]
    shown = [[m for m in current_messages(s, []) if "history" in m] for s in snapshots]
    assert shown == [[]] + [notified] * 5 + [[]]


# --- the real command --------------------------------------------------------------------------


def record(db: Path, *args: str, limit_bytes: int | None = None) -> subprocess.Popen[str]:
    def limit_file_size() -> None:  # writes past it fail (EFBIG): a disk that fills up
        if limit_bytes is not None:
            resource.setrlimit(resource.RLIMIT_FSIZE, (limit_bytes, limit_bytes))

    return subprocess.Popen(
        [sys.executable, "-m", "tokentop.cli", "record", "--demo", "--db", str(db), "--no-summary", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=limit_file_size,
    )


def ticks_in(db: Path) -> int:
    try:
        return sqlite3.connect(db).execute("SELECT count(DISTINCT t) FROM gpu_ticks").fetchone()[0]
    except sqlite3.Error:
        return 0


def test_record_says_a_deleted_history_during_the_run_and_exits_1(tmp_path: Path) -> None:
    db = tmp_path / "h.db"
    process = record(db, "--duration", "8", "--interval", "0.5")
    deadline = time.monotonic() + 30
    while ticks_in(db) < 2 and time.monotonic() < deadline:
        time.sleep(0.1)
    for name in ("h.db", "h.db-wal", "h.db-shm"):
        (tmp_path / name).unlink(missing_ok=True)
    _, err = process.communicate(timeout=60)
    assert process.returncode == 1, err
    lines = err.splitlines()
    said = next(i for i, line in enumerate(lines) if f"history {db} was deleted while recording" in line)
    final = lines[-1]
    assert final.startswith("tokentop: 0 ticks written, ") and final.endswith(f"lost in {db}")
    assert int(final.split(", ")[1].split()[0]) >= 15  # every tick of the run: 17 at 2 Hz
    # Said once during the run, then once more at the end with the count.
    [closing] = [line for line in lines[said + 1 :] if f"history {db} was deleted" in line]
    assert closing.endswith("ticks of this session not written") and closing != lines[-1]
    assert "Traceback" not in err


def test_record_on_a_disk_that_fills_up_says_it_and_exits_1(tmp_path: Path) -> None:
    db = tmp_path / "h.db"
    first = record(db, "--duration", "1")
    _, err = first.communicate(timeout=60)
    assert first.returncode == 0, err
    process = record(db, "--duration", "4", "--interval", "0.5", limit_bytes=db.stat().st_size + 64 * 1024)
    _, err = process.communicate(timeout=60)
    assert process.returncode == 1, err
    lines = err.splitlines()
    written, lost = (int(part.split()[0]) for part in lines[-1].removeprefix("tokentop: ").split(", "))
    assert lost > 0 and written + lost >= 8
    assert any("not being written" in line or "not written" in line for line in lines[:-1])
    assert ticks_in(db) - 2 <= written  # what the file holds is what was said to be written
    assert "Traceback" not in err


def test_record_with_nothing_lost_exits_0_and_says_so(tmp_path: Path) -> None:
    db = tmp_path / "h.db"
    process = record(db, "--duration", "1", "--interval", "0.5")
    _, err = process.communicate(timeout=60)
    assert process.returncode == 0, err
    assert err.splitlines()[-1] == f"tokentop: {ticks_in(db)} ticks written, 0 lost in {db}"


def test_the_session_totals_views_give_the_summary_figures(tmp_path: Path) -> None:
    """The views for people and ad-hoc SQL read the kept totals in plain columns."""
    path = tmp_path / "h.db"
    session = record_scripted(path)
    data = summary(path, session)
    assert rows(path, "SELECT name, tokens_out, requests_completed FROM session_endpoints_v") == [
        (e["name"], e["tokens_out"], e["requests_completed"]) for e in data["endpoints"]
    ]
    assert rows(path, "SELECT uuid, t_last - t_first, tokens_out FROM session_gpus_v") == [
        (g["uuid"], g["duration_s"], g["tokens_out"]) for g in data["gpus"]
    ]

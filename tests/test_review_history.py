"""Review of history schema 5: what the 4 -> 5 step and the states must never do to a figure."""

from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path

import pytest
from factories import build_snapshot
from test_perf_history_layout import view_rows, write_version_4
from test_store import go, start_writer

from tokentop.history import SCHEMA_VERSION, Store, files, schema, states
from tokentop.model import Totals


def _nullable_columns(conn: sqlite3.Connection, table: str) -> list[str]:
    return [
        name for _, name, _, notnull, _, pk in conn.execute(f"PRAGMA table_info({table})") if not notnull and not pk
    ]


def test_a_v4_file_with_nulls_in_every_nullable_column_migrates_value_for_value(tmp_path: Path) -> None:
    path = tmp_path / "v4.db"
    write_version_4(path)
    conn = sqlite3.connect(path, isolation_level=None)
    for table in ("gpu_ticks", "endpoint_ticks"):
        columns = _nullable_columns(conn, table)
        assert len(columns) > 10, table
        conn.execute(f"UPDATE {table} SET {', '.join(f'{c} = NULL' for c in columns)}")
    conn.close()
    before = view_rows(path)
    Store.open(path, host="h", version="v", config={}).close()
    assert view_rows(path) == before
    assert sqlite3.connect(path).execute("SELECT count(*) FROM gpu_states").fetchone() == (1,)


def test_processes_opening_a_version_4_file_together_migrate_it_once_keeping_every_value(tmp_path: Path) -> None:
    path = tmp_path / "v4.db"
    write_version_4(path)
    before = view_rows(path)
    writers = [start_writer(path, 20, seed) for seed in range(3)]
    go(*writers)  # all race to migrate
    for writer in writers:
        _, err = writer.communicate(timeout=60)
        assert writer.returncode == 0, err
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA user_version").fetchone() == (SCHEMA_VERSION,)
    assert conn.execute("SELECT count(DISTINCT session_id) FROM gpu_ticks WHERE session_id > 1").fetchone() == (3,)
    conn.close()
    after = view_rows(path)
    for view, rows in before.items():  # the old session's rows first: ordered by session
        assert after[view][: len(rows)] == rows, view


def test_opening_waits_for_another_process_migrating_longer_than_the_open_timeout(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A 24 h schema-4 file takes seconds to migrate: a second tokentop opening it then waits
    for the migration instead of refusing the file as locked."""
    path = tmp_path / "v4.db"
    write_version_4(path)
    monkeypatch.setattr(files, "OPEN_TIMEOUT_S", 0.2)
    monkeypatch.setattr(files, "MIGRATION_WAIT_S", 30.0, raising=False)
    migrating = sqlite3.connect(path, isolation_level=None)
    migrating.execute("BEGIN IMMEDIATE")  # the other process, mid-migration
    schema.MIGRATIONS[4](schema.database(migrating))
    opened: list[object] = []

    def open_store() -> None:
        try:
            Store.open(path, host="h", version="v", config={}).close()
            opened.append("ok")
        except Exception as exc:
            opened.append(exc)

    second = threading.Thread(target=open_store)
    second.start()
    time.sleep(1.0)  # five open timeouts
    migrating.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
    migrating.execute("COMMIT")
    migrating.close()
    second.join(timeout=60)
    assert opened == ["ok"]


def test_power_that_is_an_int_past_the_milliwatt_range_is_stored_as_watts(tmp_path: Path) -> None:
    for power in (10**12, -(10**13)):
        stored = states.power_column(power)
        assert isinstance(stored, float) and stored == power  # an int would read as milliwatts


def test_a_state_per_tick_keeps_the_writers_memory_bounded_and_every_row_its_own_state(tmp_path: Path) -> None:
    """An endpoint whose error quotes a value that changes every tick (a counter holding
    nonsense) makes a state per tick: the writer keeps a bounded number of their ids, and every
    row still reads back with its own error."""
    bound = getattr(states, "_MAX_CACHED_STATES", 1024)
    ticks = bound * 2 + 10
    path = tmp_path / "history.db"
    with Store.open(path, host="h", version="v", config={}) as store:
        for seq in range(1, ticks + 1):
            error = f"vllm:prompt_tokens_total sums to {seq}e+30: not a token count"
            snapshot = build_snapshot(
                1_790_000_000.0 + seq,
                [Totals()],
                [(0.0, 0.0)],
                seq=seq,
                endpoints=[{"status": "error", "error": error}],
            )
            store.append(snapshot)
        assert store._writer is not None
        cached = store._writer._rows._states._endpoint
        assert 0 < len(cached) <= bound
        assert 0 < len(store._writer._rows._endpoint_keys) <= bound  # the rows' keys, too
    conn = sqlite3.connect(path)
    errors = [e for (e,) in conn.execute("SELECT error FROM endpoint_ticks_v ORDER BY t")]
    assert errors == [f"vllm:prompt_tokens_total sums to {seq}e+30: not a token count" for seq in range(1, ticks + 1)]
    assert conn.execute("SELECT count(*) FROM endpoint_states").fetchone() == (ticks,)

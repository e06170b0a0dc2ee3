"""Schema 5's states: what a GPU or an endpoint keeps tick after tick, stored once and pointed
at by its rows, and power in whole milliwatts; the writer's side of it and the 4 -> 5 step.

A GPU row of schema 4 spent 24 of its 116 bytes on columns that rarely change (NVML index,
status, error, memory total, power limit, engines, energy method, cost rate), 8 on power, which NVML gives in
whole milliwatts, and 6 on memory used, mostly whole MiB or KiB; an endpoint row 7 of its 82 on
status, error, kind, model and GPUs. Nothing is rounded: a row points at an exact copy of those
values, keeps its own cost rate when it is not its state's, keeps power in watts when it is not
a whole number of milliwatts, and memory in the unit (in its state) that holds it exactly.
"""

from __future__ import annotations

import sqlite3
from typing import Any

import sqlite_utils

GPU_STATE_COLUMNS = (
    "gpu_index",
    "status",
    "error",
    "mem_total_bytes",
    "mem_used_unit",
    "power_limit_w",
    "engines_id",
    "energy_method_id",
)
_MEMORY_UNITS = (1 << 20, 1 << 10)  # NVML counts bytes; used memory is mostly whole MiB or KiB
ENDPOINT_STATE_COLUMNS = ("status", "error", "kind_id", "model_id", "gpus_id")

# A state is found by every column with IS (NULL matches NULL); a GPU's also by whether it is
# priced, so that a row's NULL rate always means "its state's".
_FIND_GPU_STATE = (
    "SELECT id, usd_per_hour FROM gpu_states WHERE "
    + " AND ".join(f"{c} IS ?" for c in GPU_STATE_COLUMNS)
    + " AND (usd_per_hour IS NULL) = ? ORDER BY id LIMIT 1"
)
_INSERT_GPU_STATE = (
    f"INSERT INTO gpu_states ({', '.join(GPU_STATE_COLUMNS)}, usd_per_hour)"
    f" VALUES ({', '.join('?' * (len(GPU_STATE_COLUMNS) + 1))})"
)
_FIND_ENDPOINT_STATE = (
    "SELECT id FROM endpoint_states WHERE "
    + " AND ".join(f"{c} IS ?" for c in ENDPOINT_STATE_COLUMNS)
    + " ORDER BY id LIMIT 1"
)
_INSERT_ENDPOINT_STATE = (
    f"INSERT INTO endpoint_states ({', '.join(ENDPOINT_STATE_COLUMNS)})"
    f" VALUES ({', '.join('?' * len(ENDPOINT_STATE_COLUMNS))})"
)


_MAX_W = 1e12  # far above any GPU; keeps milliwatts well inside SQLite's 64-bit integers


def power_column(power_w: float | None) -> int | float | None:
    """``power`` as stored: an int of milliwatts when ``power_w`` is exactly that (``mw / 1000``
    gives it back bit for bit), else the watts as they are (a float: the column has no affinity,
    so SQLite keeps the type that says which)."""
    if power_w is None:
        return None
    if -_MAX_W < power_w < _MAX_W:  # finite (not NaN), and well inside the integers
        milliwatts = round(power_w * 1000)
        if milliwatts / 1000 == power_w:
            return milliwatts
    return float(power_w)  # an int here would read back as milliwatts: a thousandth


def memory_columns(used_bytes: int | None) -> tuple[int | None, int]:
    """``(mem_used, mem_used_unit)``: the bytes in the largest unit that holds them exactly."""
    if used_bytes is not None:
        for unit in _MEMORY_UNITS:
            if used_bytes % unit == 0:
                return used_bytes // unit, unit
    return used_bytes, 1


MAX_CACHED_STATES = 1024  # a state per tick (an error quoting a changing value) must not pile up


class StateIds:
    """The state ids a writer has used, so that a tick costs dict lookups and no SQL; at most
    ``MAX_CACHED_STATES`` of each kind (all forgotten past that: found again in the table)."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn
        self._gpu: dict[tuple[Any, ...], tuple[int, float | None]] = {}
        self._endpoint: dict[tuple[Any, ...], int] = {}

    def clear(self) -> None:
        """Forget every id: a rolled-back transaction may have handed them out."""
        self._gpu.clear()
        self._endpoint.clear()

    def gpu(self, state: tuple[Any, ...], usd_per_hour: float | None) -> tuple[int, float | None]:
        """The id of the state (priced when ``usd_per_hour`` is not None) and its rate (a row
        at that rate keeps None: its state's)."""
        key = (*state, usd_per_hour is None)
        found = self._gpu.get(key)
        if found is None:
            row = self._conn.execute(_FIND_GPU_STATE, key).fetchone()
            if row is None:
                cursor = self._conn.execute(_INSERT_GPU_STATE, (*state, usd_per_hour))
                row = (cursor.lastrowid, usd_per_hour)
            if len(self._gpu) >= MAX_CACHED_STATES:
                self._gpu.clear()
            found = self._gpu[key] = (int(row[0]), row[1])
        return found

    def endpoint(self, state: tuple[Any, ...]) -> int:
        found = self._endpoint.get(state)
        if found is None:
            row = self._conn.execute(_FIND_ENDPOINT_STATE, state).fetchone()
            if row is None:
                row = (self._conn.execute(_INSERT_ENDPOINT_STATE, state).lastrowid,)
            if len(self._endpoint) >= MAX_CACHED_STATES:
                self._endpoint.clear()
            found = self._endpoint[state] = int(row[0])
        return found


def migrate_4_to_5(db: sqlite_utils.Database, create: dict[str, str], views: dict[str, str]) -> None:
    """Rows of schema 4 into schema 5's tables: states made from the distinct values, each row
    copied once pointing at its own (``create``: the new tables' statements; ``views``: every
    view, made again over them). Run inside ``create_or_migrate``'s transaction."""
    for view in db.view_names():
        db.execute(f"DROP VIEW {view}")
    for table in ("gpu_states", "endpoint_states"):
        db.execute(create[table])
    _copy_gpu_rows(db, create["gpu_ticks"])
    _copy_endpoint_rows(db, create["endpoint_ticks"])
    for name, sql in views.items():
        db.create_view(name, sql.strip())


def _copy_gpu_rows(db: sqlite_utils.Database, create_table: str) -> None:
    unit = " ".join(f"WHEN mem_used_bytes % {u} = 0 THEN {u}" for u in _MEMORY_UNITS)
    rows = f"(SELECT *, CASE {unit} ELSE 1 END AS mem_used_unit FROM gpu_ticks_4)"  # every row read once
    state = ", ".join(GPU_STATE_COLUMNS)
    same_state = " AND ".join(f"s.{c} IS k.{c}" for c in GPU_STATE_COLUMNS)
    exact_mw = f"abs(k.power_w) < {_MAX_W:g} AND round(k.power_w * 1000) / 1000.0 = k.power_w"
    db.execute("ALTER TABLE gpu_ticks RENAME TO gpu_ticks_4")
    db.execute(
        f"INSERT INTO gpu_states ({state}, usd_per_hour) SELECT {state}, min(usd_per_hour) FROM {rows}"
        f" GROUP BY {state}, usd_per_hour IS NULL ORDER BY min(t)"
    )
    db.execute(create_table)
    db.execute(
        f"""INSERT INTO gpu_ticks SELECT k.session_id, k.gpu_id, k.t, s.id, k.util_pct,
            k.mem_used_bytes / k.mem_used_unit,
            CASE WHEN {exact_mw} THEN CAST(round(k.power_w * 1000) AS INTEGER) ELSE k.power_w END,
            k.energy_counter_mj, k.temperature_c, k.sm_clock_mhz, k.tokens_in_cum,
            k.tokens_out_cum, k.energy_j_cum, k.cost_usd_cum, k.busy_s_cum, k.busy_cost_usd_cum,
            CASE WHEN k.usd_per_hour IS s.usd_per_hour THEN NULL ELSE k.usd_per_hour END
        FROM {rows} k JOIN gpu_states s
            ON {same_state} AND (s.usd_per_hour IS NULL) = (k.usd_per_hour IS NULL)
        ORDER BY k.session_id, k.t, k.gpu_id"""
    )
    db.execute("DROP TABLE gpu_ticks_4")


def _copy_endpoint_rows(db: sqlite_utils.Database, create_table: str) -> None:
    state = ", ".join(ENDPOINT_STATE_COLUMNS)
    db.execute(
        f"INSERT INTO endpoint_states ({state}) SELECT {state} FROM endpoint_ticks GROUP BY {state} ORDER BY min(t)"
    )
    same_state = " AND ".join(f"s.{c} IS k.{c}" for c in ENDPOINT_STATE_COLUMNS)
    db.execute("ALTER TABLE endpoint_ticks RENAME TO endpoint_ticks_4")
    db.execute(create_table)
    db.execute(
        f"""INSERT INTO endpoint_ticks SELECT k.session_id, k.endpoint_id, k.t, s.id, k.prompt_tokens_raw,
            k.generation_tokens_raw, k.tokens_in_cum, k.tokens_out_cum, k.running, k.waiting,
            k.kv_cache_fraction, k.requests_finished_raw, k.ttft_p50_s, k.ttft_p95_s, k.itl_p50_s
        FROM endpoint_ticks_4 k JOIN endpoint_states s ON {same_state}
        ORDER BY k.session_id, k.t, k.endpoint_id"""
    )
    db.execute("DROP TABLE endpoint_ticks_4")

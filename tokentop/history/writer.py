"""The one writer of a session: a tick's rows and rollups in one transaction, a queue, retention.

``append`` never loses a tick to a lock or a full disk. The tick waits in a bounded in-memory
queue and is written with the next append; ``append`` then *returns* a one-line status for the
screen instead of raising. Writing a tick twice changes nothing (raw rows are keyed by time and a
rollup only counts a row that was actually inserted), so a retry is always safe. Every other
failure raises ``StoreError`` with a one-line message.

Retention runs at most once a minute (by the ticks' own clock) in its own short transaction:
raw rows older than ``raw_retention_s``, rollups older than ``rollup_retention_s``, then
sessions left without rows. Each deletion is a range on a primary key, never a scan.

The per-tick path uses raw ``sqlite3``: a tick of 8 GPUs and 4 endpoints is about 40 statements,
each a bind and a step of a statement ``sqlite3`` keeps prepared (a few microseconds); going
through sqlite-utils would add its per-call Python work (dicts, quoting, transaction checks) to
each of them, every second, for nothing.
"""

from __future__ import annotations

import json
import math
import sqlite3
import time
from collections import deque
from pathlib import Path
from typing import Any, NamedTuple

from tokentop.derive import Point, window_between
from tokentop.history.errors import TRANSIENT, StoreError, as_store_error, describe, error_code
from tokentop.history.schema import DATA_TABLES, database, minute_of, rollback
from tokentop.model import EndpointFigures, GpuFigures, Snapshot, Totals

RETENTION_EVERY_S = 60.0
CLOSE_WAIT_FACTOR = 8  # close() waits this many busy timeouts to write what is still queued

_INSERT_GPU_TICK = (
    "INSERT OR IGNORE INTO gpu_ticks (session_id, gpu_id, t, gpu_index, status, error, util_pct,"
    " mem_used_bytes, mem_total_bytes, power_w, power_limit_w, energy_counter_mj, temperature_c,"
    " sm_clock_mhz, energy_method_id, engines_id, tokens_in_cum, tokens_out_cum, energy_j_cum,"
    " cost_usd_cum, busy_s_cum, busy_cost_usd_cum, usd_per_hour)"
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
_INSERT_SESSION_GPU = "INSERT OR IGNORE INTO session_gpus (session_id, gpu_id, gpu_index) VALUES (?, ?, ?)"
_UPSERT_GPU_ROLLUP = """
INSERT INTO gpu_rollup_1m (session_id, minute, gpu_id, t_last, tokens_in_cum, tokens_out_cum,
    energy_j_cum, cost_usd_cum, busy_s_cum, busy_cost_usd_cum, samples,
    power_w_sum, power_w_n, power_w_max, util_pct_sum, util_pct_n,
    tokens_in_delta, tokens_out_delta, energy_j_delta, cost_usd_delta, covered_s)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 1, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (session_id, minute, gpu_id) DO UPDATE SET
    t_last = excluded.t_last, tokens_in_cum = excluded.tokens_in_cum,
    tokens_out_cum = excluded.tokens_out_cum, energy_j_cum = excluded.energy_j_cum,
    cost_usd_cum = excluded.cost_usd_cum, busy_s_cum = excluded.busy_s_cum,
    busy_cost_usd_cum = excluded.busy_cost_usd_cum, samples = samples + 1,
    power_w_sum = power_w_sum + excluded.power_w_sum, power_w_n = power_w_n + excluded.power_w_n,
    power_w_max = max(coalesce(power_w_max, excluded.power_w_max),
                      coalesce(excluded.power_w_max, power_w_max)),
    util_pct_sum = util_pct_sum + excluded.util_pct_sum,
    util_pct_n = util_pct_n + excluded.util_pct_n,
    tokens_in_delta = tokens_in_delta + excluded.tokens_in_delta,
    tokens_out_delta = tokens_out_delta + excluded.tokens_out_delta,
    energy_j_delta = energy_j_delta + excluded.energy_j_delta,
    cost_usd_delta = cost_usd_delta + excluded.cost_usd_delta,
    covered_s = covered_s + excluded.covered_s
"""
_INSERT_ENDPOINT_TICK = (
    "INSERT OR IGNORE INTO endpoint_ticks (session_id, endpoint_id, t, kind_id, status, error,"
    " model_id, prompt_tokens_raw, generation_tokens_raw, tokens_in_cum, tokens_out_cum, running,"
    " waiting, kv_cache_fraction, requests_finished_raw, ttft_p50_s, ttft_p95_s, itl_p50_s,"
    " gpus_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
_UPSERT_ENDPOINT_ROLLUP = """
INSERT INTO endpoint_rollup_1m (session_id, minute, endpoint_id, t_last, tokens_in_cum,
    tokens_out_cum, samples, up_samples, running_sum, running_n, waiting_sum, waiting_n,
    kv_sum, kv_n, kv_max)
VALUES (?, ?, ?, ?, ?, ?, 1, ?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (session_id, minute, endpoint_id) DO UPDATE SET
    t_last = excluded.t_last, tokens_in_cum = excluded.tokens_in_cum,
    tokens_out_cum = excluded.tokens_out_cum, samples = samples + 1,
    up_samples = up_samples + excluded.up_samples,
    running_sum = running_sum + excluded.running_sum, running_n = running_n + excluded.running_n,
    waiting_sum = waiting_sum + excluded.waiting_sum, waiting_n = waiting_n + excluded.waiting_n,
    kv_sum = kv_sum + excluded.kv_sum, kv_n = kv_n + excluded.kv_n,
    kv_max = max(coalesce(kv_max, excluded.kv_max), coalesce(excluded.kv_max, kv_max))
"""


class _Intern(NamedTuple):
    """How a repeated string (or pair) becomes a row id of its own table."""

    insert: str
    select: str  # finds the row by the first ``select_arity`` of the inserted values
    select_arity: int


# A GPU is found by its uuid (its name is kept from the first sighting); an endpoint by both.
_GPU = _Intern("INSERT OR IGNORE INTO gpus (uuid, name) VALUES (?, ?)", "SELECT id FROM gpus WHERE uuid = ?", 1)
_ENDPOINT = _Intern(
    "INSERT OR IGNORE INTO endpoints (name, url) VALUES (?, ?)",
    "SELECT id FROM endpoints WHERE name = ? AND url = ?",
    2,
)
_LABEL = _Intern("INSERT OR IGNORE INTO labels (text) VALUES (?)", "SELECT id FROM labels WHERE text = ?", 1)

# --- rows prepared from a snapshot (kept in the queue while the file is locked) ---------------


class _GpuValues(NamedTuple):
    """The ``gpu_ticks`` columns gpu_index .. sm_clock_mhz, in table order."""

    gpu_index: int | None
    status: str
    error: str | None
    util_pct: float | None
    mem_used_bytes: int | None
    mem_total_bytes: int | None
    power_w: float | None
    power_limit_w: float | None
    energy_counter_mj: int | None
    temperature_c: float | None
    sm_clock_mhz: int | None


class _GpuRow(NamedTuple):
    uuid: str
    name: str
    energy_method: str | None
    engines: str  # comma-separated endpoint names
    values: _GpuValues
    totals: Totals
    usd_per_hour: float | None


class _EndpointValues(NamedTuple):
    """The ``endpoint_ticks`` columns prompt_tokens_raw .. itl_p50_s, in table order."""

    prompt_tokens_raw: float | None
    generation_tokens_raw: float | None
    tokens_in_cum: float
    tokens_out_cum: float
    running: float | None
    waiting: float | None
    kv_cache_fraction: float | None
    requests_finished_raw: float | None
    ttft_p50_s: float | None
    ttft_p95_s: float | None
    itl_p50_s: float | None


class _EndpointRow(NamedTuple):
    name: str
    url: str
    kind: str | None
    model: str | None
    gpus: str  # comma-separated GPU UUIDs
    status: str
    error: str | None
    values: _EndpointValues


class _Tick(NamedTuple):
    t: float
    gpus: tuple[_GpuRow, ...]
    endpoints: tuple[_EndpointRow, ...]


def _prepare(snapshot: Snapshot) -> _Tick:
    """The rows of one snapshot: small, and all a queued tick keeps in memory."""
    return _Tick(snapshot.t_wall, tuple(map(_gpu_row, snapshot.gpus)), tuple(map(_endpoint_row, snapshot.endpoints)))


def _gpu_row(fig: GpuFigures) -> _GpuRow:
    s = fig.sample
    values = _GpuValues(
        s.index,
        s.status,
        s.error,
        s.utilization_pct,
        s.memory_used_bytes,
        s.memory_total_bytes,
        s.power_w,
        s.power_limit_w,
        s.energy_counter_mj,
        s.temperature_c,
        s.sm_clock_mhz,
    )
    return _GpuRow(s.uuid, s.name, fig.energy_method, ",".join(fig.engines), values, fig.totals, fig.usd_per_hour_now)


def _endpoint_row(fig: EndpointFigures) -> _EndpointRow:
    e = fig.sample
    values = _EndpointValues(
        e.prompt_tokens_total,
        e.generation_tokens_total,
        fig.tokens_in_total,
        fig.tokens_out_total,
        e.running,
        e.waiting,
        e.kv_cache_fraction,
        e.requests_finished_total,
        fig.ttft_p50_s,
        fig.ttft_p95_s,
        fig.itl_p50_s,
    )
    return _EndpointRow(e.name, e.url, e.kind, e.model, ",".join(fig.gpus), e.status, e.error, values)


def _cum(t: Totals) -> tuple[float, float, float, float | None, float, float | None]:
    """The ``*_cum`` columns, in table order."""
    return (t.tokens_in, t.tokens_out, t.energy_j, t.cost_usd, t.busy_s, t.busy_cost_usd)


def start_session(conn: sqlite3.Connection, path: Path, host: str, version: str, config: dict[str, Any]) -> int:
    """Insert the session's row; its id."""
    row = {
        "started_at": time.time(),
        "ended_at": None,
        "host": host,
        "tokentop_version": version,
        "config_json": json.dumps(config, sort_keys=True, default=str),
    }
    with as_store_error(path):
        session_id = database(conn).table("sessions").insert(row).last_pk
    if not isinstance(session_id, int):  # sqlite-utils types it loosely; an INTEGER key is an int
        raise StoreError(f"history {path}: the new session has no id")
    return session_id


class Writer:
    """Writes one session's ticks over a connection it shares with the reader (the ``Store``
    serialises the two with its lock)."""

    def __init__(
        self,
        conn: sqlite3.Connection,
        path: Path,
        session_id: int,
        *,
        raw_retention_s: float,
        rollup_retention_s: float,
        busy_timeout_s: float,
        queue_ticks: int,
    ) -> None:
        self._conn = conn
        self.path = path
        self.session_id = session_id
        self.raw_retention_s = raw_retention_s
        self.rollup_retention_s = rollup_retention_s
        self._busy_timeout_s = busy_timeout_s
        self._pending: deque[_Tick] = deque()
        self._queue_ticks = queue_ticks
        self._dropped = 0
        # Row ids of repeated strings, by uuid, (name, url) and text; cleared on a rollback.
        self._gpu_ids: dict[str, int] = {}
        self._endpoint_ids: dict[tuple[str, str], int] = {}
        self._label_ids: dict[str, int] = {}
        self._prev: dict[int, Point] = {}  # gpu_id -> its latest row's cumulative figures
        self._last_retention = -math.inf

    def append(self, snapshot: Snapshot) -> str | None:
        """Write one tick (and any queued before it); see ``Store.append``."""
        self._pending.append(_prepare(snapshot))
        try:
            self._flush()
        except (sqlite3.InterfaceError, sqlite3.ProgrammingError) as exc:
            self._pending.pop()  # this snapshot holds a value SQLite cannot store
            raise StoreError(
                f"history {self.path}: tick {snapshot.seq} skipped, a value cannot be stored ({exc})"
            ) from None
        except sqlite3.Error as exc:
            while len(self._pending) > self._queue_ticks:
                self._pending.popleft()
                self._dropped += 1
            if error_code(exc) in TRANSIENT:
                return self._waiting_message(exc)
            raise StoreError(f"{describe(self.path, exc)}; {len(self._pending)} ticks kept in memory") from None
        self._dropped = 0
        if abs(snapshot.t_wall - self._last_retention) >= RETENTION_EVERY_S:
            self._apply_retention(snapshot.t_wall)
        return None

    def finish(self) -> str | None:
        """Write what is queued and the session's end, waiting ``CLOSE_WAIT_FACTOR`` busy
        timeouts for the lock. Never raises: returns a one-line message on failure."""
        try:
            close_wait_ms = int(self._busy_timeout_s * CLOSE_WAIT_FACTOR * 1000)
            self._conn.execute(f"PRAGMA busy_timeout = {close_wait_ms}")
            self._flush(ended_at=time.time())
        except Exception as exc:  # closing must never raise
            lost = len(self._pending)
            return describe(self.path, exc) + (f"; {lost} tick{'s' if lost != 1 else ''} not written" if lost else "")
        return None

    def _flush(self, ended_at: float | None = None) -> None:
        """Write every queued tick (and the session end) in one transaction."""
        conn = self._conn
        prev = dict(self._prev)
        try:
            conn.execute("BEGIN IMMEDIATE")
            for tick in self._pending:
                self._write_tick(tick)
            if ended_at is not None:
                conn.execute("UPDATE sessions SET ended_at = ? WHERE id = ?", (ended_at, self.session_id))
            conn.execute("COMMIT")
        except BaseException:
            for ids in (self._gpu_ids, self._endpoint_ids, self._label_ids):
                ids.clear()  # ids handed out in the failed transaction may not exist
            self._prev = prev
            rollback(conn)
            raise
        self._pending.clear()

    def _write_tick(self, tick: _Tick) -> None:
        minute = minute_of(tick.t)
        for gpu in tick.gpus:
            self._write_gpu(tick.t, minute, gpu)
        for endpoint in tick.endpoints:
            self._write_endpoint(tick.t, minute, endpoint)

    def _write_gpu(self, t: float, minute: int, g: _GpuRow) -> None:
        """The GPU's row, and its minute's rollup when the row is new."""
        conn, sid = self._conn, self.session_id
        gpu_id = self._gpu_ids.get(g.uuid)
        if gpu_id is None:
            gpu_id = self._gpu_ids[g.uuid] = self._insert(_GPU, (g.uuid, g.name))
        cum = _cum(g.totals)
        row = (sid, gpu_id, t, *g.values, self._label(g.energy_method), self._label(g.engines), *cum, g.usd_per_hour)
        inserted = conn.execute(_INSERT_GPU_TICK, row).rowcount == 1
        now = Point(t, g.totals)
        previous = self._prev.get(gpu_id)
        self._prev[gpu_id] = now  # also after a replay: this row is the latest
        if not inserted:
            return  # written before (a retry): counted once already
        if previous is None:  # the session's first row of this GPU: it adds nothing yet
            conn.execute(_INSERT_SESSION_GPU, (sid, gpu_id, g.values.gpu_index))
            previous = now
        delta = window_between(previous, now)
        power, util = g.values.power_w, g.values.util_pct
        conn.execute(
            _UPSERT_GPU_ROLLUP,
            (
                *(sid, minute, gpu_id, t, *cum),
                *(power or 0.0, int(power is not None), power),
                *(util or 0.0, int(util is not None)),
                *(delta.tokens_in, delta.tokens_out, delta.energy_j, delta.cost_usd, delta.span_s),
            ),
        )

    def _write_endpoint(self, t: float, minute: int, e: _EndpointRow) -> None:
        """The endpoint's row, and its minute's rollup when the row is new."""
        conn, sid = self._conn, self.session_id
        key = (e.name, e.url)
        endpoint_id = self._endpoint_ids.get(key)
        if endpoint_id is None:
            endpoint_id = self._endpoint_ids[key] = self._insert(_ENDPOINT, key)
        kind_id, model_id, gpus_id = self._label(e.kind), self._label(e.model), self._label(e.gpus)
        row = (sid, endpoint_id, t, kind_id, e.status, e.error, model_id, *e.values, gpus_id)
        if conn.execute(_INSERT_ENDPOINT_TICK, row).rowcount != 1:
            return  # written before (a retry)
        v = e.values
        conn.execute(
            _UPSERT_ENDPOINT_ROLLUP,
            (
                *(sid, minute, endpoint_id, t, v.tokens_in_cum, v.tokens_out_cum, int(e.status == "up")),
                *(v.running or 0.0, int(v.running is not None)),
                *(v.waiting or 0.0, int(v.waiting is not None)),
                *(v.kv_cache_fraction or 0.0, int(v.kv_cache_fraction is not None), v.kv_cache_fraction),
            ),
        )

    def _label(self, text: str | None) -> int | None:
        if text is None:
            return None
        found = self._label_ids.get(text)  # the per-tick case: a dict lookup, no SQL
        if found is None:
            found = self._label_ids[text] = self._insert(_LABEL, (text,))
        return found

    def _insert(self, sql: _Intern, values: tuple[str, ...]) -> int:
        """The row id of a repeated string (or pair), inserted on first sight."""
        self._conn.execute(sql.insert, values)
        row_id: int = self._conn.execute(sql.select, values[: sql.select_arity]).fetchone()[0]
        return row_id

    def _waiting_message(self, exc: sqlite3.Error) -> str:
        waiting = len(self._pending)
        message = (
            f"{describe(self.path, exc)}: {waiting} tick{'s' if waiting != 1 else ''} "
            f"waiting in memory (up to {self._queue_ticks}), written when it frees up"
        )
        if self._dropped:
            message += f"; {self._dropped} oldest dropped"
        return message

    def _apply_retention(self, now: float) -> None:
        """Delete raw rows and rollups past their retention. A lock just postpones it."""
        raw_cut, rollup_cut = now - self.raw_retention_s, now - self.rollup_retention_s
        conn = self._conn
        try:
            conn.execute("BEGIN IMMEDIATE")
            for table, time_column, cutoff in (
                ("gpu_ticks", "t", raw_cut),
                ("endpoint_ticks", "t", raw_cut),
                ("gpu_rollup_1m", "minute", rollup_cut),
                ("endpoint_rollup_1m", "minute", rollup_cut),
            ):
                session = self._next_session(table, -1)
                while session is not None:  # a range delete per session that has rows
                    conn.execute(f"DELETE FROM {table} WHERE session_id = ? AND {time_column} < ?", (session, cutoff))
                    session = self._next_session(table, session)
            conn.execute(
                "DELETE FROM sessions WHERE id != ? AND coalesce(ended_at, started_at) < ?"
                + "".join(
                    f" AND NOT EXISTS (SELECT 1 FROM {table} WHERE session_id = sessions.id)" for table in DATA_TABLES
                ),
                (self.session_id, rollup_cut),
            )
            conn.execute("DELETE FROM session_gpus WHERE session_id NOT IN (SELECT id FROM sessions)")
            conn.execute("COMMIT")
        except sqlite3.Error:
            rollback(conn)
            return  # tried again at the next minute
        self._last_retention = now

    def _next_session(self, table: str, after: int) -> int | None:
        row = self._conn.execute(
            f"SELECT session_id FROM {table} WHERE session_id > ? ORDER BY session_id LIMIT 1", (after,)
        ).fetchone()
        return None if row is None else int(row[0])

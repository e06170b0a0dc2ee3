"""The SQLite history: schema, one transaction per tick, 1-minute rollups, retention, queries.

This is the only module that imports ``sqlite_utils``. Layout (``SCHEMA_VERSION`` 1):

- ``sessions``: one row per ``Store.open``: when, where, which tokentop, the secret-free config.
- ``gpu_ticks`` / ``server_ticks``: one row per GPU / endpoint per tick in WITHOUT ROWID tables
  keyed by ``(session_id, t, gpu_id | server_id)``: a tick appends at one place (few pages
  written per tick), "a GPU's row at time t" is one primary-key seek plus a step over the other
  GPUs of that tick, and no separate index is needed. Cumulative figures (``*_cum``) are stored
  as they are, so the totals over any window are the difference of two rows.
- ``gpu_rollup_1m`` / ``server_rollup_1m``: one row per minute, updated in the tick's own
  transaction (last cumulative values, sample counts, sums for means, maxima), keyed by
  ``(session_id, minute, ...)`` so a long chart is one range read grouped by minute. GPU rollups
  also sum the tick-to-tick differences of the minute (``*_delta``, ``covered_s``): a chart adds
  them up and never needs the row before, nor the raw rows.
- ``session_gpus``: which GPUs each session saw, with their NVML index (listing without a scan).
- Strings that repeat every tick live once in ``gpus`` (uuid, name), ``servers`` (name, url) and
  ``labels`` (energy method, engine lists, kinds, models, GPU lists); the ``*_v`` views put the
  plain columns back for people and for ad-hoc SQL.

Writes: ``append`` never loses a tick to a lock or a full disk. The tick waits in a bounded
in-memory queue and is written with the next append; ``append`` then *returns* a one-line status
for the screen instead of raising. Writing a tick twice changes nothing (raw rows are keyed by
time and a rollup only counts a row that was actually inserted), so a retry is always safe.
Every other failure raises ``StoreError`` with a one-line message.

Retention runs at most once a minute (by the ticks' own clock) in its own short transaction:
raw rows older than ``raw_retention_h``, rollups older than ``rollup_retention_d``, then sessions
left without rows. Each deletion is a range on a primary key, never a scan.

Several processes may share one file (WAL, ``synchronous=NORMAL``, a busy timeout); each writes
its own session. Within a process, one ``Store`` may be used from several threads.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import math
import os
import sqlite3
import stat
import threading
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import sqlite_utils

from tokentop.derive import sum_windows
from tokentop.model import Snapshot, Window, usd_per_mtok

SCHEMA_VERSION = 1
APPLICATION_ID = 0x546F6B54  # "TokT": marks the file as a tokentop history
RETENTION_EVERY_S = 60.0
ROLLUP_FOR_WINDOWS_S = 3600.0  # gpu_series reads rollups for windows at least this long
RAW_LOOKBACK_S = 120.0  # how far before a raw chart's start to look for each GPU's previous row
OPEN_TIMEOUT_S = 5.0  # waiting for another process while creating the schema or the session
CLOSE_WAIT_FACTOR = 8  # close() waits this many busy timeouts to write what is still queued

# SQLite primary result codes (https://sqlite.org/rescode.html) and what they mean to a user.
_BUSY, _LOCKED, _READONLY, _IOERR, _CORRUPT, _FULL, _CANTOPEN, _NOTADB = 5, 6, 8, 10, 11, 13, 14, 26
_TRANSIENT = {_BUSY, _LOCKED, _FULL}
_PLAIN = {
    _BUSY: "is locked by another process",
    _LOCKED: "is locked by another connection",
    _READONLY: "is read-only",
    _IOERR: "could not be read or written (disk I/O error)",
    _CORRUPT: "is damaged (database disk image is malformed)",
    _FULL: "cannot grow: the disk is full",
    _CANTOPEN: "cannot be opened",
    _NOTADB: "is not a SQLite database",
}
_TEXT_TO_CODE = (  # Python 3.10 has no sqlite_errorcode; match SQLite's own messages instead
    ("database is locked", _BUSY),
    ("database table is locked", _LOCKED),
    ("readonly database", _READONLY),
    ("disk i/o error", _IOERR),
    ("malformed", _CORRUPT),
    ("database or disk is full", _FULL),
    ("unable to open", _CANTOPEN),
    ("not a database", _NOTADB),
)


class StoreError(Exception):
    """The history cannot be used; the message is one line that says which file and why."""


@dataclass(frozen=True)
class SessionInfo:
    id: int
    started_at: float
    ended_at: float | None  # None: still running, or the process died
    host: str
    tokentop_version: str
    config: dict[str, Any]


@dataclass(frozen=True)
class GpuInfo:
    uuid: str
    name: str
    index: int | None  # NVML index in the latest raw row; None once raw rows are gone


@dataclass(frozen=True)
class SeriesPoint:
    """One chart bucket ``[t, t + step)``; ``None`` where no rows fell in it."""

    t: float
    tok_s_in: float | None
    tok_s_out: float | None
    watts: float | None
    usd_per_mtok: float | None  # None also when no tokens flowed (idle) or a GPU has no price


@dataclass(frozen=True)
class GpuTrack:
    """One GPU's cumulative figures at a series of ticks, column by column (tens of thousands
    of points cost no more than a few tuples). ``energy_method`` is that of each tick's own
    interval; ``energy_counter_mj`` the raw NVML counter (None where it was not read)."""

    uuid: str
    t: tuple[float, ...]
    tokens_in_cum: tuple[float, ...]
    tokens_out_cum: tuple[float, ...]
    energy_j_cum: tuple[float, ...]
    energy_counter_mj: tuple[int | None, ...]
    energy_method: tuple[str | None, ...]


@dataclass(frozen=True)
class GpuMinutes:
    """One GPU's 1-minute rollups: what each minute delivered and the seconds it covered."""

    uuid: str
    minute: tuple[int, ...]
    covered_s: tuple[float, ...]
    tokens_in_delta: tuple[float, ...]
    tokens_out_delta: tuple[float, ...]
    energy_j_delta: tuple[float, ...]


@dataclass(frozen=True)
class EndpointTrack:
    """One endpoint's rows at a series of ticks, column by column. ``kind``, ``model`` and
    ``gpus`` are those of its last row in the track."""

    name: str
    url: str
    kind: str | None
    model: str | None
    gpus: tuple[str, ...]
    t: tuple[float, ...]
    status: tuple[str, ...]
    tokens_in_cum: tuple[float, ...]
    tokens_out_cum: tuple[float, ...]
    prompt_tokens_raw: tuple[float | None, ...]
    generation_tokens_raw: tuple[float | None, ...]
    requests_finished_raw: tuple[float | None, ...]
    ttft_p50_s: tuple[float | None, ...]
    ttft_p95_s: tuple[float | None, ...]
    itl_p50_s: tuple[float | None, ...]


# --- schema ----------------------------------------------------------------------------------

_CUM_COLUMNS = ("tokens_in_cum", "tokens_out_cum", "energy_j_cum", "cost_usd_cum", "busy_s_cum", "busy_cost_usd_cum")
_CUM_SELECT = ", ".join(_CUM_COLUMNS)

_SCHEMA = """
CREATE TABLE sessions (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    started_at REAL NOT NULL,          -- Unix seconds
    ended_at REAL,                     -- NULL while running (or after a crash)
    host TEXT NOT NULL,
    tokentop_version TEXT NOT NULL,
    config_json TEXT NOT NULL          -- secret-free settings
);
CREATE TABLE gpus (id INTEGER PRIMARY KEY, uuid TEXT NOT NULL UNIQUE, name TEXT NOT NULL);
CREATE TABLE servers (id INTEGER PRIMARY KEY, name TEXT NOT NULL, url TEXT NOT NULL,
                      UNIQUE (name, url));
CREATE TABLE labels (id INTEGER PRIMARY KEY, text TEXT NOT NULL UNIQUE);

CREATE TABLE gpu_ticks (
    session_id INTEGER NOT NULL REFERENCES sessions (id),
    gpu_id INTEGER NOT NULL REFERENCES gpus (id),
    t REAL NOT NULL,                   -- Unix seconds of the reading
    gpu_index INTEGER,
    status TEXT NOT NULL,
    error TEXT,
    util_pct REAL,
    mem_used_bytes INTEGER,
    mem_total_bytes INTEGER,
    power_w REAL,
    power_limit_w REAL,
    energy_counter_mj INTEGER,         -- raw NVML counter (since driver load)
    temperature_c REAL,
    sm_clock_mhz INTEGER,
    energy_method_id INTEGER REFERENCES labels (id),
    engines_id INTEGER REFERENCES labels (id),  -- comma-separated endpoint names
    tokens_in_cum REAL NOT NULL,       -- cumulative since the session started
    tokens_out_cum REAL NOT NULL,
    energy_j_cum REAL NOT NULL,
    cost_usd_cum REAL,                 -- NULL: no price for this GPU
    busy_s_cum REAL NOT NULL,
    busy_cost_usd_cum REAL,
    usd_per_hour REAL,
    PRIMARY KEY (session_id, t, gpu_id)
) WITHOUT ROWID;

CREATE TABLE server_ticks (
    session_id INTEGER NOT NULL REFERENCES sessions (id),
    server_id INTEGER NOT NULL REFERENCES servers (id),
    t REAL NOT NULL,
    kind_id INTEGER REFERENCES labels (id),
    status TEXT NOT NULL,
    error TEXT,
    model_id INTEGER REFERENCES labels (id),
    prompt_tokens_raw REAL,            -- the server's own counters, as read
    generation_tokens_raw REAL,
    tokens_in_cum REAL NOT NULL,       -- delivered since the session started (resets handled)
    tokens_out_cum REAL NOT NULL,
    running REAL,
    waiting REAL,
    kv_cache_fraction REAL,
    requests_finished_raw REAL,
    ttft_p50_s REAL,
    ttft_p95_s REAL,
    itl_p50_s REAL,
    gpus_id INTEGER REFERENCES labels (id),  -- comma-separated GPU UUIDs
    PRIMARY KEY (session_id, t, server_id)
) WITHOUT ROWID;

CREATE TABLE session_gpus (
    session_id INTEGER NOT NULL REFERENCES sessions (id),
    gpu_id INTEGER NOT NULL REFERENCES gpus (id),
    gpu_index INTEGER,                 -- NVML index when first seen in the session
    PRIMARY KEY (session_id, gpu_id)
) WITHOUT ROWID;

CREATE TABLE gpu_rollup_1m (
    session_id INTEGER NOT NULL REFERENCES sessions (id),
    minute INTEGER NOT NULL,           -- Unix seconds of the minute's start
    gpu_id INTEGER NOT NULL REFERENCES gpus (id),
    t_last REAL NOT NULL,              -- time of the row the cumulative values come from
    tokens_in_cum REAL NOT NULL,
    tokens_out_cum REAL NOT NULL,
    energy_j_cum REAL NOT NULL,
    cost_usd_cum REAL,
    busy_s_cum REAL NOT NULL,
    busy_cost_usd_cum REAL,
    samples INTEGER NOT NULL,
    power_w_sum REAL NOT NULL,         -- over the power_w_n samples that had a reading
    power_w_n INTEGER NOT NULL,
    power_w_max REAL,
    util_pct_sum REAL NOT NULL,
    util_pct_n INTEGER NOT NULL,
    tokens_in_delta REAL NOT NULL,     -- sums over the minute's ticks of the difference from
    tokens_out_delta REAL NOT NULL,    -- the GPU's previous row (0 for a session's first row)
    energy_j_delta REAL NOT NULL,
    cost_usd_delta REAL,               -- NULL when any tick of the minute had no price
    covered_s REAL NOT NULL,           -- seconds those differences span
    PRIMARY KEY (session_id, minute, gpu_id)
) WITHOUT ROWID;

CREATE TABLE server_rollup_1m (
    session_id INTEGER NOT NULL REFERENCES sessions (id),
    minute INTEGER NOT NULL,
    server_id INTEGER NOT NULL REFERENCES servers (id),
    t_last REAL NOT NULL,
    tokens_in_cum REAL NOT NULL,
    tokens_out_cum REAL NOT NULL,
    samples INTEGER NOT NULL,
    up_samples INTEGER NOT NULL,
    running_sum REAL NOT NULL,
    running_n INTEGER NOT NULL,
    waiting_sum REAL NOT NULL,
    waiting_n INTEGER NOT NULL,
    kv_sum REAL NOT NULL,
    kv_n INTEGER NOT NULL,
    kv_max REAL,
    PRIMARY KEY (session_id, minute, server_id)
) WITHOUT ROWID;

CREATE VIEW gpu_ticks_v AS
SELECT k.session_id, k.t, g.uuid, k.gpu_index, g.name, k.status, k.error, k.util_pct,
       k.mem_used_bytes, k.mem_total_bytes, k.power_w, k.power_limit_w, k.energy_counter_mj,
       k.temperature_c, k.sm_clock_mhz, m.text AS energy_method, e.text AS engines,
       k.tokens_in_cum, k.tokens_out_cum, k.energy_j_cum, k.cost_usd_cum, k.busy_s_cum,
       k.busy_cost_usd_cum, k.usd_per_hour
FROM gpu_ticks k JOIN gpus g ON g.id = k.gpu_id
LEFT JOIN labels m ON m.id = k.energy_method_id LEFT JOIN labels e ON e.id = k.engines_id;

CREATE VIEW server_ticks_v AS
SELECT k.session_id, k.t, s.name, s.url, kd.text AS kind, k.status, k.error, md.text AS model,
       k.prompt_tokens_raw, k.generation_tokens_raw, k.tokens_in_cum, k.tokens_out_cum,
       k.running, k.waiting, k.kv_cache_fraction, k.requests_finished_raw,
       k.ttft_p50_s, k.ttft_p95_s, k.itl_p50_s, gl.text AS gpus
FROM server_ticks k JOIN servers s ON s.id = k.server_id
LEFT JOIN labels kd ON kd.id = k.kind_id LEFT JOIN labels md ON md.id = k.model_id
LEFT JOIN labels gl ON gl.id = k.gpus_id;

CREATE VIEW gpu_rollup_1m_v AS
SELECT r.session_id, r.minute, g.uuid, g.name, r.t_last, r.tokens_in_cum, r.tokens_out_cum,
       r.energy_j_cum, r.cost_usd_cum, r.busy_s_cum, r.busy_cost_usd_cum, r.samples,
       r.power_w_sum / NULLIF(r.power_w_n, 0) AS power_w_mean, r.power_w_max,
       r.util_pct_sum / NULLIF(r.util_pct_n, 0) AS util_pct_mean, r.tokens_in_delta,
       r.tokens_out_delta, r.energy_j_delta, r.cost_usd_delta, r.covered_s
FROM gpu_rollup_1m r JOIN gpus g ON g.id = r.gpu_id;

CREATE VIEW server_rollup_1m_v AS
SELECT r.session_id, r.minute, s.name, s.url, r.t_last, r.tokens_in_cum, r.tokens_out_cum,
       r.samples, r.up_samples, r.running_sum / NULLIF(r.running_n, 0) AS running_mean,
       r.waiting_sum / NULLIF(r.waiting_n, 0) AS waiting_mean,
       r.kv_sum / NULLIF(r.kv_n, 0) AS kv_cache_fraction_mean, r.kv_max AS kv_cache_fraction_max
FROM server_rollup_1m r JOIN servers s ON s.id = r.server_id;
"""

_DATA_TABLES = ("gpu_ticks", "server_ticks", "gpu_rollup_1m", "server_rollup_1m")

_INSERT_GPU_TICK = (
    "INSERT OR IGNORE INTO gpu_ticks (session_id, gpu_id, t, gpu_index, status, error, util_pct,"
    " mem_used_bytes, mem_total_bytes, power_w, power_limit_w, energy_counter_mj, temperature_c,"
    " sm_clock_mhz, energy_method_id, engines_id, tokens_in_cum, tokens_out_cum, energy_j_cum,"
    " cost_usd_cum, busy_s_cum, busy_cost_usd_cum, usd_per_hour)"
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
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
_INSERT_SERVER_TICK = (
    "INSERT OR IGNORE INTO server_ticks (session_id, server_id, t, kind_id, status, error,"
    " model_id, prompt_tokens_raw, generation_tokens_raw, tokens_in_cum, tokens_out_cum, running,"
    " waiting, kv_cache_fraction, requests_finished_raw, ttft_p50_s, ttft_p95_s, itl_p50_s,"
    " gpus_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
_UPSERT_SERVER_ROLLUP = """
INSERT INTO server_rollup_1m (session_id, minute, server_id, t_last, tokens_in_cum,
    tokens_out_cum, samples, up_samples, running_sum, running_n, waiting_sum, waiting_n,
    kv_sum, kv_n, kv_max)
VALUES (?, ?, ?, ?, ?, ?, 1, ?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (session_id, minute, server_id) DO UPDATE SET
    t_last = excluded.t_last, tokens_in_cum = excluded.tokens_in_cum,
    tokens_out_cum = excluded.tokens_out_cum, samples = samples + 1,
    up_samples = up_samples + excluded.up_samples,
    running_sum = running_sum + excluded.running_sum, running_n = running_n + excluded.running_n,
    waiting_sum = waiting_sum + excluded.waiting_sum, waiting_n = waiting_n + excluded.waiting_n,
    kv_sum = kv_sum + excluded.kv_sum, kv_n = kv_n + excluded.kv_n,
    kv_max = max(coalesce(kv_max, excluded.kv_max), coalesce(excluded.kv_max, kv_max))
"""

# Chart queries. Both return, per bucket ``b`` of ``[since, until)``, the tokens, energy and
# cost delivered and the wall-clock seconds covered (the longest any GPU covered).
#
# Raw rows: the last row of each GPU in each bucket (SQLite takes the bare columns from the
# max(t) row), minus the last row of the bucket before (rows just before ``since`` form bucket -1).
_SERIES_RAW_SQL = """
WITH last AS (
    SELECT gpu_id,
           CASE WHEN t < :since THEN -1 ELSE CAST((t - :since) / :step AS INTEGER) END AS b,
           max(t) AS t, tokens_in_cum, tokens_out_cum, energy_j_cum, cost_usd_cum
    FROM gpu_ticks
    WHERE session_id = :session AND t >= :lo AND t < :until {gpu_filter}
    GROUP BY gpu_id, b
), d AS (
    SELECT b, tokens_in_cum - LAG(tokens_in_cum) OVER w AS tin,
           tokens_out_cum - LAG(tokens_out_cum) OVER w AS tout,
           energy_j_cum - LAG(energy_j_cum) OVER w AS e,
           cost_usd_cum - LAG(cost_usd_cum) OVER w AS cost, t - LAG(t) OVER w AS span
    FROM last WINDOW w AS (PARTITION BY gpu_id ORDER BY b)
)
SELECT b, sum(tin), sum(tout), sum(e), CASE WHEN count(cost) = count(*) THEN sum(cost) END,
       max(span)
FROM d WHERE b >= 0 AND span > 0 GROUP BY b
"""
# Rollups: the per-minute differences summed (one streaming pass in key order), then the
# minutes summed into buckets of whole minutes.
_SERIES_ROLLUP_SQL = """
SELECT CAST((minute - :since) / :step AS INTEGER) AS b, sum(tin), sum(tout), sum(e),
       CASE WHEN count(cost) = count(*) THEN sum(cost) END, sum(covered)
FROM (
    SELECT minute, sum(tokens_in_delta) AS tin, sum(tokens_out_delta) AS tout,
           sum(energy_j_delta) AS e, max(covered_s) AS covered,
           CASE WHEN count(cost_usd_delta) = count(*) THEN sum(cost_usd_delta) END AS cost
    FROM gpu_rollup_1m
    WHERE session_id = :session AND minute >= :since AND minute < :until {gpu_filter}
    GROUP BY minute
)
GROUP BY b
"""


# Tracks: for each boundary ``since + k * step`` (the last one clamped to ``until``), the rows of
# the last tick in ``(boundary - step, boundary]``: one seek per boundary, then the tick's rows by
# primary key (CROSS JOIN keeps the boundaries the outer loop), instead of a pass over every
# row. Ticks write all their rows at one ``t``.
_TRACK_SQL = """
WITH RECURSIVE k(b) AS (SELECT 0 UNION ALL SELECT b + 1 FROM k WHERE b < :n),
at(t) AS (
    SELECT DISTINCT (SELECT t FROM {table} WHERE session_id = :session
                     AND t <= min(:since + b * :step, :until)
                     AND t > min(:since + b * :step, :until) - :step
                     ORDER BY t DESC LIMIT 1) FROM k
)
SELECT {columns} FROM at CROSS JOIN {table} r ON r.session_id = :session AND r.t = at.t
ORDER BY r.{key}, r.t
"""
_GPU_TRACK_COLUMNS = (
    "r.gpu_id, r.t, r.tokens_in_cum, r.tokens_out_cum, r.energy_j_cum, r.energy_counter_mj, r.energy_method_id"
)
_SERVER_TRACK_COLUMNS = (
    "r.server_id, r.t, r.status, r.tokens_in_cum, r.tokens_out_cum,"
    " r.prompt_tokens_raw, r.generation_tokens_raw, r.requests_finished_raw,"
    " r.ttft_p50_s, r.ttft_p95_s, r.itl_p50_s, r.kind_id, r.model_id,"
    " r.gpus_id"
)

# --- rows prepared from a snapshot (kept in the queue while the file is locked) ---------------


@dataclass(frozen=True)
class _GpuRow:
    uuid: str
    name: str
    energy_method: str | None
    engines: str
    sample: tuple[Any, ...]  # gpu_index .. sm_clock_mhz, in _INSERT_GPU_TICK order
    cum: tuple[Any, ...]  # tokens_in_cum .. busy_cost_usd_cum
    usd_per_hour: float | None
    power_w: float | None
    util_pct: float | None


@dataclass(frozen=True)
class _ServerRow:
    name: str
    url: str
    kind: str | None
    model: str | None
    gpus: str
    status: str
    error: str | None
    values: tuple[Any, ...]  # prompt_tokens_raw .. itl_p50_s, in _INSERT_SERVER_TICK order
    tokens_in_cum: float
    tokens_out_cum: float
    running: float | None
    waiting: float | None
    kv: float | None


@dataclass(frozen=True)
class _Tick:
    t: float
    gpus: tuple[_GpuRow, ...]
    endpoints: tuple[_ServerRow, ...]


def _prepare(snapshot: Snapshot) -> _Tick:
    gpus = []
    for fig in snapshot.gpus:
        s, tot = fig.sample, fig.totals
        cum = (tot.tokens_in, tot.tokens_out, tot.energy_j, tot.cost_usd, tot.busy_s, tot.busy_cost_usd)
        sample = (
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
        gpus.append(
            _GpuRow(
                s.uuid,
                s.name,
                fig.energy_method,
                ",".join(fig.engines),
                sample,
                cum,
                fig.usd_per_hour_now,
                s.power_w,
                s.utilization_pct,
            )
        )
    servers = []
    for fig in snapshot.endpoints:
        s = fig.sample
        values = (
            s.prompt_tokens_total,
            s.generation_tokens_total,
            fig.tokens_in_total,
            fig.tokens_out_total,
            s.running,
            s.waiting,
            s.kv_cache_fraction,
            s.requests_finished_total,
            fig.ttft_p50_s,
            fig.ttft_p95_s,
            fig.itl_p50_s,
        )
        servers.append(
            _ServerRow(
                s.name,
                s.url,
                s.kind,
                s.model,
                ",".join(fig.gpus),
                s.status,
                s.error,
                values,
                fig.tokens_in_total,
                fig.tokens_out_total,
                s.running,
                s.waiting,
                s.kv_cache_fraction,
            )
        )
    return _Tick(snapshot.t_wall, tuple(gpus), tuple(servers))


def _minute(t: float) -> int:
    return int(t // 60) * 60


def _error_code(exc: BaseException) -> int | None:
    code = getattr(exc, "sqlite_errorcode", None)
    if code is not None:
        return code & 0xFF
    text = str(exc).lower()
    return next((code for needle, code in _TEXT_TO_CODE if needle in text), None)


def _describe(path: Path, exc: BaseException) -> str:
    plain = _PLAIN.get(_error_code(exc) or -1)
    if plain is None:
        return f"history {path}: {exc}"
    return f"history {path} {plain}"


class Store:
    """One open history file; ``Store.open`` for the sampler, ``Store.open_readonly`` to read.

    Thread-safe: the sampler thread appends while another thread may query or close.
    """

    def __init__(
        self,
        path: Path,
        conn: sqlite3.Connection,
        *,
        session_id: int | None,
        raw_retention_h: float,
        rollup_retention_d: float,
        busy_timeout_s: float,
        queue_ticks: int,
    ) -> None:
        self.path = path
        self._conn = conn
        self._db = sqlite_utils.Database(conn, execute_plugins=False)
        self.session_id = session_id
        self.raw_retention_s = raw_retention_h * 3600.0
        self.rollup_retention_s = rollup_retention_d * 86400.0
        self._busy_timeout_s = busy_timeout_s
        self._pending: deque[_Tick] = deque()
        self._queue_ticks = queue_ticks
        self._dropped = 0
        self._ids: dict[tuple[str, ...], int] = {}  # interned strings -> row ids; reset on rollback
        self._prev: dict[int, tuple[float, tuple[Any, ...]]] = {}  # gpu_id -> (t, cumulative)
        self._last_retention = -math.inf
        self._lock = threading.Lock()
        self._closed = False

    # --- opening ------------------------------------------------------------------------------

    @classmethod
    def open(
        cls,
        path: Path,
        *,
        host: str,
        version: str,
        config: dict[str, Any],
        raw_retention_h: float = 24,
        rollup_retention_d: float = 30,
        busy_timeout_s: float = 0.25,
        queue_ticks: int = 600,
    ) -> Store:
        """Open (creating when needed) ``path`` for writing and start a session in it.

        ``busy_timeout_s`` is how long one append waits for another writer before the tick is
        queued; ``queue_ticks`` bounds that queue (oldest dropped first, and reported).
        """
        path = Path(path).expanduser()
        _create_private_file(path)
        conn = _connect(path, uri=None)
        try:
            _set_pragma(conn, path, f"busy_timeout = {int(OPEN_TIMEOUT_S * 1000)}")
            _check_schema(conn, path)
            _enable_wal(conn, path)
            _set_pragma(conn, path, "synchronous = NORMAL")
            _create_schema(conn, path)
            session_id = _start_session(conn, path, host, version, config)
            _set_pragma(conn, path, f"busy_timeout = {int(busy_timeout_s * 1000)}")
        except BaseException:
            conn.close()
            raise
        return cls(
            path,
            conn,
            session_id=session_id,
            raw_retention_h=raw_retention_h,
            rollup_retention_d=rollup_retention_d,
            busy_timeout_s=busy_timeout_s,
            queue_ticks=queue_ticks,
        )

    @classmethod
    def open_readonly(cls, path: Path) -> Store:
        """Open an existing history to read it; nothing is created or written."""
        path = Path(path).expanduser()
        if not path.is_file():
            raise StoreError(f"no history at {path}")
        conn = _connect(path, uri=f"file:{quote(str(path.resolve()))}?mode=ro")
        try:
            _set_pragma(conn, path, f"busy_timeout = {int(OPEN_TIMEOUT_S * 1000)}")
            if not _check_schema(conn, path):
                raise StoreError(f"history {path} is an empty SQLite database, not a tokentop history")
        except BaseException:
            conn.close()
            raise
        return cls(
            path,
            conn,
            session_id=None,
            raw_retention_h=24,
            rollup_retention_d=30,
            busy_timeout_s=OPEN_TIMEOUT_S,
            queue_ticks=1,
        )

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # --- writing ------------------------------------------------------------------------------

    def append(self, snapshot: Snapshot) -> str | None:
        """Write one tick in one transaction. Returns None, or a one-line status when the tick
        had to wait in memory (file locked, disk full); it is written with a later append.

        Raises ``StoreError`` for any other failure (the queued ticks are kept; a snapshot with
        a value SQLite cannot store is skipped) and when the store is closed or read-only.
        """
        with self._lock:
            if self.session_id is None or self._closed:
                state = "closed" if self._closed else "open read-only"
                raise StoreError(f"history {self.path} is {state}; cannot append")
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
                if _error_code(exc) in _TRANSIENT:
                    return self._waiting_message(exc)
                raise StoreError(f"{_describe(self.path, exc)}; {len(self._pending)} ticks kept in memory") from None
            self._dropped = 0
            if abs(snapshot.t_wall - self._last_retention) >= RETENTION_EVERY_S:
                self._apply_retention(snapshot.t_wall)
            return None

    def close(self) -> str | None:
        """End the session: write queued ticks, set ``ended_at``, close the file.

        Idempotent and never raises; returns a one-line message when something could not be
        written (the file is broken, or locked for ``CLOSE_WAIT_FACTOR`` busy timeouts...).
        """
        with self._lock:
            if self._closed:
                return None
            self._closed = True
            message = None
            try:
                if self.session_id is not None:
                    close_wait_ms = int(self._busy_timeout_s * CLOSE_WAIT_FACTOR * 1000)
                    self._conn.execute(f"PRAGMA busy_timeout = {close_wait_ms}")
                    self._flush(ended_at=time.time())
            except Exception as exc:  # closing must never raise
                lost = len(self._pending)
                message = _describe(self.path, exc) + (
                    f"; {lost} tick{'s' if lost != 1 else ''} not written" if lost else ""
                )
            finally:
                with contextlib.suppress(Exception):  # nothing more can be done
                    self._conn.close()
            return message

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
            self._ids.clear()  # ids handed out in the failed transaction may not exist
            self._prev = prev
            _rollback(conn)
            raise
        self._pending.clear()

    def _write_tick(self, tick: _Tick) -> None:
        conn, sid, t, minute = self._conn, self.session_id, tick.t, _minute(tick.t)
        for g in tick.gpus:
            gpu_id = self._intern("gpus", g.uuid, g.name)
            ids = (self._label(g.energy_method), self._label(g.engines))
            row = (sid, gpu_id, t, *g.sample, *ids, *g.cum, g.usd_per_hour)
            inserted = conn.execute(_INSERT_GPU_TICK, row).rowcount == 1
            previous = self._prev.get(gpu_id)
            self._prev[gpu_id] = (t, g.cum)  # also after a replay: this row is the latest
            if not inserted:
                continue  # written before (a retry): counted once already
            if previous is None:
                conn.execute(
                    "INSERT OR IGNORE INTO session_gpus (session_id, gpu_id, gpu_index) VALUES (?, ?, ?)",
                    (sid, gpu_id, g.sample[0]),
                )
                previous = (t, g.cum)
            prev_t, prev_cum = previous
            deltas = [None if a is None or b is None else b - a for a, b in zip(prev_cum[:4], g.cum[:4], strict=True)]
            conn.execute(
                _UPSERT_GPU_ROLLUP,
                (
                    sid,
                    minute,
                    gpu_id,
                    t,
                    *g.cum,
                    g.power_w or 0.0,
                    int(g.power_w is not None),
                    g.power_w,
                    g.util_pct or 0.0,
                    int(g.util_pct is not None),
                    *deltas,
                    max(0.0, t - prev_t),
                ),
            )
        for s in tick.endpoints:
            server_id = self._intern("servers", s.name, s.url)
            row = (
                sid,
                server_id,
                t,
                self._label(s.kind),
                s.status,
                s.error,
                self._label(s.model),
                *s.values,
                self._label(s.gpus),
            )
            if conn.execute(_INSERT_SERVER_TICK, row).rowcount == 1:
                conn.execute(
                    _UPSERT_SERVER_ROLLUP,
                    (
                        sid,
                        minute,
                        server_id,
                        t,
                        s.tokens_in_cum,
                        s.tokens_out_cum,
                        int(s.status == "up"),
                        s.running or 0.0,
                        int(s.running is not None),
                        s.waiting or 0.0,
                        int(s.waiting is not None),
                        s.kv or 0.0,
                        int(s.kv is not None),
                        s.kv,
                    ),
                )

    def _label(self, text: str | None) -> int | None:
        return None if text is None else self._intern("labels", text)

    def _intern(self, table: str, *key: str) -> int:
        """Row id of a repeated string (or pair), inserting it on first sight."""
        cache_key = (table, *key)
        found = self._ids.get(cache_key)
        if found is not None:
            return found
        if table == "gpus":  # keyed by uuid; the name is stored from the first sighting
            sql_in, sql_get, params = (
                "INSERT OR IGNORE INTO gpus (uuid, name) VALUES (?, ?)",
                "SELECT id FROM gpus WHERE uuid = ?",
                key[:1],
            )
        elif table == "servers":
            sql_in, sql_get, params = (
                "INSERT OR IGNORE INTO servers (name, url) VALUES (?, ?)",
                "SELECT id FROM servers WHERE name = ? AND url = ?",
                key,
            )
        else:
            sql_in, sql_get, params = (
                "INSERT OR IGNORE INTO labels (text) VALUES (?)",
                "SELECT id FROM labels WHERE text = ?",
                key,
            )
        self._conn.execute(sql_in, key)
        found = self._conn.execute(sql_get, params).fetchone()[0]
        self._ids[cache_key] = found
        return found

    def _waiting_message(self, exc: sqlite3.Error) -> str:
        waiting = len(self._pending)
        message = (
            f"{_describe(self.path, exc)}: {waiting} tick{'s' if waiting != 1 else ''} "
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
                ("server_ticks", "t", raw_cut),
                ("gpu_rollup_1m", "minute", rollup_cut),
                ("server_rollup_1m", "minute", rollup_cut),
            ):
                session = self._next_session(table, -1)
                while session is not None:  # a range delete per session that has rows
                    conn.execute(f"DELETE FROM {table} WHERE session_id = ? AND {time_column} < ?", (session, cutoff))
                    session = self._next_session(table, session)
            conn.execute(
                "DELETE FROM sessions WHERE id != ? AND coalesce(ended_at, started_at) < ?"
                + "".join(
                    f" AND NOT EXISTS (SELECT 1 FROM {table} WHERE session_id = sessions.id)" for table in _DATA_TABLES
                ),
                (self.session_id, rollup_cut),
            )
            conn.execute("DELETE FROM session_gpus WHERE session_id NOT IN (SELECT id FROM sessions)")
            conn.execute("COMMIT")
        except sqlite3.Error:
            _rollback(conn)
            return  # tried again at the next minute
        self._last_retention = now

    def _next_session(self, table: str, after: int) -> int | None:
        row = self._conn.execute(
            f"SELECT session_id FROM {table} WHERE session_id > ? ORDER BY session_id LIMIT 1", (after,)
        ).fetchone()
        return row[0] if row else None

    # --- reading ------------------------------------------------------------------------------

    def sessions(self) -> list[SessionInfo]:
        with self._lock:
            return [
                SessionInfo(
                    row["id"],
                    row["started_at"],
                    row["ended_at"],
                    row["host"],
                    row["tokentop_version"],
                    json.loads(row["config_json"]),
                )
                for row in self._read(lambda: list(self._db.query("SELECT * FROM sessions ORDER BY id")))
            ]

    def latest_session_id(self) -> int | None:
        with self._lock:
            return self._read(lambda: self._conn.execute("SELECT max(id) FROM sessions").fetchone()[0])

    def gpus(self, session_id: int) -> list[GpuInfo]:
        """The GPUs a session has rows for, by NVML index (unknown indices last)."""
        with self._lock:
            return self._read(lambda: self._gpus(session_id))

    def _gpus(self, session_id: int) -> list[GpuInfo]:
        return [
            GpuInfo(*row)
            for row in self._conn.execute(
                "SELECT g.uuid, g.name, s.gpu_index FROM session_gpus s JOIN gpus g ON g.id = s.gpu_id"
                " WHERE s.session_id = ? ORDER BY s.gpu_index IS NULL, s.gpu_index, g.uuid",
                (session_id,),
            )
        ]

    def _gpu_ids(self, session_id: int) -> list[int]:
        return [
            gpu_id
            for (gpu_id,) in self._conn.execute(
                "SELECT gpu_id FROM session_gpus WHERE session_id = ? ORDER BY gpu_id", (session_id,)
            )
        ]

    def _gpu_id(self, uuid: str) -> int | None:
        row = self._conn.execute("SELECT id FROM gpus WHERE uuid = ?", (uuid,)).fetchone()
        return row[0] if row else None

    def gpu_series(
        self, session_id: int | None, uuid: str | None, since: float, until: float, step_s: float
    ) -> list[SeriesPoint]:
        """Chart points over ``[since, until)`` in buckets of ``step_s``: one GPU, or the whole
        host when ``uuid`` is None; one session, or all when ``session_id`` is None.

        A bucket's rates are what was delivered in it over the wall-clock seconds it covers.
        Windows under an hour read raw rows (``step_s`` should be at least the sampling
        interval); longer ones, and short ones whose raw rows are gone, read the 1-minute
        rollups: whole minutes, so ``step_s`` rises to a multiple of 60. Every bucket is
        returned, with None figures where there is no data. Sessions running at the same time
        are taken to watch the same GPUs: per bucket, the one that covered it longest counts.
        """
        if not (until > since and step_s > 0):
            raise ValueError("gpu_series needs until > since and step_s > 0")
        with self._lock:
            return self._read(lambda: self._series(session_id, uuid, since, until, step_s))

    def _series(
        self, session_id: int | None, uuid: str | None, since: float, until: float, step_s: float
    ) -> list[SeriesPoint]:
        gpu_id = None
        if uuid is not None:
            gpu_id = self._gpu_id(uuid)
            if gpu_id is None:
                return _points({}, since, until, step_s)
        if until - since < ROLLUP_FOR_WINDOWS_S:
            buckets = self._buckets(False, session_id, gpu_id, since, until, step_s)
            if buckets:
                return _points(buckets, since, until, step_s)
        step_s = math.ceil(step_s / 60.0) * 60.0
        return _points(self._buckets(True, session_id, gpu_id, since, until, step_s), since, until, step_s)

    def _buckets(
        self, rollups: bool, session_id: int | None, gpu_id: int | None, since: float, until: float, step_s: float
    ) -> dict[int, _Bucket]:
        read = self._session_buckets_from_rollups if rollups else self._session_buckets_from_raw
        chosen: dict[int, _Bucket] = {}
        for session in self._sessions_between(session_id, since, until):
            for b, bucket in read(session, gpu_id, since, until, step_s).items():
                if b not in chosen or bucket[4] > chosen[b][4]:
                    chosen[b] = bucket
        return chosen

    def _sessions_between(self, session_id: int | None, since: float, until: float) -> list[int]:
        if session_id is not None:
            return [session_id]
        sessions = self._conn.execute("SELECT DISTINCT session_id FROM session_gpus").fetchall()
        return [
            s
            for (s,) in sessions
            if self._conn.execute(
                "SELECT 1 FROM gpu_rollup_1m WHERE session_id = ? AND minute >= ? AND minute < ? LIMIT 1",
                (s, _minute(since) - 60, until),
            ).fetchone()
        ]

    def _session_buckets_from_raw(
        self, session: int, gpu_id: int | None, since: float, until: float, step_s: float
    ) -> dict[int, _Bucket]:
        sql = _SERIES_RAW_SQL.format(gpu_filter="" if gpu_id is None else "AND gpu_id = :gpu")
        params = {
            "session": session,
            "since": since,
            "until": until,
            "step": step_s,
            "lo": since - RAW_LOOKBACK_S,
            "gpu": gpu_id,
        }
        return {row[0]: row[1:] for row in self._conn.execute(sql, params)}

    def _session_buckets_from_rollups(
        self, session: int, gpu_id: int | None, since: float, until: float, step_s: float
    ) -> dict[int, _Bucket]:
        sql = _SERIES_ROLLUP_SQL.format(gpu_filter="" if gpu_id is None else "AND gpu_id = :gpu")
        params = {"session": session, "since": since, "until": until, "step": step_s, "gpu": gpu_id}
        return {row[0]: row[1:] for row in self._conn.execute(sql, params)}

    def window_totals(self, session_id: int, uuid: str | None, since: float, until: float) -> Window | None:
        """Totals over ``[since, until]``: per GPU, the difference of the cumulative columns
        of two rows, the last one at or before ``until`` and the last one at or before
        ``since`` (at most ``RAW_LOOKBACK_S`` earlier), else the first one after ``since`` (the
        session started later, or the GPU was away). A few index seeks per GPU.

        The whole host when ``uuid`` is None: sums over its GPUs (``busy_s`` in GPU-seconds),
        ``span_s`` the longest GPU span, ``cost_usd`` None when any GPU has no price. None when
        no GPU has two rows in the window.
        """
        with self._lock:
            return self._read(lambda: self._window_totals(session_id, uuid, since, until))

    def _window_totals(self, session_id: int, uuid: str | None, since: float, until: float) -> Window | None:
        if uuid is None:
            gpu_ids = self._gpu_ids(session_id)
        else:
            found = self._gpu_id(uuid)
            gpu_ids = [found] if found is not None else []
        per_gpu = []
        for gpu_id in gpu_ids:
            start = self._cum_before(session_id, gpu_id, since, since - RAW_LOOKBACK_S) or self._cum_after(
                session_id, gpu_id, since, until
            )
            end = self._cum_before(session_id, gpu_id, until, since)
            if start is not None and end is not None and end[0] > start[0]:
                per_gpu.append(_difference(start, end))
        return sum_windows(per_gpu) if per_gpu else None

    def _cum_before(self, session_id: int, gpu_id: int, at: float, not_before: float) -> tuple | None:
        """The GPU's last (t, *cumulative) at or before ``at``, not older than ``not_before``.

        Raw rows first, searched back at most ``RAW_LOOKBACK_S``; then the rollups, whose last
        values are those of a raw row: exact whenever that row is over a minute old."""
        row = self._conn.execute(
            f"SELECT t, {_CUM_SELECT} FROM gpu_ticks WHERE session_id = ? AND t <= ? AND t >= ?"
            " AND gpu_id = ? ORDER BY t DESC LIMIT 1",
            (session_id, at, max(not_before, at - RAW_LOOKBACK_S), gpu_id),
        ).fetchone()
        if row is not None:
            return row
        return self._conn.execute(
            f"SELECT t_last, {_CUM_SELECT} FROM gpu_rollup_1m WHERE session_id = ?"
            " AND minute <= ? AND minute >= ? AND gpu_id = ? AND t_last <= ? AND t_last >= ?"
            " ORDER BY minute DESC LIMIT 1",
            (session_id, at, _minute(not_before), gpu_id, at, not_before),
        ).fetchone()

    def _cum_after(self, session_id: int, gpu_id: int, at: float, not_after: float) -> tuple | None:
        """The GPU's first (t, *cumulative) in ``[at, not_after]``: the first raw row, or the
        first minute's last values when raw rows of that time are gone."""
        found = [
            row
            for row in (
                self._conn.execute(
                    f"SELECT t, {_CUM_SELECT} FROM gpu_ticks WHERE session_id = ? AND t >= ?"
                    " AND t <= ? AND gpu_id = ? ORDER BY t LIMIT 1",
                    (session_id, at, not_after, gpu_id),
                ).fetchone(),
                self._conn.execute(
                    f"SELECT t_last, {_CUM_SELECT} FROM gpu_rollup_1m WHERE session_id = ?"
                    " AND minute >= ? AND minute <= ? AND gpu_id = ? AND t_last >= ?"
                    " AND t_last <= ? ORDER BY minute LIMIT 1",
                    (session_id, _minute(at), not_after, gpu_id, at, not_after),
                ).fetchone(),
            )
            if row is not None
        ]
        return min(found, key=lambda row: row[0]) if found else None

    def session_bounds(self, session_id: int) -> tuple[float, float] | None:
        """The times of a session's first and last data: raw rows, or rollups where raw rows
        are gone (then the first is the start of the first minute). None: no data at all."""
        with self._lock:
            return self._read(lambda: self._session_bounds(session_id))

    def _session_bounds(self, session_id: int) -> tuple[float, float] | None:
        firsts, lasts = [], []
        for raw, rollup in (("gpu_ticks", "gpu_rollup_1m"), ("server_ticks", "server_rollup_1m")):
            raw_first, raw_last = (
                self._conn.execute(
                    f"SELECT t FROM {raw} WHERE session_id = ? ORDER BY t{order} LIMIT 1", (session_id,)
                ).fetchone()
                for order in ("", " DESC")
            )
            first_minute, last_minute = (
                self._conn.execute(
                    f"SELECT minute FROM {rollup} WHERE session_id = ? ORDER BY minute{order} LIMIT 1", (session_id,)
                ).fetchone()
                for order in ("", " DESC")
            )
            minute = first_minute[0] if first_minute is not None else None
            t_last = (
                None
                if last_minute is None
                else self._conn.execute(
                    f"SELECT max(t_last) FROM {rollup} WHERE session_id = ? AND minute = ?",
                    (session_id, last_minute[0]),
                ).fetchone()[0]
            )
            if raw_first is not None and (minute is None or raw_first[0] < minute + 60):
                firsts.append(raw_first[0])  # raw rows reach back to the first minute
            elif minute is not None:
                firsts.append(float(minute))
            lasts += [t for t in (raw_last and raw_last[0], t_last) if t is not None]
        return (min(firsts), max(lasts)) if firsts else None

    def raw_rows_cover(self, session_id: int, since: float) -> bool:
        """Whether a session's per-tick GPU rows still reach back to ``since``'s minute, where
        its rollups begin (retention deletes raw rows first, oldest first)."""
        with self._lock:
            return self._read(lambda: self._raw_rows_cover(session_id, since))

    def _raw_rows_cover(self, session_id: int, since: float) -> bool:
        first_raw = self._conn.execute(
            "SELECT t FROM gpu_ticks WHERE session_id = ? AND t >= ? ORDER BY t LIMIT 1", (session_id, _minute(since))
        ).fetchone()
        if first_raw is None:
            return False
        first_minute = self._conn.execute(
            "SELECT minute FROM gpu_rollup_1m WHERE session_id = ? AND minute >= ? ORDER BY minute LIMIT 1",
            (session_id, _minute(since)),
        ).fetchone()
        return first_minute is None or first_raw[0] < first_minute[0] + 60

    def gpu_tracks(self, session_id: int, since: float, until: float, step_s: float) -> list[GpuTrack]:
        """Each GPU's row of the last tick in ``(b - step_s, b]`` for every boundary
        ``b = since, since + step_s, ...`` up to ``until`` (the last boundary). A few seeks per
        boundary, however many rows lie between; the differences between consecutive points are
        what each span delivered. GPUs in ``gpu_id`` order."""
        if not (until >= since and step_s > 0):
            raise ValueError("gpu_tracks needs until >= since and step_s > 0")
        with self._lock:
            return self._read(lambda: self._gpu_tracks(session_id, since, until, step_s))

    def _gpu_tracks(self, session_id: int, since: float, until: float, step_s: float) -> list[GpuTrack]:
        uuids = dict(self._conn.execute("SELECT id, uuid FROM gpus"))
        labels = self._labels()
        rows = self._conn.execute(
            _TRACK_SQL.format(table="gpu_ticks", columns=_GPU_TRACK_COLUMNS, key="gpu_id"),
            _track_params(session_id, since, until, step_s),
        ).fetchall()
        tracks = []
        for gpu_id, group in itertools.groupby(rows, key=lambda row: row[0]):
            _, t, tin, tout, energy, counter, method = zip(*group, strict=True)
            tracks.append(GpuTrack(uuids[gpu_id], t, tin, tout, energy, counter, tuple(labels.get(m) for m in method)))
        return tracks

    def gpu_minutes(self, session_id: int, since: float, until: float) -> list[GpuMinutes]:
        """Each GPU's 1-minute rollups for the minutes starting in ``[minute of since,
        until)``: one range read. GPUs in ``gpu_id`` order."""
        with self._lock:
            return self._read(lambda: self._gpu_minutes(session_id, since, until))

    def _gpu_minutes(self, session_id: int, since: float, until: float) -> list[GpuMinutes]:
        uuids = dict(self._conn.execute("SELECT id, uuid FROM gpus"))
        rows = self._conn.execute(
            "SELECT gpu_id, minute, covered_s, tokens_in_delta, tokens_out_delta, energy_j_delta"
            " FROM gpu_rollup_1m WHERE session_id = ? AND minute >= ? AND minute < ?"
            " ORDER BY gpu_id, minute",
            (session_id, _minute(since), until),
        ).fetchall()
        return [
            GpuMinutes(uuids[gpu_id], *list(zip(*group, strict=True))[1:])
            for gpu_id, group in itertools.groupby(rows, key=lambda row: row[0])
        ]

    def gpu_energy_methods(self, session_id: int, uuid: str, after: float, until: float) -> dict[str | None, int]:
        """How many of one GPU's ticks in ``(after, until]`` measured their energy each way
        (``counter``, ``power_integral``, None: no power at all). Reads every row of the span:
        meant for the short spans where the counter does not explain the energy."""
        with self._lock:
            return self._read(lambda: self._gpu_energy_methods(session_id, uuid, after, until))

    def _gpu_energy_methods(self, session_id: int, uuid: str, after: float, until: float) -> dict[str | None, int]:
        gpu_id = self._gpu_id(uuid)
        if gpu_id is None:
            return {}
        return dict(
            self._conn.execute(
                "SELECT l.text, count(*) FROM gpu_ticks k LEFT JOIN labels l"
                " ON l.id = k.energy_method_id WHERE k.session_id = ? AND k.t > ? AND k.t <= ?"
                " AND k.gpu_id = ? GROUP BY k.energy_method_id",
                (session_id, after, until, gpu_id),
            ).fetchall()
        )

    def endpoint_tracks(self, session_id: int, since: float, until: float, step_s: float) -> list[EndpointTrack]:
        """Each endpoint's row of the last tick in ``(b - step_s, b]`` for every boundary, as
        ``gpu_tracks`` does for GPUs. Endpoints in ``server_id`` order."""
        if not (until >= since and step_s > 0):
            raise ValueError("endpoint_tracks needs until >= since and step_s > 0")
        with self._lock:
            return self._read(
                lambda: self._server_tracks(
                    _TRACK_SQL.format(table="server_ticks", columns=_SERVER_TRACK_COLUMNS, key="server_id"),
                    _track_params(session_id, since, until, step_s),
                )
            )

    def endpoint_rows(self, session_id: int, name: str, url: str, after: float, until: float) -> EndpointTrack | None:
        """Every row of one endpoint in ``(after, until]``; None when there is none."""
        with self._lock:
            found = self._read(
                lambda: self._server_tracks(
                    f"SELECT {_SERVER_TRACK_COLUMNS} FROM server_ticks r JOIN servers s"
                    " ON s.id = r.server_id WHERE r.session_id = :session AND r.t > :after"
                    " AND r.t <= :until AND s.name = :name AND s.url = :url ORDER BY r.t",
                    {"session": session_id, "after": after, "until": until, "name": name, "url": url},
                )
            )
        return found[0] if found else None

    def _server_tracks(self, sql: str, params: dict[str, Any]) -> list[EndpointTrack]:
        servers = {row[0]: row[1:] for row in self._conn.execute("SELECT id, name, url FROM servers")}
        labels = self._labels()
        tracks = []
        for server_id, group in itertools.groupby(self._conn.execute(sql, params).fetchall(), key=lambda row: row[0]):
            columns = list(zip(*group, strict=True))
            kind, model, gpus = (
                next((labels[v] for v in reversed(column) if v is not None), None) for column in columns[11:14]
            )
            tracks.append(
                EndpointTrack(*servers[server_id], kind, model, tuple(gpus.split(",")) if gpus else (), *columns[1:11])
            )
        return tracks

    def _labels(self) -> dict[int, str]:
        return dict(self._conn.execute("SELECT id, text FROM labels"))

    def _read(self, query: Any) -> Any:
        """Run a read, turning SQLite failures into ``StoreError``."""
        if self._closed:
            raise StoreError(f"history {self.path} is closed")
        try:
            return query()
        except sqlite3.Error as exc:
            raise StoreError(_describe(self.path, exc)) from None


def _track_params(session_id: int, since: float, until: float, step_s: float) -> dict[str, Any]:
    return {
        "session": session_id,
        "since": since,
        "until": until,
        "step": step_s,
        "n": max(0, math.ceil((until - since) / step_s)),
    }


def _difference(start: tuple, end: tuple) -> Window:
    """One GPU's window between two rows of (t, *_CUM_COLUMNS)."""
    (t0, *a), (t1, *b) = start, end
    cost, busy_cost = ((None if x is None or y is None else y - x) for x, y in ((a[3], b[3]), (a[5], b[5])))
    return Window(
        span_s=t1 - t0,
        tokens_in=b[0] - a[0],
        tokens_out=b[1] - a[1],
        energy_j=b[2] - a[2],
        cost_usd=cost,
        busy_s=b[4] - a[4],
        busy_cost_usd=busy_cost,
    )


# A chart bucket: (tokens_in, tokens_out, energy_j, cost_usd or None, wall-clock seconds covered).
_Bucket = tuple[float, float, float, float | None, float]
_NO_BUCKET: _Bucket = (0.0, 0.0, 0.0, None, 0.0)


def _points(buckets: dict[int, _Bucket], since: float, until: float, step_s: float) -> list[SeriesPoint]:
    points = []
    for b in range(math.ceil((until - since) / step_s)):
        start = since + b * step_s
        tokens_in, tokens_out, energy_j, cost_usd, span = buckets.get(b, _NO_BUCKET)
        if span <= 0:
            points.append(SeriesPoint(start, None, None, None, None))
            continue
        per_mtok = usd_per_mtok(cost_usd, tokens_out)
        points.append(SeriesPoint(start, tokens_in / span, tokens_out / span, energy_j / span, per_mtok))
    return points


# --- opening helpers ----------------------------------------------------------------------------


def _create_private_file(path: Path) -> None:
    """Create the folder and an empty file readable by its owner only (SQLite gives the
    -wal and -shm files the same permissions as the database file)."""
    if path.is_dir():
        raise StoreError(f"history {path} is a folder, not a file")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StoreError(f"cannot create the history folder {path.parent}: {exc.strerror or exc}") from None
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    except OSError as exc:
        raise StoreError(f"cannot write the history file {path}: {exc.strerror or exc}") from None
    try:
        info = os.fstat(fd)
        if info.st_mode & 0o077 and info.st_uid == os.geteuid():
            os.fchmod(fd, stat.S_IRUSR | stat.S_IWUSR)
    finally:
        os.close(fd)
    for suffix in ("-wal", "-shm"):
        companion = path.with_name(path.name + suffix)
        try:
            if companion.stat().st_mode & 0o077 and companion.stat().st_uid == os.geteuid():
                companion.chmod(0o600)
        except OSError:
            pass  # absent: SQLite creates it with the database file's permissions


def _connect(path: Path, *, uri: str | None) -> sqlite3.Connection:
    try:
        if uri is None:
            return sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
        return sqlite3.connect(uri, uri=True, isolation_level=None, check_same_thread=False)
    except sqlite3.Error as exc:
        raise StoreError(_describe(path, exc)) from None


def _set_pragma(conn: sqlite3.Connection, path: Path, pragma: str) -> tuple | None:
    try:
        return conn.execute(f"PRAGMA {pragma}").fetchone()
    except sqlite3.Error as exc:
        raise StoreError(_describe(path, exc)) from None


def _enable_wal(conn: sqlite3.Connection, path: Path) -> None:
    """Switch to WAL. The switch needs the file to itself and SQLite does not wait for that
    (no busy handler while upgrading a read lock), so retry while others open the file too."""
    deadline = time.monotonic() + OPEN_TIMEOUT_S
    while True:
        try:
            mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()
            break
        except sqlite3.Error as exc:
            if _error_code(exc) != _BUSY or time.monotonic() > deadline:
                raise StoreError(_describe(path, exc)) from None
            time.sleep(0.01)
    if mode is None or str(mode[0]).lower() != "wal":
        raise StoreError(
            f"history {path} cannot use WAL mode (its folder must be writable for the -wal and -shm files)"
        )


def _check_schema(conn: sqlite3.Connection, path: Path) -> bool:
    """True when the file holds a tokentop history this version can read; False when empty."""
    try:
        conn.execute("BEGIN")  # one snapshot: another process may be creating the schema
        try:
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            app_id = conn.execute("PRAGMA application_id").fetchone()[0]
            tables = sqlite_utils.Database(conn, execute_plugins=False).table_names()
        finally:
            _rollback(conn)
    except sqlite3.Error as exc:
        hint = "; move it away or choose another db_path" if _error_code(exc) == _NOTADB else ""
        raise StoreError(_describe(path, exc) + hint) from None
    if app_id not in (0, APPLICATION_ID) or (app_id == 0 and tables):
        raise StoreError(
            f"history {path} is a SQLite database of another program, not a tokentop history; choose another db_path"
        )
    if version > SCHEMA_VERSION:
        raise StoreError(
            f"history {path} was written by a newer tokentop (history schema "
            f"{version}; this version reads up to {SCHEMA_VERSION}); upgrade "
            "tokentop or choose another db_path"
        )
    return version > 0


def _rollback(conn: sqlite3.Connection) -> None:
    """Roll back what is open, if anything; a broken connection has nothing left to undo."""
    if conn.in_transaction:
        with contextlib.suppress(sqlite3.Error):
            conn.execute("ROLLBACK")


def _create_schema(conn: sqlite3.Connection, path: Path) -> None:
    """Create the tables once; two processes starting together create them once between them."""
    try:
        conn.execute("BEGIN IMMEDIATE")
        try:
            if conn.execute("PRAGMA user_version").fetchone()[0] == 0:
                for statement in _SCHEMA.split(";\n"):
                    if statement.strip():
                        conn.execute(statement)
                conn.execute(f"PRAGMA application_id = {APPLICATION_ID}")
                conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            conn.execute("COMMIT")
        except BaseException:
            _rollback(conn)
            raise
    except sqlite3.Error as exc:
        raise StoreError(_describe(path, exc)) from None


def _start_session(conn: sqlite3.Connection, path: Path, host: str, version: str, config: dict[str, Any]) -> int:
    row = {
        "started_at": time.time(),
        "ended_at": None,
        "host": host,
        "tokentop_version": version,
        "config_json": json.dumps(config, sort_keys=True, default=str),
    }
    try:
        table = sqlite_utils.Database(conn, execute_plugins=False).table("sessions")
        session_id = table.insert(row).last_pk
    except sqlite3.Error as exc:
        raise StoreError(_describe(path, exc)) from None
    return int(session_id)

"""The file's schema: its tables and views, its version, creating it and migrating older ones
(``files`` opens it).

Layout (``SCHEMA_VERSION`` 5):

- ``sessions``: one row per ``Store.open``: when, where, which tokentop, the secret-free config,
  which command opened it (``origin``: live, record, export, snapshot) and whether the host was
  simulated (``--demo``).
- ``gpu_ticks`` / ``endpoint_ticks``: one row per GPU / endpoint per tick in WITHOUT ROWID
  tables keyed by ``(session_id, t, gpu_id | endpoint_id)``: a tick appends at one place (few
  pages written per tick), "a GPU's row at time t" is one primary-key seek plus a step over the
  other GPUs of that tick, and no separate index is needed. Cumulative figures (``*_cum``) are
  stored as they are, so the totals over any window are the difference of two rows.
- ``gpu_rollup_1m`` / ``endpoint_rollup_1m``: one row per minute, updated in the tick's own
  transaction (last cumulative values, sample counts, sums for means, maxima), keyed by
  ``(session_id, minute, ...)`` so a long chart is one range read grouped by minute. GPU rollups
  also sum the tick-to-tick differences of the minute (``*_delta``, ``covered_s``): a chart adds
  them up and never needs the row before, nor the raw rows.
- ``session_gpus`` / ``session_endpoints``: the session's own totals, which retention never
  deletes (only with the session itself): which GPUs and endpoints it saw, each one's first row
  and latest row (cumulative figures and time; the latest refreshed every minute and at close),
  a GPU's ticks by how their energy was measured, an endpoint's kind, model, GPUs, requests
  completed and latency sums. A summary of a closed session reads the same totals however much
  of its per-tick detail is gone.
- Strings that repeat every tick live once in ``gpus`` (uuid, name), ``endpoints`` (name, url)
  and ``labels`` (energy method, engine lists, kinds, models, GPU lists); the ``*_v`` views put
  the plain columns back for people and for ad-hoc SQL.
- What a GPU or an endpoint keeps tick after tick (schema 5) lives once in ``gpu_states`` (NVML
  index, status, error, memory total, power limit, engines, energy method, cost rate) and ``endpoint_states``
  (status, error, kind, model, GPUs); a row points at its state. Memory used is counted in the
  largest unit that holds it exactly (1 MiB, 1 KiB or a byte: 3 or 4 bytes, not 6), which its
  state says. A GPU's cost rate changes with
  its power when electricity is priced: a row keeps its own rate only when it differs from its
  state's (``coalesce(row, state)``). ``power`` has no type: an INTEGER is whole milliwatts,
  NVML's unit (3 bytes, not 8), a REAL is watts that are not. Nothing is rounded: the views give
  every value back exactly as it was written.

Times (``t``, ``t_first``, ``t_last``, ``minute``) are Unix seconds on the session's own clock:
the wall time of its first tick plus the monotonic seconds since (``clock.SessionClock``), so
they never go backwards and their differences are measured durations whatever the wall clock
does.

Versions (``PRAGMA user_version``; ``PRAGMA application_id`` marks a tokentop file): 1 said
"server" where 2 says "endpoint" (``servers``, ``server_ticks``, ``server_rollup_1m``,
``server_id``, the views); 3 added the session totals (columns of ``session_gpus``, left NULL
for the sessions of older files, and ``session_endpoints``); 4 added ``sessions.origin`` (NULL
for the sessions of older files: not known) and ``sessions.simulated`` (for older sessions, read
from their stored config's ``demo``); 5 moved the columns that repeat tick after tick into
``gpu_states`` and ``endpoint_states`` and power into milliwatts where exact (a fifth smaller; the
rows are copied once, the views read as before). ``Store.open`` migrates in one
transaction, through every version in turn; a read-only open reads an older file as it is,
through ``NAMES[version]``.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

import sqlite_utils

from tokentop.history import states
from tokentop.history.errors import as_store_error

SCHEMA_VERSION = 5
APPLICATION_ID = 0x546F6B54  # "TokT": marks the file as a tokentop history


class TableNames(NamedTuple):
    """The names that differ between schema versions, and what a version keeps."""

    endpoints: str
    endpoint_ticks: str
    endpoint_rollup: str
    endpoint_id: str
    session_totals: bool  # the session totals of schema 3
    session_origin: bool  # ``sessions.origin`` and ``sessions.simulated`` of schema 4
    states: bool = False  # ``gpu_states`` and ``endpoint_states`` of schema 5


_ENDPOINT_NAMES = ("endpoints", "endpoint_ticks", "endpoint_rollup_1m", "endpoint_id")
NAMES = {
    1: TableNames("servers", "server_ticks", "server_rollup_1m", "server_id", False, False),
    2: TableNames(*_ENDPOINT_NAMES, session_totals=False, session_origin=False),
    3: TableNames(*_ENDPOINT_NAMES, session_totals=True, session_origin=False),
    4: TableNames(*_ENDPOINT_NAMES, session_totals=True, session_origin=True),
    5: TableNames(*_ENDPOINT_NAMES, session_totals=True, session_origin=True, states=True),
}
ORIGINS = ("live", "record", "export", "snapshot")  # the commands that open a session
DATA_TABLES = ("gpu_ticks", "endpoint_ticks", "gpu_rollup_1m", "endpoint_rollup_1m")
SESSION_TABLES = ("session_gpus", "session_endpoints")  # deleted only with their session

# The session totals of a GPU (schema 3: added to ``session_gpus``, NULL in the rows of sessions
# that older versions wrote): its first row and its latest one as of the last refresh (time and
# cumulative figures), and its ticks after the first by how their energy was measured.
_CUM_FIGURES = ("tokens_in", "tokens_out", "energy_j", "cost_usd", "busy_s", "busy_cost_usd")
SESSION_GPU_TOTALS = (
    "t_first",
    *(f"{name}_first" for name in _CUM_FIGURES),
    "t_last",
    *(f"{name}_last" for name in _CUM_FIGURES),
    "counter_ticks",
    "integrated_ticks",
    "unmeasured_ticks",
)


def _gpu_totals_column(name: str) -> str:
    """A ``session_gpus`` totals column with its type, as created and as migrated."""
    return f"{name} {'INTEGER' if name.endswith('_ticks') else 'REAL'}"


_SESSION_GPU_TOTALS_SQL = ",\n    ".join(map(_gpu_totals_column, SESSION_GPU_TOTALS))

_TABLES = """
CREATE TABLE sessions (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    started_at REAL NOT NULL,          -- Unix seconds
    ended_at REAL,                     -- NULL while running (or after a crash)
    host TEXT NOT NULL,
    tokentop_version TEXT NOT NULL,
    config_json TEXT NOT NULL,         -- secret-free settings
    origin TEXT,                       -- live | record | export | snapshot; NULL: not known
    simulated INTEGER NOT NULL DEFAULT 0  -- 1: a --demo host, not real readings
);
CREATE TABLE gpus (id INTEGER PRIMARY KEY, uuid TEXT NOT NULL UNIQUE, name TEXT NOT NULL);
CREATE TABLE endpoints (id INTEGER PRIMARY KEY, name TEXT NOT NULL, url TEXT NOT NULL,
                        UNIQUE (name, url));
CREATE TABLE labels (id INTEGER PRIMARY KEY, text TEXT NOT NULL UNIQUE);

CREATE TABLE gpu_states (
    id INTEGER PRIMARY KEY,
    gpu_index INTEGER,
    status TEXT NOT NULL,
    error TEXT,
    mem_total_bytes INTEGER,
    mem_used_unit INTEGER NOT NULL,    -- bytes in a unit of its rows' mem_used: 1 MiB, 1 KiB or 1
    power_limit_w REAL,
    engines_id INTEGER REFERENCES labels (id),  -- comma-separated endpoint names
    energy_method_id INTEGER REFERENCES labels (id),
    usd_per_hour REAL                  -- the rate of its first row; NULL: no price
);

CREATE TABLE gpu_ticks (
    session_id INTEGER NOT NULL REFERENCES sessions (id),
    gpu_id INTEGER NOT NULL REFERENCES gpus (id),
    t REAL NOT NULL,                   -- Unix seconds of the reading
    state_id INTEGER NOT NULL REFERENCES gpu_states (id),
    util_pct REAL,
    mem_used INTEGER,                  -- memory used, in its state's mem_used_unit
    power,                             -- no affinity: INTEGER milliwatts when exact, else REAL W
    energy_counter_mj INTEGER,         -- raw NVML counter (since driver load)
    temperature_c REAL,
    sm_clock_mhz INTEGER,
    tokens_in_cum REAL NOT NULL,       -- cumulative since the session started
    tokens_out_cum REAL NOT NULL,
    energy_j_cum REAL NOT NULL,
    cost_usd_cum REAL,                 -- NULL: no price for this GPU
    busy_s_cum REAL NOT NULL,
    busy_cost_usd_cum REAL,
    usd_per_hour REAL,                 -- NULL: its state's rate
    PRIMARY KEY (session_id, t, gpu_id)
) WITHOUT ROWID;

CREATE TABLE endpoint_states (
    id INTEGER PRIMARY KEY,
    status TEXT NOT NULL,
    error TEXT,
    kind_id INTEGER REFERENCES labels (id),
    model_id INTEGER REFERENCES labels (id),
    gpus_id INTEGER REFERENCES labels (id)   -- comma-separated GPU UUIDs
);

CREATE TABLE endpoint_ticks (
    session_id INTEGER NOT NULL REFERENCES sessions (id),
    endpoint_id INTEGER NOT NULL REFERENCES endpoints (id),
    t REAL NOT NULL,
    state_id INTEGER NOT NULL REFERENCES endpoint_states (id),
    prompt_tokens_raw REAL,            -- the endpoint's own counters, as read
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
    PRIMARY KEY (session_id, t, endpoint_id)
) WITHOUT ROWID;

CREATE TABLE session_gpus (
    session_id INTEGER NOT NULL REFERENCES sessions (id),
    gpu_id INTEGER NOT NULL REFERENCES gpus (id),
    gpu_index INTEGER,                 -- NVML index when first seen in the session
    {session_gpu_totals},
    PRIMARY KEY (session_id, gpu_id)
) WITHOUT ROWID;

CREATE TABLE session_endpoints (
    session_id INTEGER NOT NULL REFERENCES sessions (id),
    endpoint_id INTEGER NOT NULL REFERENCES endpoints (id),
    t_first REAL NOT NULL,             -- the endpoint's first row in the session
    tokens_in_first REAL NOT NULL,
    tokens_out_first REAL NOT NULL,
    t_last REAL NOT NULL,              -- its latest row, as of the last refresh
    tokens_in_last REAL NOT NULL,
    tokens_out_last REAL NOT NULL,
    kind_id INTEGER REFERENCES labels (id),   -- the latest known, as in its rows
    model_id INTEGER REFERENCES labels (id),
    gpus_id INTEGER REFERENCES labels (id),
    requests_finished_last REAL,       -- the server's counter in its latest row that had one
    requests_completed REAL,           -- increases since the first row, a restart counting
                                       -- from zero; NULL: the server publishes no such counter
    ttft_p50_s_sum REAL NOT NULL,      -- sums and counts over its rows after the first
    ttft_p50_s_n INTEGER NOT NULL,
    ttft_p95_s_sum REAL NOT NULL,
    ttft_p95_s_n INTEGER NOT NULL,
    itl_p50_s_sum REAL NOT NULL,
    itl_p50_s_n INTEGER NOT NULL,
    PRIMARY KEY (session_id, endpoint_id)
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

CREATE TABLE endpoint_rollup_1m (
    session_id INTEGER NOT NULL REFERENCES sessions (id),
    minute INTEGER NOT NULL,
    endpoint_id INTEGER NOT NULL REFERENCES endpoints (id),
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
    PRIMARY KEY (session_id, minute, endpoint_id)
) WITHOUT ROWID
""".replace("{session_gpu_totals}", _SESSION_GPU_TOTALS_SQL)

VIEWS = {
    "gpu_ticks_v": """
SELECT k.session_id, k.t, g.uuid, s.gpu_index, g.name, s.status, s.error, k.util_pct,
       k.mem_used * s.mem_used_unit AS mem_used_bytes, s.mem_total_bytes,
       CASE typeof(k.power) WHEN 'integer' THEN k.power / 1000.0 ELSE k.power END AS power_w,
       s.power_limit_w, k.energy_counter_mj, k.temperature_c, k.sm_clock_mhz,
       m.text AS energy_method, e.text AS engines, k.tokens_in_cum, k.tokens_out_cum,
       k.energy_j_cum, k.cost_usd_cum, k.busy_s_cum, k.busy_cost_usd_cum,
       coalesce(k.usd_per_hour, s.usd_per_hour) AS usd_per_hour
FROM gpu_ticks k JOIN gpus g ON g.id = k.gpu_id JOIN gpu_states s ON s.id = k.state_id
LEFT JOIN labels m ON m.id = s.energy_method_id LEFT JOIN labels e ON e.id = s.engines_id""",
    "endpoint_ticks_v": """
SELECT k.session_id, k.t, p.name, p.url, kd.text AS kind, s.status, s.error, md.text AS model,
       k.prompt_tokens_raw, k.generation_tokens_raw, k.tokens_in_cum, k.tokens_out_cum,
       k.running, k.waiting, k.kv_cache_fraction, k.requests_finished_raw,
       k.ttft_p50_s, k.ttft_p95_s, k.itl_p50_s, gl.text AS gpus
FROM endpoint_ticks k JOIN endpoints p ON p.id = k.endpoint_id
JOIN endpoint_states s ON s.id = k.state_id
LEFT JOIN labels kd ON kd.id = s.kind_id LEFT JOIN labels md ON md.id = s.model_id
LEFT JOIN labels gl ON gl.id = s.gpus_id""",
    "gpu_rollup_1m_v": """
SELECT r.session_id, r.minute, g.uuid, g.name, r.t_last, r.tokens_in_cum, r.tokens_out_cum,
       r.energy_j_cum, r.cost_usd_cum, r.busy_s_cum, r.busy_cost_usd_cum, r.samples,
       r.power_w_sum / NULLIF(r.power_w_n, 0) AS power_w_mean, r.power_w_max,
       r.util_pct_sum / NULLIF(r.util_pct_n, 0) AS util_pct_mean, r.tokens_in_delta,
       r.tokens_out_delta, r.energy_j_delta, r.cost_usd_delta, r.covered_s
FROM gpu_rollup_1m r JOIN gpus g ON g.id = r.gpu_id""",
    "endpoint_rollup_1m_v": """
SELECT r.session_id, r.minute, p.name, p.url, r.t_last, r.tokens_in_cum, r.tokens_out_cum,
       r.samples, r.up_samples, r.running_sum / NULLIF(r.running_n, 0) AS running_mean,
       r.waiting_sum / NULLIF(r.waiting_n, 0) AS waiting_mean,
       r.kv_sum / NULLIF(r.kv_n, 0) AS kv_cache_fraction_mean, r.kv_max AS kv_cache_fraction_max
FROM endpoint_rollup_1m r JOIN endpoints p ON p.id = r.endpoint_id""",
    "session_gpus_v": """
SELECT s.session_id, g.uuid, s.gpu_index, g.name, s.t_first, s.t_last,
       s.tokens_in_last - s.tokens_in_first AS tokens_in,
       s.tokens_out_last - s.tokens_out_first AS tokens_out,
       s.energy_j_last - s.energy_j_first AS energy_j, s.cost_usd_last - s.cost_usd_first AS cost_usd,
       s.busy_s_last - s.busy_s_first AS busy_s, s.counter_ticks, s.integrated_ticks, s.unmeasured_ticks
FROM session_gpus s JOIN gpus g ON g.id = s.gpu_id""",
    "session_endpoints_v": """
SELECT s.session_id, p.name, p.url, kd.text AS kind, md.text AS model, gl.text AS gpus, s.t_first,
       s.t_last, s.tokens_in_last - s.tokens_in_first AS tokens_in,
       s.tokens_out_last - s.tokens_out_first AS tokens_out, s.requests_completed,
       s.ttft_p50_s_sum / NULLIF(s.ttft_p50_s_n, 0) AS ttft_p50_s_mean,
       s.ttft_p95_s_sum / NULLIF(s.ttft_p95_s_n, 0) AS ttft_p95_s_mean,
       s.itl_p50_s_sum / NULLIF(s.itl_p50_s_n, 0) AS itl_p50_s_mean
FROM session_endpoints s JOIN endpoints p ON p.id = s.endpoint_id
LEFT JOIN labels kd ON kd.id = s.kind_id LEFT JOIN labels md ON md.id = s.model_id
LEFT JOIN labels gl ON gl.id = s.gpus_id""",
}

# The endpoint rows' view as schemas 2-4 had it: what the 1 -> 2 step creates (5 replaces it).
_ENDPOINT_TICKS_V4_VIEW = """
SELECT k.session_id, k.t, p.name, p.url, kd.text AS kind, k.status, k.error, md.text AS model,
       k.prompt_tokens_raw, k.generation_tokens_raw, k.tokens_in_cum, k.tokens_out_cum,
       k.running, k.waiting, k.kv_cache_fraction, k.requests_finished_raw,
       k.ttft_p50_s, k.ttft_p95_s, k.itl_p50_s, gl.text AS gpus
FROM endpoint_ticks k JOIN endpoints p ON p.id = k.endpoint_id
LEFT JOIN labels kd ON kd.id = k.kind_id LEFT JOIN labels md ON md.id = k.model_id
LEFT JOIN labels gl ON gl.id = k.gpus_id"""


def minute_of(t: float) -> int:
    """The rollups' ``minute`` of a time: the Unix seconds of its minute's start."""
    return int(t // 60) * 60


def database(conn: sqlite3.Connection) -> sqlite_utils.Database:
    """sqlite-utils over our own connection, for what is off the per-tick path."""
    return sqlite_utils.Database(conn, execute_plugins=False, recursive_triggers=False)


def _create(db: sqlite_utils.Database) -> None:
    for statement in _TABLES.split(";\n"):
        db.execute(statement)
    for name, sql in VIEWS.items():
        db.create_view(name, sql.strip())


def _migrate_1_to_2(db: sqlite_utils.Database) -> None:
    """Say "endpoint" where schema 1 said "server": tables, key columns, views. ALTER TABLE only
    rewrites the schema (no row is copied, WITHOUT ROWID stays), so this takes milliseconds on
    any file; SQLite renames the foreign keys that point at a renamed table."""
    old, new = NAMES[1], NAMES[2]
    for view in ("server_ticks_v", "server_rollup_1m_v"):
        db.execute(f"DROP VIEW IF EXISTS {view}")
    db.rename_table(old.endpoints, new.endpoints)
    for old_table, new_table in ((old.endpoint_ticks, new.endpoint_ticks), (old.endpoint_rollup, new.endpoint_rollup)):
        db.rename_table(old_table, new_table)
        db.execute(f"ALTER TABLE {new_table} RENAME COLUMN {old.endpoint_id} TO {new.endpoint_id}")
    db.create_view("endpoint_ticks_v", _ENDPOINT_TICKS_V4_VIEW.strip())
    db.create_view("endpoint_rollup_1m_v", VIEWS["endpoint_rollup_1m_v"].strip())


def _migrate_2_to_3(db: sqlite_utils.Database) -> None:
    """Add the session totals: columns of ``session_gpus`` (NULL for the sessions already in
    the file: their summaries read their rows as before) and ``session_endpoints``. Schema
    changes only, no row copied."""
    for column in SESSION_GPU_TOTALS:
        db.execute(f"ALTER TABLE session_gpus ADD COLUMN {_gpu_totals_column(column)}")
    db.execute(_create_statement("session_endpoints"))
    for view in ("session_gpus_v", "session_endpoints_v"):
        db.create_view(view, VIEWS[view].strip())


def _migrate_3_to_4(db: sqlite_utils.Database) -> None:
    """Say which command opened each session and whether its host was simulated: ``origin``
    stays NULL for the sessions already in the file (not known), ``simulated`` comes from their
    stored settings (``demo``). Two columns added, one small update."""
    db.execute("ALTER TABLE sessions ADD COLUMN origin TEXT")
    db.execute("ALTER TABLE sessions ADD COLUMN simulated INTEGER NOT NULL DEFAULT 0")
    demo = [
        (session_id,)
        for session_id, config_json in db.execute("SELECT id, config_json FROM sessions").fetchall()
        if config_says_demo(config_json)
    ]
    db.conn.executemany("UPDATE sessions SET simulated = 1 WHERE id = ?", demo)


def _migrate_4_to_5(db: sqlite_utils.Database) -> None:
    """Move what repeats tick after tick into ``gpu_states`` / ``endpoint_states`` and power into
    milliwatts where exact (``states``): the raw rows are copied once; no value changes."""
    tables = ("gpu_states", "endpoint_states", "gpu_ticks", "endpoint_ticks")
    states.migrate_4_to_5(db, {table: _create_statement(table) for table in tables}, VIEWS)


def config_says_demo(config_json: str) -> bool:
    """Whether a session's stored settings say ``demo``: how files before schema 4 tell a
    simulated session."""
    try:
        config = json.loads(config_json)
    except ValueError:
        return False
    return isinstance(config, dict) and config.get("demo") is True


def _create_statement(table: str) -> str:
    """The ``CREATE TABLE`` of ``table`` in the current schema."""
    return next(s for s in _TABLES.split(";\n") if s.strip().startswith(f"CREATE TABLE {table} ("))


# Migrations by the version they start from; each leads to the next version.
MIGRATIONS: dict[int, Callable[[sqlite_utils.Database], None]] = {
    1: _migrate_1_to_2,
    2: _migrate_2_to_3,
    3: _migrate_3_to_4,
    4: _migrate_4_to_5,
}


def create_or_migrate(conn: sqlite3.Connection, path: Path) -> None:
    """Bring the file to ``SCHEMA_VERSION`` in one transaction: create the tables in an empty
    file, or run the migrations from its version. Two processes starting together do it once."""
    with as_store_error(path):
        conn.execute("BEGIN IMMEDIATE")
        try:
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            if version < SCHEMA_VERSION:  # else another process got here first
                db = database(conn)
                if version == 0:
                    _create(db)
                    conn.execute(f"PRAGMA application_id = {APPLICATION_ID}")
                else:
                    for step in range(version, SCHEMA_VERSION):
                        MIGRATIONS[step](db)
                conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            conn.execute("COMMIT")
        except BaseException:
            rollback(conn)
            raise


def rollback(conn: sqlite3.Connection) -> None:
    """Roll back what is open, if anything; a broken connection has nothing left to undo."""
    if conn.in_transaction:
        with contextlib.suppress(sqlite3.Error):
            conn.execute("ROLLBACK")

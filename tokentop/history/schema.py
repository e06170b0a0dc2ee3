"""The file: its schema, its version, opening it, creating it and migrating older ones.

Layout (``SCHEMA_VERSION`` 2):

- ``sessions``: one row per ``Store.open``: when, where, which tokentop, the secret-free config.
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
- ``session_gpus``: which GPUs each session saw, with their NVML index (listing without a scan).
- Strings that repeat every tick live once in ``gpus`` (uuid, name), ``endpoints`` (name, url)
  and ``labels`` (energy method, engine lists, kinds, models, GPU lists); the ``*_v`` views put
  the plain columns back for people and for ad-hoc SQL.

Versions (``PRAGMA user_version``; ``PRAGMA application_id`` marks a tokentop file): 1 said
"server" where 2 says "endpoint" (``servers``, ``server_ticks``, ``server_rollup_1m``,
``server_id``, the views). ``Store.open`` migrates in one transaction; a read-only open reads a
version-1 file as it is, through ``NAMES[version]``.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import stat
import time
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple
from urllib.parse import quote

import sqlite_utils

from tokentop.history.errors import BUSY, NOTADB, StoreError, as_store_error, describe, error_code

SCHEMA_VERSION = 2
APPLICATION_ID = 0x546F6B54  # "TokT": marks the file as a tokentop history
OPEN_TIMEOUT_S = 5.0  # waiting for another process while creating the schema or the session


class TableNames(NamedTuple):
    """The names that differ between schema versions."""

    endpoints: str
    endpoint_ticks: str
    endpoint_rollup: str
    endpoint_id: str


NAMES = {
    1: TableNames("servers", "server_ticks", "server_rollup_1m", "server_id"),
    2: TableNames("endpoints", "endpoint_ticks", "endpoint_rollup_1m", "endpoint_id"),
}
DATA_TABLES = ("gpu_ticks", "endpoint_ticks", "gpu_rollup_1m", "endpoint_rollup_1m")

_TABLES = """
CREATE TABLE sessions (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    started_at REAL NOT NULL,          -- Unix seconds
    ended_at REAL,                     -- NULL while running (or after a crash)
    host TEXT NOT NULL,
    tokentop_version TEXT NOT NULL,
    config_json TEXT NOT NULL          -- secret-free settings
);
CREATE TABLE gpus (id INTEGER PRIMARY KEY, uuid TEXT NOT NULL UNIQUE, name TEXT NOT NULL);
CREATE TABLE endpoints (id INTEGER PRIMARY KEY, name TEXT NOT NULL, url TEXT NOT NULL,
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

CREATE TABLE endpoint_ticks (
    session_id INTEGER NOT NULL REFERENCES sessions (id),
    endpoint_id INTEGER NOT NULL REFERENCES endpoints (id),
    t REAL NOT NULL,
    kind_id INTEGER REFERENCES labels (id),
    status TEXT NOT NULL,
    error TEXT,
    model_id INTEGER REFERENCES labels (id),
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
    gpus_id INTEGER REFERENCES labels (id),  -- comma-separated GPU UUIDs
    PRIMARY KEY (session_id, t, endpoint_id)
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
"""

VIEWS = {
    "gpu_ticks_v": """
SELECT k.session_id, k.t, g.uuid, k.gpu_index, g.name, k.status, k.error, k.util_pct,
       k.mem_used_bytes, k.mem_total_bytes, k.power_w, k.power_limit_w, k.energy_counter_mj,
       k.temperature_c, k.sm_clock_mhz, m.text AS energy_method, e.text AS engines,
       k.tokens_in_cum, k.tokens_out_cum, k.energy_j_cum, k.cost_usd_cum, k.busy_s_cum,
       k.busy_cost_usd_cum, k.usd_per_hour
FROM gpu_ticks k JOIN gpus g ON g.id = k.gpu_id
LEFT JOIN labels m ON m.id = k.energy_method_id LEFT JOIN labels e ON e.id = k.engines_id""",
    "endpoint_ticks_v": """
SELECT k.session_id, k.t, p.name, p.url, kd.text AS kind, k.status, k.error, md.text AS model,
       k.prompt_tokens_raw, k.generation_tokens_raw, k.tokens_in_cum, k.tokens_out_cum,
       k.running, k.waiting, k.kv_cache_fraction, k.requests_finished_raw,
       k.ttft_p50_s, k.ttft_p95_s, k.itl_p50_s, gl.text AS gpus
FROM endpoint_ticks k JOIN endpoints p ON p.id = k.endpoint_id
LEFT JOIN labels kd ON kd.id = k.kind_id LEFT JOIN labels md ON md.id = k.model_id
LEFT JOIN labels gl ON gl.id = k.gpus_id""",
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
}


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
    for view in ("endpoint_ticks_v", "endpoint_rollup_1m_v"):
        db.create_view(view, VIEWS[view].strip())


# Migrations by the version they start from; each leads to the next version.
MIGRATIONS: dict[int, Callable[[sqlite_utils.Database], None]] = {1: _migrate_1_to_2}


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


def _not_a_database_hint(exc: sqlite3.Error) -> str:
    return "; move it away or choose another db_path" if error_code(exc) == NOTADB else ""


def check(conn: sqlite3.Connection, path: Path) -> int:
    """The file's schema version (0: an empty database). Refuses other programs' databases and
    schemas newer than this code knows."""
    with as_store_error(path, _not_a_database_hint):
        conn.execute("BEGIN")  # one snapshot: another process may be creating the schema
        try:
            version: int = conn.execute("PRAGMA user_version").fetchone()[0]
            app_id = conn.execute("PRAGMA application_id").fetchone()[0]
            tables = database(conn).table_names()
        finally:
            rollback(conn)
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
    return version


# --- opening ------------------------------------------------------------------------------------


def open_for_writing(path: Path) -> sqlite3.Connection:
    """Create (owner-only) or open ``path``, switch it to WAL and bring its schema up to date."""
    create_private_file(path)
    conn = _connect(path, uri=None)
    try:
        set_pragma(conn, path, f"busy_timeout = {int(OPEN_TIMEOUT_S * 1000)}")
        check(conn, path)
        _enable_wal(conn, path)
        set_pragma(conn, path, "synchronous = NORMAL")
        create_or_migrate(conn, path)
    except BaseException:
        conn.close()
        raise
    return conn


def open_for_reading(path: Path) -> tuple[sqlite3.Connection, int]:
    """Open an existing history read-only; returns the connection and the file's schema version."""
    if not path.is_file():
        raise StoreError(f"no history at {path}")
    conn = _connect(path, uri=f"file:{quote(str(path.resolve()))}?mode=ro")
    try:
        set_pragma(conn, path, f"busy_timeout = {int(OPEN_TIMEOUT_S * 1000)}")
        version = check(conn, path)
        if version == 0:
            raise StoreError(f"history {path} is an empty SQLite database, not a tokentop history")
    except BaseException:
        conn.close()
        raise
    return conn, version


def create_private_file(path: Path) -> None:
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
    with as_store_error(path):
        if uri is None:
            return sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
        return sqlite3.connect(uri, uri=True, isolation_level=None, check_same_thread=False)


def set_pragma(conn: sqlite3.Connection, path: Path, pragma: str) -> None:
    with as_store_error(path):
        conn.execute(f"PRAGMA {pragma}").fetchone()


def _enable_wal(conn: sqlite3.Connection, path: Path) -> None:
    """Switch to WAL. The switch needs the file to itself and SQLite does not wait for that
    (no busy handler while upgrading a read lock), so retry while others open the file too."""
    deadline = time.monotonic() + OPEN_TIMEOUT_S
    while True:
        try:
            mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()
            break
        except sqlite3.Error as exc:
            if error_code(exc) != BUSY or time.monotonic() > deadline:
                raise StoreError(describe(path, exc)) from None
            time.sleep(0.01)
    if mode is None or str(mode[0]).lower() != "wal":
        raise StoreError(
            f"history {path} cannot use WAL mode (its folder must be writable for the -wal and -shm files)"
        )


def rollback(conn: sqlite3.Connection) -> None:
    """Roll back what is open, if anything; a broken connection has nothing left to undo."""
    if conn.in_transaction:
        with contextlib.suppress(sqlite3.Error):
            conn.execute("ROLLBACK")

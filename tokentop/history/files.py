"""Opening the history file: creating it readable by its owner only, checking that it is a
tokentop history of a version this code knows, WAL, then the schema brought up to date
(``schema.create_or_migrate``); or opening it read-only, as it is."""

from __future__ import annotations

import os
import sqlite3
import stat
import time
from pathlib import Path
from urllib.parse import quote

from tokentop.history.errors import BUSY, NOTADB, StoreError, as_store_error, describe, error_code
from tokentop.history.schema import APPLICATION_ID, SCHEMA_VERSION, create_or_migrate, database, rollback

OPEN_TIMEOUT_S = 5.0  # waiting for another process while creating the schema or the session
# Waiting for another process that migrates the file (a 24 h schema-4 file takes about 5 s, a
# longer raw retention more): the file is opened once it is done, not refused as locked.
MIGRATION_WAIT_S = 120.0


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


def open_for_writing(path: Path) -> sqlite3.Connection:
    """Create (owner-only) or open ``path``, switch it to WAL and bring its schema up to date."""
    create_private_file(path)
    conn = _connect(path, uri=None)
    try:
        set_pragma(conn, path, f"busy_timeout = {int(OPEN_TIMEOUT_S * 1000)}")
        version = check(conn, path)
        _enable_wal(conn, path)
        set_pragma(conn, path, "synchronous = NORMAL")
        if version < SCHEMA_VERSION:  # another process may be migrating it: wait for that
            set_pragma(conn, path, f"busy_timeout = {int(MIGRATION_WAIT_S * 1000)}")
        create_or_migrate(conn, path)
        set_pragma(conn, path, f"busy_timeout = {int(OPEN_TIMEOUT_S * 1000)}")
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

"""Retention: raw rows older than the raw retention, rollups older than the rollup retention,
then the sessions left with nothing but their totals. Each deletion is a range on a primary key,
never a scan, in one short transaction of its own.

"Now" is the session's own clock at its latest reading, or the wall clock when that is earlier
(``Writer``): a wall clock that jumps ahead deletes nothing early, and a session's rows are only
deleted once older than the retention as its monotonic clock measures. A session's totals
(``schema.SESSION_TABLES``) go only with the session itself.
"""

from __future__ import annotations

import sqlite3

from tokentop.history.schema import DATA_TABLES, SESSION_TABLES, rollback

RETENTION_EVERY_S = 60.0  # also: a session's first pass waits this long after its first tick

_DELETE_EMPTY_SESSIONS = "DELETE FROM sessions WHERE id != ? AND coalesce(ended_at, started_at) < ?" + "".join(
    f" AND NOT EXISTS (SELECT 1 FROM {table} WHERE session_id = sessions.id)" for table in DATA_TABLES
)


def apply_retention(
    conn: sqlite3.Connection, session_id: int, now: float, raw_retention_s: float, rollup_retention_s: float
) -> bool:
    """Delete what is past its retention at ``now``; False when the file was locked (or could
    not be written): nothing changed, and the next pass tries again."""
    raw_cut, rollup_cut = now - raw_retention_s, now - rollup_retention_s
    try:
        conn.execute("BEGIN IMMEDIATE")
        for table, time_column, cutoff in (
            ("gpu_ticks", "t", raw_cut),
            ("endpoint_ticks", "t", raw_cut),
            ("gpu_rollup_1m", "minute", rollup_cut),
            ("endpoint_rollup_1m", "minute", rollup_cut),
        ):
            session = _next_session(conn, table, -1)
            while session is not None:  # a range delete per session that has rows
                conn.execute(f"DELETE FROM {table} WHERE session_id = ? AND {time_column} < ?", (session, cutoff))
                session = _next_session(conn, table, session)
        conn.execute(_DELETE_EMPTY_SESSIONS, (session_id, rollup_cut))
        for table in SESSION_TABLES:
            conn.execute(f"DELETE FROM {table} WHERE session_id NOT IN (SELECT id FROM sessions)")
        conn.execute("COMMIT")
    except sqlite3.Error:
        rollback(conn)
        return False
    except BaseException:  # a signal's exception in the pass (Ctrl-C): the file as it was
        rollback(conn)
        raise
    return True


def _next_session(conn: sqlite3.Connection, table: str, after: int) -> int | None:
    row = conn.execute(
        f"SELECT session_id FROM {table} WHERE session_id > ? ORDER BY session_id LIMIT 1", (after,)
    ).fetchone()
    return None if row is None else int(row[0])

"""The one writer of a session: its ticks in order, a queue for when the file cannot take them,
the count of what was written and what was lost, the session's clock, totals and retention.

``append`` never loses a tick to a lock or a full disk while it can keep it: the tick waits in a
bounded in-memory queue and is written with the next append, and ``append`` *returns* a
one-line status for the screen instead of raising. That line changes when the situation does
(another reason, ticks starting to be dropped) and otherwise once every ``RESAY_EVERY_S`` with
the count, so a screen or a log that says each new line once says it once, not every tick.
Every other failure raises ``StoreError`` with such a line (the tick stays queued).

``ticks_written`` and ``ticks_lost`` account for every tick given to ``append``: written once
committed; lost when dropped from a full queue, unstorable, still queued when the session
closes, or written into a file that was then deleted or replaced (``watch``: the writer stops).

Each tick is timed on the session's clock (``clock``): rows, rollups, retention and the
session's end never read the wall clock for a duration. The session's totals are refreshed in
the tick's own transaction every ``totals.REFRESH_EVERY_S`` and at close (``totals``);
retention runs a minute after the first tick, then every minute, and at close (``retention``).
"""

from __future__ import annotations

import contextlib
import json
import math
import sqlite3
import time
from collections import deque
from itertools import islice
from pathlib import Path
from typing import Any

from tokentop.history import totals
from tokentop.history.clock import SessionClock
from tokentop.history.errors import TRANSIENT, StoreError, as_store_error, describe, error_code
from tokentop.history.retention import RETENTION_EVERY_S, apply_retention
from tokentop.history.rows import Tick, prepare
from tokentop.history.schema import database, rollback
from tokentop.history.ticks import TickRows
from tokentop.history.watch import CHECK_EVERY_S, FileWatch
from tokentop.model import Snapshot

CLOSE_WAIT_FACTOR = 8  # close() waits this many busy timeouts to write what is still queued
RESAY_EVERY_S = 60.0  # how often a lasting "not written" line is said again, with its count


# What binding a value SQLite cannot store raises: a type it has no adapter for, an int past 64
# bits, a string that is not Unicode (a lone surrogate).
_UNSTORABLE = (sqlite3.InterfaceError, sqlite3.ProgrammingError, OverflowError, UnicodeEncodeError)


class _Unstorable(Exception):
    """A queued tick holds a value SQLite cannot store (``cause``)."""

    def __init__(self, tick: Tick, cause: Exception) -> None:
        super().__init__(str(cause))
        self.tick = tick
        self.cause = cause


def _skipped_line(path: Path, skipped: list[_Unstorable]) -> str | None:
    """One line for the ticks left out, however many."""
    if not skipped:
        return None
    first = skipped[0]
    which = f"tick {first.tick.seq}" if len(skipped) == 1 else f"{len(skipped)} ticks (the first {first.tick.seq})"
    return f"history {path}: {which} skipped, a value cannot be stored ({first.cause})"


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def start_session(
    conn: sqlite3.Connection,
    path: Path,
    host: str,
    version: str,
    config: dict[str, Any],
    *,
    origin: str,
    simulated: bool,
) -> int:
    """Insert the session's row; its id."""
    row = {
        "started_at": time.time(),
        "ended_at": None,
        "host": host,
        "tokentop_version": version,
        "config_json": json.dumps(config, sort_keys=True, default=str),
        "origin": origin,
        "simulated": int(simulated),
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
        self._cursor = conn.cursor()  # BEGIN and COMMIT's own: none made per tick
        self.path = path
        self.session_id = session_id
        self.raw_retention_s = raw_retention_s
        self.rollup_retention_s = rollup_retention_s
        self._busy_timeout_s = busy_timeout_s
        self._rows = TickRows(conn, session_id)
        self._clock = SessionClock()
        self._watch = FileWatch(path)
        self._pending: deque[Tick] = deque()
        self._queue_ticks = queue_ticks
        self.ticks_written = 0
        self.ticks_lost = 0
        self._dropped = 0  # dropped from the queue since writing last succeeded
        self._said: tuple[tuple[str, bool], float, str] | None = None  # situation, when, the line
        self._gone: str | None = None  # the file was deleted or replaced: said on every append
        self._written_until = -math.inf  # session time of the newest tick committed
        self._refreshed_until = -math.inf  # ... of the newest tick in the session's totals
        self._retained_at: float | None = None  # session time of the last retention pass
        self._checked_at = -math.inf  # ... of the last look at the file
        self._retention_now: float | None = None  # "now" for retention at the latest tick

    def append(self, snapshot: Snapshot) -> str | None:
        """Write one tick (and any queued before it); see ``Store.append``."""
        if self._gone is None and snapshot.t_mono - self._checked_at >= CHECK_EVERY_S:
            self._checked_at = snapshot.t_mono
            self._look_at_file()
        if self._gone is not None:
            self.ticks_lost += 1
            raise StoreError(self._gone)
        t = self._clock.time_of(snapshot.t_wall, snapshot.t_mono)
        clock_note = self._clock.note()
        self._pending.append(prepare(snapshot, t))
        skipped: list[_Unstorable] = []
        try:
            self._flush_storable(skipped)
        except sqlite3.Error as exc:
            line = "; ".join(filter(None, (_skipped_line(self.path, skipped), self._not_written(exc, t), clock_note)))
            if error_code(exc) in TRANSIENT and not skipped:
                return line
            raise StoreError(line) from None
        self._dropped, self._said = 0, None
        self._retention_now = min(t, snapshot.t_wall)  # a wall clock gone ahead deletes nothing early
        if self._retained_at is None:
            self._retained_at = t  # the first pass waits a minute: past a short jump of the wall clock
        elif t - self._retained_at >= RETENTION_EVERY_S:
            self._retain(t)
        if skipped:  # the ticks queued with them are written
            raise StoreError("; ".join(filter(None, (_skipped_line(self.path, skipped), clock_note))))
        return clock_note

    def finish(self) -> str | None:
        """Write what is queued, the session's totals and its end, waiting ``CLOSE_WAIT_FACTOR``
        busy timeouts for the lock; then a retention pass. Never raises: returns a one-line
        message when the file is gone or the queue could not be written. Its cursors are closed
        after: a cursor holds its last statement, and SQLite does not close a connection with a
        statement left (nor merge its WAL into the file) until that is released."""
        try:
            return self._finish()
        finally:
            for close in (self._cursor.close, self._rows.close):  # each, whatever the other did
                with contextlib.suppress(sqlite3.Error):
                    close()

    def _finish(self) -> str | None:
        if self._gone is None:
            self._look_at_file()
        if self._gone is not None:
            return self._give_up(self._gone)
        skipped: list[_Unstorable] = []
        try:
            close_wait_ms = int(self._busy_timeout_s * CLOSE_WAIT_FACTOR * 1000)
            self._conn.execute(f"PRAGMA busy_timeout = {close_wait_ms}")
            self._flush_storable(skipped, ended_at=self._clock.now(time.time()))
        except Exception as exc:  # closing must never raise
            given_up = self._give_up(describe(self.path, exc))
            return "; ".join(filter(None, (_skipped_line(self.path, skipped), given_up)))
        if self._retention_now is not None:
            self._retain(self._written_until)
        return _skipped_line(self.path, skipped)

    def _flush_storable(self, skipped: list[_Unstorable], ended_at: float | None = None) -> None:
        """``_flush``, leaving out each queued tick that holds a value SQLite cannot store (a
        type it cannot bind, an integer past 64 bits): it is lost, added to ``skipped``, and the
        ticks queued with it are written; one bad tick never holds up the ones after it. The
        ticks before a bad one were written without a fault: they are committed on their own
        first, so that each tick is written at most twice however many are bad."""
        while True:
            try:
                return self._flush(ended_at)
            except _Unstorable as bad:
                index = next(i for i, tick in enumerate(self._pending) if tick is bad.tick)
                del self._pending[index]
                self.ticks_lost += 1
                skipped.append(bad)
                if index:
                    self._flush(count=index)
                if not self._pending and ended_at is None:
                    return

    def _flush(self, ended_at: float | None = None, count: int | None = None) -> None:
        """Write every queued tick (``count``: the first ones only) and, when due, the session's
        totals (at close its end) in one transaction."""
        conn, cursor = self._conn, self._cursor
        latest, refreshed_until = dict(self._rows.latest), self._refreshed_until
        ticks = self._pending if count is None else list(islice(self._pending, count))
        newest = ticks[-1].t if ticks else self._written_until
        try:
            cursor.execute("BEGIN IMMEDIATE")
            for tick in ticks:
                try:
                    self._rows.write(tick)
                except _UNSTORABLE as exc:
                    raise _Unstorable(tick, exc) from exc
            due = ended_at is not None or newest - refreshed_until >= totals.REFRESH_EVERY_S
            if due and newest > refreshed_until:
                totals.refresh(conn, self.session_id, self._rows.latest, refreshed_until)
                self._refreshed_until = newest
            if ended_at is not None:
                conn.execute("UPDATE sessions SET ended_at = ? WHERE id = ?", (ended_at, self.session_id))
            cursor.execute("COMMIT")
        except BaseException:
            self._rows.rolled_back(latest)
            self._refreshed_until = refreshed_until
            rollback(conn)
            raise
        self.ticks_written += len(ticks)
        self._written_until = newest
        if count is None:
            self._pending.clear()
        else:
            for _ in range(count):
                self._pending.popleft()

    def _not_written(self, exc: sqlite3.Error, t: float) -> str:
        """Drop what the queue cannot hold; the line that says ticks are not being written: the
        same while the situation lasts, said again with the count every ``RESAY_EVERY_S``."""
        while len(self._pending) > self._queue_ticks:
            self._pending.popleft()
            self._dropped += 1
            self.ticks_lost += 1
        reason = describe(self.path, exc)
        situation = (reason, self._dropped > 0)
        if self._said is None or self._said[0] != situation or t - self._said[1] >= RESAY_EVERY_S:
            count = _plural(len(self._pending) + self._dropped, "tick")
            how = (
                "waiting in memory to be written when it frees up"
                if error_code(exc) in TRANSIENT
                else "kept in memory to try again"
            )
            lost = f"; memory holds the latest {self._queue_ticks}, {self._dropped} older lost" if self._dropped else ""
            self._said = (situation, t, f"{reason}: ticks are not being written ({count} so far, {how}{lost})")
        return self._said[2]

    def _look_at_file(self) -> None:
        """Stop writing, once, when the path no longer leads to the file opened: what was
        written went with that file."""
        problem = self._watch.problem()
        if problem is not None:
            self._gone = f"{problem}: this session's ticks are not in it, and no more are written"
            self.ticks_lost += self.ticks_written
            self.ticks_written = 0

    def _give_up(self, reason: str) -> str:
        """Count what is still queued as lost; the closing line."""
        self.ticks_lost += len(self._pending)
        self._pending.clear()
        return (
            f"{reason}; {_plural(self.ticks_lost, 'tick')} of this session not written" if self.ticks_lost else reason
        )

    def _retain(self, t: float) -> None:
        """A retention pass; a lock postpones it to the next tick."""
        assert self._retention_now is not None
        now = min(self._retention_now, t)
        if apply_retention(self._conn, self.session_id, now, self.raw_retention_s, self.rollup_retention_s):
            self._retained_at = t

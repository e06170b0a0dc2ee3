"""``Store``: one open history file, a writer and a reader over one connection behind one lock.

Several processes may share one file (WAL, ``synchronous=NORMAL``, a busy timeout); each writes
its own session. Within a process, one ``Store`` may be used from several threads: the sampler
thread appends while another thread queries or closes.
"""

from __future__ import annotations

import contextlib
import sqlite3
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

from tokentop.history import files, schema
from tokentop.history.errors import StoreError, describe
from tokentop.history.queries import Reader
from tokentop.history.records import (
    EndpointSessionTotals,
    EndpointTrack,
    GpuInfo,
    GpuMinutes,
    GpuSessionTotals,
    GpuTrack,
    SeriesPoint,
    SessionInfo,
)
from tokentop.history.writer import Writer, start_session
from tokentop.model import Snapshot, Window

_P = ParamSpec("_P")
_R = TypeVar("_R")


class Store:
    """One open history file; ``Store.open`` for the sampler, ``Store.open_readonly`` to read."""

    def __init__(self, path: Path, conn: sqlite3.Connection, reader: Reader, writer: Writer | None) -> None:
        self.path = path
        self.session_id = None if writer is None else writer.session_id
        self._conn = conn
        self._reader = reader
        self._writer = writer
        self._lock = threading.Lock()
        self._closed = False

    @classmethod
    def open(
        cls,
        path: Path,
        *,
        host: str,
        version: str,
        config: dict[str, Any],
        origin: str = "record",
        simulated: bool = False,
        raw_retention_h: float = 24,
        rollup_retention_d: float = 30,
        busy_timeout_s: float = 0.25,
        queue_ticks: int = 600,
    ) -> Store:
        """Open (creating, or migrating to the current schema, when needed) ``path`` for writing
        and start a session in it: opened by ``origin`` (one of ``schema.ORIGINS``, the command),
        ``simulated`` for a ``--demo`` host.

        ``busy_timeout_s`` is how long one append waits for another writer before the tick is
        queued; ``queue_ticks`` bounds that queue (oldest dropped first, and reported).
        """
        if origin not in schema.ORIGINS:
            raise ValueError(f"origin must be one of {', '.join(schema.ORIGINS)}, not {origin!r}")
        path = Path(path).expanduser()
        conn = files.open_for_writing(path)
        try:
            session_id = start_session(conn, path, host, version, config, origin=origin, simulated=simulated)
            files.set_pragma(conn, path, f"busy_timeout = {int(busy_timeout_s * 1000)}")
        except BaseException:
            conn.close()
            raise
        writer = Writer(
            conn,
            path,
            session_id,
            raw_retention_s=raw_retention_h * 3600.0,
            rollup_retention_s=rollup_retention_d * 86400.0,
            busy_timeout_s=busy_timeout_s,
            queue_ticks=queue_ticks,
        )
        return cls(path, conn, Reader(conn, schema.NAMES[schema.SCHEMA_VERSION]), writer)

    @classmethod
    def open_readonly(cls, path: Path) -> Store:
        """Open an existing history to read it; nothing is created or written (a file of an
        older schema is read as it is)."""
        path = Path(path).expanduser()
        conn, version = files.open_for_reading(path)
        return cls(path, conn, Reader(conn, schema.NAMES[version]), None)

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # --- writing ------------------------------------------------------------------------------

    def append(self, snapshot: Snapshot) -> str | None:
        """Write one tick in one transaction. Returns None, or a one-line message: the tick had
        to wait in memory (file locked, disk full; it is written with a later append), or the
        wall clock disagrees with the session's clock (said once). The line stays the same
        while the situation does (the count in it is brought up to date once a minute).

        Raises ``StoreError`` for any other failure (the queued ticks are kept; a snapshot with
        a value SQLite cannot store is skipped), once the file was deleted or replaced while
        recording (nothing more is written), and when the store is closed or read-only.
        """
        with self._lock:
            if self._writer is None or self._closed:
                state = "closed" if self._closed else "open read-only"
                raise StoreError(f"history {self.path} is {state}; cannot append")
            return self._writer.append(snapshot)

    def close(self) -> str | None:
        """End the session: write queued ticks, its totals and ``ended_at``, close the file.

        Idempotent and never raises; returns a one-line message when something could not be
        written (the file is broken, locked for ``CLOSE_WAIT_FACTOR`` busy timeouts, deleted or
        replaced...), with the count of this session's ticks not written.
        """
        with self._lock:
            if self._closed:
                return None
            self._closed = True
            try:
                return None if self._writer is None else self._writer.finish()
            finally:
                with contextlib.suppress(Exception):  # nothing more can be done
                    self._conn.close()

    @property
    def ticks_written(self) -> int:
        """Ticks of this session in the file (committed, and the file still the one opened)."""
        return 0 if self._writer is None else self._writer.ticks_written

    @property
    def ticks_lost(self) -> int:
        """Ticks given to ``append`` that are not in the file and never will be: dropped from
        a full queue, unstorable, still queued at close, or gone with a deleted file."""
        return 0 if self._writer is None else self._writer.ticks_lost

    # --- reading ------------------------------------------------------------------------------

    def _read(self, query: Callable[_P, _R], *args: _P.args, **kwargs: _P.kwargs) -> _R:
        """Run a query under the lock, turning SQLite failures into ``StoreError``."""
        with self._lock:
            if self._closed:
                raise StoreError(f"history {self.path} is closed")
            try:
                return query(*args, **kwargs)
            except sqlite3.Error as exc:
                raise StoreError(describe(self.path, exc)) from None

    def sessions(self) -> list[SessionInfo]:
        """Every session in the file, oldest first."""
        return self._read(self._reader.sessions)

    def latest_session_id(self) -> int | None:
        return self._read(self._reader.latest_session_id)

    def gpus(self, session_id: int) -> list[GpuInfo]:
        """The GPUs a session has rows for, by NVML index (unknown indices last)."""
        return self._read(self._reader.gpus, session_id)

    def gpu_series(
        self, session_id: int | None, uuid: str | None, since: float, until: float, step_s: float
    ) -> list[SeriesPoint]:
        """Chart points over ``[since, until)`` in buckets of ``step_s``: one GPU, or the whole
        host when ``uuid`` is None; one session, or all when ``session_id`` is None.

        A bucket's rates are what was delivered in it over the (measured) seconds it covers.
        Windows under an hour read raw rows (``step_s`` should be at least the sampling
        interval); longer ones, and short ones whose raw rows are gone, read the 1-minute
        rollups: whole minutes, so ``step_s`` rises to a multiple of 60. Every bucket is
        returned, with None figures where there is no data. Sessions running at the same time
        are taken to watch the same GPUs: per bucket, the one that covered it longest counts.
        """
        if not (until > since and step_s > 0):
            raise ValueError("gpu_series needs until > since and step_s > 0")
        return self._read(self._reader.gpu_series, session_id, uuid, since, until, step_s)

    def window_totals(self, session_id: int, uuid: str | None, since: float, until: float) -> Window | None:
        """Totals over ``[since, until]``: per GPU, the difference of the cumulative columns
        of two rows, the last one at or before ``until`` and the last one at or before
        ``since`` (at most ``RAW_LOOKBACK_S`` earlier), else the first one after ``since`` (the
        session started later, or the GPU was away). A few index seeks per GPU. Rows are raw
        rows, the rollups' last rows, and the first and latest rows the session's totals keep
        (so the whole session's totals survive retention).

        The whole host when ``uuid`` is None: sums over its GPUs (``busy_s`` in GPU-seconds),
        ``span_s`` the longest GPU span, ``cost_usd`` None when any GPU has no price. None when
        no GPU has two rows in the window.
        """
        return self._read(self._reader.window_totals, session_id, uuid, since, until)

    def session_bounds(self, session_id: int) -> tuple[float, float] | None:
        """The times of a session's first and last readings: its first as its totals keep it,
        else its first raw row (or the start of its first minute where raw rows are gone); its
        last raw row or rollup, or its kept latest. None: no data at all."""
        return self._read(self._reader.session_bounds, session_id)

    def gpu_session_totals(self, session_id: int) -> list[GpuSessionTotals]:
        """Each GPU of the session as its totals keep it, by ``gpu_id`` (none in files written
        before schema 3, nor for the sessions they hold)."""
        return self._read(self._reader.gpu_session_totals, session_id)

    def endpoint_session_totals(self, session_id: int) -> list[EndpointSessionTotals]:
        """Each endpoint of the session as its totals keep it, by ``endpoint_id`` (refreshed
        every minute while the session runs, and at close)."""
        return self._read(self._reader.endpoint_session_totals, session_id)

    def raw_rows_cover(self, session_id: int, since: float) -> bool:
        """Whether a session's per-tick GPU rows still reach back to ``since``'s minute, where
        its rollups begin (retention deletes raw rows first, oldest first)."""
        return self._read(self._reader.raw_rows_cover, session_id, since)

    def gpu_tracks(self, session_id: int, since: float, until: float, step_s: float) -> list[GpuTrack]:
        """Each GPU's row of the last tick in ``(b - step_s, b]`` for every boundary
        ``b = since, since + step_s, ...`` up to ``until`` (the last boundary), and a GPU's own
        first and last rows in the range where it has none at the first or last boundary (seen
        later, or no longer). A few seeks per boundary, however many rows lie between; the
        differences between consecutive points are what each span delivered. GPUs in ``gpu_id``
        order."""
        if not (until >= since and step_s > 0):
            raise ValueError("gpu_tracks needs until >= since and step_s > 0")
        return self._read(self._reader.gpu_tracks, session_id, since, until, step_s)

    def gpu_minutes(self, session_id: int, since: float, until: float) -> list[GpuMinutes]:
        """Each GPU's 1-minute rollups for the minutes starting in ``[minute of since,
        until)``: one range read. GPUs in ``gpu_id`` order."""
        return self._read(self._reader.gpu_minutes, session_id, since, until)

    def gpu_energy_methods(self, session_id: int, uuid: str, after: float, until: float) -> dict[str | None, int]:
        """How many of one GPU's ticks in ``(after, until]`` measured their energy each way
        (``counter``, ``power_integral``, None: no power at all). Reads every row of the span:
        meant for the short spans where the counter does not explain the energy."""
        return self.gpu_energy_methods_over(session_id, uuid, [(after, until)])

    def gpu_energy_methods_over(
        self, session_id: int, uuid: str, spans: Sequence[tuple[float, float]]
    ) -> dict[str | None, int]:
        """``gpu_energy_methods`` over several disjoint spans ``(after, until]`` at once, summed:
        one read for all of a GPU's spans instead of one each."""
        return self._read(self._reader.gpu_energy_methods, session_id, uuid, spans)

    def endpoint_tracks(self, session_id: int, since: float, until: float, step_s: float) -> list[EndpointTrack]:
        """Each endpoint's row of the last tick in ``(b - step_s, b]`` for every boundary, as
        ``gpu_tracks`` does for GPUs. Endpoints in ``endpoint_id`` order."""
        if not (until >= since and step_s > 0):
            raise ValueError("endpoint_tracks needs until >= since and step_s > 0")
        return self._read(self._reader.endpoint_tracks, session_id, since, until, step_s)

    def endpoint_rows(self, session_id: int, name: str, url: str, after: float, until: float) -> EndpointTrack | None:
        """Every row of one endpoint in ``(after, until]``; None when there is none."""
        return self._read(self._reader.endpoint_rows, session_id, name, url, after, until)
